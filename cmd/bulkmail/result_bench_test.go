package main

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/report"
)

// BenchmarkWriteResult times writeResult alone, the step that runs after the
// last message is sent and so adds directly to a run's wall time: a list of
// 20,000 and 100,000 rows (the columns of the repository's BenchmarkFullSend)
// and a journal holding an outcome for every row.
func BenchmarkWriteResult(b *testing.B) {
	for _, rows := range []int{20_000, 100_000} {
		dir := b.TempDir()
		list, jpath := writeBenchJob(b, dir, rows)
		lf := listFlags{list: list, emailColumn: "email"}
		j, err := report.ReadJournal(jpath)
		if err != nil {
			b.Fatal(err)
		}
		for _, ext := range []string{"xlsx", "csv"} {
			b.Run(fmt.Sprintf("rows=%d/result=%s", rows, ext), func(b *testing.B) {
				out := filepath.Join(dir, "result."+ext)
				for b.Loop() {
					counts, err := writeResult(out, &lf, j, shard{0, 1}, "not attempted")
					if err != nil {
						b.Fatal(err)
					}
					if counts.statusCounts[report.Delivered] != rows {
						b.Fatalf("got %v, want %d delivered", counts, rows)
					}
				}
				b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
			})
		}
		j.Close()
	}
}

// writeBenchJob writes a CSV list of rows recipients into dir and a journal
// recording each as delivered, as a send to a relay leaves it.
func writeBenchJob(tb testing.TB, dir string, rows int) (list, journal string) {
	tb.Helper()
	list = filepath.Join(dir, "list.csv")
	f, err := os.Create(list)
	if err != nil {
		tb.Fatal(err)
	}
	bw := bufio.NewWriter(f)
	w := csv.NewWriter(bw)
	w.Write([]string{"email", "first_name", "last_name", "company", "city", "plan", "account_id", "renewal_date"})
	for i := range rows {
		w.Write([]string{
			fmt.Sprintf("user%07d@example.org", i), "Zoë", "Müller",
			fmt.Sprintf("Customer %d Ltd", i%997), "Zürich", "pro",
			fmt.Sprintf("AC-%08d", i*7919%100000000), fmt.Sprintf("2026-%02d-%02d", i%12+1, i%28+1),
		})
	}
	w.Flush()
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	id, err := hashFile(list)
	if err != nil {
		tb.Fatal(err)
	}
	journal = filepath.Join(dir, "list.journal")
	j, err := report.OpenJournal(journal, report.JobID{List: id}, report.OpenOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	for i := range rows {
		row := i + 2
		err := j.Note(report.Outcome{
			Row: row, Email: fmt.Sprintf("user%07d@example.org", i), Status: report.Delivered,
			Rcpt:     report.Reply{Code: 250, Enhanced: "2.1.5", Text: "Ok"},
			Data:     report.Reply{Code: 250, Enhanced: "2.0.0", Text: fmt.Sprintf("Ok: queued as 4Zk%07dX", i)},
			Attempts: 1, MessageID: fmt.Sprintf("<%d.20261125090000@example.com>", row),
			Conn: i % 16, Start: start.Add(time.Duration(i) * 137 * time.Microsecond), Duration: 3 * time.Millisecond,
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		tb.Fatal(err)
	}
	return list, journal
}
