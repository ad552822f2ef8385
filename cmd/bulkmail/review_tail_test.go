package main

// Regression test from a review of the claims-by-Message-ID change: a row
// that claimed its address keeps it in the run in which it turns invalid,
// or a later duplicate is sent then and the fixed row again later.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// T1: a row that claimed its address (deferred, Message-ID kept) and turns
// invalid in a later run does not claim the address IN THAT RUN (settle()
// notes it invalid before seen.Add, and only the in_doubt branch adds it),
// so a later duplicate that no earlier run reached is sent. When the row is
// then fixed and run with --only invalid (what the README says to do), the
// journal preload gives the address to the lower row (its invalid record now
// claims, having a Message-ID) and it is sent a second copy, under another
// Message-ID.
func TestTailInvalidClaimantDoesNotClaimInItsRunThenFixSendsTwice(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var phase atomic.Int32
	phase.Store(1)
	srv := startCapture(t, capture.Config{KeepInMemory: true, Rcpt: func(to string) *capture.Reply {
		if phase.Load() == 1 && to == "dup@example.org" {
			cancel() // SIGTERM while row 2 is refused: the rest is never reached
			return &capture.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
		}
		return nil
	}})
	writeFile(t, filepath.Join(dir, "a.txt"), "attachment\n")
	var b strings.Builder
	b.WriteString("email,name,plan,files\n")
	b.WriteString("user0@example.org,User 0,pro,\n")
	b.WriteString("dup@example.org,Dup First,pro,a.txt\n")
	for i := 1; i <= 40; i++ {
		fmt.Fprintf(&b, "user%d@example.org,User %d,pro,\n", i, i)
	}
	b.WriteString("dup@example.org,Dup Again,pro,\n")
	list := writeFile(t, filepath.Join(dir, "l.csv"), b.String())
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result,
		"--workers", "1", "--retries", "0", "--attach-column", "files")

	code, stderr := runTagged(t, ctx, "run1", args...)
	t.Logf("run 1 (451 to dup@, stopped): exit %d\n%s", code, stderr)
	logDupRows(t, result)
	rows := readResult(t, result)
	if rows[1]["status"] != "deferred" || rows[len(rows)-1]["error"] != "not attempted: the run was interrupted" {
		t.Skipf("run 1 did not leave row 2 deferred and the last row unreached")
	}

	phase.Store(2)
	os.Remove(filepath.Join(dir, "a.txt"))
	code, stderr = runTagged(t, context.Background(), "run2", append(args, "--only", "deferred,failed")...)
	t.Logf("run 2 (cron line, a.txt gone): exit %d\n%s", code, stderr)
	logDupRows(t, result)

	writeFile(t, filepath.Join(dir, "a.txt"), "attachment\n")
	code, stderr = runTagged(t, context.Background(), "run3", append(args, "--only", "invalid")...)
	t.Logf("run 3 (a.txt back, --only invalid as the README says): exit %d\n%s", code, stderr)
	logDupRows(t, result)

	if ids := receivedMessageIDs(t, srv)["dup@example.org"]; len(ids) != 1 {
		t.Errorf("dup@example.org received %d messages, Message-IDs %v; want 1", len(ids), ids)
	}
}
