package sender_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/bulkmail/bulkmail/internal/report"
	"github.com/bulkmail/bulkmail/internal/sender"
)

// Regression tests for the faults a code review found: a stray reply in
// the fsync-long gap between commit and the data, idle TLS connections
// closed by the server, and refusals of committed data that a crash must
// not turn into in_doubt.

func TestStrayReplyWhileCommitting(t *testing.T) {
	for _, pipe := range []bool{false, true} {
		t.Run(fmt.Sprint("pipelining=", pipe), func(t *testing.T) {
			o := faultOpts{}
			if pipe {
				o.Ext = []string{"PIPELINING"}
			}
			var s *faultServer
			o.OnCommand = func(c *fconn, verb, line string) bool {
				if verb != "DATA" || s.Count("data") != 1 {
					return false
				}
				// A 354, then a reply nobody asked for while the client is
				// busy committing; the data must never be answered by it.
				c.Reply("354 go ahead")
				c.Write("250 2.0.0 stray reply, not yours\r\n")
				if m, err := c.ReadData(); err == nil {
					c.Reply("550 5.7.1 <" + m.To[0] + "> content rejected")
				}
				c.done = true
				return true
			}
			s = startFault(t, o)
			cfg := faultPoolConfig(s)
			cfg.Commit = func(*sender.Job, int) error { time.Sleep(100 * time.Millisecond); return nil }
			res, err := runJobs(t, cfg, testMessages(2), nil)
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.Status != sender.Delivered || r.Attempts != 2 || !strings.Contains(r.Delivery.Data.Text, "<user0@example.org>") {
				t.Errorf("job 0: %s after %d attempts, data reply %v; want delivered at the second attempt with its own reply", r.Status, r.Attempts, r.Delivery.Data)
			}
		})
	}
}

func TestIdleCloseCostsNoAttempt(t *testing.T) {
	for _, withTLS := range []bool{false, true} {
		t.Run(fmt.Sprint("tls=", withTLS), func(t *testing.T) {
			o := faultOpts{OnData: func(c *fconn, m *fmsg) bool {
				c.Accept(m)
				c.Reply(queuedReply(m))
				c.Close() // the server ends every connection after a message
				return true
			}}
			s := startFaultTLS(t, o, withTLS)
			cfg := faultPoolConfig(s)
			cfg.Retries = 0 // an attempt lost to the closed connection would fail the job
			cfg.MaxErrors = 2
			if withTLS {
				_, roots := testCert()
				cfg.Dial.TLS = sender.TLSRequired
				cfg.Dial.TLSConfig = &tls.Config{RootCAs: roots}
			}
			const n = 6
			// One job at a time, each after the previous connection was closed.
			res, err := runJobs(t, cfg, testMessages(n), func(int) { time.Sleep(50 * time.Millisecond) })
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			for i := 0; i < n; i++ {
				if r := res[i]; r.Status != sender.Delivered || r.Attempts != 1 {
					t.Errorf("job %d: %s after %d attempts (%v), want delivered at the first", i, r.Status, r.Attempts, r.Err)
				}
			}
		})
	}
}

func TestRefusedDataIsRecordedBeforeTheRetry(t *testing.T) {
	var s *faultServer
	o := faultOpts{OnData: func(c *fconn, m *fmsg) bool {
		if s.Count("data") == 1 {
			c.Reply("451 4.3.0 <" + m.To[0] + "> try again later")
			s.Signal()
			return true
		}
		return false
	}}
	s = startFault(t, o)
	path := filepath.Join(t.TempDir(), "journal")
	j, err := report.OpenJournal(path, report.JobID{List: "list"}, report.OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	record := func(r sender.Result) error {
		return j.Record(report.Outcome{Row: r.Job.ID + 1, Email: r.Job.Msg.To[0], Status: report.Status(r.Status), Attempts: r.Attempts})
	}
	cfg := faultPoolConfig(s)
	cfg.RetryWait, cfg.RetryMaxWait = time.Second, time.Second
	cfg.Commit = func(jb *sender.Job, a int) error { return j.Committing(jb.ID+1, a, jb.Msg.To[0], "") }
	cfg.Retrying = record
	cfg.Done = record
	jobs := make(chan *sender.Job, 1)
	jobs <- &sender.Job{ID: 0, Msg: testMessage(0)}
	close(jobs)
	done := make(chan error, 1)
	go func() { done <- sender.NewPool(cfg).Run(context.Background(), jobs) }()
	s.WaitSignal(t)
	// What a run started after a kill -9 during the retry wait would see.
	deadline := time.Now().Add(5 * time.Second)
	var got report.Outcome
	for time.Now().Before(deadline) {
		rj, err := report.ReadJournal(path)
		if err != nil {
			t.Fatal(err)
		}
		got, _ = rj.Last(1)
		rj.Close()
		if got.Status == report.Deferred {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got.Status != report.Deferred {
		t.Errorf("during the retry wait the journal says %q (%s), want deferred", got.Status, got.Error)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	final, _ := j.Last(1)
	if final.Status != report.Delivered {
		t.Errorf("after the retry: %q, want delivered", final.Status)
	}
}

func TestAuthStopStillReportsWaitingRetries(t *testing.T) {
	var s *faultServer
	o := faultOpts{Users: map[string]string{"u": "p"}}
	o.OnCommand = func(c *fconn, verb, line string) bool {
		if verb == "AUTH" && c.ID >= 2 {
			c.Reply("535 5.7.8 authentication credentials invalid")
			return true
		}
		return false
	}
	o.OnData = func(c *fconn, m *fmsg) bool {
		if s.Count("data") == 1 {
			c.Reply("451 4.3.0 <" + m.To[0] + "> try again later")
			c.Close()
			return true
		}
		return false
	}
	s = startFault(t, o)
	cfg := faultPoolConfig(s)
	cfg.Dial.Auth = &sender.Auth{Username: "u", Password: "p"}
	res, err := runJobs(t, cfg, testMessages(1), nil)
	if _, ok := err.(*sender.AuthError); !ok {
		t.Fatalf("Run: %v, want an *AuthError", err)
	}
	r, ok := res[0]
	if !ok || r.Status != sender.Deferred || r.Delivery.Data.Code != 451 {
		t.Errorf("job 0: reported %v, %s with data reply %v; want deferred with its 451", ok, r.Status, r.Delivery.Data)
	}
}

func TestRateLimitRepliesSlowThePoolDown(t *testing.T) {
	var once sync.Once
	o := faultOpts{OnCommand: on("RCPT", func(c *fconn, line string) bool {
		first := false
		if rcptTo(line) == "user0@example.org" {
			once.Do(func() { first = true })
		}
		return first
	}, func(c *fconn, line string) {
		c.Reply("450 4.7.1 <" + rcptTo(line) + "> too many messages, slow down")
	})}
	s := startFault(t, o)
	cfg := faultPoolConfig(s)
	cfg.Workers = 2
	cfg.Limiter = rate.NewLimiter(rate.Inf, 1)
	var logged []string
	var mu sync.Mutex
	cfg.Logf = func(f string, a ...any) { mu.Lock(); logged = append(logged, fmt.Sprintf(f, a...)); mu.Unlock() }
	res, err := runJobs(t, cfg, testMessages(3), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; r.Status != sender.Delivered || r.Attempts != 2 {
		t.Errorf("job 0: %s after %d attempts, want delivered after 2", r.Status, r.Attempts)
	}
	if got := cfg.Limiter.Limit(); got != 2 {
		t.Errorf("rate after a 4.7.1: %v, want 2 (one a second per connection)", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(logged) == 0 || !strings.Contains(logged[0], "slow down") {
		t.Errorf("operator not told: %q", logged)
	}
}

func TestCredentialsWithoutAuthStopTheRunAtOnce(t *testing.T) {
	s := startFault(t, faultOpts{}) // offers no AUTH
	cfg := faultPoolConfig(s)
	cfg.Dial.Auth = &sender.Auth{Username: "u", Password: "hunter2"}
	cfg.MaxErrors = 10
	res, err := runJobs(t, cfg, testMessages(2), nil)
	if !errors.Is(err, sender.ErrAuthUnavailable) || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Run: %v, want ErrAuthUnavailable without the password", err)
	}
	if len(res) != 0 {
		t.Errorf("%d jobs reported, want none (nothing was attempted)", len(res))
	}
	if n := len(s.Conns()); n != 1 {
		t.Errorf("%d connections, want 1: a setup error is not retried", n)
	}
}

func TestXOAUTH2(t *testing.T) {
	s := startFault(t, faultOpts{Users: map[string]string{"ann@example.com": "ya29.token"}})
	tests := []struct {
		name, token string
		wantErr     bool
	}{
		{"good token", "ya29.token", false},
		{"expired token", "ya29.old", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var trace strings.Builder
			cfg := faultConfig(s)
			cfg.Auth = &sender.Auth{Username: "ann@example.com", Token: tt.token}
			cfg.Trace = sender.NewTrace(&traceWriter{b: &trace})
			c, err := sender.Dial(context.Background(), cfg, 1)
			if tt.wantErr {
				var ae *sender.AuthError
				if !errors.As(err, &ae) || ae.Reply.Code != 535 || ae.Mechanism != "XOAUTH2" {
					t.Fatalf("Dial: %v, want an XOAUTH2 *AuthError with the 535", err)
				}
			} else {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				c.Quit()
			}
			if strings.Contains(trace.String(), tt.token) || !strings.Contains(trace.String(), "AUTH XOAUTH2 [redacted]") {
				t.Errorf("trace leaks the token or lacks the redacted AUTH:\n%s", trace.String())
			}
		})
	}
}

// traceWriter lets a strings.Builder take concurrent trace lines.
type traceWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *traceWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func TestIsPartial(t *testing.T) {
	pe := &sender.PartialError{Refused: []sender.RefusedRecipient{{Index: 1, Addr: "boss@example.org", Reply: sender.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}}}}
	for _, tt := range []struct {
		text string
		want bool
	}{
		{pe.Error(), true},
		{pe.Error() + "; warning: short row padded", true},
		{"[recipient 2 refused: 451 4.3.0 try later]", true},                   // as written before the address was named
		{"warning: list recipient 1 refused: march.csv row 3 is short", false}, // a note quoting list data
		{`not sent to "recipient 2 refused: see below"@example.org: on the suppression list`, false},
		{"", false},
		{"warning: short row padded", false},
		{"not sent to boss@example.org: on the suppression list", false},
		{"the recipient refused: nothing", false},
		{"recipient x refused: 550", false},
	} {
		if got := sender.IsPartial(tt.text); got != tt.want {
			t.Errorf("IsPartial(%q) = %v, want %v", tt.text, got, tt.want)
		}
	}
}
