package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/capture"
)

// review2: a row deferred at RCPT waits for its retry when the run is
// interrupted (the pool's drain records it). It reads deferred with its
// one attempt, the run exits interrupted, and --only deferred sends it
// once, counting the attempts across runs.
func TestReview2RcptDeferredInterruptedThenOnlyDeferred(t *testing.T) {
	dir := t.TempDir()
	var greylist atomic.Bool
	greylist.Store(true)
	srv := startCapture(t, capture.Config{Rcpt: func(to string) *capture.Reply {
		if greylist.Load() && strings.HasPrefix(to, "user2@") {
			return &capture.Reply{Code: 450, Enhanced: "4.2.0", Text: "greylisted"}
		}
		return nil
	}})
	list := writeList(t, dir, 3)
	tmpl := writeFile(t, filepath.Join(dir, "t.tmpl"), testTemplate)
	result := filepath.Join(dir, "r.csv")
	args := sendArgs(srv, list, tmpl, result, "--workers", "1", "--retry-wait", "1h", "--retry-max-wait", "1h")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var stderr bytes.Buffer
	go func() { done <- runWith(ctx, args, &bytes.Buffer{}, &stderr, testEnv()) }()
	deadline := time.Now().Add(20 * time.Second)
	for len(srv.Messages()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	err := <-done
	if ee, ok := err.(*exitError); !ok || ee.code != exitInterrupted {
		t.Fatalf("interrupted run: %v\n%s", err, stderr.String())
	}
	rows := readCSVResult(t, result)
	if r := rows[1]; r["status"] != "deferred" || r["attempts"] != "1" || !strings.Contains(r["error"], "run stopped before retry") {
		t.Errorf("row of user2 after the interrupted run: %v", r)
	}
	greylist.Store(false)
	code, _, se := runCLI(t, append(args, "--only", "deferred")...)
	if code != exitOK {
		t.Fatalf("--only deferred: exit %d\n%s", code, se)
	}
	rows = readCSVResult(t, result)
	if r := rows[1]; r["status"] != "delivered" || r["attempts"] != "2" {
		t.Errorf("row of user2 after --only deferred: %v", r)
	}
	for addr, n := range received(srv) {
		if n != 1 {
			t.Errorf("%s received %d times", addr, n)
		}
	}
}
