package merge

import (
	"bytes"
	"strings"
	"testing"
)

// bodySeeds are bodies around every rule of the 7bit test and of the
// quoted-printable encoder.
var bodySeeds = []string{
	"abcdefgh", "abcdefg=", "=bcdefgh", "abcdefgh~\x7f", "abcdefgh \x1f", "abcdefghijklmnop\t", "abcdefgh\x80ijkl",
	"", "a", "\r", "\n", "\r\n", "\r\r\n\n", "\x00", "a\x00\r\x00\nb", ".", ".a\r\n", "a\r\n.", "\t.\r\n",
	"trailing \r\nspace\t\n", "=", "é", "\x7f", "\x1b[0m", strings.Repeat("a", 78), strings.Repeat("a", 79),
	strings.Repeat("a", 75) + "=", strings.Repeat("a", 74) + ".b", strings.Repeat("a", 75) + " ",
	strings.Repeat("a", 76) + "\r\n" + strings.Repeat(".", 100), strings.Repeat("é", 300), strings.Repeat("\xff", 40),
	"Dear Zoë Müller,\n\nthank you.\n--\nExample Co\n", strings.Repeat("x\n", 50) + "é",
}

// checkBodyFast compares the one-pass body path with the encoders as they
// were: the same bytes, the same 7bit verdict, the same encoding.
func checkBodyFast(t *testing.T, raw []byte) {
	t.Helper()
	for k := range min(len(raw), 9) {
		n := 0
		for n < len(raw[k:]) && ' ' <= raw[k+n] && raw[k+n] <= '~' && raw[k+n] != '=' {
			n++
		}
		if got := printableRun(raw[k:]); got != n {
			t.Fatalf("printableRun(%q) got %d, want %d", raw[k:], got, n)
		}
	}
	want := refNormalizeText(raw)
	if got := normalizeText(raw); !bytes.Equal(got, want) {
		t.Fatalf("normalizeText(%q) got %q, want %q", raw, got, want)
	}
	scratch := []byte("left over from an earlier message")
	got, seven := appendNormalized(scratch[:0], raw)
	if !bytes.Equal(got, want) || seven != refIs7bit(want) {
		t.Fatalf("appendNormalized(%q) got %q %v, want %q %v", raw, got, seven, want, refIs7bit(want))
	}
	if is7bit(want) != refIs7bit(want) || is7bit(raw) != refIs7bit(raw) {
		t.Fatalf("is7bit(%q) differs from the reference", raw)
	}
	if got, want := quotedPrintable(raw), refQuotedPrintable(raw); !bytes.Equal(got, want) {
		t.Fatalf("quotedPrintable(%q) got %q, want %q", raw, got, want)
	}
	wantCTE, wantData := refEncodeBody(want)
	for _, f := range []func() (string, []byte){
		func() (string, []byte) { return encodeBody(want) },
		func() (string, []byte) { return encodeBodyTo(make([]byte, 3, 10), want, seven) },
	} {
		if cte, data := f(); cte != wantCTE || !bytes.Equal(data, wantData) {
			t.Fatalf("encodeBody(%q) got %s %q, want %s %q", want, cte, data, wantCTE, wantData)
		}
	}
}

func TestBodyFastPath(t *testing.T) {
	for _, s := range append(bodySeeds, lookalikes...) {
		checkBodyFast(t, []byte(s))
	}
}

func FuzzBodyFastPath(f *testing.F) {
	for _, s := range append(bodySeeds, lookalikes...) {
		f.Add([]byte(s))
	}
	f.Fuzz(checkBodyFast)
}

// fieldSeeds are header values around the folding and word rules,
// Unicode spaces and invalid UTF-8 included.
var fieldSeeds = []string{
	"", " ", "a", " a  b ", "a\u00a0b", "a\u0085b", "a\u2028b\u3000c", "\xc2", "\xc2\xa0", "a\xffb \xff",
	"\t\v\f\r\n", strings.Repeat("word ", 40), strings.Repeat("x", 100) + " y", "=?utf-8?b?w7w=?= <u@x.org>",
}

func checkField(t *testing.T, name, value string) {
	t.Helper()
	var got, want bytes.Buffer
	writeField(&got, name, value)
	refWriteField(&want, name, value)
	if got.String() != want.String() {
		t.Fatalf("writeField(%q, %q) got %q, want %q", name, value, got.String(), want.String())
	}
	if got, want := longestWord(value), refLongestWord(value); got != want {
		t.Fatalf("longestWord(%q) got %d, want %d", value, got, want)
	}
	var words []string
	for w, rest := nextWord(value); w != ""; w, rest = nextWord(rest) {
		words = append(words, w)
	}
	if got, want := collapseSpaces(value), strings.Join(strings.Fields(value), " "); got != want {
		t.Fatalf("collapseSpaces(%q) got %q, want %q", value, got, want)
	}
	if want := strings.Fields(value); strings.Join(words, "|") != strings.Join(want, "|") || len(words) != len(want) {
		t.Fatalf("words of %q got %q, want %q", value, words, want)
	}
}

func TestWriteFieldFast(t *testing.T) {
	for _, v := range fieldSeeds {
		checkField(t, "Subject", v)
		checkField(t, "X-A-Very-Long-Header-Name-"+strings.Repeat("n", 70), v)
	}
}

func FuzzWriteField(f *testing.F) {
	for _, v := range fieldSeeds {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v string) { checkField(t, "Subject", v) })
}

func TestCollapseSpaces(t *testing.T) {
	for _, v := range append(fieldSeeds, "a b", "a  b", " a", "a ", "a\tb", "Ann Lee", "", "x") {
		if got, want := collapseSpaces(v), strings.Join(strings.Fields(v), " "); got != want {
			t.Errorf("collapseSpaces(%q) got %q, want %q", v, got, want)
		}
	}
}
