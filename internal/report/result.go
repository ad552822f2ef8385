package report

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/csv"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/xuri/excelize/v2"
)

// FixedColumns are the columns every result file starts with, before the
// list's own columns. Callers must not modify it.
var FixedColumns = []string{
	"row", "email", "status",
	"rcpt_code", "rcpt_enhanced", "rcpt_text",
	"data_code", "data_enhanced", "data_text",
	"attempts", "message_id", "error",
}

// Sheet names in an XLSX result. Data past one sheet's row limit continues
// on "results 2", "results 3", and so on.
const (
	ResultSheet  = "results"
	SummarySheet = "summary"
)

// resultSheetName returns the name of the n-th (1-based) results sheet.
func resultSheetName(n int) string {
	if n == 1 {
		return ResultSheet
	}
	return ResultSheet + " " + strconv.Itoa(n)
}

// Result is a result file being written. Rows go to a temporary file that
// Close renames into place; until then an older file at the same path is
// untouched. A Result is written by one goroutine: rows come in list order.
type Result struct {
	path   string
	tmp    *os.File
	xlsx   bool
	header []string
	last   int  // row number of the last row written
	done   bool // closed or aborted
	sum    *summary

	// CSV
	bw *bufio.Writer
	cw *csv.Writer

	// XLSX
	xf           *excelize.File
	sw           *excelize.StreamWriter
	sheets       int // results sheets started
	sheetRow     int // rows written on the current sheet, header included
	rowsPerSheet int // excelize.TotalRows; smaller in tests
	headerStyle  int
	// The data rows' XML, written by Write and spliced into each results
	// sheet by the zip writer at Close (see xlsxRows).
	rows *xlsxRows
}

// CreateResult starts a result file at path: XLSX (streamed) or CSV by the
// extension (".xlsx" or ".csv", any case). listHeader is the list's own
// columns, written after FixedColumns.
//
// The rows go to a temporary file (mode 0600) in the same folder; Close
// syncs it, renames it over path and fsyncs the folder, so an old result file
// is never truncated or half-written. Abort removes the temporary file.
func CreateResult(path string, listHeader []string) (*Result, error) {
	r := &Result{path: path, rowsPerSheet: excelize.TotalRows, sum: newSummary()}
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".xlsx":
		r.xlsx = true
	case ".csv":
	default:
		return nil, fmt.Errorf("report: result %s: extension %q: want .xlsx or .csv", path, ext)
	}
	r.header = append(make([]string, 0, len(FixedColumns)+len(listHeader)), FixedColumns...)
	for _, h := range listHeader {
		// The list's own "email" (or "status", "error") would stand twice
		// under one name beside ours; the list's keeps its cells, renamed.
		for _, f := range FixedColumns {
			if strings.EqualFold(strings.TrimSpace(h), f) {
				h = "list " + h
				break
			}
		}
		r.header = append(r.header, h)
	}
	removeStaleTemps(path)
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("report: result: %w", err)
	}
	r.tmp = tmp
	if err := r.start(); err != nil {
		r.Abort()
		return nil, err
	}
	return r, nil
}

// start writes the header.
func (r *Result) start() error {
	if !r.xlsx {
		r.bw = bufio.NewWriterSize(r.tmp, 64<<10)
		r.cw = csv.NewWriter(r.bw)
		rec := make([]string, len(r.header))
		for i, h := range r.header {
			rec[i] = csvCell(h)
		}
		return r.csvErr(r.cw.Write(rec))
	}
	r.xf = excelize.NewFile()
	if err := r.xf.SetSheetName("Sheet1", ResultSheet); err != nil {
		return r.xlsxErr(err)
	}
	style, err := r.xf.NewStyle(&excelize.Style{Font: &excelize.Font{Bold: true}})
	if err != nil {
		return r.xlsxErr(err)
	}
	r.headerStyle = style
	if r.rows, err = newXLSXRows(len(r.header)); err != nil {
		return r.xlsxErr(err)
	}
	return r.newSheet()
}

// newSheet starts the next results sheet and writes the header on it.
func (r *Result) newSheet() error {
	if r.sw != nil {
		if err := r.sw.Flush(); err != nil {
			return r.xlsxErr(err)
		}
	}
	r.sheets++
	name := resultSheetName(r.sheets)
	if r.sheets > 1 {
		if _, err := r.xf.NewSheet(name); err != nil {
			return r.xlsxErr(err)
		}
	}
	sw, err := r.xf.NewStreamWriter(name)
	if err != nil {
		return r.xlsxErr(err)
	}
	r.sw = sw
	if err := r.rows.startSheet(sheetXMLPath(sw.SheetID)); err != nil {
		return r.xlsxErr(err)
	}
	// Widths and panes must precede the first row in a stream writer.
	widths := []struct {
		from, to int
		w        float64
	}{{1, 1, 8}, {2, 2, 30}, {3, 3, 11}, {4, 5, 9}, {6, 6, 40}, {7, 8, 9}, {9, 9, 40}, {10, 10, 8}, {11, 11, 30}, {12, 12, 40}}
	for _, w := range widths {
		if err := sw.SetColWidth(w.from, w.to, w.w); err != nil {
			return r.xlsxErr(err)
		}
	}
	if err := sw.SetPanes(&excelize.Panes{Freeze: true, YSplit: 1, TopLeftCell: "A2", ActivePane: "bottomLeft"}); err != nil {
		return r.xlsxErr(err)
	}
	cells := make([]any, len(r.header))
	for i, h := range r.header {
		cells[i] = xlsxText(h)
	}
	r.sheetRow = 1
	if err := sw.SetRow("A1", cells, excelize.RowOpts{StyleID: r.headerStyle}); err != nil {
		return r.xlsxErr(err)
	}
	return nil
}

// Write adds one row: the outcome, then values, the row's own cells in the
// list's column order. Rows must come in input order: a row number not above
// the previous one is an error.
func (r *Result) Write(o Outcome, values []string) error {
	if r.done {
		return fmt.Errorf("report: result %s: already closed", r.path)
	}
	if o.Row <= r.last {
		return fmt.Errorf("report: result %s: row %d written after row %d: rows must come in list order", r.path, o.Row, r.last)
	}
	r.last = o.Row
	r.sum.add(&o)
	if !r.xlsx {
		rec := make([]string, 0, len(FixedColumns)+len(values))
		rec = append(rec,
			strconv.Itoa(o.Row), o.Email, string(o.Status),
			code(o.Rcpt.Code), o.Rcpt.Enhanced, o.Rcpt.Text,
			code(o.Data.Code), o.Data.Enhanced, o.Data.Text,
			strconv.Itoa(o.Attempts), o.MessageID, o.Error)
		rec = append(rec, values...)
		// Every line gets as many fields as the header, which strict CSV
		// readers require; a short list row is padded with empty cells.
		for len(rec) < len(r.header) {
			rec = append(rec, "")
		}
		for i := range rec {
			rec[i] = csvCell(rec[i])
		}
		return r.csvErr(r.cw.Write(rec))
	}
	if r.sheetRow >= r.rowsPerSheet {
		if err := r.newSheet(); err != nil {
			return err
		}
	}
	r.sheetRow++
	// The cells excelize's StreamWriter.SetRow would write for
	//	o.Row, xlsxText(o.Email), string(o.Status),
	//	xlsxCode(o.Rcpt.Code), xlsxText(o.Rcpt.Enhanced), xlsxText(o.Rcpt.Text),
	//	xlsxCode(o.Data.Code), xlsxText(o.Data.Enhanced), xlsxText(o.Data.Text),
	//	o.Attempts, xlsxText(o.MessageID), xlsxText(o.Error), xlsxText(values...)
	// at a tenth of its cost (TestXLSXRowsAsExcelize holds them equal).
	x := r.rows
	x.startRow(r.sheetRow)
	x.number(o.Row)
	x.text(xlsxText(o.Email))
	x.text(string(o.Status))
	x.code(o.Rcpt.Code)
	x.text(xlsxText(o.Rcpt.Enhanced))
	x.text(xlsxText(o.Rcpt.Text))
	x.code(o.Data.Code)
	x.text(xlsxText(o.Data.Enhanced))
	x.text(xlsxText(o.Data.Text))
	x.number(o.Attempts)
	x.text(xlsxText(o.MessageID))
	x.text(xlsxText(o.Error))
	for _, v := range values {
		x.text(xlsxText(v))
	}
	if err := x.endRow(); err != nil {
		return r.xlsxErr(err)
	}
	return nil
}

// Counts returns how many rows of each status have been written so far,
// for a caller that wants to print a summary (a CSV result has no summary
// sheet).
func (r *Result) Counts() map[Status]int {
	m := make(map[Status]int, len(statuses))
	for i, st := range statuses {
		m[st] = r.sum.status[i]
	}
	return m
}

// Close finishes the file (for XLSX, with the summary sheet), syncs it and
// renames it over the result path. On failure the temporary file is removed
// and an older result file is left as it was.
func (r *Result) Close() error {
	if r.done {
		return nil
	}
	if err := r.finish(); err != nil {
		r.Abort()
		return err
	}
	r.done = true
	if err := os.Rename(r.tmp.Name(), r.path); err != nil {
		os.Remove(r.tmp.Name())
		return fmt.Errorf("report: result: %w", err)
	}
	return syncDir(filepath.Dir(r.path))
}

// finish writes everything still buffered to the temporary file, syncs and
// closes it.
func (r *Result) finish() error {
	if r.xlsx {
		if err := r.sw.Flush(); err != nil {
			return r.xlsxErr(err)
		}
		if err := r.sum.write(r.xf); err != nil {
			return r.xlsxErr(err)
		}
		// excelize's Write builds the whole zip in a bytes.Buffer before
		// writing it (hundreds of MB for a million rows). Its zip writer is
		// pluggable: one on the temporary file streams the archive there,
		// and what Write then copies from its buffer is empty. Ours also
		// puts the data rows into their sheets.
		zw, err := r.rows.zipWriter(r.tmp)
		if err != nil {
			return r.xlsxErr(err)
		}
		r.xf.SetZipWriter(func(io.Writer) excelize.ZipWriter { return zw })
		if err := r.xf.Write(io.Discard); err != nil {
			return r.xlsxErr(err)
		}
		if err := r.xf.Close(); err != nil {
			return r.xlsxErr(err)
		}
		r.xf = nil
		r.rows.close()
	} else {
		r.cw.Flush()
		if err := r.cw.Error(); err != nil {
			return r.csvErr(err)
		}
		if err := r.bw.Flush(); err != nil {
			return r.csvErr(err)
		}
	}
	if err := r.tmp.Sync(); err != nil {
		return fmt.Errorf("report: result %s: %w", r.path, err)
	}
	if err := r.tmp.Close(); err != nil {
		return fmt.Errorf("report: result %s: %w", r.path, err)
	}
	return nil
}

// Abort discards the result: the temporary file is removed and the file at
// the result path, if any, is left as it was. Abort after Close does
// nothing.
func (r *Result) Abort() error {
	if r.done {
		return nil
	}
	r.done = true
	if r.xf != nil {
		r.xf.Close() // removes excelize's own temporary files
		r.xf = nil
	}
	if r.rows != nil {
		r.rows.close()
	}
	r.tmp.Close()
	if err := os.Remove(r.tmp.Name()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("report: result: %w", err)
	}
	return nil
}

func (r *Result) csvErr(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("report: result %s: %w", r.path, err)
}

func (r *Result) xlsxErr(err error) error {
	return fmt.Errorf("report: result %s: %w", r.path, err)
}

// code formats a reply code for CSV; 0 (no reply) is an empty cell.
func code(c int) string {
	if c == 0 {
		return ""
	}
	return strconv.Itoa(c)
}

// xlsxCode returns a reply code as a number cell; 0 (no reply) is no cell.
func xlsxCode(c int) any {
	if c == 0 {
		return nil
	}
	return c
}

// csvCell makes s safe to open in a spreadsheet: a cell beginning with a
// character that starts a formula (or a tab or CR, which some spreadsheets
// strip before looking) gets a leading single quote, so that it is shown as
// text (CWE-1236). Reply texts come from servers, values from the list: both
// are untrusted. A cell that already begins with a quote gets another, so
// that csvUncell can undo the escape exactly.
func csvCell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r', '\'':
		return "'" + s
	}
	return s
}

// csvUncell undoes csvCell.
func csvUncell(s string) string {
	if len(s) > 1 {
		switch s[1] {
		case '=', '+', '-', '@', '\t', '\r', '\'':
			if s[0] == '\'' {
				return s[1:]
			}
		}
	}
	return s
}

// maxCellUnits is Excel's limit on a cell's length, in UTF-16 code units.
const maxCellUnits = excelize.TotalCellChars

// xlsxText makes s storable in an XLSX cell: characters XML 1.0 cannot carry
// (most C0 controls, U+FFFE, U+FFFF, invalid UTF-8) become U+FFFD, and a
// value longer than Excel's cell limit is cut, with a note at the end saying
// so. excelize would otherwise drop such characters or cut silently.
func xlsxText(s string) string {
	if needsClean(s) {
		var b strings.Builder
		b.Grow(len(s))
		for i := 0; i < len(s); {
			c, n := utf8.DecodeRuneInString(s[i:])
			if (c == utf8.RuneError && n == 1) || !xmlChar(c) {
				c = utf8.RuneError
			}
			b.WriteRune(c)
			i += n
		}
		s = b.String()
	}
	if len(s) <= maxCellUnits { // bytes ≥ UTF-16 units: the common, short case
		return s
	}
	units := 0
	for _, c := range s {
		units += utf16.RuneLen(c)
	}
	if units <= maxCellUnits {
		return s
	}
	note := fmt.Sprintf(" [truncated: %d characters in all]", units)
	keep := maxCellUnits - len(note) // the note is ASCII: one unit a byte
	units = 0
	for i, c := range s {
		n := utf16.RuneLen(c)
		if units+n > keep {
			return s[:i] + note
		}
		units += n
	}
	return s
}

// needsClean reports whether s holds anything xlsxText must replace.
func needsClean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return true
		}
		if c >= 0x80 {
			for _, r := range s[i:] {
				if r == utf8.RuneError || !xmlChar(r) {
					return true
				}
			}
			return false
		}
	}
	return false
}

// xmlChar reports whether c is allowed in XML 1.0 (the Char production).
func xmlChar(c rune) bool {
	return c == '\t' || c == '\n' || c == '\r' ||
		(c >= 0x20 && c <= 0xD7FF) ||
		(c >= 0xE000 && c <= 0xFFFD) ||
		(c >= 0x10000 && c <= 0x10FFFF)
}

// staleTemp is how old a temporary result file must be before a later run
// takes it for the leftover of a process that was killed while writing:
// far longer than writing even a million-row result takes.
const staleTemp = 30 * time.Minute

// removeStaleTemps deletes temporary files that a killed run left beside
// path. Errors are ignored: they cost disk space, not correctness.
func removeStaleTemps(path string) {
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*"))
	for _, name := range old {
		if st, err := os.Stat(name); err == nil && st.Mode().IsRegular() && time.Since(st.ModTime()) > staleTemp {
			os.Remove(name)
		}
	}
}

// xlsxRows holds the data rows of an XLSX result as worksheet XML, in a
// temporary file, until Close puts them into their sheets.
//
// excelize's StreamWriter.SetRow cost about 15 µs a row (a cell name
// parsed and formatted per cell, a regular expression per string), the
// largest part of writing a result. So excelize writes each results sheet
// with only its column widths, panes and header row, and the zip writer
// from zipWriter splices these rows in before its </sheetData>. The rows
// are the bytes SetRow writes for the same cells (TestXLSXRowsAsExcelize).
type xlsxRows struct {
	file  *os.File // unlinked: a killed run leaves nothing behind
	spans []rowSpan
	cols  []string // column names, A, B, ...
	err   error    // the row being built cannot be written

	row    []byte // the row being built
	rowNum []byte // its number
	col    int    // 0-based column of the next cell

	chunk []byte         // rows not yet handed to def
	def   *chunkDeflater // deflates the rows into file; started by the first chunk
}

// rowSpan is where the rows of one results sheet are in the file: deflated
// (see chunkDeflater), with the length and CRC-32 of their XML.
type rowSpan struct {
	path     string // the sheet's part in the zip, xl/worksheets/sheetN.xml
	off, end int64
	raw      int64
	crc      uint32
}

// newXLSXRows starts an empty set of rows, with column names cached for
// width columns.
func newXLSXRows(width int) (*xlsxRows, error) {
	f, err := os.CreateTemp("", "bulkmail-rows-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	x := &xlsxRows{file: f}
	for i := 1; i <= min(width, excelize.MaxColumns); i++ {
		name, _ := excelize.ColumnNumberToName(i)
		x.cols = append(x.cols, name)
	}
	return x, nil
}

// sheetXMLPath is the zip part of the sheet excelize numbers id: the
// name NewFile and NewSheet give it.
func sheetXMLPath(id int) string {
	return "xl/worksheets/sheet" + strconv.Itoa(id) + ".xml"
}

// startSheet sends the rows from here on to the sheet whose part is path.
func (x *xlsxRows) startSheet(path string) error {
	if err := x.endSpan(); err != nil {
		return err
	}
	for _, s := range x.spans {
		if s.path == path {
			return fmt.Errorf("sheet part %s started twice", path)
		}
	}
	x.spans = append(x.spans, rowSpan{path: path, off: x.written(), end: x.written()})
	return nil
}

// endSpan writes out the current sheet's rows and records where they end.
func (x *xlsxRows) endSpan() error {
	if err := x.submit(); err != nil {
		return err
	}
	if x.def != nil {
		if err := x.def.flush(); err != nil {
			return err
		}
	}
	if n := len(x.spans); n > 0 {
		x.spans[n-1].end = x.written()
	}
	return nil
}

// written is how many deflated octets of rows are in the file.
func (x *xlsxRows) written() int64 {
	if x.def == nil {
		return 0
	}
	return x.def.written
}

// submit hands the rows gathered so far to the deflater.
func (x *xlsxRows) submit() error {
	if len(x.chunk) == 0 {
		return nil
	}
	if len(x.spans) == 0 {
		return errors.New("rows written before a sheet was started")
	}
	s := &x.spans[len(x.spans)-1]
	s.raw += int64(len(x.chunk))
	s.crc = crc32.Update(s.crc, crc32.IEEETable, x.chunk)
	if x.def == nil {
		x.def = newChunkDeflater(x.file)
	}
	err := x.def.add(x.chunk)
	x.chunk = x.def.buffer()
	return err
}

// startRow begins row n (1-based, as in the sheet).
func (x *xlsxRows) startRow(n int) {
	x.rowNum = strconv.AppendInt(x.rowNum[:0], int64(n), 10)
	x.row = append(x.row[:0], `<row r="`...)
	x.row = append(x.row, x.rowNum...)
	x.row = append(x.row, `">`...)
	x.col = 0
	x.err = nil
}

// cellStart appends the start of the next cell, up to its attributes.
func (x *xlsxRows) cellStart() {
	var name string
	if x.col < len(x.cols) {
		name = x.cols[x.col]
	} else {
		var err error
		if name, err = excelize.ColumnNumberToName(x.col + 1); err != nil && x.err == nil {
			x.err = err
		}
	}
	x.col++
	x.row = append(x.row, `<c r="`...)
	x.row = append(x.row, name...)
	x.row = append(x.row, x.rowNum...)
	x.row = append(x.row, '"')
}

// number adds a number cell.
func (x *xlsxRows) number(v int) {
	x.cellStart()
	x.row = append(x.row, `><v>`...)
	x.row = strconv.AppendInt(x.row, int64(v), 10)
	x.row = append(x.row, `</v></c>`...)
}

// code adds a reply code: a number, or for 0 (no reply) no cell, as
// xlsxCode gives SetRow.
func (x *xlsxRows) code(c int) {
	if c == 0 {
		x.col++
		return
	}
	x.number(c)
}

// text adds an inline string cell, s written as excelize writes one.
func (x *xlsxRows) text(s string) {
	x.cellStart()
	x.row = append(x.row, ` t="inlineStr"><is><t`...)
	if len(s) > maxCellUnits {
		s = truncateUnits(s, maxCellUnits)
	}
	if s != "" && (xmlSpace(s[0]) || xmlSpace(s[len(s)-1])) {
		x.row = append(x.row, ` xml:space="preserve"`...)
	}
	x.row = append(x.row, '>')
	start := len(x.row)
	x.row = appendXMLText(x.row, s)
	if bytes.Contains(x.row[start:], []byte("_x")) {
		esc := bstrMarshal(string(x.row[start:]))
		x.row = append(x.row[:start], esc...)
	}
	x.row = append(x.row, `</t></is></c>`...)
}

// endRow writes the row.
func (x *xlsxRows) endRow() error {
	x.row = append(x.row, `</row>`...)
	if x.err != nil {
		return x.err
	}
	x.chunk = append(x.chunk, x.row...)
	if len(x.chunk) >= deflateChunk {
		return x.submit()
	}
	return nil
}

// zipWriter returns a zip writer on w for excelize's File.Write that puts
// the rows into their sheets. It must be used once.
func (x *xlsxRows) zipWriter(w io.Writer) (excelize.ZipWriter, error) {
	if err := x.endSpan(); err != nil {
		return nil, err
	}
	if x.def != nil {
		x.def.stop()
	}
	zw := zip.NewWriter(w)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) {
		return flate.NewWriter(w, deflateLevel)
	})
	return &spliceZip{zw: zw, rows: x}, nil
}

func (x *xlsxRows) close() {
	if x.def != nil {
		x.def.stop()
	}
	if x.file != nil {
		x.file.Close()
		x.file = nil
	}
}

// spliceZip is the zip writer excelize writes a result through. A results
// sheet's part is held back until excelize has written all of it (a few
// kilobytes: widths, panes, header row) and then written with the sheet's
// rows before its </sheetData>.
type spliceZip struct {
	zw      *zip.Writer
	rows    *xlsxRows
	held    *rowSpan // the sheet part being held back
	heldBuf bytes.Buffer
	done    int // sheet parts written
}

func (z *spliceZip) Create(name string) (io.Writer, error) {
	if err := z.flushHeld(); err != nil {
		return nil, err
	}
	for i := range z.rows.spans {
		if s := &z.rows.spans[i]; s.path == name {
			z.held = s
			z.heldBuf.Reset()
			return &z.heldBuf, nil
		}
	}
	return z.zw.Create(name)
}

func (z *spliceZip) AddFS(fsys fs.FS) error {
	if err := z.flushHeld(); err != nil {
		return err
	}
	return z.zw.AddFS(fsys)
}

func (z *spliceZip) Close() error {
	if err := z.flushHeld(); err != nil {
		return err
	}
	if z.done != len(z.rows.spans) {
		// A sheet part named otherwise than sheetXMLPath expects: the
		// file would lack rows, so there is no file.
		return fmt.Errorf("excelize wrote %d of %d results sheets where expected", z.done, len(z.rows.spans))
	}
	return z.zw.Close()
}

// flushHeld writes the sheet part held back, with its rows. The rows are
// deflated already: the part is written raw, the head before the rows and
// the tail after them deflated here, and its CRC-32 combined from theirs.
func (z *spliceZip) flushHeld() error {
	s := z.held
	if s == nil {
		return nil
	}
	z.held = nil
	part := z.heldBuf.Bytes()
	at := bytes.LastIndex(part, []byte("</sheetData>"))
	if at < 0 {
		return fmt.Errorf("%s: no </sheetData> to put the rows before", s.path)
	}
	head, tail := part[:at], part[at:]
	dhead, dtail := deflateRaw(head, false), deflateRaw(tail, true)
	crc := crc32Combine(crc32.ChecksumIEEE(head), s.crc, s.raw)
	crc = crc32Combine(crc, crc32.ChecksumIEEE(tail), int64(len(tail)))
	fh := &zip.FileHeader{
		Name:   s.path,
		Method: zip.Deflate,
		// The sizes and CRC go in a data descriptor after the data, as
		// Create puts them: CreateRaw would write them in the local header,
		// with 0xFFFFFFFF and no zip64 extra field for a sheet over 4 GiB,
		// which a streaming reader (Java's ZipInputStream) takes as the
		// size and fails on.
		Flags:              0x8,
		CreatorVersion:     20,
		ReaderVersion:      20,
		CRC32:              crc,
		CompressedSize64:   uint64(len(dhead)) + uint64(s.end-s.off) + uint64(len(dtail)),
		UncompressedSize64: uint64(len(head)) + uint64(s.raw) + uint64(len(tail)),
	}
	if fh.CompressedSize64 >= 1<<32-1 || fh.UncompressedSize64 >= 1<<32-1 {
		fh.ReaderVersion = 45 // zip64
	}
	w, err := z.zw.CreateRaw(fh)
	if err != nil {
		return err
	}
	if _, err := w.Write(dhead); err != nil {
		return err
	}
	if _, err := io.Copy(w, io.NewSectionReader(z.rows.file, s.off, s.end-s.off)); err != nil {
		return err
	}
	if _, err := w.Write(dtail); err != nil {
		return err
	}
	z.done++
	return nil
}

// xmlSpace reports whether a cell beginning or ending with c needs
// xml:space="preserve", as excelize decides it.
func xmlSpace(c byte) bool {
	return c == '\t' || c == '\n' || c == '\r' || c == ' '
}

// truncateUnits cuts s to at most n UTF-16 code units, as excelize does
// before writing a cell; xlsxText has cut every value this long already.
func truncateUnits(s string, n int) string {
	units := 0
	for _, c := range s {
		units += utf16.RuneLen(c)
	}
	if units <= n {
		return s
	}
	units = 0
	for i, c := range s {
		if units += utf16.RuneLen(c); units > n {
			return s[:i]
		}
	}
	return s
}

// appendXMLText appends s escaped as xml.EscapeText escapes it, except
// that a newline stays a newline: what excelize writes for a cell's text.
func appendXMLText(b []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); {
		c, width := rune(s[i]), 1
		if c >= utf8.RuneSelf {
			c, width = utf8.DecodeRuneInString(s[i:])
		}
		var esc string
		switch c {
		case '"':
			esc = "&#34;"
		case '\'':
			esc = "&#39;"
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\t':
			esc = "&#x9;"
		case '\r':
			esc = "&#xD;"
		case '\n':
			i += width
			continue
		default:
			if !xmlChar(c) || (c == utf8.RuneError && width == 1) {
				esc = "\uFFFD"
				break
			}
			i += width
			continue
		}
		b = append(b, s[last:i]...)
		b = append(b, esc...)
		i += width
		last = i
	}
	return append(b, s[last:]...)
}

// bstrExp and bstrEscapeExp are excelize's patterns for its _xHHHH_
// escapes (lib.go); compiled once, never modified.
var (
	bstrExp       = regexp.MustCompile(`_x[a-fA-F\d]{4}_`)
	bstrEscapeExp = regexp.MustCompile(`x[a-fA-F\d]{4}_`)
)

// bstrMarshal is excelize's bstrMarshal (lib.go, v2.11.1), kept as it is
// so that text holding _xHHHH_ comes out exactly as SetRow writes it.
func bstrMarshal(s string) (result string) {
	matches, l, cursor := bstrExp.FindAllStringSubmatchIndex(s, -1), len(s), 0
	for _, match := range matches {
		result += s[cursor:match[0]]
		subStr := s[match[0]:match[1]]
		if subStr == "_x005F_" {
			cursor = match[1]
			if match[1]+6 <= l && bstrEscapeExp.MatchString(s[match[1]:match[1]+6]) {
				_, err := strconv.Unquote(`"\u` + s[match[1]+1:match[1]+5] + `"`)
				if err == nil {
					result += subStr + "x005F" + subStr
					continue
				}
			}
			result += subStr + "x005F_"
			continue
		}
		if bstrExp.MatchString(subStr) {
			cursor = match[1]
			if _, err := strconv.Unquote(`"\u` + s[match[0]+2:match[1]-1] + `"`); err == nil {
				result += "_x005F" + subStr
				continue
			}
		}
	}
	if cursor < l {
		result += s[cursor:]
	}
	return result
}
