package merge

import (
	"bytes"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"
)

// TemplateOptions adds optional parts to a template. The zero value renders
// a plain-text message.
type TemplateOptions struct {
	// HTMLPath is an optional html/template file (auto-escaped) rendered with
	// the same fields; the message becomes multipart/alternative. Images the
	// HTML references as src="cid:NAME" or url(cid:NAME) are sent as inline
	// parts of a multipart/related with the HTML (see AttachColumn and
	// InlineDir); NAME is URL-decoded and may hold only letters, digits and
	// ".-_+@", else the row is invalid.
	HTMLPath string
	// AttachColumn is an optional column naming attachment files for the row,
	// separated by ';', relative to ListDir and confined to it. A file whose
	// base name is exactly a cid NAME the HTML references ("logo.png" for
	// cid:logo.png; no match without the extension) is sent inline with
	// Content-ID <NAME> instead of as an attachment.
	AttachColumn string
	// InlineDir is an optional folder of images shared by every row: a cid
	// NAME the HTML references that is not one of the row's attachments is
	// read from InlineDir/NAME, confined to that folder. A relative path is
	// relative to the working directory. It needs HTMLPath. "" means a cid
	// that is not a row attachment makes the row invalid (ErrAttachment).
	InlineDir string
	// ListDir is the folder attachments are relative to; "" means the folder
	// of the list file given to Bind.
	ListDir string
	// EnvelopeFrom is the MAIL FROM address; "" means the address of the
	// rendered Sender header, else of the first From address.
	EnvelopeFrom string
	// Unsubscribe is an optional text/template for a List-Unsubscribe URL per
	// row (https, http or mailto). An https URL also gets
	// "List-Unsubscribe-Post: List-Unsubscribe=One-Click" (RFC 8058).
	Unsubscribe string
	// MessageID returns the Message-ID (with angle brackets) for a row; nil,
	// or "" from it, means a random 128-bit hex id at this host's name when
	// it is fully qualified, else at the sender's domain.
	MessageID func(row int) string
	// Now gives the time for the Date header; nil means time.Now.
	Now func() time.Time
}

// Names of headers with a fixed spelling; keyed by lower-case name.
var canonicalHeader = map[string]string{
	"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "reply-to": "Reply-To",
	"sender": "Sender", "subject": "Subject", "date": "Date", "message-id": "Message-ID",
}

// Address headers are parsed and re-written rather than copied.
var addressHeader = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "reply-to": true, "sender": true,
}

// headerPart is one "Name: value" line of the template; its value is its own
// template so that a line break coming from data can be told apart from one
// in the template.
type headerPart struct {
	name string // as written, or canonical for the known ones
	key  string // lower case
	tmpl *template.Template
	cols []string
	// mailbox is set for an address header written as one "name <addr>"
	// mailbox, so that whatever precedes the last '<' is taken as the name.
	mailbox bool
	// fixed is the header's value when its template has no actions and
	// renders without error, worked out once instead of for every row.
	fixed *headerValue
	fast  fieldsOnly // tmpl without reflection, when it is that simple
}

// actionRE matches a template action, to see a header's shape without them.
var actionRE = regexp.MustCompile(`\{\{.*?\}\}`)

// mailboxRE is one mailbox with a display name and no list punctuation
// outside the actions.
var mailboxRE = regexp.MustCompile(`^[^,;<>]*<[^,;<>]*>$`)

// Template is a parsed message template. After Bind, Render may be called
// from several goroutines at once.
type Template struct {
	name    string // base name of the template file, used in errors
	opts    TemplateOptions
	headers []headerPart
	body    *template.Template
	html    *htmltemplate.Template
	unsub   *template.Template
	columns []string

	envFrom     string
	envFromUTF8 bool

	// Set by Bind.
	bound     bool
	listFile  string
	header    []string
	alias     map[string]int // column as the template spells it -> header index
	dot       []dotKey       // the keys of the template's dot
	attachIdx int
	listDir   string

	// msgIDHost is this host's name, lower case, if it is fully qualified
	// ("" if not): read once rather than for every generated Message-ID.
	bodyFast  fieldsOnly // body without reflection, when it is that simple
	msgIDHost string
	scratch   scratchPool
}

// funcs are available to every piece of a template.
var funcs = map[string]any{
	// address formats a display name and address so that a comma, quote or
	// angle bracket in the name cannot change the address list.
	"address": func(name, addr string) string {
		return (&mail.Address{Name: name, Address: addr}).String()
	},
}

// linePad returns a template comment spanning n newlines, so that
// text/template's error positions count lines from the top of the file.
func linePad(line int) string {
	if line <= 1 {
		return ""
	}
	return "{{/*" + strings.Repeat("\n", line-1) + "*/}}"
}

// ParseTemplate reads a template file: a header block ("Name: value" lines,
// folded continuation lines allowed), a blank line, then the text body. Each
// header value and the body are parsed once, as text/templates with
// missingkey=error. The file needs a From header; MIME-Version and Content-*
// headers are the package's to write. Errors name the file, and the line
// where known.
func ParseTemplate(path string, opts TemplateOptions) (*Template, error) {
	t := &Template{name: filepath.Base(path), opts: opts, attachIdx: -1, msgIDHost: msgIDHost()}
	src, err := readText(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(src, "\n")
	type rawHeader struct {
		name, value string
		line        int
	}
	var raws []rawHeader
	bodyLine := 0
	for i, ln := range lines {
		if strings.TrimRight(ln, " \t") == "" {
			bodyLine = i + 2
			break
		}
		if ln[0] == ' ' || ln[0] == '\t' {
			if len(raws) == 0 {
				return nil, fmt.Errorf("merge: %s line %d: continuation line before any header", t.name, i+1)
			}
			raws[len(raws)-1].value += ln
			continue
		}
		name, value, ok := strings.Cut(ln, ":")
		if !ok || !validHeaderName(name) {
			return nil, fmt.Errorf("merge: %s line %d: not a header line (want \"Name: value\", then a blank line before the body): %q", t.name, i+1, ln)
		}
		raws = append(raws, rawHeader{name: name, value: strings.TrimLeft(value, " \t"), line: i + 1})
	}
	if bodyLine == 0 {
		return nil, fmt.Errorf("merge: %s: no blank line between the headers and the body", t.name)
	}
	seen := map[string]bool{}
	for _, r := range raws {
		key := strings.ToLower(r.name)
		if key == "mime-version" || strings.HasPrefix(key, "content-") {
			return nil, fmt.Errorf("merge: %s line %d: header %s is written by bulkmail; remove it", t.name, r.line, r.name)
		}
		if opts.Unsubscribe != "" && strings.HasPrefix(key, "list-unsubscribe") {
			return nil, fmt.Errorf("merge: %s line %d: header %s conflicts with the unsubscribe option", t.name, r.line, r.name)
		}
		if _, single := canonicalHeader[key]; single && seen[key] {
			return nil, fmt.Errorf("merge: %s line %d: header %s appears twice", t.name, r.line, r.name)
		}
		seen[key] = true
		name := r.name
		if c, ok := canonicalHeader[key]; ok {
			name = c
		}
		tm, err := newText(t.name).Parse(linePad(r.line) + r.value)
		if err != nil {
			return nil, fmt.Errorf("merge: %w", err)
		}
		shape := actionRE.ReplaceAllString(strings.TrimSpace(r.value), "x")
		t.headers = append(t.headers, headerPart{name: name, key: key, tmpl: tm, cols: treeColumns(tm.Tree),
			mailbox: addressHeader[key] && mailboxRE.MatchString(shape)})
	}
	if !seen["from"] {
		return nil, fmt.Errorf("merge: %s: no From header", t.name)
	}
	for i := range t.headers {
		t.headers[i].fixed = t.fixedHeader(&t.headers[i])
		t.headers[i].fast = compileFieldsOnly(t.headers[i].tmpl)
	}
	body := strings.Join(lines[bodyLine-1:], "\n")
	if t.body, err = newText(t.name).Parse(linePad(bodyLine) + body); err != nil {
		return nil, fmt.Errorf("merge: %w", err)
	}
	t.bodyFast = compileFieldsOnly(t.body)
	cols := []string{}
	for _, h := range t.headers {
		cols = append(cols, h.cols...)
	}
	cols = append(cols, treeColumns(t.body.Tree)...)
	if opts.HTMLPath != "" {
		src, err := readText(opts.HTMLPath)
		if err != nil {
			return nil, err
		}
		h, err := htmltemplate.New(filepath.Base(opts.HTMLPath)).Option("missingkey=error").Funcs(funcs).Parse(src)
		if err != nil {
			return nil, fmt.Errorf("merge: %w", err)
		}
		t.html = h
		cols = append(cols, treeColumns(h.Tree)...)
	}
	if err := checkInline(opts, t.html); err != nil {
		return nil, err
	}
	if opts.Unsubscribe != "" {
		u, err := newText("unsubscribe").Parse(opts.Unsubscribe)
		if err != nil {
			return nil, fmt.Errorf("merge: unsubscribe option: %w", err)
		}
		t.unsub = u
		cols = append(cols, treeColumns(u.Tree)...)
	}
	if opts.EnvelopeFrom != "" {
		a, u8, err := normalizeAddress(opts.EnvelopeFrom)
		if err != nil {
			return nil, fmt.Errorf("merge: envelope sender: %w", err)
		}
		t.envFrom, t.envFromUTF8 = a, u8
	}
	seenCol := map[string]bool{}
	for _, c := range cols {
		if !seenCol[c] {
			seenCol[c] = true
			t.columns = append(t.columns, c)
		}
	}
	return t, nil
}

// fixedHeader returns the value of a header whose template is text only,
// as Render would work it out for every row, or nil if the template has
// actions or the value is an error (left to Render, so that each row
// reports it as before).
func (t *Template) fixedHeader(h *headerPart) *headerValue {
	if h.tmpl.Tree == nil || h.tmpl.Tree.Root == nil {
		return nil
	}
	for _, n := range h.tmpl.Tree.Root.Nodes {
		if n.Type() != parse.NodeText {
			return nil
		}
	}
	var buf bytes.Buffer
	if err := h.tmpl.Execute(&buf, map[string]string{}); err != nil {
		return nil
	}
	v := buf.String()
	if strings.ContainsAny(v, "\r\n\x00") {
		return nil
	}
	hv, _, err := t.headerValue(h, strings.Trim(v, " \t"), map[string]string{}, nil)
	if err != nil {
		return nil
	}
	return &hv
}

func newText(name string) *template.Template {
	return template.New(name).Option("missingkey=error").Funcs(funcs)
}

// readText reads a UTF-8 file, drops a BOM and turns CRLF and lone CR into LF.
func readText(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("merge: %w", err)
	}
	b = bytes.TrimPrefix(b, []byte("\xEF\xBB\xBF"))
	if !utf8.Valid(b) {
		return "", fmt.Errorf("merge: %s: not valid UTF-8", filepath.Base(path))
	}
	s := strings.ReplaceAll(string(b), "\r\n", "\n")
	return strings.ReplaceAll(s, "\r", "\n"), nil
}

// validHeaderName reports whether s is an RFC 5322 field name.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 || s[i] == ':' {
			return false
		}
	}
	return true
}

// Columns returns the list columns the templates (headers, text, HTML,
// unsubscribe) reference, as they spell them, in order of first use, plus
// the AttachColumn option if set.
func (t *Template) Columns() []string {
	cols := append([]string(nil), t.columns...)
	if t.opts.AttachColumn != "" {
		cols = append(cols, t.opts.AttachColumn)
	}
	return cols
}

// treeColumns walks a parse tree for the names of fields of the top-level
// dot: {{.name}}, {{$.name}} and {{index . "name"}}. Inside with and range
// the dot is something else, so only $.name counts there.
func treeColumns(tr *parse.Tree) []string {
	var cols []string
	var walk func(n parse.Node, rootDot bool)
	walk = func(n parse.Node, rootDot bool) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c, rootDot)
			}
		case *parse.ActionNode:
			walk(n.Pipe, rootDot)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c, rootDot)
			}
		case *parse.CommandNode:
			if len(n.Args) >= 3 && rootDot {
				if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "index" {
					if _, ok := n.Args[1].(*parse.DotNode); ok {
						if s, ok := n.Args[2].(*parse.StringNode); ok {
							cols = append(cols, s.Text)
						}
					}
				}
			}
			for _, c := range n.Args {
				walk(c, rootDot)
			}
		case *parse.FieldNode:
			if rootDot && len(n.Ident) > 0 {
				cols = append(cols, n.Ident[0])
			}
		case *parse.VariableNode:
			if len(n.Ident) > 1 && n.Ident[0] == "$" {
				cols = append(cols, n.Ident[1])
			}
		case *parse.ChainNode:
			walk(n.Node, rootDot)
		case *parse.IfNode:
			walk(n.Pipe, rootDot)
			walk(n.List, rootDot)
			walk(n.ElseList, rootDot)
		case *parse.WithNode:
			walk(n.Pipe, rootDot)
			walk(n.List, false)
			walk(n.ElseList, rootDot)
		case *parse.RangeNode:
			walk(n.Pipe, rootDot)
			walk(n.List, false)
			walk(n.ElseList, rootDot)
		case *parse.TemplateNode:
			walk(n.Pipe, rootDot)
		}
	}
	if tr != nil {
		walk(tr.Root, true)
	}
	return cols
}

// sources names, with its verb, what can use columns: the template file,
// and the HTML template, the unsubscribe URL and the attachment column
// when set, so that a missing column is looked for in the right place.
func (t *Template) sources() string {
	names := []string{t.name}
	if t.opts.HTMLPath != "" {
		names = append(names, filepath.Base(t.opts.HTMLPath))
	}
	if t.opts.Unsubscribe != "" {
		names = append(names, "the unsubscribe URL")
	}
	if t.opts.AttachColumn != "" {
		names = append(names, "the attachment column")
	}
	if len(names) == 1 {
		return names[0] + " uses"
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1] + " use"
}

// Bind checks, before anything is sent, that every column the template uses
// exists in header (case-insensitive, trimmed), and remembers where, so that
// Render can hand the template the values under the names it spells. The
// error names the template, the list and every missing column, and wraps
// ErrMissingColumn (or ErrDuplicateColumn if a name is ambiguous).
func (t *Template) Bind(listFile string, header []string) error {
	list := filepath.Base(listFile)
	alias := map[string]int{}
	var missing, dup []string
	for _, c := range t.Columns() {
		i, err := findColumn(header, c)
		switch {
		case errors.Is(err, ErrDuplicateColumn):
			dup = append(dup, strconv.Quote(c))
		case err != nil:
			missing = append(missing, strconv.Quote(c))
		default:
			alias[c] = i
		}
	}
	trimmed := make([]string, len(header))
	for i, h := range header {
		trimmed[i] = strings.TrimSpace(h)
	}
	if len(missing) > 0 {
		what := "column " + missing[0] + ", which"
		if len(missing) > 1 {
			what = "columns " + strings.Join(missing, ", ") + ", which"
		}
		return fmt.Errorf("merge: %s %s %s does not have (columns: %s): %w",
			t.sources(), what, list, strings.Join(trimmed, ", "), ErrMissingColumn)
	}
	if len(dup) > 0 {
		return fmt.Errorf("merge: %s %s, which %s has more than once: %w",
			t.sources(), strings.Join(dup, ", "), list, ErrDuplicateColumn)
	}
	t.listFile, t.header, t.alias = list, trimmed, alias
	t.dot = dotKeys(trimmed, alias)
	// Scratch dots filled under another header would keep its keys.
	t.scratch = scratchPool{}
	t.attachIdx = -1
	if t.opts.AttachColumn != "" {
		t.attachIdx = alias[t.opts.AttachColumn]
	}
	t.listDir = t.opts.ListDir
	if t.listDir == "" {
		t.listDir = filepath.Dir(listFile)
	}
	t.bound = true
	return nil
}
