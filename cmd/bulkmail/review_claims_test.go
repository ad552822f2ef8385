package main

// Tests from a review of duplicate detection across runs (produce, wanted,
// claims, sendable, settle), asserting the rule: every address gets exactly
// one message over any sequence of runs of a job. Two stay skipped, with
// their reason: limitations the README names.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// runTagged runs bulkmail in-process with Message-IDs unique to this run
// (testEnv restarts its counter at 1 for every run, so ids of two runs
// could match by chance and hide a changed Message-ID).
func runTagged(t *testing.T, ctx context.Context, tag string, args ...string) (int, string) {
	t.Helper()
	env := testEnv()
	n := 0
	env.messageID = func() string {
		n++
		return fmt.Sprintf("<%s-%d@test.invalid>", tag, n)
	}
	var stdout, stderr bytes.Buffer
	err := runWith(ctx, args, &stdout, &stderr, env)
	code := exitStatus(err)
	if err != nil {
		fmt.Fprintln(&stderr, err)
	}
	return code, stderr.String()
}

func logDupRows(t *testing.T, result string) {
	for _, r := range readResult(t, result) {
		if r["email"] == "dup@example.org" {
			t.Logf("  row %s %s %s attempts=%s %q", r["row"], r["email"], r["status"], r["attempts"], r["error"])
		}
	}
}

// C1: a row left in_doubt, resent with --resend-in-doubt and refused with a
// 4xx that time (deferred), is sent again by the next cron run
// (--only deferred,failed) with a NEW Message-ID: the recipient may hold
// the in-doubt copy and now a second one that Message-ID deduplication
// cannot collapse. messageIDs.forRow keeps the id only while the row's
// last status is in_doubt.
func TestClaimsInDoubtThenDeferredGetsNewMessageID(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var phase atomic.Int32 // 1: hold dup@'s reply past --grace; 2: 451 to dup@; 3: accept
	phase.Store(1)
	var once sync.Once
	srv := startCapture(t, capture.Config{KeepInMemory: true,
		Rcpt: func(to string) *capture.Reply {
			if phase.Load() == 2 && to == "dup@example.org" {
				return &capture.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
			}
			return nil
		},
		Data: func(m *capture.Message) *capture.Reply {
			if phase.Load() == 1 && m.To[0] == "dup@example.org" {
				once.Do(func() {
					cancel()
					time.Sleep(1500 * time.Millisecond) // past --grace: in doubt
				})
			}
			return nil
		}})
	var b strings.Builder
	b.WriteString("email,name,plan\n")
	b.WriteString("user1@example.org,User 1,pro\n")
	b.WriteString("dup@example.org,Dup,pro\n")
	for i := 2; i <= 10; i++ {
		fmt.Fprintf(&b, "user%d@example.org,User %d,pro\n", i, i)
	}
	list := writeFile(t, filepath.Join(dir, "l.csv"), b.String())
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result,
		"--workers", "1", "--grace", "200ms", "--retries", "0")

	code, stderr := runTagged(t, ctx, "run1", args...)
	t.Logf("run 1 (stopped, dup@ left in doubt): exit %d\n%s", code, stderr)
	logDupRows(t, result)
	time.Sleep(1500 * time.Millisecond)
	if countTo(srv, "dup@example.org") != 1 {
		t.Skipf("run 1: dup@ received %d copies, want 1 (in doubt)", countTo(srv, "dup@example.org"))
	}

	phase.Store(2)
	code, stderr = runTagged(t, context.Background(), "run2", append(args, "--resend-in-doubt")...)
	t.Logf("run 2 (--resend-in-doubt, server 451s dup@): exit %d\n%s", code, stderr)
	logDupRows(t, result)

	phase.Store(3)
	code, stderr = runTagged(t, context.Background(), "run3", append(args, "--only", "deferred,failed")...)
	t.Logf("run 3 (cron: --only deferred,failed): exit %d\n%s", code, stderr)
	logDupRows(t, result)

	ids := receivedMessageIDs(t, srv)["dup@example.org"]
	t.Logf("dup@ received Message-IDs %v", ids)
	for _, id := range ids[1:] {
		if id != ids[0] {
			t.Errorf("dup@example.org received %d copies with Message-IDs %v: the in-doubt copy was resent under another Message-ID", len(ids), ids)
			break
		}
	}
}

// claimThenInvalid: dup@ is row 2 (with an attachment) and the last row
// (without). Run 1: the server 451s dup@, so row 2 is deferred and claims
// the address; the last row is skipped "duplicate of row 2". Before the
// next run the attachment of row 2 is gone, so row 2 settles invalid.
func claimThenInvalid(t *testing.T) (srv *capture.Server, args []string, dir, result string) {
	dir = t.TempDir()
	var refuse atomic.Bool
	refuse.Store(true)
	srv = startCapture(t, capture.Config{KeepInMemory: true, Rcpt: deferWhile(&refuse, "dup@example.org")})
	writeFile(t, filepath.Join(dir, "a.txt"), "attachment\n")
	var b strings.Builder
	b.WriteString("email,name,plan,files\n")
	b.WriteString("dup@example.org,Dup First,pro,a.txt\n")
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&b, "user%d@example.org,User %d,pro,\n", i, i)
	}
	b.WriteString("dup@example.org,Dup Again,pro,\n")
	list := writeFile(t, filepath.Join(dir, "l.csv"), b.String())
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result = filepath.Join(dir, "r.xlsx")
	args = sendArgs(srv, list, tmpl, result,
		"--workers", "1", "--retries", "0", "--attach-column", "files")
	code, _, stderr := runCLI(t, args...)
	t.Logf("run 1 (server 451s dup@): exit %d\n%s", code, stderr)
	logDupRows(t, result)
	refuse.Store(false)
	return srv, args, dir, result
}

// C2: a row that claimed its address (deferred) and is invalid now leaves
// the address without a message for good: the duplicate it claimed against
// stays "skipped: duplicate of row 2" through every plain or cron resume.
func TestClaimsDeferredRowTurnsInvalidStrandsDuplicate(t *testing.T) {
	t.Skip("known limitation: a duplicate stays skipped when the row that claimed its address later turns invalid; the operator fixes that row and runs --only invalid (a journal field for duplicate-skips would let a later run judge them again)")
	srv, args, dir, result := claimThenInvalid(t)
	os.Remove(filepath.Join(dir, "a.txt"))
	for _, extra := range [][]string{{"--only", "deferred,failed"}, nil, {"--only", "deferred,failed"}} {
		code, _, stderr := runCLI(t, append(args, extra...)...)
		t.Logf("run %v (a.txt gone): exit %d\n%s", extra, code, stderr)
		logDupRows(t, result)
	}
	if got := countTo(srv, "dup@example.org"); got != 1 {
		t.Errorf("dup@example.org received %d messages, want 1: row 2 will never be sent (invalid) but still keeps its duplicate skipped", got)
	}
}

// C3: the same with --max-attempts: row 2 used up its attempts (never
// delivered), and its duplicate stays skipped for good. (The brief lists
// an exhausted row among those that must not strand an address.)
func TestClaimsExhaustedRowStrandsDuplicate(t *testing.T) {
	t.Skip("design question for the team: a row that used up --max-attempts keeps its address, so its duplicates are not tried against a refusing server")
	dir := t.TempDir()
	var refuse atomic.Bool
	refuse.Store(true)
	srv := startCapture(t, capture.Config{KeepInMemory: true, Rcpt: deferWhile(&refuse, "dup@example.org")})
	list := dupListAtEnd(t, dir, 5)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result,
		"--workers", "1", "--retries", "0", "--max-attempts", "2")
	for i := 0; i < 3; i++ {
		code, _, stderr := runCLI(t, append(args, "--only", "deferred,failed")...)
		t.Logf("cron run %d: exit %d\n%s", i+1, code, stderr)
		logDupRows(t, result)
	}
	refuse.Store(false)
	code, _, stderr := runCLI(t, append(args, "--only", "deferred,failed")...)
	t.Logf("cron run after the server recovered: exit %d\n%s", code, stderr)
	logDupRows(t, result)
	if got := countTo(srv, "dup@example.org"); got != 1 {
		t.Logf("dup@example.org received %d messages (want 1 by the brief's rule; by design an exhausted address may be meant to stay unsent)", got)
		t.Fail()
	}
}

// C4: the in-doubt fact is lost once the resend is refused (C1), so when
// that row later turns invalid, the remedy for C2 (--only skipped, to get
// the stranded duplicate its message) sends a second copy, under another
// Message-ID, to an address that may already hold the in-doubt one.
func TestClaimsInDoubtDeferredInvalidThenOnlySkippedSendsTwice(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var phase atomic.Int32
	phase.Store(1)
	var once sync.Once
	srv := startCapture(t, capture.Config{KeepInMemory: true,
		Rcpt: func(to string) *capture.Reply {
			if phase.Load() == 2 && to == "dup@example.org" {
				return &capture.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
			}
			return nil
		},
		Data: func(m *capture.Message) *capture.Reply {
			if phase.Load() == 1 && m.To[0] == "dup@example.org" {
				once.Do(func() {
					cancel()
					time.Sleep(1500 * time.Millisecond)
				})
			}
			return nil
		}})
	writeFile(t, filepath.Join(dir, "a.txt"), "attachment\n")
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan,files\n"+
		"dup@example.org,Dup First,pro,a.txt\n"+
		"dup@example.org,Dup Again,pro,\n"+
		"user1@example.org,User 1,pro,\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result,
		"--workers", "1", "--grace", "200ms", "--retries", "0", "--attach-column", "files")
	code, stderr := runTagged(t, ctx, "run1", args...)
	t.Logf("run 1 (dup@ left in doubt): exit %d\n%s", code, stderr)
	logDupRows(t, result)
	time.Sleep(1500 * time.Millisecond)
	if countTo(srv, "dup@example.org") != 1 {
		t.Skipf("run 1: dup@ received %d copies, want 1", countTo(srv, "dup@example.org"))
	}
	phase.Store(2)
	code, stderr = runTagged(t, context.Background(), "run2", append(args, "--resend-in-doubt")...)
	t.Logf("run 2 (--resend-in-doubt, 451): exit %d\n%s", code, stderr)
	logDupRows(t, result)
	phase.Store(3)
	os.Remove(filepath.Join(dir, "a.txt"))
	code, stderr = runTagged(t, context.Background(), "run3", append(args, "--only", "deferred,failed")...)
	t.Logf("run 3 (cron, a.txt gone): exit %d\n%s", code, stderr)
	logDupRows(t, result)
	code, stderr = runTagged(t, context.Background(), "run4", append(args, "--only", "skipped")...)
	t.Logf("run 4 (--only skipped): exit %d\n%s", code, stderr)
	logDupRows(t, result)
	if ids := receivedMessageIDs(t, srv)["dup@example.org"]; len(ids) > 1 {
		t.Errorf("dup@example.org received %d copies, Message-IDs %v: the first was in doubt (it arrived) and was never confirmed, yet its duplicate was sent", len(ids), ids)
	}
}
