package merge

import (
	"archive/zip"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// rawWorkbook writes a zip with the given parts, in order.
func rawWorkbook(t testing.TB, parts [][2]string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range parts {
		w, err := zw.Create(p[0])
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(p[1]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "raw.xlsx")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const rawPkgRels = `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>`

func rawSheetXML(rows ...[]string) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>`)
	for i, r := range rows {
		fmt.Fprintf(&b, `<row r="%d">`, i+1)
		for j, v := range r {
			fmt.Fprintf(&b, `<c r="%c%d" t="inlineStr"><is><t>%s</t></is></c>`, 'A'+j, i+1, v)
		}
		b.WriteString(`</row>`)
	}
	b.WriteString(`</sheetData></worksheet>`)
	return b.String()
}

// twoSheets is a workbook with two sheets named a and b, in that order.
func twoSheets(t testing.TB, a, b string) string {
	wb := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>` +
		`<sheet name="` + a + `" sheetId="1" r:id="rId1"/><sheet name="` + b + `" sheetId="2" r:id="rId2"/></sheets></workbook>`
	rels := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">` +
		`<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/>` +
		`<Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet2.xml"/></Relationships>`
	return rawWorkbook(t, [][2]string{
		{"_rels/.rels", rawPkgRels},
		{"xl/workbook.xml", wb},
		{"xl/_rels/workbook.xml.rels", rels},
		{"xl/worksheets/sheet1.xml", rawSheetXML([]string{"email", "from"}, []string{"first@example.org", "sheet " + a})},
		{"xl/worksheets/sheet2.xml", rawSheetXML([]string{"email", "from"}, []string{"second@example.org", "sheet " + b})},
	})
}

// TestReviewLateFoldedSheetNames: sheet names that strings.EqualFold
// (excelize's getSheetXMLPath) takes as equal but strings.ToLower does not.
// excelize reads whichever of the two sheets its map iteration meets first,
// so the fast reader must decline such a workbook (foldKey), as it does for
// names that differ in ASCII case. (From a review of the fast reader.)
func TestReviewLateFoldedSheetNames(t *testing.T) {
	for _, pair := range [][2]string{{"ς", "Σ"}, {"ſ", "S"}} {
		for _, want := range []string{"", pair[1]} {
			t.Run(pair[0]+pair[1]+"/sheet="+want, func(t *testing.T) {
				p := twoSheets(t, pair[0], pair[1])
				fast, usedFast := readList(t, p, ListOptions{Sheet: want}, true, defaultLimits)
				if !usedFast {
					t.Skip("fast reader declined: no difference possible")
				}
				differ := 0
				var slow listResult
				for range 40 {
					got, _ := readList(t, p, ListOptions{Sheet: want}, false, defaultLimits)
					if !reflect.DeepEqual(fast, got) {
						differ++
						slow = got
					}
				}
				if differ > 0 {
					t.Errorf("fast reader used and differs from excelize in %d of 40 reads\nfast:     %q\nexcelize: %q", differ, fast.Rows, slow.Rows)
				}
			})
		}
	}
}

// bigSheet is one sheet of n rows whose note cells are pad bytes long.
func bigSheet(t testing.TB, n, pad int) string {
	var b strings.Builder
	b.WriteString(`<?xml version="1.0" encoding="UTF-8" standalone="yes"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>`)
	b.WriteString(`<row r="1"><c r="A1" t="inlineStr"><is><t>email</t></is></c><c r="B1" t="inlineStr"><is><t>note</t></is></c></row>`)
	note := strings.Repeat("n", pad)
	for i := 2; i <= n+1; i++ {
		fmt.Fprintf(&b, `<row r="%d"><c r="A%d" t="inlineStr"><is><t>u%d@example.org</t></is></c><c r="B%d" t="inlineStr"><is><t>%s</t></is></c><c r="C%d"><v>%d</v></c></row>`, i, i, i, i, note, i, i)
	}
	b.WriteString(`</sheetData></worksheet>`)
	wb := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>`
	rels := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`
	return rawWorkbook(t, [][2]string{{"_rels/.rels", rawPkgRels}, {"xl/workbook.xml", wb}, {"xl/_rels/workbook.xml.rels", rels}, {"xl/worksheets/sheet1.xml", b.String()}})
}

// TestReviewLateBigSheets: sheets over the 16 MiB part limit, with the
// decoded rows within it (kept) and past it (second pass), read with the
// real limits by both paths; the fast path leaves no temporary file.
func TestReviewLateBigSheets(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("reads over 100 MB of XML: not with -short or -race")
	}
	for _, tc := range []struct {
		name   string
		n, pad int
		store  bool
	}{{"xml past limit, rows kept", 95000, 60, true}, {"rows past limit, streamed", 90000, 200, false}} {
		t.Run(tc.name, func(t *testing.T) {
			p := bigSheet(t, tc.n, tc.pad)
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			x, err := openXLSXFast(p, "", defaultLimits)
			if err != nil {
				t.Fatal(err)
			}
			if (x.store != nil) != tc.store {
				t.Errorf("store kept: %v, want %v", x.store != nil, tc.store)
			}
			x.Close()
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("fast path left %d temp files", len(ents))
			}
			if !compareReaders(t, p, ListOptions{}) {
				t.Error("fast reader not used")
			}
			if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
				t.Errorf("%d temp files left after both readers closed", len(ents))
			}
		})
	}
}

// TestReviewLateOddPackages: hand-made packages; each must read the same
// through both paths (or be declined).
func TestReviewLateOddPackages(t *testing.T) {
	sheet := rawSheetXML([]string{"email", "n"}, []string{"a@example.org", "1"})
	sheet2 := rawSheetXML([]string{"email", "n"}, []string{"b@example.org", "2"})
	wb := func(sheets string) string {
		return `<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>` + sheets + `</sheets></workbook>`
	}
	rel := func(id, target string) string {
		return `<Relationship Id="` + id + `" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="` + target + `"/>`
	}
	rels := func(r ...string) string {
		return `<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">` + strings.Join(r, "") + `</Relationships>`
	}
	pkg := func(target string) string {
		return `<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="` + target + `"/></Relationships>`
	}
	cases := map[string][][2]string{
		"sheet referenced twice": {{"_rels/.rels", rawPkgRels}, {"xl/workbook.xml", wb(`<sheet name="A" sheetId="1" r:id="rId1"/><sheet name="B" sheetId="2" r:id="rId2"/>`)},
			{"xl/_rels/workbook.xml.rels", rels(rel("rId1", "worksheets/sheet1.xml"), rel("rId2", "/xl/worksheets/sheet1.xml"))}, {"xl/worksheets/sheet1.xml", sheet}},
		"workbook in a subfolder, absolute": {{"_rels/.rels", pkg("/wb/book.xml")}, {"wb/book.xml", wb(`<sheet name="A" sheetId="1" r:id="rId1"/>`)},
			{"wb/_rels/book.xml.rels", rels(rel("rId1", "../data/s.xml"))}, {"data/s.xml", sheet}},
		"workbook at the root": {{"_rels/.rels", pkg("book.xml")}, {"book.xml", wb(`<sheet name="A" sheetId="1" r:id="rId1"/>`)},
			{"_rels/book.xml.rels", rels(rel("rId1", "s.xml"))}, {"s.xml", sheet}},
		"duplicate rel ids": {{"_rels/.rels", rawPkgRels}, {"xl/workbook.xml", wb(`<sheet name="A" sheetId="1" r:id="rId1"/>`)},
			{"xl/_rels/workbook.xml.rels", rels(rel("rId1", "worksheets/sheet1.xml"), rel("rId1", "worksheets/sheet2.xml"))}, {"xl/worksheets/sheet1.xml", sheet}, {"xl/worksheets/sheet2.xml", sheet2}},
		"backslash zip names": {{"_rels\\.rels", rawPkgRels}, {"xl\\workbook.xml", wb(`<sheet name="A" sheetId="1" r:id="rId1"/>`)},
			{"xl\\_rels\\workbook.xml.rels", rels(rel("rId1", "worksheets/sheet1.xml"))}, {"xl\\worksheets\\sheet1.xml", sheet}},
		"upper-case shared strings name": {{"_rels/.rels", rawPkgRels}, {"xl/workbook.xml", wb(`<sheet name="A" sheetId="1" r:id="rId1"/>`)},
			{"xl/_rels/workbook.xml.rels", rels(rel("rId1", "worksheets/sheet1.xml"))},
			{"XL/SHAREDSTRINGS.XML", `<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><si><t>a@example.org</t></si><si><t>email</t></si></sst>`},
			{"xl/worksheets/sheet1.xml", `<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData><row r="1"><c r="A1" t="s"><v>1</v></c></row><row r="2"><c r="A2" t="s"><v>0</v></c></row></sheetData></worksheet>`}},
		"rows after sheetData": {{"_rels/.rels", rawPkgRels}, {"xl/workbook.xml", wb(`<sheet name="A" sheetId="1" r:id="rId1"/>`)},
			{"xl/_rels/workbook.xml.rels", rels(rel("rId1", "worksheets/sheet1.xml"))},
			{"xl/worksheets/sheet1.xml", strings.Replace(sheet, "</worksheet>", `<x:row xmlns:x="urn:x" r="9"><c r="A9" t="inlineStr"><is><t>z@example.org</t></is></c></x:row></worksheet>`, 1)}},
		"directory entries": {{"xl/", ""}, {"_rels/.rels", rawPkgRels}, {"xl/workbook.xml", wb(`<sheet name="A" sheetId="1" r:id="rId1"/>`)},
			{"xl/_rels/workbook.xml.rels", rels(rel("rId1", "worksheets/sheet1.xml"))}, {"xl/worksheets/", ""}, {"xl/worksheets/sheet1.xml", sheet}},
	}
	for name, parts := range cases {
		t.Run(name, func(t *testing.T) {
			p := rawWorkbook(t, parts)
			for _, s := range []string{"", "2", "B"} {
				t.Logf("sheet %q: fast used %v", s, compareReaders(t, p, ListOptions{Sheet: s}))
			}
		})
	}
}
