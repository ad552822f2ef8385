package merge

import (
	"archive/zip"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"unicode"
	"unicode/utf16"

	"github.com/xuri/excelize/v2"
	"golang.org/x/net/html/charset"
)

// The fast reader opens the workbook itself instead of through
// excelize.OpenFile, which unpacks every part (and spills big worksheets
// to temporary files) before a row can be read. It may only take a list
// that excelize would open without an error, so it checks what excelize's
// open checks (openReaderAt, ReadZipReader, getSheetMap, stylesReader,
// themeReader, calcChainReader) and declines everything else with
// errXLSXUnsupported: List then opens the file with excelize, which gives
// its own error or reads it.

// xlsxLimits bounds what opening a workbook may unpack, against zip bombs.
type xlsxLimits struct {
	// unzip bounds the declared size of the whole unzipped workbook
	// (excelize's UnzipSizeLimit). archive/zip never yields more than an
	// entry declares, so this bounds what is actually unpacked too.
	unzip int64
	// part bounds one part held in memory (excelize's UnzipXMLSizeLimit,
	// past which it spills a worksheet to a temporary file). The fast
	// reader never spills: it streams the worksheet, and declines a larger
	// part it would have to hold.
	part int64
}

// excelize returns the options that apply the same limits to excelize.
func (lim xlsxLimits) excelize() excelize.Options {
	return excelize.Options{UnzipSizeLimit: lim.unzip, UnzipXMLSizeLimit: lim.part}
}

// oleMagic starts an OLE compound file: excelize tries to decrypt one
// before it looks for a zip.
var oleMagic = []byte{0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1}

// openXLSXFast opens filePath and prepares the fast reader for the sheet
// that pickSheet chooses for want. Any error means excelize must read the
// list; it is errXLSXUnsupported unless something unexpected failed.
func openXLSXFast(filePath, want string, lim xlsxLimits) (*xlsxFast, error) {
	file, err := os.Open(filePath)
	if err != nil {
		return nil, errXLSXUnsupported
	}
	x := &xlsxFast{file: file, lim: lim}
	if err := x.open(want); err != nil {
		x.Close()
		return nil, err
	}
	return x, nil
}

// openZip reads the zip directory and checks the declared sizes as
// ReadZipReader does, before anything is unpacked.
func (x *xlsxFast) openZip() error {
	lim := x.lim
	if lim.unzip <= 0 || lim.part <= 0 || lim.part > lim.unzip {
		return errXLSXUnsupported
	}
	head := make([]byte, len(oleMagic))
	if _, err := x.file.ReadAt(head, 0); err != nil || bytes.Equal(head, oleMagic) {
		return errXLSXUnsupported
	}
	fi, err := x.file.Stat()
	if err != nil {
		return errXLSXUnsupported
	}
	zr, err := zip.NewReader(x.file, fi.Size())
	if err != nil {
		return errXLSXUnsupported
	}
	x.zr = zr
	x.files = make(map[string]*zip.File, len(zr.File))
	x.done = make(map[*zip.File]bool, len(zr.File))
	var total int64
	for _, zf := range zr.File {
		size := zf.FileInfo().Size()
		total += size
		if size < 0 || size > lim.unzip || total > lim.unzip {
			return errXLSXUnsupported
		}
		// The names excelize stores parts under (ReadZipReader).
		name := strings.ReplaceAll(zf.Name, "\\", "/")
		switch strings.ToLower(name) {
		case "[content_types].xml":
			name = "[Content_Types].xml"
		case "xl/sharedstrings.xml":
			name = "xl/sharedStrings.xml"
		}
		if _, dup := x.files[name]; dup {
			return errXLSXUnsupported
		}
		x.files[name] = zf
	}
	return nil
}

// readPart returns the whole of a part that is at most lim.part long.
func (x *xlsxFast) readPart(zf *zip.File) ([]byte, error) {
	if zf.UncompressedSize64 > uint64(x.lim.part) {
		return nil, errXLSXUnsupported
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, errXLSXUnsupported
	}
	buf := bytes.NewBuffer(make([]byte, 0, zf.UncompressedSize64))
	_, err = buf.ReadFrom(rc)
	if cerr := rc.Close(); err != nil || cerr != nil {
		return nil, errXLSXUnsupported
	}
	x.done[zf] = true
	return buf.Bytes(), nil
}

// drain unpacks a part to its end without keeping it: excelize reads
// every part on open, and fails on one that does not unpack.
func drain(zf *zip.File) error {
	rc, err := zf.Open()
	if err != nil {
		return errXLSXUnsupported
	}
	_, err = io.Copy(io.Discard, rc)
	if cerr := rc.Close(); err != nil || cerr != nil {
		return errXLSXUnsupported
	}
	return nil
}

// drainRest drains every part not read to its end yet, except skip.
func (x *xlsxFast) drainRest(skip *zip.File) error {
	for _, zf := range x.zr.File {
		if zf == skip || x.done[zf] {
			continue
		}
		if err := drain(zf); err != nil {
			return err
		}
		x.done[zf] = true
	}
	return nil
}

// decodePart decodes a part into v as excelize does on open, and fails
// where excelize would: v is excelize's own type (a field of an
// excelize.File) or mirrors it. A missing part is an error only if
// required (excelize reads a missing part as empty). Parts in a Strict
// namespace, which excelize rewrites first, and parts in a charset other
// than UTF-8, which it transcodes, are errXLSXUnsupported.
func (x *xlsxFast) decodePart(name string, v any, required bool) error {
	zf := x.files[name]
	if zf == nil {
		if required {
			return errXLSXUnsupported
		}
		return nil
	}
	b, err := x.readPart(zf)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte("purl.oclc.org")) {
		return errXLSXUnsupported
	}
	// No CharsetReader: a declared charset other than UTF-8 fails here.
	if err := xml.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil && err != io.EOF {
		return errXLSXUnsupported
	}
	return nil
}

// xlsxRels mirrors excelize's xlsxRelationships (tags and types), so that
// decoding fails where excelize's relsReader fails.
type xlsxRels struct {
	XMLName xml.Name `xml:"http://schemas.openxmlformats.org/package/2006/relationships Relationships"`
	Rels    []struct {
		ID         string `xml:"Id,attr"`
		Target     string `xml:",attr"`
		Type       string `xml:",attr"`
		TargetMode string `xml:",attr,omitempty"`
	} `xml:"Relationship"`
}

// readWorkbook reads the parts excelize decodes on open and returns the
// sheet names in workbook order with the part of each. Decoding into the
// fields of meta uses excelize's types, so that every input excelize's
// open rejects is rejected here too.
func (x *xlsxFast) readWorkbook(meta *excelize.File) ([]string, map[string]*zip.File, error) {
	var pkgRels xlsxRels
	if err := x.decodePart("_rels/.rels", &pkgRels, true); err != nil {
		return nil, nil, err
	}
	wbPath := ""
	for _, r := range pkgRels.Rels {
		if r.Type == excelize.SourceRelationshipOfficeDocument {
			wbPath = strings.TrimPrefix(r.Target, "/")
			break
		}
	}
	if err := x.decodePart(wbPath, &meta.WorkBook, true); err != nil {
		return nil, nil, err
	}
	wbRelsPath := "_rels/" + path.Base(wbPath) + ".rels"
	if dir := path.Dir(wbPath); dir != "." {
		wbRelsPath = strings.TrimPrefix(dir+"/_rels/"+path.Base(wbPath)+".rels", "/")
	}
	var wbRels xlsxRels
	if err := x.decodePart(wbRelsPath, &wbRels, true); err != nil {
		return nil, nil, err
	}
	for name, v := range map[string]any{
		"xl/styles.xml":       &meta.Styles,
		"xl/theme/theme1.xml": &meta.Theme,
		"xl/calcChain.xml":    &meta.CalcChain,
	} {
		if err := x.decodePart(name, v, false); err != nil {
			return nil, nil, err
		}
	}
	if meta.WorkBook == nil || len(meta.WorkBook.Sheets.Sheet) == 0 {
		return nil, nil, errXLSXUnsupported
	}
	// Sheet parts as getSheetMap and getWorksheetPath find them. Names
	// that differ only in case make excelize's choice depend on map order,
	// names its Rows rejects would be read by this reader, and an empty or
	// missing part is read differently by excelize: all are left to it.
	var names []string
	parts := map[string]*zip.File{}
	folded := map[string]bool{}
	for _, sh := range meta.WorkBook.Sheets.Sheet {
		key := foldKey(sh.Name)
		if folded[key] || !validSheetName(sh.Name) {
			return nil, nil, errXLSXUnsupported
		}
		folded[key] = true
		p := ""
		for _, r := range wbRels.Rels {
			if r.ID == sh.ID {
				if strings.HasPrefix(r.Target, "/") {
					p = strings.TrimPrefix(path.Clean(r.Target), "/")
				} else {
					p = strings.TrimPrefix(path.Clean(path.Dir(wbPath)+"/"+r.Target), "/")
				}
			}
		}
		zf := x.files[p]
		if p == "" || zf == nil || strings.Contains(p, "\\") || zf.UncompressedSize64 == 0 {
			return nil, nil, errXLSXUnsupported
		}
		names = append(names, sh.Name)
		parts[sh.Name] = zf
	}
	return names, parts, nil
}

// foldKey returns the same string for two names that strings.EqualFold
// (as excelize compares sheet names) finds equal: each rune becomes the
// least rune of its simple case-folding orbit, so that ς, σ and Σ, or ſ,
// s and S, share a key where strings.ToLower would keep them apart.
func foldKey(name string) string {
	var b strings.Builder
	for _, r := range name {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// validSheetName is excelize's checkSheetName: Rows fails for any other
// name.
func validSheetName(name string) bool {
	units := 0
	for _, r := range name {
		units += utf16.RuneLen(r)
	}
	return name != "" && units <= excelize.MaxSheetNameLength && !strings.HasPrefix(name, "'") && !strings.HasSuffix(name, "'") &&
		!strings.ContainsAny(name, ":\\/?*[]")
}

// checkSheetXML reads the part that holds sheet in the workbook at
// filePath, found as excelize finds it, and returns an error if its XML is
// not well formed. excelize's row iterator ends quietly at the first XML
// error, so a workbook cut short would lose its last rows without a word:
// the fast reader reports such a sheet itself, and this does for the lists
// it leaves to excelize. Where the part cannot be found the way the fast
// reader finds parts, there is nothing to check and nil is returned.
func checkSheetXML(filePath, sheet string, lim xlsxLimits) error {
	file, err := os.Open(filePath)
	if err != nil {
		return nil
	}
	x := &xlsxFast{file: file, lim: lim}
	defer x.Close()
	if err := x.openZip(); err != nil {
		return nil
	}
	var meta excelize.File
	_, parts, err := x.readWorkbook(&meta)
	if err != nil || parts[sheet] == nil {
		return nil
	}
	rc, err := parts[sheet].Open()
	if err != nil {
		return nil // excelize has read it; a second read failing is not the list's fault
	}
	defer rc.Close()
	// The zip reader stops at the entry's declared size, which openZip
	// has checked against the limits.
	// Decoded as excelize decodes it: a declared legacy encoding is read
	// through x/net's charsets.
	d := xml.NewDecoder(rc)
	d.CharsetReader = charset.NewReaderLabel
	for {
		_, err := d.Token()
		if err == io.EOF {
			return nil
		}
		var syntax *xml.SyntaxError
		if errors.As(err, &syntax) {
			return fmt.Errorf("sheet %q is not well-formed XML at line %d (%v): the file may be cut short, and the rows after that point would be lost; open and save it again in a spreadsheet program", sheet, syntax.Line, syntax.Msg)
		}
		if err != nil {
			// Not the document's fault as far as this check can tell (an
			// encoding it does not know): nothing to say.
			return nil
		}
	}
}
