package report

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

// writeLookupJournal writes, at path, a journal for rows list rows (rows 2
// to rows+1) as `bulkmail send --journal-sync batch` leaves it: reserve
// records of 128 rows, then each row's commit and outcome, the rows of a
// batch in the jumbled order 16 workers finish them in. Most rows are
// delivered; a few are refused at RCPT, deferred and retried (two commits
// and outcomes), left with a commit only (in doubt), or invalid (a note
// without a commit).
func writeLookupJournal(tb testing.TB, path string, rows int) {
	tb.Helper()
	j, err := OpenJournal(path, JobID{List: "bench"}, OpenOptions{Boot: "bench-boot", Reserve: true})
	if err != nil {
		tb.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	start := time.Date(2026, 11, 26, 3, 18, 58, 711342903, time.UTC)
	mid := func(row int) string {
		return fmt.Sprintf("<%x@example.com>", sha256.Sum256([]byte{byte(row), byte(row >> 8), byte(row >> 16)}))[:50]
	}
	email := func(row int) string { return fmt.Sprintf("user%07d@example.org", row-2) }
	ok := Reply{Code: 250, Enhanced: "2.1.5", Text: "Ok"}
	queued := Reply{Code: 250, Enhanced: "2.0.0", Text: "Ok"}
	const batch = 128
	for first := 2; first < rows+2; first += batch {
		var rs []Reservation
		var order []int
		for row := first; row < min(first+batch, rows+2); row++ {
			if row%997 == 0 {
				// Invalid: noted, never reserved.
				if err := j.Note(Outcome{Row: row, Email: "not-an-address", Status: Invalid, Error: "row 997: email \"not-an-address\": missing '@'"}); err != nil {
					tb.Fatal(err)
				}
				continue
			}
			rs = append(rs, Reservation{Row: row, Email: email(row), MessageID: mid(row)})
			order = append(order, row)
		}
		if err := j.Reserve(rs); err != nil {
			tb.Fatal(err)
		}
		// Workers finish out of order, within a few places.
		for i := range order {
			k := min(len(order)-1, i+rnd.IntN(16))
			order[i], order[k] = order[k], order[i]
		}
		for _, row := range order {
			at := start.Add(time.Duration(row) * 61 * time.Microsecond)
			o := Outcome{Row: row, Email: email(row), Status: Delivered, Rcpt: ok, Data: queued,
				Attempts: 1, MessageID: mid(row), Conn: row%16 + 1, Start: at, Duration: time.Duration(3_000_000 + rnd.IntN(3_000_000))}
			if err := j.Committing(row, 1, o.Email, o.MessageID); err != nil {
				tb.Fatal(err)
			}
			switch {
			case row%211 == 0: // killed mid-message: a commit only
				continue
			case row%101 == 0: // refused
				o.Status = Rejected
				o.Rcpt = Reply{Code: 550, Enhanced: "5.1.1", Text: "<" + o.Email + ">: Recipient address rejected: User unknown in local recipient table"}
				o.Data = Reply{}
				o.Error = "550 5.1.1 <" + o.Email + ">: Recipient address rejected: User unknown in local recipient table"
			case row%53 == 0: // deferred once, then delivered
				d := o
				d.Status, d.Data = Deferred, Reply{Code: 451, Enhanced: "4.3.0", Text: "Error: queue file write error"}
				d.Error = "451 4.3.0 Error: queue file write error"
				if err := j.Record(d); err != nil {
					tb.Fatal(err)
				}
				if err := j.Committing(row, 2, o.Email, o.MessageID); err != nil {
					tb.Fatal(err)
				}
				o.Attempts = 2
			}
			if err := j.Record(o); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := j.Close(); err != nil {
		tb.Fatal(err)
	}
}

// lookupAll looks every row from 2 to rows+1 up in j as the result file's
// writer does (cmd/bulkmail startLookups): GOMAXPROCS goroutines, each
// taking batches of 256 consecutive rows.
// With batch, each goroutine looks its batch up with one LastBatch.
func lookupAll(j *Journal, rows int, out []Outcome, batch bool) {
	const lookupBatch = 256
	work := make(chan int, 64)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			nums := make([]int, 0, lookupBatch)
			found := make([]bool, lookupBatch)
			for first := range work {
				end := min(first+lookupBatch, rows+2)
				if batch {
					nums = nums[:0]
					for row := first; row < end; row++ {
						nums = append(nums, row)
					}
					j.LastBatch(nums, out[first-2:end-2], found[:len(nums)])
					continue
				}
				for row := first; row < end; row++ {
					out[row-2], _ = j.Last(row)
				}
			}
		})
	}
	for first := 2; first < rows+2; first += lookupBatch {
		work <- first
	}
	close(work)
	wg.Wait()
}

// BenchmarkJournalLast times the lookups that writing the result file
// makes after the last message: Last for every row of a 20,000-row
// journal, in parallel.
func BenchmarkJournalLast(b *testing.B) {
	const rows = 20_000
	path := filepath.Join(b.TempDir(), "bench.journal")
	writeLookupJournal(b, path, rows)
	j, err := ReadJournal(path)
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	for _, batch := range []bool{false, true} {
		name := "Last"
		if batch {
			name = "LastBatch"
		}
		b.Run(name, func(b *testing.B) {
			out := make([]Outcome, rows)
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			cpu0 := cpuTime()
			for b.Loop() {
				lookupAll(j, rows, out, batch)
			}
			cpu := cpuTime() - cpu0
			runtime.ReadMemStats(&ms1)
			n := float64(b.N) * rows
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/row")
			b.ReportMetric(float64(cpu.Nanoseconds())/n, "cpu-ns/row")
			b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/row")
			b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/row")
		})
	}
}

// cpuTime is the CPU time (user and system) the process has used, GC
// included: on a busy machine a steadier measure than the wall clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDecodeJournal times decodeRecordIn alone on every commit and
// outcome line of the journal BenchmarkJournalLast reads, as LastBatch
// calls it.
func BenchmarkDecodeJournal(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bench.journal")
	writeLookupJournal(b, path, 20_000)
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var lines [][]byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if bytes.HasPrefix(line, []byte(`{"t":"commit"`)) || bytes.HasPrefix(line, []byte(`{"t":"outcome"`)) {
			lines = append(lines, line)
		}
	}
	texts := make([]string, len(lines))
	for i, line := range lines {
		texts[i] = string(line)
	}
	var unescape []byte
	for b.Loop() {
		for i, line := range lines {
			var r record
			if err := decodeRecordIn(line, texts[i], &unescape, &r); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(lines)), "ns/line")
}
