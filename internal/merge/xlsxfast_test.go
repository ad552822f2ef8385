package merge

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
)

// listResult is everything a caller can see of a list.
type listResult struct {
	OpenErr string
	Header  []string
	Rows    []string // one line per Next call: record, error, warning
}

func readList(t testing.TB, path string, opts ListOptions, fast bool) (listResult, bool) {
	t.Helper()
	var res listResult
	l, err := openList(path, opts, fast)
	if err != nil {
		res.OpenErr = err.Error()
		return res, false
	}
	defer l.Close()
	res.Header = l.Header()
	for i := 0; i < 100000; i++ {
		rec, err := l.Next()
		if err == io.EOF {
			return res, l.xlsxFast
		}
		var w string
		if l.Warning() != nil {
			w = l.Warning().Error()
		}
		res.Rows = append(res.Rows, fmt.Sprintf("%+v err=%v warn=%s", rec, err, w))
		if err != nil {
			if _, ok := err.(*RowError); !ok {
				return res, l.xlsxFast
			}
		}
	}
	t.Fatal("Next never returned io.EOF")
	return res, false
}

// compareReaders reads path with both readers and fails on any
// difference; it returns whether the fast reader was used.
func compareReaders(t testing.TB, path string, opts ListOptions) bool {
	t.Helper()
	slow, usedFast := readList(t, path, opts, false)
	if usedFast {
		t.Fatal("excelize-only read used the fast reader")
	}
	got, usedFast := readList(t, path, opts, true)
	if !reflect.DeepEqual(got, slow) {
		t.Errorf("fast reader (used: %v) differs from excelize\n got: %q\nwant: %q", usedFast, got, slow)
	}
	return usedFast
}

type cellSet struct {
	sheet, cell string
	value       any
	style       *excelize.Style
	formula     string
	inline      bool // written by the stream writer as an inline string
}

func buildWorkbook(t testing.TB, sheets []string, cells []cellSet) string {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
	for i, s := range sheets {
		if i == 0 {
			if err := f.SetSheetName("Sheet1", s); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := f.NewSheet(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cells {
		if c.formula != "" {
			if err := f.SetCellFormula(c.sheet, c.cell, c.formula); err != nil {
				t.Fatal(err)
			}
		}
		if c.value != nil {
			if err := f.SetCellValue(c.sheet, c.cell, c.value); err != nil {
				t.Fatal(err)
			}
		}
		if c.formula != "" {
			if err := f.SetCellFormula(c.sheet, c.cell, c.formula); err != nil {
				t.Fatal(err)
			}
		}
		if c.style != nil {
			id, err := f.NewStyle(c.style)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.SetCellStyle(c.sheet, c.cell, c.cell, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	p := filepath.Join(t.TempDir(), "list.xlsx")
	if err := f.SaveAs(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// rowCells is a header and rows starting at A1 on sheet.
func rowCells(sheet string, rows ...[]any) []cellSet {
	var out []cellSet
	for r, row := range rows {
		for c, v := range row {
			if v == nil {
				continue
			}
			name, _ := excelize.CoordinatesToCellName(c+1, r+1)
			out = append(out, cellSet{sheet: sheet, cell: name, value: v})
		}
	}
	return out
}

// streamWorkbook writes rows with the stream writer, which stores strings
// inline (t="inlineStr").
func streamWorkbook(t testing.TB, rows ...[]any) string {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
	sw, err := f.NewStreamWriter("Sheet1")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range rows {
		if r == nil {
			continue
		}
		if err := sw.SetRow(fmt.Sprintf("A%d", i+1), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Flush(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "stream.xlsx")
	if err := f.SaveAs(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// rewriteSheet replaces the XML of one part of a workbook.
func rewriteSheet(t testing.TB, src, part string, edit func([]byte) []byte) string {
	t.Helper()
	zr, err := zip.OpenReader(src)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if f.Name == part {
			data = edit(data)
		}
		w, err := zw.Create(f.Name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "edited.xlsx")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestXLSXFastMatchesExcelize(t *testing.T) {
	header := []any{"email", "name", "note"}
	bold := &excelize.Style{Font: &excelize.Font{Bold: true}}
	date := &excelize.Style{NumFmt: 14}
	tests := []struct {
		name     string
		path     func(t *testing.T) string
		opts     ListOptions
		wantFast bool
	}{
		{"shared strings", func(t *testing.T) string {
			return buildWorkbook(t, []string{"S"}, rowCells("S", header,
				[]any{"a@example.org", "Ann", "x"}, []any{"b@example.org", "Bob", "x"}))
		}, ListOptions{}, true},
		{"inline strings", func(t *testing.T) string {
			return streamWorkbook(t, header, []any{"a@example.org", "Zoë", " padded  "}, nil, []any{"b@example.org", "", "tail"})
		}, ListOptions{}, true},
		{"numbers and booleans", func(t *testing.T) string {
			return buildWorkbook(t, []string{"S"}, rowCells("S", header,
				[]any{"a@example.org", 42, -3.25}, []any{"b@example.org", 1e21, 12345678901234567890.0},
				[]any{"c@example.org", true, false}, []any{"d@example.org", 0.1 + 0.2, 1.5e-10},
				[]any{"e@example.org", 9007199254740993, -0.0}))
		}, ListOptions{}, true},
		{"entities, non-ASCII, spaces", func(t *testing.T) string {
			return buildWorkbook(t, []string{"S"}, rowCells("S", header,
				[]any{"a@example.org", `<Tom & "Jerry's">`, "  lead and trail  "},
				[]any{"b@example.org", "张伟 Müller 🎉", "line1\nline2\r\nline3"},
				[]any{"c@example.org", "tab\there", "\u00a0nbsp\u00a0"}))
		}, ListOptions{}, true},
		{"formula results", func(t *testing.T) string {
			cells := rowCells("S", header, []any{"a@example.org", "Ann"}, []any{"b@example.org", "Bob"})
			cells = append(cells,
				cellSet{sheet: "S", cell: "C2", formula: `"x"&B2`, value: "xAnn"},
				cellSet{sheet: "S", cell: "C3", formula: "1+1"})
			return buildWorkbook(t, []string{"S"}, cells)
		}, ListOptions{}, true},
		{"formula str result", func(t *testing.T) string {
			p := buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", "Ann", "n"}))
			return rewriteSheet(t, p, "xl/worksheets/sheet1.xml", func(b []byte) []byte {
				return bytes.Replace(b, []byte(`</row></sheetData>`),
					[]byte(`</row><row r="3"><c r="A3" t="str"><f>LOWER("B@X.ORG")</f><v>b@x.org</v></c><c r="C3"><f t="shared" ref="C3:C4" si="0">1+1</f><v>2</v></c></row><row r="4"><c r="A4" t="str"><v>c@x.org</v></c><c r="C4"><f t="shared" si="0"/><v>2</v></c><c r="D4"><f/></c></row></sheetData>`), 1)
			})
		}, ListOptions{}, true},
		{"dates take excelize", func(t *testing.T) string {
			cells := rowCells("S", header, []any{"a@example.org", "Ann"})
			cells = append(cells, cellSet{sheet: "S", cell: "C2", value: 45292, style: date})
			return buildWorkbook(t, []string{"S"}, cells)
		}, ListOptions{}, false},
		{"bold text stays fast", func(t *testing.T) string {
			cells := rowCells("S", header, []any{"a@example.org", "Ann"})
			cells = append(cells, cellSet{sheet: "S", cell: "A1", value: "email", style: bold},
				cellSet{sheet: "S", cell: "C2", value: "bold 0.1", style: bold})
			return buildWorkbook(t, []string{"S"}, cells)
		}, ListOptions{}, true},
		{"bold number takes excelize", func(t *testing.T) string {
			cells := rowCells("S", header, []any{"a@example.org", "Ann"})
			cells = append(cells, cellSet{sheet: "S", cell: "C2", value: 1.23456789012345, style: bold})
			return buildWorkbook(t, []string{"S"}, cells)
		}, ListOptions{}, false},
		{"rich text takes excelize", func(t *testing.T) string {
			p := buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", "Ann"}))
			f, err := excelize.OpenFile(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.SetCellRichText("S", "C2", []excelize.RichTextRun{{Text: "rich "}, {Text: "text", Font: &excelize.Font{Bold: true}}}); err != nil {
				t.Fatal(err)
			}
			if err := f.Save(); err != nil {
				t.Fatal(err)
			}
			return p
		}, ListOptions{}, false},
		{"preserved space in shared string", func(t *testing.T) string {
			p := buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", " Ann "}))
			return p
		}, ListOptions{}, true},
		{"missing cells, rows and ragged rows", func(t *testing.T) string {
			return buildWorkbook(t, []string{"S"}, rowCells("S", header,
				[]any{"a@example.org", nil, "gap in the middle"},
				nil,
				[]any{"b@example.org"},
				[]any{"c@example.org", "Cy", "x", nil, "surplus"},
				[]any{nil, nil, nil},
				[]any{"not-an-address", "Eve"},
				[]any{"d@example.org", "Di", "x", "", ""}))
		}, ListOptions{}, true},
		{"header only", func(t *testing.T) string {
			return buildWorkbook(t, []string{"S"}, rowCells("S", header))
		}, ListOptions{}, true},
		{"no email column", func(t *testing.T) string {
			return buildWorkbook(t, []string{"S"}, rowCells("S", []any{"name"}, []any{"Ann"}))
		}, ListOptions{}, false}, // OpenList fails, with the same error
		{"empty first sheet", func(t *testing.T) string {
			return buildWorkbook(t, []string{"Empty", "Data", "More"}, append(
				rowCells("Data", header, []any{"a@example.org", "Ann"}),
				rowCells("More", []any{"email"}, []any{"m@example.org"})...))
		}, ListOptions{}, true},
		{"sheet by name", func(t *testing.T) string {
			return buildWorkbook(t, []string{"Empty", "Data", "More"}, append(
				rowCells("Data", header, []any{"a@example.org", "Ann"}),
				rowCells("More", []any{"email"}, []any{"m@example.org"})...))
		}, ListOptions{Sheet: "more"}, true},
		{"sheet by index", func(t *testing.T) string {
			return buildWorkbook(t, []string{"Empty", "Data", "More"}, append(
				rowCells("Data", header, []any{"a@example.org", "Ann"}),
				rowCells("More", []any{"email"}, []any{"m@example.org"})...))
		}, ListOptions{Sheet: "3"}, true},
		{"unknown sheet", func(t *testing.T) string {
			return buildWorkbook(t, []string{"Data"}, rowCells("Data", header))
		}, ListOptions{Sheet: "Nope"}, false},
		{"all sheets empty", func(t *testing.T) string {
			return buildWorkbook(t, []string{"A", "B"}, nil)
		}, ListOptions{}, false}, // OpenList fails, with the same error
		{"header below blank rows", func(t *testing.T) string {
			return buildWorkbook(t, []string{"S"}, rowCells("S", nil, []any{"", " "}, header, []any{"a@example.org"}))
		}, ListOptions{}, true},
		{"bstr escape takes excelize", func(t *testing.T) string {
			return buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", "a_x0041_b"}))
		}, ListOptions{}, false},
		{"rows without r", func(t *testing.T) string {
			p := buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", "Ann"}, nil, []any{"b@example.org"}))
			return rewriteSheet(t, p, "xl/worksheets/sheet1.xml", func(b []byte) []byte {
				b = bytes.ReplaceAll(b, []byte(`<row r="2"`), []byte(`<row`))
				return bytes.ReplaceAll(b, []byte(` r="A2"`), nil)
			})
		}, ListOptions{}, true},
		{"rows out of order take excelize", func(t *testing.T) string {
			p := buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", "Ann"}))
			return rewriteSheet(t, p, "xl/worksheets/sheet1.xml", func(b []byte) []byte {
				return bytes.Replace(b, []byte(`</sheetData>`), []byte(`<row r="1"><c r="D1" t="inlineStr"><is><t>x</t></is></c></row></sheetData>`), 1)
			})
		}, ListOptions{}, false},
		{"comment takes excelize", func(t *testing.T) string {
			p := buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", "Ann"}))
			return rewriteSheet(t, p, "xl/worksheets/sheet1.xml", func(b []byte) []byte {
				return bytes.Replace(b, []byte(`</sheetData>`), []byte(`<!-- c --></sheetData>`), 1)
			})
		}, ListOptions{}, false},
		{"character references", func(t *testing.T) string {
			p := buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", "Ann"}))
			return rewriteSheet(t, p, "xl/worksheets/sheet1.xml", func(b []byte) []byte {
				return bytes.Replace(b, []byte(`</sheetData>`), []byte(`<row r="3"><c r="A3" t="inlineStr"><is><t xml:space="preserve"> b&#64;example.org&#x20;</t></is></c><c r="B3" t="inlineStr"><is><t>&#xE9;&amp;&lt;&#10;x&#13;&apos;</t></is></c><c r="C3"><v> 1.50 </v></c></row></sheetData>`), 1)
			})
		}, ListOptions{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.path(t)
			if got := compareReaders(t, p, tt.opts); got != tt.wantFast {
				t.Errorf("fast reader used: got %v, want %v", got, tt.wantFast)
			}
		})
	}
}

// TestXLSXFastMalformed: a sheet cut short or with a broken tag is an
// error from the fast reader, after the rows before it, never a panic or
// a silent end.
func TestXLSXFastMalformed(t *testing.T) {
	src := buildWorkbook(t, []string{"S"}, rowCells("S", []any{"email", "name"},
		[]any{"a@example.org", "Ann"}, []any{"b@example.org", "Bob"}, []any{"c@example.org", "Cy"}))
	edits := map[string]func([]byte) []byte{
		"truncated": func(b []byte) []byte { return b[:bytes.Index(b, []byte(`<row r="4"`))+30] },
		"mismatched": func(b []byte) []byte {
			return bytes.Replace(b, []byte(`</c></row></sheetData>`), []byte(`</c></rox></sheetData>`), 1)
		},
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			p := rewriteSheet(t, src, "xl/worksheets/sheet1.xml", edit)
			l, err := OpenList(p, ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if !l.xlsxFast {
				t.Fatal("fast reader not used")
			}
			for _, want := range []string{"a@example.org", "b@example.org"} {
				rec, err := l.Next()
				if err != nil || rec.Address != want {
					t.Fatalf("got %+v, %v, want %s", rec, err, want)
				}
			}
			_, err = l.Next()
			if err == nil || err == io.EOF || !strings.Contains(err.Error(), "malformed XML") {
				t.Fatalf("got %v, want a malformed XML error", err)
			}
		})
	}
}

// FuzzXLSXFast builds a workbook from fuzz input with excelize and checks
// that both readers agree.
func FuzzXLSXFast(f *testing.F) {
	f.Add("email,name\na@example.org,Ann", false)
	f.Add("email,n\n1e5,-0.5\n,\n x@y.z ,TRUE", true)
	f.Add("email\n&<>\"'\n_x0041_\n\t", false)
	f.Fuzz(func(t *testing.T, data string, stream bool) {
		if len(data) > 2000 {
			return
		}
		var rows [][]any
		for _, line := range strings.Split(data, "\n") {
			var row []any
			for _, v := range strings.Split(line, ",") {
				if strings.HasPrefix(v, "#") {
					row = append(row, len(v))
					continue
				}
				row = append(row, v)
			}
			rows = append(rows, row)
		}
		var p string
		if stream {
			p = streamWorkbook(t, rows...)
		} else {
			p = buildWorkbook(t, []string{"S"}, rowCells("S", rows...))
		}
		compareReaders(t, p, ListOptions{})
	})
}
