package report

import (
	"container/heap"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/xuri/excelize/v2"
)

// MergeResults combines shard result files (XLSX or CSV, with the same
// columns) into one at out (XLSX or CSV by its extension), rows ordered by
// the row column, with a fresh summary sheet. Each input must be in row
// order, as Result writes it; a row found in two inputs is an error. The
// inputs are streamed, so memory does not grow with their size. out may name
// one of the inputs: it is replaced only once the merge has succeeded.
//
// Result files do not carry times, so a merged summary has counts but no
// start, end or rate.
func MergeResults(out string, inputs ...string) error {
	if len(inputs) == 0 {
		return errors.New("report: merge: no input files")
	}
	srcs := make([]*mergeSource, 0, len(inputs))
	defer func() {
		for _, s := range srcs {
			s.close()
		}
	}()
	for _, in := range inputs {
		s, err := openSource(in)
		if err != nil {
			return err
		}
		srcs = append(srcs, s)
		if !slices.Equal(s.header, srcs[0].header) {
			return fmt.Errorf("report: merge: %s has columns %q, %s has %q", in, s.header, srcs[0].path, srcs[0].header)
		}
	}
	r, err := CreateResult(out, srcs[0].header[len(FixedColumns):])
	if err != nil {
		return err
	}
	h := make(mergeHeap, 0, len(srcs))
	for _, s := range srcs {
		if err := s.next(); err == nil {
			h = append(h, s)
		} else if err != io.EOF {
			r.Abort()
			return err
		}
	}
	heap.Init(&h)
	var prev *mergeSource
	for len(h) > 0 {
		s := h[0]
		if prev != nil && s.o.Row == r.last {
			r.Abort()
			return fmt.Errorf("report: merge: row %d is in both %s and %s", s.o.Row, prev.path, s.path)
		}
		if err := r.Write(s.o, s.values); err != nil {
			r.Abort()
			return err
		}
		prev = s
		if err := s.next(); err == io.EOF {
			heap.Pop(&h)
		} else if err != nil {
			r.Abort()
			return err
		} else {
			heap.Fix(&h, 0)
		}
	}
	return r.Close()
}

// mergeSource streams the rows of one result file.
type mergeSource struct {
	path   string
	header []string
	line   int // line (CSV) or row (XLSX sheet) of the current row
	o      Outcome
	values []string

	// CSV
	fh *os.File
	cr *csv.Reader

	// XLSX
	xf     *excelize.File
	sheets []string // results sheets still to read, in order
	sheet  string
	rows   *excelize.Rows
}

func openSource(path string) (*mergeSource, error) {
	s := &mergeSource{path: path}
	var err error
	switch ext := strings.ToLower(filepath.Ext(path)); ext {
	case ".csv":
		s.fh, err = os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("report: merge: %w", err)
		}
		s.cr = csv.NewReader(s.fh)
		s.cr.FieldsPerRecord = -1
		s.header, err = s.readCSV()
	case ".xlsx":
		s.xf, err = excelize.OpenFile(path)
		if err != nil {
			return nil, fmt.Errorf("report: merge: %s: %w", path, err)
		}
		for _, name := range s.xf.GetSheetList() {
			if isResultSheet(name) {
				s.sheets = append(s.sheets, name)
			}
		}
		slices.SortStableFunc(s.sheets, func(a, b string) int { return sheetNumber(a) - sheetNumber(b) })
		s.header, err = s.nextSheet()
	default:
		return nil, fmt.Errorf("report: merge: %s: extension %q: want .xlsx or .csv", path, ext)
	}
	if err == io.EOF {
		err = fmt.Errorf("report: merge: %s: empty file, want a header", path)
	}
	if err == nil && !IsResultHeader(s.header) {
		err = fmt.Errorf("report: merge: %s: not a result file: header %q", path, s.header)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// isResultSheet reports whether name is "results" or "results N".
func isResultSheet(name string) bool {
	return sheetNumber(name) > 0
}

// sheetNumber returns N for "results N", 1 for "results", 0 for others.
func sheetNumber(name string) int {
	if name == ResultSheet {
		return 1
	}
	rest, ok := strings.CutPrefix(name, ResultSheet+" ")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(rest)
	if err != nil || n < 2 {
		return 0
	}
	return n
}

// nextSheet moves to the next results sheet and returns its header.
func (s *mergeSource) nextSheet() ([]string, error) {
	if s.rows != nil {
		s.rows.Close()
		s.rows = nil
	}
	if len(s.sheets) == 0 {
		return nil, io.EOF
	}
	s.sheet, s.sheets = s.sheets[0], s.sheets[1:]
	rows, err := s.xf.Rows(s.sheet)
	if err != nil {
		return nil, fmt.Errorf("report: merge: %s: %w", s.path, err)
	}
	s.rows, s.line = rows, 0
	return s.readXLSX()
}

func (s *mergeSource) readCSV() ([]string, error) {
	rec, err := s.cr.Read()
	if err == io.EOF {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("report: merge: %s: %w", s.path, err)
	}
	s.line, _ = s.cr.FieldPos(0)
	for i := range rec {
		rec[i] = csvUncell(rec[i])
	}
	return rec, nil
}

// readXLSX returns the next row of the current sheet, io.EOF at its end.
func (s *mergeSource) readXLSX() ([]string, error) {
	if !s.rows.Next() {
		if err := s.rows.Error(); err != nil {
			return nil, fmt.Errorf("report: merge: %s sheet %q: %w", s.path, s.sheet, err)
		}
		return nil, io.EOF
	}
	s.line++
	// Raw values: a number format must not turn a row number into "1E+06".
	cells, err := s.rows.Columns(excelize.Options{RawCellValue: true})
	if err != nil {
		return nil, fmt.Errorf("report: merge: %s sheet %q row %d: %w", s.path, s.sheet, s.line, err)
	}
	return cells, nil
}

// next reads the next row into s.o and s.values; io.EOF at the end.
func (s *mergeSource) next() error {
	prev := s.o.Row
	var cells []string
	var err error
	if s.cr != nil {
		cells, err = s.readCSV()
	} else {
		cells, err = s.readXLSX()
		for err == io.EOF && len(s.sheets) > 0 {
			var hdr []string
			if hdr, err = s.nextSheet(); err == nil {
				if !slices.Equal(hdr, s.header) {
					return fmt.Errorf("report: merge: %s sheet %q: header %q differs from the first sheet's", s.path, s.sheet, hdr)
				}
				cells, err = s.readXLSX()
			}
		}
	}
	if err != nil {
		return err
	}
	if len(cells) > len(s.header) {
		return fmt.Errorf("report: merge: %s %s: %d cells, header has %d", s.path, s.where(), len(cells), len(s.header))
	}
	// excelize drops trailing empty cells; a CSV row may be short too.
	for len(cells) < len(s.header) {
		cells = append(cells, "")
	}
	o, err := parseOutcome(cells)
	if err != nil {
		return fmt.Errorf("report: merge: %s %s: %w", s.path, s.where(), err)
	}
	if o.Row <= prev {
		return fmt.Errorf("report: merge: %s %s: row %d after row %d: input not in row order", s.path, s.where(), o.Row, prev)
	}
	s.o, s.values = o, cells[len(FixedColumns):]
	return nil
}

func (s *mergeSource) where() string {
	if s.cr != nil {
		return fmt.Sprintf("line %d", s.line)
	}
	return fmt.Sprintf("sheet %q row %d", s.sheet, s.line)
}

func (s *mergeSource) close() {
	if s.rows != nil {
		s.rows.Close()
	}
	if s.xf != nil {
		s.xf.Close()
	}
	if s.fh != nil {
		s.fh.Close()
	}
}

// parseOutcome reads the fixed columns of a result row back.
func parseOutcome(c []string) (Outcome, error) {
	var o Outcome
	num := func(i int, dst *int) error {
		if c[i] == "" {
			return nil
		}
		n, err := strconv.Atoi(c[i])
		if err != nil {
			return fmt.Errorf("column %q: %q is not a number", FixedColumns[i], c[i])
		}
		*dst = n
		return nil
	}
	for i, dst := range map[int]*int{0: &o.Row, 3: &o.Rcpt.Code, 6: &o.Data.Code, 9: &o.Attempts} {
		if err := num(i, dst); err != nil {
			return o, err
		}
	}
	o.Email, o.Status = c[1], Status(c[2])
	o.Rcpt.Enhanced, o.Rcpt.Text = c[4], c[5]
	o.Data.Enhanced, o.Data.Text = c[7], c[8]
	o.MessageID, o.Error = c[10], c[11]
	if o.Row < 1 {
		return o, fmt.Errorf("column %q: %q is not a row number", FixedColumns[0], c[0])
	}
	if !o.Status.Valid() {
		return o, fmt.Errorf("column %q: unknown status %q", FixedColumns[2], c[2])
	}
	return o, nil
}

// mergeHeap orders sources by their current row.
type mergeHeap []*mergeSource

func (h mergeHeap) Len() int           { return len(h) }
func (h mergeHeap) Less(i, j int) bool { return h[i].o.Row < h[j].o.Row }
func (h mergeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *mergeHeap) Push(x any)        { *h = append(*h, x.(*mergeSource)) }
func (h *mergeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// ResultRows calls fn with the row number of every row of the result file
// at path (XLSX or CSV, as Result writes it), in order.
func ResultRows(path string, fn func(row int) error) error {
	return ResultOutcomes(path, func(o Outcome) error { return fn(o.Row) })
}

// ResultOutcomes calls fn with the outcome of every row of the result file
// at path (XLSX or CSV, as Result writes it, every results sheet), in
// order.
func ResultOutcomes(path string, fn func(Outcome) error) error {
	s, err := openSource(path)
	if err != nil {
		return err
	}
	defer s.close()
	for {
		if err := s.next(); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if err := fn(s.o); err != nil {
			return err
		}
	}
}

// IsResultHeader reports whether header is that of a result file: it
// starts with FixedColumns.
func IsResultHeader(header []string) bool {
	return len(header) >= len(FixedColumns) && slices.Equal(header[:len(FixedColumns)], FixedColumns)
}
