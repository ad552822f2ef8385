package main

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// C5 (a check, expected to pass): kill -9 / SIGTERM at random points of
// runs that alternate a plain resume and the cron line --only
// deferred,failed, on a list whose second half repeats the first and a
// server that 451s a third of the addresses the first time. Every address
// gets its message from one row, under one Message-ID.
func TestClaimsKill9CronWithDuplicates(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	h := &harness{bin: buildBulkmail(t)}
	for _, seed := range []uint64{11, 12, 13, 14} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			const half = 60
			rng := rand.New(rand.NewPCG(seed, 0xc1a1))
			var mu sync.Mutex
			refused := map[string]bool{}
			srv := startCapture(t, capture.Config{KeepInMemory: true, Rcpt: func(to string) *capture.Reply {
				mu.Lock()
				defer mu.Unlock()
				var i int
				fmt.Sscanf(to, "user%d@", &i)
				if i%3 == 0 && !refused[to] {
					refused[to] = true
					return &capture.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
				}
				return nil
			}})
			j := newJob(t, srv, 0)
			writeTwiceList(t, j.list, half)
			j.workers = 1 + rng.IntN(4)
			for run := 0; run < 5; run++ {
				extra := []string{"--retries", "0"}
				if run%2 == 1 {
					extra = append(extra, "--only", "deferred,failed")
				}
				target := len(srv.Messages()) + 1 + rng.IntN(half/3)
				p := h.start(t, j.args(extra...)...)
				if !waitUntil(t, "messages", p, func() bool { return len(srv.Messages()) >= target }) {
					p.wait(t, 30*time.Second)
					continue
				}
				if rng.IntN(2) == 0 {
					p.kill(t)
				} else {
					p.cmd.Process.Signal(syscall.SIGTERM)
					p.wait(t, 30*time.Second)
				}
			}
			for _, extra := range [][]string{{"--only", "deferred,failed"}, nil, {"--resend-in-doubt"}} {
				if code, stderr := h.run(t, j.args(extra...)...); code != exitOK && code != exitUndelivered {
					t.Fatalf("final run %v: exit %d\n%s", extra, code, stderr)
				}
			}
			ids := receivedMessageIDs(t, srv)
			for i := 1; i <= half; i++ {
				e := userEmail(i)
				got := ids[e]
				distinct := map[string]bool{}
				for _, id := range got {
					distinct[id] = true
				}
				if len(got) == 0 || len(distinct) != 1 {
					t.Errorf("%s: received %d copies, Message-IDs %v", e, len(got), got)
				}
			}
			for _, r := range readResult(t, j.result) {
				if r["status"] != "delivered" && r["status"] != "skipped" {
					t.Logf("row %s %s %s %q", r["row"], r["email"], r["status"], r["error"])
				}
			}
		})
	}
}
