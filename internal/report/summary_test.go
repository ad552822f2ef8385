package report

import (
	"archive/zip"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// section returns the rows of a summary table: those after the row whose
// first cell is title, up to the next empty row.
func section(rows [][]string, title string) [][]string {
	for i, r := range rows {
		if len(r) > 0 && r[0] == title {
			var out [][]string
			for _, r := range rows[i+1:] {
				if len(r) == 0 {
					break
				}
				out = append(out, r)
			}
			return out
		}
	}
	return nil
}

func TestSummarySheet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.xlsx")
	writeResult(t, path, []string{"name", "note"}, sampleRows())
	sum := readXLSX(t, path)[SummarySheet]

	tests := []struct {
		title string
		want  [][]string
	}{
		{"status", [][]string{
			{"delivered", "1"}, {"rejected", "1"}, {"deferred", "1"}, {"failed", "0"},
			{"invalid", "1"}, {"skipped", "0"}, {"in_doubt", "0"},
		}},
		{"reply code", [][]string{
			{"250", "Requested mail action okay, completed", "1", "1"},
			{"451", "Requested action aborted: local error in processing", "1", "0"},
			{"550", "Requested action not taken: mailbox unavailable", "1", "0"},
		}},
		{"recipient domain", [][]string{
			{"example.org", "2", "1", "1", "0", "0", "0", "0", "0"},
			{"(none)", "1", "0", "0", "0", "0", "1", "0", "0"},
			{"other.test", "1", "0", "0", "1", "0", "0", "0", "0"},
		}},
	}
	for _, tt := range tests {
		if got := section(sum, tt.title); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\ngot  %q\nwant %q", tt.title, got, tt.want)
		}
	}
	facts := map[string]string{}
	for _, r := range sum[:10] {
		if len(r) == 2 {
			facts[r[0]] = r[1]
		}
	}
	for k, v := range map[string]string{
		"first attempt started": "2025-03-01T12:00:00Z",
		"last attempt ended":    "2025-03-01T12:00:05Z",
		"elapsed seconds":       "5",
		"rows":                  "4",
		"rows attempted":        "3",
		"attempted per second":  "0.6",
		"delivered per second":  "0.2",
	} {
		if facts[k] != v {
			t.Errorf("%s: got %q, want %q", k, facts[k], v)
		}
	}

	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var charts []string
	for _, f := range zr.File {
		if strings.HasPrefix(f.Name, "xl/charts/chart") {
			charts = append(charts, f.Name)
		}
	}
	if len(charts) != 2 {
		t.Errorf("charts: got %q, want 2", charts)
	}
}

func TestSummaryTopDomains(t *testing.T) {
	s := newSummary()
	for i := range topDomains + 20 {
		for range i + 1 {
			o := Outcome{Row: 2, Email: "x@d" + string(rune('A'+i%26)) + strings.Repeat("z", i/26), Status: Delivered}
			s.add(&o)
		}
	}
	path := filepath.Join(t.TempDir(), "r.xlsx")
	r, err := CreateResult(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.sum = s
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	got := section(readXLSX(t, path)[SummarySheet], "recipient domain")
	if len(got) != topDomains {
		t.Fatalf("got %d domains, want %d", len(got), topDomains)
	}
	if got[0][1] != "70" || got[topDomains-1][1] != "21" {
		t.Errorf("domain counts: first %q, last %q; want 70 and 21", got[0], got[topDomains-1])
	}
}

func TestSummaryDomainCap(t *testing.T) {
	s := newSummary()
	for i := range maxDomains + 10 {
		o := Outcome{Row: i + 2, Email: "a@d" + strconv.Itoa(i) + ".test", Status: Failed}
		s.add(&o)
	}
	if got, want := len(s.domains), maxDomains+1; got != want {
		t.Errorf("domains counted: got %d, want %d", got, want)
	}
	if c := s.domains[otherDomains]; c == nil || c.total() != 10 {
		t.Errorf("%s: got %v, want 10 rows", otherDomains, c)
	}
}

func TestReplyMeaning(t *testing.T) {
	tests := []struct {
		code int
		want string
	}{
		{250, "Requested mail action okay, completed"},
		{550, "Requested action not taken: mailbox unavailable"},
		{421, "Service not available, closing transmission channel"},
		{535, "Authentication credentials invalid"},
		{299, "Success (code not in RFC 5321)"},
		{600, "Not a valid reply code"},
	}
	for _, tt := range tests {
		if got := ReplyMeaning(tt.code); got != tt.want {
			t.Errorf("ReplyMeaning(%d) = %q, want %q", tt.code, got, tt.want)
		}
	}
}

// TestJournalIndexMemory checks the per-row cost of the journal's index: a
// million rows must stay far below 100 MB.
func TestJournalIndexMemory(t *testing.T) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var x rowIndex
	for row := 2; row < 1_000_002; row++ {
		x.set(row, int64(row)*200)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	used := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	if used > 20<<20 {
		t.Errorf("index of 1,000,000 rows: %d MB, want under 20 MB", used>>20)
	}
	if off, ok := x.get(500_000); !ok || off != 500_000*200 {
		t.Errorf("get(500000) = %d, %v", off, ok)
	}
	runtime.KeepAlive(&x)
}
