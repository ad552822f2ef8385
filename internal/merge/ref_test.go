package merge

// Copies of the encoders as they were before the merge stage was made
// faster (commit e3ab8eb), kept as the reference that the fast paths are
// fuzzed against: their output is the product, byte for byte.

import (
	"bytes"
	"encoding/base64"
	"strings"
)

// refNormalizeText: normalizeText drops NUL and turns every line end (CRLF, lone CR, lone LF)
// into CRLF, ending with one, so no bare CR or LF reaches the wire and a
// "\r.\r\n" in a value cannot become an end-of-data on some relay.
func refNormalizeText(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/16+2)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case 0:
		case '\r':
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
			out = append(out, '\r', '\n')
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	if len(out) > 0 && !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, '\r', '\n')
	}
	return out
}

// refEncodeBody: encodeBody picks a transfer encoding for CRLF-normalised text: 7bit when
// the text is short-lined printable ASCII with no line starting with '.',
// else the smaller of quoted-printable and base64.
func refEncodeBody(b []byte) (cte string, data []byte) {
	if refIs7bit(b) {
		return "7bit", b
	}
	q := refQuotedPrintable(b)
	if len(q) <= base64.StdEncoding.EncodedLen(len(b))*78/76 {
		return "quoted-printable", q
	}
	return "base64", base64Lines(b)
}

func refIs7bit(b []byte) bool {
	for _, line := range bytes.Split(b, []byte("\r\n")) {
		if len(line) > 78 || len(line) > 0 && line[0] == '.' {
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

// refQuotedPrintable: quotedPrintable encodes CRLF-normalised text (RFC 2045 6.7) with lines of
// at most 76 octets. Unlike mime/quotedprintable it also encodes a '.' that
// would start a line, soft breaks included, so a lone "." line (or any
// dot-led line) never appears, whatever the transport's dot-stuffing does.
func refQuotedPrintable(b []byte) []byte {
	out := make([]byte, 0, len(b)*3/2)
	lines := bytes.Split(b, []byte("\r\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	var enc [3]byte
	for _, line := range lines {
		n := 0
		for i, c := range line {
			e := enc[:1]
			switch {
			case (c == ' ' || c == '\t') && i == len(line)-1,
				c == '=', c == '.' && n == 0,
				(c < ' ' && c != '\t') || c > '~':
				e = enc[:3]
				e[0], e[1], e[2] = '=', hexUpper[c>>4], hexUpper[c&15]
			default:
				e[0] = c
			}
			// Leave room for the soft break's '='; keep the last character
			// of a line on it if it fits in 76.
			limit := 75
			if i == len(line)-1 {
				limit = 76
			}
			if n+len(e) > limit {
				out = append(out, '=', '\r', '\n')
				n = 0
				if c == '.' {
					e = enc[:3]
					e[0], e[1], e[2] = '=', '2', 'E'
				}
			}
			out = append(out, e...)
			n += len(e)
		}
		out = append(out, '\r', '\n')
	}
	return out
}

// refWriteField: writeField folds "name: value" at spaces to lines of 78 octets where it
// can. Values are ASCII after encoding except for UTF-8 local parts, and no
// word is longer than about 900 octets, so no line passes 998.
func refWriteField(w *bytes.Buffer, name, value string) {
	w.WriteString(name)
	w.WriteString(":")
	n := len(name) + 1
	for i, word := range strings.Fields(value) {
		if i > 0 && n+1+len(word) > 78 {
			w.WriteString("\r\n")
			n = 0
		}
		w.WriteByte(' ')
		w.WriteString(word)
		n += 1 + len(word)
	}
	w.WriteString("\r\n")
}

func refLongestWord(s string) int {
	n := 0
	for _, w := range strings.Fields(s) {
		n = max(n, len(w))
	}
	return n
}

func refValidMsgID(id string) bool {
	if len(id) < 5 || len(id) > 250 || id[0] != '<' || id[len(id)-1] != '>' {
		return false
	}
	l, r, ok := strings.Cut(id[1:len(id)-1], "@")
	return ok && l != "" && r != "" && !strings.ContainsAny(l+r, "<>@ \t\r\n\x00\"\\()[],;:") && !hasNonASCII(l+r)
}

// refData is Template.data as it was.
func refData(header []string, alias map[string]int, values []string) map[string]string {
	m := make(map[string]string, len(header)+len(alias))
	for i, h := range header {
		if _, ok := m[h]; !ok && i < len(values) {
			m[h] = values[i]
		}
	}
	for name, i := range alias {
		if i < len(values) {
			m[name] = values[i]
		} else {
			m[name] = ""
		}
	}
	return m
}
