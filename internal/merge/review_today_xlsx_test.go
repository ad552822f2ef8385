package merge

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/xuri/excelize/v2"
)

// Workbooks beyond xlsxfast_test.go's, from a review of the fast reader: each
// is read by both paths and must give the same rows (or be declined).
func TestReviewTodayXLSXFastVsExcelize(t *testing.T) {
	header := []any{"email", "name", "note"}
	type tc struct {
		name string
		path func(t *testing.T) string
		opts ListOptions
	}
	var tests []tc
	// Many numbers without style.
	nums := []any{123456789.123456789, 1234567890123.0, 0.000001234, -1e-5, 1e20, 100000000000000000000.0, 3.0, 1.0 / 3, 2.5e-300, 1.7976931348623157e308, 123456789012345678, int64(-9007199254740993), uint64(18446744073709551615), float32(0.1)}
	rows := [][]any{header}
	for i, n := range nums {
		rows = append(rows, []any{fmt.Sprintf("n%d@example.org", i), n, n})
	}
	tests = append(tests, tc{"numbers", func(t *testing.T) string { return buildWorkbook(t, []string{"S"}, rowCells("S", rows...)) }, ListOptions{}})
	for _, fmtID := range []int{1, 2, 3, 4, 9, 10, 11, 12, 49} {
		fmtID := fmtID
		tests = append(tests, tc{fmt.Sprintf("numfmt %d", fmtID), func(t *testing.T) string {
			cells := rowCells("S", header, []any{"a@example.org", "Ann"}, []any{"b@example.org", "Bob"})
			st := &excelize.Style{NumFmt: fmtID}
			cells = append(cells, cellSet{sheet: "S", cell: "C2", value: 1234.5678, style: st}, cellSet{sheet: "S", cell: "C3", value: "007", style: st})
			return buildWorkbook(t, []string{"S"}, cells)
		}, ListOptions{}})
	}
	tests = append(tests, tc{"custom fmt", func(t *testing.T) string {
		cells := rowCells("S", header, []any{"a@example.org", "Ann"})
		f := "#,##0.00"
		cells = append(cells, cellSet{sheet: "S", cell: "C2", value: 1234.5678, style: &excelize.Style{CustomNumFmt: &f}})
		return buildWorkbook(t, []string{"S"}, cells)
	}, ListOptions{}})
	// Sheet order differs from part order: delete the first sheet.
	for _, opt := range []ListOptions{{}, {Sheet: "1"}, {Sheet: "2"}, {Sheet: "B"}} {
		opt := opt
		tests = append(tests, tc{"reordered " + opt.Sheet, func(t *testing.T) string {
			f := excelize.NewFile()
			defer f.Close()
			f.NewSheet("B")
			f.NewSheet("A")
			f.SetSheetRow("A", "A1", &[]any{"email", "x"})
			f.SetSheetRow("A", "A2", &[]any{"a@example.org", "from A"})
			f.SetSheetRow("B", "A1", &[]any{"email", "x"})
			f.SetSheetRow("B", "A2", &[]any{"b@example.org", "from B"})
			f.SetCellValue("Sheet1", "A1", "email")
			f.SetCellValue("Sheet1", "A2", "s1@example.org")
			if err := f.MoveSheet("A", "Sheet1"); err != nil {
				t.Fatal(err)
			}
			if err := f.DeleteSheet("Sheet1"); err != nil {
				t.Fatal(err)
			}
			p := t.TempDir() + "/r.xlsx"
			if err := f.SaveAs(p); err != nil {
				t.Fatal(err)
			}
			return p
		}, opt})
	}
	// Hidden first sheet with data.
	tests = append(tests, tc{"hidden first sheet", func(t *testing.T) string {
		f := excelize.NewFile()
		defer f.Close()
		f.SetSheetRow("Sheet1", "A1", &[]any{"email"})
		f.SetSheetRow("Sheet1", "A2", &[]any{"hidden@example.org"})
		f.NewSheet("V")
		f.SetSheetRow("V", "A1", &[]any{"email"})
		f.SetSheetRow("V", "A2", &[]any{"v@example.org"})
		f.SetActiveSheet(1)
		f.SetSheetVisible("Sheet1", false)
		p := t.TempDir() + "/h.xlsx"
		if err := f.SaveAs(p); err != nil {
			t.Fatal(err)
		}
		return p
	}, ListOptions{}})
	// Special sheet names.
	for _, name := range []string{"Data & More", "O'Brien", "Zoë <1>", "ΣΦ"} {
		name := name
		tests = append(tests, tc{"sheet name " + name, func(t *testing.T) string {
			return buildWorkbook(t, []string{name}, rowCells(name, header, []any{"a@example.org", "Ann"}))
		}, ListOptions{Sheet: name}})
	}
	// Hand-written cell variants.
	variants := map[string]string{
		"error cell":        `<c r="C3" t="e"><v>#N/A</v></c>`,
		"bool odd":          `<c r="C3" t="b"><v>2</v></c>`,
		"t=n":               `<c r="C3" t="n"><v>1.10</v></c>`,
		"inf":               `<c r="C3"><v>inf</v></c>`,
		"nan":               `<c r="C3"><v>NaN</v></c>`,
		"hexfloat":          `<c r="C3"><v>0x1p-2</v></c>`,
		"str empty":         `<c r="C3" t="str"><v></v></c>`,
		"s with space":      `<c r="C3" t="s"><v> 0 </v></c>`,
		"s out of range":    `<c r="C3" t="s"><v>999</v></c>`,
		"s negative":        `<c r="C3" t="s"><v>-1</v></c>`,
		"whitespace t":      `<c r="C3" t="inlineStr"><is><t>   </t></is></c>`,
		"v and is":          `<c r="C3" t="inlineStr"><v>vv</v><is><t>is</t></is></c>`,
		"lower ref":         `<c r="c3" t="inlineStr"><is><t>x</t></is></c>`,
		"abs ref":           `<c r="$C$3" t="inlineStr"><is><t>x</t></is></c>`,
		"cell out of order": `<c r="C3" t="inlineStr"><is><t>c</t></is></c><c r="B3" t="inlineStr"><is><t>b</t></is></c>`,
		"dup col":           `<c r="B3" t="inlineStr"><is><t>b</t></is></c><c r="B3" t="inlineStr"><is><t>b2</t></is></c>`,
		"s attr 0 on num":   `<c r="C3" s="0"><v>1.5</v></c>`,
		"cdata":             `<c r="C3" t="inlineStr"><is><t><![CDATA[x<y]]></t></is></c>`,
		"crlf text":         "<c r=\"C3\" t=\"inlineStr\"><is><t>a\r\nb\rc</t></is></c>",
		"ns prefix":         `<x:c r="C3" t="inlineStr" xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><x:is><x:t>x</x:t></x:is></x:c>`,
		"empty v formula":   `<c r="C3"><f>A1</f><v></v></c>`,
		"big col":           `<c r="XFD3" t="inlineStr"><is><t>far</t></is></c>`,
		"date t=d":          `<c r="C3" t="d"><v>2024-01-02T00:00:00Z</v></c>`,
		"nbsp-only":         "<c r=\"C3\" t=\"inlineStr\"><is><t>\u00a0</t></is></c>",
		"space attr":        `<c r = "C3"  t = 'inlineStr' ><is><t>sp</t></is></c>`,
	}
	for name, cell := range variants {
		name, cell := name, cell
		tests = append(tests, tc{"cell " + name, func(t *testing.T) string {
			p := buildWorkbook(t, []string{"S"}, rowCells("S", header, []any{"a@example.org", "Ann"}))
			return rewriteSheet(t, p, "xl/worksheets/sheet1.xml", func(b []byte) []byte {
				return bytes.Replace(b, []byte(`</sheetData>`), []byte(`<row r="3"><c r="A3" t="inlineStr"><is><t>b@example.org</t></is></c>`+cell+`</row></sheetData>`), 1)
			})
		}, ListOptions{}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.path(t)
			fast := compareReaders(t, p, tt.opts)
			t.Logf("fast used: %v", fast)
		})
	}
}
