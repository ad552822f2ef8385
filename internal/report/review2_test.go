package report

import (
	"os"
	"path/filepath"
	"testing"
)

// review2 R1: a failed fsync leaves a mark beside the journal so that the
// next reader distrusts what this boot only wrote. --journal-reset moves
// the journal aside (rotate) and OpenJournal then removes the mark: the
// journal it was about, now at path.old-<stamp>, is read in the same boot
// as if every write had reached the disk. A row reserved there whose
// commit may have been dropped reads as never tried.
func TestReview2ResetDropsUnsyncedMarkOfOldJournal(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "journal")
	j := reservedJournal(t, path, 1, 2)
	if err := j.Committing(2, 1, "r2@example.org", "<2@bulkmail.test>"); err != nil {
		t.Fatal(err)
	}
	failFsync(t, j)
	j.f.Close()
	if _, err := os.Stat(path + unsyncedSuffix); err != nil {
		t.Fatalf("no mark: %v", err)
	}
	// Before the reset, a reader in this boot distrusts the journal.
	r, err := readJournal(path, bootA)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := r.Last(1)
	r.Close()
	t.Logf("before the reset, row 1 reads %q", before.Status)

	j2, err := OpenJournal(path, JobID{List: listA}, OpenOptions{Boot: bootA, Reset: true})
	if err != nil {
		t.Fatal(err)
	}
	j2.Close()
	old, _ := filepath.Glob(path + ".old-*[0-9Z]") // not the mark that went with it
	if len(old) != 1 {
		t.Fatalf("old journals: %v", old)
	}
	r, err = readJournal(old[0], bootA)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	after, ok := r.Last(1)
	if after.Status != before.Status {
		t.Errorf("the journal moved aside by --journal-reset: row 1 reads %q (found %v) in the same boot, %q before the reset; the failed fsync's mark was removed, not moved with it", after.Status, ok, before.Status)
	}
}
