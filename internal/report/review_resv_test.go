package report

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// R2: one reserve record holds a whole batch on one line. send.go's batch
// is max(32, 4*workers) rows; each entry carries the address (up to 254
// octets) and the Message-ID (its <> escaped by JSON). With --workers 1000
// and long addresses the line passes maxRecord (1 MiB), and the next
// OpenJournal / ReadJournal refuses the whole journal as "not a bulkmail
// journal": the campaign cannot be resumed or reported.
func TestReviewResvHugeReservationUnreadable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	const workers = 1000
	batch := max(32, 4*workers) // cmd/bulkmail reserveBatch
	local := strings.Repeat("a", 64)
	domain := strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + ".example" // 189
	rs := make([]Reservation, batch)
	for i := range rs {
		rs[i] = Reservation{Row: i + 1, Email: fmt.Sprintf("%s%04d@%s", local[:59], i, domain), // 254 octets
			MessageID: fmt.Sprintf("<20260101T000000.%016x@mail.%s>", i, domain[:60])}
	}
	if err := j.Reserve(rs); err != nil {
		t.Fatalf("Reserve: %v", err)
	}
	if err := j.Committing(1, 1, rs[0].Email, rs[0].MessageID); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	t.Logf("journal of %d bytes, one reservation of %d rows", st.Size(), batch)
	j2, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatalf("resume of a journal this bulkmail wrote itself: %v (ErrNotJournal: %v)", err, errors.Is(err, ErrNotJournal))
	}
	j2.Close()
}

// R3: after the journal's sticky error (ENOSPC, EFBIG, EIO), Sync fails and
// the records that were written but not yet fsynced are never indexed:
// Last, which writeResult uses for the run's own result file, does not see
// them. With reservations that is every commit and outcome since the last
// reservation or retry, so the failed run's result file shows rows that
// were delivered as "failed, not attempted" (the journal itself, read
// again, has them). Before the change Record fsynced and indexed each
// outcome before returning.
func TestReviewResvLastAfterWriteFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal")
	j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reserve: true})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := j.Reserve(reservation(1, 2)); err != nil {
		t.Fatal(err)
	}
	if err := j.Committing(1, 1, "r1@example.org", "<1@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	if err := j.Record(Outcome{Row: 1, Email: "r1@example.org", Status: Delivered, Attempts: 1, MessageID: "<1@bulkmail.test>"}); err != nil {
		t.Fatal(err)
	}
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer full.Close()
	j.w = full // the disk fills up: the next reservation fails, the run stops
	if err := j.Reserve(reservation(3)); err == nil {
		t.Fatal("Reserve on a full disk: nil error")
	}
	_ = j.Sync() // runSend syncs before writeResult; it fails
	got, ok := j.Last(1)
	if !ok || got.Status != Delivered {
		t.Errorf("the run's own result: row 1 (delivered, its outcome written to the file) reads %q (found %v): writeResult shows it as failed, not attempted", got.Status, ok)
	}
	r, err := readJournal(path, bootA)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	o, _ := r.Last(1)
	t.Logf("the same journal read again: row 1 reads %q", o.Status)
}

// R5: in a reserving journal RecordUnsynced keeps the outcome in memory
// until the next commit or WriteOut. A process killed in between (no
// restart of the machine) leaves a delivered row reading in_doubt: the
// same-boot journal is not exact. Before the change the outcome was
// written at once and a kill lost nothing.
func TestReviewResvLazyOutcomeLostOnKill(t *testing.T) {
	for _, boot := range []string{"", bootA} {
		path := filepath.Join(t.TempDir(), "journal")
		j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: boot, Reserve: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := j.Reserve(reservation(1, 2)); err != nil {
			t.Fatal(err)
		}
		if err := j.Committing(1, 1, "r1@example.org", "<1@bulkmail.test>"); err != nil {
			t.Fatal(err)
		}
		if err := j.RecordUnsynced(Outcome{Row: 1, Email: "r1@example.org", Status: Delivered, Attempts: 1, MessageID: "<1@bulkmail.test>"}); err != nil {
			t.Fatal(err)
		}
		j.f.Close() // kill -9 before the next commit
		r, err := readJournal(path, bootA)
		if err != nil {
			t.Fatal(err)
		}
		o, _ := r.Last(1)
		r.Close()
		if o.Status != Delivered {
			t.Errorf("boot %q: a delivered row whose outcome was recorded reads %q after a kill -9 in the same boot", boot, o.Status)
		}
	}
}
