package merge

import (
	"bytes"
	"errors"
	"net/mail"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzRender puts one arbitrary value in every header and the body. Each
// value must give either a row error or a message that net/mail parses with
// exactly the intended headers, CRLF-only lines of at most 998 octets, no
// lone "." line, and a body that decodes back to the value.
func FuzzRender(f *testing.F) {
	for _, v := range lookalikes {
		f.Add(v)
	}
	for _, v := range []string{
		"x\r\nBcc: victim@evil.example", "x\nSubject: y", "Zoë", "=?utf-8?q?x?=", `"a b"@x.org`,
		"a@x.org, b@y.org", "<v@evil.example>", "Smith, Bob", strings.Repeat("ab ", 400), strings.Repeat("é", 2000),
		"\xff\xfe", "\t", " ", "(comment)", "\x7f\x01",
	} {
		f.Add(v)
	}
	dir := f.TempDir()
	p := filepath.Join(dir, "fuzz.tmpl")
	tmpl := "From: {{.v}} <news@example.org>\nTo: {{.v}} <{{.email}}>\nCc: {{.v}}\nReply-To: {{.v}} <help@example.org>\n" +
		"Subject: Re: {{.v}}\nX-Custom: {{.v}}\n\n{{.v}}"
	if err := os.WriteFile(p, []byte(tmpl), 0o600); err != nil {
		f.Fatal(err)
	}
	tp, err := ParseTemplate(p, TemplateOptions{
		Now:       func() time.Time { return time.Unix(0, 0) },
		MessageID: func(int) string { return "<id@example.org>" },
	})
	if err != nil {
		f.Fatal(err)
	}
	if err := tp.Bind("r.csv", []string{"email", "v"}); err != nil {
		f.Fatal(err)
	}
	full := []string{"From", "To", "Cc", "Reply-To", "Subject", "X-Custom", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}
	// An empty value leaves out the headers that would be empty.
	blank := []string{"From", "To", "Reply-To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"}
	f.Fuzz(func(t *testing.T, v string) {
		m, err := tp.Render(recipient("ann@example.org", v))
		if err != nil {
			var re *RowError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a RowError", err)
			}
			if strings.ContainsAny(v, "\r\n\x00") && !errors.Is(err, ErrHeaderInjection) {
				t.Fatalf("value %q: got %v, want ErrHeaderInjection", v, err)
			}
			return
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			t.Fatalf("value %q with a line break rendered", v)
		}
		checkWire(t, m.Data)
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatalf("net/mail: %v in %q", err, m.Data)
		}
		names := headerNames(t, m.Data)
		want := full
		if strings.Trim(v, " \t") == "" {
			want = blank
		}
		if !reflect.DeepEqual(names, want) {
			t.Fatalf("headers got %q, want %q", names, want)
		}
		if len(msg.Header) != len(names) {
			t.Fatalf("net/mail sees %d headers, want %d", len(msg.Header), len(names))
		}
		if m.To[0] != "ann@example.org" {
			t.Fatalf("envelope To got %q", m.To)
		}
		if got := decodeBody(t, msg); got != crlf(v) {
			t.Fatalf("body got %q, want %q", got, crlf(v))
		}
	})
}

// FuzzList feeds arbitrary bytes to the CSV reader: it must never panic,
// every row must have as many values as the header, and row numbers must
// grow.
func FuzzList(f *testing.F) {
	for _, s := range []string{
		"email,name\na@x.org,Ann\n", "\xEF\xBB\xBFemail;name\r\na@x.org;\"A\nB\"\n", "email\n\"a@x.org\n",
		"email,x\na@x.org,\"b\"c\nb@x.org,1,2,3\n", "\xFF\xFEe\x00m\x00a\x00i\x00l\x00\n\x00", "email\n,\n\n,,,\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "l.csv")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := OpenList(p, ListOptions{})
		if err != nil {
			return
		}
		defer l.Close()
		last := 1
		for i := 0; i < 10000; i++ {
			rec, err := l.Next()
			if err != nil {
				var re *RowError
				if !errors.As(err, &re) {
					return
				}
			}
			if len(rec.Values) != len(l.Header()) {
				t.Fatalf("row %d has %d values, header %d", rec.Row, len(rec.Values), len(l.Header()))
			}
			if rec.Row <= last {
				t.Fatalf("row number %d after %d", rec.Row, last)
			}
			last = rec.Row
			if err == nil && rec.Address == "" {
				t.Fatalf("row %d valid without an address", rec.Row)
			}
		}
	})
}
