package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Two boots of a machine, as BootID would name them.
const (
	bootA = "0b5e2d6c-0000-4000-8000-00000000000a"
	bootB = "0b5e2d6c-0000-4000-8000-00000000000b"
)

// reserveStep is one thing a run does to its journal; dot is the row whose
// final dot goes out right after it (0: none); row and status the outcome
// the step records.
type reserveStep struct {
	name   string
	do     func(j *Journal) error
	dot    int
	row    int
	status Status
}

// failFsync makes j's fsyncs fail from now on, while its writes go on (a
// pipe takes writes and refuses fsync), and has one fail.
func failFsync(t *testing.T, j *Journal) {
	t.Helper()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pr.Close(); pw.Close() })
	j.mu.Lock()
	j.w = pw
	j.mu.Unlock()
	if err := j.Sync(); err == nil {
		t.Fatal("Sync on a pipe succeeded")
	}
}

// reservedJournal opens a journal at path that takes reservations, in
// bootA, and reserves rows.
func reservedJournal(t *testing.T, path string, rows ...int) *Journal {
	t.Helper()
	j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Reserve(reservation(rows...)); err != nil {
		t.Fatal(err)
	}
	return j
}

func reservation(rows ...int) []Reservation {
	rs := make([]Reservation, len(rows))
	for i, row := range rows {
		rs[i] = Reservation{Row: row, Email: fmt.Sprintf("r%d@example.org", row), MessageID: fmt.Sprintf("<%d@bulkmail.test>", row)}
	}
	return rs
}

func commitStep(row, attempt int) reserveStep {
	return reserveStep{
		name: fmt.Sprintf("commit row %d attempt %d", row, attempt),
		do: func(j *Journal) error {
			return j.Committing(row, attempt, fmt.Sprintf("r%d@example.org", row), fmt.Sprintf("<%d@bulkmail.test>", row))
		},
		dot: row,
	}
}

func recordStep(row, attempts int, s Status, lazy bool) reserveStep {
	return reserveStep{
		name: fmt.Sprintf("record row %d %s", row, s),
		do: func(j *Journal) error {
			o := Outcome{Row: row, Email: fmt.Sprintf("r%d@example.org", row), Status: s, Attempts: attempts, MessageID: fmt.Sprintf("<%d@bulkmail.test>", row)}
			if lazy {
				return j.RecordUnsynced(o)
			}
			return j.Record(o)
		},
		row:    row,
		status: s,
	}
}

// reserveRun is a run that reserves rows 1-6 and sends them: row 1
// delivered, row 2 in doubt (killed before its reply), row 3 rejected at
// RCPT (no dot), row 4 never reached, row 5 deferred at its dot and then
// delivered on a retry, row 6 deferred at RCPT and then in doubt on its
// retry.
var reserveRun = []reserveStep{
	{name: "reserve rows 1-6", do: func(j *Journal) error { return j.Reserve(reservation(1, 2, 3, 4, 5, 6)) }},
	commitStep(1, 1),
	recordStep(1, 1, Delivered, true),
	commitStep(2, 1),
	recordStep(3, 1, Rejected, false),
	commitStep(5, 1),
	recordStep(5, 1, Deferred, false),
	recordStep(6, 1, Deferred, true),
	commitStep(5, 2),
	recordStep(5, 2, Delivered, false),
	commitStep(6, 2),
}

// lineEnds returns the offsets just past each line of b.
func lineEnds(b []byte) []int64 {
	var ends []int64
	for i, c := range b {
		if c == '\n' {
			ends = append(ends, int64(i+1))
		}
	}
	return ends
}

// TestReserveSurvivesRestart kills a reserving run after each of its
// steps and then restarts the machine at every moment the kernel could
// have chosen: the journal cut at each line from the last fsync to what
// was written. A run in the new boot must read every row whose last final
// dot went out as in doubt or as the answer that dot got, never as unsent
// or as an answer from before it (it would be sent again), and no row as
// delivered that was not.
func TestReserveSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal")
	// An earlier run deferred row 2: its record before the reservation
	// must not stand for the dot that goes out after it.
	earlier, err := OpenJournal(path, JobID{List: listA}, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := earlier.Record(Outcome{Row: 2, Status: Deferred, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	if err := earlier.Close(); err != nil {
		t.Fatal(err)
	}
	j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.f.Close()
	dotted := map[int]bool{}
	answer := map[int]Status{} // what the row's last dot got; "" while unknown
	delivered := map[int]bool{}
	cuts := 0
	for k, step := range reserveRun {
		if err := step.do(j); err != nil {
			t.Fatalf("step %q: %v", step.name, err)
		}
		if step.dot != 0 {
			dotted[step.dot] = true
			answer[step.dot] = ""
		}
		if step.row != 0 && dotted[step.row] {
			answer[step.row] = step.status
		}
		if step.status == Delivered {
			delivered[step.row] = true
		}
		written, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		j.mu.Lock()
		durable := j.size
		j.mu.Unlock()
		for _, cut := range lineEnds(written) {
			if cut < durable {
				continue
			}
			cuts++
			crashed := filepath.Join(dir, fmt.Sprintf("crash-%d-%d", k, cut))
			if err := os.WriteFile(crashed, written[:cut], 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := readJournal(crashed, bootB)
			if err != nil {
				t.Fatalf("after %q, cut at %d: %v", step.name, cut, err)
			}
			for row := 1; row <= 6; row++ {
				got, ok := r.Last(row)
				switch {
				case got.Status == Delivered && !delivered[row]:
					t.Errorf("after %q, cut at %d: row %d reads delivered, and was not", step.name, cut, row)
				case dotted[row] && (!ok || got.Status != InDoubt && (answer[row] == "" || got.Status != answer[row])):
					t.Errorf("after %q, cut at %d: row %d's final dot went out and got %q, and it reads %q (found %v)", step.name, cut, row, answer[row], got.Status, ok)
				}
			}
			r.Close()
		}
	}
	if cuts < len(reserveRun) {
		t.Fatalf("only %d cuts tried", cuts)
	}
}

// TestReserveSameBootIsExact: a run killed (not the machine) leaves every
// record written, and a run in the same boot reads each row as it was:
// the row never reached is not in doubt.
func TestReserveSameBootIsExact(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range reserveRun {
		if err := step.do(j); err != nil {
			t.Fatalf("step %q: %v", step.name, err)
		}
	}
	j.f.Close() // killed: no Close

	want := map[int]Status{1: Delivered, 2: InDoubt, 3: Rejected, 5: Delivered, 6: InDoubt}
	check := func(what string, r *Journal) {
		t.Helper()
		for row := 1; row <= 6; row++ {
			got, ok := r.Last(row)
			if w, sent := want[row]; ok != sent || got.Status != w {
				t.Errorf("%s: row %d reads %q (found %v), want %q (found %v)", what, row, got.Status, ok, w, sent)
			}
		}
	}
	r, err := readJournal(path, bootA)
	if err != nil {
		t.Fatal(err)
	}
	check("read in the same boot", r)
	r.Close()

	// A run in the same boot settles the killed run's reservations: after a
	// restart later, nothing of it is in doubt. (This one takes no
	// reservations itself: --journal-sync message after batch.)
	j2, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA})
	if err != nil {
		t.Fatal(err)
	}
	check("resumed in the same boot", j2)
	if err := j2.Close(); err != nil {
		t.Fatal(err)
	}
	r, err = readJournal(path, bootB)
	if err != nil {
		t.Fatal(err)
	}
	check("read after a restart that followed the resume", r)
	r.Close()
}

// TestReserveRestartRecorded: the first run after a restart writes the
// rows it finds in doubt as commits, with why, and the Message-ID and
// address they were reserved with; later runs read them so whatever the
// boot, and the reservations are not judged again.
func TestReserveRestartRecorded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j := reservedJournal(t, path, 7, 8)
	if err := j.Committing(7, 1, "r7@example.org", "<7@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	j.f.Close() // the machine stops; the commit happens to survive

	j2, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootB, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	want8 := Outcome{Row: 8, Email: "r8@example.org", Status: InDoubt, Attempts: 1, MessageID: "<8@bulkmail.test>", Error: restartError}
	got, ok := j2.Last(8)
	got.Start = want8.Start
	if !ok || got != want8 {
		t.Errorf("row 8 after the restart:\ngot  %+v (found %v)\nwant %+v", got, ok, want8)
	}
	if got, _ := j2.Last(7); got.Status != InDoubt || got.Error != inDoubtError {
		t.Errorf("row 7 after the restart: %+v, want in doubt as killed after its dot", got)
	}
	if err := j2.Close(); err != nil {
		t.Fatal(err)
	}
	for _, boot := range []string{bootA, bootB, ""} {
		r, err := readJournal(path, boot)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := r.Last(8); got.Status != InDoubt || got.Error != restartError {
			t.Errorf("boot %q: row 8 reads %+v", boot, got)
		}
		if n := r.Len(); n != 2 {
			t.Errorf("boot %q: Len %d, want 2", boot, n)
		}
		r.Close()
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, []byte(`"t":"commit","row":8,`)); n != 1 {
		t.Errorf("row 8's restart commit written %d times, want once:\n%s", n, b)
	}
}

// TestReserveCloseEndsReservations: rows reserved by a run that closed
// cleanly and never sent (stopped by a signal, say) are not in doubt,
// even after a restart; and a journal without a boot id takes no
// reservations and fsyncs every commit.
func TestReserveCloseEndsReservations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	if !j.Reserving() {
		t.Fatal("a journal with a boot id does not reserve")
	}
	if err := j.Reserve(reservation(1, 2)); err != nil {
		t.Fatal(err)
	}
	before := j.fsyncs
	if err := j.Committing(1, 1, "r1@example.org", "<1@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	if err := j.Record(Outcome{Row: 1, Status: Delivered, Attempts: 1}); err != nil {
		t.Fatal(err)
	}
	if j.fsyncs != before {
		t.Errorf("a reserved row's commit and outcome took %d fsyncs, want none", j.fsyncs-before)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	r, err := readJournal(path, bootB)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := r.Last(2); ok {
		t.Errorf("row 2, reserved and never sent by a run that closed, reads %+v after a restart", o)
	}
	if o, _ := r.Last(1); o.Status != Delivered {
		t.Errorf("row 1 reads %+v", o)
	}
	r.Close()

	strict, err := OpenJournal(filepath.Join(t.TempDir(), "journal"), JobID{List: listA}, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer strict.Close()
	if strict.Reserving() {
		t.Fatal("a journal without a boot id reserves")
	}
	if err := strict.Reserve(reservation(1)); err != nil {
		t.Fatal(err)
	}
	before = strict.fsyncs
	if err := strict.Committing(1, 1, "r1@example.org", ""); err != nil {
		t.Fatal(err)
	}
	if strict.fsyncs != before+1 {
		t.Errorf("without a boot id a commit took %d fsyncs, want 1", strict.fsyncs-before)
	}
}

// TestAppendReserveIsJSON: the reserve record's own encoder writes what
// encoding/json does, so that any reader of the journal reads it alike.
func TestAppendReserveIsJSON(t *testing.T) {
	for _, rs := range [][]Reservation{
		reservation(1),
		reservation(3, 1, 1<<40),
		{{Row: 9}, {Row: 10, Email: "<\"odd\"\\&\u2028@example.org>"}, {Row: 11, MessageID: "<x@y>", Email: "\xff@example.org"}},
	} {
		want, err := json.Marshal(&record{T: kindReserve, Reserved: rs})
		if err != nil {
			t.Fatal(err)
		}
		if got := appendReserve(nil, rs); string(got) != string(want)+"\n" {
			t.Errorf("appendReserve:\ngot  %s\nwant %s", got, want)
		}
	}
}

// TestReserveFailedFsyncDistrustsBoot: after an fsync of the journal
// fails, the kernel may drop what it could not write, so a run in the same
// boot can no longer trust what was only written: the journal leaves a
// mark, and the next run judges the reservations as after a restart, then
// clears the mark.
func TestReserveFailedFsyncDistrustsBoot(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j := reservedJournal(t, path, 1, 2)
	if err := j.Committing(1, 1, "r1@example.org", "<1@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	failFsync(t, j)
	j.f.Close() // the run stops; its process ends
	if _, err := os.Stat(path + unsyncedSuffix); err != nil {
		t.Fatalf("no mark after a failed fsync: %v", err)
	}

	r, err := readJournal(path, bootA)
	if err != nil {
		t.Fatal(err)
	}
	if o, ok := r.Last(2); !ok || o.Status != InDoubt || o.Error != restartError {
		t.Errorf("row 2, reserved, read in the same boot after a failed fsync: %+v (found %v), want in doubt", o, ok)
	}
	r.Close()

	j2, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := j2.Last(2); o.Status != InDoubt {
		t.Errorf("row 2 after the resume: %+v, want in doubt", o)
	}
	if !j2.Reserving() {
		t.Error("the resumed journal takes no reservations")
	}
	if err := j2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + unsyncedSuffix); !os.IsNotExist(err) {
		t.Errorf("the mark is still there after a run settled it: %v", err)
	}
}

// TestReserveNeverLastLine: an earlier bulkmail takes an unknown last line
// for a torn tail and drops it; a reservation is always followed by a line
// in the same write, so such a bulkmail refuses the journal instead.
func TestReserveNeverLastLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Reserve(reservation(1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
	if last := lines[len(lines)-1]; string(last) != `{"t":"guard"}` || !bytes.Contains(lines[len(lines)-2], []byte(`"reserved"`)) {
		t.Errorf("journal after Reserve ends:\n%s", b)
	}
}

// TestStopCommits: once StopCommits and a Sync have returned, no
// Committing succeeds that a reader of the journal then would not see;
// later ones fail. Run with
// -race, many committers racing the stop.
func TestStopCommits(t *testing.T) {
	for _, reserve := range []bool{false, true} {
		t.Run(fmt.Sprintf("reserve=%v", reserve), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "journal")
			j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: reserve})
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			// Each worker commits until it is refused: reserved rows
			// first (written only), then rows whose commits fsync, so that
			// the stop lands while commits are going on in either mode.
			const workers, each, reserved = 4, 1 << 20, 800
			rows := make([]int, 0, reserved)
			for row := 1; row <= reserved; row++ {
				rows = append(rows, row)
			}
			if err := j.Reserve(reservation(rows...)); err != nil {
				t.Fatal(err)
			}
			committed := make([][]int, workers)
			var wg sync.WaitGroup
			giveUp := time.Now().Add(time.Second) // a StopCommits that stops nothing fails, not hangs
			for w := range workers {
				wg.Go(func() {
					for i := range each {
						if time.Now().After(giveUp) {
							return
						}
						row := i*workers + w + 1
						err := j.Committing(row, 1, "", "")
						if err != nil {
							if !errors.Is(err, ErrCommitsStopped) {
								t.Errorf("row %d: %v", row, err)
							}
							return
						}
						committed[w] = append(committed[w], row)
					}
				})
			}
			time.Sleep(5 * time.Millisecond)
			// As send does: stop, sync, then read the journal.
			j.StopCommits()
			if err := j.Sync(); err != nil {
				t.Fatal(err)
			}
			// Strict commits take an fsync each: in 5 ms no worker gets
			// far past the reserved rows.
			const scan = reserved + 20000
			seen := map[int]bool{}
			for row := 1; row <= scan; row++ {
				if _, ok := j.Last(row); ok {
					seen[row] = true
				}
			}
			wg.Wait()
			n := 0
			for _, rs := range committed {
				for _, row := range rs {
					n++
					if row > scan {
						t.Fatalf("row %d committed, past the rows read back", row)
					}
					if !seen[row] {
						t.Errorf("row %d committed, and not in the journal when StopCommits returned", row)
					}
				}
			}
			if err := j.Committing(1, 2, "", ""); !errors.Is(err, ErrCommitsStopped) {
				t.Errorf("Committing after StopCommits: %v, want ErrCommitsStopped", err)
			}
			t.Logf("%d commits before the stop", n)
		})
	}
}
