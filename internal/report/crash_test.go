package report

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMain lets the test binary stand in for a bulkmail run that is killed:
// with BULKMAIL_REPORT_CHILD set it opens the journal, records, commits a
// final dot and then waits to be killed.
func TestMain(m *testing.M) {
	if path := os.Getenv("BULKMAIL_REPORT_CHILD"); path != "" {
		os.Exit(child(path))
	}
	os.Exit(m.Run())
}

func child(path string) int {
	j, err := OpenJournal(path, JobID{List: listA}, OpenOptions{})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if err := j.Record(outcomeFor(2)); err != nil {
		fmt.Println(err)
		return 1
	}
	if err := j.Committing(3, 1, "c@d", "<3@x>"); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println("ready")
	select {} // until killed
}

// TestJournalKilled kills a process holding the journal with SIGKILL: while
// it lives a second run is refused; once it is dead the lock is gone with no
// clean-up, the recorded row is kept and the committed one is in doubt.
func TestJournalKilled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "BULKMAIL_REPORT_CHILD="+path)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: got %q (%v), want %q", line, err, "ready\n")
	}
	if _, err := OpenJournal(path, JobID{List: listA}, OpenOptions{}); !errors.Is(err, ErrLocked) {
		t.Errorf("OpenJournal while the child runs: got %v, want ErrLocked", err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	j := openTest(t, path, listA, false)
	defer j.Close()
	checkLast(t, j, 2, outcomeFor(2))
	got, ok := j.Last(3)
	if !ok || got.Status != InDoubt || got.Error != inDoubtError || got.MessageID != "<3@x>" {
		t.Errorf("Last(3) = %+v, %v; want in doubt", got, ok)
	}
}
