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
	want8 := false
	for _, c := range data {
		want8 = want8 || c >= 0x80
	}
	if has8bit(data) != want8 {
		t.Errorf("has8bit(%q) = %v, want %v", data, !want8, want8)
	}
}
