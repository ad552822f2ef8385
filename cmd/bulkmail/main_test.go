package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"

	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/merge"
	"github.com/bulkmail/bulkmail/internal/report"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testEnv gives stable dates and Message-IDs.
func testEnv() *environment {
	n := 0
	return &environment{
		now:      func() time.Time { return time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC) },
		hostname: "test.invalid",
		messageID: func() string {
			n++
			return fmt.Sprintf("<test-%d@test.invalid>", n)
		},
		getenv: func(string) string { return "" },
		boot:   report.BootID(),
	}
}

// runCLI runs bulkmail in-process and returns its exit status and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runCLIEnv(t, testEnv(), args...)
}

// runCLIEnv is runCLI in the environment env.
func runCLIEnv(t *testing.T, env *environment, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := runWith(ctx, args, &stdout, &stderr, env)
	code := exitStatus(err)
	if err != nil {
		fmt.Fprintf(&stderr, "error: %v\n", err)
	}
	return code, stdout.String(), stderr.String()
}

func startCapture(t *testing.T, cfg capture.Config) *capture.Server {
	t.Helper()
	srv, err := capture.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// writeList writes a CSV list of n rows: user<i>@example.org.
func writeList(t *testing.T, dir string, n int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("Email,Name,Plan\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "user%d@example.org,Ünïcode User %d,plan-%d\n", i, i, i%3)
	}
	path := filepath.Join(dir, "list.csv")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const testTemplate = `From: Sender <sender@example.com>
To: {{.name}} <{{.email}}>
Subject: Hello {{.name}}

Dear {{.name}}, your plan is {{.plan}}.
`

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// readResult returns the result sheet as maps from column name to value.
func readResult(t *testing.T, path string) []map[string]string {
	t.Helper()
	f, err := excelize.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := f.GetRows("results")
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatal("result file has no header")
	}
	var out []map[string]string
	for _, r := range rows[1:] {
		m := map[string]string{}
		for i, h := range rows[0] {
			if i < len(r) {
				m[h] = r[i]
			}
		}
		out = append(out, m)
	}
	return out
}

func TestSendDeliversEveryRowOnceOverReusedConnections(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	const n = 300
	list := writeList(t, dir, n)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "results.xlsx")

	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl,
		"--workers", "4", "--result", result)
	if code != exitOK {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
	}

	got := srv.Messages()
	if len(got) != n {
		t.Fatalf("server received %d messages, want %d", len(got), n)
	}
	queueID := map[string]string{}
	for _, m := range got {
		if _, dup := queueID[m.To[0]]; dup {
			t.Errorf("%s received twice", m.To[0])
		}
		queueID[m.To[0]] = m.QueueID
	}
	if c := len(srv.Conns()); c > 4 {
		t.Errorf("server saw %d connections, want at most 4", c)
	}
	for _, c := range srv.Conns() {
		mails := 0
		for i, v := range c.Commands {
			if v == "MAIL" {
				mails++
				if mails > 1 && c.Commands[i-1] != "RSET" {
					t.Fatalf("connection %d: MAIL not preceded by RSET: %v", c.ID, c.Commands)
				}
			}
		}
	}

	rows := readResult(t, result)
	if len(rows) != n {
		t.Fatalf("result has %d rows, want %d", len(rows), n)
	}
	for i, r := range rows {
		wantRow := strconv.Itoa(i + 2)
		wantEmail := fmt.Sprintf("user%d@example.org", i+1)
		if r["row"] != wantRow || r["email"] != wantEmail {
			t.Fatalf("result row %d: got row %q email %q, want %q %q", i, r["row"], r["email"], wantRow, wantEmail)
		}
		if r["status"] != "delivered" || r["rcpt_code"] != "250" || r["data_code"] != "250" || r["data_enhanced"] != "2.0.0" {
			t.Errorf("row %s: got %v", wantRow, r)
		}
		if want := "Ok: queued as " + queueID[wantEmail]; r["data_text"] != want {
			t.Errorf("row %s: data_text %q, want %q", wantRow, r["data_text"], want)
		}
		if r["Name"] != fmt.Sprintf("Ünïcode User %d", i+1) {
			t.Errorf("row %s: list column Name = %q", wantRow, r["Name"])
		}
	}
}

func TestSendRecordsRefusalsOnTheRightRows(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{
		KeepInMemory: true,
		Rcpt: func(to string) *capture.Reply {
			// The reply text echoes the address: a reply on the wrong row
			// shows at once.
			switch {
			case strings.HasPrefix(to, "user3@"), strings.HasPrefix(to, "user7@"):
				return &capture.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user " + to}
			case strings.HasPrefix(to, "user5@"):
				return &capture.Reply{Code: 450, Enhanced: "4.2.1", Text: "mailbox busy " + to}
			}
			return nil
		},
	})
	list := writeList(t, dir, 10)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "results.xlsx")

	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl,
		"--result", result, "--retries", "1", "--retry-wait", "10ms", "--retry-max-wait", "20ms")
	if code != exitUndelivered {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUndelivered, stderr)
	}
	if got := len(srv.Messages()); got != 7 {
		t.Errorf("server accepted %d messages, want 7", got)
	}
	tests := []struct {
		user                       int
		status, code, enh, text, a string
	}{
		{1, "delivered", "250", "2.0.0", "", "1"},
		{3, "rejected", "550", "5.1.1", "no such user user3@example.org", "1"},
		{5, "deferred", "450", "4.2.1", "mailbox busy user5@example.org", "2"},
		{7, "rejected", "550", "5.1.1", "no such user user7@example.org", "1"},
	}
	rows := readResult(t, result)
	for _, tt := range tests {
		r := rows[tt.user-1]
		if r["email"] != fmt.Sprintf("user%d@example.org", tt.user) {
			t.Fatalf("row order: got %q", r["email"])
		}
		if r["status"] != tt.status || r["attempts"] != tt.a {
			t.Errorf("user%d: status %q attempts %q, want %q %q", tt.user, r["status"], r["attempts"], tt.status, tt.a)
		}
		if tt.status == "delivered" {
			continue
		}
		if r["rcpt_code"] != tt.code || r["rcpt_enhanced"] != tt.enh || r["rcpt_text"] != tt.text {
			t.Errorf("user%d: rcpt %q %q %q, want %q %q %q", tt.user, r["rcpt_code"], r["rcpt_enhanced"], r["rcpt_text"], tt.code, tt.enh, tt.text)
		}
	}
}

func TestSendMissingColumnStopsBeforeSending(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: a@example.com\nTo: {{.email}}\nSubject: {{.coupon}}\n\nhi\n")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl,
		"--result", filepath.Join(dir, "r.xlsx"))
	if code != exitUsage {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitUsage, stderr)
	}
	if !strings.Contains(stderr, `"coupon"`) {
		t.Errorf("stderr does not name the missing column:\n%s", stderr)
	}
	if c := len(srv.Conns()); c != 0 {
		t.Errorf("server saw %d connections, want 0", c)
	}
}

// TestSendResultFolderMissing: a result or journal path in a folder that
// does not exist stops the run before anything is sent, naming the folder.
func TestSendResultFolderMissing(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: a@example.com\nTo: {{.email}}\nSubject: hi\n\nhi\n")
	missing := filepath.Join(dir, "nowhere")
	for _, extra := range [][]string{
		{"--result", filepath.Join(missing, "r.xlsx")},
		{"--result", filepath.Join(dir, "r.xlsx"), "--journal", filepath.Join(missing, "j")},
	} {
		code, _, stderr := runCLI(t, append([]string{"send", "--smtp", "smtp://" + srv.Addr(), "--list", list, "--template", tmpl}, extra...)...)
		if code != exitUsage {
			t.Fatalf("%q: exit %d, want %d; stderr:\n%s", extra, code, exitUsage, stderr)
		}
		if !strings.Contains(stderr, "the folder "+missing+" does not exist") {
			t.Errorf("%q: stderr does not name the missing folder:\n%s", extra, stderr)
		}
	}
	if c := len(srv.Conns()); c != 0 {
		t.Errorf("server saw %d connections, want 0", c)
	}
}

func TestSendDefaultUsesCaptureServer(t *testing.T) {
	dir := t.TempDir()
	list := writeList(t, dir, 5)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	outbox := filepath.Join(dir, "outbox")
	code, _, stderr := runCLI(t, "send", "--list", list, "--template", tmpl,
		"--result", filepath.Join(dir, "r.xlsx"), "--outbox", outbox)
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "nothing leaves this machine") {
		t.Errorf("stderr does not say nothing left the machine:\n%s", stderr)
	}
	files, _ := filepath.Glob(filepath.Join(outbox, "*.eml"))
	if len(files) != 5 {
		t.Errorf("outbox has %d .eml files, want 5", len(files))
	}
	// A second run resumes from the journal and sends nothing.
	code, _, stderr = runCLI(t, "send", "--list", list, "--template", tmpl,
		"--result", filepath.Join(dir, "r.xlsx"), "--outbox", outbox)
	if code != exitOK {
		t.Fatalf("second run: exit %d; stderr:\n%s", code, stderr)
	}
	files, _ = filepath.Glob(filepath.Join(outbox, "*.eml"))
	if len(files) != 5 {
		t.Errorf("after a second run the outbox has %d .eml files, want still 5", len(files))
	}
}

func TestPreviewGolden(t *testing.T) {
	code, stdout, stderr := runCLI(t, "preview", "--list", "../../samples/recipients.csv",
		"--template", "../../templates/welcome.tmpl", "--limit", "2")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	golden := filepath.Join("testdata", "preview-welcome.golden")
	if *update {
		os.MkdirAll("testdata", 0o755)
		writeFile(t, golden, stdout)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if stdout != string(want) {
		t.Errorf("preview output differs from %s (run with -update to accept):\ngot:\n%s\nwant:\n%s", golden, stdout, want)
	}
}

func TestShardsCoverEveryRowOnceAndMerge(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{})
	const n = 60
	list := writeList(t, dir, n)
	// A duplicate address must land in the same shard as its first row.
	fh, _ := os.OpenFile(list, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(fh, "user7@EXAMPLE.ORG,Dup,plan-x\n")
	fh.Close()
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	var parts []string
	for i := 0; i < 3; i++ {
		result := filepath.Join(dir, fmt.Sprintf("shard%d.xlsx", i))
		code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl,
			"--result", result, "--shard", fmt.Sprintf("%d/3", i))
		if code != exitOK {
			t.Fatalf("shard %d: exit %d; stderr:\n%s", i, code, stderr)
		}
		parts = append(parts, result)
	}
	if got := len(srv.Messages()); got != n {
		t.Errorf("server received %d messages over all shards, want %d", got, n)
	}
	merged := filepath.Join(dir, "merged.xlsx")
	code, _, stderr := runCLI(t, append([]string{"report", "--merge", merged}, parts...)...)
	if code != exitOK {
		t.Fatalf("merge: exit %d; stderr:\n%s", code, stderr)
	}
	rows := readResult(t, merged)
	if len(rows) != n+1 {
		t.Fatalf("merged result has %d rows, want %d", len(rows), n+1)
	}
	for i, r := range rows {
		if want := strconv.Itoa(i + 2); r["row"] != want {
			t.Fatalf("merged row %d: got row %q, want %q", i, r["row"], want)
		}
		want := "delivered"
		if i == n {
			want = "skipped"
		}
		if r["status"] != want {
			t.Errorf("row %s: status %q, want %q (%s)", r["row"], r["status"], want, r["error"])
		}
	}

	// With --list, the merge checks that every row has its result: all
	// shards pass, two of three do not.
	for _, tc := range []struct {
		name     string
		parts    []string
		wantCode int
		wantErr  string
	}{
		{"a shard missing", parts[:2], exitUsage, "of the list without a result"},
		{"every shard", parts, exitOK, "every row of " + list + " has exactly one result"},
	} {
		out := filepath.Join(dir, "checked.xlsx")
		code, _, stderr := runCLI(t, append([]string{"report", "--merge", out, "--list", list}, tc.parts...)...)
		if code != tc.wantCode || !strings.Contains(stderr, tc.wantErr) {
			t.Errorf("%s: exit %d, want %d, with %q in stderr:\n%s", tc.name, code, tc.wantCode, tc.wantErr, stderr)
		}
		// A failed check leaves no file where the whole merge is
		// expected, and no temporary file either.
		_, err := os.Stat(out)
		if exists := err == nil; exists != (tc.wantCode == exitOK) {
			t.Errorf("%s: %s exists: %v", tc.name, out, exists)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".bulkmail-merge-*")); len(left) != 0 {
			t.Errorf("%s: left %v", tc.name, left)
		}
	}
}

func TestJobFile(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{})
	writeList(t, dir, 4)
	writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	job := writeFile(t, filepath.Join(dir, "job.toml"), fmt.Sprintf(`
list = "list.csv"
template = "t.tmpl"
smtp = "smtp://%s"
result = "from-job.xlsx"
workers = 2
retry_wait = "10ms"
`, srv.Addr()))
	// From another directory: paths in the job file are relative to it.
	code, _, stderr := runCLI(t, "send", "--job", job)
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if rows := readResult(t, filepath.Join(dir, "from-job.xlsx")); len(rows) != 4 {
		t.Errorf("result has %d rows, want 4", len(rows))
	}
	// A flag on the command line wins over the job file.
	override := filepath.Join(dir, "override.xlsx")
	if code, _, stderr = runCLI(t, "send", "--job", job, "--result", override, "--journal-reset"); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if _, err := os.Stat(override); err != nil {
		t.Errorf("--result on the command line was not used: %v", err)
	}
	// Secrets never come from a job file.
	bad := writeFile(t, filepath.Join(dir, "bad.toml"), "password = \"hunter2\"\n")
	if code, _, stderr = runCLI(t, "send", "--job", bad); code != exitUsage || strings.Contains(stderr, "hunter2") {
		t.Errorf("job file with a password: exit %d, want %d, stderr must not echo it:\n%s", code, exitUsage, stderr)
	}
}

func TestProbe(t *testing.T) {
	srv := startCapture(t, capture.Config{})
	trace := filepath.Join(t.TempDir(), "probe.trace")
	code, stdout, stderr := runCLI(t, "probe", "--smtp", "smtp://"+srv.Addr(), "--rcpt", "someone@example.org", "--vrfy", "someone@example.org", "--trace", trace)
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{"greeting  220 ", "EHLO      250 ", "extension PIPELINING", "NOOP      250 ", "HELP      ", "VRFY      252 ", "MAIL      250 ", "RCPT      250 ", "RSET      250 ", "QUIT      closed"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("probe output lacks %q:\n%s", want, stdout)
		}
	}
	if got := len(srv.Messages()); got != 0 {
		t.Errorf("probe made the server accept %d messages, want 0", got)
	}
	if b, err := os.ReadFile(trace); err != nil || !strings.Contains(string(b), "> EHLO") || !strings.Contains(string(b), "> VRFY someone@example.org") {
		t.Errorf("probe --trace: %v, trace:\n%s", err, b)
	}
	var cmds []string
	for _, c := range srv.Conns() {
		cmds = append(cmds, c.Commands...)
	}
	if strings.Contains(strings.Join(cmds, " "), "DATA") {
		t.Errorf("probe sent DATA: %v", cmds)
	}
}

func TestStartingOver(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	send := func(extra ...string) (int, string) {
		args := append([]string{"send", "--smtp", "smtp://" + srv.Addr(), "--list", list, "--template", tmpl,
			"--result", filepath.Join(dir, "r.xlsx")}, extra...)
		code, _, stderr := runCLI(t, args...)
		return code, stderr
	}

	// A result file bulkmail cannot write is a usage error found before
	// anything is sent, not after.
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", filepath.Join(dir, "r.txt"))
	if code != exitUsage || len(srv.Messages()) != 0 {
		t.Fatalf("--result r.txt: exit %d with %d messages sent, want %d and none; stderr:\n%s", code, len(srv.Messages()), exitUsage, stderr)
	}
	if code, stderr := send("--journal-sync", "never"); code != exitUsage || len(srv.Messages()) != 0 || !strings.Contains(stderr, "want message or batch") {
		t.Fatalf("--journal-sync never: exit %d with %d messages sent, want %d and none; stderr:\n%s", code, len(srv.Messages()), exitUsage, stderr)
	}

	if code, stderr := send(); code != exitOK {
		t.Fatalf("first run: exit %d; stderr:\n%s", code, stderr)
	}
	if code, stderr := send(); code != exitOK || len(srv.Messages()) != 3 {
		t.Fatalf("second run: exit %d, %d messages in all, want 0 and 3; stderr:\n%s", code, len(srv.Messages()), stderr)
	}
	// --journal-reset starts over with the same list: everything again,
	// the old journal kept beside the new one.
	if code, stderr := send("--journal-reset"); code != exitOK || len(srv.Messages()) != 6 {
		t.Fatalf("--journal-reset: exit %d, %d messages in all, want 0 and 6; stderr:\n%s", code, len(srv.Messages()), stderr)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "r.xlsx.journal.old-*"))
	if len(old) != 1 {
		t.Errorf("old journals kept: %v, want 1", old)
	}
	// A dry run never writes over the result of a real run.
	if code, _, stderr := runCLI(t, "send", "--dry-run", "--list", list, "--template", tmpl, "--result", filepath.Join(dir, "r.xlsx")); code != exitUsage {
		t.Errorf("--dry-run over a real result: exit %d, want %d; stderr:\n%s", code, exitUsage, stderr)
	}
	if rows := readResult(t, filepath.Join(dir, "r.xlsx")); len(rows) != 3 || rows[0]["status"] != "delivered" {
		t.Errorf("real result changed by the dry run: %v", rows)
	}
}

func TestOnlyInvalidAfterEncodingFix(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	// Latin-1: "Zoë" is 0x5a 0x6f 0xeb.
	list := writeFile(t, filepath.Join(dir, "latin1.csv"), "email,name,plan\nzoe@example.org,Zo\xeb,pro\nann@example.org,Ann,pro\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	args := []string{"send", "--smtp", "smtp://" + srv.Addr(), "--list", list, "--template", tmpl, "--result", filepath.Join(dir, "r.xlsx")}
	if code, _, stderr := runCLI(t, args...); code != exitUndelivered {
		t.Fatalf("without --encoding: exit %d, want %d; stderr:\n%s", code, exitUndelivered, stderr)
	}
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d messages, want 1 (the valid row)", n)
	}
	code, _, stderr := runCLI(t, append(args, "--encoding", "latin1", "--only", "invalid")...)
	if code != exitOK {
		t.Fatalf("--only invalid --encoding latin1: exit %d; stderr:\n%s", code, stderr)
	}
	msgs := srv.Messages()
	if len(msgs) != 2 || msgs[1].To[0] != "zoe@example.org" {
		t.Fatalf("messages %d (last to %v), want 2, the second to zoe@example.org", len(msgs), msgs[len(msgs)-1].To)
	}
	rows := readResult(t, filepath.Join(dir, "r.xlsx"))
	if rows[0]["status"] != "delivered" || rows[0]["name"] != "Zoë" || rows[1]["status"] != "delivered" {
		t.Errorf("result rows: %v", rows)
	}
}

func TestSendHostileValuesArriveIntactOnce(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	// Every end-of-data lookalike a row's value can hold, and header
	// injection attempts, in one list.
	notes := []string{
		"line\n.\nafter",
		"line\r.\r\nafter",
		"line\r\n.\r\nafter",
		"line\n.\r\nafter",
		"line\r\n\x00.\r\nafter",
		".",
		"..\n...",
		"QUIT\r\nMAIL FROM:<evil@example.net>",
		strings.Repeat("long ", 1000),
	}
	var b strings.Builder
	b.WriteString("email,name,note\n")
	quote := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	for i, n := range notes {
		fmt.Fprintf(&b, "u%d@example.org,User %d,%s\n", i, i, quote(n))
	}
	// Header injection through the name: that row must not be sent.
	fmt.Fprintf(&b, "inject@example.org,%s,hello\n", quote("Eve\r\nBcc: victim@example.net"))
	list := writeFile(t, filepath.Join(dir, "hostile.csv"), b.String())
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: s@example.com\nTo: {{.name}} <{{.email}}>\nSubject: Note for {{.name}}\n\nNote: {{.note}}\nEnd.\n")
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result)
	if code != exitUndelivered {
		t.Fatalf("exit %d, want %d (one invalid row); stderr:\n%s", code, exitUndelivered, stderr)
	}
	got := map[string][]capture.Message{}
	for _, m := range srv.Messages() {
		for _, to := range m.To {
			got[to] = append(got[to], m)
		}
	}
	if len(srv.Messages()) != len(notes) {
		t.Errorf("server received %d messages, want %d", len(srv.Messages()), len(notes))
	}
	if len(got["inject@example.org"]) != 0 || len(got["victim@example.net"]) != 0 {
		t.Errorf("the header-injection row was sent")
	}
	for i, note := range notes {
		to := fmt.Sprintf("u%d@example.org", i)
		if len(got[to]) != 1 {
			t.Errorf("%s received %d times, want 1", to, len(got[to]))
			continue
		}
		msg, err := mail.ReadMessage(bytes.NewReader(got[to][0].Data))
		if err != nil {
			t.Fatalf("%s: net/mail: %v", to, err)
		}
		if n := len(msg.Header["Bcc"]); n != 0 {
			t.Errorf("%s: message has a Bcc header", to)
		}
		var body io.Reader = msg.Body
		if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			body = quotedprintable.NewReader(msg.Body)
		} else if strings.EqualFold(msg.Header.Get("Content-Transfer-Encoding"), "base64") {
			body = base64.NewDecoder(base64.StdEncoding, msg.Body)
		}
		text, err := io.ReadAll(body)
		if err != nil {
			t.Fatalf("%s: body: %v", to, err)
		}
		// Line ends are normalised to CRLF and NUL removed; the text is
		// otherwise what the row holds.
		want := "Note: " + note + "\nEnd.\n"
		want = strings.ReplaceAll(want, "\x00", "")
		want = strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(want, "\r\n", "\n"), "\r", "\n"), "\n", "\r\n")
		if string(text) != want {
			t.Errorf("%s: body %q, want %q", to, text, want)
		}
	}
	rows := readResult(t, result)
	last := rows[len(rows)-1]
	if last["status"] != "invalid" || !strings.Contains(last["error"], "hostile.csv") || !strings.Contains(last["error"], "name") {
		t.Errorf("injection row: status %q error %q, want invalid naming the file and column", last["status"], last["error"])
	}
}

func TestShortRowIsPaddedSentAndReported(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{})
	list := writeFile(t, filepath.Join(dir, "short.csv"), "email,name,plan\na@example.org,A,p\nb@example.org,B\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl, "--result", result)
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "short.csv row 3") {
		t.Errorf("stderr does not report the short row:\n%s", stderr)
	}
	rows := readResult(t, result)
	if rows[1]["status"] != "delivered" || !strings.Contains(rows[1]["error"], "fewer cells") || rows[0]["error"] != "" {
		t.Errorf("result rows: %v", rows)
	}
}

// parts flattens a MIME message into its leaf parts: content type and
// decoded body, in order.
func parts(t *testing.T, h textproto.MIMEHeader, body io.Reader) [][2]string {
	t.Helper()
	mt, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		t.Fatalf("content type %q: %v", h.Get("Content-Type"), err)
	}
	if strings.HasPrefix(mt, "multipart/") {
		var out [][2]string
		r := multipart.NewReader(body, params["boundary"])
		for {
			p, err := r.NextRawPart()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, parts(t, p.Header, p)...)
		}
	}
	switch strings.ToLower(h.Get("Content-Transfer-Encoding")) {
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return [][2]string{{mt, string(b)}}
}

func TestCapturedMultipartMatchesRendered(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	writeFile(t, filepath.Join(dir, "report.pdf"), "%PDF-1.4 not really\n")
	writeFile(t, filepath.Join(dir, "logo.png"), "\x89PNG\r\n\x1a\nnot really")
	list := writeFile(t, filepath.Join(dir, "l.csv"), "email,name,files\n"+
		"a@example.org,Zoë <Ünïcode>,report.pdf;logo.png\n"+
		"b@example.org,\"Bob \"\"the . dot\"\"\",logo.png\n")
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <s@example.com>\nTo: {{.name}} <{{.email}}>\nSubject: Für {{.name}}\n\nHello {{.name}},\n.\nsee the attachment.\n")
	html := writeFile(t, filepath.Join(dir, "t.html"), "<p>Hello {{.name}}</p><img src=\"cid:logo.png\">\n")
	code, _, stderr := runCLI(t, "send", "--smtp", "smtp://"+srv.Addr(), "--list", list, "--template", tmpl,
		"--html", html, "--attach-column", "files", "--result", filepath.Join(dir, "r.xlsx"))
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	// Render the same rows in the test, as preview would, and compare part
	// by part with what the server received.
	tp, err := merge.ParseTemplate(tmpl, merge.TemplateOptions{HTMLPath: html, AttachColumn: "files"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := merge.OpenList(list, merge.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := tp.Bind(list, l.Header()); err != nil {
		t.Fatal(err)
	}
	got := map[string][]byte{}
	for _, m := range srv.Messages() {
		got[m.To[0]] = m.Data
	}
	for {
		rec, err := l.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		want, err := tp.Render(rec)
		if err != nil {
			t.Fatal(err)
		}
		wm, err := mail.ReadMessage(bytes.NewReader(want.Data))
		if err != nil {
			t.Fatal(err)
		}
		gm, err := mail.ReadMessage(bytes.NewReader(got[rec.Address]))
		if err != nil {
			t.Fatalf("%s: received message does not parse: %v", rec.Address, err)
		}
		for _, h := range []string{"From", "To", "Subject", "Content-Type"} {
			w, g := wm.Header.Get(h), gm.Header.Get(h)
			if h == "Content-Type" {
				w, _, _ = mime.ParseMediaType(w)
				g, _, _ = mime.ParseMediaType(g)
			}
			if w != g {
				t.Errorf("%s: header %s got %q, want %q", rec.Address, h, g, w)
			}
		}
		wp := parts(t, textproto.MIMEHeader(wm.Header), wm.Body)
		gp := parts(t, textproto.MIMEHeader(gm.Header), gm.Body)
		if !reflect.DeepEqual(gp, wp) {
			t.Errorf("%s: parts differ:\ngot  %q\nwant %q", rec.Address, gp, wp)
		}
		if len(gp) < 3 {
			t.Errorf("%s: %d parts, want text, html and at least the inline image", rec.Address, len(gp))
		}
	}
}

func TestMaxAttemptsAcrossRuns(t *testing.T) {
	dir := t.TempDir()
	srv := startCapture(t, capture.Config{Rcpt: deferRcpt("user2@")})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.xlsx")
	args := sendArgs(srv, list, tmpl, result,
		"--retries", "1", "--retry-wait", "1ms", "--retry-max-wait", "1ms", "--max-attempts", "4")
	var rcpts []int
	for run := 1; run <= 3; run++ {
		code, _, stderr := runCLI(t, args...)
		if code != exitUndelivered {
			t.Fatalf("run %d: exit %d; stderr:\n%s", run, code, stderr)
		}
		n := 0
		for _, c := range srv.Conns() {
			for _, v := range c.Commands {
				if v == "RCPT" {
					n++
				}
			}
		}
		rcpts = append(rcpts, n)
		if run == 3 && !strings.Contains(stderr, "--max-attempts 4 used up") {
			t.Errorf("run 3 does not say why the row was left alone:\n%s", stderr)
		}
	}
	// Run 1: 3 rows + 1 retry = 4 RCPTs; run 2: 2 more for user2 (attempts
	// 3 and 4); run 3: none.
	if want := []int{4, 6, 6}; !reflect.DeepEqual(rcpts, want) {
		t.Errorf("RCPT commands after each run %v, want %v", rcpts, want)
	}
	rows := readResult(t, result)
	if r := rows[1]; r["status"] != "deferred" || r["attempts"] != "4" || r["rcpt_code"] != "451" {
		t.Errorf("user2 after 3 runs: %v", r)
	}
}

// sendArgs is `send` of list with tmpl to srv, writing result, then extra.
func sendArgs(srv *capture.Server, list, tmpl, result string, extra ...string) []string {
	return append([]string{"send", "--smtp", "smtp://" + srv.Addr(), "--list", list, "--template", tmpl, "--result", result}, extra...)
}

// deferRcpt answers 451 4.3.0 to every RCPT whose address starts with
// prefix, and accepts the others.
func deferRcpt(prefix string) func(string) *capture.Reply {
	return func(to string) *capture.Reply {
		if strings.HasPrefix(to, prefix) {
			return &capture.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
		}
		return nil
	}
}

// deferWhile answers 451 4.3.0 to every RCPT TO:<addr> while on is set,
// and accepts the others.
func deferWhile(on *atomic.Bool, addr string) func(string) *capture.Reply {
	return func(to string) *capture.Reply {
		if on.Load() && to == addr {
			return &capture.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
		}
		return nil
	}
}

// TestHelpNamesFlagsWithTwoDashes: each command's -h lists its flags as
// the README and the error messages write them, --name.
func TestHelpNamesFlagsWithTwoDashes(t *testing.T) {
	for _, cmd := range []string{"send", "report", "preview", "probe", "sink"} {
		_, stdout, stderr := runCLI(t, cmd, "-h")
		out := stdout + stderr
		if !strings.Contains(out, "Flags:\n  --") {
			t.Errorf("%s -h: no flag listed as --name:\n%s", cmd, out)
		}
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "  -") && !strings.HasPrefix(line, "  --") {
				t.Errorf("%s -h: %q has one dash", cmd, line)
			}
		}
	}
}
