package merge

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkRender renders rows like the root BenchmarkMerge's, without
// reading a list, for two header shapes: To as "name <{{.email}}>" (one
// mailbox, taken apart without net/mail) and To as a bare "{{.email}}"
// (parsed as an address list and checked against a stand-in rendering).
func BenchmarkRender(b *testing.B) {
	body := strings.Repeat("Dear {{.first_name}}, this line of the body is about sixty octets.\n", 12)
	for _, c := range []struct{ name, to string }{
		{"mailbox", "{{.first_name}} {{.last_name}} <{{.email}}>"},
		{"bare", "{{.email}}"},
	} {
		b.Run(c.name, func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "t.tmpl")
			src := "From: Example Co <billing@example.com>\nTo: " + c.to + "\nReply-To: support@example.com\n" +
				"Subject: Your {{.plan}} plan\n\n" + body
			if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
				b.Fatal(err)
			}
			tp, err := ParseTemplate(p, TemplateOptions{})
			if err != nil {
				b.Fatal(err)
			}
			header := []string{"email", "first_name", "last_name", "plan"}
			if err := tp.Bind("l.csv", header); err != nil {
				b.Fatal(err)
			}
			recs := make([]Recipient, 1000)
			for i := range recs {
				recs[i] = recipient(fmt.Sprintf("user%07d@example.org", i), []string{"Ada", "Zoë"}[i%2], "Lovelace", "pro")
			}
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := tp.Render(recs[i%len(recs)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkBody normalises and encodes a 1 KB body as Render does, beside
// the encoders as they were (ref_test.go), for an ASCII body (7bit) and
// one with a name in Latin-1 letters (quoted-printable).
func BenchmarkBody(b *testing.B) {
	line := "thank you for being a customer of Example Co. This is a reminder,\n"
	for _, c := range []struct{ name, text string }{
		{"7bit", "Dear Ada Lovelace,\n\n" + strings.Repeat(line, 14)},
		{"qp", "Dear Zoë Müller,\n\n" + strings.Repeat(line, 14)},
	} {
		raw := []byte(c.text)
		b.Run(c.name+"/ref", func(b *testing.B) {
			for b.Loop() {
				refEncodeBody(refNormalizeText(raw))
			}
		})
		b.Run(c.name+"/new", func(b *testing.B) {
			var sc scratch
			sc.exec.Write(raw)
			for b.Loop() {
				sc.textPart("text/plain")
			}
		})
	}
}
