package merge

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/xuri/excelize/v2"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// Bounds against zip bombs (xlsxLimits): the whole unzipped workbook may
// not pass xlsxUnzipLimit, and no part larger than xlsxXMLLimit is held in
// memory (excelize spills such a worksheet to a temporary file, the fast
// reader streams it).
const (
	xlsxUnzipLimit = 2 << 30
	xlsxXMLLimit   = 16 << 20
)

// ListOptions says how to read a recipient list. The zero value reads a
// UTF-8 CSV with a detected delimiter, or the first non-empty XLSX sheet,
// taking addresses from the column "email".
type ListOptions struct {
	// EmailColumn is the column holding the envelope address; "" means
	// "email". Matched case-insensitively after trimming.
	EmailColumn string
	// Delimiter is the CSV delimiter; 0 detects ',', ';' or '\t' from the
	// header line (counting outside quotes; ',' wins a tie).
	Delimiter rune
	// Encoding is the CSV charset: "" or "utf-8", "utf-16" (BOM required),
	// "gb18030", "gbk", "shift_jis", "windows-1252", "latin1"/"iso-8859-1".
	// A byte-order mark at the start of the file wins over this setting.
	Encoding string
	// Sheet is, for XLSX, a sheet name or a 1-based index; "" means the
	// first sheet that has data.
	Sheet string
}

// Recipient is one data row of a list.
type Recipient struct {
	// Row is the 1-based row number as a spreadsheet program shows it: the
	// header is row 1; for CSV, the physical line on which the record starts.
	Row int
	// Values are the cells in header order, always len(Header()).
	Values []string
	// Address is the normalised envelope address ("" if invalid).
	Address string
	// UTF8 is true if Address has a non-ASCII local part (needs SMTPUTF8).
	UTF8 bool
}

// List streams the rows of a recipient list. It is not safe for concurrent
// use.
type List struct {
	path     string
	name     string // base name, used in errors
	header   []string
	emailIdx int
	sheet    string // the XLSX sheet read; "" for CSV
	warning  error
	// xlsxFast is true when an XLSX list is read by the fast reader
	// (xlsxfast.go) rather than excelize's row iterator; tests check it.
	xlsxFast bool

	// next returns the next raw row and its number; a non-nil rowErr costs
	// only that row, a non-nil err ends the file.
	next   func() (row int, cells []string, rowErr, err error)
	closer func() error
}

// OpenList opens a CSV (.csv, .txt, .tsv) or XLSX (.xlsx) list, chosen by
// extension, and reads its header row (the first non-blank row). It fails
// with an error naming the file if the file cannot be read, the header is
// empty, or no column matches opts.EmailColumn (that error wraps
// ErrMissingColumn).
func OpenList(path string, opts ListOptions) (*List, error) {
	return openList(path, opts, true, xlsxLimits{unzip: xlsxUnzipLimit, part: xlsxXMLLimit})
}

// openList is OpenList; fast false reads XLSX through excelize only, so
// that tests can compare the two readers, and lim lets them shrink the
// limits.
func openList(path string, opts ListOptions, fast bool, lim xlsxLimits) (*List, error) {
	l := &List{path: path, name: filepath.Base(path)}
	var err error
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".csv", ".txt", ".tsv":
		err = l.openCSV(opts)
	case ".xlsx", ".xlsm":
		err = l.openXLSX(opts, fast, lim)
	default:
		return nil, fmt.Errorf("merge: %s: unknown list type %q (want .csv, .txt, .tsv or .xlsx)", l.name, ext)
	}
	if err != nil {
		return nil, err
	}
	if err := l.readHeader(opts); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// Path returns the path the list was opened with.
func (l *List) Path() string { return l.path }

// Header returns the header cells, trimmed, in file order. Trailing empty
// header cells are dropped.
func (l *List) Header() []string { return l.header }

// EmailIndex returns the index of the email column in Header().
func (l *List) EmailIndex() int { return l.emailIdx }

// Sheet returns the name of the XLSX sheet the rows come from, as chosen by
// ListOptions.Sheet; "" for a CSV list.
func (l *List) Sheet() string { return l.sheet }

// Warning returns a *RowError wrapping ErrFewFields if the row most recently
// returned by Next was short and has been padded, or nil. Such a row is still
// valid; the caller may log the warning.
func (l *List) Warning() error { return l.warning }

// Close releases the file.
func (l *List) Close() error {
	if l.closer == nil {
		return nil
	}
	c := l.closer
	l.closer = nil
	return c()
}

func (l *List) readHeader(opts ListOptions) error {
	var cells []string
	for {
		_, c, rowErr, err := l.next()
		if err == io.EOF {
			return fmt.Errorf("merge: %s: no header row", l.name)
		}
		if err == nil {
			err = rowErr
		}
		if err != nil {
			return fmt.Errorf("merge: %s: header: %w", l.name, err)
		}
		if !blank(c) {
			cells = c
			break
		}
	}
	h := make([]string, len(cells))
	for i, c := range cells {
		h[i] = strings.TrimSpace(c)
		if !utf8.ValidString(h[i]) {
			return fmt.Errorf("merge: %s: header: %w", l.name, ErrEncoding)
		}
	}
	for len(h) > 0 && h[len(h)-1] == "" {
		h = h[:len(h)-1]
	}
	l.header = h
	want := opts.EmailColumn
	if strings.TrimSpace(want) == "" {
		want = "email"
	}
	idx, err := findColumn(h, want)
	if err != nil {
		return fmt.Errorf("merge: %s has no email column %q (columns: %s): %w", l.name, strings.TrimSpace(want), strings.Join(h, ", "), err)
	}
	l.emailIdx = idx
	return nil
}

// findColumn returns the index of name in header, compared
// case-insensitively after trimming.
func findColumn(header []string, name string) (int, error) {
	name = strings.TrimSpace(name)
	idx := -1
	for i, h := range header {
		if strings.EqualFold(strings.TrimSpace(h), name) {
			if idx >= 0 {
				return -1, ErrDuplicateColumn
			}
			idx = i
		}
	}
	if idx < 0 {
		return -1, ErrMissingColumn
	}
	return idx, nil
}

func blank(cells []string) bool {
	for _, c := range cells {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

// Next returns the next data row, or io.EOF at the end. For a problem with
// one row it returns the Recipient (Row and Values filled as far as
// possible) and a *RowError; the caller reports the row and calls Next
// again. Any other error is fatal for the file. Blank rows are skipped.
func (l *List) Next() (Recipient, error) {
	l.warning = nil
	for {
		row, cells, rowErr, err := l.next()
		if err != nil {
			if err == io.EOF {
				return Recipient{}, io.EOF
			}
			return Recipient{}, fmt.Errorf("merge: %s: %w", l.name, err)
		}
		if rowErr == nil && blank(cells) {
			continue
		}
		rec := Recipient{Row: row, Values: make([]string, len(l.header))}
		copy(rec.Values, cells)
		if rowErr != nil {
			return rec, &RowError{File: l.name, Row: row, Err: rowErr}
		}
		// Excel often exports empty trailing columns; only extra cells with
		// content make the row ambiguous.
		if len(cells) > len(l.header) && !blank(cells[len(l.header):]) {
			return rec, &RowError{File: l.name, Row: row,
				Err: wrapf(ErrTooManyFields, "%d cells, header has %d", len(cells), len(l.header))}
		}
		for i, v := range rec.Values {
			if !utf8.ValidString(v) {
				col := l.header[i]
				return rec, &RowError{File: l.name, Row: row, Column: col, Err: ErrEncoding}
			}
		}
		addr, u8, err := normalizeAddress(rec.Values[l.emailIdx])
		if err != nil {
			return rec, &RowError{File: l.name, Row: row, Column: l.header[l.emailIdx], Err: err}
		}
		rec.Address, rec.UTF8 = addr, u8
		if len(cells) < len(l.header) {
			l.warning = &RowError{File: l.name, Row: row,
				Err: wrapf(ErrFewFields, "%d cells, header has %d", len(cells), len(l.header))}
		}
		return rec, nil
	}
}

// csvDecoder maps an Encoding option to a decoder; nil means UTF-8.
func csvDecoder(name string) (encoding.Encoding, error) {
	switch strings.ToLower(strings.ReplaceAll(strings.TrimSpace(name), "_", "-")) {
	case "", "utf-8", "utf8":
		return nil, nil
	case "utf-16":
		return unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM), nil
	case "utf-16le":
		return unicode.UTF16(unicode.LittleEndian, unicode.IgnoreBOM), nil
	case "utf-16be":
		return unicode.UTF16(unicode.BigEndian, unicode.IgnoreBOM), nil
	case "gb18030":
		return simplifiedchinese.GB18030, nil
	case "gbk", "gb2312", "cp936":
		return simplifiedchinese.GBK, nil
	case "shift-jis", "sjis", "shiftjis", "cp932", "windows-31j":
		return japanese.ShiftJIS, nil
	case "windows-1252", "cp1252":
		return charmap.Windows1252, nil
	case "latin1", "latin-1", "iso-8859-1", "iso8859-1":
		return charmap.ISO8859_1, nil
	}
	return nil, fmt.Errorf("unknown encoding %q", name)
}

func (l *List) openCSV(opts ListOptions) error {
	enc, err := csvDecoder(opts.Encoding)
	if err != nil {
		return fmt.Errorf("merge: %s: %w", l.name, err)
	}
	f, err := os.Open(l.path)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	l.closer = f.Close
	br := bufio.NewReaderSize(f, 64<<10)
	// A byte-order mark is the strongest evidence of the charset there is,
	// so it wins over the option.
	bom, _ := br.Peek(3)
	var r io.Reader = br
	switch {
	case bytes.HasPrefix(bom, []byte("\xEF\xBB\xBF")):
		br.Discard(3)
	case bytes.HasPrefix(bom, []byte("\xFF\xFE")):
		r = transform.NewReader(br, unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM).NewDecoder())
	case bytes.HasPrefix(bom, []byte("\xFE\xFF")):
		r = transform.NewReader(br, unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM).NewDecoder())
	case enc != nil:
		r = transform.NewReader(br, enc.NewDecoder())
	}
	dr := bufio.NewReaderSize(r, 64<<10)
	delim := opts.Delimiter
	if delim == 0 {
		delim = detectDelimiter(dr)
	}
	cr := csv.NewReader(dr)
	cr.Comma = delim
	cr.FieldsPerRecord = -1
	cr.ReuseRecord = true
	l.next = func() (int, []string, error, error) {
		rec, err := cr.Read()
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) && pe.Err != nil && pe.Err != csv.ErrFieldCount {
				// encoding/csv resumes on the next line after a bad quote,
				// so only this record is lost.
				return pe.StartLine, rec, wrapf(ErrParse, "%v", err), nil
			}
			return 0, nil, nil, err
		}
		line := 0
		if len(rec) > 0 {
			line, _ = cr.FieldPos(0)
		}
		return line, rec, nil, nil
	}
	return nil
}

// detectDelimiter counts ',', ';' and '\t' outside quotes on the first line
// (a quoted newline does not end it) and picks the most frequent.
func detectDelimiter(r *bufio.Reader) rune {
	buf, _ := r.Peek(r.Size())
	counts := map[byte]int{}
	inQuote := false
	for _, c := range buf {
		if c == '"' {
			inQuote = !inQuote
			continue
		}
		if inQuote {
			continue
		}
		if c == '\n' || c == '\r' {
			break
		}
		if c == ',' || c == ';' || c == '\t' {
			counts[c]++
		}
	}
	best := byte(',')
	for _, c := range []byte{';', '\t'} {
		if counts[c] > counts[best] {
			best = c
		}
	}
	return rune(best)
}

func (l *List) openXLSX(opts ListOptions, fast bool, lim xlsxLimits) error {
	if fast {
		// The fast reader takes the whole list or none of it, and none of
		// any file excelize would not open: then excelize opens it below
		// and gives its own error.
		if x, err := openXLSXFast(l.path, opts.Sheet, lim); err == nil {
			l.xlsxFast = true
			l.sheet = x.sheet
			l.next = x.next
			l.closer = x.Close
			return nil
		}
	}
	f, err := excelize.OpenFile(l.path, lim.excelize())
	if err != nil {
		return fmt.Errorf("merge: %s: %w", l.name, err)
	}
	sheet, err := pickSheet(f.GetSheetList(), opts.Sheet, func(s string) bool { return sheetHasData(f, s) })
	if err != nil {
		f.Close()
		return fmt.Errorf("merge: %s: %w", l.name, err)
	}
	if err := checkSheetXML(l.path, sheet, lim); err != nil {
		f.Close()
		return fmt.Errorf("merge: %s: %w", l.name, err)
	}
	rows, err := f.Rows(sheet)
	if err != nil {
		f.Close()
		return fmt.Errorf("merge: %s: sheet %q: %w", l.name, sheet, err)
	}
	l.sheet = sheet
	l.closer = func() error {
		err := rows.Close()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	}
	// excelize's Next yields once per row number, including rows missing
	// from the XML, so counting calls gives the row number the user sees.
	n := 0
	l.next = func() (int, []string, error, error) {
		if !rows.Next() {
			if err := rows.Error(); err != nil {
				return 0, nil, nil, err
			}
			return 0, nil, nil, io.EOF
		}
		n++
		cells, err := rows.Columns()
		if err != nil {
			return 0, nil, nil, err
		}
		return n, cells, nil, nil
	}
	return nil
}

// pickSheet resolves the Sheet option among sheets: a name
// (case-insensitive, as Excel compares them), else a 1-based index; "" is
// the first sheet for which hasData is true.
func pickSheet(sheets []string, want string, hasData func(string) bool) (string, error) {
	if len(sheets) == 0 {
		return "", errors.New("no sheets")
	}
	want = strings.TrimSpace(want)
	if want == "" {
		for _, s := range sheets {
			if hasData(s) {
				return s, nil
			}
		}
		return sheets[0], nil
	}
	for _, s := range sheets {
		if strings.EqualFold(s, want) {
			return s, nil
		}
	}
	if i, err := strconv.Atoi(want); err == nil && i >= 1 && i <= len(sheets) {
		return sheets[i-1], nil
	}
	return "", fmt.Errorf("no sheet %q (sheets: %s)", want, strings.Join(sheets, ", "))
}

func sheetHasData(f *excelize.File, sheet string) bool {
	rows, err := f.Rows(sheet)
	if err != nil {
		return false
	}
	defer rows.Close()
	for rows.Next() {
		cells, err := rows.Columns()
		if err != nil {
			return false
		}
		if !blank(cells) {
			return true
		}
	}
	return false
}
