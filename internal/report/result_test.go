package report

import (
	"archive/zip"
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
)

// hostile holds values that must come back exactly as written from an XLSX
// and never be evaluated as formulas.
var hostile = []string{
	`=HYPERLINK("http://x","click")`,
	"+1",
	"-2",
	"@SUM(A1)",
	"\t=1",
	"\r=1",
	"=1+1",
	"_x0041_", // excelize's own escape syntax must stay literal too
	" padded ",
	"multi\nline",
}

func sampleRows() []struct {
	o      Outcome
	values []string
} {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	return []struct {
		o      Outcome
		values []string
	}{
		{Outcome{Row: 2, Email: "ann@example.org", Status: Delivered, Rcpt: Reply{250, "2.1.5", "ok"}, Data: Reply{250, "2.0.0", "queued as ABC\nbye"}, Attempts: 1, MessageID: "<1@x>", Start: start, Duration: time.Second}, []string{"Ann", "=cmd|' /C calc'!A0"}},
		{Outcome{Row: 3, Email: "bob@Example.org", Status: Rejected, Rcpt: Reply{550, "5.1.1", "=no such user"}, Attempts: 1, Error: "rejected", Start: start.Add(time.Second), Duration: time.Second}, []string{"Bob", "+44"}},
		{Outcome{Row: 5, Email: "not an address", Status: Invalid, Error: `merge: row 5: column "email": not an address`}, []string{"-", "@x"}},
		{Outcome{Row: 6, Email: "cy@other.test", Status: Deferred, Rcpt: Reply{451, "4.7.1", "greylisted"}, Attempts: 3, Start: start.Add(2 * time.Second), Duration: 3 * time.Second}, []string{"Cy"}},
	}
}

func want(o Outcome, values []string) []string {
	c := func(n int) string {
		if n == 0 {
			return ""
		}
		return fmt.Sprint(n)
	}
	return append([]string{fmt.Sprint(o.Row), o.Email, string(o.Status),
		c(o.Rcpt.Code), o.Rcpt.Enhanced, o.Rcpt.Text,
		c(o.Data.Code), o.Data.Enhanced, o.Data.Text,
		fmt.Sprint(o.Attempts), o.MessageID, o.Error}, values...)
}

// readXLSX returns the cell values of every sheet of an XLSX file, failing
// the test if any cell holds a formula.
func readXLSX(t *testing.T, path string) map[string][][]string {
	t.Helper()
	f, err := excelize.OpenFile(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	out := map[string][][]string{}
	for _, sh := range f.GetSheetList() {
		rows, err := f.GetRows(sh)
		if err != nil {
			t.Fatal(err)
		}
		for i, row := range rows {
			for j := range row {
				cell, _ := excelize.CoordinatesToCellName(j+1, i+1)
				if fm, _ := f.GetCellFormula(sh, cell); fm != "" {
					t.Errorf("%s!%s: formula %q", sh, cell, fm)
				}
			}
		}
		out[sh] = rows
	}
	return out
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	cr := csv.NewReader(fh)
	cr.FieldsPerRecord = -1
	recs, err := cr.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// trimRow drops trailing empty cells, as excelize's GetRows does.
func trimRow(r []string) []string {
	for len(r) > 0 && r[len(r)-1] == "" {
		r = r[:len(r)-1]
	}
	return r
}

func writeResult(t *testing.T, path string, header []string, rows []struct {
	o      Outcome
	values []string
}) {
	t.Helper()
	r, err := CreateResult(path, header)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if err := r.Write(row.o, row.values); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestResultRoundTrip(t *testing.T) {
	header := []string{"name", "note"}
	rows := sampleRows()
	for _, ext := range []string{"xlsx", "csv", "XLSX"} {
		t.Run(ext, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "result."+ext)
			writeResult(t, path, header, rows)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != 0o600 {
				t.Errorf("mode = %v, want 0600", got)
			}
			var got [][]string
			if ext == "csv" {
				got = readCSV(t, path)
			} else {
				got = readXLSX(t, path)[ResultSheet]
			}
			wantRows := [][]string{append(append([]string{}, FixedColumns...), header...)}
			for _, row := range rows {
				wantRows = append(wantRows, want(row.o, row.values))
			}
			if len(got) != len(wantRows) {
				t.Fatalf("got %d rows, want %d", len(got), len(wantRows))
			}
			for i := range wantRows {
				w := wantRows[i]
				if ext == "csv" {
					for j := range w {
						w[j] = csvCell(w[j])
					}
					for len(w) < len(wantRows[0]) {
						w = append(w, "") // short rows are padded
					}
				} else {
					w = trimRow(w)
				}
				if !reflect.DeepEqual(got[i], w) {
					t.Errorf("row %d:\ngot  %q\nwant %q", i+1, got[i], w)
				}
			}
		})
	}
}

func TestResultXLSXTypes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.xlsx")
	writeResult(t, path, nil, sampleRows()[:1])
	f, err := excelize.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for cell, wantType := range map[string]excelize.CellType{
		"A2": excelize.CellTypeUnset, // numbers are written without a type attribute
		"D2": excelize.CellTypeUnset,
		"J2": excelize.CellTypeUnset,
		"B2": excelize.CellTypeInlineString,
		"F2": excelize.CellTypeInlineString,
	} {
		got, err := f.GetCellType(ResultSheet, cell)
		if err != nil {
			t.Fatal(err)
		}
		if got != wantType {
			t.Errorf("%s type = %v, want %v", cell, got, wantType)
		}
	}
}

func TestResultFormulaInjection(t *testing.T) {
	header := append([]string{"=header"}, make([]string, len(hostile)-1)...)
	for i := 1; i < len(hostile); i++ {
		header[i] = fmt.Sprintf("c%d", i)
	}
	o := Outcome{Row: 2, Email: "=a@b", Status: Rejected,
		Rcpt: Reply{Code: 550, Enhanced: "-5.1.1", Text: `=HYPERLINK("http://evil","x")`},
		Data: Reply{Code: 554, Text: "@SUM(1)"}, MessageID: "+id", Error: "-err"}

	t.Run("xlsx", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "r.xlsx")
		r, err := CreateResult(path, header)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Write(o, hostile); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		got := readXLSX(t, path)[ResultSheet] // fails on any formula
		wantRow := want(o, hostile)
		for i, w := range wantRow {
			// XML normalises a bare CR only when it is not escaped;
			// excelize escapes it, so even "\r=1" survives.
			if got[1][i] != w {
				t.Errorf("column %d: got %q, want %q", i+1, got[1][i], w)
			}
		}
		if got[0][len(FixedColumns)] != "=header" {
			t.Errorf("header: got %q, want %q", got[0][len(FixedColumns)], "=header")
		}
	})
	t.Run("csv", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "r.csv")
		r, err := CreateResult(path, header)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Write(o, hostile); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		got := readCSV(t, path)
		for i, row := range got {
			for j, cell := range row {
				if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) { // a quote first is fine
					t.Errorf("row %d column %d: %q starts a formula", i+1, j+1, cell)
				}
			}
		}
		wantRow := want(o, hostile)
		for i, w := range wantRow {
			if w != "" && strings.ContainsRune("=+-@\t\r'", rune(w[0])) {
				w = "'" + w
			}
			if got[1][i] != w {
				t.Errorf("column %d: got %q, want %q", i+1, got[1][i], w)
			}
		}
	})
}

func TestCSVCell(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"=1", "'=1"},
		{"+1", "'+1"},
		{"-2", "'-2"},
		{"@SUM(A1)", "'@SUM(A1)"},
		{"\t=1", "'\t=1"},
		{"\r=1", "'\r=1"},
		{"a=1", "a=1"},
		{"'=1", "''=1"},
		{"'", "''"},
		{"it's", "it's"},
	}
	for _, tt := range tests {
		if got := csvCell(tt.in); got != tt.want {
			t.Errorf("csvCell(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := csvUncell(csvCell(tt.in)); got != tt.in {
			t.Errorf("csvUncell(csvCell(%q)) = %q, want %q", tt.in, got, tt.in)
		}
	}
}

func TestXLSXText(t *testing.T) {
	long := strings.Repeat("a", 40000)
	longWide := strings.Repeat("😀", 20000) // two UTF-16 units each
	tests := []struct {
		name, in, want string
	}{
		{"plain", "hello", "hello"},
		{"controls", "a\x00b\x01c\x0bd\x1fe", "a\uFFFDb\uFFFDc\uFFFDd\uFFFDe"},
		{"kept whitespace", "a\tb\nc\rd", "a\tb\nc\rd"},
		{"invalid utf8", "a\xffb", "a\uFFFDb"},
		{"noncharacters", "a\uFFFEb\uFFFFc", "a\uFFFDb\uFFFDc"},
		{"astral", "😀", "😀"},
		{"long", long, long[:maxCellUnits-len(" [truncated: 40000 characters in all]")] + " [truncated: 40000 characters in all]"},
		{"long wide", longWide, strings.Repeat("😀", (maxCellUnits-len(" [truncated: 40000 characters in all]"))/2) + " [truncated: 40000 characters in all]"},
		{"exactly at the limit", long[:maxCellUnits], long[:maxCellUnits]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := xlsxText(tt.in)
			if got != tt.want {
				if len(got) > 80 || len(tt.want) > 80 {
					t.Errorf("got %d bytes ending %q, want %d bytes ending %q", len(got), got[len(got)-40:], len(tt.want), tt.want[len(tt.want)-40:])
				} else {
					t.Errorf("got %q, want %q", got, tt.want)
				}
			}
		})
	}
}

func TestResultIllegalAndLong(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.xlsx")
	long := strings.Repeat("x", 40000)
	o := Outcome{Row: 2, Email: "a@b", Status: Rejected, Rcpt: Reply{Code: 550, Text: "bad\x00\x07reply"}, Error: long}
	r, err := CreateResult(path, []string{"v"})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Write(o, []string{"nul\x00here"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	got := readXLSX(t, path)[ResultSheet][1]
	if w := "bad\uFFFD\uFFFDreply"; got[5] != w {
		t.Errorf("rcpt_text: got %q, want %q", got[5], w)
	}
	if w := "nul\uFFFDhere"; got[12] != w {
		t.Errorf("value: got %q, want %q", got[12], w)
	}
	if n := len(got[11]); n != maxCellUnits || !strings.HasSuffix(got[11], "[truncated: 40000 characters in all]") {
		t.Errorf("error: got %d chars ending %q, want %d ending with the truncation note", n, got[11][n-40:], maxCellUnits)
	}
}

func TestResultAtomic(t *testing.T) {
	for _, ext := range []string{"xlsx", "csv"} {
		t.Run(ext, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "result."+ext)
			old := []byte("old result, must survive")
			if err := os.WriteFile(path, old, 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := CreateResult(path, []string{"name"})
			if err != nil {
				t.Fatal(err)
			}
			rows := sampleRows()
			if err := r.Write(rows[0].o, rows[0].values); err != nil {
				t.Fatal(err)
			}
			// Mid-write, the old file is untouched.
			if got, _ := os.ReadFile(path); string(got) != string(old) {
				t.Errorf("during write: got %q, want %q", got, old)
			}
			if err := r.Abort(); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(path); string(got) != string(old) {
				t.Errorf("after Abort: got %q, want %q", got, old)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("after Abort: %d files in the folder, want 1", len(entries))
			}
			if err := r.Write(rows[1].o, rows[1].values); err == nil {
				t.Errorf("Write after Abort: got nil error")
			}

			writeResult(t, path, []string{"name"}, rows[:1])
			var first []string
			if ext == "csv" {
				first = readCSV(t, path)[1]
			} else {
				first = readXLSX(t, path)[ResultSheet][1]
			}
			if first[1] != rows[0].o.Email {
				t.Errorf("after Close: email %q, want %q", first[1], rows[0].o.Email)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("after Close: %d files in the folder, want 1", len(entries))
			}
		})
	}
}

func TestResultRejects(t *testing.T) {
	dir := t.TempDir()
	if _, err := CreateResult(filepath.Join(dir, "r.txt"), nil); err == nil {
		t.Errorf("CreateResult .txt: got nil error")
	}
	if _, err := CreateResult(filepath.Join(dir, "missing", "r.csv"), nil); err == nil {
		t.Errorf("CreateResult in a missing folder: got nil error")
	}
	r, err := CreateResult(filepath.Join(dir, "r.csv"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Abort()
	if err := r.Write(Outcome{Row: 3, Status: Delivered}, nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Write(Outcome{Row: 3, Status: Delivered}, nil); err == nil {
		t.Errorf("Write of a repeated row: got nil error")
	}
	if err := r.Write(Outcome{Row: 2, Status: Delivered}, nil); err == nil {
		t.Errorf("Write out of order: got nil error")
	}
}

func TestResultSheetRollover(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.xlsx")
	r, err := CreateResult(path, []string{"n"})
	if err != nil {
		t.Fatal(err)
	}
	r.rowsPerSheet = 4 // header + 3 rows a sheet
	const n = 8
	for row := 2; row < 2+n; row++ {
		if err := r.Write(Outcome{Row: row, Email: fmt.Sprintf("u%d@x", row), Status: Delivered}, []string{fmt.Sprint(row)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	sheets := readXLSX(t, path)
	header := append(append([]string{}, FixedColumns...), "n")
	wantSheets := map[string][]int{ResultSheet: {2, 3, 4}, "results 2": {5, 6, 7}, "results 3": {8, 9}}
	for name, wantRows := range wantSheets {
		got := sheets[name]
		if len(got) != len(wantRows)+1 {
			t.Errorf("%s: got %d rows, want %d", name, len(got), len(wantRows)+1)
			continue
		}
		if !reflect.DeepEqual(got[0], header) {
			t.Errorf("%s header: got %q, want %q", name, got[0], header)
		}
		for i, row := range wantRows {
			if w := fmt.Sprint(row); got[i+1][0] != w || got[i+1][12] != w {
				t.Errorf("%s row %d: got %q, want row %s", name, i+2, got[i+1], w)
			}
		}
	}
	if _, ok := sheets[SummarySheet]; !ok {
		t.Errorf("no %s sheet", SummarySheet)
	}
}

func TestCreateResultRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "r.csv")
	stale := filepath.Join(dir, ".r.csv.tmp-123")
	fresh := filepath.Join(dir, ".r.csv.tmp-456")
	for _, f := range []string{stale, fresh} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-2 * staleTemp)
	os.Chtimes(stale, old, old)
	r, err := CreateResult(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temporary file kept: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Errorf("a recent temporary file (another writer's) was removed: %v", err)
	}
}

// excelizeRow returns the XML excelize's StreamWriter.SetRow writes for
// cells as row n.
func excelizeRow(t testing.TB, n int, cells []any) []byte {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
	sw, err := f.NewStreamWriter("Sheet1")
	if err != nil {
		t.Fatal(err)
	}
	cell, _ := excelize.CoordinatesToCellName(1, n)
	if err := sw.SetRow(cell, cells); err != nil {
		t.Fatal(err)
	}
	if err := sw.Flush(); err != nil {
		t.Fatal(err)
	}
	buf, err := f.WriteToBuffer()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := zr.Open("xl/worksheets/sheet1.xml")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	sheet, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	start := bytes.Index(sheet, []byte("<row "))
	end := bytes.LastIndex(sheet, []byte("</row>"))
	if start < 0 || end < 0 {
		t.Fatalf("no row in %s", sheet)
	}
	return sheet[start : end+len("</row>")]
}

// ourRow returns the XML Result.Write writes for o and values as row n.
func ourRow(t testing.TB, n int, o Outcome, values []string) []byte {
	t.Helper()
	x, err := newXLSXRows(len(FixedColumns) + len(values))
	if err != nil {
		t.Fatal(err)
	}
	defer x.close()
	if err := x.startSheet(sheetXMLPath(1)); err != nil {
		t.Fatal(err)
	}
	r := &Result{rows: x, rowsPerSheet: excelize.TotalRows, sheetRow: n - 1, xlsx: true, sum: newSummary()}
	if err := r.Write(o, values); err != nil {
		t.Fatal(err)
	}
	return x.row
}

// oldCells are the cells Result.Write gave StreamWriter.SetRow.
func oldCells(o Outcome, values []string) []any {
	cells := []any{
		o.Row, xlsxText(o.Email), string(o.Status),
		xlsxCode(o.Rcpt.Code), xlsxText(o.Rcpt.Enhanced), xlsxText(o.Rcpt.Text),
		xlsxCode(o.Data.Code), xlsxText(o.Data.Enhanced), xlsxText(o.Data.Text),
		o.Attempts, xlsxText(o.MessageID), xlsxText(o.Error)}
	for _, v := range values {
		cells = append(cells, xlsxText(v))
	}
	return cells
}

// xlsxStrings are cell texts excelize treats specially one way or another.
var xlsxStrings = append([]string{
	"", " ", "\t", "x\n", "\rx", "a\nb", `"quoted" & 'single' <tag>`, "\x00\x01\x0b\x1f",
	"bad \xff utf-8", "\ufffe\uffff\ufffd", "Zoë 日本 😀", "_x0041_", "_x005F_x0041_", "_x005F_", "_x005f_",
	"a_xD800_b", "_x00E9__x00e9_", "_x12G4_", "_x_", "&#xA;", "x\u2028y",
	strings.Repeat("é", excelize.TotalCellChars+10), strings.Repeat("😀", excelize.TotalCellChars/2+3),
}, hostile...)

func TestXLSXRowsAsExcelize(t *testing.T) {
	rows := sampleRows()
	for i, s := range xlsxStrings {
		rows = append(rows, struct {
			o      Outcome
			values []string
		}{Outcome{Row: 10 + i, Email: s, Status: Failed, Rcpt: Reply{Code: -1, Enhanced: s, Text: s}, Data: Reply{Text: s},
			Attempts: -i, MessageID: s, Error: s}, []string{s, "", s}})
	}
	for _, n := range []int{2, 27, 1_048_576} {
		for _, row := range rows {
			want := excelizeRow(t, n, oldCells(row.o, row.values))
			if got := ourRow(t, n, row.o, row.values); !bytes.Equal(got, want) {
				t.Errorf("row %d %q:\ngot  %s\nwant %s", n, row.values, got, want)
			}
		}
	}
}

func FuzzXLSXRow(f *testing.F) {
	for _, s := range xlsxStrings[:len(xlsxStrings)-2] {
		f.Add(s, 250, 2)
	}
	f.Fuzz(func(t *testing.T, s string, code, n int) {
		n = 2 + int(uint(n)%uint(excelize.TotalRows-1))
		o := Outcome{Row: n, Email: s, Status: Delivered, Rcpt: Reply{Code: code, Text: s}, Attempts: code, Error: s}
		values := []string{s, s + s}
		want := excelizeRow(t, n, oldCells(o, values))
		if got := ourRow(t, n, o, values); !bytes.Equal(got, want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	})
}

// TestResultLargeXLSX writes a results sheet of several compression chunks
// and reads every cell back.
func TestResultLargeXLSX(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 4 MB of sheet XML")
	}
	path := filepath.Join(t.TempDir(), "r.xlsx")
	header := []string{"name", "note"}
	r, err := CreateResult(path, header)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8000
	var wantRows [][]string
	for row := 2; row < 2+n; row++ {
		o := Outcome{Row: row, Email: fmt.Sprintf("u%d@example.org", row), Status: statuses[row%len(statuses)],
			Rcpt: Reply{250, "2.1.5", "ok"}, Attempts: row % 3, MessageID: fmt.Sprintf("<%d@x>", row)}
		values := []string{fmt.Sprintf("Zoë %d", row), hostile[row%len(hostile)]}
		if err := r.Write(o, values); err != nil {
			t.Fatal(err)
		}
		wantRows = append(wantRows, trimRow(want(o, values)))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := excelize.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := f.GetRows(ResultSheet)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n+1 {
		t.Fatalf("got %d rows, want %d", len(got), n+1)
	}
	for i, w := range wantRows {
		if !reflect.DeepEqual(got[i+1], w) {
			t.Fatalf("row %d: got %q, want %q", i+2, got[i+1], w)
		}
	}
}
