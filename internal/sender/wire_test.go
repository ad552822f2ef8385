package sender

import (
	"bytes"
	"testing"
)

var wireSeeds = []string{
	"",
	"a",
	"From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n",
	"bare\nnewlines\nonly\n",
	"lone\rCR\r",
	"CR before CRLF\r\r\n",
	"NUL\x00 inside\r\n",
	"\x00.dot after a NUL\r\n",
	".leading dot\r\n..two\r\n.\r\n",
	"no final line end",
	"ends in CR\r",
	"\r\n\r\n\n\r",
	"mixed\r\nclean\r\nthen\rdirty\nthen clean\r\n",
	"8bit \xc3\xa9t\xc3\xa9\r\n",
}

// FuzzWire checks the line-at-a-time wire form against the octet-by-octet
// loops it skips for clean lines: same size, longest line and bytes, with
// and without dot-stuffing.
func FuzzWire(f *testing.F) {
	for _, s := range wireSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkWire(t, data)
	})
}

func TestWire(t *testing.T) {
	for _, s := range wireSeeds {
		checkWire(t, []byte(s))
	}
}

func checkWire(t *testing.T, data []byte) {
	t.Helper()
	size, longest := wireSize(data)
	wantSize, wantLongest := wireSizeSlow(data)
	if size != wantSize || longest != wantLongest {
		t.Errorf("wireSize(%q) = %d, %d; octet by octet %d, %d", data, size, longest, wantSize, wantLongest)
	}
	for _, stuff := range []bool{false, true} {
		got := wireData([]byte("prefix"), data, stuff)
		want := wireDataSlow([]byte("prefix"), data, stuff)
		if !bytes.Equal(got, want) {
			t.Errorf("wireData(%q, %v) = %q; octet by octet %q", data, stuff, got, want)
		}
		if !stuff && len(got)-len("prefix") != wantSize {
			t.Errorf("wireData(%q) is %d octets, wireSize says %d", data, len(got)-len("prefix"), wantSize)
		}
	}
	checkWireSafe(t, data)
	want8 := false
	for _, c := range data {
		want8 = want8 || c >= 0x80
	}
	if has8bit(data) != want8 {
		t.Errorf("has8bit(%q) = %v, want %v", data, !want8, want8)
	}
}

// checkWireSafe checks the rules the wire form exists for, whatever the
// old loops did: every line ends in CRLF and no CR or LF stands alone
// (SMTP smuggling, CVE-2023-51764), no NUL, the end of data appears only at
// the end, and undoing the dot-stuffing gives the unstuffed (BDAT) form,
// whose length wireSize reports.
func checkWireSafe(t *testing.T, data []byte) {
	t.Helper()
	plain := wireData(nil, data, false)
	stuffed := dotStuff(nil, data)
	size, _ := wireSize(data)
	if len(plain) != size {
		t.Errorf("wireSize(%q) = %d, the unstuffed form has %d octets", data, size, len(plain))
	}
	for i, c := range stuffed {
		switch {
		case c == 0:
			t.Fatalf("dotStuff(%q): NUL at %d", data, i)
		case c == '\r' && (i+1 == len(stuffed) || stuffed[i+1] != '\n'):
			t.Fatalf("dotStuff(%q): bare CR at %d", data, i)
		case c == '\n' && (i == 0 || stuffed[i-1] != '\r'):
			t.Fatalf("dotStuff(%q): bare LF at %d", data, i)
		}
	}
	body := stuffed[:len(stuffed)-3] // without the final ".\r\n"
	if !bytes.HasSuffix(stuffed, []byte(".\r\n")) || len(body) > 0 && !bytes.HasSuffix(body, []byte("\r\n")) {
		t.Fatalf("dotStuff(%q) = %q: does not end in CRLF.CRLF", data, stuffed)
	}
	if i := bytes.Index(append([]byte("\r\n"), body...), []byte("\r\n.\r\n")); i >= 0 {
		t.Fatalf("dotStuff(%q) = %q: end of data at %d, before the end", data, stuffed, i)
	}
	// Undo the stuffing: a line starting with "." lost its first dot.
	var unstuffed []byte
	for _, line := range bytes.SplitAfter(body, []byte("\r\n")) {
		if len(line) > 0 && line[0] == '.' {
			line = line[1:]
		}
		unstuffed = append(unstuffed, line...)
	}
	if !bytes.Equal(unstuffed, plain) {
		t.Fatalf("dotStuff(%q) unstuffed = %q, want the unstuffed form %q", data, unstuffed, plain)
	}
}
