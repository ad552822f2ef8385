package bulkmail_test

// The benchmarks of issue 6. Each reports messages per second
// ("msgs/s") beside a baseline measured in the same run:
//
//	go test -run '^$' -bench . -benchtime 2000x
//
// BenchmarkMerge        rendering only, from CSV and from XLSX
// BenchmarkSend         the pool against the capture server on loopback,
//                       1, 4 and 16 workers, beside "naive": a lock-step
//                       client of our own with the same number of
//                       connections (MAIL, RCPT, DATA, body, RSET, each
//                       waiting for its reply, as smtp-source does)
// BenchmarkSendLatency  the same through internal/benchproxy, 10 ms each
//                       way, 16 workers: naive, pipelining off, on, and
//                       CHUNKING (BDAT)
// BenchmarkFullSend     the bulkmail binary: read, merge, send, journal
//                       (fsync), result file; 100,000 rows by default,
//                       10,000 with -short, or $BULKMAIL_BENCH_ROWS
//
// The capture server runs in this process and competes for the same
// cores as the sender, as smtp-sink does in scripts/bench-vs-smtp-source.sh.
// It keeps a small record of every message; its Data hook drops the
// message bytes so that memory stays flat for large b.N.
//
// With $BULKMAIL_BENCH_CPUPROFILE=FILE, BenchmarkFullSend also builds a
// second binary that writes a CPU profile of the bulkmail process (not of
// this test process) to FILE, and runs it once after the timed runs:
//
//	BULKMAIL_BENCH_CPUPROFILE=/tmp/send.pprof go test -run '^$' -bench FullSend/result=xlsx -benchtime 1x
//	go tool pprof -top /tmp/send.pprof

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"net"
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

	"github.com/xuri/excelize/v2"

	"github.com/bulkmail/bulkmail/internal/benchproxy"
	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/merge"
	"github.com/bulkmail/bulkmail/internal/sender"
)

// benchTemplate renders to about 1 KB: five headers from the list, a
// body of about 800 octets with seven fields, plus the MIME headers,
// Date and Message-ID the package adds.
const benchTemplate = `From: Example Co Billing <billing@example.com>
To: {{.first_name}} {{.last_name}} <{{.email}}>
Reply-To: support@example.com
Subject: Your {{.plan}} plan renews on {{.renewal_date}}
X-Campaign: renewal-2026-{{.plan}}

Dear {{.first_name}} {{.last_name}},

thank you for being a customer of Example Co. This is a reminder that the
{{.plan}} plan of account {{.account_id}} ({{.company}}) renews
automatically on {{.renewal_date}}. There is nothing you need to do: the
card on file will be charged as usual and the invoice will be sent to this
address.

If you would like to change your plan, add seats, or update the billing
details, sign in to the dashboard and open "Billing". Changes made before
the renewal date apply to the next period; changes made afterwards apply
from the next invoice on.

Our support team in {{.city}} is happy to help with any question: simply
reply to this message, or call us on weekdays between 09:00 and 17:00.

Kind regards,
The Example Co billing team

--
Example Co, 1 Example Street, 12345 Example City
You receive this message because you hold an Example Co account.
`

var benchHeader = []string{"email", "first_name", "last_name", "company", "city", "plan", "account_id", "renewal_date"}

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "José", "Zoë"}
	lastNames  = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "García", "Müller"}
	cities     = []string{"London", "New York", "Zürich", "Amsterdam", "Sevilla", "Berlin", "Paris", "Tokyo"}
	plans      = []string{"basic", "pro", "team", "enterprise"}
)

// benchRow is row i (0-based) of a generated list: every address is
// distinct, some names are non-ASCII.
func benchRow(i int) []string {
	return []string{
		fmt.Sprintf("user%07d@example.org", i),
		firstNames[i%len(firstNames)],
		lastNames[(i/len(firstNames))%len(lastNames)],
		fmt.Sprintf("Customer %d Ltd", i%997),
		cities[i%len(cities)],
		plans[i%len(plans)],
		fmt.Sprintf("AC-%08d", i*7919%100000000),
		fmt.Sprintf("2026-%02d-%02d", i%12+1, i%28+1),
	}
}

func writeCSVList(tb testing.TB, path string, rows int) {
	tb.Helper()
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w := csv.NewWriter(bw)
	w.Write(benchHeader)
	for i := range rows {
		w.Write(benchRow(i))
	}
	w.Flush()
	if err := w.Error(); err != nil {
		tb.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

func writeXLSXList(tb testing.TB, path string, rows int) {
	tb.Helper()
	f := excelize.NewFile()
	defer f.Close()
	sw, err := f.NewStreamWriter("Sheet1")
	if err != nil {
		tb.Fatal(err)
	}
	cells := make([]any, len(benchHeader))
	for i, h := range benchHeader {
		cells[i] = h
	}
	if err := sw.SetRow("A1", cells); err != nil {
		tb.Fatal(err)
	}
	for i := range rows {
		for k, v := range benchRow(i) {
			cells[k] = v
		}
		if err := sw.SetRow("A"+strconv.Itoa(i+2), cells); err != nil {
			tb.Fatal(err)
		}
	}
	if err := sw.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.SaveAs(path); err != nil {
		tb.Fatal(err)
	}
}

func writeTemplate(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "renewal.tmpl")
	if err := os.WriteFile(path, []byte(benchTemplate), 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

func parseBenchTemplate(tb testing.TB, dir, listPath string) *merge.Template {
	tb.Helper()
	t, err := merge.ParseTemplate(writeTemplate(tb, dir), merge.TemplateOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	if err := t.Bind(listPath, benchHeader); err != nil {
		tb.Fatal(err)
	}
	return t
}

// reportRate reports n messages over the benchmark's elapsed time.
func reportRate(b *testing.B, n int) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(n)/s, "msgs/s")
	}
}

// BenchmarkMerge reads a list and renders every row: OpenList, Next and
// Render, with the list written once per b.N outside the timer. The list
// has b.N rows (at most 100,000; beyond that it is read again), so the
// cost of opening it is spread as it is in a real run.
func BenchmarkMerge(b *testing.B) {
	for _, kind := range []string{"csv", "xlsx"} {
		b.Run(kind, func(b *testing.B) {
			dir := b.TempDir()
			path := filepath.Join(dir, "list."+kind)
			rows := min(b.N, 100_000)
			if kind == "csv" {
				writeCSVList(b, path, rows)
			} else {
				writeXLSXList(b, path, rows)
			}
			tmpl := parseBenchTemplate(b, dir, path)
			b.ReportAllocs()
			b.ResetTimer()

			var octets int64
			var list *merge.List
			for done := 0; done < b.N; {
				if list == nil {
					var err error
					if list, err = merge.OpenList(path, merge.ListOptions{}); err != nil {
						b.Fatal(err)
					}
				}
				rec, err := list.Next()
				if err == io.EOF {
					list.Close()
					list = nil
					continue
				}
				if err != nil {
					b.Fatal(err)
				}
				m, err := tmpl.Render(rec)
				if err != nil {
					b.Fatal(err)
				}
				octets += int64(len(m.Data))
				done++
			}
			if list != nil {
				list.Close()
			}
			b.StopTimer()
			reportRate(b, b.N)
			b.ReportMetric(float64(octets)/float64(b.N), "msg-bytes")
		})
	}
}

// benchMessages renders n distinct messages of about 1 KB from the bench
// template, for the send benchmarks to cycle through.
func benchMessages(b *testing.B, n int) []*sender.Message {
	b.Helper()
	dir := b.TempDir()
	path := filepath.Join(dir, "list.csv")
	writeCSVList(b, path, n)
	tmpl := parseBenchTemplate(b, dir, path)
	list, err := merge.OpenList(path, merge.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer list.Close()
	var out []*sender.Message
	for {
		rec, err := list.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			b.Fatal(err)
		}
		m, err := tmpl.Render(rec)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, &sender.Message{From: m.From, To: m.To, Data: m.Data, UTF8: m.UTF8})
	}
}

// dropData is a capture Data hook that accepts a message and lets go of
// its bytes, so the server's memory stays flat for large b.N (Size still
// counts them).
func dropData(m *capture.Message) *capture.Reply {
	m.Data = nil
	return nil
}

// startBenchCapture runs a capture server that keeps no message bytes.
func startBenchCapture(b *testing.B) *capture.Server {
	b.Helper()
	srv, err := capture.Start(capture.Config{Data: dropData})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	return srv
}

// runPool sends n messages, cycling through msgs, with a fresh pool, and
// fails the benchmark unless every one is delivered.
func runPool(b *testing.B, cfg sender.PoolConfig, msgs []*sender.Message, n int) {
	b.Helper()
	var delivered atomic.Int64
	var firstErr atomic.Value
	cfg.Done = func(r sender.Result) error {
		if r.Status == sender.Delivered {
			delivered.Add(1)
		} else {
			firstErr.CompareAndSwap(nil, fmt.Sprintf("job %d: %s: %v", r.Job.ID, r.Status, r.Err))
		}
		return nil
	}
	jobs := make(chan *sender.Job, cfg.Workers)
	go func() {
		defer close(jobs)
		for i := range n {
			jobs <- &sender.Job{ID: i, Msg: msgs[i%len(msgs)]}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := sender.NewPool(cfg).Run(ctx, jobs); err != nil {
		b.Fatal(err)
	}
	if got := delivered.Load(); got != int64(n) {
		b.Fatalf("delivered %d of %d; first failure: %v", got, n, firstErr.Load())
	}
}

// naiveSend is the baseline: a minimal lock-step SMTP client on a raw
// socket, the way smtp-source talks. Each of workers connections says
// EHLO once, then for every message sends MAIL, RCPT, DATA, the body and
// (between messages) RSET, each waiting for its reply. bodies are
// already dot-stuffed and end with the final dot.
func naiveSend(b *testing.B, addr string, workers int, msgs []*sender.Message, bodies [][]byte, n int) {
	b.Helper()
	var next atomic.Int64
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { errs <- naiveWorker(addr, msgs, bodies, n, &next) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			b.Fatal(err)
		}
	}
}

func naiveWorker(addr string, msgs []*sender.Message, bodies [][]byte, n int, next *atomic.Int64) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Minute))
	r := bufio.NewReader(conn)
	w := bufio.NewWriter(conn)
	// reply reads one (possibly multi-line) reply and checks its code.
	reply := func(want string) error {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return err
			}
			if len(line) < 4 {
				return fmt.Errorf("naive: short reply %q", line)
			}
			if line[3] == '-' {
				continue
			}
			if !strings.HasPrefix(line, want) {
				return fmt.Errorf("naive: got %q, want %s", strings.TrimSpace(line), want)
			}
			return nil
		}
	}
	cmd := func(want, format string, args ...any) error {
		fmt.Fprintf(w, format+"\r\n", args...)
		if err := w.Flush(); err != nil {
			return err
		}
		return reply(want)
	}
	if err := reply("220"); err != nil {
		return err
	}
	if err := cmd("250", "EHLO localhost"); err != nil {
		return err
	}
	for sent := 0; ; sent++ {
		i := int(next.Add(1)) - 1
		if i >= n {
			break
		}
		m := msgs[i%len(msgs)]
		if sent > 0 {
			if err := cmd("250", "RSET"); err != nil {
				return err
			}
		}
		if err := cmd("250", "MAIL FROM:<%s>", m.From); err != nil {
			return err
		}
		if err := cmd("250", "RCPT TO:<%s>", m.To[0]); err != nil {
			return err
		}
		if err := cmd("354", "DATA"); err != nil {
			return err
		}
		w.Write(bodies[i%len(bodies)])
		if err := w.Flush(); err != nil {
			return err
		}
		if err := reply("250"); err != nil {
			return err
		}
	}
	return cmd("221", "QUIT")
}

// stuffed returns each message's data as it goes after DATA.
func stuffed(msgs []*sender.Message) [][]byte {
	out := make([][]byte, len(msgs))
	for i, m := range msgs {
		var buf bytes.Buffer
		for line := range bytes.Lines(m.Data) {
			if line[0] == '.' {
				buf.WriteByte('.')
			}
			buf.Write(line)
		}
		buf.WriteString(".\r\n")
		out[i] = buf.Bytes()
	}
	return out
}

// BenchmarkSend delivers b.N messages of about 1 KB to the capture server
// on loopback: with the pool, and with the naive lock-step baseline over
// the same number of connections. Dialling is inside the timer.
func BenchmarkSend(b *testing.B) {
	msgs := benchMessages(b, 1000)
	bodies := stuffed(msgs)
	for _, workers := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.Run("pool", func(b *testing.B) {
				srv := startBenchCapture(b)
				timePool(b, sender.PoolConfig{Dial: sender.Config{Addr: srv.Addr(), TLS: sender.TLSNone}, Workers: workers}, msgs)
			})
			b.Run("naive", func(b *testing.B) {
				timeNaive(b, startBenchCapture(b).Addr(), workers, msgs, bodies)
			})
		})
	}
}

// BenchmarkSendLatency is BenchmarkSend with 16 workers through a proxy
// that delays each direction by 10 ms (20 ms round trip). The capture
// server (go-smtp) offers PIPELINING and CHUNKING; the cases switch them
// off in the client. One message per round trip per connection would be
// 16/0.020 = 800 msgs/s; naive lock-step pays five round trips.
func BenchmarkSendLatency(b *testing.B) {
	const (
		workers = 16
		delay   = 10 * time.Millisecond
	)
	msgs := benchMessages(b, 1000)
	bodies := stuffed(msgs)
	cases := []struct {
		name                     string
		noPipelining, noChunking bool
	}{
		{"pipelining=off", true, true},
		{"pipelining=on", false, true},
		{"chunking", false, false},
	}
	startProxy := func(b *testing.B) *benchproxy.Proxy {
		srv := startBenchCapture(b)
		p, err := benchproxy.Start("", srv.Addr(), delay)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		return p
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			p := startProxy(b)
			timePool(b, sender.PoolConfig{
				Dial:    sender.Config{Addr: p.Addr(), TLS: sender.TLSNone, NoPipelining: c.noPipelining, NoChunking: c.noChunking},
				Workers: workers,
			}, msgs)
		})
	}
	b.Run("naive", func(b *testing.B) {
		timeNaive(b, startProxy(b).Addr(), workers, msgs, bodies)
	})
}

// timePool times b.N messages through a pool configured by cfg.
func timePool(b *testing.B, cfg sender.PoolConfig, msgs []*sender.Message) {
	b.ReportAllocs()
	b.ResetTimer()
	runPool(b, cfg, msgs, b.N)
	b.StopTimer()
	reportRate(b, b.N)
}

// timeNaive times b.N messages sent the naive way (see naiveSend) to addr.
func timeNaive(b *testing.B, addr string, workers int, msgs []*sender.Message, bodies [][]byte) {
	b.ReportAllocs()
	b.ResetTimer()
	naiveSend(b, addr, workers, msgs, bodies, b.N)
	b.StopTimer()
	reportRate(b, b.N)
}

// benchRows is the size of BenchmarkFullSend's list.
func benchRows(b *testing.B) int {
	if s := os.Getenv("BULKMAIL_BENCH_ROWS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("BULKMAIL_BENCH_ROWS=%q: want a positive number", s)
		}
		return n
	}
	if testing.Short() {
		return 10_000
	}
	return 100_000
}

// buildBulkmail builds cmd/bulkmail into dir. With profile set, the
// binary writes a CPU profile of itself to $BULKMAIL_CPUPROFILE: an
// overlay (go build -overlay, nothing in the tree changes) adds a file
// that starts the profile and routes main.go's os.Exit through one that
// stops it first.
func buildBulkmail(b *testing.B, dir string, profile bool) string {
	b.Helper()
	bin := filepath.Join(dir, "bulkmail")
	if profile {
		bin += "-profiled"
	}
	args := []string{"build", "-o", bin}
	if profile {
		mainSrc, err := os.ReadFile(filepath.Join("cmd", "bulkmail", "main.go"))
		if err != nil {
			b.Fatal(err)
		}
		patched := bytes.ReplaceAll(mainSrc, []byte("os.Exit("), []byte("benchExit("))
		const hook = `package main

import (
	"os"
	"runtime/pprof"
)

func init() {
	if path := os.Getenv("BULKMAIL_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			panic(err)
		}
		pprof.StartCPUProfile(f)
	}
}

func benchExit(code int) {
	pprof.StopCPUProfile()
	os.Exit(code)
}
`
		abs, err := filepath.Abs(filepath.Join("cmd", "bulkmail"))
		if err != nil {
			b.Fatal(err)
		}
		mainCopy := filepath.Join(dir, "main.go")
		hookFile := filepath.Join(dir, "zz_benchprofile.go")
		overlay := filepath.Join(dir, "overlay.json")
		os.WriteFile(mainCopy, patched, 0o644)
		os.WriteFile(hookFile, []byte(hook), 0o644)
		js := fmt.Sprintf(`{"Replace":{%q:%q,%q:%q}}`,
			filepath.Join(abs, "main.go"), mainCopy, filepath.Join(abs, "zz_benchprofile.go"), hookFile)
		if err := os.WriteFile(overlay, []byte(js), 0o644); err != nil {
			b.Fatal(err)
		}
		args = append(args, "-overlay", overlay)
	}
	args = append(args, "./cmd/bulkmail")
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		b.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bin
}

// BenchmarkFullSend runs the bulkmail binary over a generated list against
// an in-process capture server: reading, merging, sending with 16
// workers, the journal (each message's records fsynced, or with
// --journal-sync batch a reservation a batch) and the result file. Each
// iteration is a fresh run (new result and journal). The binary is built
// once; the list is written once; neither is timed.
func BenchmarkFullSend(b *testing.B) {
	rows := benchRows(b)
	dir := b.TempDir()
	bin := buildBulkmail(b, dir, false)
	list := filepath.Join(dir, "list.csv")
	writeCSVList(b, list, rows)
	tmpl := writeTemplate(b, dir)
	profile := os.Getenv("BULKMAIL_BENCH_CPUPROFILE")

	// send runs bin once and returns the CPU time and peak RSS of the
	// bulkmail process (the capture server's share is in this process).
	send := func(b *testing.B, bin, result, sync string, env ...string) (cpu time.Duration, maxRSSKB int64) {
		srv, err := capture.Start(capture.Config{Data: dropData})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		cmd := exec.Command(bin, "send",
			"--smtp", "smtp://"+srv.Addr(),
			"--list", list, "--template", tmpl,
			"--result", result, "--workers", "16", "--journal-sync", sync)
		cmd.Env = append(os.Environ(), env...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("bulkmail send: %v\n%s", err, stderr.Bytes())
		}
		if got := len(srv.Messages()); got != rows {
			b.Fatalf("capture server got %d messages, want %d\n%s", got, rows, stderr.Bytes())
		}
		ps := cmd.ProcessState
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			// Kilobytes on Linux. The child starts as a vfork of this
			// process, so its maximum counts this process's resident
			// memory at the fork: it reads too high once this process has
			// grown (the second sub-benchmark). scripts/memcheck.sh runs
			// the binary from a shell and is the figure to quote.
			maxRSSKB = int64(ru.Maxrss)
		}
		return ps.UserTime() + ps.SystemTime(), maxRSSKB
	}
	for _, run := range []struct{ sync, ext string }{{"message", "xlsx"}, {"message", "csv"}, {"batch", "xlsx"}} {
		sync, ext := run.sync, run.ext
		b.Run("journal-sync="+sync+"/result="+ext, func(b *testing.B) {
			b.ReportAllocs() // of this process only: the capture server
			b.ResetTimer()
			var cpu time.Duration
			var peak int64
			for i := range b.N {
				c, rss := send(b, bin, filepath.Join(b.TempDir(), fmt.Sprintf("results-%d.%s", i, ext)), sync)
				cpu += c
				peak = max(peak, rss)
			}
			b.StopTimer()
			reportRate(b, b.N*rows)
			// What the bulkmail process itself used: CPU per message (user
			// plus system, all cores) and its peak resident memory.
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*rows), "bulkmail-cpu-us/msg")
			b.ReportMetric(float64(peak)/1024, "bulkmail-peak-MB")
			if profile != "" && ext == "xlsx" && sync == "message" {
				pbin := buildBulkmail(b, b.TempDir(), true)
				send(b, pbin, filepath.Join(b.TempDir(), "results-profiled.xlsx"), sync, "BULKMAIL_CPUPROFILE="+profile)
				b.Logf("CPU profile of one bulkmail send written to %s", profile)
			}
		})
	}
}
