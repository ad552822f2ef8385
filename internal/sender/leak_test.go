package sender_test

import (
	"context"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/sender"
)

// openFiles counts this process's file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count file descriptors: %v", err)
	}
	return len(fds)
}

// settle waits until f() is at most want, or a few seconds have passed
// (the server's side of a closed connection ends on its own goroutine),
// and returns f's last value.
func settle(want int, f func() int) int {
	deadline := time.Now().Add(5 * time.Second)
	n := f()
	for n > want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = f()
	}
	return n
}

// TestPoolLeaksNothing sends thousands of messages over connections that
// are closed and dialled again every 25 messages (HAZARDS 37): the file
// descriptors and goroutines in use stay flat during the run and come back
// to where they started after it.
func TestPoolLeaksNothing(t *testing.T) {
	srv := startCapture(t, capture.Config{})
	const n, workers, perConn = 4000, 4, 25
	var msgs []*sender.Message
	for i := range n {
		msgs = append(msgs, testMessage(i))
	}
	fdsBefore, goBefore := openFiles(t), runtime.NumGoroutine()

	var mu sync.Mutex
	minFDs, maxFDs := 1<<30, 0
	results := 0
	cfg := sender.PoolConfig{
		Dial:             sender.Config{Addr: srv.Addr(), TLS: sender.TLSNone},
		Workers:          workers,
		MaxPerConnection: perConn,
		Done: func(r sender.Result) error {
			mu.Lock()
			defer mu.Unlock()
			if r.Status != sender.Delivered {
				t.Errorf("job %d: %s (%v)", r.Job.ID, r.Status, r.Err)
			}
			if results++; results%200 == 0 {
				fds := openFiles(t)
				minFDs, maxFDs = min(minFDs, fds), max(maxFDs, fds)
			}
			return nil
		},
	}
	jobs := make(chan *sender.Job, n)
	for i, m := range msgs {
		jobs <- &sender.Job{ID: i, Msg: m}
	}
	close(jobs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := sender.NewPool(cfg).Run(ctx, jobs); err != nil {
		t.Fatal(err)
	}
	if results != n || len(srv.Messages()) != n {
		t.Fatalf("%d results, %d messages received; want %d", results, len(srv.Messages()), n)
	}
	if conns := len(srv.Conns()); conns < n/perConn {
		t.Fatalf("%d connections, want at least %d: the test needs the churn", conns, n/perConn)
	}
	// Each connection holds a descriptor at both ends: at most 2 per worker
	// come and go during the run.
	if maxFDs-minFDs > 2*workers+2 {
		t.Errorf("open descriptors ranged from %d to %d during the run, want flat", minFDs, maxFDs)
	}
	if fds := settle(fdsBefore, func() int { return openFiles(t) }); fds > fdsBefore {
		t.Errorf("%d descriptors open after the run, %d before", fds, fdsBefore)
	}
	if g := settle(goBefore, runtime.NumGoroutine); g > goBefore {
		t.Errorf("%d goroutines after the run, %d before", g, goBefore)
	}
}
