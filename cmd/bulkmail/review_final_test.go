package main

// Reproductions from the final review of 8edfc9c..HEAD. Each test asserts
// the behaviour the README promises, so a failing test is a finding.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// runCLICtx is runCLI with the caller's context (cancelling it is what the
// first SIGINT/SIGTERM does in main).
func runCLICtx(t *testing.T, ctx context.Context, args ...string) (int, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := runWith(ctx, args, &stdout, &stderr, testEnv())
	code := exitStatus(err)
	if err != nil {
		fmt.Fprintln(&stderr, err)
	}
	return code, stderr.String()
}

// dupListAtEnd: row 2 and the last row share an address.
func dupListAtEnd(t *testing.T, dir string, n int) string {
	var b strings.Builder
	b.WriteString("email,name,plan\n")
	b.WriteString("dup@example.org,Dup First,pro\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "user%d@example.org,User %d,pro\n", i, i)
	}
	b.WriteString("dup@example.org,Dup Again,pro\n")
	return writeFile(t, filepath.Join(dir, "l.csv"), b.String())
}

// interruptedThenResumed runs a job, stops it (as SIGTERM does) after the
// third message, then resumes it with extra flags.
func interruptedThenResumed(t *testing.T, resumeFlags ...string) (*capture.Server, string) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	n := 0
	srv := startCapture(t, capture.Config{KeepInMemory: true, Data: func(*capture.Message) *capture.Reply {
		mu.Lock()
		defer mu.Unlock()
		if n++; n == 3 {
			cancel()
		}
		return nil
	}})
	list := dupListAtEnd(t, dir, 40)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result, "--workers", "1")
	code, stderr := runCLICtx(t, ctx, args...)
	t.Logf("run 1 (stopped after 3 messages): exit %d\n%s", code, stderr)
	if code != exitInterrupted {
		t.Fatalf("run 1: exit %d, want %d", code, exitInterrupted)
	}
	if got := countTo(srv, "dup@example.org"); got != 1 {
		t.Fatalf("run 1: dup@example.org got %d messages, want 1", got)
	}
	code, _, stderr = runCLI(t, append(args, resumeFlags...)...)
	t.Logf("run 2 (resume %v): exit %d\n%s", resumeFlags, code, stderr)
	for _, r := range readResult(t, result) {
		if r["email"] == "dup@example.org" {
			t.Logf("result: row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
		}
	}
	return srv, result
}

// F1: a plain resume after an interruption sends the duplicate row at the
// end of the list a second copy: its first row was delivered in run 1, is
// settled now, and no longer claims the address (the journal is not read).
func TestFinalResumeAfterInterruptSendsDuplicateTwice(t *testing.T) {
	srv, _ := interruptedThenResumed(t)
	if got := countTo(srv, "dup@example.org"); got != 1 {
		t.Errorf("dup@example.org received %d messages over the two runs, want 1 (the README: a duplicate address is sent once; a re-run never sends twice)", got)
	}
}

// F1b: the same with the README's cron line, --only deferred,failed.
func TestFinalOnlyFailedAfterInterruptSendsDuplicateTwice(t *testing.T) {
	srv, _ := interruptedThenResumed(t, "--only", "deferred,failed")
	if got := countTo(srv, "dup@example.org"); got != 1 {
		t.Errorf("dup@example.org received %d messages over the two runs, want 1", got)
	}
}

// F3: a suppressed Cc whose quoted local part holds ", " (RFC 5321 valid,
// accepted by bulkmail as a Cc and in the suppression file) is noted as
// suppressed; that result given as --suppress is then refused as holding
// something that is not an address.
func TestFinalResultAsSuppressQuotedCommaCc(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	cc := `"smith, john"@example.org`
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan,manager\nann@example.org,Ann,pro,\"\"\"smith, john\"\"@example.org\"\n")
	unsub := writeFile(t, filepath.Join(dir, "unsub.txt"), cc+"\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <sender@example.com>\nTo: {{.name}} <{{.email}}>\nCc: {{.manager}}\nSubject: Hello\n\nHi {{.plan}}\n")
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result)
	code, _, stderr := runCLI(t, append(args, "--suppress", unsub)...)
	t.Logf("run 1: exit %d\n%s", code, stderr)
	for _, r := range readResult(t, result) {
		t.Logf("run 1 result: row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
	}
	if code != 0 || countTo(srv, "ann@example.org") != 1 || countTo(srv, cc) != 0 {
		t.Fatalf("run 1: exit %d, ann %d, cc %d", code, countTo(srv, "ann@example.org"), countTo(srv, cc))
	}
	saved := filepath.Join(dir, "june.xlsx")
	if err := copyFile(result, saved); err != nil {
		t.Fatal(err)
	}
	result2 := filepath.Join(dir, "r2.xlsx")
	code, _, stderr = runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result2, "--suppress", saved, "--suppress", unsub)
	t.Logf("run 2 (--suppress june.xlsx --suppress unsub.txt): exit %d\n%s", code, stderr)
	if code == exitUsage {
		t.Errorf("a result file written by bulkmail itself is refused as --suppress: exit %d", code)
	}
}

// F4: IsPartial matches a suppression note that quotes a (valid, quoted)
// Cc address: a delivered row with no refused recipient sets exit 1 and is
// reported as "reached the main recipient but not every Cc/Bcc".
func TestFinalIsPartialFalsePositiveFromSuppressionNote(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	cc := `"recipient 2 refused: see below"@example.org`
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan,manager\nann@example.org,Ann,pro,\""+strings.ReplaceAll(cc, `"`, `""`)+"\"\n")
	unsub := writeFile(t, filepath.Join(dir, "unsub.txt"), cc+"\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <sender@example.com>\nTo: {{.name}} <{{.email}}>\nCc: {{.manager}}\nSubject: Hello\n\nHi {{.plan}}\n")
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result, "--suppress", unsub)
	t.Logf("exit %d\n%s", code, stderr)
	for _, r := range readResult(t, result) {
		t.Logf("result: row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
	}
	if rcptCount(srv) != 1 || countTo(srv, "ann@example.org") != 1 {
		t.Fatalf("want exactly one RCPT (ann), got %d", rcptCount(srv))
	}
	if code != exitOK {
		t.Errorf("every row delivered, no RCPT refused: exit %d, want 0", code)
	}
}

// F4b: the same through the list's file name, which a short-row warning
// quotes in the delivered row's note.
func TestFinalIsPartialFalsePositiveFromWarning(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "recipient 1 refused: march.csv"), "email,name,plan\nann@example.org,Ann\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result)
	t.Logf("exit %d\n%s", code, stderr)
	if countTo(srv, "ann@example.org") != 1 {
		t.Fatal("ann not delivered")
	}
	if code != exitOK {
		t.Errorf("every row delivered, no RCPT refused: exit %d, want 0", code)
	}
}

// F5: --suppress on the command line silently replaces the job file's
// suppression list (flags win), so following the ErrListChanged advice
// ("pass the earlier result as one more --suppress") from a job file drops
// the unsubscribe list.
func TestFinalCommandLineSuppressDropsJobFileList(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\nann@example.org,Ann,pro\nbob@example.org,Bob,pro\n")
	writeFile(t, filepath.Join(dir, "unsub.txt"), "bob@example.org\n")
	other := writeFile(t, filepath.Join(dir, "other.txt"), "nobody@example.org\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	job := writeFile(t, filepath.Join(dir, "job.toml"), "list = \"l.csv\"\ntemplate = \"t.tmpl\"\nresult = \"r.xlsx\"\nsuppress = [\"unsub.txt\"]\nsmtp = \"smtp://"+srv.Addr()+"\"\n")
	_ = tmpl
	code, _, stderr := runCLI(t, "send", "--job", job, "--suppress", other)
	t.Logf("exit %d\n%s", code, stderr)
	if n := countTo(srv, "bob@example.org"); n != 0 {
		t.Errorf("bob@example.org (in the job file's suppress list) received %d messages; an extra --suppress on the command line dropped the job's list without a word", n)
	}
}

// F6: suppress = "" in a job file (or --suppress "") meant no suppression
// list before; now it is a file to open and the run stops (exit 2).
func TestFinalEmptySuppressInJobFile(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\nann@example.org,Ann,pro\n")
	writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	job := writeFile(t, filepath.Join(dir, "job.toml"), "list = \"l.csv\"\ntemplate = \"t.tmpl\"\nresult = \"r.xlsx\"\nsuppress = \"\"\nsmtp = \"smtp://"+srv.Addr()+"\"\n")
	code, _, stderr := runCLI(t, "send", "--job", job)
	t.Logf("exit %d\n%s", code, stderr)
	if code != exitOK {
		t.Errorf("suppress = \"\": exit %d, want 0 (as at 8edfc9c)", code)
	}
}

// F7: a journal of a text-only campaign is resumed by a run that adds an
// --html part (another message): the HTML hash is compared only when both
// sides have one, so the "resume" sends nothing to anybody.
func TestFinalAddedHTMLTakesOverTextOnlyJournal(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\nann@example.org,Ann,pro\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	html := writeFile(t, filepath.Join(dir, "dec.html"), "<p>December offer for {{.name}}</p>\n")
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result)
	if code, _, stderr := runCLI(t, args...); code != 0 {
		t.Fatalf("run 1: exit %d\n%s", code, stderr)
	}
	code, _, stderr := runCLI(t, append(args, "--html", html)...)
	t.Logf("run 2 with --html: exit %d\n%s", code, stderr)
	if code != exitUsage && countTo(srv, "ann@example.org") == 1 {
		t.Errorf("a run with another message (an --html part added) took the text-only journal as its own: exit %d, nothing sent; want exit 2 (ErrTemplateChanged), as at 8edfc9c", code)
	}
}

var _ = time.Second
var _ = os.Getpid

// F3b: a server's refusal text of a Cc that contains "not sent to ", on a
// row that also had a suppressed Cc, makes the next run refuse that result
// as --suppress (suppressedCopies cuts from the first "not sent to " in the
// whole error text, the server's words included).
func TestFinalResultAsSuppressServerTextBeforeNote(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true, Rcpt: func(to string) *capture.Reply {
		if to == "boss@example.org" {
			return &capture.Reply{Code: 550, Enhanced: "5.1.1", Text: "mailbox disabled, message not sent to this user"}
		}
		return nil
	}})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan,manager,assistant\nann@example.org,Ann,pro,boss@example.org,pa@example.org\n")
	unsub := writeFile(t, filepath.Join(dir, "unsub.txt"), "pa@example.org\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <sender@example.com>\nTo: {{.name}} <{{.email}}>\nCc: {{.manager}}, {{.assistant}}\nSubject: Hello\n\nHi {{.plan}}\n")
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result, "--suppress", unsub)
	t.Logf("run 1: exit %d\n%s", code, stderr)
	for _, r := range readResult(t, result) {
		t.Logf("run 1 result: row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
	}
	result2 := filepath.Join(dir, "r2.xlsx")
	code, _, stderr = runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result2, "--suppress", result, "--suppress", unsub)
	t.Logf("run 2 (--suppress r.xlsx --suppress unsub.txt): exit %d\n%s", code, stderr)
	if code == exitUsage {
		t.Errorf("a result file written by bulkmail itself is refused as --suppress: exit %d", code)
	}
}

func TestSuppressedCopies(t *testing.T) {
	for _, tt := range []struct {
		text string
		want []string
	}{
		{"", nil},
		{suppressedCopiesNote([]string{"a@x.org"}), []string{"a@x.org"}},
		{suppressedCopiesNote([]string{"a@x.org", `"smith, john"@x.org`, `"q\"; z"@x.org`}), []string{"a@x.org", `"smith, john"@x.org`, `"q\"; z"@x.org`}},
		{"warning: short row; " + suppressedCopiesNote([]string{"b@x.org"}), []string{"b@x.org"}},
		{suppressedCopiesNote([]string{"c@x.org"}) + "; warning: short row", []string{"c@x.org"}},
		// A server's words quoted first are not a note.
		{"[recipient 2 refused: 550 5.1.1 message not sent to this user (boss@x.org, not retried)]; " + suppressedCopiesNote([]string{"pa@x.org"}), []string{"pa@x.org"}},
		{"[recipient 2 refused: 550 not sent to anyone: on the suppression list here]", nil},
	} {
		if got := suppressedCopies(tt.text); !slices.Equal(got, tt.want) {
			t.Errorf("suppressedCopies(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}
