package main

// Regression tests from the last review of the day (2026-11-26): each began
// as a reproduction of a finding and asserts what the README promises.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// stoppedWithQueuedDup: rows u1..u5, then dup@ six times. The run is
// stopped (as SIGTERM does) during the 3rd message: the first dup row is
// queued but never sent (no journal record), the later ones are already
// noted "skipped: duplicate of row N".
func stoppedWithQueuedDup(t *testing.T) (srv *capture.Server, args []string, result string) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	n := 0
	srv = startCapture(t, capture.Config{KeepInMemory: true, Data: func(*capture.Message) *capture.Reply {
		mu.Lock()
		defer mu.Unlock()
		if n++; n == 3 {
			cancel()
		}
		return nil
	}})
	var b strings.Builder
	b.WriteString("email,name,plan\n")
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&b, "user%d@example.org,User %d,pro\n", i, i)
	}
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "dup@example.org,Dup %d,pro\n", i)
	}
	list := writeFile(t, filepath.Join(dir, "l.csv"), b.String())
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result = filepath.Join(dir, "r.xlsx")
	args = sendArgs(srv, list, tmpl, result, "--workers", "1")
	code, stderr := runCLICtx(t, ctx, args...)
	t.Logf("run 1 (stopped during the 3rd message): exit %d\n%s", code, stderr)
	logRows(t, result)
	return srv, args, result
}

func logRows(t *testing.T, result string) {
	for _, r := range readResult(t, result) {
		t.Logf("  row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
	}
}

// --only skipped after an interrupted run sends a later duplicate whose
// first row was never reached; the next plain resume sends that first row
// too: two copies to one address.
func TestLastOnlySkippedThenResumeSendsTwice(t *testing.T) {
	srv, args, result := stoppedWithQueuedDup(t)
	if got := countTo(srv, "dup@example.org"); got != 0 {
		t.Skipf("run 1 already sent dup@ %d times: timing did not leave the first dup row queued", got)
	}
	code, _, stderr := runCLI(t, append(args, "--only", "skipped")...)
	t.Logf("run 2 (--only skipped): exit %d\n%s", code, stderr)
	logRows(t, result)
	code, _, stderr = runCLI(t, args...)
	t.Logf("run 3 (plain resume): exit %d\n%s", code, stderr)
	logRows(t, result)
	if got := countTo(srv, "dup@example.org"); got != 1 {
		t.Errorf("dup@example.org received %d messages over the three runs, want 1", got)
	}
}

// An in-doubt row taken by --resend-in-doubt that turns out invalid this
// run (its attachment is gone) does not claim its address: a later
// duplicate the first run never reached is sent, with a new Message-ID,
// on top of the copy that may already be in the mailbox.
func TestLastResendInDoubtInvalidRowDoesNotClaim(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	n := 0
	srv := startCapture(t, capture.Config{KeepInMemory: true, Data: func(m *capture.Message) *capture.Reply {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		if k == 1 {
			cancel()
			time.Sleep(1500 * time.Millisecond) // past --grace: the row is in doubt
		}
		return nil
	}})
	writeFile(t, filepath.Join(dir, "a.txt"), "attachment\n")
	var b strings.Builder
	b.WriteString("email,name,plan,files\n")
	b.WriteString("dup@example.org,Dup First,pro,a.txt\n")
	for i := 1; i <= 30; i++ {
		fmt.Fprintf(&b, "user%d@example.org,User %d,pro,\n", i, i)
	}
	b.WriteString("dup@example.org,Dup Again,pro,\n")
	list := writeFile(t, filepath.Join(dir, "l.csv"), b.String())
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result, "--workers", "1", "--attach-column", "files", "--grace", "200ms")
	code, stderr := runCLICtx(t, ctx, args...)
	t.Logf("run 1: exit %d\n%s", code, stderr)
	logRows(t, result)
	time.Sleep(1500 * time.Millisecond)
	t.Logf("after run 1 the server holds %d copies for dup@", countTo(srv, "dup@example.org"))
	os.Remove(filepath.Join(dir, "a.txt"))
	code, _, stderr = runCLI(t, append(args, "--resend-in-doubt")...)
	t.Logf("run 2 (--resend-in-doubt, a.txt gone): exit %d\n%s", code, stderr)
	logRows(t, result)
	ids := receivedMessageIDs(t, srv)["dup@example.org"]
	if got := countTo(srv, "dup@example.org"); got > 1 {
		t.Errorf("dup@example.org received %d messages (Message-IDs %v); the first was in doubt and was not resent, but its later duplicate was", got, ids)
	}
}

// A cell of an invalid row is quoted in that row's error text; given that
// result as --suppress, the quoted text is read as a "not sent to …: on the
// suppression list" note, and the address it names is suppressed.
func TestLastResultAsSuppressNoteFromInvalidCell(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\n"+
		"ann@example.org,Ann,pro\n"+
		"\"x; not sent to boss@example.org: on the suppression list; y\",Mallory,pro\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result)
	t.Logf("run 1: exit %d\n%s", code, stderr)
	logRows(t, result)
	list2 := writeFile(t, filepath.Join(dir, "l2.csv"), "email,name,plan\nboss@example.org,Boss,pro\n")
	result2 := filepath.Join(dir, "r2.xlsx")
	code, _, stderr = runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list2, "--template", tmpl, "--result", result2, "--suppress", result)
	t.Logf("run 2 (--suppress r.xlsx): exit %d\n%s", code, stderr)
	logRows(t, result2)
	if got := countTo(srv, "boss@example.org"); got != 1 {
		t.Errorf("boss@example.org received %d messages, want 1: a list cell of an invalid row suppressed it", got)
	}
}
