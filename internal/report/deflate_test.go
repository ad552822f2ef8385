package report

import (
	"archive/zip"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"
)

func TestCRC32Combine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*deflateChunk+17)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, cut := range []int{0, 1, 2, 3, 4, 7, 8, 255, 4096, deflateChunk, len(data) - 1, len(data)} {
		a, b := data[:cut], data[cut:]
		got := crc32Combine(crc32.ChecksumIEEE(a), crc32.ChecksumIEEE(b), int64(len(b)))
		if want := crc32.ChecksumIEEE(data); got != want {
			t.Errorf("cut at %d: combined %08x, want %08x", cut, got, want)
		}
	}
}

// TestResultChunkedSheets writes results sheets of many deflated chunks
// each and reads every part of the file back in full, so that the zip
// reader checks each part's CRC-32 and length, and every row is where it
// belongs.
func TestResultChunkedSheets(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 5 MB of sheet XML")
	}
	path := filepath.Join(t.TempDir(), "r.xlsx")
	r, err := CreateResult(path, []string{"n", "note"})
	if err != nil {
		t.Fatal(err)
	}
	r.rowsPerSheet = 1201 // header + 1,200 rows, some 2 MB of XML a sheet
	const n = 3000
	note := strings.Repeat("Zoë & <friends> ", 80)
	for row := 2; row < 2+n; row++ {
		o := Outcome{Row: row, Email: fmt.Sprintf("u%d@example.org", row), Status: Delivered, Rcpt: Reply{250, "2.1.5", "Ok"}}
		if err := r.Write(o, []string{fmt.Sprint(row), note}); err != nil {
			t.Fatal(err)
		}
	}
	if chunks := r.rows.spans[0].raw / deflateChunk; chunks < 4 {
		t.Fatalf("first sheet is %d chunks: too few to test", chunks)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Errorf("%s: %v", f.Name, err)
		}
		rc.Close()
	}

	xf, err := excelize.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer xf.Close()
	row := 2
	for i, name := range []string{ResultSheet, "results 2", "results 3"} {
		got, err := xf.GetRows(name)
		if err != nil {
			t.Fatal(err)
		}
		if want := min(1200, n-1200*i) + 1; len(got) != want {
			t.Fatalf("%s: %d rows, want %d", name, len(got), want)
		}
		for _, cells := range got[1:] {
			if cells[0] != fmt.Sprint(row) || cells[12] != fmt.Sprint(row) || cells[13] != note {
				t.Fatalf("%s: row %d reads %q", name, row, cells[:13])
			}
			row++
		}
	}
	if row != n+2 {
		t.Errorf("read %d rows, want %d", row-2, n)
	}
}
