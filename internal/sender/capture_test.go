package sender_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/bulkmail/bulkmail/internal/capture"
	"github.com/bulkmail/bulkmail/internal/sender"
)

// startCapture runs a capture server on a free loopback port for one test.
func startCapture(t *testing.T, cfg capture.Config) *capture.Server {
	t.Helper()
	s, err := capture.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func testMessage(i int) *sender.Message {
	to := fmt.Sprintf("user%d@example.org", i)
	return &sender.Message{
		From: "news@example.com",
		To:   []string{to},
		Data: []byte(fmt.Sprintf("From: news@example.com\r\nTo: %s\r\nSubject: n%d\r\n\r\nhello %d\r\n.starts with a dot\r\n", to, i, i)),
	}
}

// runPool sends msgs through a pool and returns the results by job ID.
func runPool(t *testing.T, cfg sender.PoolConfig, msgs []*sender.Message) (map[int]sender.Result, error) {
	t.Helper()
	return runJobs(t, cfg, msgs, nil)
}

func TestPoolCaptureServer(t *testing.T) {
	for _, pipelining := range []bool{true, false} {
		t.Run(fmt.Sprintf("pipelining=%v", pipelining), func(t *testing.T) {
			srv := startCapture(t, capture.Config{KeepInMemory: true})
			const n = 300
			var msgs []*sender.Message
			for i := 0; i < n; i++ {
				msgs = append(msgs, testMessage(i))
			}
			cfg := sender.PoolConfig{
				Dial:    sender.Config{Addr: srv.Addr(), TLS: sender.TLSOpportunistic, NoPipelining: !pipelining},
				Workers: 4,
				Retries: 2,
			}
			results, err := runPool(t, cfg, msgs)
			if err != nil {
				t.Fatal(err)
			}
			got := srv.Messages()
			if len(got) != n {
				t.Fatalf("server received %d messages, want %d", len(got), n)
			}
			queue := map[string]string{}
			for _, m := range got {
				queue[m.To[0]] = m.QueueID
				if !strings.Contains(string(m.Data), "\r\n.starts with a dot\r\n") {
					t.Errorf("dot-stuffing not undone: %q", m.Data)
				}
			}
			for i := 0; i < n; i++ {
				r, ok := results[i]
				if !ok {
					t.Fatalf("job %d has no result", i)
				}
				if r.Status != sender.Delivered {
					t.Errorf("job %d: status %s, want delivered (%v)", i, r.Status, r.Err)
				}
				to := msgs[i].To[0]
				if want := "Ok: queued as " + queue[to]; r.Delivery.Data.Text != want {
					t.Errorf("job %d: data text %q, want %q", i, r.Delivery.Data.Text, want)
				}
				if r.Delivery.Rcpt[0].Code != 250 || r.Delivery.Data.Enhanced != "2.0.0" {
					t.Errorf("job %d: rcpt %v data %v", i, r.Delivery.Rcpt[0], r.Delivery.Data)
				}
			}
			if c := srv.MaxConcurrent(); c > 4 {
				t.Errorf("server saw %d connections at once, want at most 4", c)
			}
			conns := srv.Conns()
			if len(conns) > 4 {
				t.Errorf("server saw %d connections, want at most 4 (one per worker)", len(conns))
			}
			for _, c := range conns {
				// Every MAIL after the first on a connection follows an RSET.
				mails := 0
				for i, v := range c.Commands {
					if v != "MAIL" {
						continue
					}
					mails++
					if mails > 1 && (i == 0 || c.Commands[i-1] != "RSET") {
						t.Errorf("conn %d: MAIL at %d not preceded by RSET: %v", c.ID, i, c.Commands)
						break
					}
				}
			}
		})
	}
}
