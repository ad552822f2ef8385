package merge

import (
	"net/mail"
	"reflect"
	"strings"
	"testing"
)

// domainSeeds are domains on both sides of every rule of ldhDomain, and
// ones IDNA maps, rejects or decodes.
var domainSeeds = []string{
	"", ".", "a", "A", "example.org", "EXAMPLE.Org", "a.b.c.d", "a..b", ".a", "a.", "-a.org", "a-.org", "a-b.org",
	"ab--c.org", "abc--d.org", "ab--.org", "a--b.org", "xn--bcher-kva.de", "XN--BCHER-KVA.DE", "xn--abc.de", "xn--.de",
	"1.2.3.4", "123", "0.org", "a_b.org", "a b.org", "a@b", "bücher.de", "faß.de", "Σ.gr", "ÄÖ.example", "\u200d.org",
	"a\u3002b", "ｅｘａｍｐｌｅ.org", "[1.2.3.4]", "[IPv6:::1]", strings.Repeat("a", 63) + ".org", strings.Repeat("a", 64) + ".org",
	strings.Repeat("a.", 126) + "a", strings.Repeat("a.", 126) + "ab", strings.Repeat("a.", 127) + "a", "a.b-", "\xff.org",
	"example.org.", "كوم.org", "a.كوم", "1.كوم",
}

func checkDomain(t *testing.T, d string) {
	t.Helper()
	got, gotWhy := normalizeDomain(d)
	want, wantWhy := normalizeDomainSlow(d)
	if got != want || gotWhy != wantWhy {
		t.Fatalf("normalizeDomain(%q) got %q %q, want %q %q", d, got, gotWhy, want, wantWhy)
	}
	if ldhDomain(d) && (wantWhy != "" || want != strings.ToLower(d)) {
		t.Fatalf("ldhDomain(%q) but IDNA gives %q %q", d, want, wantWhy)
	}
}

// TestLDHDomain holds the ASCII fast path to the IDNA path it skips: the
// same domain or the same reason, for every seed.
func TestLDHDomain(t *testing.T) {
	fast := 0
	for _, d := range domainSeeds {
		checkDomain(t, d)
		if ldhDomain(d) {
			fast++
		}
	}
	if fast < 10 {
		t.Fatalf("only %d seeds take the fast path", fast)
	}
}

func FuzzNormalizeDomain(f *testing.F) {
	for _, d := range domainSeeds {
		f.Add(d)
	}
	f.Fuzz(func(t *testing.T, d string) {
		checkDomain(t, d)
		// The same bytes spelled in the fast path's alphabet, where
		// random input rarely lands on its own.
		const ldh = "aZ9.-xnN"
		b := []byte(d)
		for i, c := range b {
			b[i] = ldh[c%byte(len(ldh))]
		}
		checkDomain(t, string(b))
	})
}

var msgIDSeeds = []string{
	"<a@b>", "<a@b.c>", "<@b>", "<a@>", "<a@@b>", "<a@b@c>", "<ab>", "<a b@c>", "<a@b\x00>", "<é@b>", "<a@\xff>",
	"<a.b-c_d+e@host.example>", "<<a@b>", "<a@b>>", "<a\\@b>", "<a@[b]>", "<a(b)@c>", "<" + strings.Repeat("a", 245) + "@b>",
	"<" + strings.Repeat("a", 246) + "@b>", "a@b", "", "<>", "<a@b;>", "<\"a\"@b>", "<a:b@c>", "<a,b@c>", "<a@b\t>",
}

func checkMsgID(t *testing.T, id string) {
	if got, want := validMsgID(id), refValidMsgID(id); got != want {
		t.Fatalf("validMsgID(%q) got %v, want %v", id, got, want)
	}
}

func TestValidMsgIDFast(t *testing.T) {
	for _, id := range msgIDSeeds {
		checkMsgID(t, id)
	}
	// Enough ids to use the scratch's random block several times over.
	sc := &scratch{}
	seen := map[string]bool{}
	for range 300 {
		id := randomMsgID(sc.random(16), "", "example.org")
		if !validMsgID(id) || len(id) != len("<@example.org>")+32 || seen[id] {
			t.Fatalf("randomMsgID gave %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

func FuzzValidMsgID(f *testing.F) {
	for _, id := range msgIDSeeds {
		f.Add(id)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkMsgID(t, s)
		checkMsgID(t, "<"+s+">")
	})
}

// addrListSeeds are address fields on both sides of parseAddressList's
// fast path.
var addrListSeeds = []string{
	"a@b", "user0000001@example.org", "A.B@C.D", "a+tag@x.org", "a!#$%&'*+-/=?^_`{|}~@x.org", "a@b@c", "@b", "a@", "a",
	".a@b", "a.@b", "a..b@c", "a@.b", "a@b.", "a@b..c", " a@b", "a@b ", "a @b", "a@ b", "a@b,", ",a@b", "a@b, c@d",
	"a@[1.2.3.4]", "\"a\"@b", "a(b)@c", "a@b(c)", "<a@b>", "A <a@b>", "ü@b", "a@ü", "a@b\x00", "a\t@b", "a@\xff",
	"a@b;", "g: a@b;", "a\\b@c", "a@b\r\n", "",
}

func checkAddressList(t *testing.T, s string) {
	got, gotErr := parseAddressList(s)
	want, wantErr := mail.ParseAddressList(s)
	if (gotErr == nil) != (wantErr == nil) || gotErr != nil && gotErr.Error() != wantErr.Error() || !reflect.DeepEqual(got, want) {
		t.Fatalf("parseAddressList(%q) got %v %v, want %v %v", s, got, gotErr, want, wantErr)
	}
}

func TestParseAddressListFast(t *testing.T) {
	fast := 0
	for _, s := range addrListSeeds {
		checkAddressList(t, s)
		if at := strings.IndexByte(s, '@'); at > 0 && asciiDotAtom(s[:at]) && asciiDotAtom(s[at+1:]) {
			fast++
		}
	}
	if fast < 5 {
		t.Fatalf("only %d seeds take the fast path", fast)
	}
}

func FuzzParseAddressList(f *testing.F) {
	for _, s := range addrListSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkAddressList(t, s)
		// The same bytes in an alphabet of atext, dots and one '@'
		// or two, where the fast path's edges are.
		const alpha = "a.@Z9-+"
		b := []byte(s)
		for i, c := range b {
			b[i] = alpha[c%byte(len(alpha))]
		}
		checkAddressList(t, string(b))
	})
}
