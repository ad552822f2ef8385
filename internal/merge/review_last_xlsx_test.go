package merge

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"testing"
)

// A workbook whose sheet part's deflate stream is cut short (the zip's
// directory intact, the entry's compressed data halved): the part ends
// with io.ErrUnexpectedEOF, not with an xml.SyntaxError.
func TestLastTruncatedDeflateSheet(t *testing.T) {
	rows := [][]string{{"email", "name"}}
	for i := 0; i < 2000; i++ {
		rows = append(rows, []string{fmt.Sprintf("user%d@example.org", i), fmt.Sprintf("User %d %x", i, i*7919)})
	}
	sheet := []byte(rawSheetXML(rows...))
	wb := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>`
	rels := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, p := range [][2]string{{"_rels/.rels", rawPkgRels}, {"xl/workbook.xml", wb}, {"xl/_rels/workbook.xml.rels", rels}} {
		w, _ := zw.Create(p[0])
		w.Write([]byte(p[1]))
	}
	var comp bytes.Buffer
	fw, _ := flate.NewWriter(&comp, flate.DefaultCompression)
	fw.Write(sheet)
	fw.Close()
	cut := comp.Bytes()[:comp.Len()/2]
	w, err := zw.CreateRaw(&zip.FileHeader{Name: "xl/worksheets/sheet1.xml", Method: zip.Deflate,
		CRC32: crc32.ChecksumIEEE(sheet), UncompressedSize64: uint64(len(sheet)), CompressedSize64: uint64(len(cut))})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(cut)
	zw.Close()
	p := filepath.Join(t.TempDir(), "cut.xlsx")
	os.WriteFile(p, buf.Bytes(), 0o600)
	t.Logf("checkSheetXML: %v", checkSheetXML(p, "S", defaultLimits))
	for _, fast := range []bool{true, false} {
		res, used := readList(t, p, ListOptions{}, fast, defaultLimits)
		last := ""
		if len(res.Rows) > 0 {
			last = res.Rows[len(res.Rows)-1]
		}
		t.Logf("fast allowed %v used %v: open error %q, %d of 2000 rows read, last %.80s", fast, used, res.OpenErr, len(res.Rows), last)
		if res.OpenErr == "" && len(res.Rows) < 2000 {
			t.Errorf("fast=%v: sheet cut short: only %d of 2000 rows read, no error", fast, len(res.Rows))
		}
	}
}
