package main

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/report"
)

// The tests in this file run the real binary, kill it (SIGKILL, SIGTERM, a
// file size limit) at chosen points, run it again and check what HAZARDS.md
// section D asks of a resumable sender: no row lost, nothing delivered
// twice, in-doubt rows resent only when asked.

var crashSeed = flag.Uint64("crash.seed", 0, "run the kill -9 test with this seed only (0: the built-in seeds)")

// TestCrashResume builds bulkmail once and runs every crash case against
// that binary, each with its own capture server.
func TestCrashResume(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	h := &harness{bin: buildBulkmail(t)}
	t.Run("Kill9AtManyPoints", h.testKill9AtManyPoints)
	t.Run("ChangedListRefused", h.testChangedListRefused)
	t.Run("OverlappingRunLocked", h.testOverlappingRunLocked)
	t.Run("SIGTERMMidRun", h.testSIGTERMMidRun)
	t.Run("SignalWithHeldDot", h.testSignalWithHeldDot)
	t.Run("SIGTERMDuringRetryWait", h.testSIGTERMDuringRetryWait)
	t.Run("SIGTERMWhileRedialing", h.testSIGTERMWhileRedialing)
	t.Run("JournalWriteFailureStopsSending", h.testJournalWriteFailureStopsSending)
	t.Run("JournalOnDeviceFile", h.testJournalOnDeviceFile)
	t.Run("OnlyDeferred", h.testOnlyDeferred)
	t.Run("OnlyNeverResendsDelivered", h.testOnlyNeverResendsDelivered)
	t.Run("OnlyInDoubtNeedsResendInDoubt", h.testOnlyInDoubtNeedsResendInDoubt)
	t.Run("OnlyFailedAfterInterrupt", h.testOnlyFailedAfterInterrupt)
	t.Run("FileModes0600", h.testFileModes0600)
	t.Run("KillDuringResultWrite", h.testKillDuringResultWrite)
	t.Run("DeferredAttemptsAcrossRuns", h.testDeferredAttemptsAcrossRuns)
	t.Run("ReportAfterKill", h.testReportAfterKill)
	t.Run("Kill9WithDuplicates", h.testKill9WithDuplicates)
	t.Run("MachineRestart", h.testMachineRestart)
}

// buildBulkmail compiles this package into the test's temporary folder.
func buildBulkmail(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	bin := filepath.Join(t.TempDir(), "bulkmail")
	out, err := exec.Command(goTool, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type harness struct{ bin string }

// proc is one bulkmail process.
type proc struct {
	cmd    *exec.Cmd
	stderr lockedBuffer
	done   chan struct{}
}

// lockedBuffer is a bytes.Buffer a test may read while the process writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// start runs bulkmail with args in the background; the test's cleanup kills
// it if it is still running.
// waitHeld returns once the gate holds the reply to message held (entered
// is from gate.arm), failing the test if p exits first or nothing comes.
func (p *proc) waitHeld(t *testing.T, entered <-chan struct{}, held int) {
	t.Helper()
	select {
	case <-entered:
	case <-p.done:
		t.Fatalf("run exited before message %d was held; stderr:\n%s", held, p.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("message %d never reached the server", held)
	}
}

func (h *harness) start(t *testing.T, args ...string) *proc {
	t.Helper()
	return startProc(t, exec.Command(h.bin, args...))
}

// startLimited runs bulkmail under a shell that first limits the size of
// any file it writes to blocks512 blocks of 512 bytes (1024 in some shells).
func (h *harness) startLimited(t *testing.T, blocks512 int, args ...string) *proc {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to set a file size limit with")
	}
	script := fmt.Sprintf(`ulimit -f %d && exec "$0" "$@"`, blocks512)
	return startProc(t, exec.Command(sh, append([]string{"-c", script, h.bin}, args...)...))
}

func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = io.Discard
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait returns the exit status, -1 if a signal ended the process.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("bulkmail did not exit within %s; stderr:\n%s", timeout, p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// run runs bulkmail to the end and returns its exit status and stderr.
func (h *harness) run(t *testing.T, args ...string) (int, string) {
	t.Helper()
	p := h.start(t, args...)
	code := p.wait(t, 30*time.Second)
	return code, p.stderr.String()
}

// job is one list, template and result file, sent to one server.
type job struct {
	srv     *capture.Server
	list    string
	tmpl    string
	result  string
	workers int
}

func newJob(t *testing.T, srv *capture.Server, rows int) *job {
	t.Helper()
	dir := t.TempDir()
	return &job{
		srv:     srv,
		list:    writeList(t, dir, rows),
		tmpl:    writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate),
		result:  filepath.Join(dir, "results.xlsx"),
		workers: 4,
	}
}

func (j *job) journal() string { return j.result + ".journal" }

// readResult reads the job's result file, XLSX or CSV.
func (j *job) readResult(t *testing.T) []map[string]string {
	t.Helper()
	if strings.HasSuffix(j.result, ".csv") {
		return readCSVResult(t, j.result)
	}
	return readResult(t, j.result)
}

func (j *job) args(extra ...string) []string {
	return append([]string{"send", "--smtp", "smtp://" + j.srv.Addr(),
		"--list", j.list, "--template", j.tmpl, "--result", j.result,
		"--workers", strconv.Itoa(j.workers),
		"--retries", "1", "--retry-wait", "10ms", "--retry-max-wait", "20ms"}, extra...)
}

// gate lets a test hold the server's reply to the final dot of one chosen
// message: the client has sent the whole message and waits.
type gate struct {
	mu      sync.Mutex
	calls   int // Data calls seen (every one stores a message once it returns)
	holdAt  int // the Data call to hold; 0: none
	entered chan struct{}
	release chan struct{}
	opened  bool
}

// arm holds the k-th Data call from now (k >= 1) until open, and returns a
// channel closed when that call is being held.
func (g *gate) arm(k int) <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holdAt = g.calls + k
	g.entered = make(chan struct{})
	g.release = make(chan struct{})
	g.opened = false
	return g.entered
}

// open lets a held call (if any) return, and disarms the gate.
func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.holdAt = 0
	if g.release != nil && !g.opened {
		close(g.release)
		g.opened = true
	}
}

func (g *gate) data(*capture.Message) *capture.Reply {
	g.mu.Lock()
	g.calls++
	var entered, release chan struct{}
	if g.holdAt != 0 && g.calls == g.holdAt {
		entered, release = g.entered, g.release
	}
	g.mu.Unlock()
	if entered != nil {
		close(entered)
		<-release
	}
	return nil
}

func (g *gate) dataCalls() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls
}

// startGatedCapture starts a capture server whose Data hook is g; the gate
// is opened before the server closes.
func startGatedCapture(t *testing.T, g *gate, cfg capture.Config) *capture.Server {
	t.Helper()
	cfg.KeepInMemory = true
	cfg.Data = g.data
	srv := startCapture(t, cfg)
	t.Cleanup(g.open)
	return srv
}

// waitUntil polls cond until it holds (true) or p exits first (false).
func waitUntil(t *testing.T, what string, p *proc, cond func() bool) bool {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if p != nil && p.exited() {
			return cond()
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// waitStored waits until every message that reached the Data hook is
// stored: a held message is stored once the gate opens.
func waitStored(t *testing.T, srv *capture.Server, g *gate) {
	t.Helper()
	waitUntil(t, "held messages to be stored", nil, func() bool { return len(srv.Messages()) >= g.dataCalls() })
}

// received counts the messages the server stored per envelope recipient.
func received(srv *capture.Server) map[string]int {
	n := map[string]int{}
	for _, m := range srv.Messages() {
		for _, to := range m.To {
			n[to]++
		}
	}
	return n
}

// receivedMessageIDs returns the Message-ID header of every stored message
// per envelope recipient, in the order received.
func receivedMessageIDs(t *testing.T, srv *capture.Server) map[string][]string {
	t.Helper()
	ids := map[string][]string{}
	for _, m := range srv.Messages() {
		msg, err := mail.ReadMessage(bytes.NewReader(m.Data))
		if err != nil {
			t.Fatalf("message to %v: %v", m.To, err)
		}
		ids[m.To[0]] = append(ids[m.To[0]], msg.Header.Get("Message-Id"))
	}
	return ids
}

// journalLines counts the complete lines of a journal file.
func journalLines(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// userEmail is the address writeList puts on list row i (1-based, header
// not counted).
func userEmail(i int) string { return fmt.Sprintf("user%d@example.org", i) }

// checkRows checks that rows has one row per list row of a writeList list
// of n rows, in order, each with a status from the closed set.
func checkRows(t *testing.T, rows []map[string]string, n int) {
	t.Helper()
	if len(rows) != n {
		t.Fatalf("result has %d rows, want %d", len(rows), n)
	}
	for i, r := range rows {
		if r["row"] != strconv.Itoa(i+2) || r["email"] != userEmail(i+1) {
			t.Fatalf("result row %d: got row %q email %q, want %q %q", i, r["row"], r["email"], strconv.Itoa(i+2), userEmail(i+1))
		}
		if !report.Status(r["status"]).Valid() {
			t.Errorf("row %s: status %q is not one of %v", r["row"], r["status"], report.Statuses())
		}
	}
}

// checkResumed checks the invariants of a list that was sent, killed and
// resumed against a server that accepts everything: every row delivered
// exactly once or in doubt and received at most once; nothing received
// twice. It returns the in-doubt rows' addresses.
func checkResumed(t *testing.T, rows []map[string]string, n int, got map[string]int) []string {
	t.Helper()
	checkRows(t, rows, n)
	var inDoubt []string
	for _, r := range rows {
		email, status := r["email"], report.Status(r["status"])
		switch status {
		case report.Delivered:
			if got[email] != 1 {
				t.Errorf("%s: delivered, but the server received it %d times, want 1", email, got[email])
			}
		case report.InDoubt:
			inDoubt = append(inDoubt, email)
			if got[email] > 1 {
				t.Errorf("%s: in doubt, but the server received it %d times, want at most 1", email, got[email])
			}
		default:
			t.Errorf("%s: status %q (error %q) after a completed resume against a server that accepts everything; want delivered or in_doubt",
				email, status, r["error"])
			if got[email] != 0 {
				t.Errorf("%s: status %q, but the server received it %d times", email, status, got[email])
			}
		}
	}
	return inDoubt
}

// checkResendInDoubt runs j once more with --resend-in-doubt and checks that
// exactly the in-doubt rows are sent again, once each, with the Message-ID
// of their first try.
func (h *harness) checkResendInDoubt(t *testing.T, j *job, n int, inDoubt []string) {
	t.Helper()
	before := received(j.srv)
	idsBefore := receivedMessageIDs(t, j.srv)
	code, stderr := h.run(t, j.args("--resend-in-doubt")...)
	if code != exitOK {
		t.Fatalf("--resend-in-doubt: exit %d, want %d; stderr:\n%s", code, exitOK, stderr)
	}
	after := received(j.srv)
	idsAfter := receivedMessageIDs(t, j.srv)
	doubtful := map[string]bool{}
	for _, e := range inDoubt {
		doubtful[e] = true
	}
	for i := 1; i <= n; i++ {
		e := userEmail(i)
		sent := after[e] - before[e]
		want := 0
		if doubtful[e] {
			want = 1
		}
		if sent != want {
			t.Errorf("%s: --resend-in-doubt sent it %d times, want %d (in doubt: %v)", e, sent, want, doubtful[e])
		}
		if doubtful[e] && len(idsBefore[e]) > 0 && len(idsAfter[e]) > len(idsBefore[e]) {
			if first, again := idsBefore[e][0], idsAfter[e][len(idsAfter[e])-1]; first != again {
				t.Errorf("%s: resent with Message-ID %q, want the first try's %q", e, again, first)
			}
		}
	}
	rows := j.readResult(t)
	checkRows(t, rows, n)
	for _, r := range rows {
		if r["status"] != string(report.Delivered) {
			t.Errorf("after --resend-in-doubt, %s: status %q (error %q), want delivered", r["email"], r["status"], r["error"])
		}
	}
}

// testKill9AtManyPoints kills the sender with SIGKILL at points a seed
// picks: after the server stored k more messages, after the journal gained
// k more lines, or while the server holds its reply to the k-th final dot.
// Then it resumes until the run finishes.
func (h *harness) testKill9AtManyPoints(t *testing.T) {
	seeds := []uint64{1, 2, 3, 4, 5, 6}
	if *crashSeed != 0 {
		seeds = []uint64{*crashSeed}
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			h.kill9(t, seed)
		})
	}
}

func (h *harness) kill9(t *testing.T, seed uint64) {
	const n = 200
	rng := rand.New(rand.NewPCG(seed, 0xb01c))
	g := &gate{}
	srv := startGatedCapture(t, g, capture.Config{})
	j := newJob(t, srv, n)
	j.workers = 1 + rng.IntN(4)
	kills := 1 + rng.IntN(3)
	t.Logf("seed %d: %d workers, up to %d kills", seed, j.workers, kills)

	finalCode := -1
	for run := 0; finalCode < 0; run++ {
		if run > kills+3 {
			t.Fatalf("still not finished after %d runs", run)
		}
		if run >= kills {
			p := h.start(t, j.args()...)
			finalCode = p.wait(t, 30*time.Second)
			if finalCode != exitOK && finalCode != exitUndelivered {
				t.Fatalf("run %d: exit %d, want 0 or 1; stderr:\n%s", run, finalCode, p.stderr.String())
			}
			break
		}
		k := 1 + rng.IntN(60)
		var (
			p       *proc
			reached bool
		)
		switch mode := rng.IntN(3); mode {
		case 0:
			target := len(srv.Messages()) + k
			t.Logf("run %d: kill after the server stored %d messages", run, target)
			p = h.start(t, j.args()...)
			reached = waitUntil(t, "messages", p, func() bool { return len(srv.Messages()) >= target })
		case 1:
			target := journalLines(j.journal()) + 1 + 2*k
			t.Logf("run %d: kill when the journal has %d lines", run, target)
			p = h.start(t, j.args()...)
			reached = waitUntil(t, "journal lines", p, func() bool { return journalLines(j.journal()) >= target })
		case 2:
			t.Logf("run %d: kill while the server holds the reply to final dot %d of this run", run, k)
			entered := g.arm(k)
			p = h.start(t, j.args()...)
			reached = waitUntil(t, "the held final dot", p, func() bool {
				select {
				case <-entered:
					return true
				default:
					return false
				}
			})
		}
		if !reached {
			// The run ended before the kill point: it is the final run.
			g.open()
			finalCode = p.wait(t, time.Second)
			t.Logf("run %d ended by itself before its kill point (exit %d)", run, finalCode)
			if finalCode != exitOK && finalCode != exitUndelivered {
				t.Fatalf("run %d: exit %d, want 0 or 1; stderr:\n%s", run, finalCode, p.stderr.String())
			}
			break
		}
		p.kill(t)
		g.open()
		waitStored(t, srv, g)
	}

	rows := readResult(t, j.result)
	inDoubt := checkResumed(t, rows, n, received(srv))
	if (len(inDoubt) == 0) != (finalCode == exitOK) {
		t.Errorf("final exit %d with %d rows in doubt; want 0 exactly when none is in doubt", finalCode, len(inDoubt))
	}
	t.Logf("%d rows in doubt: %v", len(inDoubt), inDoubt)
	h.checkResendInDoubt(t, j, n, inDoubt)
}

// testChangedListRefused: a journal written for one list refuses another
// version of it, sends nothing, and names --journal-reset.
func (h *harness) testChangedListRefused(t *testing.T) {
	t.Parallel()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	j := newJob(t, srv, 5)
	if code, stderr := h.run(t, j.args()...); code != exitOK {
		t.Fatalf("first run: exit %d; stderr:\n%s", code, stderr)
	}
	f, err := os.OpenFile(j.list, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "%s,Added Later,plan-0\n", userEmail(6))
	f.Close()

	msgs, conns := len(srv.Messages()), len(srv.Conns())
	code, stderr := h.run(t, j.args()...)
	if code != exitUsage {
		t.Fatalf("changed list: exit %d, want %d; stderr:\n%s", code, exitUsage, stderr)
	}
	if !strings.Contains(stderr, "--journal-reset") {
		t.Errorf("stderr does not mention --journal-reset:\n%s", stderr)
	}
	if m, c := len(srv.Messages()), len(srv.Conns()); m != msgs || c != conns {
		t.Errorf("changed list: server got %d messages on %d connections, want still %d on %d", m, c, msgs, conns)
	}

	code, stderr = h.run(t, j.args("--journal-reset")...)
	if code != exitOK {
		t.Fatalf("--journal-reset: exit %d; stderr:\n%s", code, stderr)
	}
	got := received(srv)
	for i := 1; i <= 6; i++ {
		want := 2 // a reset journal starts over
		if i == 6 {
			want = 1
		}
		if got[userEmail(i)] != want {
			t.Errorf("%s received %d times, want %d", userEmail(i), got[userEmail(i)], want)
		}
	}
	checkRows(t, readResult(t, j.result), 6)
	old, _ := filepath.Glob(j.journal() + ".old-*")
	if len(old) != 1 {
		t.Errorf("old journals kept beside: %v, want one", old)
	}
}

// testOverlappingRunLocked: while one run holds the journal, a second
// identical one exits 4 at once and sends nothing; report still reads it.
func (h *harness) testOverlappingRunLocked(t *testing.T) {
	t.Parallel()
	g := &gate{}
	srv := startGatedCapture(t, g, capture.Config{})
	j := newJob(t, srv, 5)
	j.workers = 1
	entered := g.arm(1)
	first := h.start(t, j.args()...)
	first.waitHeld(t, entered, 1)

	conns := len(srv.Conns())
	second := h.start(t, j.args()...)
	if code := second.wait(t, 10*time.Second); code != exitLocked {
		t.Fatalf("second run: exit %d, want %d; stderr:\n%s", code, exitLocked, second.stderr.String())
	}
	if g.dataCalls() != 1 || len(srv.Conns()) != conns {
		t.Errorf("second run: server saw %d messages, %d connections; want 1 (the held one), %d", g.dataCalls(), len(srv.Conns()), conns)
	}
	// Not even a reset may take a journal another run holds.
	if code, stderr := h.run(t, j.args("--journal-reset")...); code != exitLocked {
		t.Errorf("--journal-reset while another run holds the journal: exit %d, want %d; stderr:\n%s", code, exitLocked, stderr)
	}
	if old, _ := filepath.Glob(j.journal() + ".old-*"); len(old) != 0 {
		t.Errorf("a locked-out --journal-reset moved the journal aside: %v", old)
	}
	// Reading a journal takes no lock.
	out := filepath.Join(t.TempDir(), "live.csv")
	if code, stderr := h.run(t, "report", "--journal", j.journal(), "--list", j.list, "--result", out); code != exitOK {
		t.Errorf("report while a run holds the journal: exit %d; stderr:\n%s", code, stderr)
	}

	g.open()
	if code := first.wait(t, 30*time.Second); code != exitOK {
		t.Fatalf("first run: exit %d; stderr:\n%s", code, first.stderr.String())
	}
	got := received(srv)
	for i := 1; i <= 5; i++ {
		if got[userEmail(i)] != 1 {
			t.Errorf("%s received %d times, want 1", userEmail(i), got[userEmail(i)])
		}
	}
}

// testSIGTERMMidRun: SIGTERM stops a rate-limited run with exit 5, a
// complete result file, and a resumable journal.
func (h *harness) testSIGTERMMidRun(t *testing.T) {
	t.Parallel()
	const n = 200
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	j := newJob(t, srv, n)
	p := h.start(t, j.args("--rate", "50/s")...)
	if !waitUntil(t, "10 messages", p, func() bool { return len(srv.Messages()) >= 10 }) {
		t.Fatalf("run ended before 10 messages; stderr:\n%s", p.stderr.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 5*time.Second); code != exitInterrupted {
		t.Fatalf("after SIGTERM: exit %d, want %d; stderr:\n%s", code, exitInterrupted, p.stderr.String())
	}
	got := received(srv)
	if len(got) >= n {
		t.Fatalf("the run sent all %d rows before it was stopped; the rate limit did not hold", n)
	}
	rows := readResult(t, j.result)
	checkRows(t, rows, n)
	for _, r := range rows {
		email := r["email"]
		switch {
		case got[email] == 1 && r["status"] == string(report.Delivered):
		case got[email] == 0 && r["status"] == string(report.Failed) && strings.Contains(r["error"], "not attempted"):
		default:
			t.Errorf("%s: status %q error %q, received %d times; want delivered (once) or failed \"not attempted\" (never)",
				email, r["status"], r["error"], got[email])
		}
	}

	if code, stderr := h.run(t, j.args()...); code != exitOK {
		t.Fatalf("resume: exit %d; stderr:\n%s", code, stderr)
	}
	got = received(srv)
	for i := 1; i <= n; i++ {
		if got[userEmail(i)] != 1 {
			t.Errorf("%s received %d times overall, want 1", userEmail(i), got[userEmail(i)])
		}
	}
	rows = readResult(t, j.result)
	checkRows(t, rows, n)
	for _, r := range rows {
		if r["status"] != string(report.Delivered) {
			t.Errorf("after resume, %s: status %q, want delivered", r["email"], r["status"])
		}
	}
}

// committedRows reads a journal file and returns the addresses of the
// rows that have a commit record; a torn last line is ignored.
func committedRows(t *testing.T, path string) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	lines := bytes.SplitAfter(b, []byte("\n"))
	for i, line := range lines {
		if len(line) == 0 || line[len(line)-1] != '\n' {
			continue // the torn tail of a failed write
		}
		var r struct {
			T     string `json:"t"`
			Email string `json:"email"`
		}
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("journal line %d: %v: %q", i+1, err, line)
		}
		if r.T == "commit" {
			out[r.Email] = true
		}
	}
	return out
}

// testJournalWriteFailureStopsSending runs the sender with a file size
// limit that the journal outgrows: the run must stop with exit 3, and no
// message may have gone out whose commit is not in the journal.
func (h *harness) testJournalWriteFailureStopsSending(t *testing.T) {
	t.Parallel()
	const n = 60
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	j := newJob(t, srv, n)
	j.result = filepath.Join(filepath.Dir(j.result), "results.csv")
	j.workers = 2
	// 24 blocks: 12 KB (24 KB where the shell counts kilobytes), a third
	// to two thirds of the run's journal (reservations, commits and
	// outcomes).
	p := h.startLimited(t, 24, j.args()...)
	code := p.wait(t, 30*time.Second)
	stderr := p.stderr.String()
	if code != exitAborted {
		t.Fatalf("journal over the file size limit: exit %d, want %d; stderr:\n%s", code, exitAborted, stderr)
	}
	if !strings.Contains(stderr, "journal") {
		t.Errorf("stderr does not name the journal:\n%s", stderr)
	}
	got := received(srv)
	if len(got) == 0 || len(got) >= n {
		t.Fatalf("server received %d of %d rows; the limit should stop the run part way", len(got), n)
	}
	committed := committedRows(t, j.journal())
	for e := range got {
		if !committed[e] {
			t.Errorf("%s was sent but has no commit record in the journal", e)
		}
	}

	// Without the limit the run resumes and nothing goes twice.
	code, stderr = h.run(t, j.args()...)
	if code != exitOK && code != exitUndelivered {
		t.Fatalf("resume: exit %d; stderr:\n%s", code, stderr)
	}
	rows := j.readResult(t)
	inDoubt := checkResumed(t, rows, n, received(srv))
	h.checkResendInDoubt(t, j, n, inDoubt)
}

// testJournalOnDeviceFile: a journal path that is a device, not a journal,
// must stop the run before anything is sent.
func (h *harness) testJournalOnDeviceFile(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	j := newJob(t, srv, 3)
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to set a memory limit with")
	}
	// The memory limit keeps a regression from taking the machine down.
	cmd := exec.Command(sh, append([]string{"-c", `ulimit -v 4000000 && exec "$0" "$@"`, h.bin}, j.args("--journal", "/dev/full")...)...)
	p := startProc(t, cmd)
	code := p.wait(t, 10*time.Second)
	if code != exitAborted || strings.Contains(p.stderr.String(), "fatal error") {
		t.Errorf("--journal /dev/full: exit %d, want %d; stderr:\n%.2000s", code, exitAborted, p.stderr.String())
	}
	if c := len(srv.Conns()); c != 0 {
		t.Errorf("server saw %d connections, want 0", c)
	}
}

// readCSVResult returns a CSV result file as maps from column name to
// value, cells as written (a formula escape is kept).
func readCSVResult(t *testing.T, path string) []map[string]string {
	t.Helper()
	recs := readCSV(t, path)
	var out []map[string]string
	for _, r := range recs[1:] {
		m := map[string]string{}
		for i, h := range recs[0] {
			if i < len(r) {
				m[h] = r[i]
			}
		}
		out = append(out, m)
	}
	return out
}

func readCSV(t *testing.T, path string) [][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(recs) == 0 {
		t.Fatalf("%s has no header", path)
	}
	return recs
}

// refusingServer starts a capture server that answers RCPT for user5 with
// 450 while refuse is set.
func refusingServer(t *testing.T, refuse *atomic.Bool) *capture.Server {
	t.Helper()
	return startCapture(t, capture.Config{
		KeepInMemory: true,
		Rcpt: func(to string) *capture.Reply {
			if refuse.Load() && to == userEmail(5) {
				return &capture.Reply{Code: 450, Enhanced: "4.2.1", Text: "mailbox busy " + to}
			}
			return nil
		},
	})
}

// testOnlyDeferred: --only deferred sends exactly the deferred rows again
// and leaves every other row of the result as it was.
func (h *harness) testOnlyDeferred(t *testing.T) {
	t.Parallel()
	const n = 10
	var refuse atomic.Bool
	refuse.Store(true)
	srv := refusingServer(t, &refuse)
	j := newJob(t, srv, n)
	if code, stderr := h.run(t, j.args()...); code != exitUndelivered {
		t.Fatalf("first run: exit %d, want %d; stderr:\n%s", code, exitUndelivered, stderr)
	}
	first := readResult(t, j.result)
	checkRows(t, first, n)
	if s := first[4]["status"]; s != string(report.Deferred) {
		t.Fatalf("user5: status %q, want deferred", s)
	}

	refuse.Store(false)
	before := len(srv.Messages())
	if code, stderr := h.run(t, j.args("--only", "deferred")...); code != exitOK {
		t.Fatalf("--only deferred: exit %d, want %d; stderr:\n%s", code, exitOK, stderr)
	}
	msgs := srv.Messages()[before:]
	if len(msgs) != 1 || msgs[0].To[0] != userEmail(5) {
		var to []string
		for _, m := range msgs {
			to = append(to, m.To...)
		}
		t.Fatalf("--only deferred sent to %v, want only %s", to, userEmail(5))
	}
	second := readResult(t, j.result)
	checkRows(t, second, n)
	for i := range second {
		if i == 4 {
			if second[i]["status"] != string(report.Delivered) || second[i]["data_text"] != "Ok: queued as "+msgs[0].QueueID {
				t.Errorf("user5 after --only deferred: status %q data_text %q, want delivered, queued as %s",
					second[i]["status"], second[i]["data_text"], msgs[0].QueueID)
			}
			continue
		}
		for _, col := range report.FixedColumns {
			if first[i][col] != second[i][col] {
				t.Errorf("%s: column %s changed from %q to %q by a run that did not send it", userEmail(i+1), col, first[i][col], second[i][col])
			}
		}
	}
}

// testOnlyNeverResendsDelivered: whatever --only names, a delivered row is
// never sent a second time (the README: delivered rows are not sent again
// by a re-run).
func (h *harness) testOnlyNeverResendsDelivered(t *testing.T) {
	t.Parallel()
	const n = 10
	var refuse atomic.Bool
	refuse.Store(true)
	srv := refusingServer(t, &refuse)
	j := newJob(t, srv, n)
	if code, stderr := h.run(t, j.args()...); code != exitUndelivered {
		t.Fatalf("first run: exit %d, want %d; stderr:\n%s", code, exitUndelivered, stderr)
	}
	refuse.Store(false)
	code, stderr := h.run(t, j.args("--only", "delivered,deferred")...)
	got := received(srv)
	var twice []string
	for i := 1; i <= n; i++ {
		if got[userEmail(i)] > 1 {
			twice = append(twice, userEmail(i))
		}
	}
	if len(twice) > 0 {
		t.Fatalf("send --only delivered,deferred (exit %d) sent %d delivered rows a second time (%v); "+
			"sendRun.wanted returns r.only[prev.Status] before checking prev.Status.Final(); "+
			"want: delivered rows never resent (refuse --only with a final status, exit 2, or skip them)",
			code, len(twice), twice)
	}
	if code != exitOK && code != exitUsage {
		t.Errorf("--only delivered,deferred: exit %d, want 0 (deferred row sent) or 2 (refused); stderr:\n%s", code, stderr)
	}
}

// testFileModes0600: the result and the journal hold every address: both
// are 0600, even when an older file at the same path was not.
func (h *harness) testFileModes0600(t *testing.T) {
	t.Parallel()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	j := newJob(t, srv, 3)
	writeFile(t, j.result, "an older file, world-readable")
	if err := os.Chmod(j.result, 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		for _, path := range []string{j.result, j.journal()} {
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if m := fi.Mode().Perm(); m != 0o600 {
				t.Errorf("%s: %s has mode %#o, want 0600", when, filepath.Base(path), m)
			}
		}
	}
	if code, stderr := h.run(t, j.args()...); code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	check("first run")
	for _, path := range []string{j.result, j.journal()} {
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if code, stderr := h.run(t, j.args()...); code != exitOK {
		t.Fatalf("second run: exit %d; stderr:\n%s", code, stderr)
	}
	check("a re-run over 0644 files")
	out := filepath.Join(filepath.Dir(j.result), "report.csv")
	if code, stderr := h.run(t, "report", "--journal", j.journal(), "--list", j.list, "--result", out); code != exitOK {
		t.Fatalf("report: exit %d; stderr:\n%s", code, stderr)
	}
	if fi, err := os.Stat(out); err != nil {
		t.Fatal(err)
	} else if m := fi.Mode().Perm(); m != 0o600 {
		t.Errorf("report's result has mode %#o, want 0600", m)
	}
}

// hostileNames are list values a spreadsheet would run as formulas.
var hostileNames = []string{`=HYPERLINK("http://x","y")`, "+1+2", "-3", "@SUM(A1)", "'quoted", "plain name"}

// testReportAfterKill: bulkmail report rebuilds a whole result from the
// journal of a killed run, sends nothing, and escapes formula-like cells.
func (h *harness) testReportAfterKill(t *testing.T) {
	t.Parallel()
	g := &gate{}
	srv := startGatedCapture(t, g, capture.Config{})
	dir := t.TempDir()
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	w.Write([]string{"Email", "Name", "Plan"})
	const n = 12
	for i := 1; i <= n; i++ {
		w.Write([]string{userEmail(i), hostileNames[(i-1)%len(hostileNames)], "plan"})
	}
	w.Flush()
	j := &job{
		srv:     srv,
		list:    writeFile(t, filepath.Join(dir, "list.csv"), b.String()),
		tmpl:    writeFile(t, filepath.Join(dir, "t.tmpl"), "From: Sender <sender@example.com>\nTo: {{.email}}\nSubject: Hello\n\nDear {{.name}}\n"),
		result:  filepath.Join(dir, "results.xlsx"),
		workers: 1,
	}
	const held = 3
	entered := g.arm(held)
	p := h.start(t, j.args()...)
	p.waitHeld(t, entered, held)
	p.kill(t)
	g.open()
	waitStored(t, srv, g)
	if _, err := os.Stat(j.result); err == nil {
		t.Fatalf("a killed run left a result file %s", j.result)
	}

	// What a crash in the middle of a journal write leaves: half a line.
	jf, err := os.OpenFile(j.journal(), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(jf, `{"t":"outcome","row":%d,"email":"%s","status":"deliv`, held+1, userEmail(held))
	jf.Close()
	journalBefore, err := os.ReadFile(j.journal())
	if err != nil {
		t.Fatal(err)
	}

	msgs, conns := len(srv.Messages()), len(srv.Conns())
	out := filepath.Join(dir, "out.csv")
	code, stderr := h.run(t, "report", "--journal", j.journal(), "--list", j.list, "--result", out)
	if code != exitOK {
		t.Fatalf("report: exit %d; stderr:\n%s", code, stderr)
	}
	if m, c := len(srv.Messages()), len(srv.Conns()); m != msgs || c != conns {
		t.Errorf("report: server has %d messages on %d connections, want still %d on %d", m, c, msgs, conns)
	}
	if after, err := os.ReadFile(j.journal()); err != nil || !bytes.Equal(after, journalBefore) {
		t.Errorf("report changed the journal (err %v)", err)
	}
	recs := readCSV(t, out)
	wantHeader := append(append([]string(nil), report.FixedColumns...), "list Email", "Name", "Plan")
	if strings.Join(recs[0], "|") != strings.Join(wantHeader, "|") {
		t.Errorf("header: got %q, want %q", recs[0], wantHeader)
	}
	rows := readCSVResult(t, out)
	checkRows(t, rows, n)
	ids := receivedMessageIDs(t, srv)
	for i, r := range rows {
		email := userEmail(i + 1)
		var want report.Status
		switch {
		case i+1 < held:
			want = report.Delivered
		case i+1 == held:
			want = report.InDoubt
		default:
			want = report.Failed
		}
		if r["status"] != string(want) {
			t.Errorf("%s: status %q (error %q), want %q", email, r["status"], r["error"], want)
		}
		if want == report.Failed && !strings.Contains(r["error"], "not attempted") {
			t.Errorf("%s: error %q, want it to say not attempted", email, r["error"])
		}
		if want != report.Failed {
			if len(ids[email]) != 1 || r["message_id"] != ids[email][0] {
				t.Errorf("%s: message_id %q, server received %q", email, r["message_id"], ids[email])
			}
		}
		name := hostileNames[i%len(hostileNames)]
		wantName := name
		if strings.ContainsAny(name[:1], "=+-@'") {
			wantName = "'" + name
		}
		if r["Name"] != wantName {
			t.Errorf("%s: Name cell %q, want %q", email, r["Name"], wantName)
		}
	}

	// A resume drops the torn line, leaves the in-doubt row alone and
	// sends the rest once.
	code, stderr = h.run(t, j.args()...)
	if code != exitUndelivered {
		t.Fatalf("resume: exit %d, want %d (one row in doubt); stderr:\n%s", code, exitUndelivered, stderr)
	}
	got := received(srv)
	for i := 1; i <= n; i++ {
		if got[userEmail(i)] != 1 {
			t.Errorf("after resume, %s received %d times, want 1", userEmail(i), got[userEmail(i)])
		}
	}
	for _, r := range readResult(t, j.result) {
		want := report.Delivered
		if r["email"] == userEmail(held) {
			want = report.InDoubt
		}
		if r["status"] != string(want) {
			t.Errorf("after resume, %s: status %q, want %q", r["email"], r["status"], want)
		}
	}
}

// testSignalWithHeldDot sends SIGTERM or SIGINT while the server holds the
// reply to a final dot. The message on the wire gets the grace period; when
// the grace period is over, or at a second signal, the run ends at once and
// the message is in doubt.
func (h *harness) testSignalWithHeldDot(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sig    syscall.Signal
		grace  string
		second bool // a second signal while the dot is still held
	}{
		{"SIGTERM/grace-finishes-held-message", syscall.SIGTERM, "30s", false},
		{"SIGINT/grace-finishes-held-message", syscall.SIGINT, "30s", false},
		{"SIGTERM/grace-over", syscall.SIGTERM, "100ms", false},
		{"SIGTERM/second-signal", syscall.SIGTERM, "30s", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 20
			g := &gate{}
			srv := startGatedCapture(t, g, capture.Config{})
			j := newJob(t, srv, n)
			j.workers = 1
			const held = 4
			entered := g.arm(held)
			p := h.start(t, j.args("--grace", tc.grace)...)
			p.waitHeld(t, entered, held)
			if err := p.cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			heldEmail := userEmail(held)
			wantHeld := report.InDoubt
			switch {
			case tc.second:
				// The first signal was taken once the log line says so.
				waitUntil(t, "the first signal to be handled", p, func() bool {
					return strings.Contains(p.stderr.String(), "signal received")
				})
				if err := p.cmd.Process.Signal(tc.sig); err != nil {
					t.Fatal(err)
				}
			case tc.grace == "30s":
				// The message on the wire is given time to finish: the
				// process must still be there while the server holds it.
				select {
				case <-p.done:
					t.Fatalf("exited (status %d) with a message on the wire inside the grace period; stderr:\n%s",
						p.cmd.ProcessState.ExitCode(), p.stderr.String())
				case <-time.After(300 * time.Millisecond):
				}
				g.open()
				wantHeld = report.Delivered
			}
			if code := p.wait(t, 5*time.Second); code != exitInterrupted {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitInterrupted, p.stderr.String())
			}
			g.open()
			waitStored(t, srv, g)

			if tc.second {
				// The process ended without writing the result: report
				// rebuilds it.
				out := filepath.Join(t.TempDir(), "rebuilt.xlsx")
				if code, stderr := h.run(t, "report", "--journal", j.journal(), "--list", j.list, "--result", out); code != exitOK {
					t.Fatalf("report: exit %d; stderr:\n%s", code, stderr)
				}
				j2 := *j
				j2.result = out
				j = &j2
			}
			rows := readResult(t, j.result)
			checkRows(t, rows, n)
			got := received(srv)
			for i, r := range rows {
				email := r["email"]
				var want report.Status
				switch {
				case i+1 < held:
					want = report.Delivered
				case i+1 == held:
					want = wantHeld
				default:
					want = report.Failed
				}
				if r["status"] != string(want) {
					t.Errorf("%s: status %q (error %q), want %q", email, r["status"], r["error"], want)
				}
				if want == report.Failed && (got[email] != 0 || !strings.Contains(r["error"], "not attempted")) {
					t.Errorf("%s: error %q, received %d times; want not attempted, never received", email, r["error"], got[email])
				}
			}
			if got[heldEmail] != 1 {
				t.Errorf("held message to %s received %d times, want 1", heldEmail, got[heldEmail])
			}
		})
	}
}

// testKillDuringResultWrite kills re-runs while they write the result
// file: the result from before must stay whole (HAZARDS 31: temp file,
// rename; never truncate the old one).
func (h *harness) testKillDuringResultWrite(t *testing.T) {
	t.Parallel()
	const n = 300
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	dir := t.TempDir()
	// A wide column the template does not use makes the result file big
	// and slow to write, and the messages small.
	var b strings.Builder
	b.WriteString("Email,Name,Plan,Notes\n")
	notes := strings.Repeat("n", 2<<10)
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%s,User %d,plan,%s%d\n", userEmail(i), i, notes, i)
	}
	j := &job{
		srv:     srv,
		list:    writeFile(t, filepath.Join(dir, "list.csv"), b.String()),
		tmpl:    writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate),
		result:  filepath.Join(dir, "results.xlsx"),
		workers: 4,
	}
	if code, stderr := h.run(t, j.args()...); code != exitOK {
		t.Fatalf("first run: exit %d; stderr:\n%s", code, stderr)
	}
	tempExists := func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, ".results.xlsx.tmp-*"))
		return len(m) > 0
	}
	caught := 0
	for try := 0; try < 10 && caught < 3; try++ {
		p := h.start(t, j.args()...)
		if waitUntil(t, "the result's temporary file", p, tempExists) && !p.exited() {
			p.kill(t)
			caught++
		} else if code := p.wait(t, 30*time.Second); code != exitOK {
			t.Fatalf("re-run: exit %d; stderr:\n%s", code, p.stderr.String())
		}
		rows := readResult(t, j.result)
		checkRows(t, rows, n)
		for _, r := range rows {
			if r["status"] != string(report.Delivered) {
				t.Fatalf("after a kill during the result write, %s: status %q, want delivered", r["email"], r["status"])
			}
		}
	}
	t.Logf("killed %d re-runs while they wrote the result", caught)
	if got := len(srv.Messages()); got != n {
		t.Errorf("server received %d messages, want %d: re-runs sent again", got, n)
	}
}

// testDeferredAttemptsAcrossRuns: a row deferred run after run has its
// attempts counted across runs (HAZARDS 33: retries tracked across runs),
// so an operator can see how long it has been failing.
func (h *harness) testDeferredAttemptsAcrossRuns(t *testing.T) {
	t.Parallel()
	const n = 6
	var refuse atomic.Bool
	refuse.Store(true)
	srv := refusingServer(t, &refuse)
	j := newJob(t, srv, n)
	var attempts []string
	for run := 1; run <= 3; run++ {
		if code, stderr := h.run(t, j.args()...); code != exitUndelivered {
			t.Fatalf("run %d: exit %d, want %d; stderr:\n%s", run, code, exitUndelivered, stderr)
		}
		rows := readResult(t, j.result)
		checkRows(t, rows, n)
		if s := rows[4]["status"]; s != string(report.Deferred) {
			t.Fatalf("run %d: user5 status %q, want deferred", run, s)
		}
		attempts = append(attempts, rows[4]["attempts"])
	}
	got := received(srv)
	for i := 1; i <= n; i++ {
		if want := 1; i != 5 && got[userEmail(i)] != want {
			t.Errorf("%s received %d times, want %d", userEmail(i), got[userEmail(i)], want)
		}
	}
	if want := []string{"2", "4", "6"}; strings.Join(attempts, ",") != strings.Join(want, ",") {
		t.Fatalf("a row deferred in 3 runs (--retries 1) shows attempts %v in the result after each run, want %v: "+
			"attempts restart at 1 each run (outcomeOf uses the pool's per-run Result.Attempts; the journal's "+
			"earlier attempts are not added), so retries are not tracked across runs (HAZARDS 33)", attempts, want)
	}
}

// testSIGTERMDuringRetryWait: a signal does not wait out a retry's
// back-off; the row waiting for it keeps its last answer (deferred).
func (h *harness) testSIGTERMDuringRetryWait(t *testing.T) {
	t.Parallel()
	const n = 8
	var refuse atomic.Bool
	refuse.Store(true)
	srv := refusingServer(t, &refuse)
	j := newJob(t, srv, n)
	args := j.args()
	for i, a := range args {
		if a == "--retry-wait" || a == "--retry-max-wait" {
			args[i+1] = "10m"
		}
	}
	p := h.start(t, args...)
	if !waitUntil(t, "every other row to be delivered", p, func() bool { return len(srv.Messages()) >= n-1 }) {
		t.Fatalf("run ended before the other rows were delivered (exit %d); stderr:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 5*time.Second); code != exitInterrupted {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitInterrupted, p.stderr.String())
	}
	rows := readResult(t, j.result)
	checkRows(t, rows, n)
	for i, r := range rows {
		want := report.Delivered
		if i == 4 {
			want = report.Deferred
		}
		if r["status"] != string(want) {
			t.Errorf("%s: status %q (error %q), want %q", r["email"], r["status"], r["error"], want)
		}
	}
	if r := rows[4]; r["rcpt_code"] != "450" {
		t.Errorf("user5: rcpt_code %q, want the 450 it last had", r["rcpt_code"])
	}

	refuse.Store(false)
	if code, stderr := h.run(t, j.args()...); code != exitOK {
		t.Fatalf("resume: exit %d; stderr:\n%s", code, stderr)
	}
	got := received(srv)
	for i := 1; i <= n; i++ {
		if got[userEmail(i)] != 1 {
			t.Errorf("%s received %d times, want 1", userEmail(i), got[userEmail(i)])
		}
	}
}

// testOnlyInDoubtNeedsResendInDoubt: --only in_doubt selects the in-doubt
// rows but must not by itself resend them: the README sends an in-doubt
// row again "only with --resend-in-doubt".
func (h *harness) testOnlyInDoubtNeedsResendInDoubt(t *testing.T) {
	t.Parallel()
	const n = 6
	g := &gate{}
	srv := startGatedCapture(t, g, capture.Config{})
	j := newJob(t, srv, n)
	j.workers = 1
	const held = 2
	entered := g.arm(held)
	p := h.start(t, j.args()...)
	p.waitHeld(t, entered, held)
	p.kill(t)
	g.open()
	waitStored(t, srv, g)
	if code, stderr := h.run(t, j.args()...); code != exitUndelivered {
		t.Fatalf("resume: exit %d, want %d; stderr:\n%s", code, exitUndelivered, stderr)
	}
	if got := received(srv)[userEmail(held)]; got != 1 {
		t.Fatalf("%s received %d times before --only, want 1", userEmail(held), got)
	}

	code, stderr := h.run(t, j.args("--only", "in_doubt")...)
	if got := received(srv)[userEmail(held)]; got != 1 {
		t.Fatalf("send --only in_doubt without --resend-in-doubt (exit %d) sent the in-doubt row %s again "+
			"(received %d times); sendRun.wanted returns r.only[prev.Status] and never looks at --resend-in-doubt; "+
			"want: in-doubt rows resent only with --resend-in-doubt (README, Statuses)", code, userEmail(held), got)
	}
	if code != exitUndelivered && code != exitUsage {
		t.Errorf("--only in_doubt: exit %d, want 1 (row still in doubt) or 2 (refused); stderr:\n%s", code, stderr)
	}
}

// testOnlyFailedAfterInterrupt: after an interrupted run the result shows
// the rows it never reached as failed ("not attempted"), and failed rows
// are sent again by a re-run (README): so --only failed must send them.
func (h *harness) testOnlyFailedAfterInterrupt(t *testing.T) {
	t.Parallel()
	const n = 12
	g := &gate{}
	srv := startGatedCapture(t, g, capture.Config{})
	j := newJob(t, srv, n)
	j.workers = 1
	const held = 3
	entered := g.arm(held)
	p := h.start(t, j.args()...)
	p.waitHeld(t, entered, held)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	g.open()
	if code := p.wait(t, 10*time.Second); code != exitInterrupted {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitInterrupted, p.stderr.String())
	}
	var notAttempted []string
	for _, r := range readResult(t, j.result) {
		if r["status"] == string(report.Failed) && strings.Contains(r["error"], "not attempted") {
			notAttempted = append(notAttempted, r["email"])
		}
	}
	if len(notAttempted) == 0 {
		t.Fatal("the interrupted run left no row failed \"not attempted\"")
	}

	before := received(srv)
	code, stderr := h.run(t, j.args("--only", "failed")...)
	after := received(srv)
	var unsent []string
	for _, e := range notAttempted {
		if after[e]-before[e] != 1 {
			unsent = append(unsent, e)
		}
	}
	for i := 1; i <= n; i++ {
		if e := userEmail(i); after[e] > 1 {
			t.Errorf("%s received %d times", e, after[e])
		}
	}
	if len(unsent) > 0 {
		t.Fatalf("after an interrupted run (exit 5), the result shows %d rows as failed \"not attempted\", "+
			"but send --only failed (exit %d) sent %d of them nothing: those rows have no journal record, and "+
			"sendRun.wanted returns false for a row the journal does not know whenever --only is set; "+
			"want: rows the result reports as failed are sent by --only failed (e.g. treat an unknown row as failed there)",
			len(notAttempted), code, len(unsent))
	}
	if code != exitOK {
		t.Errorf("--only failed: exit %d, want 0; stderr:\n%s", code, stderr)
	}
}

// testSIGTERMWhileRedialing: with the server down and the pool backing off
// between dials, a signal ends the run at once with exit 5 and every row
// failed "not attempted"; a re-run once the server is up sends each once.
func (h *harness) testSIGTERMWhileRedialing(t *testing.T) {
	t.Parallel()
	const n = 5
	// A loopback port nobody listens on: take one and let it go.
	down := startCapture(t, capture.Config{})
	addr := down.Addr()
	down.Close()
	srv := startCapture(t, capture.Config{KeepInMemory: true})
	j := newJob(t, srv, n)
	args := j.args("--max-errors", "1000")
	for i, a := range args {
		switch a {
		case "--smtp":
			args[i+1] = "smtp://" + addr
		case "--retry-wait", "--retry-max-wait":
			args[i+1] = "10m" // redials back off from a minute
		}
	}
	p := h.start(t, args...)
	// The journal's run header is written before the first dial.
	if !waitUntil(t, "the journal header", p, func() bool { return journalLines(j.journal()) >= 1 }) {
		t.Fatalf("run ended by itself (exit %d); stderr:\n%s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 5*time.Second); code != exitInterrupted {
		t.Fatalf("exit %d, want %d; stderr:\n%s", code, exitInterrupted, p.stderr.String())
	}
	rows := readResult(t, j.result)
	checkRows(t, rows, n)
	for _, r := range rows {
		if r["status"] != string(report.Failed) || !strings.Contains(r["error"], "not attempted") {
			t.Errorf("%s: status %q error %q, want failed, not attempted", r["email"], r["status"], r["error"])
		}
	}
	if code, stderr := h.run(t, j.args()...); code != exitOK {
		t.Fatalf("re-run against a live server: exit %d; stderr:\n%s", code, stderr)
	}
	got := received(srv)
	for i := 1; i <= n; i++ {
		if got[userEmail(i)] != 1 {
			t.Errorf("%s received %d times, want 1", userEmail(i), got[userEmail(i)])
		}
	}
}

// testKill9WithDuplicates: the second half of the list repeats the first
// half's addresses. Runs are killed (kill -9 or SIGTERM) at random points
// and resumed until one finishes: each address is received exactly once
// (at most once if its row is in doubt), and every repeat is skipped as a
// duplicate of the first row. A resume meets the rows of the first half
// as settled, and they must still claim their addresses.
func (h *harness) testKill9WithDuplicates(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			const half = 60
			rng := rand.New(rand.NewPCG(seed, 0xd0b1e))
			srv := startCapture(t, capture.Config{})
			j := newJob(t, srv, 0)
			writeTwiceList(t, j.list, half)
			j.workers = 1 + rng.IntN(4)
			for run := 0; run < 3; run++ {
				target := len(srv.Messages()) + 1 + rng.IntN(half/2)
				p := h.start(t, j.args()...)
				if !waitUntil(t, "messages", p, func() bool { return len(srv.Messages()) >= target }) {
					p.wait(t, 30*time.Second)
					break
				}
				if rng.IntN(2) == 0 {
					t.Logf("run %d: kill -9 after %d messages", run, target)
					p.kill(t)
				} else {
					t.Logf("run %d: SIGTERM after %d messages", run, target)
					p.cmd.Process.Signal(syscall.SIGTERM)
					p.wait(t, 30*time.Second)
				}
			}
			if code, stderr := h.run(t, j.args()...); code != exitOK && code != exitUndelivered {
				t.Fatalf("final run: exit %d\n%s", code, stderr)
			}
			got := received(srv)
			rows := readResult(t, j.result)
			if len(rows) != 2*half {
				t.Fatalf("result has %d rows, want %d", len(rows), 2*half)
			}
			for i, r := range rows {
				email, status := r["email"], report.Status(r["status"])
				if i < half {
					switch {
					case status == report.Delivered && got[email] != 1,
						status == report.InDoubt && got[email] > 1,
						status != report.Delivered && status != report.InDoubt:
						t.Errorf("row %s %s: %s (%q), received %d times", r["row"], email, status, r["error"], got[email])
					}
					continue
				}
				if want := fmt.Sprintf("duplicate of row %d", i-half+2); status != report.Skipped || r["error"] != want {
					t.Errorf("row %s %s: %s %q, want skipped %q", r["row"], email, status, r["error"], want)
				}
			}
			for e, n := range got {
				if n > 1 {
					t.Errorf("%s received %d times", e, n)
				}
			}
		})
	}
}

// testMachineRestart kills a run (--journal-sync batch) with kill -9 and
// then takes away every
// journal record after its last reservation: what a restart of the
// machine may leave, since only the reservations were fsynced (see
// report.Journal). The run after it, in another boot, must send none of
// the messages the server already has, and say that each of them is in
// doubt or delivered; the rows it reads as in doubt because of the
// restart are at most the reservations in flight.
func (h *harness) testMachineRestart(t *testing.T) {
	for _, workers := range []int{1, 4} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) {
			t.Parallel()
			const n = 1000
			srv := startCapture(t, capture.Config{})
			j := newJob(t, srv, n)
			j.workers = workers
			p := h.start(t, j.args("--journal-sync", "batch")...)
			if !waitUntil(t, "messages", p, func() bool { return len(srv.Messages()) >= n/3 }) {
				t.Fatalf("the run ended before it was killed:\n%s", p.stderr.String())
			}
			p.kill(t)

			b, err := os.ReadFile(j.journal())
			if err != nil {
				t.Fatal(err)
			}
			last := bytes.LastIndex(b, []byte(`{"t":"reserve"`))
			if last < 0 {
				t.Fatalf("no reservation in the journal:\n%.2000s", b)
			}
			cut := last + bytes.IndexByte(b[last:], '\n') + 1
			if err := os.Truncate(j.journal(), int64(cut)); err != nil {
				t.Fatal(err)
			}
			before := received(srv)

			// Resumed without --journal-sync batch: the journal reads
			// its reservations whatever this run does.
			env := testEnv()
			env.boot = "another-boot"
			if code, _, stderr := runCLIEnv(t, env, j.args()...); code != exitUndelivered {
				t.Fatalf("run after the restart: exit %d, want %d (rows in doubt)\n%s", code, exitUndelivered, stderr)
			}
			got := received(srv)
			inDoubt, restarted := 0, 0
			for _, r := range readResult(t, j.result) {
				email, status := r["email"], report.Status(r["status"])
				switch {
				case got[email] > 1:
					t.Errorf("row %s %s: %s, received %d times", r["row"], email, status, got[email])
				case got[email] == 0 && status != report.InDoubt:
					// In doubt is all a restart lets it be; anything else
					// the run must have sent.
					t.Errorf("row %s %s: never received, reads %s (%q)", r["row"], email, status, r["error"])
				case status == report.InDoubt:
					inDoubt++
					if strings.Contains(r["error"], "machine restarted") {
						restarted++
					}
				case status != report.Delivered:
					t.Errorf("row %s %s: %s (%q)", r["row"], email, status, r["error"])
				}
			}
			if restarted == 0 {
				t.Errorf("no row is in doubt because of the restart (%d in doubt)", inDoubt)
			}
			// The last reservation, the one before it still queued, and
			// each worker's message and the one it looked ahead to.
			if bound := 2*reserveBatch(workers) + 2*workers; inDoubt > bound {
				t.Errorf("%d rows in doubt after the restart, more than two reservations and the workers' messages (%d)", inDoubt, bound)
			}
			t.Logf("%d messages before the restart, %d rows in doubt after it (%d for the restart)", len(before), inDoubt, restarted)
		})
	}
}

// writeTwiceList writes a list of 2*half rows at path: users 1 to half,
// then the same addresses again under other names.
func writeTwiceList(t *testing.T, path string, half int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("Email,Name,Plan\n")
	for i := 1; i <= 2*half; i++ {
		fmt.Fprintf(&b, "%s,User %d,plan-%d\n", userEmail((i-1)%half+1), i, i%3)
	}
	writeFile(t, path, b.String())
}
