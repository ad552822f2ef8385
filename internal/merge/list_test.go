package merge

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/unicode"
)

// row is what a test expects of one call to Next.
type row struct {
	Row    int
	Values []string
	Addr   string
	Err    error // sentinel the error must wrap, nil for none
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func encode(t *testing.T, e encoding.Encoding, s string) []byte {
	t.Helper()
	b, err := e.NewEncoder().Bytes([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readAll drains a list and returns its header and rows.
func readAll(t *testing.T, path string, opts ListOptions) ([]string, []row) {
	t.Helper()
	l, err := OpenList(path, opts)
	if err != nil {
		t.Fatalf("OpenList: %v", err)
	}
	defer l.Close()
	var rows []row
	for i := 0; i < 1000; i++ {
		rec, err := l.Next()
		if err == io.EOF {
			return l.Header(), rows
		}
		r := row{Row: rec.Row, Values: rec.Values, Addr: rec.Address}
		if err != nil {
			var re *RowError
			if !errors.As(err, &re) {
				t.Fatalf("Next: fatal error %v", err)
			}
			if re.Row != rec.Row {
				t.Fatalf("RowError.Row got %d, want %d", re.Row, rec.Row)
			}
			for _, s := range []error{ErrTooManyFields, ErrNotAddress, ErrParse, ErrEncoding} {
				if errors.Is(err, s) {
					r.Err = s
				}
			}
			if r.Err == nil {
				t.Fatalf("Next: row error %v wraps no known sentinel", err)
			}
		}
		rows = append(rows, r)
	}
	t.Fatal("Next never returned io.EOF")
	return nil, nil
}

func TestCSV(t *testing.T) {
	twoRows := []row{
		{Row: 2, Values: []string{"a@example.org", "Ann"}, Addr: "a@example.org"},
		{Row: 3, Values: []string{"b@example.org", "Bob"}, Addr: "b@example.org"},
	}
	tests := []struct {
		name   string
		file   string
		data   []byte
		opts   ListOptions
		header []string
		rows   []row
	}{
		{"comma", "r.csv", []byte("email,name\na@example.org,Ann\nb@example.org,Bob\n"), ListOptions{},
			[]string{"email", "name"}, twoRows},
		{"semicolon", "r.csv", []byte("email;name\na@example.org;Ann\nb@example.org;Bob\n"), ListOptions{},
			[]string{"email", "name"}, twoRows},
		{"tab", "r.tsv", []byte("email\tname\na@example.org\tAnn\nb@example.org\tBob\n"), ListOptions{},
			[]string{"email", "name"}, twoRows},
		{"explicit delimiter", "r.txt", []byte("email|name\na@example.org|Ann\nb@example.org|Bob\n"), ListOptions{Delimiter: '|'},
			[]string{"email", "name"}, twoRows},
		{"comma inside quotes does not count", "r.csv", []byte("\"e,m,a,i,l\";name;x\na@example.org;Ann;\nb@example.org;Bob;\n"), ListOptions{EmailColumn: "e,m,a,i,l"},
			[]string{"e,m,a,i,l", "name", "x"}, []row{
				{Row: 2, Values: []string{"a@example.org", "Ann", ""}, Addr: "a@example.org"},
				{Row: 3, Values: []string{"b@example.org", "Bob", ""}, Addr: "b@example.org"},
			}},
		{"utf-8 BOM and CRLF", "r.CSV", []byte("\xEF\xBB\xBF Email ,name\r\na@example.org,Ann\r\nb@example.org,Bob\r\n"), ListOptions{},
			[]string{"Email", "name"}, twoRows},
		{"utf-16le BOM", "r.csv", encode(t, unicode.UTF16(unicode.LittleEndian, unicode.UseBOM), "email,name\na@example.org,Zoë\n"), ListOptions{},
			[]string{"email", "name"}, []row{{Row: 2, Values: []string{"a@example.org", "Zoë"}, Addr: "a@example.org"}}},
		{"utf-16be BOM", "r.csv", encode(t, unicode.UTF16(unicode.BigEndian, unicode.UseBOM), "email\tname\na@example.org\t张伟\n"), ListOptions{},
			[]string{"email", "name"}, []row{{Row: 2, Values: []string{"a@example.org", "张伟"}, Addr: "a@example.org"}}},
		{"gb18030", "r.csv", encode(t, simplifiedchinese.GB18030, "邮箱,姓名\na@example.org,张伟\n"), ListOptions{Encoding: "gb18030", EmailColumn: "邮箱"},
			[]string{"邮箱", "姓名"}, []row{{Row: 2, Values: []string{"a@example.org", "张伟"}, Addr: "a@example.org"}}},
		{"gbk", "r.csv", encode(t, simplifiedchinese.GBK, "email,姓名\na@example.org,李娜\n"), ListOptions{Encoding: "GBK"},
			[]string{"email", "姓名"}, []row{{Row: 2, Values: []string{"a@example.org", "李娜"}, Addr: "a@example.org"}}},
		{"shift_jis", "r.csv", encode(t, japanese.ShiftJIS, "email,名前\na@example.org,山田太郎\n"), ListOptions{Encoding: "shift_jis"},
			[]string{"email", "名前"}, []row{{Row: 2, Values: []string{"a@example.org", "山田太郎"}, Addr: "a@example.org"}}},
		{"windows-1252", "r.csv", encode(t, charmap.Windows1252, "email,name\na@example.org,Renée €\n"), ListOptions{Encoding: "windows-1252"},
			[]string{"email", "name"}, []row{{Row: 2, Values: []string{"a@example.org", "Renée €"}, Addr: "a@example.org"}}},
		{"latin1", "r.csv", encode(t, charmap.ISO8859_1, "email,name\na@example.org,Søren\n"), ListOptions{Encoding: "iso-8859-1"},
			[]string{"email", "name"}, []row{{Row: 2, Values: []string{"a@example.org", "Søren"}, Addr: "a@example.org"}}},
		{"latin1 read as utf-8 is a row error", "r.csv", encode(t, charmap.ISO8859_1, "email,name\na@example.org,Søren\nb@example.org,Bob\n"), ListOptions{},
			[]string{"email", "name"}, []row{
				{Row: 2, Values: []string{"a@example.org", "S\xf8ren"}, Err: ErrEncoding},
				{Row: 3, Values: []string{"b@example.org", "Bob"}, Addr: "b@example.org"},
			}},
		{"quoted newlines keep row numbers", "r.csv",
			[]byte("email,note\na@example.org,\"line one\r\nline two\nline three\"\nb@example.org,plain\n\nc@example.org,\"x\"\"y\"\n"), ListOptions{},
			[]string{"email", "note"}, []row{
				{Row: 2, Values: []string{"a@example.org", "line one\nline two\nline three"}, Addr: "a@example.org"},
				{Row: 5, Values: []string{"b@example.org", "plain"}, Addr: "b@example.org"},
				{Row: 7, Values: []string{"c@example.org", `x"y`}, Addr: "c@example.org"},
			}},
		{"ragged rows", "r.csv",
			[]byte("email,name,plan\na@example.org,Ann\nb@example.org,Bob,gold,extra\nc@example.org,Cy,silver,,\n,,\nd@example.org\n"), ListOptions{},
			[]string{"email", "name", "plan"}, []row{
				{Row: 2, Values: []string{"a@example.org", "Ann", ""}, Addr: "a@example.org"},
				{Row: 3, Values: []string{"b@example.org", "Bob", "gold"}, Err: ErrTooManyFields},
				{Row: 4, Values: []string{"c@example.org", "Cy", "silver"}, Addr: "c@example.org"},
				{Row: 6, Values: []string{"d@example.org", "", ""}, Addr: "d@example.org"},
			}},
		{"bad quote costs one row", "r.csv",
			[]byte("email,name\na@example.org,An\"n\nb@example.org,\"Bob\"x\nc@example.org,Cy\n"), ListOptions{},
			[]string{"email", "name"}, []row{
				{Row: 2, Values: []string{"a@example.org", ""}, Err: ErrParse},
				{Row: 3, Values: []string{"b@example.org", ""}, Err: ErrParse},
				{Row: 4, Values: []string{"c@example.org", "Cy"}, Addr: "c@example.org"},
			}},
		{"bad addresses", "r.csv",
			[]byte("name,EMAIL,\nAnn,x@\nBob,mailto:Bob@Example.ORG\nEve,x@y.org> NOTIFY=NEVER\n"), ListOptions{},
			[]string{"name", "EMAIL"}, []row{
				{Row: 2, Values: []string{"Ann", "x@"}, Err: ErrNotAddress},
				{Row: 3, Values: []string{"Bob", "mailto:Bob@Example.ORG"}, Addr: "Bob@example.org"},
				{Row: 4, Values: []string{"Eve", "x@y.org> NOTIFY=NEVER"}, Err: ErrNotAddress},
			}},
		{"no trailing newline", "r.csv", []byte("email\na@example.org"), ListOptions{},
			[]string{"email"}, []row{{Row: 2, Values: []string{"a@example.org"}, Addr: "a@example.org"}}},
		{"header only", "r.csv", []byte("email,name\n"), ListOptions{}, []string{"email", "name"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.file, tt.data)
			header, rows := readAll(t, p, tt.opts)
			if !reflect.DeepEqual(header, tt.header) {
				t.Fatalf("header got %q, want %q", header, tt.header)
			}
			if len(rows) != len(tt.rows) {
				t.Fatalf("got %d rows %+v, want %d %+v", len(rows), rows, len(tt.rows), tt.rows)
			}
			for i := range rows {
				g, w := rows[i], tt.rows[i]
				if g.Row != w.Row || g.Addr != w.Addr || g.Err != w.Err {
					t.Errorf("row %d: got %+v, want %+v", i, g, w)
				}
				if w.Err != ErrParse && !reflect.DeepEqual(g.Values, w.Values) {
					t.Errorf("row %d values: got %q, want %q", i, g.Values, w.Values)
				}
			}
		})
	}
}

func TestCSVWarning(t *testing.T) {
	p := writeFile(t, "r.csv", []byte("email,name\na@example.org\nb@example.org,Bob\n"))
	l, err := OpenList(p, ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Next(); err != nil {
		t.Fatal(err)
	}
	if w := l.Warning(); !errors.Is(w, ErrFewFields) {
		t.Fatalf("Warning() got %v, want ErrFewFields", w)
	}
	if _, err := l.Next(); err != nil {
		t.Fatal(err)
	}
	if w := l.Warning(); w != nil {
		t.Fatalf("Warning() got %v, want nil", w)
	}
}

func TestOpenListErrors(t *testing.T) {
	tests := []struct {
		name, file string
		data       []byte
		opts       ListOptions
		wantIs     error
		wantIn     []string
	}{
		{"missing column", "people.csv", []byte("mail,name\na@x.org,Ann\n"), ListOptions{}, ErrMissingColumn, []string{"people.csv", `"email"`, "mail, name"}},
		{"missing named column", "people.csv", []byte("email,name\n"), ListOptions{EmailColumn: "Address"}, ErrMissingColumn, []string{"people.csv", `"Address"`}},
		{"duplicate column", "people.csv", []byte("email,Email\n"), ListOptions{}, ErrDuplicateColumn, []string{"people.csv"}},
		{"empty file", "empty.csv", nil, ListOptions{}, nil, []string{"empty.csv", "no header"}},
		{"blank header", "blank.csv", []byte(",,\n\n"), ListOptions{}, nil, []string{"blank.csv"}},
		{"unknown encoding", "r.csv", []byte("email\n"), ListOptions{Encoding: "ebcdic"}, nil, []string{"r.csv", "ebcdic"}},
		{"unknown extension", "r.ods", []byte("email\n"), ListOptions{}, nil, []string{"r.ods"}},
		{"not a zip", "r.xlsx", []byte("email\n"), ListOptions{}, nil, []string{"r.xlsx"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, tt.file, tt.data)
			l, err := OpenList(p, tt.opts)
			if err == nil {
				l.Close()
				t.Fatal("OpenList succeeded, want an error")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("error %v does not wrap %v", err, tt.wantIs)
			}
			for _, s := range tt.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if !strings.HasPrefix(err.Error(), "merge: ") {
				t.Errorf("error %q lacks the merge: prefix", err)
			}
		})
	}
	if _, err := OpenList(filepath.Join(t.TempDir(), "none.csv"), ListOptions{}); err == nil || !strings.Contains(err.Error(), "none.csv") {
		t.Errorf("missing file: got %v, want an error naming none.csv", err)
	}
}

// makeXLSX writes a workbook with a decoy empty first sheet, a data sheet
// with typed cells, and a third sheet.
func makeXLSX(t *testing.T) string {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Sheet1 stays empty so that "first sheet with data" has to look further.
	_, err := f.NewSheet("People")
	must(err)
	_, err = f.NewSheet("Other")
	must(err)
	must(f.SetSheetRow("People", "A1", &[]any{" Email ", "Name", "Joined", "Amount", "Zip", "Total"}))
	must(f.SetSheetRow("People", "A2", &[]any{"a@example.org", "Ann"}))
	dateStyle, err := f.NewStyle(&excelize.Style{NumFmt: 14}) // m/d/yyyy style built-in
	must(err)
	must(f.SetCellValue("People", "C2", 45292)) // 2024-01-01 as a serial
	must(f.SetCellStyle("People", "C2", "C2", dateStyle))
	must(f.SetCellValue("People", "D2", 1234.5))
	must(f.SetCellStr("People", "E2", "00742"))
	must(f.SetCellFormula("People", "F2", "D2*2"))
	must(f.SetCellValue("People", "F2", 2469)) // the cached value
	must(f.SetCellFormula("People", "F2", "D2*2"))
	// Row 3 left empty; row 4 has only a trailing-empty row shape.
	must(f.SetSheetRow("People", "A4", &[]any{"B@Example.org", "Bob"}))
	must(f.SetSheetRow("People", "A5", &[]any{"", ""}))
	must(f.SetSheetRow("People", "A6", &[]any{"not-an-address", "Eve"}))
	must(f.SetSheetRow("People", "A7", &[]any{"c@example.org", "Cy", nil, nil, nil, nil, "surplus"}))
	must(f.SetSheetRow("Other", "A1", &[]any{"email"}))
	must(f.SetSheetRow("Other", "A2", &[]any{"o@example.org"}))
	p := filepath.Join(t.TempDir(), "list.XLSX")
	must(f.SaveAs(p))
	return p
}

func TestXLSX(t *testing.T) {
	p := makeXLSX(t)
	header, rows := readAll(t, p, ListOptions{})
	wantHeader := []string{"Email", "Name", "Joined", "Amount", "Zip", "Total"}
	if !reflect.DeepEqual(header, wantHeader) {
		t.Fatalf("header got %q, want %q", header, wantHeader)
	}
	want := []row{
		{Row: 2, Values: []string{"a@example.org", "Ann", "01-01-24", "1234.5", "00742", "2469"}, Addr: "a@example.org"},
		{Row: 4, Values: []string{"B@Example.org", "Bob", "", "", "", ""}, Addr: "B@example.org"},
		{Row: 6, Values: []string{"not-an-address", "Eve", "", "", "", ""}, Err: ErrNotAddress},
		{Row: 7, Values: []string{"c@example.org", "Cy", "", "", "", ""}, Err: ErrTooManyFields},
	}
	if len(rows) != len(want) {
		t.Fatalf("got %d rows %+v, want %d", len(rows), rows, len(want))
	}
	for i := range rows {
		if !reflect.DeepEqual(rows[i], want[i]) {
			t.Errorf("row %d: got %+v, want %+v", i, rows[i], want[i])
		}
	}

	for _, sheet := range []string{"other", "3"} {
		t.Run("sheet "+sheet, func(t *testing.T) {
			_, rows := readAll(t, p, ListOptions{Sheet: sheet})
			if len(rows) != 1 || rows[0].Addr != "o@example.org" || rows[0].Row != 2 {
				t.Fatalf("got %+v, want one row o@example.org at row 2", rows)
			}
		})
	}
	if _, err := OpenList(p, ListOptions{Sheet: "Nope"}); err == nil || !strings.Contains(err.Error(), "Nope") {
		t.Fatalf("unknown sheet: got %v, want an error naming it", err)
	}
}
