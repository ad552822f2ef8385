package report

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSpliceOver4GiBLocalHeader writes a results sheet part of more than
// 4 GiB of XML and reads its local header as a streaming zip reader does
// (Java's ZipInputStream, Apache POI from a stream): sizes of 0xFFFFFFFF
// there, without the data-descriptor flag, must come with a zip64 extra
// field (APPNOTE 4.5.3), else the reader takes 0xFFFFFFFF as the size and
// fails ("invalid entry size"). The rows are one deflated chunk written
// again and again, as chunkDeflater would write the same chunk each time,
// so that 4 GiB of rows cost a few megabytes and no deflating.
func TestSpliceOver4GiBLocalHeader(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 4 GiB zip part (some 20 MB on disk)")
	}
	x, err := newXLSXRows(2)
	if err != nil {
		t.Fatal(err)
	}
	defer x.close()
	name := sheetXMLPath(1)
	if err := x.startSheet(name); err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat(`<row r="2"><c r="A2"><v>2</v></c></row>`, deflateChunk/39))
	dchunk := deflateRaw(chunk, false)
	chunkCRC := crc32.ChecksumIEEE(chunk)
	s := &x.spans[0]
	for s.raw <= 1<<32 {
		if _, err := x.file.Write(dchunk); err != nil {
			t.Fatal(err)
		}
		s.end += int64(len(dchunk))
		s.raw += int64(len(chunk))
		s.crc = crc32Combine(s.crc, chunkCRC, int64(len(chunk)))
	}

	path := filepath.Join(t.TempDir(), "r.xlsx")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	z := &spliceZip{zw: zip.NewWriter(out), rows: x}
	w, err := z.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, `<worksheet><sheetData></sheetData></worksheet>`)
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}

	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	if len(zr.File) != 1 || zr.File[0].Name != name {
		t.Fatalf("zip holds %d parts, want %s", len(zr.File), name)
	}
	zf := zr.File[0]
	if want := uint64(s.raw) + uint64(len(`<worksheet><sheetData></sheetData></worksheet>`)); zf.UncompressedSize64 != want {
		t.Fatalf("central directory gives %d octets, want %d", zf.UncompressedSize64, want)
	}
	csize, usize, descriptor := streamedSizes(t, out, zf)
	if descriptor {
		// The sizes follow the data: signature, CRC-32, then 8-octet
		// sizes for a zip64 entry.
		data, _ := zf.DataOffset()
		d := make([]byte, 24)
		if _, err := out.ReadAt(d, data+int64(zf.CompressedSize64)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(d[:4], []byte{0x50, 0x4b, 0x07, 0x08}) {
			t.Fatalf("no data descriptor after the data: % x", d[:4])
		}
		csize, usize = binary.LittleEndian.Uint64(d[8:]), binary.LittleEndian.Uint64(d[16:])
	}
	if csize != zf.CompressedSize64 || usize != zf.UncompressedSize64 {
		t.Fatalf("local header gives sizes %d/%d, central directory %d/%d", csize, usize, zf.CompressedSize64, zf.UncompressedSize64)
	}
}

// streamedSizes returns the sizes zf's local header gives a reader that
// reads the file from the front, zip64 extra field included, or reports
// that they are in a data descriptor after the data.
func streamedSizes(t *testing.T, f *os.File, zf *zip.File) (csize, usize uint64, descriptor bool) {
	t.Helper()
	data, err := zf.DataOffset()
	if err != nil {
		t.Fatal(err)
	}
	// The local header is 30 octets, the name, then an extra field of a
	// length only the header gives: try each.
	for extra := int64(0); extra < 1<<16; extra++ {
		off := data - extra - int64(len(zf.Name)) - 30
		if off < 0 {
			break
		}
		h := make([]byte, 30+len(zf.Name)+int(extra))
		if _, err := f.ReadAt(h, off); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		if binary.LittleEndian.Uint32(h) != 0x04034b50 || int64(binary.LittleEndian.Uint16(h[28:])) != extra ||
			string(h[30:30+len(zf.Name)]) != zf.Name {
			continue
		}
		if binary.LittleEndian.Uint16(h[6:])&0x8 != 0 {
			return 0, 0, true
		}
		csize, usize = uint64(binary.LittleEndian.Uint32(h[18:])), uint64(binary.LittleEndian.Uint32(h[22:]))
		for x := h[30+len(zf.Name):]; len(x) >= 4; {
			id, n := binary.LittleEndian.Uint16(x), int(binary.LittleEndian.Uint16(x[2:]))
			if id == 0x0001 && n >= 16 && len(x) >= 4+n {
				usize, csize = binary.LittleEndian.Uint64(x[4:]), binary.LittleEndian.Uint64(x[12:])
			}
			if len(x) < 4+n {
				break
			}
			x = x[4+n:]
		}
		return csize, usize, false
	}
	t.Fatalf("%s: no local header found", zf.Name)
	return
}
