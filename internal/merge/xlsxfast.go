package merge

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/xuri/excelize/v2"
)

// The fast XLSX reader exists because excelize's row iterator decodes every
// cell with encoding/xml, which costs about five times what rendering the
// message does. It reads the worksheet straight from the zip with xmlScan
// and must show every cell exactly as excelize's Rows.Columns does, so it
// is only used when it can be sure of that: before the first row is
// returned, it opens the workbook as excelize would (xlsxpkg.go), reads the
// shared strings and scans the whole worksheet once, and anything it does
// not handle (a number format other than General on a number, a date cell,
// rich text, a comment, an unusual encoding, rows out of order, a file
// excelize would not open, ...) sends the whole list through excelize
// instead.

// styleKind is what excelize's formattedValue does with a cell's style.
type styleKind uint8

const (
	stylePlain     styleKind = iota // the stored value is shown
	styleGeneral                    // General: text as stored, numbers may be rounded
	styleFormatted                  // another format: only excelize renders it
)

// xlsxFast reads one worksheet of a workbook.
type xlsxFast struct {
	file   *os.File
	zr     *zip.Reader
	lim    xlsxLimits
	files  map[string]*zip.File // by name as excelize normalises it
	done   map[*zip.File]bool   // parts unpacked to their end without error
	styles []styleKind          // by cellXfs index
	sst    *sharedStrings       // nil if the workbook has none
	sheet  string               // the sheet read

	// The rows come from store when the pre-scan kept them all, else
	// from rows, a second pass over the worksheet.
	store *rowStore
	rows  *fastRows
}

func (x *xlsxFast) open(want string) error {
	if err := x.openZip(); err != nil {
		return err
	}
	// meta only holds the parts excelize decodes on open, in its types.
	var meta excelize.File
	names, parts, err := x.readWorkbook(&meta)
	if err != nil {
		return err
	}
	x.styles = styleKinds(&meta)
	if zf := x.files["xl/sharedStrings.xml"]; zf != nil {
		if x.sst, err = x.readSharedStrings(zf); err != nil {
			return err
		}
	}
	// Sheet choice as pickSheet makes it; "has data" is decided by this
	// reader, which gives up rather than guess.
	var scanErr error
	sheet, err := pickSheet(names, want, func(s string) bool {
		ok, err := x.sheetHasData(parts[s])
		if err != nil && scanErr == nil {
			scanErr = err
		}
		return ok
	})
	if scanErr != nil {
		return scanErr
	}
	if err != nil {
		// excelize gives the same error; let it.
		return errXLSXUnsupported
	}
	x.sheet = sheet
	zf := parts[sheet]
	if err := x.drainRest(zf); err != nil {
		return err
	}
	// The pre-scan: if any row would need excelize, all of them do.
	if x.store, err = x.scanSheet(zf); err != nil {
		return err
	}
	if x.store == nil {
		rc, err := zf.Open()
		if err != nil {
			return errXLSXUnsupported
		}
		x.rows = newFastRows(x, rc, rc.Close)
	}
	return nil
}

// next is List.next.
func (x *xlsxFast) next() (int, []string, error, error) {
	if x.store != nil {
		return x.store.listNext()
	}
	return x.rows.listNext()
}

// Close releases the file.
func (x *xlsxFast) Close() error {
	var err error
	if x.rows != nil {
		err = x.rows.Close()
	}
	x.store = nil
	if cerr := x.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// styleKinds classifies each cell format as excelize's formattedValue
// would treat it. A custom format with ID 0 overrides General there, so it
// makes every style formatted. meta holds excelize's decoded styles part.
func styleKinds(meta *excelize.File) []styleKind {
	ss := meta.Styles
	if ss == nil || ss.CellXfs == nil {
		return nil
	}
	custom0 := false
	if ss.NumFmts != nil {
		for _, nf := range ss.NumFmts.NumFmt {
			if nf != nil && nf.NumFmtID == 0 {
				custom0 = true
			}
		}
	}
	kinds := make([]styleKind, len(ss.CellXfs.Xf))
	for i, xf := range ss.CellXfs.Xf {
		kinds[i] = styleFormatted
		if (xf.NumFmtID == nil || *xf.NumFmtID == 0) && !custom0 {
			kinds[i] = styleGeneral
		}
	}
	return kinds
}

func (x *xlsxFast) styleOf(s int) styleKind {
	if s == 0 || s >= len(x.styles) {
		return stylePlain
	}
	return x.styles[s]
}

// sheetHasData reports whether the sheet has a non-blank row, reading only
// up to the first one, or all of it when it has none (excelize counts a
// row element after sheetData too).
func (x *xlsxFast) sheetHasData(zf *zip.File) (bool, error) {
	rc, err := zf.Open()
	if err != nil {
		return false, errXLSXUnsupported
	}
	defer rc.Close()
	r := newFastRows(x, rc, nil)
	for {
		_, cells, err := r.next(true)
		if err == io.EOF {
			return false, r.checkTail()
		}
		if err != nil {
			// A malformed sheet: excelize's answer depends on where.
			return false, errXLSXUnsupported
		}
		if !blank(cells) {
			return true, nil
		}
	}
}

// scanSheet reads the whole sheet and returns errXLSXUnsupported if any
// part of it needs excelize. The rows are kept while they fit in
// lim.part, the bound past which excelize would not hold the sheet in
// memory either; then the list is served from that store, and the sheet
// is unpacked and tokenized once. For a larger sheet it returns a nil
// store, and the rows are read in a second pass. Malformed XML is not a
// reason to give up: the fast reader reports it as an error when it gets
// there, where excelize would stop without one.
func (x *xlsxFast) scanSheet(zf *zip.File) (*rowStore, error) {
	rc, err := zf.Open()
	if err != nil {
		return nil, errXLSXUnsupported
	}
	defer rc.Close()
	st := &rowStore{limit: x.lim.part}
	r := newFastRows(x, rc, nil)
	for {
		num, cells, err := r.next(st != nil)
		if err == io.EOF {
			if err := r.checkTail(); err != nil {
				return nil, err
			}
			break
		}
		if errors.Is(err, errXLSXUnsupported) {
			return nil, err
		}
		if err != nil {
			var me *malformedError
			if !errors.As(err, &me) {
				// A read error (a corrupt zip entry): excelize fails on open.
				return nil, errXLSXUnsupported
			}
			// The rest must still unpack, or excelize fails on open.
			if _, err := io.Copy(io.Discard, rc); err != nil {
				return nil, errXLSXUnsupported
			}
			if st != nil {
				st.err = err
			}
			break
		}
		if st != nil {
			if st.add(num, cells) {
				r.cells = cells[:0]
			} else {
				st = nil
			}
		}
	}
	if err := rc.Close(); err != nil {
		return nil, errXLSXUnsupported
	}
	return st, nil
}

// rowStore holds the rows the pre-scan decoded, in three slices whose
// capacities together stay within limit bytes.
type rowStore struct {
	data  []byte      // the cell values, back to back
	ends  []uint32    // where each cell ends in data
	rows  []storedRow // in file order
	limit int64
	used  int64 // bytes of capacity allocated
	err   error // what reading stopped with after the last row, or nil
	pos   int   // the next row to return
}

type storedRow struct {
	num  int // the row number
	last int // len(ends) after the row's cells
}

// add stores a row; false means it does not fit, and the store is to be
// dropped.
func (s *rowStore) add(num int, cells []string) bool {
	n := 0
	for _, c := range cells {
		n += len(c)
	}
	var ok bool
	if int64(len(s.data))+int64(n) > 1<<32-1 {
		return false
	}
	if s.data, ok = reserve(s.data, n, 1, s); !ok {
		return false
	}
	if s.ends, ok = reserve(s.ends, len(cells), 4, s); !ok {
		return false
	}
	if s.rows, ok = reserve(s.rows, 1, storedRowSize, s); !ok {
		return false
	}
	for _, c := range cells {
		s.data = append(s.data, c...)
		s.ends = append(s.ends, uint32(len(s.data)))
	}
	s.rows = append(s.rows, storedRow{num: num, last: len(s.ends)})
	return true
}

// storedRowSize is the size of a storedRow on 64-bit platforms.
const storedRowSize = 16

// reserve returns b with room for n more elements of size bytes each,
// growing by doubling but failing rather than take s past its limit.
func reserve[T any](b []T, n int, size int64, s *rowStore) ([]T, bool) {
	if len(b)+n <= cap(b) {
		return b, true
	}
	c := max(2*cap(b), len(b)+n, 256)
	room := (s.limit - s.used) / size
	if int64(c-cap(b)) > room {
		c = cap(b) + int(room)
	}
	if c < len(b)+n {
		return b, false
	}
	nb := make([]T, len(b), c)
	copy(nb, b)
	s.used += int64(c-cap(b)) * size
	return nb, true
}

// listNext returns the stored rows as List.next; the cells of a row share
// one string.
func (s *rowStore) listNext() (int, []string, error, error) {
	if s.pos == len(s.rows) {
		if s.err != nil {
			return 0, nil, nil, fmt.Errorf("worksheet: %w", s.err)
		}
		return 0, nil, nil, io.EOF
	}
	first := 0
	if s.pos > 0 {
		first = s.rows[s.pos-1].last
	}
	row := s.rows[s.pos]
	s.pos++
	start := 0
	if first > 0 {
		start = int(s.ends[first-1])
	}
	end := start
	if row.last > first {
		end = int(s.ends[row.last-1])
	}
	str := string(s.data[start:end])
	cells := make([]string, row.last-first)
	at := 0
	for i := range cells {
		e := int(s.ends[first+i]) - start
		cells[i] = str[at:e]
		at = e
	}
	return row.num, cells, nil, nil
}

// fastRows streams the rows of one worksheet.
type fastRows struct {
	x       *xlsxFast
	s       *xmlScan
	closer  func() error
	t       xtok
	started bool // inside sheetData
	done    bool
	last    int      // number of the last row read
	cells   []string // reused when the values are not kept
	text    []byte   // textElement's copy of a text, reused
}

func newFastRows(x *xlsxFast, r io.Reader, closer func() error) *fastRows {
	return &fastRows{x: x, s: newXMLScan(r), closer: closer}
}

func (r *fastRows) Close() error {
	if r.closer == nil {
		return nil
	}
	c := r.closer
	r.closer = nil
	return c()
}

// tok reads the next token.
func (r *fastRows) tok() error { return r.s.next(&r.t) }

func (r *fastRows) bad(format string, args ...any) error {
	return r.s.malformed(0, format, args...)
}

// next returns the next row element: its number and, with keep, its cells
// as excelize's Columns returns them. Rows missing from the XML are not
// returned (excelize returns them empty, and List skips empty rows).
func (r *fastRows) next(keep bool) (int, []string, error) {
	if r.done {
		return 0, nil, io.EOF
	}
	if !r.started {
		if err := r.findSheetData(); err != nil {
			return 0, nil, err
		}
		if r.done {
			return 0, nil, io.EOF
		}
	}
	for {
		if err := r.tok(); err != nil {
			return 0, nil, err
		}
		switch r.t.kind {
		case 0:
			return 0, nil, r.bad("unexpected end of input in sheetData")
		case 't':
			if !isBlankText(r.t.text) {
				return 0, nil, errXLSXUnsupported
			}
		case 'e':
			if string(r.t.name) != "sheetData" {
				return 0, nil, r.bad("sheetData closed by </%s>", r.t.name)
			}
			r.done = true
			return 0, nil, io.EOF
		case 's':
			if string(r.t.name) != "row" {
				return 0, nil, errXLSXUnsupported
			}
			return r.row(keep)
		}
	}
}

// findSheetData skips the elements before sheetData. excelize counts a
// row element anywhere, so one outside sheetData is errXLSXUnsupported.
func (r *fastRows) findSheetData() error {
	if err := r.s.skipProlog(); err != nil {
		return err
	}
	// Open elements: a mismatch here would end excelize's reading early.
	var open []string
	for {
		if err := r.tok(); err != nil {
			return err
		}
		switch r.t.kind {
		case 0:
			if len(open) != 0 {
				return errXLSXUnsupported
			}
			r.done = true
			return nil
		case 's':
			local, prefixed, err := localName(r.t.name)
			if err != nil {
				return err
			}
			if err := checkAttrs(r.t.attrs); err != nil {
				return err
			}
			if string(local) == "row" || string(local) == "sheetData" && (prefixed || len(open) != 1) {
				return errXLSXUnsupported
			}
			if string(local) == "sheetData" {
				if r.t.empty {
					r.done = true
				}
				r.started = true
				return nil
			}
			if !r.t.empty {
				open = append(open, string(r.t.name))
			}
		case 'e':
			if len(open) == 0 || open[len(open)-1] != string(r.t.name) {
				return errXLSXUnsupported
			}
			open = open[:len(open)-1]
		case 't':
			if _, err := checkText(r.t.text); err != nil {
				return err
			}
		}
	}
}

// checkTail is called after sheetData: excelize goes on reading the rest
// of the document for row elements, so any text that could start one sends
// the list to excelize.
func (r *fastRows) checkTail() error {
	carry := []byte{}
	for {
		chunk := append(carry, r.s.rest()...)
		for i := bytes.Index(chunk, []byte("row")); i >= 0; {
			if i > 0 && (chunk[i-1] == '<' || chunk[i-1] == ':') {
				return errXLSXUnsupported
			}
			j := bytes.Index(chunk[i+1:], []byte("row"))
			if j < 0 {
				break
			}
			i += 1 + j
		}
		if len(chunk) >= 4 {
			carry = append([]byte{}, chunk[len(chunk)-4:]...)
		} else {
			carry = append([]byte{}, chunk...)
		}
		r.s.consume()
		if !r.s.fill() {
			if r.s.err != nil {
				return errXLSXUnsupported
			}
			return nil
		}
	}
}

// row reads the row element whose start tag is in r.t.
func (r *fastRows) row(keep bool) (int, []string, error) {
	num := 0
	for i := 0; ; {
		name, val, j, err := nextAttr(r.t.attrs, i)
		if err != nil {
			return 0, nil, err
		}
		if name == nil {
			break
		}
		i = j
		local, _, err := localName(name)
		if err != nil {
			return 0, nil, err
		}
		if string(local) == "r" {
			if num != 0 {
				return 0, nil, errXLSXUnsupported
			}
			if num, err = digits(val, 7); err != nil {
				return 0, nil, err
			}
		}
	}
	if num == 0 {
		num = r.last + 1
	}
	// excelize merges or renumbers rows out of order; leave those to it.
	if num <= r.last || num > excelize.TotalRows {
		return 0, nil, errXLSXUnsupported
	}
	r.last = num
	cells := r.cells[:0]
	if r.t.empty {
		return num, r.keep(cells, keep), nil
	}
	col := 0
	for {
		if err := r.tok(); err != nil {
			return 0, nil, err
		}
		switch r.t.kind {
		case 0:
			return 0, nil, r.bad("unexpected end of input in row %d", num)
		case 't':
			if !isBlankText(r.t.text) {
				return 0, nil, errXLSXUnsupported
			}
		case 'e':
			if string(r.t.name) != "row" {
				return 0, nil, r.bad("row closed by </%s>", r.t.name)
			}
			return num, r.keep(cells, keep), nil
		case 's':
			if string(r.t.name) != "c" {
				return 0, nil, errXLSXUnsupported
			}
			var err error
			if cells, col, err = r.cell(cells, col, keep); err != nil {
				return 0, nil, err
			}
		}
	}
}

func (r *fastRows) keep(cells []string, keep bool) []string {
	if keep {
		r.cells = nil
		return cells
	}
	r.cells = cells
	return cells
}

// cell reads the c element whose start tag is in r.t and appends its value
// as rowXMLHandler does: a cell is placed at its column, padding with
// empty strings, only if its value is not empty or it has a formula.
func (r *fastRows) cell(cells []string, col int, keep bool) ([]string, int, error) {
	var ref, styleAttr, typ []byte
	for i := 0; ; {
		name, val, j, err := nextAttr(r.t.attrs, i)
		if err != nil {
			return nil, 0, err
		}
		if name == nil {
			break
		}
		i = j
		local, prefixed, err := localName(name)
		if err != nil {
			return nil, 0, err
		}
		var dst *[]byte
		switch string(local) {
		case "r":
			dst = &ref
		case "s":
			dst = &styleAttr
		case "t":
			dst = &typ
		default:
			continue
		}
		if prefixed || *dst != nil || bytes.IndexByte(val, '&') >= 0 {
			return nil, 0, errXLSXUnsupported
		}
		*dst = val
	}
	col++
	if ref != nil {
		c, err := refColumn(ref)
		if err != nil {
			return nil, 0, err
		}
		col = c
	}
	if col > excelize.MaxColumns {
		return nil, 0, errXLSXUnsupported
	}
	style := 0
	if styleAttr != nil {
		var err error
		if style, err = digits(styleAttr, 9); err != nil {
			return nil, 0, err
		}
	}
	// typ points into the buffer that reading the children may move.
	t := cellType(typ)
	var v, is []byte
	var hasF, hasV, hasIS, decodeV, decodeIS bool
	var vStr, isStr string
	if !r.t.empty {
		for done := false; !done; {
			if err := r.tok(); err != nil {
				return nil, 0, err
			}
			switch r.t.kind {
			case 0:
				return nil, 0, r.bad("unexpected end of input in a cell")
			case 't':
				if !isBlankText(r.t.text) {
					return nil, 0, errXLSXUnsupported
				}
			case 'e':
				if string(r.t.name) != "c" {
					return nil, 0, r.bad("c closed by </%s>", r.t.name)
				}
				done = true
			case 's':
				name := string(r.t.name)
				switch {
				case (name == "v" || name == "f") && checkAttrs(r.t.attrs) != nil:
					return nil, 0, errXLSXUnsupported
				case name == "v" && !hasV:
					hasV = true
					var err error
					if v, decodeV, err = r.textElement("v"); err != nil {
						return nil, 0, err
					}
					vStr = decodeText(v, decodeV)
				case name == "f" && !hasF:
					hasF = true
					if _, _, err := r.textElement("f"); err != nil {
						return nil, 0, err
					}
				case name == "is" && !hasIS && checkAttrs(r.t.attrs) == nil:
					hasIS = true
					var err error
					if is, decodeIS, err = r.inlineString(); err != nil {
						return nil, 0, err
					}
					isStr = decodeText(is, decodeIS)
				default:
					return nil, 0, errXLSXUnsupported
				}
			}
		}
	}
	val, err := r.x.value(t, style, vStr, hasIS, isStr)
	if err != nil {
		return nil, 0, err
	}
	if val != "" || hasF {
		for len(cells) < col-1 {
			cells = append(cells, "")
		}
		if !keep {
			val = ""
		}
		cells = append(cells, val)
	}
	return cells, col, nil
}

// textElement reads the rest of an element that holds only text (v, f,
// t) and returns the raw text. The slice is valid until the next call.
func (r *fastRows) textElement(name string) ([]byte, bool, error) {
	if r.t.empty {
		return nil, false, nil
	}
	// The text token's slice stays valid only until the next token, so a
	// copy is kept when an end tag has to be read after it: in r.text, one
	// buffer for every cell, since each text is made a string before the
	// next is read.
	var text []byte
	var decode, seen bool
	for {
		if err := r.tok(); err != nil {
			return nil, false, err
		}
		switch r.t.kind {
		case 0:
			return nil, false, r.bad("unexpected end of input in <%s>", name)
		case 't':
			if seen {
				return nil, false, errXLSXUnsupported
			}
			seen = true
			var err error
			if decode, err = checkText(r.t.text); err != nil {
				return nil, false, err
			}
			text = append(r.text[:0], r.t.text...)
			r.text = text
		case 'e':
			if string(r.t.name) != name {
				return nil, false, r.bad("<%s> closed by </%s>", name, r.t.name)
			}
			return text, decode, nil
		case 's':
			return nil, false, errXLSXUnsupported
		}
	}
}

// inlineString reads an is element holding a single t; rich text runs and
// phonetic parts are errXLSXUnsupported.
func (r *fastRows) inlineString() ([]byte, bool, error) {
	if r.t.empty {
		return nil, false, nil
	}
	var text []byte
	var decode, seen bool
	for {
		if err := r.tok(); err != nil {
			return nil, false, err
		}
		switch r.t.kind {
		case 0:
			return nil, false, r.bad("unexpected end of input in <is>")
		case 't':
			if !isBlankText(r.t.text) {
				return nil, false, errXLSXUnsupported
			}
		case 'e':
			if string(r.t.name) != "is" {
				return nil, false, r.bad("<is> closed by </%s>", r.t.name)
			}
			return text, decode, nil
		case 's':
			if string(r.t.name) != "t" || seen {
				return nil, false, errXLSXUnsupported
			}
			seen = true
			if err := checkAttrs(r.t.attrs); err != nil {
				return nil, false, err
			}
			var err error
			if text, decode, err = r.textElement("t"); err != nil {
				return nil, false, err
			}
		}
	}
}

func checkAttrs(raw []byte) error {
	for i := 0; ; {
		name, _, j, err := nextAttr(raw, i)
		if err != nil || name == nil {
			return err
		}
		i = j
	}
}

// value is getValueFrom in excelize's cell.go for the cases the fast
// reader handles, with hasIS and is the inline string.
func (x *xlsxFast) value(t string, style int, v string, hasIS bool, is string) (string, error) {
	kind := x.styleOf(style)
	switch t {
	case "b":
		if v == "1" {
			return "TRUE", nil
		}
		if v == "0" {
			return "FALSE", nil
		}
		if kind != stylePlain {
			return "", errXLSXUnsupported
		}
		return v, nil
	case "d":
		return "", errXLSXUnsupported
	case "s":
		if v == "" {
			return x.text(v, kind)
		}
		idx, _ := strconv.Atoi(strings.TrimSpace(v))
		if x.sst == nil || idx < 0 || idx >= x.sst.len() {
			// excelize's lookup fails and the cell is dropped.
			return "", nil
		}
		s, err := x.sst.get(idx)
		if err != nil {
			return "", err
		}
		return x.text(s, kind)
	case "str":
		return v, nil
	case "inlineStr":
		if hasIS {
			return x.text(is, kind)
		}
		return x.text(v, kind)
	}
	if kind != stylePlain {
		return "", errXLSXUnsupported
	}
	return excelNumber(v), nil
}

// text is formattedValue for a text cell: General leaves non-empty text
// as it is; anything else is excelize's to render.
func (x *xlsxFast) text(s string, kind styleKind) (string, error) {
	if kind == stylePlain || kind == styleGeneral && s != "" {
		if strings.Contains(s, "_x") {
			// excelize decodes _xHHHH_ escapes (bstrUnmarshal); such text
			// is left to it.
			return "", errXLSXUnsupported
		}
		return s, nil
	}
	return "", errXLSXUnsupported
}

// excelNumber is getCellDefault: a numeric value is rewritten in plain
// notation, or rounded to 15 significant digits when it has more.
func excelNumber(v string) string {
	if strings.Contains(v, "_") {
		return v
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return v
	}
	plain := strconv.FormatFloat(f, 'f', -1, 64)
	prec := len(plain) - strings.Count(plain, ".")
	if prec > 15 && !withinPrecision(v) {
		return strconv.FormatFloat(f, 'G', 15, 64)
	}
	return plain
}

// withinPrecision is excelize's isNumWithinPrecision: an integer whose
// digits past the fifteenth are zeros.
func withinPrecision(s string) bool {
	if strings.ContainsAny(s, ".Ee") {
		return false
	}
	s = strings.TrimLeft(s, "+-0")
	return len(strings.TrimRight(s, "0")) <= 15
}

// digits parses a plain decimal of at most max digits.
func digits(b []byte, max int) (int, error) {
	if len(b) == 0 || len(b) > max {
		return 0, errXLSXUnsupported
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, errXLSXUnsupported
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}

// refColumn returns the column of a cell reference in the canonical form
// Excel writes ("B12"); other spellings are left to excelize, whose
// CellNameToCoordinates has its own rules and errors.
func refColumn(ref []byte) (int, error) {
	i, col := 0, 0
	for i < len(ref) && 'A' <= ref[i] && ref[i] <= 'Z' {
		col = col*26 + int(ref[i]-'A'+1)
		i++
	}
	if i == 0 || i > 3 || col > excelize.MaxColumns || i == len(ref) || ref[i] == '0' {
		return 0, errXLSXUnsupported
	}
	row, err := digits(ref[i:], 7)
	if err != nil || row > excelize.TotalRows {
		return 0, errXLSXUnsupported
	}
	return col, nil
}

// sharedStrings holds the decoded shared-string table in one block of
// memory. Tables larger than lim.part are left to excelize, which spills
// them to a temporary file.
type sharedStrings struct {
	data []byte
	ends []uint32
}

func (t *sharedStrings) len() int { return len(t.ends) }

func (t *sharedStrings) get(i int) (string, error) {
	start := uint32(0)
	if i > 0 {
		start = t.ends[i-1]
	}
	return string(t.data[start:t.ends[i]]), nil
}

// readSharedStrings reads xl/sharedStrings.xml. Only plain entries (one t
// element) are handled; rich text, phonetic runs and anything unusual are
// errXLSXUnsupported, and so is malformed XML, because excelize then fails
// or skips entries depending on the table's size.
func (x *xlsxFast) readSharedStrings(zf *zip.File) (*sharedStrings, error) {
	if zf.UncompressedSize64 > uint64(x.lim.part) {
		return nil, errXLSXUnsupported
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, errXLSXUnsupported
	}
	defer rc.Close()
	s := newXMLScan(rc)
	if err := s.skipProlog(); err != nil {
		return nil, errXLSXUnsupported
	}
	var t xtok
	next := func() error {
		if err := s.next(&t); err != nil {
			return errXLSXUnsupported
		}
		if t.kind == 't' && isBlankText(t.text) {
			return s.next(&t)
		}
		return nil
	}
	if err := next(); err != nil {
		return nil, err
	}
	// excelize decodes into a struct whose root must be sst in the main
	// namespace.
	if t.kind != 's' || string(t.name) != "sst" || t.empty {
		return nil, errXLSXUnsupported
	}
	ns := false
	for i := 0; ; {
		name, val, j, err := nextAttr(t.attrs, i)
		if err != nil {
			return nil, errXLSXUnsupported
		}
		if name == nil {
			break
		}
		i = j
		if string(name) == "xmlns" {
			ns = string(val) == "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
		}
		// Decode fails on a count that is not a number.
		local, _, err := localName(name)
		if err != nil {
			return nil, errXLSXUnsupported
		}
		if (string(local) == "count" || string(local) == "uniqueCount") && len(val) > 0 {
			if _, err := digits(val, 18); err != nil {
				return nil, errXLSXUnsupported
			}
		}
	}
	if !ns {
		return nil, errXLSXUnsupported
	}
	sst := &sharedStrings{}
	for {
		if err := next(); err != nil {
			return nil, err
		}
		if t.kind == 'e' && string(t.name) == "sst" {
			break
		}
		if t.kind != 's' || string(t.name) != "si" || checkAttrs(t.attrs) != nil {
			return nil, errXLSXUnsupported
		}
		if t.empty {
			sst.ends = append(sst.ends, uint32(len(sst.data)))
			continue
		}
		if err := next(); err != nil {
			return nil, err
		}
		if t.kind != 's' || string(t.name) != "t" || checkAttrs(t.attrs) != nil {
			return nil, errXLSXUnsupported
		}
		if !t.empty {
			if err := s.next(&t); err != nil {
				return nil, errXLSXUnsupported
			}
			if t.kind == 't' {
				decode, err := checkText(t.text)
				if err != nil {
					return nil, err
				}
				sst.data = append(sst.data, decodeText(t.text, decode)...)
				if err := s.next(&t); err != nil {
					return nil, errXLSXUnsupported
				}
			}
			if t.kind != 'e' || string(t.name) != "t" {
				return nil, errXLSXUnsupported
			}
		}
		if err := next(); err != nil {
			return nil, err
		}
		if t.kind != 'e' || string(t.name) != "si" {
			return nil, errXLSXUnsupported
		}
		sst.ends = append(sst.ends, uint32(len(sst.data)))
	}
	// Decode stops at the root's end; the spilled path would go on looking
	// for si elements. Only white space may follow.
	for {
		if err := s.next(&t); err != nil {
			return nil, errXLSXUnsupported
		}
		if t.kind == 0 {
			break
		}
		if t.kind != 't' || !isBlankText(t.text) {
			return nil, errXLSXUnsupported
		}
	}
	if s.err != nil || rc.Close() != nil {
		return nil, errXLSXUnsupported
	}
	x.done[zf] = true
	return sst, nil
}

// fastNext adapts fastRows to List.next.
func (r *fastRows) listNext() (int, []string, error, error) {
	n, cells, err := r.next(true)
	if err != nil {
		if err == io.EOF {
			return 0, nil, nil, io.EOF
		}
		return 0, nil, nil, fmt.Errorf("worksheet: %w", err)
	}
	return n, cells, nil, nil
}

// cellType returns a cell's t attribute as a string, without allocating for
// the values excelize writes.
func cellType(typ []byte) string {
	switch string(typ) {
	case "":
		return ""
	case "s":
		return "s"
	case "n":
		return "n"
	case "b":
		return "b"
	case "str":
		return "str"
	case "inlineStr":
		return "inlineStr"
	case "e":
		return "e"
	case "d":
		return "d"
	}
	return string(typ)
}
