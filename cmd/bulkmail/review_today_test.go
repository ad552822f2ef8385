package main

// Regression tests from a review of the day's changes (2026-11-25): each
// began as a reproduction of a finding and now asserts the fixed behaviour.

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/report"
)

// T1: a journal "belongs to one job ... and the template's content", but
// the --html template is not part of the job: next month's newsletter whose
// text part is a generic stub and whose HTML changed is taken as a resume
// of last month's and sends nothing, exit 0.
func TestReviewTodayHTMLNotInJob(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	june := writeFile(t, filepath.Join(dir, "june.html"), "<p>June news for {{.name}}</p>\n")
	july := writeFile(t, filepath.Join(dir, "july.html"), "<p>July news for {{.name}}</p>\n")
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result)
	if code, _, stderr := runCLI(t, append(args, "--html", june)...); code != 0 {
		t.Fatalf("june: exit %d\n%s", code, stderr)
	}
	code, _, stderr := runCLI(t, append(args, "--html", july)...)
	t.Logf("july: exit %d\n%s", code, stderr)
	if n := len(srv.Messages()); n == 3 && code == 0 {
		t.Errorf("another campaign (the --html changed) with the same --result: exit 0 and nothing sent; want a refusal (exit 2) as for a changed template")
	}
}

// T2: a refused Cc/Bcc of a delivered row makes the exit status 1 only in
// the run that delivered it; the same command run again (cron, or after a
// crash) exits 0 with the refusal still in the result, while a row left
// undelivered keeps exit 1 on every re-run.
func TestReviewTodayPartialForgottenOnRerun(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true, Rcpt: func(to string) *capture.Reply {
		if strings.HasPrefix(to, "boss@") {
			return &capture.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"}
		}
		return nil
	}})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\nann@example.org,Ann,pro\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <sender@example.com>\nTo: {{.name}} <{{.email}}>\nCc: boss@example.org\nSubject: Hello\n\nHi {{.plan}}\n")
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result)
	code1, _, stderr := runCLI(t, args...)
	t.Logf("run 1: exit %d\n%s", code1, stderr)
	code2, _, stderr := runCLI(t, args...)
	t.Logf("run 2: exit %d\n%s", code2, stderr)
	rows := readResult(t, result)
	t.Logf("result: %v", rows)
	if code1 == exitUndelivered && code2 == exitOK && strings.Contains(rows[0]["error"], "refused") {
		t.Errorf("run 1 exit %d, the same command again exit %d while the result still names the refused Cc; want 1 both times (as for an undelivered row)", code1, code2)
	}
}

// T3: the refusal of a changed list advises "pass the earlier result as
// --suppress". Since today a result given as --suppress suppresses only its
// delivered, rejected and in_doubt rows, so a row the earlier run skipped
// because its address was on the suppression list is sent now (and
// --suppress takes one file: the unsubscribe list cannot be given too).
func TestReviewTodayResultAsSuppressSendsToUnsubscribed(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\nann@example.org,Ann,pro\nbob@example.org,Bob,pro\n")
	unsub := writeFile(t, filepath.Join(dir, "unsub.txt"), "bob@example.org\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result)
	if code, _, stderr := runCLI(t, append(args, "--suppress", unsub)...); code != 0 || countTo(srv, "bob@example.org") != 0 {
		t.Fatalf("run 1: exit %d\n%s", code, stderr)
	}
	// New subscribers are appended to the list: the run is refused, and the
	// advice is followed.
	writeFile(t, list, "email,name,plan\nann@example.org,Ann,pro\nbob@example.org,Bob,pro\ncy@example.org,Cy,pro\n")
	code, _, stderr := runCLI(t, append(args, "--suppress", unsub)...)
	t.Logf("run 2: exit %d\n%s", code, stderr)
	saved := filepath.Join(dir, "june.xlsx")
	if err := copyFile(result, saved); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, append(args, "--journal-reset", "--suppress", saved)...)
	t.Logf("run 3 (--journal-reset --suppress <earlier result>): exit %d\n%s", code, stderr)
	t.Logf("ann %d bob %d cy %d", countTo(srv, "ann@example.org"), countTo(srv, "bob@example.org"), countTo(srv, "cy@example.org"))
	if n := countTo(srv, "bob@example.org"); n != 0 {
		t.Errorf("bob@example.org was skipped as suppressed in the earlier result, and got %d message(s) when that result was the --suppress list", n)
	}
}

// T4: a CSV suppression list with a row the list reader finds invalid
// (an extra non-empty cell) – is the address still read?
func TestReviewTodaySuppressCSVRowError(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\nann@example.org,Ann,pro\nbob@example.org,Bob,pro\n")
	supp := writeFile(t, filepath.Join(dir, "s.csv"), "email,reason\nbob@example.org,asked, twice\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", filepath.Join(dir, "r.xlsx"), "--suppress", supp)
	t.Logf("exit %d\n%s", code, stderr)
	if n := countTo(srv, "bob@example.org"); n != 0 && code == 0 {
		t.Errorf("bob@example.org is in the suppression CSV (a row with an extra cell) and got %d message(s), no refusal", n)
	}
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

// A sharded job whose journal was written before journals recorded how
// their rows were chosen is refused: shards now hash addresses in Unicode
// normal form, so a row could move into a shard whose journal never saw
// it and be sent twice. Unsharded, such a journal resumes as before.
func TestLegacyShardJournalRefused(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeList(t, dir, 4)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	listID, err := hashFile(list)
	if err != nil {
		t.Fatal(err)
	}
	// The rows part that bulkmail wrote for --shard 0/2 before shards
	// hashed addresses in Unicode normal form.
	oldRows := sha256.Sum256([]byte("sheet=\x00email=0\x00shard=0/2"))
	for _, tc := range []struct {
		name     string
		rows     string
		extra    []string
		wantCode int
		wantSent int
		wantErr  string
	}{
		{"sharded", "", []string{"--shard", "0/2"}, exitUsage, 0, "earlier bulkmail"},
		{"sharded, rows of old shards", hex.EncodeToString(oldRows[:8]), []string{"--shard", "0/2"}, exitUsage, 0, "earlier bulkmail"},
		{"unsharded", "", nil, exitOK, 4, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			result := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".xlsx")
			// What an earlier bulkmail left: a run record with the list's
			// content only, or with the rows of its shards.
			j, err := report.OpenJournal(result+".journal", report.JobID{List: listID, Rows: tc.rows}, report.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			j.Close()
			before := len(srv.Messages())
			args := append(sendArgs(srv, list, tmpl, result), tc.extra...)
			code, _, stderr := runCLI(t, args...)
			if sent := len(srv.Messages()) - before; code != tc.wantCode || sent != tc.wantSent {
				t.Errorf("exit %d, %d sent; want %d and %d\n%s", code, sent, tc.wantCode, tc.wantSent, stderr)
			}
			if !strings.Contains(stderr, tc.wantErr) {
				t.Errorf("the refusal does not say why:\n%s", stderr)
			}
		})
	}
}

// A result given as --suppress keeps the Cc/Bcc copies that its run took
// off the envelope as suppressed, and --suppress may be given twice (the
// unsubscribe list and the earlier result), on the command line or as a
// list in the job file.
func TestResultAsSuppressKeepsSuppressedCopies(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan,manager\nann@example.org,Ann,pro,boss@example.org\nbob@example.org,Bob,pro,boss@example.org\n")
	unsub := writeFile(t, filepath.Join(dir, "unsub.txt"), "boss@example.org\nbob@example.org\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <sender@example.com>\nTo: {{.name}} <{{.email}}>\nCc: {{.manager}}\nSubject: Hello\n\nHi {{.plan}}\n")
	result := filepath.Join(dir, "r.csv")
	args := sendArgs(srv, list, tmpl, result)
	if code, _, stderr := runCLI(t, append(args, "--suppress", unsub)...); code != 0 || countTo(srv, "boss@example.org") != 0 || countTo(srv, "ann@example.org") != 1 {
		t.Fatalf("run 1: exit %d\n%s", code, stderr)
	}
	saved := filepath.Join(dir, "june.csv")
	if err := copyFile(result, saved); err != nil {
		t.Fatal(err)
	}
	// A new subscriber; the list changed, so the advice: start over with
	// the earlier result as a suppression list.
	writeFile(t, list, "email,name,plan,manager\nann@example.org,Ann,pro,boss@example.org\nbob@example.org,Bob,pro,boss@example.org\ncy@example.org,Cy,pro,boss@example.org\n")
	if code, _, stderr := runCLI(t, append(args, "--journal-reset", "--suppress", saved)...); code != 0 {
		t.Fatalf("run 2: exit %d\n%s", code, stderr)
	}
	if a, b, c, boss := countTo(srv, "ann@example.org"), countTo(srv, "bob@example.org"), countTo(srv, "cy@example.org"), countTo(srv, "boss@example.org"); a != 1 || b != 0 || c != 1 || boss != 0 {
		t.Errorf("after run 2: ann %d, bob %d, cy %d, boss %d; want 1, 0, 1, 0", a, b, c, boss)
	}
	// Both lists from a job file.
	writeFile(t, list, "email,name,plan,manager\nann@example.org,Ann,pro,boss@example.org\nbob@example.org,Bob,pro,boss@example.org\ncy@example.org,Cy,pro,boss@example.org\ndee@example.org,Dee,pro,boss@example.org\n")
	job := writeFile(t, filepath.Join(dir, "job.toml"), "suppress = [\"unsub.txt\", \"june.csv\"]\n")
	if code, _, stderr := runCLI(t, append(args, "--journal-reset", "--job", job)...); code != 0 {
		t.Fatalf("run 3: exit %d\n%s", code, stderr)
	}
	if a, b, c, d, boss := countTo(srv, "ann@example.org"), countTo(srv, "bob@example.org"), countTo(srv, "cy@example.org"), countTo(srv, "dee@example.org"), countTo(srv, "boss@example.org"); a != 1 || b != 0 || c != 2 || d != 1 || boss != 0 {
		t.Errorf("after run 3: ann %d, bob %d, cy %d, dee %d, boss %d; want 1, 0, 2, 1, 0", a, b, c, d, boss)
	}
}
