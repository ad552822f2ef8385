package report

import (
	"archive/zip"
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
	cells := make([]any, 0, len(FixedColumns)+len(values))
	cells = append(cells,
		o.Row, xlsxText(o.Email), string(o.Status),
		xlsxCode(o.Rcpt.Code), xlsxText(o.Rcpt.Enhanced), xlsxText(o.Rcpt.Text),
		xlsxCode(o.Data.Code), xlsxText(o.Data.Enhanced), xlsxText(o.Data.Text),
		o.Attempts, xlsxText(o.MessageID), xlsxText(o.Error))
	for _, v := range values {
		cells = append(cells, xlsxText(v))
	}
	r.sheetRow++
	cell, err := excelize.CoordinatesToCellName(1, r.sheetRow)
	if err == nil {
		err = r.sw.SetRow(cell, cells)
	}
	if err != nil {
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
		// and what Write then copies from its buffer is empty.
		tmp := r.tmp
		r.xf.SetZipWriter(func(io.Writer) excelize.ZipWriter { return zip.NewWriter(tmp) })
		if err := r.xf.Write(io.Discard); err != nil {
			return r.xlsxErr(err)
		}
		if err := r.xf.Close(); err != nil {
			return r.xlsxErr(err)
		}
		r.xf = nil
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
