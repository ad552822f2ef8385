package merge

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFirstRowsMatchesAMap adds lists with repeated addresses and checks
// each answer against a map of AddressKey to first row, with tunables small
// enough that the lists spill many runs and merge them several times.
func TestFirstRowsMatchesAMap(t *testing.T) {
	cases := []struct {
		name                   string
		rows, distinct         int
		memLimit, fanIn, block int
	}{
		{"all in memory", 500, 200, 1024, 8, 256},
		{"spills, no merge", 500, 400, 64, 100, 8},
		{"spills and merges", 5000, 3000, 16, 3, 4},
		{"block of one", 2000, 1500, 8, 2, 1},
		{"mostly duplicates", 5000, 50, 4, 3, 2},
		{"no duplicates", 3000, 1 << 30, 32, 4, 16},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := newFirstRows(dir, c.memLimit, c.fanIn, c.block)
			defer s.Close()
			rng := rand.New(rand.NewPCG(1, uint64(c.rows)))
			want := map[string]int{}
			dups := 0
			for row := 1; row <= c.rows; row++ {
				n := rng.IntN(min(c.distinct, 1<<30))
				// Case in the domain does not matter, in the local part it does.
				addr := fmt.Sprintf("user%d@Example%d.COM", n, n%7)
				if rng.IntN(2) == 0 {
					addr = strings.ToLower(addr[:strings.IndexByte(addr, '@')]) + strings.ToLower(addr[strings.IndexByte(addr, '@'):])
				}
				key := AddressKey(addr)
				got, err := s.Add(addr, row)
				if err != nil {
					t.Fatalf("row %d: %v", row, err)
				}
				if first, ok := want[key]; ok {
					dups++
					if got != first {
						t.Fatalf("row %d (%s): got first row %d, want %d", row, addr, got, first)
					}
					continue
				}
				if got != 0 {
					t.Fatalf("row %d (%s): new address reported as duplicate of row %d", row, addr, got)
				}
				want[key] = row
			}
			if c.distinct < c.rows && dups == 0 {
				t.Fatal("the case produced no duplicates")
			}
			if c.memLimit < c.rows && len(s.runs) == 0 {
				t.Fatal("the case never spilled")
			}
			// Merged by level: fewer than fanIn runs of any one level, and
			// levels never rising along the runs.
			perLevel := map[int]int{}
			for i, run := range s.runs {
				perLevel[run.level]++
				if perLevel[run.level] >= c.fanIn {
					t.Fatalf("%d runs of level %d: not merged", perLevel[run.level], run.level)
				}
				if i > 0 && run.level > s.runs[i-1].level {
					t.Fatalf("run %d has level %d after level %d", i, run.level, s.runs[i-1].level)
				}
			}
			if c.fanIn < 100 && c.rows > c.memLimit*c.fanIn*c.fanIn && s.runs[0].level < 2 {
				t.Fatalf("levels %v: never merged twice", perLevel)
			}
			// The spill file is unlinked: nothing to see in dir.
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("left %d files in %s", len(ents), dir)
			}
		})
	}
}

// TestFirstRowsLocalPartCase: the local part's case is significant (RFC
// 5321 2.4), the domain's is not.
func TestFirstRowsLocalPartCase(t *testing.T) {
	s := newFirstRows(t.TempDir(), 1, 2, 1) // every address spills
	defer s.Close()
	for i, c := range []struct {
		addr  string
		first int
	}{
		{"Ann@example.com", 0},
		{"ann@example.com", 0},
		{"Ann@EXAMPLE.com", 1},
		{"ann@Example.Com", 2},
		{"bob@example.com", 0},
		{"Ann@example.com", 1},
	} {
		got, err := s.Add(c.addr, i+1)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.first {
			t.Errorf("row %d %s: first row %d, want %d", i+1, c.addr, got, c.first)
		}
	}
}

// TestFirstRowsSpillError: a folder it cannot write in is an error from
// Add, not a silent loss of duplicate detection.
func TestFirstRowsSpillError(t *testing.T) {
	s := newFirstRows(filepath.Join(t.TempDir(), "missing"), 2, 2, 1)
	defer s.Close()
	var err error
	for row := 1; row <= 3 && err == nil; row++ {
		_, err = s.Add(fmt.Sprintf("u%d@example.com", row), row)
	}
	if err == nil || !strings.Contains(err.Error(), "duplicate index") {
		t.Fatalf("got %v, want an error about the duplicate index", err)
	}
}

func TestFirstRowsRowRange(t *testing.T) {
	s := NewFirstRows(t.TempDir())
	defer s.Close()
	for _, row := range []int{0, -1, 1 << 32} {
		if _, err := s.Add("a@example.com", row); err == nil {
			t.Errorf("row %d: no error", row)
		}
	}
}

// BenchmarkFirstRows adds a million distinct addresses with the real
// tunables: the cost of duplicate detection per row, spills included.
func BenchmarkFirstRows(b *testing.B) {
	addrs := make([]string, 1<<20)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("user%d@example%d.com", i, i%1000)
	}
	b.ResetTimer()
	for range b.N {
		s := NewFirstRows(b.TempDir())
		for i, a := range addrs {
			if _, err := s.Add(a, i+1); err != nil {
				b.Fatal(err)
			}
		}
		s.Close()
	}
	b.ReportMetric(float64(b.N*len(addrs))/b.Elapsed().Seconds(), "rows/s")
}
