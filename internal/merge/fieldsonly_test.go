package merge

import (
	"bytes"
	"testing"
)

var fieldsOnlySeeds = []struct {
	text   string
	simple bool // compiles to fieldsOnly
}{
	{"Hello {{.name}},\n", true},
	{"{{.a}}{{.b}} and {{.a}}", true},
	{"no actions at all", true},
	{"", true},
	{"{{- .a -}} trimmed {{ .b }}", true},
	{"{{/* a comment */}}{{.a}}", true},
	{"{{define \"x\"}}y{{end}}{{.a}}", true}, // the main tree is text and a field
	{"{{.a.b}}", false},
	{"{{.}}", false},
	{"{{if .a}}x{{end}}", false},
	{"{{.a | printf \"%q\"}}", false},
	{"{{printf \"%s\" .a}}", false},
	{"{{$x := .a}}{{$x}}", false},
	{"{{template \"x\" .}}{{define \"x\"}}{{.a}}{{end}}", false},
	{"{{range .a}}{{end}}", false},
	{"{{\"literal\"}}", false},
}

// TestFieldsOnly checks which templates take the fast path, and that each
// writes what Execute writes, a missing column included (the error is
// Execute's own).
func TestFieldsOnly(t *testing.T) {
	data := map[string]string{"name": "Zoë <z@example.org>", "a": "A{{.b}}", "b": "%s\n"}
	for _, tc := range fieldsOnlySeeds {
		tm, err := newText("t").Parse(tc.text)
		if err != nil {
			t.Fatalf("%q: %v", tc.text, err)
		}
		f := compileFieldsOnly(tm)
		if got := f != nil; got != tc.simple {
			t.Errorf("%q: fast path %v, want %v", tc.text, got, tc.simple)
		}
		checkFieldsOnly(t, tc.text, data)
		checkFieldsOnly(t, tc.text, map[string]string{}) // every column missing
	}
}

func FuzzFieldsOnly(f *testing.F) {
	for _, tc := range fieldsOnlySeeds {
		f.Add(tc.text, "a", "x", "name", "y")
	}
	f.Fuzz(func(t *testing.T, text, k1, v1, k2, v2 string) {
		checkFieldsOnly(t, text, map[string]string{k1: v1, k2: v2})
	})
}

// checkFieldsOnly runs text both ways after some earlier output in the
// buffer, as Render's scratch buffer may hold, and compares.
func checkFieldsOnly(t *testing.T, text string, data map[string]string) {
	t.Helper()
	tm, err := newText("t").Parse(text)
	if err != nil {
		return
	}
	var fast, slow bytes.Buffer
	fast.WriteString("before|")
	slow.WriteString("before|")
	ferr := compileFieldsOnly(tm).execute(tm, &fast, data)
	serr := tm.Execute(&slow, data)
	switch {
	case (ferr == nil) != (serr == nil):
		t.Fatalf("%q with %q: error %v, Execute's %v", text, data, ferr, serr)
	case ferr != nil && ferr.Error() != serr.Error():
		t.Fatalf("%q with %q: error %q, Execute's %q", text, data, ferr, serr)
	case ferr == nil && fast.String() != slow.String():
		t.Fatalf("%q with %q: wrote %q, Execute wrote %q", text, data, fast.String(), slow.String())
	}
}
