package merge

import (
	"bytes"
	"text/template"
	"text/template/parse"
)

// fieldsOnly runs a template made of nothing but text and {{.column}}
// actions, which is what most mail-merge templates are, without
// text/template's reflection: every {{.column}} cost a reflect lookup, an
// allocation and an fmt.Fprint, and template execution was half of merging
// a row. It walks the tree text/template itself parsed, so what it writes
// is what Execute would write; anything else in a template (pipelines,
// functions, if, range, chained fields) leaves it nil and Execute runs.
type fieldsOnly []fieldsOnlyPart

type fieldsOnlyPart struct {
	text   string // written as is when column is ""
	column string
}

// compileFieldsOnly returns t's fieldsOnly form, or nil if t holds more
// than text and single-field actions.
func compileFieldsOnly(t *template.Template) fieldsOnly {
	if t == nil || t.Tree == nil || t.Tree.Root == nil {
		return nil
	}
	parts := fieldsOnly{}
	for _, n := range t.Tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			parts = append(parts, fieldsOnlyPart{text: string(n.Text)})
		case *parse.ActionNode:
			p := n.Pipe
			if p == nil || len(p.Decl) > 0 || p.IsAssign || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
				return nil
			}
			f, ok := p.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok || len(f.Ident) != 1 {
				return nil
			}
			parts = append(parts, fieldsOnlyPart{column: f.Ident[0]})
		default:
			return nil
		}
	}
	return parts
}

// exec appends the template's output for data to w and reports true, or
// leaves w as it was and reports false when a column is missing, so that
// Execute gives the error (missingkey=error) in its own words.
func (f fieldsOnly) exec(w *bytes.Buffer, data map[string]string) bool {
	start := w.Len()
	for _, p := range f {
		if p.column == "" {
			w.WriteString(p.text)
			continue
		}
		v, ok := data[p.column]
		if !ok {
			w.Truncate(start)
			return false
		}
		w.WriteString(v)
	}
	return true
}

// execute runs t for data into w, through f when t compiled to it.
func (f fieldsOnly) execute(t *template.Template, w *bytes.Buffer, data map[string]string) error {
	if f != nil && f.exec(w, data) {
		return nil
	}
	return t.Execute(w, data)
}
