package merge

import (
	"fmt"
	"net/mail"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Limits from RFC 5321 4.5.3.1: local part, domain, and the whole path
// (256 including the angle brackets, so 254 for the address).
const (
	maxLocal   = 64
	maxDomain  = 255
	maxAddress = 254
)

// NormalizeAddress validates and normalises one envelope address as typed in
// a list cell. It trims surrounding spaces and tabs, strips a leading
// "mailto:", and accepts a bare local@domain only. The domain is lower-cased
// and converted to A-labels (IDNA lookup profile); a quoted local part is kept
// quoted if it needs to be and unquoted if it is a plain dot-atom. A non-ASCII
// local part is returned as typed with utf8Local set, so the sender can
// require SMTPUTF8. On failure it returns "" and an error wrapping
// ErrNotAddress. Anything that could smuggle SMTP parameters or commands
// ('<', '>', spaces or controls outside a quoted local part, CR, LF, NUL) is
// rejected.
func NormalizeAddress(s string) (addr string, utf8Local bool, err error) {
	addr, utf8Local, err = normalizeAddress(s)
	if err != nil {
		return "", false, fmt.Errorf("merge: %w", err)
	}
	return addr, utf8Local, nil
}

// AddressKey returns the key under which two addresses count as duplicates:
// the local part as-is (RFC 5321 lets the receiving host treat case in it as
// significant) but in Unicode normal form C, so that "josé" typed with a
// combining accent is the same mailbox as with a precomposed é (RFC 6530
// section 10.1 expects servers to treat them alike), and the domain
// lower-cased. An ASCII or already NFC address keeps its key.
func AddressKey(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr
	}
	local, d := addr[:i], addr[i+1:]
	if !isASCII(local) {
		local = norm.NFC.String(local)
	}
	ld := strings.ToLower(d)
	if ld == d && local == addr[:i] {
		// The usual case, a normalised address: no new string.
		return addr
	}
	return local + "@" + ld
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// parseAddressList is mail.ParseAddressList, with the answer for a bare
// ASCII addr-spec ("local@domain", both dot-atoms, nothing around them)
// given without the parser: the one address, with no name. A row's
// address column is mostly just that. TestParseAddressListFast and
// FuzzParseAddressList hold it to net/mail.
func parseAddressList(s string) ([]*mail.Address, error) {
	if at := strings.IndexByte(s, '@'); at > 0 && asciiDotAtom(s[:at]) && asciiDotAtom(s[at+1:]) {
		return []*mail.Address{{Address: s}}, nil
	}
	return mail.ParseAddressList(s)
}

// asciiDotAtom reports whether s is ASCII atoms joined by single dots.
func asciiDotAtom(s string) bool { return isDotAtom(s) && !hasNonASCII(s) }

// normalizeAddress is NormalizeAddress with an unprefixed error, for use
// inside RowError.
func normalizeAddress(s string) (string, bool, error) {
	bad := func(why string) (string, bool, error) {
		return "", false, wrapf(ErrNotAddress, "%q: %s", s, why)
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return bad("contains a line break or NUL")
	}
	if !utf8.ValidString(s) {
		return bad("not valid UTF-8")
	}
	a := strings.Trim(s, " \t")
	if len(a) >= 7 && strings.EqualFold(a[:7], "mailto:") {
		a = strings.Trim(a[7:], " \t")
	}
	if a == "" {
		return bad("empty")
	}
	at := strings.LastIndexByte(a, '@')
	if at < 0 {
		return bad("no @")
	}
	local, domain := a[:at], a[at+1:]
	local, utf8Local, why := normalizeLocal(local)
	if why != "" {
		return bad(why)
	}
	domain, why = normalizeDomain(domain)
	if why != "" {
		return bad(why)
	}
	out := a
	if local != a[:at] || domain != a[at+1:] {
		// Only a changed address needs a new string; most are already
		// in normal form.
		out = local + "@" + domain
	}
	if len(out) > maxAddress {
		return bad(fmt.Sprintf("longer than %d octets", maxAddress))
	}
	return out, utf8Local, nil
}

// isAtext reports whether c may appear in an RFC 5322 atom. Non-ASCII bytes
// count (RFC 6531 extends atext with UTF-8); the caller flags them.
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// isDotAtom reports whether s is atoms joined by single dots.
func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '.' && !isAtext(s[i]) {
			return false
		}
	}
	return true
}

func hasNonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}

// quoteLocal returns the RFC 5321 quoted-string form of an unquoted local
// part: only '"' and '\' need a backslash.
func quoteLocal(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

// normalizeLocal returns the local part in its canonical written form, or a
// reason it is invalid.
func normalizeLocal(l string) (out string, utf8Local bool, why string) {
	if l == "" {
		return "", false, "empty local part"
	}
	if l[0] == '"' {
		content, ok := unquote(l)
		if !ok {
			return "", false, "bad quoted local part"
		}
		// RFC 5321 4.1.2: a local part that is a dot-atom should not be quoted.
		if isDotAtom(content) {
			l = content
		} else {
			l = quoteLocal(content)
		}
	} else if !isDotAtom(l) {
		return "", false, "local part is not a dot-atom (quote it?)"
	}
	if len(l) > maxLocal {
		return "", false, fmt.Sprintf("local part longer than %d octets", maxLocal)
	}
	for _, r := range l {
		// Non-ASCII spaces and controls look like nothing in a list but
		// are not atext (RFC 6531 allows only graphic characters).
		if r >= 0x80 && (unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar) {
			return "", false, "invisible character in local part"
		}
	}
	return l, hasNonASCII(l), ""
}

// unquote decodes an RFC 5321 Quoted-string (qtextSMTP and quoted-pairs of
// printable ASCII or space; UTF-8 allowed per RFC 6531). Controls are
// rejected so nothing can reach the wire unescaped.
func unquote(q string) (string, bool) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return "", false
	}
	q = q[1 : len(q)-1]
	var b strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case c == '\\':
			i++
			if i == len(q) || q[i] < 32 || q[i] > 126 {
				return "", false
			}
			b.WriteByte(q[i])
		case c == '"' || c < 32 || c == 127:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// normalizeDomain lower-cases and converts the domain to A-labels, or
// validates an address literal.
func normalizeDomain(d string) (string, string) {
	if ldhDomain(d) {
		// What normalizeDomainSlow returns for such a domain, without the
		// cost of IDNA mapping (FuzzNormalizeDomain holds them equal).
		return strings.ToLower(d), ""
	}
	return normalizeDomainSlow(d)
}

// ldhDomain reports whether d is a host name that IDNA leaves as it is
// but for case: ASCII letters, digits and hyphens in labels of 1 to 63
// octets, none led or ended by a hyphen or with "--" at the third octet
// (the mark of an A-label, which IDNA decodes and checks), at most 253
// octets in all. Anything else goes the slow way.
func ldhDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(d); i++ {
		if i < len(d) && d[i] != '.' {
			c := d[i] | 0x20 // ASCII lower case; '-' and digits are unchanged
			if !('a' <= c && c <= 'z' || '0' <= d[i] && d[i] <= '9' || d[i] == '-') {
				return false
			}
			continue
		}
		label := d[start:i]
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' ||
			len(label) >= 4 && label[2] == '-' && label[3] == '-' {
			return false
		}
		start = i + 1
	}
	return true
}

// normalizeDomainSlow is normalizeDomain for any domain.
func normalizeDomainSlow(d string) (string, string) {
	if d == "" {
		return "", "empty domain"
	}
	if d[0] == '[' {
		if d[len(d)-1] != ']' {
			return "", "bad address literal"
		}
		lit := d[1 : len(d)-1]
		v6 := false
		if len(lit) > 5 && strings.EqualFold(lit[:5], "IPv6:") {
			lit, v6 = lit[5:], true
		}
		ip, err := netip.ParseAddr(lit)
		if err != nil || ip.Is6() != v6 || ip.Zone() != "" {
			return "", "bad address literal"
		}
		if v6 {
			return "[IPv6:" + ip.String() + "]", ""
		}
		return "[" + ip.String() + "]", ""
	}
	a, err := idna.Lookup.ToASCII(strings.ToLower(d))
	if err != nil {
		return "", "bad domain: " + err.Error()
	}
	if len(a) > maxDomain {
		return "", fmt.Sprintf("domain longer than %d octets", maxDomain)
	}
	for _, label := range strings.Split(a, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", "bad domain label"
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return "", "bad character in domain"
			}
		}
	}
	return a, ""
}
