package merge

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
)

// normalizeText drops NUL and turns every line end (CRLF, lone CR, lone LF)
// into CRLF, ending with one, so no bare CR or LF reaches the wire and a
// "\r.\r\n" in a value cannot become an end-of-data on some relay.
func normalizeText(b []byte) []byte {
	out, _ := appendNormalized(make([]byte, 0, len(b)+len(b)/16+2), b)
	return out
}

// appendNormalized appends normalizeText(b) to dst and reports whether the
// result is 7bit-safe as is7bit defines it. Both are done in one pass
// because this runs once per message over the whole body; a buffer reused
// from message to message as dst saves the allocation too.
func appendNormalized(dst, b []byte) (out []byte, sevenBit bool) {
	out = dst
	sevenBit = true
	lineStart := len(out) // where the current output line begins
	for i := 0; i < len(b); i++ {
		c := b[i]
		if ' ' <= c && c <= '~' {
			// The common case: printable ASCII. A run of it is copied
			// at once.
			j := i + 1 + printableRun(b[i+1:])
			out = append(out, b[i:j]...)
			i = j - 1
			continue
		}
		switch c {
		case 0:
		case '\r', '\n':
			if c == '\r' && i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
			if sevenBit && !sevenBitLine(out[lineStart:]) {
				sevenBit = false
			}
			out = append(out, '\r', '\n')
			lineStart = len(out)
		default:
			if c != '\t' {
				sevenBit = false
			}
			out = append(out, c)
		}
	}
	if len(out) > lineStart {
		// The last line had no line end.
		if sevenBit && !sevenBitLine(out[lineStart:]) {
			sevenBit = false
		}
		out = append(out, '\r', '\n')
	}
	return out, sevenBit
}

// Byte-parallel tests on eight octets at once (from "Bit Twiddling Hacks":
// hasless and hasmore, exact for a bound of at most 128 and 127).
const (
	ones  = ^uint64(0) / 255 // 0x0101...01
	highs = ones * 0x80      // 0x8080...80
)

// printableRun returns how many of the octets that start b are printable
// ASCII other than '=' (what both the 7bit test and quoted-printable
// pass through unchanged, but for tab, which ends the run): eight at a
// time, then one at a time. A body is mostly such runs.
func printableRun(b []byte) int {
	i := 0
	for ; i+8 <= len(b); i += 8 {
		w := binary.LittleEndian.Uint64(b[i:])
		eq := w ^ (ones * '=')
		below := (w - ones*' ') &^ w & highs        // an octet < ' '
		above := ((w + ones*(127-'~')) | w) & highs // an octet > '~'
		isEq := (eq - ones) &^ eq & highs           // an octet == '='
		if below|above|isEq != 0 {
			break
		}
	}
	for ; i < len(b) && ' ' <= b[i] && b[i] <= '~' && b[i] != '='; i++ {
	}
	return i
}

// sevenBitLine is is7bit's test of one line's shape (its characters are
// checked as they are copied): at most 78 octets, not led by a '.'.
func sevenBitLine(line []byte) bool {
	return len(line) <= 78 && (len(line) == 0 || line[0] != '.')
}

// encodeBody picks a transfer encoding for CRLF-normalised text: 7bit when
// the text is short-lined printable ASCII with no line starting with '.',
// else the smaller of quoted-printable and base64.
func encodeBody(b []byte) (cte string, data []byte) {
	return encodeBodyTo(nil, b, is7bit(b))
}

// encodeBodyTo is encodeBody for text whose is7bit is already known; the
// quoted-printable form is appended to scratch (which may be nil) to spare
// an allocation. In the 7bit case data is b itself.
func encodeBodyTo(scratch, b []byte, sevenBit bool) (cte string, data []byte) {
	if sevenBit {
		return "7bit", b
	}
	q := appendQuotedPrintable(scratch[:0], b)
	if len(q) <= base64.StdEncoding.EncodedLen(len(b))*78/76 {
		return "quoted-printable", q
	}
	return "base64", base64Lines(b)
}

// cutCRLF splits b at its first CRLF: the line before it and the rest
// after it (nil when b has no CRLF).
func cutCRLF(b []byte) (line, rest []byte) {
	if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
		return b[:i], b[i+2:]
	}
	return b, nil
}

func is7bit(b []byte) bool {
	for len(b) > 0 {
		var line []byte
		line, b = cutCRLF(b)
		if !sevenBitLine(line) {
			return false
		}
		for _, c := range line {
			if (c < ' ' && c != '\t') || c > '~' {
				return false
			}
		}
	}
	return true
}

const hexUpper = "0123456789ABCDEF"

// qpSafe marks the octets quoted-printable writes as themselves (a space or
// tab only when it does not end the line; a '.' only when it does not start
// one): printable ASCII but '=', and tab.
var qpSafe = func() (t [256]bool) {
	for c := ' '; c <= '~'; c++ {
		t[c] = c != '='
	}
	t['\t'] = true
	return t
}()

// quotedPrintable encodes CRLF-normalised text (RFC 2045 6.7) with lines of
// at most 76 octets. Unlike mime/quotedprintable it also encodes a '.' that
// would start a line, soft breaks included, so a lone "." line (or any
// dot-led line) never appears, whatever the transport's dot-stuffing does.
func quotedPrintable(b []byte) []byte {
	return appendQuotedPrintable(make([]byte, 0, len(b)*3/2), b)
}

// appendQuotedPrintable appends quotedPrintable(b) to out.
func appendQuotedPrintable(out, b []byte) []byte {
	for len(b) > 0 {
		var line []byte
		line, b = cutCRLF(b)
		n := 0
		for i := 0; i < len(line); {
			c := line[i]
			if qpSafe[c] && i < len(line)-1 && n < 75 && (c != '.' || n > 0) {
				// A run of characters that stand for themselves, up to
				// the line's last character and to where a soft break
				// would be due: what the general case below would
				// copy one at a time.
				end := min(len(line)-1, i+75-n)
				j := i + 1 + printableRun(line[i+1:end])
				for j < end && qpSafe[line[j]] {
					j++
				}
				out = append(out, line[i:j]...)
				n += j - i
				i = j
				continue
			}
			last := i == len(line)-1
			enc := !qpSafe[c] || c == '.' && n == 0 || (c == ' ' || c == '\t') && last
			w := 1
			if enc {
				w = 3
			}
			// Leave room for the soft break's '='; keep the last character
			// of a line on it if it fits in 76.
			limit := 75
			if last {
				limit = 76
			}
			if n+w > limit {
				out = append(out, '=', '\r', '\n')
				n = 0
				if c == '.' {
					enc, w = true, 3
				}
			}
			if enc {
				out = append(out, '=', hexUpper[c>>4], hexUpper[c&15])
			} else {
				out = append(out, c)
			}
			n += w
			i++
		}
		out = append(out, '\r', '\n')
	}
	return out
}

// base64Lines encodes b as base64 in lines of 76 characters.
func base64Lines(b []byte) []byte {
	s := base64.StdEncoding.EncodeToString(b)
	out := make([]byte, 0, len(s)+len(s)/76*2+2)
	for len(s) > 76 {
		out = append(out, s[:76]...)
		out = append(out, '\r', '\n')
		s = s[76:]
	}
	if len(s) > 0 {
		out = append(out, s...)
		out = append(out, '\r', '\n')
	}
	return out
}
