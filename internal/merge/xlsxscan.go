package merge

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// errXLSXUnsupported says the fast XLSX reader met something it cannot
// show exactly as excelize would. It never reaches a caller: the list is
// then read through excelize instead.
var errXLSXUnsupported = errors.New("xlsx construct not handled by the fast reader")

// xmlTokenLimit bounds one tag or one run of text. Excel stores at most
// 32,767 characters in a cell, so anything near this size is not a list;
// excelize keeps such a file, so the fast reader hands it over rather than
// grow its buffer without bound.
const xmlTokenLimit = 4 << 20

// xmlScan is a byte-level tokenizer for the small subset of XML that
// worksheets and shared-string tables are written in. It is not a general
// XML parser: comments, processing instructions, CDATA and DOCTYPE are
// reported as errXLSXUnsupported, and text is only checked, not decoded,
// until a caller asks for its value.
type xmlScan struct {
	r        io.Reader
	buf      []byte
	pos, end int
	off      int64 // stream offset of buf[0], for error messages
	eof      bool
	err      error // a read error other than io.EOF
}

// xtok is one token. Its slices point into the scanner's buffer and are
// valid until the next call to next.
type xtok struct {
	kind  byte // 's' start tag, 'e' end tag, 't' text, 0 end of input
	name  []byte
	attrs []byte // a start tag's attributes, raw
	empty bool   // a start tag that closes itself
	text  []byte // raw text, entities not yet decoded
}

func newXMLScan(r io.Reader) *xmlScan {
	return &xmlScan{r: r, buf: make([]byte, 64<<10)}
}

// fill reads more input after end, moving the unread bytes to the front
// and growing the buffer when it is full. It returns false at the end of
// the input, on a read error, or when one token would pass xmlTokenLimit.
func (s *xmlScan) fill() bool {
	if s.eof || s.err != nil {
		return false
	}
	if s.pos > 0 {
		n := copy(s.buf, s.buf[s.pos:s.end])
		s.off += int64(s.pos)
		s.pos, s.end = 0, n
	}
	if s.end == len(s.buf) {
		if len(s.buf) >= xmlTokenLimit {
			s.err = errXLSXUnsupported
			return false
		}
		nb := make([]byte, 2*len(s.buf))
		copy(nb, s.buf[:s.end])
		s.buf = nb
	}
	for {
		n, err := s.r.Read(s.buf[s.end:])
		s.end += n
		if err == io.EOF {
			s.eof = true
		} else if err != nil {
			s.err = err
		}
		if n > 0 || s.eof || s.err != nil {
			return n > 0
		}
	}
}

// malformedError is XML that encoding/xml rejects too.
type malformedError struct {
	offset int64
	msg    string
}

func (e *malformedError) Error() string {
	return fmt.Sprintf("malformed XML at byte %d: %s", e.offset, e.msg)
}

// malformed reports XML that no parser accepts. at is relative to pos.
func (s *xmlScan) malformed(at int, format string, args ...any) error {
	return &malformedError{s.off + int64(s.pos+at), fmt.Sprintf(format, args...)}
}

// failure is the error for input that stopped early: a read error, the
// token limit, or a truncated document.
func (s *xmlScan) failure(at int, what string) error {
	if s.err != nil {
		return s.err
	}
	return s.malformed(at, "unexpected end of input in %s", what)
}

// next reads the next token into t.
func (s *xmlScan) next(t *xtok) error {
	if s.pos == s.end && !s.fill() {
		if s.err != nil {
			return s.err
		}
		t.kind = 0
		return nil
	}
	if s.buf[s.pos] != '<' {
		i := 0
		for {
			if j := bytes.IndexByte(s.buf[s.pos+i:s.end], '<'); j >= 0 {
				i += j
				break
			}
			i = s.end - s.pos
			if !s.fill() {
				if s.err != nil {
					return s.err
				}
				break
			}
		}
		t.kind, t.text = 't', s.buf[s.pos:s.pos+i]
		s.pos += i
		return nil
	}
	for s.end-s.pos < 2 {
		if !s.fill() {
			return s.failure(0, "tag")
		}
	}
	switch s.buf[s.pos+1] {
	case '!', '?':
		return errXLSXUnsupported
	case '/':
		i := 2
		for {
			if j := bytes.IndexByte(s.buf[s.pos+i:s.end], '>'); j >= 0 {
				i += j
				break
			}
			i = s.end - s.pos
			if !s.fill() {
				return s.failure(0, "end tag")
			}
		}
		t.kind, t.name = 'e', bytes.TrimRight(s.buf[s.pos+2:s.pos+i], " \t\r\n")
		s.pos += i + 1
		return nil
	}
	// A start tag ends at the first '>' outside a quoted attribute value.
	i, quote := 1, byte(0)
	for {
		for ; s.pos+i < s.end; i++ {
			c := s.buf[s.pos+i]
			if quote != 0 {
				if c == quote {
					quote = 0
				}
			} else if c == '"' || c == '\'' {
				quote = c
			} else if c == '>' {
				goto found
			}
		}
		if !s.fill() {
			return s.failure(0, "start tag")
		}
	}
found:
	body := s.buf[s.pos+1 : s.pos+i]
	s.pos += i + 1
	t.kind, t.empty = 's', false
	if n := len(body); n > 0 && body[n-1] == '/' {
		t.empty, body = true, body[:n-1]
	}
	n := 0
	for n < len(body) && !isXMLSpace(body[n]) {
		n++
	}
	t.name, t.attrs = body[:n], body[n:]
	if n == 0 {
		return errXLSXUnsupported
	}
	return nil
}

// skipProlog consumes an XML declaration, which must declare UTF-8 or no
// encoding: excelize transcodes other charsets, the fast reader does not.
func (s *xmlScan) skipProlog() error {
	for s.end-s.pos < 6 && s.fill() {
	}
	if !bytes.HasPrefix(s.buf[s.pos:s.end], []byte("<?xml")) || !isXMLSpace(s.buf[s.pos+5]) {
		return nil
	}
	i := 0
	for {
		if j := bytes.Index(s.buf[s.pos+i:s.end], []byte("?>")); j >= 0 {
			i += j
			break
		}
		i = max(0, s.end-s.pos-1)
		if !s.fill() {
			return errXLSXUnsupported
		}
	}
	decl := string(s.buf[s.pos+5 : s.pos+i])
	s.pos += i + 2
	if k := strings.Index(decl, "encoding"); k >= 0 {
		v := strings.TrimLeft(decl[k+len("encoding"):], " \t\r\n=")
		if len(v) < 2 || !strings.EqualFold(strings.Trim(strings.Fields(v)[0], `"'`), "utf-8") {
			return errXLSXUnsupported
		}
	}
	return nil
}

// rest returns the unread input, for a scan of what follows sheetData.
func (s *xmlScan) rest() []byte { return s.buf[s.pos:s.end] }

func (s *xmlScan) consume() { s.pos = s.end }

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isBlankText(b []byte) bool {
	for _, c := range b {
		if !isXMLSpace(c) {
			return false
		}
	}
	return true
}

// nextAttr returns the attribute of raw that starts at or after i, and the
// index after it; name is nil when there are no more. Values with '<', or
// names that are not plain ASCII, are errXLSXUnsupported.
func nextAttr(raw []byte, i int) (name, val []byte, j int, err error) {
	for i < len(raw) && isXMLSpace(raw[i]) {
		i++
	}
	if i == len(raw) {
		return nil, nil, i, nil
	}
	k := i
	for k < len(raw) && isNameByte(raw[k]) {
		k++
	}
	if k == i {
		return nil, nil, 0, errXLSXUnsupported
	}
	name = raw[i:k]
	for k < len(raw) && isXMLSpace(raw[k]) {
		k++
	}
	if k == len(raw) || raw[k] != '=' {
		return nil, nil, 0, errXLSXUnsupported
	}
	k++
	for k < len(raw) && isXMLSpace(raw[k]) {
		k++
	}
	if k == len(raw) || (raw[k] != '"' && raw[k] != '\'') {
		return nil, nil, 0, errXLSXUnsupported
	}
	q := raw[k]
	e := bytes.IndexByte(raw[k+1:], q)
	if e < 0 {
		return nil, nil, 0, errXLSXUnsupported
	}
	val = raw[k+1 : k+1+e]
	if bytes.IndexByte(val, '<') >= 0 {
		return nil, nil, 0, errXLSXUnsupported
	}
	if _, err := checkText(val); err != nil {
		return nil, nil, 0, err
	}
	return name, val, k + 2 + e, nil
}

func isNameByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == ':' || c == '.' || c == '-'
}

// localName splits off a namespace prefix as encoding/xml does; a name
// with more than one colon is errXLSXUnsupported.
func localName(name []byte) (local []byte, prefixed bool, err error) {
	i := bytes.IndexByte(name, ':')
	if i < 0 {
		return name, false, nil
	}
	if bytes.IndexByte(name[i+1:], ':') >= 0 || i == 0 || i == len(name)-1 {
		return nil, false, errXLSXUnsupported
	}
	return name[i+1:], true, nil
}

// checkText checks raw character data the way encoding/xml would accept
// it and reports whether decodeText has work to do (an entity or a CR).
// Anything encoding/xml might read differently is errXLSXUnsupported:
// control characters, unknown or unusual entities, "]]>", invalid UTF-8.
func checkText(raw []byte) (decode bool, err error) {
	ascii := true
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c >= 0x80:
			ascii = false
		case c == '&':
			n, _, ok := entityAt(raw[i:])
			if !ok {
				return false, errXLSXUnsupported
			}
			decode = true
			i += n - 1
		case c == '\r':
			decode = true
		case c < 0x20 && c != '\t' && c != '\n':
			return false, errXLSXUnsupported
		case c == '>' && i >= 2 && raw[i-1] == ']' && raw[i-2] == ']':
			return false, errXLSXUnsupported
		}
	}
	if !ascii {
		// Valid UTF-8 has no surrogates; U+FFFE and U+FFFF are the only
		// other runes outside XML's character range.
		if !utf8.Valid(raw) || bytes.Contains(raw, []byte("\xEF\xBF\xBE")) || bytes.Contains(raw, []byte("\xEF\xBF\xBF")) {
			return false, errXLSXUnsupported
		}
	}
	return decode, nil
}

// entityAt reads the entity at the start of b ("&...;"): its length and
// replacement. Only the five predefined names and decimal or lower-case
// hex references to characters in XML's range are accepted.
func entityAt(b []byte) (n int, repl string, ok bool) {
	end := bytes.IndexByte(b, ';')
	if end < 2 || end > 12 {
		return 0, "", false
	}
	body := string(b[1:end])
	switch body {
	case "lt":
		return end + 1, "<", true
	case "gt":
		return end + 1, ">", true
	case "amp":
		return end + 1, "&", true
	case "apos":
		return end + 1, "'", true
	case "quot":
		return end + 1, `"`, true
	}
	if body[0] != '#' || len(body) < 2 {
		return 0, "", false
	}
	base, digits := 10, body[1:]
	if digits[0] == 'x' {
		base, digits = 16, digits[1:]
	}
	if digits == "" {
		return 0, "", false
	}
	var r rune
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		var d rune
		switch {
		case '0' <= c && c <= '9':
			d = rune(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = rune(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = rune(c-'A') + 10
		default:
			return 0, "", false
		}
		r = r*rune(base) + d
		if r > 0x10FFFF {
			return 0, "", false
		}
	}
	if !(r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000) {
		return 0, "", false
	}
	return end + 1, string(r), true
}

// decodeText returns the value of character data that checkText accepted:
// entities replaced, and CR LF or a lone CR read as LF, as encoding/xml
// does.
func decodeText(raw []byte, decode bool) string {
	if !decode {
		return string(raw)
	}
	var b strings.Builder
	b.Grow(len(raw))
	for i := 0; i < len(raw); i++ {
		switch c := raw[i]; c {
		case '&':
			n, repl, _ := entityAt(raw[i:])
			b.WriteString(repl)
			i += n - 1
		case '\r':
			b.WriteByte('\n')
			if i+1 < len(raw) && raw[i+1] == '\n' {
				i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
