package report

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// The journal is read back a record at a time when the result file is
// written, one record per row, and written a record per Committing and
// Record; encoding/json's reflection was most of that cost. The functions
// here do the same for the one shape json.Marshal gives a record: the
// fields in declaration order, each at most once, no spaces. Encoding is
// byte for byte what json.Marshal writes; decoding hands anything else (a
// surrogate escape, a null, another key order, bad input) to json.Unmarshal,
// so that what a line decodes to, or why it fails, never depends on which
// path read it.

// appendRecord appends r to dst as json.Marshal(r) writes it (without a
// newline). It returns an error, and dst unchanged, exactly when
// json.Marshal fails: for a time RFC 3339 cannot hold (a year outside
// 0-9999, or a zone offset of a day or more).
func appendRecord(dst []byte, r *record) ([]byte, error) {
	b := append(dst, `{"t":`...)
	b = appendJSONString(b, r.T)
	b = appendIntField(b, `,"v":`, int64(r.Version))
	b = appendStringField(b, `,"list":`, r.List)
	b = appendIntField(b, `,"row":`, int64(r.Row))
	b = appendStringField(b, `,"email":`, r.Email)
	b = appendStringField(b, `,"status":`, string(r.Status))
	b = appendReplyField(b, `,"rcpt":`, &r.Rcpt)
	b = appendReplyField(b, `,"data":`, &r.Data)
	b = appendIntField(b, `,"attempt":`, int64(r.Attempt))
	b = appendIntField(b, `,"attempts":`, int64(r.Attempts))
	b = appendStringField(b, `,"mid":`, r.MessageID)
	b = appendStringField(b, `,"error":`, r.Error)
	b = appendIntField(b, `,"conn":`, int64(r.Conn))
	var err1, err2 error
	b, err1 = appendTimeField(b, `,"start":`, r.Start)
	if err1 == nil {
		b, err2 = appendTimeField(b, `,"at":`, r.At)
	}
	if err1 != nil || err2 != nil {
		// Rare enough to take json's own error, word for word. A copy
		// goes to json, so that r need not live on the heap.
		rc := *r
		_, err := json.Marshal(&rc)
		return dst, err
	}
	b = appendIntField(b, `,"dur_ns":`, r.Duration)
	return append(b, '}'), nil
}

// appendReserve appends the line of a reserve record for rs, newline
// included, as json.Marshal and encode write it: one is written for
// every few dozen messages sent, and reflection made it a visible cost.
func appendReserve(b []byte, rs []Reservation) []byte {
	b = append(b, `{"t":"reserve","reserved":[`...)
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(append(b, `{"row":`...), int64(r.Row), 10)
		b = appendStringField(b, `,"email":`, r.Email)
		b = appendStringField(b, `,"mid":`, r.MessageID)
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

func appendIntField(b []byte, key string, v int64) []byte {
	if v == 0 { // omitempty
		return b
	}
	return strconv.AppendInt(append(b, key...), v, 10)
}

func appendStringField(b []byte, key, s string) []byte {
	if s == "" { // omitempty
		return b
	}
	return appendJSONString(append(b, key...), s)
}

func appendReplyField(b []byte, key string, p *Reply) []byte {
	if *p == (Reply{}) { // omitzero
		return b
	}
	b = append(b, key...)
	b = append(b, '{')
	// Commas go between the fields present, as json.Marshal puts them.
	mark := len(b)
	if p.Code != 0 {
		b = strconv.AppendInt(append(b, `"code":`...), int64(p.Code), 10)
	}
	if p.Enhanced != "" {
		if len(b) > mark {
			b = append(b, ',')
		}
		b = appendJSONString(append(b, `"enhanced":`...), p.Enhanced)
	}
	if p.Text != "" {
		if len(b) > mark {
			b = append(b, ',')
		}
		b = appendJSONString(append(b, `"text":`...), p.Text)
	}
	return append(b, '}')
}

func appendTimeField(b []byte, key string, t time.Time) ([]byte, error) {
	if t.IsZero() { // omitzero
		return b, nil
	}
	b = append(b, key...)
	b = append(b, '"')
	// An RFC 3339 time has nothing json would escape.
	b, err := t.AppendText(b)
	if err != nil {
		return nil, err
	}
	return append(b, '"'), nil
}

const hexDigits = "0123456789abcdef"

// jsonPlain marks the ASCII octets appendJSONString copies as they are:
// printable, and not '"', '\\', '<', '>' or '&'.
var jsonPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendJSONString appends s quoted as json.Marshal quotes a string (with
// its default HTML escaping): <, > and & as \u escapes, invalid UTF-8 as
// \ufffd, U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		for i < len(s) && jsonPlain[s[i]] {
			i++ // the common case: a run of octets that go as they are
		}
		if i == len(s) {
			break
		}
		c := s[i]
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// decodeRecord sets *r to the record in line (one journal line, its
// newline allowed), as json.Unmarshal into a zero record would: same
// fields, same error or none. Lines in the shape appendRecord writes are
// parsed here; any other is handed to json.Unmarshal.
func decodeRecord(line []byte, r *record) error {
	return decodeRecordIn(line, "", nil, r)
}

// decodeRecordIn is decodeRecord for a caller that decodes many lines
// and lends it memory. text, unless "", is line's bytes as a string: the
// strings of the record are cut from it instead of from a copy of the
// line of their own, so that lines copied into one string cost one
// allocation between them. scratch, unless nil, is the buffer strings
// with escapes are unescaped in, kept for the next call.
func decodeRecordIn(line []byte, text string, scratch *[]byte, r *record) error {
	*r = record{}
	d := recordDecoder{buf: line, text: text}
	if scratch != nil {
		d.scratch = (*scratch)[:0]
	}
	ok := d.record(r)
	if scratch != nil {
		*scratch = d.scratch
	}
	if ok {
		return nil
	}
	// Unmarshal into a record of its own, so that r need not escape to
	// the heap: a caller decoding many lines keeps its record on the stack.
	var j record
	err := json.Unmarshal(line, &j)
	*r = j
	return err
}

// recordDecoder reads the one shape of line appendRecord writes. Each
// method reports false for anything else, and the caller starts over with
// json.Unmarshal; so none needs to say what was wrong.
type recordDecoder struct {
	buf     []byte
	pos     int
	text    string // buf as a string, given or made on first use
	scratch []byte // unescaped string bytes
}

// substr returns buf[i:j] as a string. The strings of one line share one
// copy of it: a record's eight or so strings cost one allocation, not
// eight.
func (d *recordDecoder) substr(i, j int) string {
	if d.text == "" {
		d.text = string(d.buf)
	}
	return d.text[i:j]
}

// recordKeys are the keys of a record in the order json.Marshal writes
// them; a line's keys must come in this order, each at most once.
var recordKeys = [...]string{"t", "v", "list", "row", "email", "status", "rcpt", "data",
	"attempt", "attempts", "mid", "error", "conn", "start", "at", "dur_ns", "boot", "reserved"}

func (d *recordDecoder) record(r *record) bool {
	if !d.byte('{') {
		return false
	}
	for it := (fields{keys: recordKeys[:]}); ; {
		k, ok := d.field(&it)
		if !ok {
			return false
		}
		if k < 0 {
			break
		}
		if !d.recordField(r, k) {
			return false
		}
	}
	// json.Unmarshal allows white space after the value, nothing else.
	for ; d.pos < len(d.buf); d.pos++ {
		switch d.buf[d.pos] {
		case ' ', '\t', '\r', '\n':
		default:
			return false
		}
	}
	// A "t" key is required by nothing in json; T is "" without one,
	// which is what json.Unmarshal gives too.
	return true
}

// recordField reads the value of r's field recordKeys[k].
func (d *recordDecoder) recordField(r *record, k int) bool {
	switch k {
	case 0:
		return d.str(&r.T)
	case 1:
		return d.int(&r.Version)
	case 2:
		return d.str(&r.List)
	case 3:
		return d.int(&r.Row)
	case 4:
		return d.str(&r.Email)
	case 5:
		var s string
		ok := d.str(&s)
		r.Status = Status(s)
		return ok
	case 6:
		return d.reply(&r.Rcpt)
	case 7:
		return d.reply(&r.Data)
	case 8:
		return d.int(&r.Attempt)
	case 9:
		return d.int(&r.Attempts)
	case 10:
		return d.str(&r.MessageID)
	case 11:
		return d.str(&r.Error)
	case 12:
		return d.int(&r.Conn)
	case 13:
		return d.time(&r.Start)
	case 14:
		return d.time(&r.At)
	case 15:
		return d.int64(&r.Duration)
	case 16:
		return d.str(&r.Boot)
	default:
		return d.reservations(&r.Reserved)
	}
}

var replyKeys = [...]string{"code", "enhanced", "text"}

var reservationKeys = [...]string{"row", "email", "mid"}

// reservations reads a non-empty array of reservations, as appendReserve
// writes it.
func (d *recordDecoder) reservations(p *[]Reservation) bool {
	if !d.byte('[') {
		return false
	}
	for {
		var r Reservation
		if !d.byte('{') {
			return false
		}
		for it := (fields{keys: reservationKeys[:]}); ; {
			k, ok := d.field(&it)
			if !ok {
				return false
			}
			if k < 0 {
				break
			}
			switch k {
			case 0:
				ok = d.int(&r.Row)
			case 1:
				ok = d.str(&r.Email)
			default:
				ok = d.str(&r.MessageID)
			}
			if !ok {
				return false
			}
		}
		*p = append(*p, r)
		if d.byte(']') {
			return true
		}
		if !d.byte(',') {
			return false
		}
	}
}

// reply reads a Reply.
func (d *recordDecoder) reply(p *Reply) bool {
	if !d.byte('{') {
		return false
	}
	for it := (fields{keys: replyKeys[:]}); ; {
		k, ok := d.field(&it)
		if !ok {
			return false
		}
		switch k {
		case -1:
			return true
		case 0:
			ok = d.int(&p.Code)
		case 1:
			ok = d.str(&p.Enhanced)
		default:
			ok = d.str(&p.Text)
		}
		if !ok {
			return false
		}
	}
}

// fields walks the keys of a JSON object, after its opening brace, whose
// keys come from keys, in their order and each at most once (the shape
// json.Marshal writes). It is a loop's state rather than a function taking
// a closure, since it runs for every field of every line of the journal.
type fields struct {
	keys    []string
	next    int  // index in keys of the first key still allowed
	started bool // a field was read: the next one follows a comma
}

// field reads the next key and its colon and returns the key's index in
// it.keys, for the caller to read the value; at the closing brace (which it
// reads) it returns -1. An empty object is fine. ok is false for anything
// else.
func (d *recordDecoder) field(it *fields) (k int, ok bool) {
	if d.peek() == '}' {
		d.pos++
		return -1, true
	}
	if it.started && !d.byte(',') {
		return 0, false
	}
	it.started = true
	if k = d.key(it.keys, it.next); k < 0 {
		return 0, false
	}
	it.next = k + 1
	return k, true
}

// key reads a key and its colon, `"name":`, where name is the first of
// keys[next:] that the line has there, and returns its index in keys, or
// -1 if none is. The keys are distinct and plain ASCII, so the one followed
// by a quote and a colon is the whole key the line has there; a key with an
// escape matches none, and the line goes to json.Unmarshal.
func (d *recordDecoder) key(keys []string, next int) int {
	rest := d.buf[d.pos:]
	if len(rest) == 0 || rest[0] != '"' {
		return -1
	}
	rest = rest[1:]
	for k := next; k < len(keys); k++ {
		key := keys[k]
		if len(rest) >= len(key)+2 && rest[len(key)] == '"' && rest[len(key)+1] == ':' && string(rest[:len(key)]) == key {
			d.pos += len(key) + 3
			return k
		}
	}
	return -1
}

func (d *recordDecoder) peek() byte {
	if d.pos < len(d.buf) {
		return d.buf[d.pos]
	}
	return 0
}

func (d *recordDecoder) byte(c byte) bool {
	if d.peek() != c {
		return false
	}
	d.pos++
	return true
}

// str reads a JSON string into *s. It takes the escapes json.Marshal
// writes, \u escapes of a character outside the surrogate range included;
// a surrogate (whose pairing rules json applies) is left to json.Unmarshal.
func (d *recordDecoder) str(s *string) bool {
	if !d.byte('"') {
		return false
	}
	buf := d.buf
	start := d.pos
	i := d.pos
	// The common case: nothing escaped, the string is the bytes between
	// the quotes.
	for i < len(buf) {
		c := buf[i]
		if c == '"' {
			if !utf8.Valid(buf[start:i]) {
				return false // json.Unmarshal replaces each bad byte
			}
			*s = d.substr(start, i)
			d.pos = i + 1
			return true
		}
		if c == '\\' {
			break
		}
		if c < 0x20 {
			return false
		}
		i++
	}
	if d.scratch == nil {
		// Room for every string still to come on the line, unescaped: one
		// allocation for them all.
		d.scratch = make([]byte, 0, len(buf)-start)
	}
	out := append(d.scratch[:0], buf[start:i]...)
	for i < len(buf) {
		// The bytes up to the next quote, escape or control character
		// go in at once.
		run := i
		for i < len(buf) && buf[i] != '"' && buf[i] != '\\' && buf[i] >= 0x20 {
			i++
		}
		out = append(out, buf[run:i]...)
		if i == len(buf) {
			return false
		}
		c := buf[i]
		switch {
		case c == '"':
			if !utf8.Valid(out) {
				return false
			}
			*s = string(out)
			d.scratch = out
			d.pos = i + 1
			return true
		case c < 0x20:
			return false
		}
		if i+1 >= len(buf) {
			return false
		}
		switch e := buf[i+1]; e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			if i+6 > len(buf) {
				return false
			}
			var r rune
			for _, h := range buf[i+2 : i+6] {
				var v byte
				switch {
				case '0' <= h && h <= '9':
					v = h - '0'
				case 'a' <= h && h <= 'f':
					v = h - 'a' + 10
				case 'A' <= h && h <= 'F':
					v = h - 'A' + 10
				default:
					return false
				}
				r = r<<4 | rune(v)
			}
			if 0xD800 <= r && r < 0xE000 {
				return false
			}
			out = utf8.AppendRune(out, r)
			i += 6
			continue
		default:
			return false
		}
		i += 2
	}
	return false
}

// int reads a JSON number that json.Unmarshal would store in an int: an
// optional minus and digits without a leading zero, in range.
func (d *recordDecoder) int(p *int) bool {
	var v int64
	if !d.int64(&v) || int64(int(v)) != v {
		return false
	}
	*p = int(v)
	return true
}

func (d *recordDecoder) int64(p *int64) bool {
	start := d.pos
	i := d.pos
	if i < len(d.buf) && d.buf[i] == '-' {
		i++
	}
	digits := i
	for i < len(d.buf) && '0' <= d.buf[i] && d.buf[i] <= '9' {
		i++
	}
	if i == digits || (d.buf[digits] == '0' && i-digits > 1) {
		return false
	}
	// A fraction or an exponent makes it a number json will not put in
	// an int; the next byte must end the value.
	if i < len(d.buf) && (d.buf[i] == '.' || d.buf[i] == 'e' || d.buf[i] == 'E') {
		return false
	}
	if i-digits <= 18 {
		// Cannot overflow: no need for ParseInt.
		var v int64
		for _, c := range d.buf[digits:i] {
			v = v*10 + int64(c-'0')
		}
		if digits > start {
			v = -v
		}
		*p = v
		d.pos = i
		return true
	}
	v, err := strconv.ParseInt(string(d.buf[start:i]), 10, 64)
	if err != nil {
		return false
	}
	*p = v
	d.pos = i
	return true
}

// time reads a time as time.Time's UnmarshalJSON does: the string's raw
// bytes (a time has no escapes) parsed as strict RFC 3339.
func (d *recordDecoder) time(t *time.Time) bool {
	if !d.byte('"') {
		return false
	}
	start := d.pos
	for i := start; i < len(d.buf); i++ {
		c := d.buf[i]
		if c == '"' {
			if !utcTime(d.buf[start:i], t) && t.UnmarshalText(d.buf[start:i]) != nil {
				return false
			}
			d.pos = i + 1
			return true
		}
		if c < 0x20 || c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return false
}

// utcTime sets *t to the time in b and reports true if b is a UTC time
// as appendTimeField writes one ("2006-01-02T15:04:05.999999999Z", the
// fraction optional), on a day of the month every month has (1 to 28).
// It sets what time.Time's UnmarshalText would; for anything else it
// reports false, and the caller asks UnmarshalText. The journal's every
// record has such a time, and UnmarshalText was a tenth of decoding one.
func utcTime(b []byte, t *time.Time) bool {
	const layout = "2006-01-02T15:04:05"
	if len(b) < len(layout)+1 || b[len(b)-1] != 'Z' {
		return false
	}
	num := func(s []byte) int {
		n := 0
		for _, c := range s {
			if c < '0' || '9' < c {
				return -1
			}
			n = n*10 + int(c-'0')
		}
		return n
	}
	if b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return false
	}
	year, month, day := num(b[0:4]), num(b[5:7]), num(b[8:10])
	hour, minute, sec := num(b[11:13]), num(b[14:16]), num(b[17:19])
	if year < 0 || month < 1 || month > 12 || day < 1 || day > 28 ||
		hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 || sec > 59 {
		return false
	}
	nsec := 0
	if frac := b[len(layout) : len(b)-1]; len(frac) > 0 {
		if len(frac) < 2 || len(frac) > 10 || frac[0] != '.' {
			return false
		}
		if nsec = num(frac[1:]); nsec < 0 {
			return false
		}
		for range 10 - len(frac) {
			nsec *= 10
		}
	}
	*t = time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return true
}
