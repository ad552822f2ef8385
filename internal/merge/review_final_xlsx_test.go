package merge

import (
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
)

// oneSheet is a workbook whose only sheet part is sheetXML, byte for byte.
func oneSheet(t *testing.T, sheetXML string) string {
	wb := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets>` +
		`<sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>`
	rels := `<?xml version="1.0" encoding="UTF-8" standalone="yes"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">` +
		`<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`
	return rawWorkbook(t, [][2]string{
		{"_rels/.rels", rawPkgRels},
		{"xl/workbook.xml", wb},
		{"xl/_rels/workbook.xml.rels", rels},
		{"xl/worksheets/sheet1.xml", sheetXML},
	})
}

// A sheet part in a legacy encoding that its XML declaration names:
// excelize reads it (its decoder has a CharsetReader), checkSheetXML's
// plain encoding/xml decoder refuses it, so OpenList now fails on a
// workbook it read before.
func TestFinalCheckSheetXMLDeclaredEncoding(t *testing.T) {
	for _, enc := range []string{"ISO-8859-1", "windows-1252"} {
		t.Run(enc, func(t *testing.T) {
			sheet := rawSheetXML([]string{"email", "name"}, []string{"zoe@example.org", "Zo\xeb"}, []string{"ann@example.org", "Ann"})
			sheet = strings.Replace(sheet, `encoding="UTF-8"`, `encoding="`+enc+`"`, 1)
			p := oneSheet(t, sheet)
			f, err := excelize.OpenFile(p)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := f.GetRows("S")
			f.Close()
			t.Logf("excelize.GetRows: %q, err %v", rows, err)
			for _, fast := range []bool{true, false} {
				res, usedFast := readList(t, p, ListOptions{}, fast, defaultLimits)
				t.Logf("bulkmail (fast allowed %v, used %v): open error %q, rows %q", fast, usedFast, res.OpenErr, res.Rows)
				if err == nil && len(rows) == 3 && res.OpenErr != "" {
					t.Errorf("excelize reads the %s sheet (%d rows) but bulkmail refuses the workbook: %s", enc, len(rows), res.OpenErr)
				}
			}
		})
	}
}
