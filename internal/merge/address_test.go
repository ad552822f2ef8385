package merge

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeAddress(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means rejected
		utf8 bool
	}{
		{"a@example.org", "a@example.org", false},
		{"  a@Example.ORG\t", "a@example.org", false},
		{"mailto:a@example.org", "a@example.org", false},
		{"MAILTO:A@example.org", "A@example.org", false},
		{`"a b"@x.org`, `"a b"@x.org`, false},
		{`"ab"@x.org`, "ab@x.org", false},
		{`"a\"b"@x.org`, `"a\"b"@x.org`, false},
		{"first.last+tag@sub.example.com", "first.last+tag@sub.example.com", false},
		{"a@bücher.de", "a@xn--bcher-kva.de", false},
		{"a@BÜCHER.de", "a@xn--bcher-kva.de", false},
		{"用户@例子.广告", "用户@xn--fsqu00a.xn--4rr70v", true},
		{"a@[192.0.2.1]", "a@[192.0.2.1]", false},
		{"a@[IPv6:2001:db8::1]", "a@[IPv6:2001:db8::1]", false},
		{strings.Repeat("a", 64) + "@x.org", strings.Repeat("a", 64) + "@x.org", false},
		{strings.Repeat("a", 65) + "@x.org", "", false},
		{"a@" + strings.Repeat("b", 64) + ".org", "", false},
		{"a@" + strings.Repeat(strings.Repeat("b", 60)+".", 5) + "org", "", false},
		{"x@y> NOTIFY=NEVER", "", false},
		{"x@y.org> NOTIFY=NEVER", "", false},
		{"<x@y.org>", "", false},
		{"Ann <x@y.org>", "", false},
		{"x@y.org\r\nRCPT TO:<z@y.org>", "", false},
		{"x@y.org\n", "", false},
		{"x\x00@y.org", "", false},
		{"a b@x.org", "", false},
		{"x@", "", false},
		{"@x.org", "", false},
		{"x", "", false},
		{"", "", false},
		{"a..b@x.org", "", false},
		{".a@x.org", "", false},
		{"a.@x.org", "", false},
		{"a@x..org", "", false},
		{"a@-x.org", "", false},
		{"a@x_y.org", "", false},
		{"a@x.org.", "", false},
		{`"a` + "\r" + `b"@x.org`, "", false},
		{`"a"b"@x.org`, "", false},
		{"a@x.org?subject=hi", "", false},
		{"a@[1.2.3]", "", false},
		{"a\u00a0b@x.org", "", false},
		{"a\u0085@x.org", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, u8, err := NormalizeAddress(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("NormalizeAddress(%q) = %q, want an error", tt.in, got)
				}
				if !errors.Is(err, ErrNotAddress) {
					t.Fatalf("error %v does not wrap ErrNotAddress", err)
				}
				if !strings.HasPrefix(err.Error(), "merge: ") {
					t.Fatalf("error %q lacks the merge: prefix", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeAddress(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if u8 != tt.utf8 {
				t.Fatalf("utf8Local got %v, want %v", u8, tt.utf8)
			}
		})
	}
}

func TestAddressKey(t *testing.T) {
	tests := []struct {
		a, b string
		same bool
	}{
		{"a@x.org", "a@X.ORG", true},
		{"A@x.org", "a@x.org", false},
		{`"a b"@x.org`, `"a b"@X.org`, true},
		{"jos\u00e9@x.org", "jose\u0301@x.org", true},        // NFC and NFD
		{"jos\u00e9@x.org", "jose\u0301@X.ORG", true},        // and the domain's case
		{"jos\u00e9@x.org", "Jos\u00e9@x.org", false},        // the local part's case counts
		{"\u0041\u030a@x.org", "\u00c5@x.org", true},         // Å composed
		{"q\u0323\u0307@x.org", "q\u0307\u0323@x.org", true}, // combining marks reordered
	}
	for _, tt := range tests {
		if got := AddressKey(tt.a) == AddressKey(tt.b); got != tt.same {
			t.Errorf("AddressKey(%q) == AddressKey(%q): got %v, want %v", tt.a, tt.b, got, tt.same)
		}
	}
	// An ASCII, normalised address is its own key, with no copy made.
	if a := "ann@example.org"; AddressKey(a) != a {
		t.Errorf("AddressKey(%q) = %q", a, AddressKey(a))
	}
}

func TestNormalizeAddressTotalLength(t *testing.T) {
	// 64 + 1 + 190 = 255 octets: every part within its limit, the whole not.
	a := strings.Repeat("a", 64) + "@" + strings.Repeat(strings.Repeat("b", 62)+".", 3) + "org"
	if got, _, err := NormalizeAddress(a); err == nil {
		t.Fatalf("got %q, want an error for a %d-octet address", got, len(a))
	}
}
