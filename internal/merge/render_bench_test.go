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
