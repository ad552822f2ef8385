package merge

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// maxAttachment bounds one attachment; the whole message is built in memory.
const maxAttachment = 32 << 20

// Message is one rendered message, ready for the sender.
type Message struct {
	From      string   // envelope sender (MAIL FROM), bare addr-spec
	To        []string // envelope recipients: the row's address, then Cc and Bcc addresses, deduplicated
	MessageID string   // as in the header, with angle brackets
	UTF8      bool     // the envelope or headers need SMTPUTF8 (a non-ASCII local part)
	Data      []byte   // the RFC 5322 message: CRLF line ends only, lines ≤ 998 octets, no NUL, no Bcc header
}

// field is one finished header, value already encoded but not folded.
type field struct{ name, value string }

// Render builds the complete message for one row in memory. A problem with
// the row (a line break in a header value, a bad address, a failed template
// action, a missing attachment or cid: image) is returned as a *RowError
// naming the list file, rec.Row and the column where known. Bind must have
// succeeded first.
func (t *Template) Render(rec Recipient) (*Message, error) {
	if !t.bound {
		return nil, fmt.Errorf("merge: %s: Render before Bind", t.name)
	}
	rowErr := func(col string, err error) error {
		return &RowError{File: t.listFile, Row: rec.Row, Column: col, Err: err}
	}
	sc := t.getScratch()
	defer t.putScratch(sc)
	data := t.data(sc, rec.Values)
	msg := &Message{}
	fields := sc.fields[:0]
	var envTo []string
	// Duplicates are found by a scan of the keys so far, which beats a map
	// for the one to few recipients of a typical row; a long Cc or Bcc
	// list switches to the map.
	var seenKeys []string
	var seenTo map[string]bool
	addTo := func(a string) {
		k := AddressKey(a)
		if seenTo == nil {
			for _, s := range seenKeys {
				if s == k {
					return
				}
			}
			seenKeys = append(seenKeys, k)
			if len(seenKeys) > 16 {
				seenTo = make(map[string]bool, 2*len(seenKeys))
				for _, s := range seenKeys {
					seenTo[s] = true
				}
			}
		} else if seenTo[k] {
			return
		} else {
			seenTo[k] = true
		}
		envTo = append(envTo, a)
	}
	if rec.Address == "" {
		return nil, rowErr("", wrapf(ErrNotAddress, "no envelope address"))
	}
	addTo(rec.Address)
	utf8 := rec.UTF8
	var fromAddr, senderAddr string
	hasTo, hasDate, hasID := false, false, false
	for i := range t.headers {
		h := &t.headers[i]
		hv := h.fixed
		if hv == nil {
			sc.exec.Reset()
			if err := h.fast.execute(h.tmpl, &sc.exec, data); err != nil {
				return nil, rowErr("", wrapf(ErrRender, "header %s: %v", h.name, err))
			}
			v := sc.exec.String()
			if strings.ContainsAny(v, "\r\n\x00") {
				return nil, rowErr(t.culprit(h.cols, rec.Values), wrapf(ErrHeaderInjection, "header %s", h.name))
			}
			r, col, err := t.headerValue(h, strings.Trim(v, " \t"), data, sc)
			if err != nil {
				return nil, rowErr(col, err)
			}
			hv = &r
		}
		if hv.utf8 {
			utf8 = true
		}
		switch h.key {
		case "from":
			fromAddr = hv.addrs[0].Address
		case "sender":
			if len(hv.addrs) > 0 {
				senderAddr = hv.addrs[0].Address
			}
		case "to":
			hasTo = hasTo || len(hv.addrs) > 0
		case "cc", "bcc":
			for _, a := range hv.addrs {
				addTo(a.Address)
			}
		case "date":
			hasDate = hasDate || hv.value != ""
		case "message-id":
			if hv.value != "" {
				hasID = true
				msg.MessageID = hv.value
			}
		}
		if hv.value != "" && h.key != "bcc" {
			fields = append(fields, field{h.name, hv.value})
		}
	}
	if !hasTo {
		fields = append(fields, field{"To", rec.Address})
	}
	if !hasDate {
		now := time.Now
		if t.opts.Now != nil {
			now = t.opts.Now
		}
		fields = append(fields, field{"Date", sc.date(now())})
	}
	if !hasID {
		id := ""
		if t.opts.MessageID != nil {
			id = t.opts.MessageID(rec.Row)
		}
		if id == "" {
			from := fromAddr
			if t.envFrom != "" {
				from = t.envFrom
			}
			id = randomMsgID(sc.random(16), t.msgIDHost, from[strings.LastIndexByte(from, '@')+1:])
		}
		if !validMsgID(id) {
			return nil, rowErr("", wrapf(ErrRender, "Message-ID: not <id@host>: %q", id))
		}
		msg.MessageID = id
		fields = append(fields, field{"Message-ID", id})
	}
	if t.unsub != nil {
		var buf bytes.Buffer
		if err := t.unsub.Execute(&buf, data); err != nil {
			return nil, rowErr("", wrapf(ErrRender, "unsubscribe: %v", err))
		}
		u := strings.TrimSpace(buf.String())
		if strings.ContainsAny(u, "\r\n\x00") {
			return nil, rowErr(t.culprit(treeColumns(t.unsub.Tree), rec.Values), wrapf(ErrHeaderInjection, "unsubscribe URL"))
		}
		https, err := checkUnsubscribe(u)
		if err != nil {
			return nil, rowErr("", wrapf(ErrRender, "unsubscribe URL %q: %v", u, err))
		}
		fields = append(fields, field{"List-Unsubscribe", "<" + u + ">"})
		if https {
			fields = append(fields, field{"List-Unsubscribe-Post", "List-Unsubscribe=One-Click"})
		}
	}
	switch {
	case t.envFrom != "":
		msg.From = t.envFrom
		utf8 = utf8 || t.envFromUTF8
	case senderAddr != "":
		msg.From = senderAddr
	default:
		msg.From = fromAddr
	}
	msg.To = envTo
	msg.UTF8 = utf8

	// The body. Its text and encoded forms live in sc until the message
	// is assembled below.
	sc.exec.Reset()
	if err := t.bodyFast.execute(t.body, &sc.exec, data); err != nil {
		return nil, rowErr("", wrapf(ErrRender, "body: %v", err))
	}
	body := sc.textPart("text/plain; charset=utf-8")
	var files []file
	if t.attachIdx >= 0 {
		fs, err := t.attachments(rec.Values[t.attachIdx])
		if err != nil {
			return nil, rowErr(t.header[t.attachIdx], err)
		}
		files = fs
	}
	if t.html != nil {
		var html bytes.Buffer
		if err := t.html.Execute(&html, data); err != nil {
			return nil, rowErr("", wrapf(ErrRender, "html: %v", err))
		}
		htmlPart := newPart("text/html; charset=utf-8", html.Bytes())
		inline, rest, err := t.inlineParts(html.Bytes(), files)
		if err != nil {
			return nil, rowErr("", err)
		}
		files = rest
		if len(inline) > 0 {
			// RFC 2387: the HTML is the root, its images follow.
			htmlPart = multipartOf("multipart/related", map[string]string{"type": "text/html"}, append([]part{htmlPart}, inline...))
		}
		body = multipartOf("multipart/alternative", nil, []part{body, htmlPart})
	}
	if len(files) > 0 {
		parts := []part{body}
		for _, f := range files {
			parts = append(parts, f.part("attachment", ""))
		}
		body = multipartOf("multipart/mixed", nil, parts)
	}

	head := &sc.head
	head.Reset()
	for _, f := range fields {
		writeField(head, f.name, f.value)
	}
	sc.fields = fields
	writeField(head, "MIME-Version", "1.0")
	writeField(head, "Content-Type", body.contentType)
	if body.cte != "" {
		writeField(head, "Content-Transfer-Encoding", body.cte)
	}
	head.WriteString("\r\n")
	// One allocation of the exact size: the message outlives the scratch.
	msg.Data = make([]byte, 0, head.Len()+len(body.data))
	msg.Data = append(msg.Data, head.Bytes()...)
	msg.Data = append(msg.Data, body.data...)
	return msg, nil
}

// headerValue is what one rendered header adds to a message: the field
// value, encoded and unfolded ("" leaves the header out), and for an
// address header its addresses.
type headerValue struct {
	value string
	addrs []*mail.Address
	utf8  bool // an address has a non-ASCII local part (needs SMTPUTF8)
}

// headerValue checks and encodes v, the rendered and trimmed value of
// header h. On failure it returns the column to blame ("" if none) and the
// error for a RowError. It depends on nothing but h and v (data only feeds
// the address-count check, whose result for a header without columns does
// not depend on it), so a header without actions is done once, in
// ParseTemplate. sc, if not nil, lends working memory.
func (t *Template) headerValue(h *headerPart, v string, data map[string]string, sc *scratch) (headerValue, string, error) {
	switch {
	case addressHeader[h.key]:
		addrs, err := t.parseAddresses(*h, v, data, sc)
		if err != nil {
			return headerValue{}, t.culprit(h.cols, nil), err
		}
		if len(addrs) == 0 {
			if h.key == "from" {
				return headerValue{}, "", wrapf(ErrNotAddress, "header From is empty")
			}
			return headerValue{}, "", nil
		}
		hv := headerValue{addrs: addrs}
		if len(addrs) == 1 {
			// The usual case; no builder needed.
			a := addrs[0]
			hv.value = formatAddress(a.Name, a.Address)
			hv.utf8 = hasNonASCII(a.Address[:strings.LastIndexByte(a.Address, '@')])
			return hv, "", nil
		}
		var b strings.Builder
		for i, a := range addrs {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(formatAddress(a.Name, a.Address))
			if hasNonASCII(a.Address[:strings.LastIndexByte(a.Address, '@')]) {
				hv.utf8 = true
			}
		}
		hv.value = b.String()
		return hv, "", nil
	case v == "":
		return headerValue{}, "", nil
	case h.key == "date":
		d, err := mail.ParseDate(v)
		if err != nil {
			return headerValue{}, "", wrapf(ErrRender, "header Date: %v", err)
		}
		return headerValue{value: d.Format(time.RFC1123Z)}, "", nil
	case h.key == "message-id":
		if !validMsgID(v) {
			return headerValue{}, "", wrapf(ErrRender, "header Message-ID: not <id@host>: %q", v)
		}
		return headerValue{value: v}, "", nil
	}
	return headerValue{value: encodeUnstructured(v)}, "", nil
}

// data builds the template's dot in sc.data: every header column under its
// own name (the first, if two are spelled alike), and every column the
// template uses under the template's spelling ("" if the row is short).
func (t *Template) data(sc *scratch, values []string) map[string]string {
	m := sc.data
	// A full row sets every key, so a map last filled from a full row
	// needs no clearing: each key is overwritten.
	full := len(values) >= len(t.header)
	if !full || !sc.dataFull {
		clear(m)
	}
	sc.dataFull = full
	for _, k := range t.dot {
		if k.index < len(values) {
			m[k.name] = values[k.index]
		} else if k.alias {
			m[k.name] = ""
		}
	}
	return m
}

// dotKey is one key of the template's dot and the column it comes from.
type dotKey struct {
	name  string
	index int
	alias bool // the template's spelling of a column: set even on a short row
}

// dotKeys lists the keys of the dot once per Bind, each once: the
// template's spellings, then the other header names, at their first
// column.
func dotKeys(header []string, alias map[string]int) []dotKey {
	var keys []dotKey
	for name, i := range alias {
		keys = append(keys, dotKey{name: name, index: i, alias: true})
	}
	seen := map[string]bool{}
	for i, h := range header {
		if _, ok := alias[h]; ok || seen[h] {
			continue
		}
		seen[h] = true
		keys = append(keys, dotKey{name: h, index: i})
	}
	return keys
}

// culprit names the first of cols whose value has a line break or NUL, so the
// operator knows which cell to fix; with values nil it names the first column.
func (t *Template) culprit(cols []string, values []string) string {
	for _, c := range cols {
		i, ok := t.alias[c]
		if !ok {
			continue
		}
		if values == nil {
			return t.header[i]
		}
		if i < len(values) && strings.ContainsAny(values[i], "\r\n\x00") {
			return t.header[i]
		}
	}
	return ""
}

// parseAddresses parses a rendered address header and normalises every
// address. To keep a row's data from adding recipients (a display name of
// "x@evil.example, Bob"), the header is also rendered with each value
// replaced by a neutral stand-in, and the two must hold as many addresses.
func (t *Template) parseAddresses(h headerPart, v string, data map[string]string, sc *scratch) ([]*mail.Address, error) {
	i := strings.LastIndexByte(v, '<')
	oneMailbox := i >= 0 && strings.HasSuffix(v, ">")
	want := -1
	if !(h.mailbox && oneMailbox) {
		// How many addresses the template gives with harmless values: a row
		// value that changes the count injected a list. (A header written as
		// one "name <addr>" mailbox gives one whatever the values.)
		want = t.addressCount(h, data, sc)
	}
	if v == "" {
		if want > 0 {
			return nil, wrapf(ErrNotAddress, "header %s is empty", h.name)
		}
		return nil, nil
	}
	var list []*mail.Address
	var err error
	if (h.mailbox || want == 1) && oneMailbox {
		// The template holds one mailbox, typically `{{.name}} <{{.email}}>`:
		// everything before the last '<' is the name, taken literally, so a
		// comma, quote or parenthesis in it is just text.
		name := strings.TrimSpace(v[:i])
		if un, ok := unquote(name); ok {
			name = un
		} else if !strings.Contains(name, "=?") {
			// No encoded-word: DecodeHeader would return name as it is.
		} else if dec, err := new(mime.WordDecoder).DecodeHeader(name); err == nil {
			name = dec
		}
		list = []*mail.Address{{Name: name, Address: v[i+1 : len(v)-1]}}
	} else {
		list, err = parseAddressList(v)
	}
	if err != nil {
		return nil, wrapf(ErrNotAddress, "header %s: %q: %v", h.name, v, err)
	}
	if len(list) == 0 {
		// An empty group ("x:;") is no address: the header would vanish.
		return nil, wrapf(ErrNotAddress, "header %s: %q has no address", h.name, v)
	}
	if want >= 0 && len(list) != want {
		return nil, wrapf(ErrHeaderInjection, "header %s: a value changes the address list (%d addresses, template gives %d)", h.name, len(list), want)
	}
	for _, a := range list {
		raw := a.Address
		// net/mail hands back `"a b"@x` as `a b@x`; quote it again.
		if at := strings.LastIndexByte(raw, '@'); at > 0 && !isDotAtom(raw[:at]) && !strings.HasPrefix(raw, "\"") {
			raw = quoteLocal(raw[:at]) + raw[at:]
		}
		n, _, err := normalizeAddress(raw)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", h.name, err)
		}
		a.Address = n
		if strings.ContainsAny(a.Name, "\r\n\x00") {
			return nil, wrapf(ErrHeaderInjection, "header %s", h.name)
		}
	}
	return list, nil
}

// addressCount renders header h with every column it uses replaced by a
// stand-in of the same address-list shape and counts the addresses; -1 if
// that cannot be told. Columns the header does not use are not parsed.
func (t *Template) addressCount(h headerPart, data map[string]string, sc *scratch) int {
	if sc == nil {
		sc = &scratch{}
	}
	if sc.stand == nil {
		sc.stand = make(map[string]string, len(data))
	}
	stand := sc.stand
	clear(stand)
	for k := range data {
		stand[k] = "Name"
	}
	for _, c := range h.cols {
		if val, ok := data[c]; ok {
			stand[c] = standIn(val)
		}
	}
	buf := &sc.standOut
	buf.Reset()
	if err := h.tmpl.Execute(buf, stand); err != nil {
		return -1
	}
	if s := strings.TrimSpace(buf.String()); s == "" {
		return 0
	} else if l, err := parseAddressList(s); err == nil {
		return len(l)
	}
	return -1
}

// standIn replaces a value by something with the same address-list shape: n
// placeholder addresses if it is a list of n addresses, else a plain word.
func standIn(v string) string {
	if strings.TrimSpace(v) == "" {
		return ""
	}
	if l, err := parseAddressList(v); err == nil && len(l) > 0 {
		if len(l) == 1 {
			return "p0@placeholder.invalid"
		}
		ps := make([]string, len(l))
		for i := range ps {
			ps[i] = "p" + strconv.Itoa(i) + "@placeholder.invalid"
		}
		return strings.Join(ps, ", ")
	}
	return "Name"
}

func validMsgID(id string) bool {
	if len(id) < 5 || len(id) > 250 || id[0] != '<' || id[len(id)-1] != '>' {
		return false
	}
	// One '@', neither first nor last, and none of the bytes msgIDBad
	// marks; walked once, since a generated id is checked per message.
	inner := id[1 : len(id)-1]
	at := strings.IndexByte(inner, '@')
	if at <= 0 || at == len(inner)-1 {
		return false
	}
	for i := 0; i < len(inner); i++ {
		if c := inner[i]; msgIDBad[c] && i != at {
			return false
		}
	}
	return true
}

// msgIDBad marks what may not appear on either side of a Message-ID's '@':
// brackets, '@', white space, controls that break a header, quotes and
// specials, and any non-ASCII byte.
var msgIDBad = func() (t [256]bool) {
	for _, c := range []byte("<>@ \t\r\n\x00\"\\()[],;:") {
		t[c] = true
	}
	for c := 0x80; c < 0x100; c++ {
		t[c] = true
	}
	return t
}()

// randomMsgID makes a Message-ID: 128 random bits (the first 16 bytes of
// random, from crypto/rand) at host (this host's name, if fully qualified)
// or else at the sender's domain (a bare "vm" looks like what spam filters
// look for), else at localhost.
func randomMsgID(random []byte, host, senderDomain string) string {
	var b [16]byte
	copy(b[:], random)
	if host == "" {
		host = "localhost"
		if d := strings.ToLower(senderDomain); msgIDHostOK(d) {
			host = d
		}
	}
	// One allocation: "<" 32 hex digits "@" host ">".
	var id strings.Builder
	id.Grow(2*len(b) + len(host) + 3)
	id.WriteByte('<')
	var h [2 * len(b)]byte
	hex.Encode(h[:], b[:])
	id.Write(h[:])
	id.WriteByte('@')
	id.WriteString(host)
	id.WriteByte('>')
	return id.String()
}

// msgIDHost returns this host's name, lower case, if it is fit for the
// right side of a Message-ID, else "".
func msgIDHost() string {
	host, _ := os.Hostname()
	host = strings.ToLower(host)
	if !msgIDHostOK(host) {
		return ""
	}
	return host
}

// msgIDHostOK reports whether h is a fully qualified ASCII host name.
func msgIDHostOK(h string) bool { return strings.Contains(h, ".") && isDotAtom(h) && !hasNonASCII(h) }

// checkUnsubscribe accepts an https, http or mailto URL made only of
// characters a URL may hold, and reports whether it is https.
func checkUnsubscribe(u string) (https bool, err error) {
	if u == "" {
		return false, errors.New("empty")
	}
	if len(u) > 900 {
		return false, errors.New("too long")
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`<>"\{}|^`+"`", c) >= 0 {
			return false, fmt.Errorf("character %q not allowed (use urlquery)", c)
		}
	}
	p, err := url.Parse(u)
	if err != nil {
		return false, err
	}
	switch strings.ToLower(p.Scheme) {
	case "https":
		return true, nil
	case "http", "mailto":
		return false, nil
	}
	return false, errors.New("want an https or mailto URL")
}

// formatAddress writes name and address as an RFC 5322 mailbox; a non-ASCII
// name is RFC 2047 B-encoded, whose alphabet cannot clash with address-list
// punctuation as Q-encoding's can.
func formatAddress(name, addr string) string {
	name = collapseSpaces(name)
	if name == "" {
		return addr
	}
	return encodePhrase(name) + " <" + addr + ">"
}

// collapseSpaces returns strings.Join(strings.Fields(s), " "): s itself,
// with no new string, when it already has single spaces between words and
// none around them, as names from a list mostly do.
func collapseSpaces(s string) string {
	end := -1 // where the previous word ends; -1 before the first
	for w, rest := nextWord(s); w != ""; w, rest = nextWord(rest) {
		start := len(s) - len(rest) - len(w)
		if end < 0 && start != 0 || end >= 0 && (start != end+1 || s[end] != ' ') {
			return strings.Join(strings.Fields(s), " ")
		}
		end = start + len(w)
	}
	if end < 0 {
		end = 0
	}
	if end != len(s) {
		return strings.Join(strings.Fields(s), " ")
	}
	return s
}

func encodePhrase(s string) string {
	// A word is never longer than the text: the count is needed only
	// past 900 octets.
	if needsEncoding(s) || len(s) > 900 && longestWord(s) > 900 {
		return encodeWordsB(s)
	}
	atoms := true
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' && !isAtext(s[i]) {
			atoms = false
			break
		}
	}
	if atoms {
		return s
	}
	return quoteLocal(s)
}

// needsEncoding reports whether s must be RFC 2047 encoded: it has
// non-ASCII or control characters, or text a reader would take for an
// encoded-word and decode.
func needsEncoding(s string) bool {
	if strings.Contains(s, "=?") {
		return true
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < ' ' && s[i] != '\t') || s[i] >= 0x7f {
			return true
		}
	}
	return false
}

// longestWord is the length of the longest of strings.Fields(s), found
// without building the slice.
func longestWord(s string) int {
	n := 0
	for w, rest := nextWord(s); w != ""; w, rest = nextWord(rest) {
		n = max(n, len(w))
	}
	return n
}

// asciiSpace is what unicode.IsSpace accepts below 0x80.
var asciiSpace = [128]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

// nextWord returns the first word of s as strings.Fields splits it (on
// unicode.IsSpace; an invalid UTF-8 byte is not a space) and what follows
// it; word is "" when s has none. Header values are split once per header
// per message, so this avoids strings.Fields' slice.
func nextWord(s string) (word, rest string) {
	i := 0
	for i < len(s) {
		if c := s[i]; c < utf8.RuneSelf {
			if !asciiSpace[c] {
				break
			}
			i++
			continue
		}
		r, w := utf8.DecodeRuneInString(s[i:])
		if !unicode.IsSpace(r) {
			break
		}
		i += w
	}
	j := i
	for j < len(s) {
		if c := s[j]; c < utf8.RuneSelf {
			if asciiSpace[c] {
				break
			}
			j++
			continue
		}
		r, w := utf8.DecodeRuneInString(s[j:])
		if unicode.IsSpace(r) {
			break
		}
		j += w
	}
	return s[i:j], s[j:]
}

// encodeUnstructured encodes a Subject-like value: RFC 2047 if it has
// non-ASCII or control characters (the shorter of Q and B), and also if a
// single word is too long to fold under 998 octets.
func encodeUnstructured(s string) string {
	if needsEncoding(s) {
		q, b := mime.QEncoding.Encode("utf-8", s), mime.BEncoding.Encode("utf-8", s)
		if q == s {
			// mime encodes only non-ASCII and controls, not a lone "=?".
			return encodeWordsB(s)
		}
		if len(b) < len(q) {
			return b
		}
		return q
	}
	if len(s) > 900 && longestWord(s) > 900 {
		return encodeWordsB(s)
	}
	return s
}

// encodeWordsB always encodes s as B encoded-words of at most 75 octets,
// split on UTF-8 boundaries (mime's encoder skips plain ASCII).
func encodeWordsB(s string) string {
	const chunk = 45 // 60 base64 characters + "=?utf-8?b?" + "?=" = 72
	var words []string
	for len(s) > 0 {
		n := min(chunk, len(s))
		for n < len(s) && n > 1 && s[n]&0xC0 == 0x80 {
			n--
		}
		words = append(words, "=?utf-8?b?"+base64.StdEncoding.EncodeToString([]byte(s[:n]))+"?=")
		s = s[n:]
	}
	return strings.Join(words, " ")
}

// writeField folds "name: value" at spaces to lines of 78 octets where it
// can. Values are ASCII after encoding except for UTF-8 local parts, and no
// word is longer than about 900 octets, so no line passes 998.
func writeField(w *bytes.Buffer, name, value string) {
	w.WriteString(name)
	w.WriteString(":")
	if len(name)+2+len(value) <= 78 && plainWords(value) {
		// What the loop below writes for a value that fits on one line
		// and whose words are already one space apart.
		w.WriteByte(' ')
		w.WriteString(value)
		w.WriteString("\r\n")
		return
	}
	n := len(name) + 1
	first := true
	for word, rest := nextWord(value); word != ""; word, rest = nextWord(rest) {
		if !first && n+1+len(word) > 78 {
			w.WriteString("\r\n")
			n = 0
		}
		first = false
		w.WriteByte(' ')
		w.WriteString(word)
		n += 1 + len(word)
	}
	w.WriteString("\r\n")
}

// plainWords reports whether s is ASCII words separated by single spaces,
// with none before or after: its own strings.Fields joined by " ".
func plainWords(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return false
		}
		if asciiSpace[c] && (c != ' ' || i == 0 || i == len(s)-1 || s[i-1] == ' ') {
			return false
		}
	}
	return true
}

// part is a MIME entity: its Content-Type, its transfer encoding and its
// encoded content (CRLF line ends).
type part struct {
	contentType string
	cte         string
	extra       textproto.MIMEHeader
	data        []byte
}

func newPart(contentType string, raw []byte) part {
	cte, data := encodeBody(normalizeText(raw))
	return part{contentType: contentType, cte: cte, data: data}
}

// multipartOf wraps parts in a multipart entity of the given kind, with a
// random boundary and any further Content-Type parameters.
func multipartOf(kind string, params map[string]string, parts []part) part {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{"Content-Type": {p.contentType}}
		if p.cte != "" {
			h.Set("Content-Transfer-Encoding", p.cte)
		}
		for k, v := range p.extra {
			h[k] = v
		}
		w, _ := mw.CreatePart(h)
		w.Write(p.data)
	}
	mw.Close()
	ps := map[string]string{"boundary": mw.Boundary()}
	for k, v := range params {
		ps[k] = v
	}
	return part{
		contentType: mime.FormatMediaType(kind, ps),
		data:        buf.Bytes(),
	}
}

// file is one file read for a message, by base name.
type file struct {
	name string
	data []byte
}

// part encodes f in base64 with a Content-Type by its extension and the given
// disposition ("attachment" or "inline"), and Content-ID <cid> if cid is set.
// The name goes through mime.FormatMediaType, which quotes or RFC 2231
// encodes it, so a row's file name cannot break out of the header.
func (f file) part(disposition, cid string) part {
	ct := mime.TypeByExtension(filepath.Ext(f.name))
	if ct == "" {
		ct = "application/octet-stream"
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		mt, params = "application/octet-stream", map[string]string{}
	}
	params["name"] = f.name
	extra := textproto.MIMEHeader{
		"Content-Disposition": {mime.FormatMediaType(disposition, map[string]string{"filename": f.name})},
	}
	if cid != "" {
		// Set directly: MIMEHeader.Set would spell it Content-Id.
		extra["Content-ID"] = []string{"<" + cid + ">"}
	}
	return part{
		contentType: mime.FormatMediaType(mt, params),
		cte:         "base64",
		extra:       extra,
		data:        base64Lines(f.data),
	}
}

// attachments reads the files named in cell, separated by ';', from the
// list's folder. os.Root keeps a row from naming a file outside it.
func (t *Template) attachments(cell string) ([]file, error) {
	var files []file
	var root *os.Root
	defer func() {
		if root != nil {
			root.Close()
		}
	}()
	for _, name := range strings.Split(cell, ";") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if root == nil {
			r, err := os.OpenRoot(t.listDir)
			if err != nil {
				return nil, wrapf(ErrAttachment, "%v", err)
			}
			root = r
		}
		data, err := readFile(root, filepath.FromSlash(name))
		if err != nil {
			return nil, wrapf(ErrAttachment, "%q: %v", name, err)
		}
		files = append(files, file{name: filepath.Base(filepath.FromSlash(name)), data: data})
	}
	return files, nil
}

// readFile reads name inside root, failing past maxAttachment bytes.
func readFile(root *os.Root, name string) ([]byte, error) {
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitReader{f, maxAttachment}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// limitReader fails, rather than truncates, past n bytes.
type limitReader struct {
	f interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.f.Read(p)
	l.n -= int64(n)
	if l.n < 0 {
		return n, fmt.Errorf("larger than %d MiB", maxAttachment>>20)
	}
	return n, err
}
