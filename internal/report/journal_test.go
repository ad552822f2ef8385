package report

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	listA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	listB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func openTest(t *testing.T, path, listID string, reset bool) *Journal {
	t.Helper()
	j, err := OpenJournal(path, JobID{List: listID}, OpenOptions{Reset: reset})
	if err != nil {
		t.Fatalf("OpenJournal(%q): %v", path, err)
	}
	return j
}

// outcomeFor builds a distinctive outcome for row so that a mixed-up index
// shows up as a wrong field.
func outcomeFor(row int) Outcome {
	st := statuses[row%len(statuses)]
	return Outcome{
		Row:       row,
		Email:     fmt.Sprintf("user%d@example.org", row),
		Status:    st,
		Rcpt:      Reply{Code: 250, Enhanced: "2.1.5", Text: fmt.Sprintf("<user%d@example.org> ok", row)},
		Data:      Reply{Code: 250, Enhanced: "2.0.0", Text: fmt.Sprintf("queued as Q%d\nsecond line", row)},
		Attempts:  1 + row%3,
		MessageID: fmt.Sprintf("<%d@bulkmail.test>", row),
		Error:     fmt.Sprintf("error %d", row),
		Conn:      row % 16,
		Start:     time.Date(2025, 3, 1, 12, 0, row%60, row*1000, time.UTC),
		Duration:  time.Duration(row) * time.Millisecond,
	}
}

func checkLast(t *testing.T, j *Journal, row int, want Outcome) {
	t.Helper()
	got, ok := j.Last(row)
	if !ok {
		t.Fatalf("Last(%d): not found", row)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Last(%d):\ngot  %+v\nwant %+v", row, got, want)
	}
}

func TestJournalConcurrentRecordReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "job.journal")
	j := openTest(t, path, listA, false)
	const workers, perWorker = 16, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				row := 2 + w*perWorker + i
				o := outcomeFor(row)
				if err := j.Committing(row, o.Attempts, o.Email, o.MessageID); err != nil {
					errs <- err
					return
				}
				if row%10 == 0 {
					continue // left in doubt
				}
				if err := j.Record(o); err != nil {
					errs <- err
					return
				}
				// A recorded row reads back at once, while others write.
				if got, ok := j.Last(row); !ok || !reflect.DeepEqual(got, o) {
					errs <- fmt.Errorf("Last(%d) during writes: got %+v, want %+v", row, got, o)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A row is visible through Last as soon as its record is durable.
	checkLast(t, j, 3, outcomeFor(3))
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j = openTest(t, path, listA, false)
	defer j.Close()
	if got, want := j.Len(), workers*perWorker; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	for row := 2; row < 2+workers*perWorker; row++ {
		want := outcomeFor(row)
		if row%10 == 0 {
			got, _ := j.Last(row)
			if got.Status != InDoubt || got.Email != want.Email || got.MessageID != want.MessageID || got.Attempts != want.Attempts || got.Error != inDoubtError {
				t.Errorf("Last(%d) = %+v, want in doubt for %q", row, got, want.Email)
			}
			continue
		}
		checkLast(t, j, row, want)
	}
	if _, ok := j.Last(1); ok {
		t.Errorf("Last(1): found a row never recorded")
	}
	if _, ok := j.Last(1 << 40); ok {
		t.Errorf("Last(1<<40): found a row never recorded")
	}
}

func TestJournalLaterRecordWins(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j := openTest(t, path, listA, false)
	deferred := Outcome{Row: 5, Email: "a@b.c", Status: Deferred, Rcpt: Reply{Code: 451, Enhanced: "4.7.1", Text: "try later"}, Attempts: 3}
	if err := j.Record(deferred); err != nil {
		t.Fatal(err)
	}
	j.Close()

	// The next run commits the deferred row again and dies before the reply.
	j = openTest(t, path, listA, false)
	checkLast(t, j, 5, deferred)
	if err := j.Committing(5, 4, "a@b.c", "<m5@x>"); err != nil {
		t.Fatal(err)
	}
	j.Close()

	j = openTest(t, path, listA, false)
	got, _ := j.Last(5)
	if got.Status != InDoubt || got.Attempts != 4 || got.MessageID != "<m5@x>" {
		t.Errorf("Last(5) = %+v, want in doubt on attempt 4", got)
	}
	if got.Status.Final() {
		t.Errorf("InDoubt.Final() = true, want false")
	}
	// A big row number goes through the sparse side of the index.
	big := Outcome{Row: denseRows + 7, Email: "big@x", Status: Delivered}
	if err := j.Record(big); err != nil {
		t.Fatal(err)
	}
	checkLast(t, j, big.Row, big)
	var rows []int
	if err := j.Each(func(o Outcome) error { rows = append(rows, o.Row); return nil }); err != nil {
		t.Fatal(err)
	}
	if want := []int{5, denseRows + 7}; !reflect.DeepEqual(rows, want) {
		t.Errorf("Each rows = %v, want %v", rows, want)
	}
	j.Close()
}

func TestJournalTornLine(t *testing.T) {
	tests := []struct {
		name string
		tail string
	}{
		{"half a line", `{"t":"outcome","row":9,"email":"x@y","sta`},
		{"zero filled", "\x00\x00\x00\x00\x00\x00"},
		{"garbled complete last line", "\x00\x00{\"t\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			j := openTest(t, path, listA, false)
			o := outcomeFor(7)
			if err := j.Record(o); err != nil {
				t.Fatal(err)
			}
			j.Close()
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(tt.tail)
			f.Close()

			// Read-only inspection ignores the tail but leaves it.
			r, err := ReadJournal(path)
			if err != nil {
				t.Fatalf("ReadJournal: %v", err)
			}
			checkLast(t, r, 7, o)
			if _, ok := r.Last(9); ok {
				t.Errorf("ReadJournal: torn row 9 found")
			}
			if err := r.Record(outcomeFor(8)); err == nil {
				t.Errorf("Record on a read-only journal: got nil error")
			}
			r.Close()

			j = openTest(t, path, listA, false)
			checkLast(t, j, 7, o)
			if _, ok := j.Last(9); ok {
				t.Errorf("torn row 9 found")
			}
			o8 := outcomeFor(8)
			if err := j.Record(o8); err != nil {
				t.Fatal(err)
			}
			j.Close()
			data, _ := os.ReadFile(path)
			if strings.Contains(string(data), "\x00") || strings.Contains(string(data), `"sta{`) {
				t.Errorf("torn tail not truncated:\n%s", data)
			}
			j = openTest(t, path, listA, false)
			defer j.Close()
			checkLast(t, j, 7, o)
			checkLast(t, j, 8, o8)
		})
	}
}

func TestJournalNotAJournal(t *testing.T) {
	tests := []struct {
		name, content string
	}{
		{"csv", "email,name\na@b.c,A\n"},
		{"one line", "hello\n"},
		{"no newline", "hello"},
		{"damaged middle", `{"t":"run","v":1,"list":"` + listA + `"}` + "\ngarbage\n" + `{"t":"outcome","row":2,"status":"delivered"}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "list.csv")
			os.WriteFile(path, []byte(tt.content), 0o644)
			_, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Reset: true})
			if !errors.Is(err, ErrNotJournal) {
				t.Errorf("OpenJournal: got %v, want ErrNotJournal", err)
			}
			data, _ := os.ReadFile(path)
			if string(data) != tt.content {
				t.Errorf("file changed: got %q, want %q", data, tt.content)
			}
		})
	}
}

func TestJournalListChanged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "j")
	j := openTest(t, path, listA, false)
	j.Record(outcomeFor(2))
	j.Close()

	if _, err := OpenJournal(path, JobID{List: listB}, OpenOptions{}); !errors.Is(err, ErrListChanged) {
		t.Fatalf("OpenJournal with another list: got %v, want ErrListChanged", err)
	}
	j = openTest(t, path, listB, true)
	if _, ok := j.Last(2); ok {
		t.Errorf("reset journal still has row 2")
	}
	if got := j.Job().List; got != listB {
		t.Errorf("Job().List = %q, want %q", got, listB)
	}
	j.Close()
	olds, _ := filepath.Glob(path + ".old-*")
	if len(olds) != 1 {
		t.Fatalf("old journals: got %q, want one", olds)
	}
	old, err := ReadJournal(olds[0])
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	checkLast(t, old, 2, outcomeFor(2))
	if got := old.Job().List; got != listA {
		t.Errorf("old Job().List = %q, want %q", got, listA)
	}
}

func TestJournalLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j := openTest(t, path, listA, false)
	if _, err := OpenJournal(path, JobID{List: listA}, OpenOptions{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second OpenJournal: got %v, want ErrLocked", err)
	}
	// A locked journal is not moved aside by reset either.
	if _, err := OpenJournal(path, JobID{List: listB}, OpenOptions{Reset: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second OpenJournal with reset: got %v, want ErrLocked", err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openTest(t, path, listA, false)
	j.Close()
}

func TestJournalMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j := openTest(t, path, listA, false)
	j.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode = %v, want 0600", got)
	}
}

func TestJournalStickyError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j := openTest(t, path, listA, false)
	if err := j.Record(outcomeFor(2)); err != nil {
		t.Fatal(err)
	}
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	j.w = full
	if err := j.Record(outcomeFor(3)); err == nil {
		t.Fatal("Record to /dev/full: got nil error")
	}
	j.w = j.f // the disk is fine again, but the journal must not believe it
	if err := j.Record(outcomeFor(4)); err == nil {
		t.Errorf("Record after a failed write: got nil error")
	}
	if err := j.Committing(5, 1, "x@y", ""); err == nil {
		t.Errorf("Committing after a failed write: got nil error")
	}
	if err := j.Close(); err == nil {
		t.Errorf("Close after a failed write: got nil error")
	}
	full.Close()
	j = openTest(t, path, listA, false)
	defer j.Close()
	checkLast(t, j, 2, outcomeFor(2))
	for _, row := range []int{3, 4, 5} {
		if _, ok := j.Last(row); ok {
			t.Errorf("Last(%d): found a record whose write failed", row)
		}
	}
}

func TestJournalRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j := openTest(t, path, listA, false)
	tests := []struct {
		name string
		o    Outcome
	}{
		{"row 0", Outcome{Row: 0, Status: Delivered}},
		{"unknown status", Outcome{Row: 2, Status: "sent"}},
	}
	for _, tt := range tests {
		if err := j.Record(tt.o); err == nil {
			t.Errorf("%s: got nil error", tt.name)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatalf("Close after rejected records: %v", err)
	}
	if err := j.Record(outcomeFor(2)); err == nil {
		t.Errorf("Record after Close: got nil error")
	}
}

func TestStatusFinal(t *testing.T) {
	want := map[Status]bool{Delivered: true, Rejected: true, Invalid: true, Skipped: true, Deferred: false, Failed: false, InDoubt: false}
	for _, s := range Statuses() {
		if got := s.Final(); got != want[s] {
			t.Errorf("%s.Final() = %v, want %v", s, got, want[s])
		}
	}
}

// BenchmarkJournalRecord measures durable records per second: one writer
// (every record its own fsync, the baseline) against 16 concurrent writers
// sharing fsyncs through group commit.
func BenchmarkJournalRecord(b *testing.B) {
	for _, writers := range []int{1, 16} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "j")
			j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			var mu sync.Mutex
			next := 2
			start := time.Now()
			if writers == 1 {
				for i := range b.N {
					if err := j.Record(outcomeFor(2 + i)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
				return
			}
			b.SetParallelism((writers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					mu.Lock()
					row := next
					next++
					mu.Unlock()
					if err := j.Record(outcomeFor(row)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
		})
	}
}

func TestJournalNoteIsDurableAfterSync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j, err := OpenJournal(path, JobID{List: "list"}, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Note(Outcome{Row: 2, Email: "a@example.org", Status: Invalid, Error: "bad"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := j.Last(2); ok {
		t.Errorf("a note is visible before it is on disk")
	}
	if err := j.Sync(); err != nil {
		t.Fatal(err)
	}
	if o, ok := j.Last(2); !ok || o.Status != Invalid || o.Error != "bad" {
		t.Errorf("after Sync: got %+v %v, want the invalid note", o, ok)
	}
	// A note followed by a durable record is flushed with it.
	j.Note(Outcome{Row: 3, Email: "b@example.org", Status: Skipped})
	if err := j.Record(Outcome{Row: 4, Email: "c@example.org", Status: Delivered}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := ReadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for row, want := range map[int]Status{2: Invalid, 3: Skipped, 4: Delivered} {
		if o, ok := r.Last(row); !ok || o.Status != want {
			t.Errorf("row %d after reopening: got %q %v, want %q", row, o.Status, ok, want)
		}
	}
}

// TestJournalRecordUnsynced checks the stages of an outcome that rides on
// the next commit's fsync: once RecordUnsynced returns it is in the file,
// so a process killed right then (a reader that opens the file without the
// writer closing it) already finds it, and so does the writer's own Last.
func TestJournalRecordUnsynced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	j := openTest(t, path, listA, false)
	defer j.Close()
	if err := j.Committing(5, 1, "user5@example.org", "<5@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	want := outcomeFor(5)
	want.Status = Delivered
	if err := j.RecordUnsynced(want); err != nil {
		t.Fatal(err)
	}

	// As a run resumed after kill -9 would read it.
	r, err := ReadJournal(path)
	if err != nil {
		t.Fatal(err)
	}
	checkLast(t, r, 5, want)
	r.Close()

	// The writer reads what is written, as that reader does.
	checkLast(t, j, 5, want)
	if err := j.Committing(6, 1, "user6@example.org", "<6@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	checkLast(t, j, 5, want)
	if err := j.Sync(); err != nil { // nothing left to sync: returns at once
		t.Fatal(err)
	}
}

// TestJournalGroupGathers checks that with SetGroup(n) an fsync waits for
// the other committers to join it, and that it waits no longer than half
// an fsync's time when they do not come.
func TestJournalGroupGathers(t *testing.T) {
	j := openTest(t, filepath.Join(t.TempDir(), "j"), listA, false)
	defer j.Close()
	j.SetGroup(2)
	j.mu.Lock()
	j.fsyncTime = 400 * time.Millisecond // so the gathering waits up to 200ms
	before := j.fsyncs
	j.mu.Unlock()

	first := make(chan error, 1)
	go func() { first <- j.Committing(1, 1, "user1@example.org", "<1@bulkmail.test>") }()
	select {
	case err := <-first:
		t.Fatalf("the first commit returned (%v) without waiting for the second", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := j.Committing(2, 1, "user2@example.org", "<2@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	got := j.fsyncs - before
	j.fsyncTime = 400 * time.Millisecond // the real fsyncs above moved the average
	j.mu.Unlock()
	if got != 1 {
		t.Errorf("two commits gathered took %d fsyncs, want 1", got)
	}

	// Alone, a commit waits for the one that does not come, but not forever.
	start := time.Now()
	if err := j.Committing(3, 1, "user3@example.org", "<3@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 5*time.Second {
		t.Errorf("a lone commit took %v, want about half the fsync time (200ms)", d)
	}
	checkLast(t, j, 2, Outcome{Row: 2, Email: "user2@example.org", Status: InDoubt, Attempts: 1,
		MessageID: "<2@bulkmail.test>", Error: inDoubtError, Start: lastStart(t, j, 2)})
}

// lastStart returns the time recorded for row's last record.
func lastStart(t *testing.T, j *Journal, row int) time.Time {
	t.Helper()
	o, ok := j.Last(row)
	if !ok {
		t.Fatalf("row %d not found", row)
	}
	return o.Start
}

// TestJournalJobID: a journal refuses a run for another list, other rows
// of it or another template; parts one side does not know (a journal from
// before they were kept, or report, which has no template) are not
// compared; --template-edited accepts a template and makes it the
// journal's.
func TestJournalJobID(t *testing.T) {
	full := JobID{List: listA, Rows: "r1", Template: "t1"}
	tests := []struct {
		name    string
		written JobID
		opt     OpenOptions
		run     JobID
		want    error
	}{
		{"same job", full, OpenOptions{}, full, nil},
		{"another list", full, OpenOptions{}, JobID{List: listB, Rows: "r1", Template: "t1"}, ErrListChanged},
		{"another sheet or column", full, OpenOptions{}, JobID{List: listA, Rows: "r2", Template: "t1"}, ErrRowsChanged},
		{"another template", full, OpenOptions{}, JobID{List: listA, Rows: "r1", Template: "t2"}, ErrTemplateChanged},
		{"another template, edited", full, OpenOptions{TemplateEdited: true}, JobID{List: listA, Rows: "r1", Template: "t2"}, nil},
		{"another HTML template", JobID{List: listA, Template: "t1", HTML: "h1"}, OpenOptions{}, JobID{List: listA, Template: "t1", HTML: "h2"}, ErrTemplateChanged},
		{"another HTML template, edited", JobID{List: listA, Template: "t1", HTML: "h1"}, OpenOptions{TemplateEdited: true}, JobID{List: listA, Template: "t1", HTML: "h2"}, nil},
		{"HTML unknown to an older journal", full, OpenOptions{}, JobID{List: listA, Rows: "r1", Template: "t1", HTML: "h1"}, nil},
		{"edited does not excuse other rows", full, OpenOptions{TemplateEdited: true}, JobID{List: listA, Rows: "r2", Template: "t2"}, ErrRowsChanged},
		{"journal from before parts", JobID{List: listA}, OpenOptions{}, full, nil},
		{"journal from before parts, rows required", JobID{List: listA}, OpenOptions{RequireRows: true}, full, ErrRowsUnknown},
		{"rows required and known", full, OpenOptions{RequireRows: true}, full, nil},
		{"run without a template", full, OpenOptions{}, JobID{List: listA, Rows: "r1"}, nil},
		{"reset takes anything", full, OpenOptions{Reset: true}, JobID{List: listB, Rows: "r9", Template: "t9"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "j")
			j, err := OpenJournal(path, tt.written, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			j.Close()
			j, err = OpenJournal(path, tt.run, tt.opt)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("OpenJournal: %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			j.Close()
			// The run's job is now the journal's: the same run again is
			// accepted without options, and the file says so.
			r, err := ReadJournal(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := r.Job(); got != tt.run {
				t.Errorf("Job() after the run = %+v, want %+v", got, tt.run)
			}
		})
	}
}

func TestJobIDString(t *testing.T) {
	for _, id := range []JobID{{List: listA}, {List: listA, Rows: "r"}, {List: listA, Template: "t"}, {List: listA, Rows: "r", Template: "t"}, {List: listA, Template: "t", HTML: "h"}} {
		if got := parseJobID(id.String()); got != id {
			t.Errorf("parseJobID(%q) = %+v, want %+v", id.String(), got, id)
		}
	}
}
