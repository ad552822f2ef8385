package merge

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// update rewrites the golden files of TestRenderGolden instead of comparing.
var update = flag.Bool("update", false, "rewrite testdata/golden from the current output")

// goldenPieces are fragments that exercise every branch of header and body
// encoding: non-ASCII, encoded-word lookalikes, address punctuation, line
// ends, NUL, dots and spaces at line edges, and lines around the 76, 78 and
// 998 octet limits.
var goldenPieces = []string{
	"", " ", "\t", "  ", "Ann", "Zoë", "José García", "日本語", "\u00a0", "\u2028", "\u0085",
	"a@x.org", "b@y.org, c@z.org", `"Smith, Bob"`, "Smith, Bob", "<v@evil.example>", "=?utf-8?q?x?=", "=?",
	".", "..", ". ", "\r\n", "\n", "\r", "\x00", "\r\n.\r\n", "\n.\n", "=", "==", "\x7f", "\x01", "\xff", "\xc3",
	"(c)", `\`, `"`, "mailto:", "@", ";", ":", "x:;", "ab ", "end ", " \n", "\t\n",
	strings.Repeat("x", 73), strings.Repeat("y", 74), strings.Repeat("z", 75), strings.Repeat("w", 76),
	strings.Repeat("v", 77), strings.Repeat("u", 78), strings.Repeat("t", 79), strings.Repeat("é", 40),
	strings.Repeat("ab ", 40), strings.Repeat("q", 901), strings.Repeat(".", 80), strings.Repeat("=", 30),
	strings.Repeat("a", 74) + ".", strings.Repeat("a", 75) + " ", strings.Repeat("a", 74) + "é",
}

// goldenAddresses are list cells for the email column: valid, odd and bad.
var goldenAddresses = []string{
	"user@example.org", "User.Name@EXAMPLE.ORG", " mailto:ann@example.org ", "ü@example.org", "x@bücher.de",
	`"a b"@x.org`, `"ab"@x.org`, "x@xn--bcher-kva.de", "x@[192.0.2.1]", "x@[IPv6:2001:db8::1]", "bad",
	"x@-a.org", "x@ab--c.org", "x@a-.org", "x@a..org", "x@a.org.", "x@.a.org", "x@a_b.org", "x@ÄÖ.example",
	"a.@x.org", ".a@x.org", "a..b@x.org", "a+tag@x.org", "a@x", "a@1.2.3.4", "x@" + strings.Repeat("a", 64) + ".org",
	strings.Repeat("l", 65) + "@x.org", "a@b@x.org", "", "x@XN--BCHER-KVA.DE", "x@faß.de", "x@Σ.gr",
}

// goldenMailboxes are cells for columns that land in address headers.
var goldenMailboxes = []string{
	"a@x.org", "Name <a@x.org>", "a@x.org, b@y.org", `"Smith, Bob" <s@x.org>`, "Zoë <z@bücher.de>",
	"=?utf-8?q?Caf=C3=A9?= <c@x.org>", "group: a@x.org, b@x.org;", "a@x.org (comment)", "<a@x.org>",
	`"a b"@x.org`, "ü@example.org", "A@EXAMPLE.ORG", "x@xn--bcher-kva.de", "x@[192.0.2.1]", "", " ",
	"a@x.org,", "Ann Lee <ann@x.org>, Bob <bob@y.org>", `"Ann \\"Q\\" Lee" <q@x.org>`, "=?utf-8?b?w7w=?= <u@x.org>",
	"x@ab--c.org", "x@-a.org", "Long " + strings.Repeat("n", 950) + " <l@x.org>",
}

// goldenTemplates are rendered for every golden row; each name is the
// golden file's.
var goldenTemplates = []struct {
	name, text string
	opts       TemplateOptions
}{
	{"bench", `From: Example Co Billing <billing@example.com>
To: {{.first_name}} {{.last_name}} <{{.email}}>
Reply-To: support@example.com
Subject: Your {{.plan}} plan renews on {{.renewal_date}}
X-Campaign: renewal-2026-{{.plan}}

Dear {{.first_name}} {{.last_name}},

thank you for being a customer of Example Co. This is a reminder that the
{{.plan}} plan of account {{.account_id}} ({{.company}}) renews
automatically on {{.renewal_date}}. There is nothing you need to do.

Our support team in {{.city}} is happy to help with any question.
`, TemplateOptions{}},
	{"every-header", `From: {{.plan}}
Sender: {{.company}}
To: {{.first_name}} {{.last_name}} <{{.email}}>
Cc: {{.city}}
Bcc: {{.account_id}}
Reply-To: {{.last_name}}
Subject: {{.first_name}} {{.renewal_date}}
X-Custom: {{.company}}
Date: {{.renewal_date}}

{{.first_name}}{{.last_name}}
{{.company}}{{.city}}{{.plan}}
`, TemplateOptions{}},
	{"constant-headers", `From: "Billing, Example" <billing@example.com>
Sender: bounce@EXAMPLE.com
To: a@example.org, "B b" <b@example.org>
Cc: Zoë <zoe@exämple.org>, {{.city}}
Bcc: audit@example.org
Reply-To: =?utf-8?q?Caf=C3=A9?= <cafe@example.org>
Subject: Constant subject ünïcode
X-Const: plain{{/* a comment */}}
Message-ID: <fixed@example.org>
Date: Fri, 02 Jan 2026 03:04:05 +0000

Body {{.first_name}}
`, TemplateOptions{Unsubscribe: "https://u.example/{{.plan | urlquery}}", EnvelopeFrom: "Bounce@Example.ORG"}},
	{"bad-constant", "From: not an address\nTo: x@\n\n{{.first_name}}\n", TemplateOptions{}},
}

var goldenHeader = []string{"email", "first_name", "last_name", "company", "city", "plan", "account_id", "renewal_date"}

// goldenRows returns the rows every golden template is rendered with:
// plain rows like the benchmark's, then rows of random goldenPieces.
func goldenRows() [][]string {
	var rows [][]string
	for i := range 20 {
		rows = append(rows, []string{
			fmt.Sprintf("user%07d@example.org", i), []string{"Ada", "José", "Zoë"}[i%3], []string{"Lovelace", "Müller"}[i%2],
			fmt.Sprintf("Customer %d Ltd", i), []string{"London", "Zürich"}[i%2], "pro", fmt.Sprintf("AC-%08d", i), "2026-01-02",
		})
	}
	r := rand.New(rand.NewPCG(6, 6))
	value := func() string {
		var b strings.Builder
		for range r.IntN(5) {
			b.WriteString(goldenPieces[r.IntN(len(goldenPieces))])
		}
		return b.String()
	}
	for _, a := range goldenAddresses {
		rows = append(rows, []string{a, "Ann", "Lee", "c", "d", "a@x.org", "e@x.org", "Fri, 02 Jan 2026 03:04:05 +0000"})
	}
	// Columns that every-header puts in address headers and Date get
	// mostly values of that shape, so rows get past them to the body.
	addrValue := func() string {
		switch r.IntN(8) {
		case 0:
			return value()
		case 1:
			return goldenMailboxes[r.IntN(len(goldenMailboxes))]
		}
		return goldenMailboxes[r.IntN(10)]
	}
	for range 600 {
		row := []string{goldenAddresses[r.IntN(len(goldenAddresses))]}
		if r.IntN(4) > 0 {
			row[0] = goldenAddresses[r.IntN(6)]
		}
		for _, col := range goldenHeader[1:] {
			switch col {
			case "plan", "company", "city", "account_id", "last_name":
				row = append(row, addrValue())
			case "renewal_date":
				if r.IntN(4) > 0 {
					row = append(row, []string{"Fri, 02 Jan 2026 03:04:05 +0000", "2 Jan 2026 03:04 -0700", "Mon, 5 Jan 2026 10:00:00 GMT"}[r.IntN(3)])
				} else {
					row = append(row, value())
				}
			default:
				row = append(row, value())
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// TestRenderGolden renders fixed templates and rows and compares every
// message (or row error) with testdata/golden, byte for byte: the output
// is the product, so a faster path must not change a single octet.
// go test -run TestRenderGolden -update rewrites the files.
func TestRenderGolden(t *testing.T) {
	rows := goldenRows()
	for _, g := range goldenTemplates {
		t.Run(g.name, func(t *testing.T) {
			opts := g.opts
			opts.Now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
			opts.MessageID = func(row int) string { return fmt.Sprintf("<row%d@test.example>", row) }
			dir := t.TempDir()
			p := filepath.Join(dir, g.name+".tmpl")
			if err := os.WriteFile(p, []byte(g.text), 0o600); err != nil {
				t.Fatal(err)
			}
			tp, err := ParseTemplate(p, opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := tp.Bind("golden.csv", goldenHeader); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			for i, row := range rows {
				rec := recipient(row...)
				rec.Row = i + 2
				m, err := tp.Render(rec)
				fmt.Fprintf(&out, "=== row %d %q\n", rec.Row, row)
				if err != nil {
					fmt.Fprintf(&out, "error: %v\n", err)
					continue
				}
				fmt.Fprintf(&out, "from %q to %q id %q utf8 %v\n%s\n", m.From, m.To, m.MessageID, m.UTF8, m.Data)
			}
			// Compressed: the plain text is megabytes; zcat reads it.
			path := filepath.Join("testdata", "golden", g.name+".txt.gz")
			if *update {
				var z bytes.Buffer
				zw := gzip.NewWriter(&z)
				zw.Write(out.Bytes())
				zw.Close()
				os.MkdirAll(filepath.Dir(path), 0o755)
				if err := os.WriteFile(path, z.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			zr, err := gzip.NewReader(f)
			if err != nil {
				t.Fatal(err)
			}
			want, err := io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
			if got := out.Bytes(); !bytes.Equal(got, want) {
				gl, wl := bytes.Split(got, []byte("\n")), bytes.Split(want, []byte("\n"))
				for i := range min(len(gl), len(wl)) {
					if !bytes.Equal(gl[i], wl[i]) {
						t.Fatalf("%s line %d:\ngot  %q\nwant %q", path, i+1, gl[i], wl[i])
					}
				}
				t.Fatalf("%s: got %d lines, want %d", path, len(gl), len(wl))
			}
		})
	}
}

// TestRenderConcurrent renders the golden rows on several goroutines at
// once and expects each message as rendered alone: Render reuses working
// memory between calls, and no call may see another's. Run it with -race.
func TestRenderConcurrent(t *testing.T) {
	g := goldenTemplates[2] // constant headers, Cc from a column, unsubscribe
	opts := g.opts
	opts.Now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	opts.MessageID = func(row int) string { return fmt.Sprintf("<row%d@test.example>", row) }
	p := filepath.Join(t.TempDir(), "c.tmpl")
	if err := os.WriteFile(p, []byte(g.text), 0o600); err != nil {
		t.Fatal(err)
	}
	tp, err := ParseTemplate(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Bind("golden.csv", goldenHeader); err != nil {
		t.Fatal(err)
	}
	rows := goldenRows()
	render := func(i int) string {
		rec := recipient(rows[i]...)
		rec.Row = i + 2
		m, err := tp.Render(rec)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%q %q %s", m.From, m.To, m.Data)
	}
	want := make([]string, len(rows))
	for i := range rows {
		want[i] = render(i)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for k := range rows {
				i := (k*7 + w*13) % len(rows)
				if got := render(i); got != want[i] {
					t.Errorf("row %d rendered alongside others:\ngot  %q\nwant %q", i+2, got, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestDataReuse fills one reused dot from rows of every length, in an
// order that goes from full to short and back, and expects each time what
// a fresh map would hold.
func TestDataReuse(t *testing.T) {
	header := []string{"email", "Name", "x", "x", "", "city"}
	alias := map[string]int{"email": 0, "name": 1, "NAME": 1, "City": 5}
	tp := &Template{header: header, alias: alias, dot: dotKeys(header, alias)}
	sc := &scratch{data: map[string]string{}}
	for _, n := range []int{6, 6, 2, 6, 0, 3, 6, 7, 1, 6} {
		values := []string{"a@x.org", "Ann", "x1", "x2", "blank", "Rome", "extra"}[:n]
		got := tp.data(sc, values)
		if want := refData(header, alias, values); !reflect.DeepEqual(got, want) {
			t.Fatalf("row of %d values: got %v, want %v", n, got, want)
		}
	}
}

// TestScratchDate expects the reused Date text to be what Format gives,
// across seconds, zones and a return to an earlier second.
func TestScratchDate(t *testing.T) {
	sc := &scratch{}
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	berlin := time.FixedZone("CET", 3600)
	for _, now := range []time.Time{
		base, base.Add(300 * time.Millisecond), base.Add(time.Second), base.In(berlin), base.In(berlin).Add(time.Millisecond),
		base, base.Add(-time.Nanosecond), time.Now(), time.Now().Local(),
	} {
		if got, want := sc.date(now), now.Format(time.RFC1123Z); got != want {
			t.Fatalf("date(%v) got %q, want %q", now, got, want)
		}
	}
}
