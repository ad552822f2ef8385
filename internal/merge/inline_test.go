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
)

// png is not a real image; only its bytes need to come back, and it has
// every byte value so that base64 has something to do.
var png = func() string {
	var b []byte
	for i := 0; i < 300; i++ {
		b = append(b, byte(i))
	}
	return "\x89PNG\r\n\x1a\n" + string(b)
}()

// mimeShape parses a message and returns its structure, as in
// "multipart/alternative(text/plain,text/html)", with a related part's type
// parameter and an inline part's Content-ID, plus each leaf's decoded
// content keyed by Content-ID, else filename, else content type.
func mimeShape(t *testing.T, data []byte) (string, map[string]string) {
	t.Helper()
	checkWire(t, data)
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	content := map[string]string{}
	var walk func(h map[string][]string, r io.Reader) string
	walk = func(h map[string][]string, r io.Reader) string {
		get := func(k string) string {
			if v := h[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		mt, params, err := mime.ParseMediaType(get("Content-Type"))
		if err != nil {
			t.Fatalf("Content-Type %q: %v", get("Content-Type"), err)
		}
		if strings.HasPrefix(mt, "multipart/") {
			s := mt
			if params["type"] != "" {
				s += ";type=" + params["type"]
			}
			var kids []string
			mr := multipart.NewReader(r, params["boundary"])
			for {
				p, err := mr.NextRawPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				kids = append(kids, walk(p.Header, p))
			}
			return s + "(" + strings.Join(kids, ",") + ")"
		}
		switch get("Content-Transfer-Encoding") {
		case "base64":
			r = base64.NewDecoder(base64.StdEncoding, r)
		case "quoted-printable":
			r = quotedprintable.NewReader(r)
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		s, key := mt, mt
		_, dp, _ := mime.ParseMediaType(get("Content-Disposition"))
		if dp["filename"] != "" {
			key = dp["filename"]
		}
		if id := get("Content-Id"); id != "" {
			s += id
			key = id
			if disp, _, _ := mime.ParseMediaType(get("Content-Disposition")); disp != "inline" {
				t.Fatalf("part %s has disposition %q, want inline", id, disp)
			}
		}
		content[key] = string(b)
		return s
	}
	return walk(msg.Header, msg.Body), content
}

func TestInlineImages(t *testing.T) {
	files := map[string]string{
		"img/logo.png":      png,
		"img/bg.gif":        "GIF89a",
		"report.pdf":        "%PDF-1.4 fake",
		"shared/logo.png":   "shared logo",
		"shared/banner.jpg": "jpeg",
	}
	const text = "From: news@example.org\nSubject: Hi\n\nHello\n"
	tests := []struct {
		name    string
		html    string
		attach  string // the row's attachment cell; "-" for no attachment column
		inline  string
		shape   string
		content map[string]string
	}{{
		name:   "attachment referenced by src",
		html:   `<p>Hi</p><img src="cid:logo.png" alt="">`,
		attach: "img/logo.png; report.pdf",
		shape: "multipart/mixed(multipart/alternative(text/plain," +
			"multipart/related;type=text/html(text/html,image/png<logo.png>)),application/pdf)",
		content: map[string]string{"<logo.png>": png, "report.pdf": "%PDF-1.4 fake"},
	}, {
		name:    "every attachment inline: no mixed",
		html:    `<img src='cid:logo.png'><div style="background: url( &quot;cid:bg.gif&quot; )">x</div>`,
		attach:  "img/logo.png;img/bg.gif",
		shape:   "multipart/alternative(text/plain,multipart/related;type=text/html(text/html,image/png<logo.png>,image/gif<bg.gif>))",
		content: map[string]string{"<logo.png>": png, "<bg.gif>": "GIF89a"},
	}, {
		name:   "unreferenced attachment stays one",
		html:   `<p>no images</p>`,
		attach: "img/logo.png",
		shape:  "multipart/mixed(multipart/alternative(text/plain,text/html),image/png)",
	}, {
		name:    "inline folder",
		html:    `<img src="cid:logo.png"><IMG SRC=cid:banner.jpg><img src="cid:logo.png">`,
		attach:  "-",
		inline:  "shared",
		shape:   "multipart/alternative(text/plain,multipart/related;type=text/html(text/html,image/png<logo.png>,image/jpeg<banner.jpg>))",
		content: map[string]string{"<logo.png>": "shared logo", "<banner.jpg>": "jpeg"},
	}, {
		name:    "row attachment before inline folder",
		html:    `<img src="cid:logo.png"><img src="cid:banner.jpg">`,
		attach:  "img/logo.png;report.pdf",
		inline:  "shared",
		shape:   "multipart/mixed(multipart/alternative(text/plain,multipart/related;type=text/html(text/html,image/png<logo.png>,image/jpeg<banner.jpg>)),application/pdf)",
		content: map[string]string{"<logo.png>": png, "<banner.jpg>": "jpeg"},
	}, {
		name:    "cid from a row value, URL-escaped",
		html:    `<img src="cid:{{.img}}">`,
		attach:  "-",
		inline:  "shared",
		shape:   "multipart/alternative(text/plain,multipart/related;type=text/html(text/html,image/jpeg<banner.jpg>))",
		content: map[string]string{"<banner.jpg>": "jpeg"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := map[string]string{"mail.html": tt.html}
			for k, v := range files {
				fs[k] = v
			}
			opts := TemplateOptions{HTMLPath: "mail.html", InlineDir: tt.inline}
			header := []string{"email", "img"}
			values := []string{"ann@example.org", "banner.jpg"}
			if tt.attach != "-" {
				opts.AttachColumn = "att"
				header = append(header, "att")
				values = append(values, tt.attach)
			}
			tp := setup(t, text, header, opts, fs)
			m, err := tp.Render(recipient(values...))
			if err != nil {
				t.Fatal(err)
			}
			shape, content := mimeShape(t, m.Data)
			if shape != tt.shape {
				t.Fatalf("structure got %s, want %s", shape, tt.shape)
			}
			for k, want := range tt.content {
				if content[k] != want {
					t.Fatalf("part %s got %q, want %q", k, content[k], want)
				}
			}
			if len(tt.content) > 0 && !strings.Contains(content["text/html"], "cid:") {
				t.Fatalf("html lost its cid references: %q", content["text/html"])
			}
		})
	}
}

func TestInlineRowErrors(t *testing.T) {
	files := map[string]string{
		"a/logo.png":      png,
		"b/logo.png":      png,
		"shared/logo.png": png,
		"mail.html":       `<img src="cid:{{.img}}">`,
	}
	tests := []struct {
		name   string
		img    string
		attach string
		inline string
		want   error
		msg    string // in the error text
	}{
		{"unresolved, no inline folder", "logo.png", "", "", ErrAttachment, "neither an attachment of this row nor"},
		{"unresolved in inline folder", "nope.png", "", "shared", ErrAttachment, "cid:nope.png"},
		{"escape the inline folder", "..", "", "shared", ErrRender, "Content-ID"},
		{"no extension match", "logo", "a/logo.png", "", ErrAttachment, "cid:logo,"},
		{"two attachments match", "logo.png", "a/logo.png;b/logo.png", "", ErrAttachment, "two attachments"},
		{"space", "a b.png", "", "shared", ErrRender, "Content-ID"},
		{"angle bracket", "x>\r\nBcc: v@evil.example", "", "shared", ErrRender, "Content-ID"},
		{"quote", `x"><img src="cid:logo.png`, "", "shared", ErrRender, "Content-ID"},
		{"non-ASCII", "logö.png", "", "shared", ErrRender, "Content-ID"},
		{"too long", strings.Repeat("a", 300), "", "shared", ErrRender, "Content-ID"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp := setup(t, "From: news@example.org\n\nHello\n", []string{"email", "img", "att"},
				TemplateOptions{HTMLPath: "mail.html", AttachColumn: "att", InlineDir: tt.inline}, files)
			m, err := tp.Render(recipient("ann@example.org", tt.img, tt.attach))
			var re *RowError
			if !errors.Is(err, tt.want) || !errors.As(err, &re) {
				var data []byte
				if m != nil {
					data = m.Data
				}
				t.Fatalf("got %v, want a RowError wrapping %v; message %q", err, tt.want, data)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("error %q does not say %q", err, tt.msg)
			}
		})
	}
}

// TestInlineParseErrors: a cid written in the HTML template that no row can
// supply stops the run before the first message.
func TestInlineParseErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tmpl := write("t.tmpl", "From: news@example.org\n\nHello\n")
	write("shared/logo.png", png)
	shared := filepath.Join(dir, "shared")
	tests := []struct {
		name string
		html string
		opts TemplateOptions
		want string // in the error; "" for no error
	}{
		{"no source for a literal cid", `<img src="cid:logo.png">`, TemplateOptions{}, "no attachment column or inline folder"},
		{"not in the inline folder", `<img src="cid:nope.png">`, TemplateOptions{InlineDir: shared}, "cid:nope.png"},
		{"in the inline folder", `<img src="cid:logo.png">`, TemplateOptions{InlineDir: shared}, ""},
		{"attachment column may supply it", `<img src="cid:nope.png">`, TemplateOptions{AttachColumn: "att"}, ""},
		{"unusable literal cid", `<img src="cid:a!b.png">`, TemplateOptions{AttachColumn: "att"}, "Content-ID"},
		{"empty literal cid", `<img src="cid:">`, TemplateOptions{InlineDir: shared}, "Content-ID"},
		{"cid from a value is checked per row", `<img src="cid:{{.img}}">`, TemplateOptions{}, ""},
		{"cid in a branch", `{{if .x}}<img src="cid:nope.png">{{end}}`, TemplateOptions{InlineDir: shared}, "cid:nope.png"},
		{"inline folder missing", `<p>x</p>`, TemplateOptions{InlineDir: filepath.Join(dir, "nowhere")}, "inline folder"},
		{"inline folder is a file", `<p>x</p>`, TemplateOptions{InlineDir: tmpl}, "inline folder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.HTMLPath = write("mail.html", tt.html)
			_, err := ParseTemplate(tmpl, tt.opts)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("got %v, want an error saying %q", err, tt.want)
			}
		})
	}
	if _, err := ParseTemplate(tmpl, TemplateOptions{InlineDir: shared}); err == nil || !strings.Contains(err.Error(), "needs an HTML template") {
		t.Fatalf("inline folder without HTML: got %v", err)
	}
}

// TestInlineHeadersSafe: a row's file name reaches the inline part's
// headers only through mime's parameter encoding.
func TestInlineHeadersSafe(t *testing.T) {
	name := `x" y=\.png`
	files := map[string]string{"mail.html": `<img src="cid:logo.png">`, "logo.png": png, name: "z"}
	tp := setup(t, "From: news@example.org\n\nHello\n", []string{"email", "att"},
		TemplateOptions{HTMLPath: "mail.html", AttachColumn: "att"}, files)
	m, err := tp.Render(recipient("ann@example.org", "logo.png;"+name))
	if err != nil {
		t.Fatal(err)
	}
	shape, content := mimeShape(t, m.Data)
	want := "multipart/mixed(multipart/alternative(text/plain,multipart/related;type=text/html(text/html,image/png<logo.png>)),image/png)"
	if shape != want {
		t.Fatalf("structure got %s, want %s", shape, want)
	}
	if content[name] != "z" {
		t.Fatalf("attachment %q got %q; parts %q", name, content[name], content)
	}
	if !reflect.DeepEqual(content["<logo.png>"], png) {
		t.Fatalf("inline image does not decode back")
	}
}

// FuzzInline puts one arbitrary value in the cid and in the attachment cell:
// it must give a row error or a well-formed message whose every Content-ID
// is a safe <NAME>, with the top-level headers the template gives.
func FuzzInline(f *testing.F) {
	for _, v := range []string{"logo.png", "logo", "x>\r\nBcc: v@evil.example", `a"b`, "..", "a%40b", "%zz", "logo.png;logo.png", "é.png", ""} {
		f.Add(v)
	}
	dir := f.TempDir()
	for name, data := range map[string]string{
		"t.tmpl": "From: news@example.org\nSubject: s\n\nHello\n", "mail.html": `<img src="cid:{{.v}}"><p style="background:url(cid:{{.v}})">`,
		"logo.png": png, "shared/logo.png": png, "shared/a@b": "x",
	} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o700)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			f.Fatal(err)
		}
	}
	tp, err := ParseTemplate(filepath.Join(dir, "t.tmpl"), TemplateOptions{
		HTMLPath: filepath.Join(dir, "mail.html"), AttachColumn: "v", InlineDir: filepath.Join(dir, "shared"),
		MessageID: func(int) string { return "<id@example.org>" },
	})
	if err != nil {
		f.Fatal(err)
	}
	if err := tp.Bind(filepath.Join(dir, "r.csv"), []string{"email", "v"}); err != nil {
		f.Fatal(err)
	}
	want := []string{"From", "Subject", "To", "Date", "Message-ID", "MIME-Version", "Content-Type"}
	f.Fuzz(func(t *testing.T, v string) {
		m, err := tp.Render(recipient("ann@example.org", v))
		if err != nil {
			var re *RowError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a RowError", err)
			}
			return
		}
		checkWire(t, m.Data)
		if got := headerNames(t, m.Data); !reflect.DeepEqual(got, want) {
			t.Fatalf("headers got %q, want %q", got, want)
		}
		for _, line := range strings.Split(string(m.Data), "\r\n") {
			if id, ok := strings.CutPrefix(line, "Content-ID: "); ok {
				if !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, ">") || !validCID(id[1:len(id)-1]) {
					t.Fatalf("unsafe Content-ID %q", id)
				}
			}
		}
		mimeShape(t, m.Data)
	})
}
