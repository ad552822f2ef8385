package merge

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// setup writes a template (and optional extra files) and binds it to header.
func setup(t *testing.T, tmpl string, header []string, opts TemplateOptions, files map[string]string) *Template {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if opts.HTMLPath != "" {
		opts.HTMLPath = filepath.Join(dir, opts.HTMLPath)
	}
	if opts.InlineDir != "" {
		opts.InlineDir = filepath.Join(dir, opts.InlineDir)
	}
	if opts.Now == nil {
		opts.Now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	}
	if opts.MessageID == nil {
		opts.MessageID = func(row int) string { return "<row" + string(rune('0'+row%10)) + "@test.example>" }
	}
	p := filepath.Join(dir, "welcome.tmpl")
	if err := os.WriteFile(p, []byte(tmpl), 0o600); err != nil {
		t.Fatal(err)
	}
	tp, err := ParseTemplate(p, opts)
	if err != nil {
		t.Fatalf("ParseTemplate: %v", err)
	}
	if err := tp.Bind(filepath.Join(dir, "recipients.csv"), header); err != nil {
		t.Fatalf("Bind: %v", err)
	}
	return tp
}

func recipient(values ...string) Recipient {
	a, u8, _ := NormalizeAddress(values[0])
	return Recipient{Row: 2, Values: values, Address: a, UTF8: u8}
}

// checkWire asserts the invariants every message must keep on the wire.
func checkWire(t testing.TB, data []byte) {
	t.Helper()
	for i, line := range bytes.Split(data, []byte("\r\n")) {
		if len(line) > 998 {
			t.Fatalf("line %d is %d octets", i+1, len(line))
		}
		if bytes.ContainsAny(line, "\r\n\x00") {
			t.Fatalf("line %d has a bare CR, LF or a NUL: %q", i+1, line)
		}
		if string(line) == "." {
			t.Fatalf("line %d is a lone dot", i+1)
		}
	}
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\r\n")) {
		t.Fatalf("message does not end in CRLF")
	}
}

// decodeBody returns the decoded body of a single-part message.
func decodeBody(t testing.TB, m *mail.Message) string {
	t.Helper()
	var r io.Reader = m.Body
	switch cte := m.Header.Get("Content-Transfer-Encoding"); cte {
	case "quoted-printable":
		r = quotedprintable.NewReader(r)
	case "base64":
		r = base64.NewDecoder(base64.StdEncoding, r)
	case "7bit", "8bit", "":
	default:
		t.Fatalf("unknown transfer encoding %q", cte)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decoding body: %v", err)
	}
	return string(b)
}

func crlf(s string) string {
	s = strings.ReplaceAll(s, "\x00", "")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if s != "" && !strings.HasSuffix(s, "\r\n") {
		s += "\r\n"
	}
	return s
}

func headerNames(t testing.TB, data []byte) []string {
	t.Helper()
	var names []string
	hdr, _, _ := bytes.Cut(data, []byte("\r\n\r\n"))
	for _, line := range strings.Split(string(hdr), "\r\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue
		}
		name, _, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("header line without a colon: %q", line)
		}
		names = append(names, name)
	}
	return names
}

const plain = "From: News <news@example.org>\nTo: {{.name}} <{{.email}}>\nSubject: Hello {{.name}}\n\nDear {{.name}},\n{{.note}}\n"

func TestRenderPlain(t *testing.T) {
	tp := setup(t, plain, []string{"email", "name", "note"}, TemplateOptions{}, nil)
	m, err := tp.Render(recipient("ann@example.org", "Ann", "See you."))
	if err != nil {
		t.Fatal(err)
	}
	want := "From: News <news@example.org>\r\n" +
		"To: Ann <ann@example.org>\r\n" +
		"Subject: Hello Ann\r\n" +
		"Date: Fri, 02 Jan 2026 03:04:05 +0000\r\n" +
		"Message-ID: <row2@test.example>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 7bit\r\n" +
		"\r\n" +
		"Dear Ann,\r\nSee you.\r\n"
	if string(m.Data) != want {
		t.Fatalf("got %q, want %q", m.Data, want)
	}
	if m.From != "news@example.org" || !reflect.DeepEqual(m.To, []string{"ann@example.org"}) || m.MessageID != "<row2@test.example>" || m.UTF8 {
		t.Fatalf("envelope got %+v", m)
	}
}

func TestHeaderInjection(t *testing.T) {
	tmpl := "From: {{.from}} <news@example.org>\nTo: {{.name}} <{{.email}}>\nCc: {{.cc}}\nReply-To: {{.reply}}\n" +
		"Subject: {{.subject}}\nX-Campaign: {{.custom}}\n\nbody\n"
	header := []string{"email", "name", "from", "cc", "reply", "subject", "custom"}
	tp := setup(t, tmpl, header, TemplateOptions{Unsubscribe: "https://u.example/{{.custom}}"}, nil)
	clean := []string{"ann@example.org", "Ann", "News", "boss@example.org", "help@example.org", "Hi", "c1"}
	if _, err := tp.Render(recipient(clean...)); err != nil {
		t.Fatalf("clean row: %v", err)
	}
	attacks := []string{
		"x\r\nBcc: victim@evil.example",
		"x\nBcc: victim@evil.example",
		"x\rBcc: victim@evil.example",
		"x\x00y",
		"x\r\n\r\nbody takeover",
		"\r\n",
	}
	for col := 1; col < len(header); col++ {
		for _, a := range attacks {
			vals := append([]string(nil), clean...)
			vals[col] = a
			t.Run(header[col]+" "+a, func(t *testing.T) {
				m, err := tp.Render(recipient(vals...))
				if err == nil {
					t.Fatalf("rendered %q, want ErrHeaderInjection", m.Data)
				}
				if !errors.Is(err, ErrHeaderInjection) {
					t.Fatalf("got %v, want ErrHeaderInjection", err)
				}
				var re *RowError
				if !errors.As(err, &re) || re.Row != 2 || re.File != "recipients.csv" || re.Column != header[col] {
					t.Fatalf("got %#v, want a RowError for row 2, column %q", err, header[col])
				}
			})
		}
	}
}

func TestAddressListInjection(t *testing.T) {
	tp := setup(t, "From: news@example.org\nCc: {{.mname}} <{{.manager}}>\n\nbody\n", []string{"email", "mname", "manager"}, TemplateOptions{}, nil)
	tests := []struct {
		name, mname string
		wantTo      []string
		wantCc      string
		wantErr     error
	}{
		{"plain", "Bob", []string{"ann@example.org", "bob@example.org"}, "Bob <bob@example.org>", nil},
		{"comma in name", "Smith, Bob", []string{"ann@example.org", "bob@example.org"}, `"Smith, Bob" <bob@example.org>`, nil},
		{"extra address in name", "victim@evil.example, Bob", []string{"ann@example.org", "bob@example.org"}, `"victim@evil.example, Bob" <bob@example.org>`, nil},
		{"group in name", "g: victim@evil.example;, Bob", []string{"ann@example.org", "bob@example.org"}, `"g: victim@evil.example;, Bob" <bob@example.org>`, nil},
		{"angle brackets in name", "<victim@evil.example>", []string{"ann@example.org", "bob@example.org"}, `"<victim@evil.example>" <bob@example.org>`, nil},
		{"empty manager", "", []string{"ann@example.org", "bob@example.org"}, "bob@example.org", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tp.Render(recipient("ann@example.org", tt.mname, "bob@example.org"))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.To, tt.wantTo) {
				t.Fatalf("envelope To got %q, want %q", m.To, tt.wantTo)
			}
			msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.Header.Get("Cc"); got != tt.wantCc {
				t.Fatalf("Cc got %q, want %q", got, tt.wantCc)
			}
		})
	}
}

// Every end-of-data lookalike from the SMTP smuggling research, and the
// dot-stuffing traps, must come out as one intact message whose body decodes
// back to the value.
var lookalikes = []string{
	"\n.\n", "\r.\r\n", "\r\n.\r\n", "\n.\r\n", "\r\n.\r", "\r\n\x00.\r\n", "\r\n.\x00\r\n",
	".", "..", "...\r\n", "a\r\n.\r\nMAIL FROM:<x@evil.example>\r\nRCPT TO:<v@example.org>\r\nDATA\r\nevil\r\n.\r\n",
	"\r\n.", ".\r\n.", "x\r\n.\r\n\r\n", strings.Repeat(".", 200), strings.Repeat("a", 74) + "." + strings.Repeat("b", 10),
	strings.Repeat("=", 30) + "\r\n.", "trailing space \n.\t\n", "",
}

func TestBodyLookalikes(t *testing.T) {
	tp := setup(t, "From: news@example.org\nSubject: s\n\n{{.v}}", []string{"email", "v"}, TemplateOptions{}, nil)
	for _, v := range lookalikes {
		for _, prefix := range []string{"", "é", strings.Repeat("x", 80)} {
			v := prefix + v
			t.Run(v, func(t *testing.T) {
				m, err := tp.Render(recipient("ann@example.org", v))
				if err != nil {
					t.Fatal(err)
				}
				checkWire(t, m.Data)
				msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
				if err != nil {
					t.Fatal(err)
				}
				if got, want := decodeBody(t, msg), crlf(v); got != want {
					t.Fatalf("body got %q, want %q", got, want)
				}
				for _, line := range bytes.Split(m.Data, []byte("\r\n")) {
					if bytes.HasPrefix(line, []byte(".")) {
						t.Fatalf("a line starts with a dot: %q", line)
					}
				}
			})
		}
	}
}

func TestLongLines(t *testing.T) {
	long := strings.Repeat("abcdefghij", 500)
	words := strings.Repeat("word ", 1000)
	tp := setup(t, "From: {{.n}} <news@example.org>\nTo: {{.n}} <{{.email}}>\nSubject: {{.s}}\nX-Long: {{.s}}\n\n{{.s}}\n{{.n}}\n", []string{"email", "s", "n"}, TemplateOptions{}, nil)
	for _, tt := range []struct{ name, s, n string }{
		{"one long word", long, "N"},
		{"many words", words, strings.Repeat("Name ", 300)},
		{"non-ASCII", strings.Repeat("日本語のテキスト", 400), strings.Repeat("名前", 500)},
		{"long name", "s", long},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tp.Render(recipient("ann@example.org", tt.s, tt.n))
			if err != nil {
				t.Fatal(err)
			}
			checkWire(t, m.Data)
			msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
			if err != nil {
				t.Fatal(err)
			}
			dec := new(mime.WordDecoder)
			subj, err := dec.DecodeHeader(msg.Header.Get("Subject"))
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Join(strings.Fields(tt.s), " "); subj != want {
				t.Fatalf("Subject got %q, want %q", subj, want)
			}
			from, err := msg.Header.AddressList("From")
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Join(strings.Fields(tt.n), " "); from[0].Name != want {
				t.Fatalf("From name got %q, want %q", from[0].Name, want)
			}
			if got, want := decodeBody(t, msg), crlf(tt.s+"\n"+tt.n+"\n"); got != want {
				t.Fatalf("body got %q, want %q", got, want)
			}
		})
	}
}

func TestNonASCIIHeaders(t *testing.T) {
	tp := setup(t, "From: {{.sender}} <news@example.org>\nTo: {{.name}} <{{.email}}>\nReply-To: {{address .name .email}}\nSubject: {{.subject}}\n\nHi\n",
		[]string{"email", "name", "subject", "sender"}, TemplateOptions{}, nil)
	tests := []struct{ name, subject, sender string }{
		{"Zoë Ñúñez", "Grüße aus Köln", "Société Générale"},
		{"张伟", "您好，欢迎订阅我们的新闻通讯！", "新闻"},
		{"山田 太郎", "ご案内: 新しいプラン", "Büro"},
		{`O"Brien, Pat`, "Tab\there and =?utf-8?q?fake?=", `A "quoted" <name>`},
		{"Ann (Sales)", "über " + strings.Repeat("lang ", 40), "x"},
	}
	dec := new(mime.WordDecoder)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tp.Render(recipient("ann@example.org", tt.name, tt.subject, tt.sender))
			if err != nil {
				t.Fatal(err)
			}
			checkWire(t, m.Data)
			for _, c := range string(m.Data) {
				if c >= 0x80 {
					t.Fatalf("raw non-ASCII in %q", m.Data)
				}
			}
			msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
			if err != nil {
				t.Fatal(err)
			}
			subj, err := dec.DecodeHeader(msg.Header.Get("Subject"))
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.Join(strings.Fields(tt.subject), " "); subj != want && subj != tt.subject {
				t.Fatalf("Subject got %q, want %q", subj, tt.subject)
			}
			for _, h := range []struct{ key, name, addr string }{
				{"From", tt.sender, "news@example.org"},
				{"To", tt.name, "ann@example.org"},
				{"Reply-To", tt.name, "ann@example.org"},
			} {
				l, err := msg.Header.AddressList(h.key)
				if err != nil {
					t.Fatalf("%s: %v in %q", h.key, err, m.Data)
				}
				if len(l) != 1 || l[0].Name != h.name || l[0].Address != h.addr {
					t.Fatalf("%s got %+v, want %q <%s>", h.key, l, h.name, h.addr)
				}
			}
		})
	}
}

func TestQuotedLocalPartAndUTF8(t *testing.T) {
	tp := setup(t, "From: news@example.org\nTo: {{.email}}\nCc: {{.cc}}\nBcc: {{.bcc}}\n\nHi\n", []string{"email", "cc", "bcc"}, TemplateOptions{}, nil)
	m, err := tp.Render(recipient(`"a b"@x.org`, `"c d"@Y.org, ann@x.org`, "用户@例子.广告"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`"a b"@x.org`, `"c d"@y.org`, "ann@x.org", "用户@xn--fsqu00a.xn--4rr70v"}
	if !reflect.DeepEqual(m.To, want) {
		t.Fatalf("To got %q, want %q", m.To, want)
	}
	if !m.UTF8 {
		t.Fatal("UTF8 got false, want true")
	}
	if bytes.Contains(m.Data, []byte("Bcc")) || bytes.Contains(m.Data, []byte("用户")) {
		t.Fatalf("Bcc leaked into %q", m.Data)
	}
	if !bytes.Contains(m.Data, []byte("To: \"a b\"@x.org\r\n")) {
		t.Fatalf("quoted local part lost in %q", m.Data)
	}
}

func TestBind(t *testing.T) {
	tmpl := "From: news@example.org\nSubject: {{.Plan}} {{index . \"first name\"}}\n\n{{with .plan}}{{.}}{{.notacolumn}}{{end}}{{range $x := .items}}{{$.region}}{{end}}\n"
	dir := t.TempDir()
	p := filepath.Join(dir, "welcome.tmpl")
	os.WriteFile(p, []byte(tmpl), 0o600)
	tp, err := ParseTemplate(p, TemplateOptions{AttachColumn: "files"})
	if err != nil {
		t.Fatal(err)
	}
	wantCols := []string{"Plan", "first name", "plan", "items", "region", "files"}
	if got := tp.Columns(); !reflect.DeepEqual(got, wantCols) {
		t.Fatalf("Columns got %q, want %q", got, wantCols)
	}
	err = tp.Bind("data/recipients.csv", []string{"email", " PLAN ", "first name"})
	if !errors.Is(err, ErrMissingColumn) {
		t.Fatalf("got %v, want ErrMissingColumn", err)
	}
	want := `merge: welcome.tmpl and the attachment column use columns "items", "region", "files", which recipients.csv does not have (columns: email, PLAN, first name): missing column`
	if err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
	if err := tp.Bind("recipients.csv", []string{"email", "plan", "first name", "items", "region", "files"}); err != nil {
		t.Fatal(err)
	}
}

func TestParseTemplateErrors(t *testing.T) {
	tests := []struct{ name, tmpl, want string }{
		{"no blank line", "From: a@x.org\nSubject: x", "no blank line"},
		{"no from", "Subject: x\n\nbody", "no From"},
		{"bad header line", "From: a@x.org\nthis is body\n\nbody", "line 2"},
		{"content-type", "From: a@x.org\nContent-Type: text/html\n\nbody", "Content-Type"},
		{"twice", "From: a@x.org\nSubject: a\nsubject: b\n\nbody", "twice"},
		{"body syntax", "From: a@x.org\n\nline\n{{.x", "welcome.tmpl:4"},
		{"header syntax", "From: a@x.org\nSubject: {{if}}\n\nbody", "welcome.tmpl:2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "welcome.tmpl")
			os.WriteFile(p, []byte(tt.tmpl), 0o600)
			_, err := ParseTemplate(p, TemplateOptions{})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "merge: ") {
				t.Fatalf("got %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestRenderErrors(t *testing.T) {
	tp := setup(t, "From: {{.from}}\nSubject: {{.s.x}}\n\nbody\n", []string{"email", "from", "s"}, TemplateOptions{}, nil)
	_, err := tp.Render(recipient("ann@example.org", "news@example.org", "v"))
	if !errors.Is(err, ErrRender) {
		t.Fatalf("got %v, want ErrRender", err)
	}
	tp = setup(t, "From: {{.from}}\n\nbody\n", []string{"email", "from"}, TemplateOptions{}, nil)
	for _, from := range []string{"", "not an address", "x@y.org> NOTIFY=NEVER"} {
		_, err := tp.Render(recipient("ann@example.org", from))
		if !errors.Is(err, ErrNotAddress) && !errors.Is(err, ErrHeaderInjection) {
			t.Fatalf("From %q: got %v, want ErrNotAddress", from, err)
		}
	}
}

func TestHTMLAndAttachments(t *testing.T) {
	files := map[string]string{
		"mail.html":           "<p>Hello {{.name}}</p>\n<p>.</p>\n",
		"files/report.pdf":    "%PDF-1.4 fake",
		"files/données é.txt": "bonjour",
	}
	tp := setup(t, "From: news@example.org\nSubject: Report\n\nHello {{.name}}\n", []string{"email", "name", "att"},
		TemplateOptions{HTMLPath: "mail.html", AttachColumn: "att", Unsubscribe: "https://u.example/?id={{urlquery .email}}"}, files)
	m, err := tp.Render(recipient("ann@example.org", "<b>Ann & Co</b>", "files/report.pdf; files/données é.txt"))
	if err != nil {
		t.Fatal(err)
	}
	checkWire(t, m.Data)
	msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msg.Header.Get("List-Unsubscribe"), "<https://u.example/?id=ann%40example.org>"; got != want {
		t.Fatalf("List-Unsubscribe got %q, want %q", got, want)
	}
	if got := msg.Header.Get("List-Unsubscribe-Post"); got != "List-Unsubscribe=One-Click" {
		t.Fatalf("List-Unsubscribe-Post got %q", got)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("Content-Type got %q (%v), want multipart/mixed", mt, err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	type got struct{ ct, name, body string }
	var parts []got
	var walk func(r *multipart.Reader)
	walk = func(r *multipart.Reader) {
		for {
			p, err := r.NextRawPart()
			if err == io.EOF {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mt, params, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			if strings.HasPrefix(mt, "multipart/") {
				walk(multipart.NewReader(p, params["boundary"]))
				continue
			}
			var body io.Reader = p
			switch p.Header.Get("Content-Transfer-Encoding") {
			case "base64":
				body = base64.NewDecoder(base64.StdEncoding, p)
			case "quoted-printable":
				body = quotedprintable.NewReader(p)
			}
			b, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			_, dp, _ := mime.ParseMediaType(p.Header.Get("Content-Disposition"))
			parts = append(parts, got{mt, dp["filename"], string(b)})
		}
	}
	walk(mr)
	want := []got{
		{"text/plain", "", "Hello <b>Ann & Co</b>\r\n"},
		{"text/html", "", "<p>Hello &lt;b&gt;Ann &amp; Co&lt;/b&gt;</p>\r\n<p>.</p>\r\n"},
		{"application/pdf", "report.pdf", "%PDF-1.4 fake"},
		{"text/plain", "données é.txt", "bonjour"},
	}
	if !reflect.DeepEqual(parts, want) {
		t.Fatalf("parts got %q, want %q", parts, want)
	}

	for _, bad := range []string{"files/missing.pdf", "../secret.txt", "/etc/passwd"} {
		_, err := tp.Render(recipient("ann@example.org", "Ann", bad))
		var re *RowError
		if !errors.Is(err, ErrAttachment) || !errors.As(err, &re) || re.Column != "att" {
			t.Fatalf("attachment %q: got %v, want ErrAttachment in column att", bad, err)
		}
	}
}

func TestUnsubscribe(t *testing.T) {
	tests := []struct {
		tmpl, want, post string
		err              error
	}{
		{"mailto:unsub@example.org?subject={{urlquery .email}}", "<mailto:unsub@example.org?subject=ann%40example.org>", "", nil},
		{"https://u.example/{{.email}}", "<https://u.example/ann@example.org>", "List-Unsubscribe=One-Click", nil},
		{"https://u.example/{{.name}}", "", "", ErrRender},
		{"javascript:alert(1)", "", "", ErrRender},
		{"https://u.example/{{.note}}", "", "", ErrHeaderInjection},
	}
	for _, tt := range tests {
		t.Run(tt.tmpl, func(t *testing.T) {
			tp := setup(t, "From: news@example.org\n\nbody\n", []string{"email", "name", "note"}, TemplateOptions{Unsubscribe: tt.tmpl}, nil)
			m, err := tp.Render(recipient("ann@example.org", "Ann Smith", "a\r\nb"))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("got %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			msg, _ := mail.ReadMessage(bytes.NewReader(m.Data))
			if got := msg.Header.Get("List-Unsubscribe"); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if got := msg.Header.Get("List-Unsubscribe-Post"); got != tt.post {
				t.Fatalf("post got %q, want %q", got, tt.post)
			}
		})
	}
}

func TestEnvelopeFrom(t *testing.T) {
	tp := setup(t, "From: News <news@example.org>\nSender: Bounce <bounce@example.org>\n\nb\n", []string{"email"}, TemplateOptions{}, nil)
	m, err := tp.Render(recipient("ann@example.org"))
	if err != nil || m.From != "bounce@example.org" {
		t.Fatalf("got %v %v, want the Sender address", m, err)
	}
	tp = setup(t, "From: News <news@example.org>\n\nb\n", []string{"email"}, TemplateOptions{EnvelopeFrom: "Bounces@Example.ORG"}, nil)
	m, err = tp.Render(recipient("ann@example.org"))
	if err != nil || m.From != "Bounces@example.org" {
		t.Fatalf("got %v %v, want the EnvelopeFrom option", m, err)
	}
}

func TestRenderRandomMessageID(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "t.tmpl")
	os.WriteFile(p, []byte("From: a@example.org\nMessage-ID: {{.id}}\n\nb\n"), 0o600)
	tp, err := ParseTemplate(p, TemplateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Bind("r.csv", []string{"email", "id"}); err != nil {
		t.Fatal(err)
	}
	m1, err := tp.Render(recipient("ann@example.org", ""))
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := tp.Render(recipient("ann@example.org", ""))
	if m1.MessageID == m2.MessageID || !validMsgID(m1.MessageID) {
		t.Fatalf("Message-IDs %q and %q, want two distinct valid ids", m1.MessageID, m2.MessageID)
	}
	// The right side is this host's name when fully qualified, else the
	// sender's domain: never a bare name like "vm".
	host, _ := os.Hostname()
	wantRight := "@example.org>"
	if strings.Contains(host, ".") {
		wantRight = "@" + strings.ToLower(host) + ">"
	}
	if !strings.HasSuffix(m1.MessageID, wantRight) {
		t.Errorf("Message-ID %q, want it to end in %q", m1.MessageID, wantRight)
	}
	m3, err := tp.Render(recipient("ann@example.org", "<given@example.org>"))
	if err != nil || m3.MessageID != "<given@example.org>" || bytes.Count(m3.Data, []byte("Message-ID")) != 1 {
		t.Fatalf("got %v %v, want the template's Message-ID once", m3, err)
	}
}

func TestAddressCountCheck(t *testing.T) {
	// A column that holds a list of addresses is a list the template allows.
	tp := setup(t, "From: news@example.org\nCc: {{.cc}}\nBcc: audit@example.org{{.suffix}}\n\nb\n", []string{"email", "cc", "suffix"}, TemplateOptions{}, nil)
	m, err := tp.Render(recipient("ann@example.org", "a@x.org, b@x.org", ""))
	if err != nil || len(m.To) != 4 {
		t.Fatalf("got %v %v, want four envelope recipients", m, err)
	}
}
