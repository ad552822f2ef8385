package merge

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
)

// listResult is everything a caller can see of a list.
type listResult struct {
	OpenErr string
	Header  []string
	Rows    []string // one line per Next call: record, error, warning
}

// defaultLimits are the limits OpenList applies.
var defaultLimits = xlsxLimits{unzip: xlsxUnzipLimit, part: xlsxXMLLimit}

func readList(t testing.TB, path string, opts ListOptions, fast bool, lim xlsxLimits) (listResult, bool) {
	t.Helper()
	var res listResult
	l, err := openList(path, opts, fast, lim)
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
	return compareReadersLimits(t, path, opts, defaultLimits)
}

// compareReadersLimits is compareReaders with other limits.
func compareReadersLimits(t testing.TB, path string, opts ListOptions, lim xlsxLimits) bool {
	t.Helper()
	slow, usedFast := readList(t, path, opts, false, lim)
	if usedFast {
		t.Fatal("excelize-only read used the fast reader")
	}
	got, usedFast := readList(t, path, opts, true, lim)
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
	return saveZip(t, zw, &buf, "edited.xlsx")
}

// saveZip closes zw, whose output is buf, and writes it to a file named
// name in a temporary folder.
func saveZip(t testing.TB, zw *zip.Writer, buf *bytes.Buffer, name string) string {
	t.Helper()
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
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
// that both readers agree. layout varies the sheets around the data: bit
// 0 adds an empty sheet before it and a second data sheet after, bit 1
// hides the data sheet, bit 2 lists the sheets in workbook.xml in reverse,
// bit 3 makes the worksheet targets absolute, bit 4 sets a part limit that
// streams the rows instead of keeping them; sheet is ListOptions.Sheet.
func FuzzXLSXFast(f *testing.F) {
	f.Add("email,name\na@example.org,Ann", false, uint8(0), "")
	f.Add("email,n\n1e5,-0.5\n,\n x@y.z ,TRUE", true, uint8(16), "")
	f.Add("email\n&<>\"'\n_x0041_\n\t", false, uint8(5), "2")
	f.Add("email,name\na@example.org,Ann", false, uint8(15), "t")
	f.Add("email,name\na@example.org,Ann", true, uint8(10), "1")
	f.Fuzz(func(t *testing.T, data string, stream bool, layout uint8, sheet string) {
		if len(data) > 2000 || len(sheet) > 40 {
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
		dataSheet := "S"
		switch {
		case stream:
			p, dataSheet = streamWorkbook(t, rows...), "Sheet1"
		case layout&1 != 0:
			reversed := make([][]any, len(rows))
			for i, r := range rows {
				reversed[len(rows)-1-i] = r
			}
			p = buildWorkbook(t, []string{"E", "S", "T"}, append(rowCells("S", rows...), rowCells("T", reversed...)...))
		default:
			p = buildWorkbook(t, []string{"S"}, rowCells("S", rows...))
		}
		edits := map[string]func([]byte) []byte{}
		var wb []func([]byte) []byte
		if layout&2 != 0 {
			wb = append(wb, hideSheet(dataSheet))
		}
		if layout&4 != 0 {
			wb = append(wb, reverseSheets)
		}
		if len(wb) > 0 {
			edits["xl/workbook.xml"] = func(b []byte) []byte {
				for _, e := range wb {
					b = e(b)
				}
				return b
			}
		}
		if layout&8 != 0 {
			edits["xl/_rels/workbook.xml.rels"] = retarget("/xl/worksheets/")
		}
		p = editWorkbook(t, p, edits)
		lim := defaultLimits
		if layout&16 != 0 {
			lim.part = 1024
		}
		compareReadersLimits(t, p, ListOptions{Sheet: sheet}, lim)
	})
}

// editWorkbook rewrites parts of a workbook, one edit per part name.
func editWorkbook(t testing.TB, src string, edits map[string]func([]byte) []byte) string {
	t.Helper()
	for part, edit := range edits {
		src = rewriteSheet(t, src, part, edit)
	}
	return src
}

var sheetElem = regexp.MustCompile(`<sheet\s[^>]*?(?:/>|>\s*</sheet>)`)

// reverseSheets lists the sheets of workbook.xml in reverse order, so
// that workbook order and zip order differ.
func reverseSheets(wb []byte) []byte {
	elems := sheetElem.FindAll(wb, -1)
	i := len(elems) - 1
	return sheetElem.ReplaceAllFunc(wb, func([]byte) []byte {
		e := elems[i]
		i--
		return e
	})
}

// hideSheet marks a sheet hidden in workbook.xml.
func hideSheet(name string) func([]byte) []byte {
	return func(wb []byte) []byte {
		return bytes.Replace(wb, []byte(`name="`+name+`"`), []byte(`name="`+name+`" state="hidden"`), 1)
	}
}

// retarget rewrites the worksheet targets in workbook.xml.rels.
func retarget(prefix string) func([]byte) []byte {
	return func(b []byte) []byte {
		return bytes.ReplaceAll(b, []byte(`Target="worksheets/`), []byte(`Target="`+prefix))
	}
}

// threeSheets is a workbook with an empty sheet, then Data and More.
func threeSheets(t testing.TB) string {
	return buildWorkbook(t, []string{"Empty", "Data", "More"}, append(
		rowCells("Data", []any{"email", "name"}, []any{"a@example.org", "Ann"}),
		rowCells("More", []any{"email"}, []any{"m@example.org"})...))
}

// addChartSheet appends a chartsheet named name.
func addChartSheet(t testing.TB, p, name string) string {
	t.Helper()
	f, err := excelize.OpenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = f.AddChartSheet(name, &excelize.Chart{Type: excelize.Col,
		Series: []excelize.ChartSeries{{Name: "Data!$B$1", Categories: "Data!$A$2", Values: "Data!$B$2"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Save(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestXLSXFastSheetPicking(t *testing.T) {
	tests := []struct {
		name     string
		path     func(t testing.TB) string
		sheet    string
		wantFast bool
		want     string // the sheet read
	}{
		{"default skips empty", threeSheets, "", true, "Data"},
		{"name, any case", threeSheets, " mORE ", true, "More"},
		{"index", threeSheets, "2", true, "Data"},
		{"index of empty sheet", threeSheets, "1", false, ""}, // no header row
		{"index out of range", threeSheets, "4", false, ""},
		{"unknown name", threeSheets, "Nope", false, ""},
		{"workbook order differs from zip", func(t testing.TB) string {
			return editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/workbook.xml": reverseSheets})
		}, "", true, "More"},
		{"workbook order, by index", func(t testing.TB) string {
			return editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/workbook.xml": reverseSheets})
		}, "2", true, "Data"},
		{"hidden sheet still counts", func(t testing.TB) string {
			return editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/workbook.xml": hideSheet("Data")})
		}, "", true, "Data"},
		{"hidden sheet by name", func(t testing.TB) string {
			return editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/workbook.xml": hideSheet("More")})
		}, "more", true, "More"},
		{"absolute targets", func(t testing.TB) string {
			return editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/_rels/workbook.xml.rels": retarget("/xl/worksheets/")})
		}, "", true, "Data"},
		{"relative targets through ..", func(t testing.TB) string {
			return editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/_rels/workbook.xml.rels": retarget("../xl/./worksheets/")})
		}, "3", true, "More"},
		{"target to a missing part", func(t testing.TB) string {
			return editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/_rels/workbook.xml.rels": retarget("nowhere/")})
		}, "", false, ""},
		{"chartsheet last", func(t testing.TB) string {
			return addChartSheet(t, threeSheets(t), "Chart")
		}, "", true, "Data"},
		{"chartsheet first", func(t testing.TB) string {
			return editWorkbook(t, addChartSheet(t, threeSheets(t), "Chart"), map[string]func([]byte) []byte{"xl/workbook.xml": reverseSheets})
		}, "", true, "More"},
		{"chartsheet by name", func(t testing.TB) string {
			return addChartSheet(t, threeSheets(t), "Chart")
		}, "chart", false, ""}, // no header row
		{"name excelize's Rows rejects", func(t testing.TB) string {
			return editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/workbook.xml": func(b []byte) []byte {
				return bytes.Replace(b, []byte(`name="Data"`), []byte(`name="Da:ta"`), 1)
			}})
		}, "", false, "More"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.path(t)
			if got := compareReaders(t, p, ListOptions{Sheet: tt.sheet}); got != tt.wantFast {
				t.Errorf("fast reader used: got %v, want %v", got, tt.wantFast)
			}
			l, err := OpenList(p, ListOptions{Sheet: tt.sheet})
			if err != nil {
				return
			}
			defer l.Close()
			if l.Sheet() != tt.want {
				t.Errorf("sheet: got %q, want %q", l.Sheet(), tt.want)
			}
		})
	}
}

// TestXLSXFastCaseFoldedNames: with two sheet names that differ only in
// case, which sheet excelize reads depends on map order, so the fast
// reader declines (and the two readers cannot be compared).
func TestXLSXFastCaseFoldedNames(t *testing.T) {
	p := editWorkbook(t, threeSheets(t), map[string]func([]byte) []byte{"xl/workbook.xml": func(b []byte) []byte {
		return bytes.Replace(b, []byte(`name="More"`), []byte(`name="DATA"`), 1)
	}})
	if _, err := openXLSXFast(p, "data", defaultLimits); err != errXLSXUnsupported {
		t.Errorf("got %v, want %v", err, errXLSXUnsupported)
	}
}

// TestXLSXBadFiles: files the fast reader declines fail with the error
// excelize gives.
func TestXLSXBadFiles(t *testing.T) {
	good, err := os.ReadFile(threeSheets(t))
	if err != nil {
		t.Fatal(err)
	}
	var noWorkbook bytes.Buffer
	zw := zip.NewWriter(&noWorkbook)
	w, _ := zw.Create("hello.txt")
	w.Write([]byte("hello"))
	zw.Close()
	files := map[string][]byte{
		"not a zip":      []byte("email\na@example.org\n"),
		"empty":          nil,
		"short":          []byte("PK"),
		"no workbook":    noWorkbook.Bytes(),
		"truncated":      good[:len(good)/2],
		"truncated tail": good[:len(good)-10],
		"ole":            append([]byte{0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1}, make([]byte, 600)...),
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "bad.xlsx")
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, slowErr := openList(p, ListOptions{}, false, defaultLimits)
			_, fastErr := OpenList(p, ListOptions{})
			if slowErr == nil || fastErr == nil {
				t.Fatalf("got %v and %v, want errors", fastErr, slowErr)
			}
			if fastErr.Error() != slowErr.Error() {
				t.Errorf("got %q, want %q", fastErr, slowErr)
			}
		})
	}
}

// addEntry appends a raw zip entry to a copy of the workbook src.
func addEntry(t testing.TB, src string, fh *zip.FileHeader, raw []byte) string {
	t.Helper()
	zr, err := zip.OpenReader(src)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range zr.File {
		if err := zw.Copy(f); err != nil {
			t.Fatal(err)
		}
	}
	w, err := zw.CreateRaw(fh)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(raw)
	return saveZip(t, zw, &buf, "extra.xlsx")
}

// deflatedZeros is n zero bytes, deflated, and their CRC-32.
func deflatedZeros(t testing.TB, n int) ([]byte, uint32) {
	t.Helper()
	var buf bytes.Buffer
	fw, _ := flate.NewWriter(&buf, flate.BestCompression)
	zeros := make([]byte, 1<<20)
	crc := crc32.NewIEEE()
	for n > 0 {
		k := min(n, len(zeros))
		fw.Write(zeros[:k])
		crc.Write(zeros[:k])
		n -= k
	}
	fw.Close()
	return buf.Bytes(), crc.Sum32()
}

// unzippedSize is the declared size of all entries of a zip.
func unzippedSize(t testing.TB, p string) int64 {
	t.Helper()
	zr, err := zip.OpenReader(p)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var n int64
	for _, f := range zr.File {
		n += int64(f.UncompressedSize64)
	}
	return n
}

// allocated returns the bytes fn allocates in all, and the bytes still in
// use after it, while what it returned is kept.
func allocated(fn func() any) (total, kept int64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v := fn()
	runtime.ReadMemStats(&after)
	total = int64(after.TotalAlloc - before.TotalAlloc)
	runtime.GC()
	runtime.ReadMemStats(&after)
	kept = int64(after.HeapAlloc) - int64(before.HeapAlloc)
	runtime.KeepAlive(v)
	return total, kept
}

// TestXLSXFastLimits injects small limits: the fast reader declines a
// workbook past them before unpacking it, never unpacks more than an
// entry declares, streams a worksheet larger than the part limit instead
// of keeping it, and the list reads as it does through excelize.
func TestXLSXFastLimits(t *testing.T) {
	rows := [][]any{{"email", "name", "note"}}
	for i := range 3000 {
		rows = append(rows, []any{fmt.Sprintf("u%d@example.org", i), "Name " + strings.Repeat("x", i%50), i})
	}
	inline := streamWorkbook(t, rows...)
	shared := buildWorkbook(t, []string{"S"}, rowCells("S", rows...))
	zeros, zerosCRC := deflatedZeros(t, 64<<20)
	bomb := addEntry(t, inline, &zip.FileHeader{Name: "xl/media/bomb.bin", Method: zip.Deflate,
		CRC32: zerosCRC, CompressedSize64: uint64(len(zeros)), UncompressedSize64: 64 << 20}, zeros)
	liar := addEntry(t, inline, &zip.FileHeader{Name: "xl/media/liar.bin", Method: zip.Deflate,
		CRC32: zerosCRC, CompressedSize64: uint64(len(zeros)), UncompressedSize64: 100}, zeros)
	sheetSize := func(p, part string) int64 {
		zr, err := zip.OpenReader(p)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		for _, f := range zr.File {
			if f.Name == part {
				return int64(f.UncompressedSize64)
			}
		}
		t.Fatalf("%s has no %s", p, part)
		return 0
	}
	tests := []struct {
		name      string
		path      string
		lim       xlsxLimits
		wantFast  bool
		wantStore bool
	}{
		{"defaults keep the rows", inline, defaultLimits, true, true},
		{"workbook just within unzip limit", inline, xlsxLimits{unzip: unzippedSize(t, inline), part: 64 << 10}, true, false},
		{"workbook past unzip limit", inline, xlsxLimits{unzip: unzippedSize(t, inline) - 1, part: 64 << 10}, false, false},
		{"part limit past unzip limit", inline, xlsxLimits{unzip: 64 << 10, part: 64<<10 + 1}, false, false},
		// The decoded rows are smaller than the worksheet's XML.
		{"worksheet past part limit, rows within", inline,
			xlsxLimits{unzip: defaultLimits.unzip, part: sheetSize(inline, "xl/worksheets/sheet1.xml") - 1}, true, true},
		{"rows past part limit are streamed", inline, xlsxLimits{unzip: defaultLimits.unzip, part: 64 << 10}, true, false},
		{"shared strings within part limit", shared,
			xlsxLimits{unzip: defaultLimits.unzip, part: sheetSize(shared, "xl/sharedStrings.xml")}, true, false},
		{"shared strings past part limit", shared,
			xlsxLimits{unzip: defaultLimits.unzip, part: sheetSize(shared, "xl/sharedStrings.xml") - 1}, false, false},
		{"bomb past unzip limit", bomb, xlsxLimits{unzip: 32 << 20, part: 1 << 20}, false, false},
		{"bomb within unzip limit", bomb, xlsxLimits{unzip: 128 << 20, part: 1 << 20}, true, true},
		{"entry larger than declared", liar, defaultLimits, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var x *xlsxFast
			var err error
			total, kept := allocated(func() any {
				x, err = openXLSXFast(tt.path, "", tt.lim)
				return x
			})
			if (err == nil) != tt.wantFast {
				t.Fatalf("openXLSXFast: got %v, want fast %v", err, tt.wantFast)
			}
			if err == nil {
				if got := x.store != nil; got != tt.wantStore {
					t.Errorf("rows kept: got %v, want %v", got, tt.wantStore)
				}
				x.Close()
			}
			// Nothing is unpacked into memory whole but the parts within
			// the part limit, and what stays is the stored rows, at most
			// the part limit, or buffers for streaming.
			if total > 8<<20 {
				t.Errorf("opening allocated %d bytes in all, want at most 8 MiB", total)
			}
			if limit := min(tt.lim.part, 4<<20) + 256<<10; kept > limit {
				t.Errorf("opening kept %d bytes, want at most %d", kept, limit)
			}
			if got := compareReadersLimits(t, tt.path, ListOptions{}, tt.lim); got != tt.wantFast {
				t.Errorf("fast reader used: got %v, want %v", got, tt.wantFast)
			}
		})
	}
}

// TestXLSXExcelizeMalformed: a list the fast reader leaves to excelize (a
// date cell) whose sheet is cut short is an error on open. excelize's row
// iterator would end quietly at the break and lose the rows after it.
func TestXLSXExcelizeMalformed(t *testing.T) {
	src := buildWorkbook(t, []string{"S"}, rowCells("S", []any{"email", "joined"},
		[]any{"a@example.org", time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)}, []any{"b@example.org", "Bob"}, []any{"c@example.org", "Cy"}))
	// Well formed, it takes excelize and reads every row.
	l, err := OpenList(src, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.xlsxFast {
		t.Fatal("a date cell should take excelize")
	}
	n := 0
	for _, err := l.Next(); err != io.EOF; _, err = l.Next() {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	l.Close()
	if n != 3 {
		t.Fatalf("read %d rows, want 3", n)
	}
	for name, edit := range map[string]func([]byte) []byte{
		"truncated": func(b []byte) []byte { return b[:bytes.Index(b, []byte(`<row r="4"`))+30] },
		"mismatched": func(b []byte) []byte {
			return bytes.Replace(b, []byte(`</row></sheetData>`), []byte(`</rox></sheetData>`), 1)
		},
	} {
		t.Run(name, func(t *testing.T) {
			p := rewriteSheet(t, src, "xl/worksheets/sheet1.xml", edit)
			l, err := OpenList(p, ListOptions{})
			if err == nil {
				l.Close()
				t.Fatal("opened a sheet cut short")
			}
			if !strings.Contains(err.Error(), "not well-formed XML") || !strings.Contains(err.Error(), filepath.Base(p)) {
				t.Fatalf("error %q does not say what is wrong where", err)
			}
		})
	}
}
