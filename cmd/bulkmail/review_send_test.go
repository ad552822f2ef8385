package main

// Regression tests from a review of the orchestration and resume logic
// (2026-11-25). Each began as a reproduction of a way to lose a row, send a
// message twice or put the wrong outcome on a row, and now asserts the
// behaviour the README promises.

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/xuri/excelize/v2"

	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/report"
)

func countTo(srv *capture.Server, addr string) int {
	n := 0
	for _, m := range srv.Messages() {
		for _, to := range m.To {
			if to == addr {
				n++
			}
		}
	}
	return n
}

func rcptCount(srv *capture.Server) int {
	n := 0
	for _, c := range srv.Conns() {
		for _, v := range c.Commands {
			if v == "RCPT" {
				n++
			}
		}
	}
	return n
}

// F1: the README's own recipe (--only invalid after an --encoding fix)
// sends a second copy to an address whose first row was invalid in run 1
// and whose later duplicate row was therefore delivered in run 1.
func TestReviewOnlyInvalidEncodingFixDoublesDuplicate(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	// Row 2: Latin-1 "Zoë" (invalid UTF-8); row 3: the same address, clean.
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\nzoe@example.org,Zo\xeb,pro\nzoe@example.org,Zoe,pro\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	args := []string{"send", "--smtp", "smtp://" + srv.Addr(), "--list", list, "--template", tmpl, "--result", filepath.Join(dir, "r.xlsx")}
	code, _, stderr := runCLI(t, args...)
	t.Logf("run 1: exit %d\n%s", code, stderr)
	if n := countTo(srv, "zoe@example.org"); n != 1 {
		t.Fatalf("run 1: %d messages to zoe, want 1", n)
	}
	code, _, stderr = runCLI(t, append(args, "--encoding", "latin1", "--only", "invalid")...)
	t.Logf("run 2: exit %d\n%s", code, stderr)
	if n := countTo(srv, "zoe@example.org"); n != 1 {
		t.Errorf("after --only invalid --encoding latin1: %d messages to zoe@example.org, want 1 (a duplicate address is sent once)", n)
	}
	for _, r := range readResult(t, filepath.Join(dir, "r.xlsx")) {
		t.Logf("result: row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
	}
}

// F2: a duplicate whose first row is invalid at render time (a line break
// in a header value) is skipped as "duplicate of row 2"; row 2 is never
// sent, so the address gets nothing although row 3 is good.
func TestReviewDuplicateOfInvalidRowIsNeverSent(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\nann@example.org,\"Ann\nBcc: x@evil.example\",pro\nann@example.org,Ann,pro\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result)
	t.Logf("exit %d\n%s", code, stderr)
	rows := readResult(t, result)
	for _, r := range rows {
		t.Logf("result: row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
	}
	if n := countTo(srv, "ann@example.org"); n != 1 {
		t.Errorf("%d messages to ann@example.org, want 1: row 3 is a valid row whose 'first' (row 2) was never sent", n)
	}
}

// F3: the journal identifies the list by its file's bytes only. A resume
// with another --email-column (or --sheet, --delimiter) reads different
// recipients from the same file and takes the journal's rows as theirs:
// nothing is sent, the result says "delivered", exit 0.
func TestReviewResumeWithOtherEmailColumn(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,backup,name,plan\na1@example.org,b1@example.org,A,pro\na2@example.org,b2@example.org,B,pro\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result)
	if code, _, stderr := runCLI(t, args...); code != 0 {
		t.Fatalf("run 1: exit %d\n%s", code, stderr)
	}
	code, _, stderr := runCLI(t, append(args, "--email-column", "backup")...)
	t.Logf("run 2 (--email-column backup): exit %d\n%s", code, stderr)
	for _, r := range readResult(t, result) {
		t.Logf("result: row %s email=%s backup=%s status=%s", r["row"], r["email"], r["backup"], r["status"])
	}
	if n := countTo(srv, "b1@example.org") + countTo(srv, "b2@example.org"); n != 0 || code != exitUsage || !strings.Contains(stderr, "other recipients") {
		t.Errorf("run 2: %d messages to the backup addresses, exit %d; want a refusal (exit %d) naming other recipients, nothing sent", n, code, exitUsage)
	}
	// The same reading, spelled differently, is the same job.
	if code, _, stderr := runCLI(t, append(args, "--email-column", "EMAIL")...); code != 0 || len(srv.Messages()) != 2 {
		t.Errorf("run 3 (--email-column EMAIL): exit %d, %d messages in all, want 0 and 2\n%s", code, len(srv.Messages()), stderr)
	}
}

// F3b: the same with --sheet: two sheets of one workbook share a journal.
func TestReviewResumeWithOtherSheet(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	f := excelize.NewFile()
	f.SetSheetName("Sheet1", "January")
	f.NewSheet("February")
	for _, s := range []struct{ sheet, who string }{{"January", "jan"}, {"February", "feb"}} {
		f.SetSheetRow(s.sheet, "A1", &[]any{"email", "name", "plan"})
		f.SetSheetRow(s.sheet, "A2", &[]any{s.who + "1@example.org", "X", "pro"})
		f.SetSheetRow(s.sheet, "A3", &[]any{s.who + "2@example.org", "Y", "pro"})
	}
	list := filepath.Join(dir, "book.xlsx")
	if err := f.SaveAs(list); err != nil {
		t.Fatal(err)
	}
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result)
	if code, _, stderr := runCLI(t, append(args, "--sheet", "January")...); code != 0 {
		t.Fatalf("run 1: exit %d\n%s", code, stderr)
	}
	code, _, stderr := runCLI(t, append(args, "--sheet", "February")...)
	t.Logf("run 2 (--sheet February): exit %d\n%s", code, stderr)
	for _, r := range readResult(t, result) {
		t.Logf("result: row %s email=%s status=%s", r["row"], r["email"], r["status"])
	}
	if n := countTo(srv, "feb1@example.org") + countTo(srv, "feb2@example.org"); n != 0 || code != exitUsage || !strings.Contains(stderr, "other recipients") {
		t.Errorf("run 2: %d messages to February's rows, exit %d; want a refusal (exit %d) naming other recipients, nothing sent", n, code, exitUsage)
	}
	// January by index, and by default (the first sheet with data), is the
	// same job: a resume, nothing to send.
	for _, extra := range [][]string{{"--sheet", "1"}, nil} {
		if code, _, stderr := runCLI(t, append(args, extra...)...); code != 0 || len(srv.Messages()) != 2 {
			t.Errorf("run with %q: exit %d, %d messages in all, want 0 and 2\n%s", extra, code, len(srv.Messages()), stderr)
		}
	}
}

// F4: --only deferred ignores --max-attempts, so a cron line with --only
// deferred,failed knocks on a refusing server for ever.
func TestReviewOnlyDeferredIgnoresMaxAttempts(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true, Rcpt: deferRcpt("user2@")})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result,
		"--retries", "1", "--retry-wait", "1ms", "--retry-max-wait", "1ms", "--max-attempts", "2")
	runCLI(t, args...) // 2 attempts for user2: max reached
	before := rcptCount(srv)
	_, _, stderr := runCLI(t, args...)
	if rcptCount(srv) != before {
		t.Fatalf("plain re-run retried an exhausted row:\n%s", stderr)
	}
	code, _, stderr := runCLI(t, append(args, "--only", "deferred")...)
	t.Logf("--only deferred: exit %d\n%s", code, stderr)
	rows := readResult(t, result)
	if got := rcptCount(srv) - before; got != 0 {
		t.Errorf("--only deferred after --max-attempts 2 was used up: %d more RCPTs (attempts now %s), want 0", got, rows[1]["attempts"])
	}
}

// F5: --suppress silently ignores lines it cannot parse, including the
// first line of a file saved with a UTF-8 byte-order mark, and a line
// "Name <addr>"; and it compares the local part case-sensitively.
func TestReviewSuppressionMisses(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"),
		"email,name,plan\nbom@example.org,A,pro\nangle@example.org,B,pro\nCase@example.org,C,pro\nkeep@example.org,D,pro\n")
	supp := writeFile(t, filepath.Join(dir, "unsubscribed.txt"),
		"\ufeffbom@example.org\r\nAngle Person <angle@example.org>\r\ncase@example.org\r\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result, "--suppress", supp)
	t.Logf("exit %d\n%s", code, stderr)
	for _, r := range readResult(t, result) {
		t.Logf("result: row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
	}
	for _, a := range []string{"bom@example.org", "angle@example.org", "Case@example.org"} {
		if n := countTo(srv, a); n != 0 {
			t.Errorf("%s is in the suppression file (as the operator wrote it) and got %d message(s); no warning about the unparsed line", a, n)
		}
	}
	if n := countTo(srv, "keep@example.org"); n != 1 {
		t.Errorf("keep@example.org is not suppressed and got %d messages, want 1", n)
	}
}

// F6: --suppress is checked against the row's address only; a Cc or Bcc
// that the template puts on the envelope is sent to even when suppressed.
func TestReviewSuppressedCcStillSent(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan,manager\nann@example.org,Ann,pro,boss@example.org\n")
	supp := writeFile(t, filepath.Join(dir, "supp.txt"), "boss@example.org\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <sender@example.com>\nTo: {{.name}} <{{.email}}>\nCc: {{.manager}}\nSubject: Hello\n\nHi {{.plan}}\n")
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result, "--suppress", supp)
	t.Logf("exit %d\n%s", code, stderr)
	if n := countTo(srv, "boss@example.org"); n != 0 {
		t.Errorf("boss@example.org is on the suppression list and received %d message(s) (as Cc of row 2)", n)
	}
	if n := countTo(srv, "ann@example.org"); n != 1 {
		t.Errorf("ann@example.org (not suppressed) received %d messages, want 1", n)
	}
	rows := readResult(t, result)
	if len(rows) != 1 || rows[0]["status"] != "delivered" || !strings.Contains(rows[0]["error"], "not sent to boss@example.org: on the suppression list") {
		t.Errorf("result %v: want row 2 delivered, its error column naming the suppressed Cc", rows)
	}
}

// A suppression file with an entry that is not an address stops the run
// before anything is sent, naming the file and line.
func TestSuppressionUnreadableLineRefused(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeList(t, dir, 3)
	supp := writeFile(t, filepath.Join(dir, "supp.txt"), "# unsubscribed\nuser1@example.org\n\nuser2 at example dot org\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", filepath.Join(dir, "r.xlsx"), "--suppress", supp)
	if code != exitUsage || len(srv.Messages()) != 0 || !strings.Contains(stderr, "line 4") || !strings.Contains(stderr, "user2 at example dot org") {
		t.Errorf("exit %d, %d messages, stderr %q; want exit %d, nothing sent, line 4 named", code, len(srv.Messages()), stderr, exitUsage)
	}
}

// F7: a Cc refused with a 4xx is never retried, the row is "delivered"
// and the run exits 0.
func TestReviewDeferredCcIsDropped(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true, Rcpt: func(to string) *capture.Reply {
		if to == "boss@example.org" {
			return &capture.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
		}
		return nil
	}})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan,manager\nann@example.org,Ann,pro,boss@example.org\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <sender@example.com>\nTo: {{.name}} <{{.email}}>\nCc: {{.manager}}\nSubject: Hello\n\nHi {{.plan}}\n")
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result, "--retry-wait", "1ms", "--retry-max-wait", "1ms")
	t.Logf("exit %d\n%s", code, stderr)
	r := readResult(t, result)[0]
	t.Logf("result: %s %q", r["status"], r["error"])
	// The message reached ann; the refused Cc is not retried (a second
	// transaction would be a message of its own), but the run says so: in
	// the row's error column, on stderr and in the exit status.
	if countTo(srv, "ann@example.org") != 1 || r["status"] != "delivered" || !strings.Contains(r["error"], "451 4.3.0 try later (boss@example.org, not retried)") ||
		code != exitUndelivered || !strings.Contains(stderr, "not every Cc/Bcc") {
		t.Errorf("Cc boss@example.org deferred (451): exit %d, row %q %q, stderr %q; want exit %d, delivered, the Cc named", code, r["status"], r["error"], stderr, exitUndelivered)
	}
}

// F8: --max-attempts is not a bound over all runs: a run that starts
// under the bound does all of --retries+1 attempts.
func TestReviewMaxAttemptsOvershoot(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{Rcpt: deferRcpt("user2@")})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result,
		"--retries", "3", "--retry-wait", "1ms", "--retry-max-wait", "1ms", "--max-attempts", "5")
	runCLI(t, args...)
	runCLI(t, args...)
	rows := readResult(t, result)
	if rows[1]["attempts"] != "5" {
		t.Errorf("user2 after two runs with --max-attempts 5: attempts %s, want 5", rows[1]["attempts"])
	}
}

// F9: --resend-in-doubt (or --only) re-judges an in_doubt row; if the
// address is now suppressed (or the row now invalid) the in_doubt record
// is replaced by "skipped" and the result no longer says the message may
// have been delivered.
func TestReviewInDoubtOverwrittenBySkip(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	id, err := hashFile(list)
	if err != nil {
		t.Fatal(err)
	}
	// What a run killed between the final dot of row 3 and its reply
	// leaves: a commit record and no outcome.
	j, err := report.OpenJournal(result+".journal", report.JobID{List: id}, report.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Committing(3, 1, "user2@example.org", "<held@test.invalid>"); err != nil {
		t.Fatal(err)
	}
	j.Close()
	supp := writeFile(t, filepath.Join(dir, "supp.txt"), "user2@example.org\n")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result, "--suppress", supp, "--resend-in-doubt")
	t.Logf("exit %d\n%s", code, stderr)
	r := readResult(t, result)[1]
	t.Logf("row 3 now: %s %q", r["status"], r["error"])
	if r["status"] != "in_doubt" {
		t.Errorf("row 3 was in_doubt (its message may have been delivered); after --resend-in-doubt with it suppressed it reads %q %q", r["status"], r["error"])
	}
}

// F10 (facts): which spellings of one mailbox count as duplicates.
func TestReviewDedupSpellings(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,plan\n"+
		"ann@example.org,A,p\nAnn@example.org,A,p\nann@EXAMPLE.org,A,p\nmailto:ann@example.org,A,p\n\"ann\"@example.org,A,p\n"+
		"jos\u00e9@example.org,J,p\njose\u0301@example.org,J,p\n"+
		"u@b\u00fccher.de,U,p\nu@xn--bcher-kva.de,U,p\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result)
	t.Logf("exit %d\n%s", code, stderr)
	for _, r := range readResult(t, result) {
		t.Logf("row %s %q -> %s %q", r["row"], r["email"], r["status"], r["error"])
	}
	for _, m := range srv.Messages() {
		t.Logf("received for %q", m.To)
	}
	if nfc, nfd := countTo(srv, "jos\u00e9@example.org"), countTo(srv, "jose\u0301@example.org"); nfc+nfd > 1 {
		t.Errorf("jos\u00e9@example.org in NFC and in NFD (the same string to a reader, and the same mailbox on any server that normalises) received %d+%d messages, want 1", nfc, nfd)
	}
}

// F11: the commit record carries the attempt number of this run only
// (Commit's attempt is the pool's per-run count), so a row killed while
// in doubt forgets the attempts of earlier runs: the result shows fewer
// attempts than were made and --max-attempts lets it go again.
func TestReviewInDoubtForgetsEarlierAttempts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	h := &harness{bin: buildBulkmail(t)}
	var mode atomic.Int32 // 1: refuse user3's data with 451; 2: hold it
	g := &gate{}
	srv := startCapture(t, capture.Config{KeepInMemory: true, Data: func(m *capture.Message) *capture.Reply {
		if m.To[0] == userEmail(3) {
			switch mode.Load() {
			case 1:
				return &capture.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
			case 2:
				return g.data(m)
			}
		}
		return nil
	}})
	t.Cleanup(g.open)
	j := newJob(t, srv, 4)
	j.workers = 1
	mode.Store(1)
	if code, stderr := h.run(t, j.args()...); code != exitUndelivered {
		t.Fatalf("run 1: exit %d\n%s", code, stderr)
	}
	r1 := j.readResult(t)[2]
	t.Logf("after run 1: user3 %s attempts %s", r1["status"], r1["attempts"])
	mode.Store(2)
	entered := g.arm(1)
	p := h.start(t, j.args()...)
	p.waitHeld(t, entered, 1)
	p.kill(t)
	g.open()
	out := filepath.Join(t.TempDir(), "rebuilt.xlsx")
	if code, stderr := h.run(t, "report", "--journal", j.journal(), "--list", j.list, "--result", out); code != exitOK {
		t.Fatalf("report: exit %d\n%s", code, stderr)
	}
	r2 := readResult(t, out)[2]
	t.Logf("after kill -9 in run 2: user3 %s attempts %s", r2["status"], r2["attempts"])
	if r2["status"] != "in_doubt" || r2["attempts"] != "3" {
		t.Errorf("user3 after 2 attempts in run 1 and 1 in run 2 (killed while in doubt): %s with attempts %s, want in_doubt with 3", r2["status"], r2["attempts"])
	}
	before := received(srv)[userEmail(3)]
	code, stderr := h.run(t, j.args("--resend-in-doubt", "--max-attempts", "3")...)
	t.Logf("run 3 --resend-in-doubt --max-attempts 3: exit %d\n%s", code, stderr)
	if got := received(srv)[userEmail(3)] - before; got != 0 {
		t.Errorf("--max-attempts 3 after 3 attempts: user3 was sent again (%d)", got)
	}
}

// F12: report --journal of a shard's journal without --shard (the journal
// does not know its shard) lists every other shard's rows as failed "not
// attempted" and exits 0.
func TestReviewReportShardJournalWithoutShard(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeList(t, dir, 10)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "shard-0.xlsx")
	if code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result, "--shard", "0/2"); code != 0 {
		t.Fatalf("send: exit %d\n%s", code, stderr)
	}
	out := filepath.Join(dir, "rebuilt.xlsx")
	code, _, stderr := runCLI(t, "report", "--journal", result+".journal", "--list", list, "--result", out)
	if _, err := os.Stat(out); code != exitUsage || err == nil || !strings.Contains(stderr, "--shard") {
		t.Errorf("report of a shard journal without --shard: exit %d, result written: %v; want a refusal (exit %d) naming --shard\n%s", code, err == nil, exitUsage, stderr)
	}
	// With its shard, the report is the shard's rows, all delivered.
	code, _, stderr = runCLI(t, "report", "--journal", result+".journal", "--list", list, "--result", out, "--shard", "0/2")
	rows := readResult(t, out)
	if code != 0 || len(rows) == 0 || len(rows) == 10 {
		t.Fatalf("report --shard 0/2: exit %d, %d rows\n%s", code, len(rows), stderr)
	}
	for _, r := range rows {
		if r["status"] != "delivered" {
			t.Errorf("report --shard 0/2: row %s %s", r["row"], r["status"])
		}
	}
}

// F13: the refusal of a changed list advises "pass the earlier result as
// --suppress" to send only new rows. The earlier result lists every row,
// also those never delivered (deferred, failed, not attempted, in_doubt):
// following the advice marks them "skipped" and the run exits 0.
func TestReviewChangedListAdviceSuppressesUndelivered(t *testing.T) {
	for _, ext := range []string{".xlsx", ".csv"} {
		t.Run(ext, func(t *testing.T) {
			dir := t.TempDir()
			var refuse atomic.Bool
			refuse.Store(true)
			srv := startCapture(t, capture.Config{KeepInMemory: true, Rcpt: deferWhile(&refuse, "user2@example.org")})
			list := writeList(t, dir, 3)
			tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
			result := filepath.Join(dir, "results"+ext)
			args := sendArgs(srv, list, tmpl, result, "--retries", "0")
			if code, _, stderr := runCLI(t, args...); code != exitUndelivered {
				t.Fatalf("run 1: exit %d\n%s", code, stderr)
			}
			refuse.Store(false)
			// The list grows by one row.
			b, _ := os.ReadFile(list)
			writeFile(t, list, string(b)+"user4@example.org,New User,plan-1\n")
			code, _, stderr := runCLI(t, args...)
			t.Logf("run 2 (changed list): exit %d\n%s", code, stderr)
			if !strings.Contains(stderr, "pass the earlier result as one more --suppress") {
				t.Fatalf("advice not given")
			}
			code, _, stderr = runCLI(t, append(args, "--journal-reset", "--suppress", result)...)
			t.Logf("run 3 (following the advice): exit %d\n%s", code, stderr)
			for _, r := range readResult2(t, result) {
				t.Logf("result: row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
			}
			if received(srv)["user2@example.org"] == 0 {
				t.Errorf("user2 was deferred in run 1 (never delivered); following the advice of the changed-list refusal it is never sent (exit %d)", code)
			}
		})
	}
}

func readResult2(t *testing.T, path string) []map[string]string {
	if strings.HasSuffix(path, ".csv") {
		return readCSVResult(t, path)
	}
	return readResult(t, path)
}

// F3c: the template is not part of the journal's identity either: next
// month's campaign to the same list (same result path, the job file's
// fixed "result") sends nothing and exits 0; the result shows last
// month's queue ids as this campaign's deliveries.
func TestReviewNewTemplateSameListSendsNothing(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	list := writeList(t, dir, 3)
	nov := writeFile(t, filepath.Join(dir, "nov.tmpl"), testTemplate)
	dec := writeFile(t, filepath.Join(dir, "dec.tmpl"), strings.Replace(testTemplate, "Subject: Hello", "Subject: December news for", 1))
	result := filepath.Join(dir, "newsletter-results.xlsx")
	base := []string{"send", "--smtp", "smtp://" + srv.Addr(), "--list", list, "--result", result}
	if code, _, stderr := runCLI(t, append(base, "--template", nov)...); code != 0 {
		t.Fatalf("november: exit %d\n%s", code, stderr)
	}
	code, _, stderr := runCLI(t, append(base, "--template", dec)...)
	t.Logf("december: exit %d\n%s", code, stderr)
	if n := len(srv.Messages()); n != 3 || code != exitUsage || !strings.Contains(stderr, "--template-edited") {
		t.Errorf("a different template to the same list: %d messages in all, exit %d; want a refusal (exit %d) that names --template-edited, 3 messages", n, code, exitUsage)
	}
	// The operator's ways on: the same campaign with a corrected template
	// (nothing left to send; the corrected template is then the journal's),
	// or a new campaign with its own result.
	if code, _, stderr := runCLI(t, append(base, "--template", dec, "--template-edited")...); code != 0 || len(srv.Messages()) != 3 {
		t.Errorf("--template-edited: exit %d, %d messages in all, want 0 and 3\n%s", code, len(srv.Messages()), stderr)
	}
	if code, _, stderr := runCLI(t, append(base, "--template", dec)...); code != 0 || len(srv.Messages()) != 3 {
		t.Errorf("after --template-edited, the corrected template: exit %d, %d messages in all, want 0 and 3\n%s", code, len(srv.Messages()), stderr)
	}
	december := []string{"send", "--smtp", "smtp://" + srv.Addr(), "--list", list, "--template", dec, "--result", filepath.Join(dir, "december.xlsx")}
	if code, _, stderr := runCLI(t, december...); code != 0 || len(srv.Messages()) != 6 {
		t.Errorf("a new campaign with its own result: exit %d, %d messages in all, want 0 and 6\n%s", code, len(srv.Messages()), stderr)
	}
}

// F14: the result is rebuilt from the list's path at the end of the run.
// If the list file is replaced while the run sends (an export job that
// renames a fresh file into place), the result pairs the old rows'
// outcomes with the new file's rows.
func TestReviewListReplacedDuringRun(t *testing.T) {
	dir := t.TempDir()
	list := writeList(t, dir, 3)
	orig, err := os.ReadFile(list)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	srv := startCapture(t, capture.Config{KeepInMemory: true, Data: func(m *capture.Message) *capture.Reply {
		once.Do(func() {
			// A new export: one new subscriber at the top.
			tmp := filepath.Join(dir, "list.csv.new")
			writeFile(t, tmp, "Email,Name,Plan\nnew@example.org,New,plan-0\nuser1@example.org,U1,plan-1\nuser2@example.org,U2,plan-2\nuser3@example.org,U3,plan-0\n")
			if err := os.Rename(tmp, list); err != nil {
				t.Error(err)
			}
		})
		return nil
	}})
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result, "--workers", "1")
	t.Logf("exit %d\n%s", code, stderr)
	for _, m := range srv.Messages() {
		t.Logf("received for %v", m.To)
	}
	if _, err := os.Stat(result); code != exitAborted || err == nil || !strings.Contains(stderr, "no result written") {
		t.Fatalf("list replaced during the run: exit %d, result written: %v; want exit %d and no result\n%s", code, err == nil, exitAborted, stderr)
	}
	// Every outcome is in the journal: with the original list back, report
	// writes the result, each outcome on its own row.
	writeFile(t, list, string(orig))
	if code, _, stderr := runCLI(t, "report", "--journal", result+".journal", "--list", list, "--result", result); code != 0 {
		t.Fatalf("report with the original list: exit %d\n%s", code, stderr)
	}
	for _, r := range readResult(t, result) {
		t.Logf("result: row %s email=%s Email(list)=%s Name=%s status=%s", r["row"], r["email"], r["list Email"], r["Name"], r["status"])
		if r["list Email"] != "" && r["status"] == "delivered" && !strings.EqualFold(r["list Email"], r["email"]) {
			t.Errorf("row %s: the list's Email %s is paired with the outcome for %s (%s)", r["row"], r["list Email"], r["email"], r["status"])
		}
	}
}
