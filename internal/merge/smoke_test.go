package merge

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSmoke(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "r.csv")
	tmpl := filepath.Join(dir, "w.tmpl")
	os.WriteFile(list, []byte("email,name\na@example.org,Ann\n"), 0o600)
	os.WriteFile(tmpl, []byte("From: Me <me@example.org>\nTo: {{.name}} <{{.email}}>\nSubject: Hi {{.name}}\n\nHello {{.name}}\n"), 0o600)
	l, err := OpenList(list, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	tp, err := ParseTemplate(tmpl, TemplateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tp.Bind(list, l.Header()); err != nil {
		t.Fatal(err)
	}
	rec, err := l.Next()
	if err != nil {
		t.Fatal(err)
	}
	m, err := tp.Render(rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v\n%s", m, m.Data)
}
