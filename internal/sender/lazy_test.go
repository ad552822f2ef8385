package sender_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/sender"
)

// TestLazyResultsAreFlushed checks the contract of Result.Lazy that lets a
// journal write one fsync per message instead of two: a result reported
// Lazy is made durable, on its worker, by the next commit, a result not
// reported Lazy, or a Flush, and that worker reads nothing from its server
// before then (no round trip while an outcome waits); none is left when
// the run ends. Refused recipients break the look-ahead chain in the
// middle, and a run stopped right after a lazy result ends its chain
// without a commit: that is where a missing Flush would hide.
func TestLazyResultsAreFlushed(t *testing.T) {
	for _, tc := range []struct {
		name       string
		pipelining bool
		chunking   bool
		stopAfter  int // cancel the run at the first lazy result after this many
	}{
		{"pipelining with DATA", true, false, 0},
		{"pipelining with BDAT", true, true, 0},
		{"lock-step", false, false, 0},
		{"stopped after a lazy result", true, false, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startCapture(t, capture.Config{Rcpt: func(to string) *capture.Reply {
				if strings.HasSuffix(strings.TrimSuffix(to, "@example.org"), "3") {
					return &capture.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"}
				}
				return nil
			}})
			const n = 400
			var msgs []*sender.Message
			for i := range n {
				msgs = append(msgs, testMessage(i))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			// Events in the order the hooks saw them. A commit is put on its
			// connection afterwards, from the job's result: every job here
			// has one attempt.
			type event struct {
				kind string // commit, done, flush, read
				job  int
				conn int
				lazy bool
			}
			var mu sync.Mutex
			var events []event
			results := map[int]sender.Result{}
			stopped := false
			// Every reply the client reads is traced as "TIME cN < REPLY".
			trace := sender.NewTrace(writerFunc(func(line string) {
				f := strings.Fields(line)
				var conn int
				if len(f) >= 3 && f[2] == "<" {
					if _, err := fmt.Sscanf(f[1], "c%d", &conn); err == nil {
						mu.Lock()
						events = append(events, event{kind: "read", conn: conn})
						mu.Unlock()
					}
				}
			}))
			cfg := sender.PoolConfig{
				Dial: sender.Config{Addr: srv.Addr(), TLS: sender.TLSNone, Trace: trace,
					NoPipelining: !tc.pipelining, NoChunking: !tc.chunking},
				Workers: 4,
				Commit: func(j *sender.Job, _ int) error {
					mu.Lock()
					defer mu.Unlock()
					events = append(events, event{kind: "commit", job: j.ID})
					return nil
				},
				Flush: func(conn int) error {
					mu.Lock()
					defer mu.Unlock()
					events = append(events, event{kind: "flush", conn: conn})
					return nil
				},
				Done: func(r sender.Result) error {
					mu.Lock()
					defer mu.Unlock()
					events = append(events, event{kind: "done", job: r.Job.ID, conn: r.Conn, lazy: r.Lazy})
					results[r.Job.ID] = r
					if tc.stopAfter > 0 && len(results) >= tc.stopAfter && r.Lazy && !stopped {
						stopped = true
						cancel()
					}
					return nil
				},
			}
			// All jobs queued up front, so that a worker always finds the
			// next one ready to send ahead.
			jobs := make(chan *sender.Job, n)
			for i, m := range msgs {
				jobs <- &sender.Job{ID: i, Msg: m}
			}
			close(jobs)
			err := sender.NewPool(cfg).Run(ctx, jobs)
			if tc.stopAfter == 0 && err != nil {
				t.Fatal(err)
			}

			// The journal's model, per connection: what was reported Lazy
			// and is not durable yet.
			unflushed := map[int]int{}
			lazy := 0
			for _, e := range events {
				switch e.kind {
				case "commit":
					if r, ok := results[e.job]; ok {
						delete(unflushed, r.Conn)
					}
				case "flush":
					delete(unflushed, e.conn)
				case "read":
					if job, ok := unflushed[e.conn]; ok {
						t.Errorf("conn %d waited for its server while the lazy result of job %d was not durable", e.conn, job)
						delete(unflushed, e.conn) // one report per lapse
					}
				case "done":
					delete(unflushed, e.conn) // a result not lazy is durable, and all before it
					if e.lazy {
						lazy++
						unflushed[e.conn] = e.job
					}
				}
			}
			for conn, job := range unflushed {
				t.Errorf("conn %d: the lazy result of job %d was never made durable", conn, job)
			}

			if tc.stopAfter > 0 {
				if !stopped {
					t.Fatal("no lazy result to stop after")
				}
				return
			}
			if len(results) != n {
				t.Fatalf("%d results, want %d", len(results), n)
			}
			for i := range n {
				want := sender.Delivered
				if i%10 == 3 {
					want = sender.Rejected
				}
				if got := results[i].Status; got != want {
					t.Errorf("job %d: %s, want %s", i, got, want)
				}
			}
			// Look-ahead needs PIPELINING; with it most results ride on
			// the next commit, without it none may.
			switch {
			case tc.pipelining && lazy < n/2:
				t.Errorf("%d of %d results lazy with pipelining, want most", lazy, n)
			case !tc.pipelining && lazy > 0:
				t.Errorf("%d results lazy without pipelining, want none", lazy)
			}
		})
	}
}

// writerFunc is an io.Writer that hands each line written to fn.
type writerFunc func(line string)

func (f writerFunc) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSuffix(string(p), "\n"), "\n") {
		f(line)
	}
	return len(p), nil
}
