package merge

import (
	"fmt"
	htmltemplate "html/template"
	"net/url"
	"os"
	"regexp"
	"strings"
	"text/template/parse"
)

// cidRE finds the cid: URLs (RFC 2392) an HTML part references: in a src or
// background attribute, or in a CSS url(). The name runs to the closing
// quote (or its character reference, as in a style attribute), parenthesis,
// white space, '>' or '&'.
var cidRE = regexp.MustCompile(`(?i)(?:\b(?:src|background)\s*=\s*["']?|\burl\(\s*(?:["']|&quot;|&#34;|&#39;|&apos;)?)cid:([^"'()\s>&]*)`)

// maxCID bounds a Content-ID, so the part's header line stays short.
const maxCID = 200

// cidName decodes a cid URL's name (URL escapes, RFC 2392) and checks that it can go in a Content-ID unquoted: letters,
// digits and ".-_+@" only, so a value cannot close the angle brackets or
// start a new header line.
func cidName(raw string) (string, error) {
	name, err := url.PathUnescape(raw)
	if err != nil || !validCID(name) {
		return "", wrapf(ErrRender, "html: cid:%q is not a usable Content-ID (want letters, digits and \".-_+@\")", raw)
	}
	return name, nil
}

func validCID(s string) bool {
	if s == "" || len(s) > maxCID || strings.Trim(s, ".") == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(".-_+@", c) >= 0) {
			return false
		}
	}
	return true
}

// cidNames returns the distinct cid names a rendered HTML part references,
// decoded, in order of first reference; an unusable one is an ErrRender.
func cidNames(html []byte) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for _, m := range cidRE.FindAllSubmatch(html, -1) {
		name, err := cidName(string(m[1]))
		if err != nil {
			return nil, err
		}
		if !seen[name] {
			seen[name] = true
			names = append(names, name)
		}
	}
	return names, nil
}

// inlineParts resolves each cid the rendered HTML references: to the row's
// file of exactly that base name, else to InlineDir/NAME. It returns the
// inline parts, in order of first reference, and the row's files no cid
// referenced, which stay attachments. An unresolved cid, or one that two of
// the row's files match, is an ErrAttachment.
func (t *Template) inlineParts(html []byte, files []file) (inline []part, rest []file, err error) {
	names, err := cidNames(html)
	if err != nil || len(names) == 0 {
		return nil, files, err
	}
	used := make([]bool, len(files))
	var root *os.Root
	defer func() {
		if root != nil {
			root.Close()
		}
	}()
	for _, name := range names {
		idx := -1
		for i, f := range files {
			if f.name != name {
				continue
			}
			if idx >= 0 {
				return nil, nil, wrapf(ErrAttachment, "html references cid:%s, and the row has two attachments named %s", name, name)
			}
			idx = i
		}
		if idx >= 0 {
			used[idx] = true
			inline = append(inline, files[idx].part("inline", name))
			continue
		}
		if t.opts.InlineDir == "" {
			return nil, nil, wrapf(ErrAttachment, "html references cid:%s, which is neither an attachment of this row nor in an inline folder (none is set)", name)
		}
		if root == nil {
			if root, err = os.OpenRoot(t.opts.InlineDir); err != nil {
				return nil, nil, wrapf(ErrAttachment, "html references cid:%s: inline folder: %v", name, err)
			}
		}
		data, err := readFile(root, name)
		if err != nil {
			return nil, nil, wrapf(ErrAttachment, "html references cid:%s, which is neither an attachment of this row nor in the inline folder: %v", name, err)
		}
		inline = append(inline, file{name: name, data: data}.part("inline", name))
	}
	for i, f := range files {
		if !used[i] {
			rest = append(rest, f)
		}
	}
	return inline, rest, nil
}

// checkInline fails before anything is sent on an inline folder that cannot
// be used, and on a cid written literally in the HTML template that no row
// could supply: unusable as a Content-ID, or, with no attachment column, not
// a file in InlineDir. A cid built from a row's values is checked per row.
func checkInline(opts TemplateOptions, h *htmltemplate.Template) error {
	var root *os.Root
	if opts.InlineDir != "" {
		if h == nil {
			return fmt.Errorf("merge: inline folder %s needs an HTML template", opts.InlineDir)
		}
		r, err := os.OpenRoot(opts.InlineDir)
		if err != nil {
			return fmt.Errorf("merge: inline folder: %w", err)
		}
		defer r.Close()
		root = r
	}
	if h == nil {
		return nil
	}
	for _, raw := range literalCIDs(h.Tree) {
		name, err := cidName(raw)
		if err != nil {
			return fmt.Errorf("merge: %s: %w", h.Name(), err)
		}
		if opts.AttachColumn != "" {
			continue
		}
		if root == nil {
			return fmt.Errorf("merge: %s references cid:%s, but there is no attachment column or inline folder to find it in", h.Name(), name)
		}
		if fi, err := root.Stat(name); err != nil {
			return fmt.Errorf("merge: %s references cid:%s: %w", h.Name(), name, err)
		} else if !fi.Mode().IsRegular() {
			return fmt.Errorf("merge: %s references cid:%s, which is not a file in %s", h.Name(), name, opts.InlineDir)
		}
	}
	return nil
}

// literalCIDs returns the raw cid names written wholly in the template's
// text, not those that an action completes ("cid:{{.img}}").
func literalCIDs(tr *parse.Tree) []string {
	var out []string
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.TextNode:
			s := string(n.Text)
			for _, m := range cidRE.FindAllStringSubmatchIndex(s, -1) {
				if end := m[3]; end < len(s) {
					out = append(out, s[m[2]:end])
				}
			}
		case *parse.IfNode:
			walk(n.List)
			walk(n.ElseList)
		case *parse.RangeNode:
			walk(n.List)
			walk(n.ElseList)
		case *parse.WithNode:
			walk(n.List)
			walk(n.ElseList)
		}
	}
	if tr != nil {
		walk(tr.Root)
	}
	return out
}
