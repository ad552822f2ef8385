package sender_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/bulkmail/bulkmail/internal/sender"
)

// quickTimeouts bounds every step at 5s: no healthy step on loopback comes
// near it, even on a loaded 2-core machine under -race (at 2s one did, and
// a message was tried twice), and a test whose server stalls by mistake
// still ends. Tests that wait for a timeout set their own, shorter one.
func quickTimeouts() sender.Timeouts {
	const d = 5 * time.Second
	return sender.Timeouts{Connect: d, Greeting: d, Command: d, Mail: d, Rcpt: d, DataInit: d, DataBlock: d, DataTerm: d}
}

// faultConfig is a plain-text connection to s with short timeouts.
func faultConfig(s *faultServer) sender.Config {
	return sender.Config{Addr: s.Addr(), TLS: sender.TLSNone, Timeouts: quickTimeouts()}
}

// faultPoolConfig is one worker with two quick retries.
func faultPoolConfig(s *faultServer) sender.PoolConfig {
	return sender.PoolConfig{
		Dial:         faultConfig(s),
		Workers:      1,
		Retries:      2,
		RetryWait:    10 * time.Millisecond,
		RetryMaxWait: 50 * time.Millisecond,
		MaxErrors:    5,
	}
}

func dialFault(t *testing.T, cfg sender.Config) *sender.Client {
	t.Helper()
	c, err := sender.Dial(context.Background(), cfg, 1)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func noCommit() error { return nil }

// runJobs is runPool with a buffered job queue, for runs that stop early
// (nothing is left blocked). With before set, it hands out one job at a
// time: job i (i > 0) only once job i-1 is settled and before(i) returned,
// so a scripted server can act while the client is idle.
func runJobs(t *testing.T, cfg sender.PoolConfig, msgs []*sender.Message, before func(i int)) (map[int]sender.Result, error) {
	t.Helper()
	var mu sync.Mutex
	results := map[int]sender.Result{}
	settled := make(chan struct{}, len(msgs))
	cfg.Done = func(r sender.Result) error {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := results[r.Job.ID]; dup {
			t.Errorf("job %d reported twice", r.Job.ID)
		}
		results[r.Job.ID] = r
		settled <- struct{}{}
		return nil
	}
	// Only a safety net: Postfix runs through runPool too.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var jobs chan *sender.Job
	if before == nil {
		jobs = make(chan *sender.Job, len(msgs))
		for i, m := range msgs {
			jobs <- &sender.Job{ID: i, Msg: m}
		}
		close(jobs)
	} else {
		jobs = make(chan *sender.Job)
		go func() {
			defer close(jobs)
			for i, m := range msgs {
				if i > 0 {
					// One job at a time: job i-1 is settled first.
					select {
					case <-settled:
					case <-ctx.Done():
						return
					}
					before(i)
				}
				select {
				case jobs <- &sender.Job{ID: i, Msg: m}:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	err := sender.NewPool(cfg).Run(ctx, jobs)
	mu.Lock()
	defer mu.Unlock()
	return results, err
}

func testMessages(n int) []*sender.Message {
	var msgs []*sender.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, testMessage(i))
	}
	return msgs
}

// checkLedger checks what the server accepted against the results: one
// copy of every delivered message, none of one rejected, deferred or
// failed, at most one of one in doubt; and that every positive reply in a
// result echoes that row's own address, so no row got another's reply.
func checkLedger(t *testing.T, s *faultServer, msgs []*sender.Message, results map[int]sender.Result) {
	t.Helper()
	accepted := map[string]int{}
	for _, m := range s.Accepted() {
		accepted[m.To[0]]++
	}
	total := 0
	for i, m := range msgs {
		r, ok := results[i]
		if !ok {
			t.Errorf("job %d: no result", i)
			continue
		}
		got := accepted[m.To[0]]
		total += got
		switch r.Status {
		case sender.Delivered:
			if got != 1 {
				t.Errorf("job %d delivered: server accepted %d copies, want 1", i, got)
			}
		case sender.InDoubt:
			if got > 1 {
				t.Errorf("job %d in doubt: server accepted %d copies, want at most 1", i, got)
			}
		default:
			if got != 0 {
				t.Errorf("job %d %s: server accepted %d copies, want 0", i, r.Status, got)
			}
		}
		d := r.Delivery
		if d.Mail.Code/100 == 2 && !strings.Contains(d.Mail.Text, "<"+m.From+">") {
			t.Errorf("job %d: MAIL reply %q does not name %s", i, d.Mail.Text, m.From)
		}
		for k, rr := range d.Rcpt {
			if rr.Code/100 == 2 && !strings.Contains(rr.Text, "<"+m.To[k]+">") {
				t.Errorf("job %d: RCPT %d reply %q does not name %s", i, k, rr.Text, m.To[k])
			}
		}
		if d.Data.Code/100 == 2 && !strings.Contains(d.Data.Text, "<"+m.To[0]+">") {
			t.Errorf("job %d: data reply %q does not name %s", i, d.Data.Text, m.To[0])
		}
	}
	if n := len(s.Accepted()); n != total {
		t.Errorf("server accepted %d messages, %d of them for our jobs", n, total)
	}
}

type want struct {
	status   sender.Status
	attempts int
}

// rcptTo returns the address of a "RCPT TO:<a>" line.
func rcptTo(line string) string { return addrOf(line) }

// on returns an OnCommand hook that runs act for the commands with verb
// for which when returns true (when nil: the first such command the
// server sees, on any connection).
func on(verb string, when func(c *fconn, line string) bool, act func(c *fconn, line string)) func(c *fconn, verb, line string) bool {
	return func(c *fconn, v, line string) bool {
		if v != verb {
			return false
		}
		if when == nil {
			if c.s.Count("on "+verb) != 1 {
				return false
			}
		} else if !when(c, line) {
			return false
		}
		act(c, line)
		return true
	}
}

// firstConn is true on the server's first connection.
func firstConn(c *fconn, _ string) bool { return c.ID == 1 }

// forAddr is true for the command lines that name addr.
func forAddr(addr string) func(*fconn, string) bool {
	return func(_ *fconn, line string) bool { return strings.Contains(line, "<"+addr+">") }
}

// firstData returns an OnData hook that runs act on the first message the
// server reads in full.
func firstData(act func(c *fconn, m *fmsg)) func(c *fconn, m *fmsg) bool {
	return func(c *fconn, m *fmsg) bool {
		if c.s.Count("data") != 1 {
			return false
		}
		act(c, m)
		return true
	}
}

// dataFor returns an OnData hook that runs act on every message to addr.
func dataFor(addr string, act func(c *fconn, m *fmsg)) func(c *fconn, m *fmsg) bool {
	return func(c *fconn, m *fmsg) bool {
		if len(m.To) == 0 || m.To[0] != addr {
			return false
		}
		act(c, m)
		return true
	}
}

// give421 answers 421 and gives up on the connection, recording anything
// the client still sends.
func give421(c *fconn, _ string) {
	c.GiveUp("421 4.3.2 fault.test shutting down")
}

// noMailAfterGiveUp checks that the client started no transaction on a
// connection after its 421.
func noMailAfterGiveUp(t *testing.T, s *faultServer, _ map[int]sender.Result) {
	t.Helper()
	gave := 0
	for _, c := range s.Conns() {
		if c.Mark < 0 {
			continue
		}
		gave++
		after := c.Verbs()[c.Mark:]
		if len(s.o.Ext) > 0 && s.o.Ext[0] == "PIPELINING" {
			// The next message's envelope went out with the final dot,
			// before the 421 could be read (RFC 2920 3.1); nothing may
			// follow it.
			after = skipLookahead(after)
		}
		for _, v := range after {
			if v == "MAIL" || v == "RSET" || v == "QUIT" {
				t.Errorf("conn %d: client sent %s after the 421: %q", c.ID, v, c.Lines[c.Mark:])
			}
		}
	}
	if gave != 1 {
		t.Errorf("server gave up on %d connections, want 1", gave)
	}
}

// skipLookahead drops one pipelined envelope (RSET, MAIL, RCPTs, DATA)
// from the front of verbs.
func skipLookahead(verbs []string) []string {
	i := 0
	if i < len(verbs) && verbs[i] == "RSET" {
		i++
	}
	if i < len(verbs) && verbs[i] == "MAIL" {
		i++
		for i < len(verbs) && verbs[i] == "RCPT" {
			i++
		}
		if i < len(verbs) && verbs[i] == "DATA" {
			i++
		}
	}
	return verbs[i:]
}

// runBugs runs the cases skipped as known bugs: BULKMAIL_RUN_BUGS=1.
var runBugs = os.Getenv("BULKMAIL_RUN_BUGS") != ""

// noCommandAfterGiveUp checks that a lock-step client sent nothing after
// a reply that put it out of step (a pipelining one had sent its group).
func noCommandAfterGiveUp(t *testing.T, s *faultServer) {
	t.Helper()
	if len(s.o.Ext) > 0 && s.o.Ext[0] == "PIPELINING" {
		return
	}
	for _, c := range s.Conns() {
		if c.Mark >= 0 && len(c.Lines) > c.Mark {
			t.Errorf("conn %d: client went on after an out-of-step reply: %q", c.ID, c.Lines[c.Mark:])
		}
	}
}

// poolFault is a fault the pool must survive.
type poolFault struct {
	name string
	o    faultOpts
	// msgs defaults to testMessages(3).
	msgs func() []*sender.Message
	cfg  func(*sender.PoolConfig)
	// want per job; a job not listed must be delivered at the first attempt.
	want map[int]want
	// wantPipe, when set, replaces want with PIPELINING: the pool then sends
	// the next message's envelope with the final dot (SendThen), so a fault
	// in that envelope is met before the previous message is settled, and
	// the next message goes back untried rather than failing an attempt.
	wantPipe map[int]want
	// strays: the server sends replies nobody asked for, so a lock-step
	// client legitimately looks pipelined to it.
	strays bool
	// bug, when set, skips the case: it asserts the right behaviour and
	// the sender does not have it yet.
	bug string
	// before paces the producer (see runJobs).
	before func(t *testing.T, s *faultServer, i int)
	check  func(t *testing.T, s *faultServer, res map[int]sender.Result)
}

func poolFaults() []poolFault {
	user0 := testMessage(0).To[0]
	return []poolFault{
		{
			name: "mismatched multi-line codes to RCPT",
			o: faultOpts{OnCommand: on("RCPT", nil, func(c *fconn, line string) {
				c.GiveUp("250-2.1.5 <"+rcptTo(line)+"> x", "421 4.3.0 y")
			})},
			want: map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "malformed code 2x0 to MAIL",
			o: faultOpts{OnCommand: on("MAIL", nil, func(c *fconn, line string) {
				c.GiveUp("2x0 ok")
			})},
			want: map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "malformed code 600 to RCPT",
			o: faultOpts{OnCommand: on("RCPT", nil, func(c *fconn, line string) {
				c.GiveUp("600 x")
			})},
			want: map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "malformed code 99 to end of data",
			o: faultOpts{OnData: firstData(func(c *fconn, m *fmsg) {
				c.GiveUp("99 short")
			})},
			// The data went out and the reply is garbage: it may have
			// been delivered.
			want: map[int]want{0: {sender.InDoubt, 1}},
		},
		{
			name: "stray reply after MAIL's",
			o: faultOpts{OnCommand: on("MAIL", nil, func(c *fconn, line string) {
				c.hasMail, c.from = true, addrOf(line)
				c.Reply("250 2.1.0 <"+c.from+"> sender ok", "250 stray")
			})},
			strays: true,
			want:   map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "stray reply after the final reply, same write",
			o: faultOpts{OnData: firstData(func(c *fconn, m *fmsg) {
				c.Accept(m)
				c.Reply(queuedReply(m), "250 stray")
			})},
			strays: true,
			want:   map[int]want{0: {sender.InDoubt, 1}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				for i := 1; i < 3; i++ {
					if res[i].Conn == res[0].Conn {
						t.Errorf("job %d went on connection %d, the one with the stray reply", i, res[i].Conn)
					}
				}
			},
		},
		{
			name: "stray reply before the reply to the next RSET",
			o: faultOpts{OnCommand: func(c *fconn, verb, line string) bool {
				if verb == "RSET" && c.s.Count("rset") == 1 {
					c.Write("250 2.0.0 stray\r\n")
				}
				return false
			}},
			strays: true,
			want:   map[int]want{1: {sender.Delivered, 2}},
			// With look-ahead the stray arrives among the replies to the
			// envelope sent with job 0's final dot: the replies are out of
			// step, so job 0's 250 may not be its own.
			wantPipe: map[int]want{0: {sender.InDoubt, 1}},
		},
		{
			name:  "421 to MAIL",
			o:     faultOpts{OnCommand: on("MAIL", nil, give421)},
			want:  map[int]want{0: {sender.Delivered, 2}},
			check: noMailAfterGiveUp,
		},
		{
			name:  "421 to RCPT",
			o:     faultOpts{OnCommand: on("RCPT", nil, give421)},
			want:  map[int]want{0: {sender.Delivered, 2}},
			check: noMailAfterGiveUp,
		},
		{
			name:  "421 to DATA",
			o:     faultOpts{OnCommand: on("DATA", nil, give421)},
			want:  map[int]want{0: {sender.Delivered, 2}},
			check: noMailAfterGiveUp,
		},
		{
			name: "421 to the final dot",
			o:    faultOpts{OnData: firstData(func(c *fconn, m *fmsg) { give421(c, "") })},
			want: map[int]want{0: {sender.Delivered, 2}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				noMailAfterGiveUp(t, s, res)
				if n := len(s.Received()); n != 4 {
					t.Errorf("server read %d messages, want 4 (one refused with 421)", n)
				}
			},
		},
		{
			name: "421 while idle between messages",
			o: faultOpts{OnData: firstData(func(c *fconn, m *fmsg) {
				c.Accept(m)
				c.Reply(queuedReply(m))
				// Wait until the client has settled the message and is
				// idle, without reading what it sends.
				c.s.WaitProceed()
				c.Reply("421 4.4.2 fault.test idle too long")
				c.Close()
				c.s.Signal()
			})},
			before: func(t *testing.T, s *faultServer, i int) {
				if i == 1 {
					s.Proceed()
					s.WaitSignal(t)
				}
			},
			// The 421 arrived before the client went on; whether that
			// costs the next message an attempt is not the point.
			want: map[int]want{1: {sender.Delivered, -2}},
		},
		{
			name: "close after RCPT, before DATA",
			o:    faultOpts{OnCommand: on("DATA", nil, func(c *fconn, _ string) { c.Close() })},
			want: map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "reset after RCPT, before DATA",
			o:    faultOpts{OnCommand: on("DATA", nil, func(c *fconn, _ string) { c.Reset() })},
			want: map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "close after the final dot before the reply",
			o:    faultOpts{OnData: firstData(func(c *fconn, m *fmsg) { c.Close() })},
			want: map[int]want{0: {sender.InDoubt, 1}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				n := 0
				for _, m := range s.Received() {
					if m.To[0] == user0 {
						n++
					}
				}
				if n != 1 {
					t.Errorf("server read %d copies of job 0, want 1", n)
				}
				if !res[0].Delivery.Committed {
					t.Errorf("job 0: Delivery.Committed false after the final dot went out")
				}
			},
		},
		{
			name: "450 to RCPT once",
			o: faultOpts{OnCommand: on("RCPT", nil, func(c *fconn, line string) {
				c.Reply("450 4.2.0 <" + rcptTo(line) + "> mailbox busy")
			})},
			want: map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "450 to RCPT always",
			o: faultOpts{OnCommand: on("RCPT", forAddr(user0), func(c *fconn, line string) {
				c.Reply("450 4.2.0 <" + rcptTo(line) + "> mailbox busy")
			})},
			want: map[int]want{0: {sender.Deferred, 3}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				want := sender.Reply{Code: 450, Enhanced: "4.2.0", Text: "<" + user0 + "> mailbox busy"}
				checkFinalReply(t, res[0], "RCPT TO", want, res[0].Delivery.Rcpt[0])
				if n := s.CommandCount("RCPT TO:<" + user0 + ">"); n != 3 {
					t.Errorf("server saw %d RCPT for %s, want 3", n, user0)
				}
			},
		},
		{
			name: "451 to the final dot once",
			o: faultOpts{OnData: firstData(func(c *fconn, m *fmsg) {
				c.Reply("451 4.3.0 try again later")
			})},
			want: map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "451 to the final dot always",
			o: faultOpts{OnData: dataFor(user0, func(c *fconn, m *fmsg) {
				c.Reply("451 4.3.0 try again later")
			})},
			want: map[int]want{0: {sender.Deferred, 3}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				want := sender.Reply{Code: 451, Enhanced: "4.3.0", Text: "try again later"}
				checkFinalReply(t, res[0], "end of data", want, res[0].Delivery.Data)
			},
		},
		{
			name: "550 to RCPT",
			o: faultOpts{OnCommand: on("RCPT", forAddr(user0), func(c *fconn, line string) {
				c.Reply("550 5.1.1 <" + rcptTo(line) + "> no such user here")
			})},
			want: map[int]want{0: {sender.Rejected, 1}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				want := sender.Reply{Code: 550, Enhanced: "5.1.1", Text: "<" + user0 + "> no such user here"}
				checkFinalReply(t, res[0], "RCPT TO", want, res[0].Delivery.Rcpt[0])
				if n := s.CommandCount("RCPT TO:<" + user0 + ">"); n != 1 {
					t.Errorf("server saw %d RCPT for %s, want 1", n, user0)
				}
			},
		},
		{
			name: "554 to the final dot",
			o: faultOpts{OnData: dataFor(user0, func(c *fconn, m *fmsg) {
				c.Reply("554 5.7.1 message refused: spam")
			})},
			want: map[int]want{0: {sender.Rejected, 1}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				want := sender.Reply{Code: 554, Enhanced: "5.7.1", Text: "message refused: spam"}
				checkFinalReply(t, res[0], "end of data", want, res[0].Delivery.Data)
			},
		},
		{
			name: "452 to the second recipient",
			msgs: func() []*sender.Message {
				m := testMessages(3)
				m[0].To = append(m[0].To, "second@example.org")
				return m
			},
			o: faultOpts{OnCommand: on("RCPT", forAddr("second@example.org"), func(c *fconn, line string) {
				c.Reply("452 4.5.3 <" + rcptTo(line) + "> too many recipients")
			})},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				r := res[0]
				if got := r.Delivery.Rcpt[1]; got.Code != 452 || got.Enhanced != "4.5.3" {
					t.Errorf("job 0: second RCPT reply %v, want 452 4.5.3", got)
				}
				if r.Err == nil || !strings.Contains(r.Err.Error(), "recipient 2") || !strings.Contains(r.Err.Error(), "452") {
					t.Errorf("job 0: Err %v, want a note that recipient 2 got 452", r.Err)
				}
				for _, m := range s.Accepted() {
					if m.To[0] == user0 && (len(m.To) != 1) {
						t.Errorf("server accepted job 0 for %v, want only %s", m.To, user0)
					}
				}
			},
		},
		{
			name: "QUIT refused",
			o: faultOpts{OnCommand: on("QUIT", func(*fconn, string) bool { return true }, func(c *fconn, _ string) {
				c.Reply("554 5.0.0 no")
				c.Close()
			})},
		},
		{
			name: "close instead of answering QUIT",
			o:    faultOpts{OnCommand: on("QUIT", func(*fconn, string) bool { return true }, func(c *fconn, _ string) { c.Close() })},
		},
		{
			name:     "421 to RSET",
			o:        faultOpts{OnCommand: on("RSET", nil, give421)},
			want:     map[int]want{1: {sender.Delivered, 2}},
			wantPipe: map[int]want{},
		},
		{
			name: "251 and 252 to RCPT are success",
			msgs: func() []*sender.Message {
				m := testMessages(3)
				m[0].To = append(m[0].To, "forward@example.org")
				return m
			},
			o: faultOpts{OnCommand: on("RCPT", func(*fconn, string) bool { return true }, func(c *fconn, line string) {
				to := rcptTo(line)
				c.rcpts = append(c.rcpts, to)
				if to == "forward@example.org" {
					c.Reply("252 2.1.5 <" + to + "> cannot verify, will try")
					return
				}
				c.Reply("251 2.1.5 <" + to + "> not local, will forward")
			})},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				if r := res[0]; r.Delivery.Rcpt[0].Code != 251 || r.Delivery.Rcpt[1].Code != 252 || r.Err != nil {
					t.Errorf("job 0: replies %+v, Err %v; want 251, 252 and no note", r.Delivery.Rcpt, r.Err)
				}
			},
		},
		{
			name: "550 with a 4.2.2 enhanced code",
			o: faultOpts{OnCommand: on("RCPT", forAddr(user0), func(c *fconn, line string) {
				c.Reply("550 4.2.2 <" + rcptTo(line) + "> mailbox full")
			})},
			want: map[int]want{0: {sender.Rejected, 1}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				// The enhanced code disagrees with the reply code: the reply
				// code decides and the text is kept whole.
				want := sender.Reply{Code: 550, Text: "4.2.2 <" + user0 + "> mailbox full"}
				checkFinalReply(t, res[0], "RCPT TO", want, res[0].Delivery.Rcpt[0])
			},
		},
		{
			name: "354 to MAIL",
			o:    faultOpts{OnCommand: on("MAIL", nil, func(c *fconn, _ string) { c.GiveUp("354 go ahead") })},
			cfg:  func(cfg *sender.PoolConfig) { cfg.Dial.Timeouts.Rcpt = 500 * time.Millisecond },
			want: map[int]want{0: {sender.Delivered, 2}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				noCommandAfterGiveUp(t, s)
				if err := res[0].Err; err != nil {
					t.Errorf("job 0: Err %v", err)
				}
			},
		},
		{
			name: "354 to RSET",
			o:    faultOpts{OnCommand: on("RSET", nil, func(c *fconn, _ string) { c.GiveUp("354 go ahead") })},
			cfg:  func(cfg *sender.PoolConfig) { cfg.Dial.Timeouts.Mail = 500 * time.Millisecond },
			want: map[int]want{1: {sender.Delivered, 2}},
			// An impossible reply right after job 0's 250: the replies are out
			// of step, so that 250 may not be job 0's.
			wantPipe: map[int]want{0: {sender.InDoubt, 1}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				noCommandAfterGiveUp(t, s)
			},
		},
		{
			name: "stray reply while idle, then a partly refused message",
			msgs: func() []*sender.Message {
				m := testMessages(3)
				m[1].To = append(m[1].To, "bad@example.org")
				return m
			},
			o: faultOpts{
				OnCommand: on("RCPT", forAddr("bad@example.org"), func(c *fconn, line string) {
					c.Reply("550 5.1.1 <" + rcptTo(line) + "> no such user")
				}),
				OnData: firstData(func(c *fconn, m *fmsg) {
					c.Accept(m)
					c.Reply(queuedReply(m))
					c.s.WaitProceed()
					c.Write("250 2.0.0 stray\r\n")
					c.s.Signal()
				}),
			},
			strays: true,
			before: func(t *testing.T, s *faultServer, i int) {
				if i == 1 {
					s.Proceed()
					s.WaitSignal(t)
				}
			},
			want: map[int]want{1: {sender.Delivered, -2}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				r := res[1]
				if got := r.Delivery.Rcpt; len(got) != 2 || got[1].Code != 550 {
					t.Errorf("job 1: RCPT replies %+v, want 550 for the second", got)
				}
				if r.Err == nil || !strings.Contains(r.Err.Error(), "recipient 2") {
					t.Errorf("job 1: Err %v, want a note that recipient 2 was refused", r.Err)
				}
			},
		},
		{
			name: "close after BDAT LAST before the reply",
			o:    faultOpts{Ext: []string{"CHUNKING"}, OnData: firstData(func(c *fconn, m *fmsg) { c.Close() })},
			want: map[int]want{0: {sender.InDoubt, 1}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				if n := len(s.Received()); n != 3 || !s.Received()[0].Chunked {
					t.Errorf("server read %d messages, want 3 with BDAT", n)
				}
			},
		},
		{
			name: "421 to BDAT LAST",
			o:    faultOpts{Ext: []string{"CHUNKING"}, OnData: firstData(func(c *fconn, m *fmsg) { give421(c, "") })},
			want: map[int]want{0: {sender.Delivered, 2}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				noMailAfterGiveUp(t, s, res)
			},
		},
		{
			name: "451 to BDAT LAST once",
			o: faultOpts{Ext: []string{"CHUNKING"}, OnData: firstData(func(c *fconn, m *fmsg) {
				c.Reply("451 4.3.0 try again later")
			})},
			want: map[int]want{0: {sender.Delivered, 2}},
		},
		{
			name: "Gmail 421 at the greeting once",
			o: faultOpts{OnConnect: func(c *fconn) bool {
				if c.ID != 1 {
					return false
				}
				c.Reply("421-4.7.0 [127.0.0.1] Try again later, closing connection.",
					"421 4.7.0 For more information, go to the help center.")
				c.Close()
				return true
			}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				if n := len(s.Conns()); n != 2 {
					t.Errorf("%d connections, want 2", n)
				}
			},
		},
		{
			name: "stray reply after the first RCPT's, second RCPT refused",
			msgs: func() []*sender.Message {
				m := testMessages(3)
				m[0].To = append(m[0].To, "bad@example.org")
				return m
			},
			o: faultOpts{OnCommand: func(c *fconn, verb, line string) bool {
				if verb != "RCPT" {
					return false
				}
				to := rcptTo(line)
				switch {
				case to == "bad@example.org":
					c.Reply("550 5.1.1 <" + to + "> no such user")
				case to == user0 && c.s.Count("stray") == 1:
					c.rcpts = append(c.rcpts, to)
					c.Reply("250 2.1.5 <"+to+"> recipient ok", "250 stray")
				default:
					return false
				}
				return true
			}},
			strays: true,
			want:   map[int]want{0: {sender.Delivered, 2}},
			check: func(t *testing.T, s *faultServer, res map[int]sender.Result) {
				r := res[0]
				if got := r.Delivery.Rcpt; len(got) != 2 || got[1].Code != 550 {
					t.Errorf("job 0: RCPT replies %+v, want 550 for the second", got)
				}
				if r.Err == nil || !strings.Contains(r.Err.Error(), "recipient 2") {
					t.Errorf("job 0: Err %v, want a note that recipient 2 was refused", r.Err)
				}
			},
		},
	}
}

// checkFinalReply checks the reply a result ended with and that its Err
// carries the same reply.
// checkAllDelivered checks that every message was delivered, and
// accepted by the server exactly once.
func checkAllDelivered(t *testing.T, s *faultServer, msgs []*sender.Message, res map[int]sender.Result) {
	t.Helper()
	for i := range msgs {
		if r := res[i]; r.Status != sender.Delivered {
			t.Errorf("job %d: %s after %d attempts (%v)", i, r.Status, r.Attempts, r.Err)
		}
	}
	checkLedger(t, s, msgs, res)
	if len(s.Accepted()) != len(msgs) {
		t.Errorf("server accepted %d, want %d", len(s.Accepted()), len(msgs))
	}
}

func checkFinalReply(t *testing.T, r sender.Result, cmd string, want, got sender.Reply) {
	t.Helper()
	if got != want {
		t.Errorf("job %d: final %s reply %+v, want %+v", r.Job.ID, cmd, got, want)
	}
	re, ok := errorsAs[*sender.ReplyError](r.Err)
	if !ok {
		t.Errorf("job %d: Err %v (%T), want a *sender.ReplyError", r.Job.ID, r.Err, r.Err)
		return
	}
	if re.Reply != want || re.Command != cmd {
		t.Errorf("job %d: Err is %s %+v, want %s %+v", r.Job.ID, re.Command, re.Reply, cmd, want)
	}
}

func TestFaultPool(t *testing.T) {
	for _, tc := range poolFaults() {
		for _, pipe := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/pipelining=%v", tc.name, pipe), func(t *testing.T) {
				t.Parallel()
				if tc.bug != "" && !runBugs {
					t.Skip("BUG: " + tc.bug)
				}
				o := tc.o
				if pipe {
					o.Ext = append([]string{"PIPELINING"}, o.Ext...)
				} else {
					o.Lockstep = !tc.strays
				}
				s := startFault(t, o)
				msgs := testMessages(3)
				if tc.msgs != nil {
					msgs = tc.msgs()
				}
				cfg := faultPoolConfig(s)
				if tc.cfg != nil {
					tc.cfg(&cfg)
				}
				var before func(int)
				if tc.before != nil {
					before = func(i int) { tc.before(t, s, i) }
				}
				results, err := runJobs(t, cfg, msgs, before)
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				for i := range msgs {
					r, ok := results[i]
					if !ok {
						continue // checkLedger reports it
					}
					wants := tc.want
					if pipe && tc.wantPipe != nil {
						wants = tc.wantPipe
					}
					w, listed := wants[i]
					if !listed {
						w = want{sender.Delivered, 1}
					}
					if r.Status != w.status {
						t.Errorf("job %d: status %s, want %s (err %v)", i, r.Status, w.status, r.Err)
					}
					if w.attempts > 0 && r.Attempts != w.attempts || w.attempts < 0 && (r.Attempts < 1 || r.Attempts > -w.attempts) {
						t.Errorf("job %d: %d attempts, want %d", i, r.Attempts, w.attempts)
					}
					if r.Status == sender.Delivered && len(msgs[i].To) == 1 && r.Err != nil {
						t.Errorf("job %d: delivered with Err %v", i, r.Err)
					}
				}
				checkLedger(t, s, msgs, results)
				if v := s.Violations(); len(v) > 0 && !tc.strays {
					t.Errorf("protocol violations: %q", v)
				}
				if tc.check != nil {
					tc.check(t, s, results)
				}
			})
		}
	}
}

// ehloReply is an EHLO reply hook writing the given lines in one write.
func ehloReply(lines ...string) func(c *fconn, verb, line string) bool {
	return func(c *fconn, verb, line string) bool {
		if verb != "EHLO" {
			return false
		}
		c.Reply(lines...)
		return true
	}
}

func TestFaultReplies(t *testing.T) {
	t.Run("EHLO with many lines", func(t *testing.T) {
		lines := []string{"250-fault.test greets you"}
		var want []string
		want = append(want, "fault.test greets you")
		for i := 0; i < 60; i++ {
			lines = append(lines, fmt.Sprintf("250-X-EXT%d param%d", i, i))
			want = append(want, fmt.Sprintf("X-EXT%d param%d", i, i))
		}
		lines = append(lines, "250 SIZE 1000000")
		want = append(want, "SIZE 1000000")
		s := startFault(t, faultOpts{OnCommand: ehloReply(lines...)})
		c := dialFault(t, faultConfig(s))
		h := c.Hello()
		if h.Code != 250 || h.Text != strings.Join(want, "\n") {
			t.Errorf("EHLO reply %d %q, want 250 %q", h.Code, h.Text, strings.Join(want, "\n"))
		}
		if p, ok := c.Extension("x-ext59"); !ok || p != "param59" {
			t.Errorf("Extension(X-EXT59) = %q, %v; want param59, true", p, ok)
		}
		if p, ok := c.Extension("SIZE"); !ok || p != "1000000" {
			t.Errorf("Extension(SIZE) = %q, %v; want 1000000, true", p, ok)
		}
	})

	t.Run("EHLO one byte per segment", func(t *testing.T) {
		s := startFault(t, faultOpts{OnCommand: func(c *fconn, verb, line string) bool {
			if verb != "EHLO" {
				return false
			}
			c.Bytewise("250-fault.test hi\r\n250-PIPELINING\r\n250-SIZE 5000\r\n250 8BITMIME\r\n")
			return true
		}})
		c := dialFault(t, faultConfig(s))
		if got, want := c.Hello().Text, "fault.test hi\nPIPELINING\nSIZE 5000\n8BITMIME"; got != want {
			t.Errorf("EHLO text %q, want %q", got, want)
		}
		if _, ok := c.Extension("8BITMIME"); !ok {
			t.Errorf("8BITMIME not seen")
		}
		d, err := c.Send(context.Background(), testMessage(0), noCommit)
		if err != nil || d.Data.Code != 250 {
			t.Fatalf("Send: %v, %+v", err, d)
		}
		if n := len(s.Accepted()); n != 1 {
			t.Errorf("server accepted %d messages, want 1", n)
		}
	})

	t.Run("bare codes with no text", func(t *testing.T) {
		s := startFault(t, faultOpts{
			Greeting: "220",
			OnCommand: func(c *fconn, verb, line string) bool {
				switch verb {
				case "EHLO", "MAIL", "RSET", "NOOP":
					c.Reply("250")
					if verb == "MAIL" {
						c.hasMail = true
					}
				case "RCPT":
					c.rcpts = append(c.rcpts, rcptTo(line))
					c.Reply("250")
				case "DATA":
					c.Reply("354")
					m, err := c.ReadData()
					if err != nil {
						c.done = true
						return true
					}
					c.s.mu.Lock()
					c.s.received = append(c.s.received, m)
					c.s.mu.Unlock()
					c.Accept(m)
					c.resetTxn()
					c.Reply("250")
				case "QUIT":
					c.Reply("221")
					c.Close()
				default:
					return false
				}
				return true
			},
		})
		c := dialFault(t, faultConfig(s))
		if g := c.Greeting(); g.Code != 220 || g.Text != "" || g.Enhanced != "" {
			t.Errorf("greeting %+v, want bare 220", g)
		}
		for i := 0; i < 2; i++ {
			d, err := c.Send(context.Background(), testMessage(i), noCommit)
			if err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
			bare := sender.Reply{Code: 250}
			if d.Mail != bare || d.Rcpt[0] != bare || d.Data != bare {
				t.Errorf("Send %d: replies %+v, want bare 250s", i, d)
			}
		}
		if r, err := c.Command(context.Background(), 2, "NOOP"); err != nil || r != (sender.Reply{Code: 250}) {
			t.Errorf("NOOP: %+v, %v", r, err)
		}
		if err := c.Quit(); err != nil {
			t.Errorf("Quit: %v", err)
		}
		if n := len(s.Accepted()); n != 2 {
			t.Errorf("server accepted %d messages, want 2", n)
		}
	})

	t.Run("multi-line 250 to RCPT", func(t *testing.T) {
		s := startFault(t, faultOpts{OnCommand: on("RCPT", nil, func(c *fconn, line string) {
			to := rcptTo(line)
			c.rcpts = append(c.rcpts, to)
			c.Reply("250-2.1.5 <"+to+"> first", "250-2.1.5 second", "250 2.1.5 third")
		})})
		c := dialFault(t, faultConfig(s))
		d, err := c.Send(context.Background(), testMessage(0), noCommit)
		if err != nil {
			t.Fatal(err)
		}
		want := sender.Reply{Code: 250, Enhanced: "2.1.5", Text: "<user0@example.org> first\nsecond\nthird"}
		if d.Rcpt[0] != want {
			t.Errorf("RCPT reply %+v, want %+v", d.Rcpt[0], want)
		}
		if d.Data.Code != 250 || len(s.Accepted()) != 1 {
			t.Errorf("data reply %+v, server accepted %d; want 250 and 1", d.Data, len(s.Accepted()))
		}
	})

	t.Run("Gmail multi-line 421 then close", func(t *testing.T) {
		s := startFault(t, faultOpts{OnCommand: on("MAIL", nil, func(c *fconn, line string) {
			c.Reply(
				"421-4.7.28 [127.0.0.1] Our system has detected an unusual rate of",
				"421-4.7.28 unsolicited mail originating from your IP address. To protect our",
				"421 4.7.28 users from spam, mail sent from your IP address has been rate limited.",
			)
			c.Close()
		})})
		c := dialFault(t, faultConfig(s))
		d, err := c.Send(context.Background(), testMessage(0), noCommit)
		want := sender.Reply{Code: 421, Enhanced: "4.7.28", Text: "[127.0.0.1] Our system has detected an unusual rate of\n" +
			"unsolicited mail originating from your IP address. To protect our\n" +
			"users from spam, mail sent from your IP address has been rate limited."}
		re, ok := errorsAs[*sender.ReplyError](err)
		if !ok || re.Reply != want {
			t.Fatalf("Send: %v, want a *ReplyError with %+v", err, want)
		}
		if d.Mail != want {
			t.Errorf("Delivery.Mail %+v, want %+v", d.Mail, want)
		}
		if c.Broken() == nil {
			t.Errorf("connection not broken after 421")
		}
		if d.Committed {
			t.Errorf("Committed after a 421 to MAIL")
		}
	})

	malformed := []struct{ name, reply string }{
		{"mismatched codes", "250-2.1.0 x\r\n421 4.3.0 y"},
		{"2x0", "2x0 ok"},
		{"600", "600 x"},
		{"99", "99 short"},
		{"no separator", "250x ok"},
		{"line over 8192 octets", "250 " + strings.Repeat("x", 9000)},
		{"over 1000 lines", strings.Repeat("250-x\r\n", 1001) + "250 x"},
	}
	for _, m := range malformed {
		t.Run("malformed reply to MAIL: "+m.name, func(t *testing.T) {
			s := startFault(t, faultOpts{OnCommand: on("MAIL", nil, func(c *fconn, _ string) {
				c.GiveUp(m.reply)
			})})
			c := dialFault(t, faultConfig(s))
			_, err := c.Send(context.Background(), testMessage(0), noCommit)
			if _, ok := errorsAs[*sender.ProtocolError](err); !ok || !errors.Is(err, sender.ErrMalformedReply) {
				t.Fatalf("Send: %v, want a *ProtocolError wrapping ErrMalformedReply", err)
			}
			if c.Broken() == nil {
				t.Errorf("Broken() nil after a malformed reply")
			}
			if _, err := c.Send(context.Background(), testMessage(1), noCommit); err == nil {
				t.Errorf("a second Send on the broken connection succeeded")
			}
			if r, err := c.Command(context.Background(), 2, "NOOP"); err == nil {
				t.Errorf("NOOP on the broken connection: %+v, want an error", r)
			}
			if n := s.CommandCount("MAIL"); n != 1 {
				t.Errorf("server saw %d MAIL, want 1", n)
			}
		})
	}

	t.Run("malformed greeting 2x0", func(t *testing.T) {
		s := startFault(t, faultOpts{Greeting: "2x0 hello"})
		_, err := sender.Dial(context.Background(), faultConfig(s), 1)
		if !errors.Is(err, sender.ErrMalformedReply) {
			t.Fatalf("Dial: %v, want ErrMalformedReply", err)
		}
	})
}

func TestFaultStalls(t *testing.T) {
	const short = 300 * time.Millisecond
	stall := func(c *fconn, _ string) { c.Stall() }
	cases := []struct {
		name   string
		o      faultOpts
		tls    bool
		set    func(*sender.Timeouts)
		phase  string // in the error
		dial   bool   // the stall is inside Dial
		commit bool   // the final dot went out
	}{
		{name: "greeting", o: faultOpts{OnConnect: func(c *fconn) bool { c.Stall(); return true }},
			set: func(t *sender.Timeouts) { t.Greeting = short }, phase: "greeting", dial: true},
		{name: "EHLO", o: faultOpts{OnCommand: on("EHLO", nil, stall)},
			set: func(t *sender.Timeouts) { t.Command = short }, phase: "EHLO", dial: true},
		{name: "TLS handshake", tls: true, o: faultOpts{OnCommand: on("STARTTLS", nil, func(c *fconn, _ string) {
			c.Reply("220 2.0.0 go ahead")
			c.Stall()
		})},
			set: func(t *sender.Timeouts) { t.Connect = short }, phase: "TLS handshake", dial: true},
		{name: "MAIL FROM", o: faultOpts{OnCommand: on("MAIL", nil, stall)},
			set: func(t *sender.Timeouts) { t.Mail = short }, phase: "MAIL FROM"},
		{name: "RCPT TO", o: faultOpts{OnCommand: on("RCPT", nil, stall)},
			set: func(t *sender.Timeouts) { t.Rcpt = short }, phase: "RCPT TO"},
		{name: "DATA", o: faultOpts{OnCommand: on("DATA", nil, stall)},
			set: func(t *sender.Timeouts) { t.DataInit = short }, phase: "DATA"},
		{name: "end of data", o: faultOpts{OnData: firstData(func(c *fconn, _ *fmsg) { c.Stall() })},
			set: func(t *sender.Timeouts) { t.DataTerm = short }, phase: "end of data", commit: true},
	}
	for _, tc := range cases {
		for _, pipe := range []bool{false, true} {
			if tc.dial && pipe {
				continue
			}
			t.Run(fmt.Sprintf("%s/pipelining=%v", tc.name, pipe), func(t *testing.T) {
				t.Parallel()
				o := tc.o
				if pipe {
					o.Ext = []string{"PIPELINING"}
				}
				cfg := faultConfig(startFaultTLS(t, o, tc.tls))
				if tc.tls {
					_, roots := testCert()
					cfg.TLS = sender.TLSRequired
					cfg.TLSConfig = &tls.Config{RootCAs: roots}
				}
				tc.set(&cfg.Timeouts)
				start := time.Now()
				var err error
				var d sender.Delivery
				var c *sender.Client
				// A sender that ignored its timeouts would hang without this
				// bound; the elapsed time below then fails the test.
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				defer cancel()
				c, err = sender.Dial(ctx, cfg, 1)
				if !tc.dial {
					if err != nil {
						t.Fatalf("Dial: %v", err)
					}
					defer c.Close()
					start = time.Now()
					d, err = c.Send(ctx, testMessage(0), noCommit)
				}
				elapsed := time.Since(start)
				if _, ok := errorsAs[*sender.ProtocolError](err); !ok || !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("got %v, want a *ProtocolError wrapping a deadline", err)
				}
				if !strings.Contains(err.Error(), tc.phase) {
					t.Errorf("error %q does not name the phase %q", err, tc.phase)
				}
				if elapsed > 1500*time.Millisecond {
					t.Errorf("took %v, want about %v", elapsed, short)
				}
				if tc.dial {
					if c != nil {
						t.Errorf("Dial returned a client with its error")
					}
					return
				}
				if c.Broken() == nil {
					t.Errorf("connection not broken after a timeout")
				}
				if d.Committed != tc.commit {
					t.Errorf("Committed %v, want %v", d.Committed, tc.commit)
				}
			})
		}
	}
}

// startFaultTLS starts a fault server, offering STARTTLS with the test
// certificate when withTLS.
func startFaultTLS(t *testing.T, o faultOpts, withTLS bool) *faultServer {
	if withTLS {
		o.TLS, _ = testCert()
	}
	return startFault(t, o)
}

func TestFaultPoolStalls(t *testing.T) {
	short := func(cfg *sender.PoolConfig) {
		cfg.Dial.Timeouts.Mail = 300 * time.Millisecond
		cfg.Dial.Timeouts.DataTerm = 300 * time.Millisecond
	}
	t.Run("after the final dot", func(t *testing.T) {
		t.Parallel()
		s := startFault(t, faultOpts{OnData: firstData(func(c *fconn, _ *fmsg) { c.Stall() })})
		cfg := faultPoolConfig(s)
		short(&cfg)
		msgs := testMessages(3)
		res, err := runJobs(t, cfg, msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := res[0]; r.Status != sender.InDoubt || r.Attempts != 1 {
			t.Errorf("job 0: %s after %d attempts, want in_doubt after 1 (%v)", r.Status, r.Attempts, r.Err)
		}
		for i := 1; i < 3; i++ {
			if r := res[i]; r.Status != sender.Delivered || r.Attempts != 1 {
				t.Errorf("job %d: %s after %d attempts, want delivered after 1 (%v)", i, r.Status, r.Attempts, r.Err)
			}
		}
		if n := len(s.Received()); n != 3 {
			t.Errorf("server read %d messages, want 3", n)
		}
		checkLedger(t, s, msgs, res)
	})
	t.Run("after MAIL once", func(t *testing.T) {
		t.Parallel()
		s := startFault(t, faultOpts{OnCommand: on("MAIL", nil, func(c *fconn, _ string) { c.Stall() })})
		cfg := faultPoolConfig(s)
		short(&cfg)
		msgs := testMessages(3)
		res, err := runJobs(t, cfg, msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if r := res[0]; r.Status != sender.Delivered || r.Attempts != 2 {
			t.Errorf("job 0: %s after %d attempts, want delivered after 2 (%v)", r.Status, r.Attempts, r.Err)
		}
		checkLedger(t, s, msgs, res)
	})
	t.Run("after MAIL always", func(t *testing.T) {
		t.Parallel()
		msgs := testMessages(3)
		msgs[0].From = "stall@example.com"
		s := startFault(t, faultOpts{OnCommand: on("MAIL", forAddr("stall@example.com"), func(c *fconn, _ string) { c.Stall() })})
		cfg := faultPoolConfig(s)
		short(&cfg)
		cfg.Retries = 1
		res, err := runJobs(t, cfg, msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := res[0]
		if r.Status != sender.Failed || r.Attempts != 2 {
			t.Errorf("job 0: %s after %d attempts, want failed after 2 (%v)", r.Status, r.Attempts, r.Err)
		}
		if !errors.Is(r.Err, os.ErrDeadlineExceeded) || !strings.Contains(fmt.Sprint(r.Err), "MAIL FROM") {
			t.Errorf("job 0: Err %v, want a MAIL FROM timeout", r.Err)
		}
		if n := s.CommandCount("MAIL FROM:<stall@example.com>"); n != 2 {
			t.Errorf("server saw %d MAIL for job 0, want 2", n)
		}
		for i := 1; i < 3; i++ {
			if r := res[i]; r.Status != sender.Delivered || r.Attempts != 1 {
				t.Errorf("job %d: %s after %d attempts, want delivered after 1 (%v)", i, r.Status, r.Attempts, r.Err)
			}
		}
		checkLedger(t, s, msgs, res)
	})
	t.Run("at the greeting always", func(t *testing.T) {
		t.Parallel()
		s := startFault(t, faultOpts{OnConnect: func(c *fconn) bool { c.Stall(); return true }})
		cfg := faultPoolConfig(s)
		cfg.Dial.Timeouts.Greeting = 200 * time.Millisecond
		cfg.MaxErrors = 3
		cfg.Workers = 2
		start := time.Now()
		res, err := runJobs(t, cfg, testMessages(5), nil)
		if _, ok := errorsAs[*sender.BreakerError](err); !ok {
			t.Fatalf("Run: %v, want a *BreakerError", err)
		}
		if len(res) != 0 {
			t.Errorf("%d jobs reported, want none: %v", len(res), res)
		}
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("took %v to give up", el)
		}
	})
}

func TestFaultPipelining(t *testing.T) {
	multi := func() []*sender.Message {
		m := testMessages(4)
		m[3].To = append(m[3].To, "second@example.org", "third@example.org")
		return m
	}
	cases := []struct {
		name      string
		o         faultOpts
		noPipe    bool
		violation bool // the server must see one (the detector works)
	}{
		{name: "not offered: one command per reply", o: faultOpts{Lockstep: true}},
		{name: "offered but disabled: one command per reply", o: faultOpts{Lockstep: true, Ext: []string{"PIPELINING"}}, noPipe: true},
		{name: "offered: the lock-step detector sees the groups", o: faultOpts{Lockstep: true, Ext: []string{"PIPELINING"}}, violation: true},
		{name: "offered: RSET MAIL RCPT DATA in one group", o: faultOpts{ExpectPipelining: true, Ext: []string{"PIPELINING"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startFault(t, tc.o)
			cfg := faultPoolConfig(s)
			cfg.Dial.NoPipelining = tc.noPipe
			msgs := multi()
			if tc.o.ExpectPipelining {
				msgs = msgs[:3] // one recipient each: DATA ends the group
			}
			res, err := runJobs(t, cfg, msgs, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range msgs {
				if r := res[i]; r.Status != sender.Delivered || r.Attempts != 1 || r.Err != nil {
					t.Errorf("job %d: %s after %d attempts (%v), want delivered after 1", i, r.Status, r.Attempts, r.Err)
				}
			}
			checkLedger(t, s, msgs, res)
			v := s.Violations()
			if tc.violation != (len(v) > 0) {
				t.Errorf("violations %q, want some: %v", v, tc.violation)
			}
			conns := s.Conns()
			if len(conns) != 1 {
				t.Fatalf("%d connections, want 1", len(conns))
			}
			if tc.o.ExpectPipelining {
				want := []string{"EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "QUIT"}
				if got := conns[0].Verbs(); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("commands %v, want %v", got, want)
				}
			}
		})
	}

	t.Run("offered: RCPT refused but DATA answered 354", func(t *testing.T) {
		t.Parallel()
		user0 := testMessage(0).To[0]
		s := startFault(t, faultOpts{
			Ext: []string{"PIPELINING"},
			OnCommand: func(c *fconn, verb, line string) bool {
				switch {
				case verb == "RCPT" && rcptTo(line) == user0:
					c.Reply("550 5.1.1 <" + user0 + "> no such user")
					return true
				case verb == "DATA" && len(c.rcpts) == 0:
					// Against RFC 2920 3.1, but servers do it.
					c.Reply("354 go ahead")
					m, err := c.ReadData()
					if err != nil {
						c.done = true
						return true
					}
					c.s.mu.Lock()
					c.s.received = append(c.s.received, m)
					c.s.mu.Unlock()
					c.resetTxn()
					c.Reply("554 5.5.1 no valid recipients")
					return true
				}
				return false
			},
		})
		msgs := testMessages(2)
		res, err := runJobs(t, faultPoolConfig(s), msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := res[0]
		if r.Status != sender.Rejected || r.Attempts != 1 {
			t.Errorf("job 0: %s after %d attempts, want rejected after 1 (%v)", r.Status, r.Attempts, r.Err)
		}
		want := sender.Reply{Code: 550, Enhanced: "5.1.1", Text: "<" + user0 + "> no such user"}
		checkFinalReply(t, r, "RCPT TO", want, r.Delivery.Rcpt[0])
		if r.Delivery.Data.Code != 0 && r.Delivery.Data.Code != 554 {
			t.Errorf("job 0: data reply %+v", r.Delivery.Data)
		}
		if r.Delivery.Committed {
			t.Errorf("job 0: Committed, but only a lone dot went out")
		}
		if res[1].Status != sender.Delivered || res[1].Attempts != 1 {
			t.Errorf("job 1: %s after %d attempts, want delivered after 1", res[1].Status, res[1].Attempts)
		}
		var empty []*fmsg
		for _, m := range s.Received() {
			if len(m.To) == 0 {
				empty = append(empty, m)
			}
		}
		if len(empty) != 1 || string(empty[0].Raw) != ".\r\n" {
			t.Errorf("server read %d envelope-less messages (%+v), want one lone dot", len(empty), empty)
		}
		checkLedger(t, s, msgs, res)
		if len(s.Conns()) != 1 {
			t.Errorf("%d connections, want 1: the connection stays in step", len(s.Conns()))
		}
	})
}

func TestFaultLocalLimits(t *testing.T) {
	big := &sender.Message{
		From: "big@example.com",
		To:   []string{"big@example.org"},
		Data: []byte("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 50)),
	}
	utf8 := &sender.Message{
		From: "intl@example.com",
		To:   []string{"josé@example.org"},
		Data: []byte("Subject: hola\r\n\r\nhola\r\n"),
		UTF8: true,
	}
	eight := &sender.Message{
		From: "eight@example.com",
		To:   []string{"eight@example.org"},
		Data: []byte("Subject: caf\xc3\xa9\r\n\r\ncaf\xc3\xa9\r\n"),
	}
	inject := func(to string) *sender.Message {
		return &sender.Message{From: "inject@example.com", To: []string{to}, Data: []byte("Subject: x\r\n\r\nx\r\n")}
	}
	cases := []struct {
		name     string
		ext      []string
		msg      *sender.Message
		want     sender.Status
		mailLine string // the MAIL line the server must see, when delivered
	}{
		{name: "SIZE 1000, 5000 octets", ext: []string{"SIZE 1000"}, msg: big, want: sender.Failed},
		{name: "SIZE 10000, 5000 octets", ext: []string{"SIZE 10000"}, msg: big, want: sender.Delivered,
			mailLine: fmt.Sprintf("MAIL FROM:<big@example.com> SIZE=%d", len(big.Data))},
		{name: "non-ASCII local part, no SMTPUTF8", ext: []string{"8BITMIME"}, msg: utf8, want: sender.Failed},
		{name: "non-ASCII local part, SMTPUTF8", ext: []string{"SMTPUTF8", "8BITMIME"}, msg: utf8, want: sender.Delivered,
			mailLine: "MAIL FROM:<intl@example.com> SMTPUTF8"},
		{name: "8-bit body, no 8BITMIME", msg: eight, want: sender.Failed},
		{name: "8-bit body, 8BITMIME", ext: []string{"8BITMIME"}, msg: eight, want: sender.Delivered,
			mailLine: "MAIL FROM:<eight@example.com> BODY=8BITMIME"},
		{name: "envelope injection: parameter", msg: inject("x@example.org> NOTIFY=NEVER"), want: sender.Failed},
		{name: "envelope injection: CRLF", msg: inject("x@example.org>\r\nRCPT TO:<evil@example.net"), want: sender.Failed},
		{name: "envelope injection: NUL", msg: inject("x@example.org\x00"), want: sender.Failed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := startFault(t, faultOpts{Ext: tc.ext})
			msgs := []*sender.Message{tc.msg, testMessage(1)}
			res, err := runJobs(t, faultPoolConfig(s), msgs, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := res[0]
			if r.Status != tc.want || r.Attempts != 1 {
				t.Errorf("job 0: %s after %d attempts (%v), want %s after 1", r.Status, r.Attempts, r.Err, tc.want)
			}
			mails := s.CommandCount("MAIL FROM:<" + tc.msg.From + ">")
			if tc.want == sender.Failed {
				if _, ok := errorsAs[*sender.LocalError](r.Err); !ok {
					t.Errorf("job 0: Err %v (%T), want a *sender.LocalError", r.Err, r.Err)
				}
				if mails != 0 {
					t.Errorf("server saw %d MAIL for job 0, want none", mails)
				}
			} else {
				if n := s.CommandCount(tc.mailLine); n != 1 || mails != 1 {
					t.Errorf("server saw %d MAIL lines %q (%d MAIL for job 0), want 1: %q", n, tc.mailLine, mails, s.Conns()[0].Lines)
				}
			}
			if res[1].Status != sender.Delivered {
				t.Errorf("job 1: %s (%v), want delivered on the same connection", res[1].Status, res[1].Err)
			}
			if n := len(s.Conns()); n != 1 {
				t.Errorf("%d connections, want 1: a local refusal keeps the connection", n)
			}
			checkLedger(t, s, msgs, res)
			for _, m := range s.Accepted() {
				if m.To[0] == tc.msg.To[0] && string(m.Data) != string(tc.msg.Data) {
					t.Errorf("server got %q, want %q", m.Data, tc.msg.Data)
				}
			}
		})
	}
}

func TestFaultEHLO(t *testing.T) {
	cases := []struct {
		code     string
		helo     bool
		tls      sender.TLSMode
		wantCode int   // of the *ReplyError Dial returns; 0: Dial succeeds
		wantErr  error // or the error it wraps
	}{
		{code: "502 5.5.1 EHLO not implemented", helo: true, tls: sender.TLSOpportunistic},
		{code: "500 5.5.2 what?", helo: true, tls: sender.TLSNone},
		{code: "502 5.5.1 EHLO not implemented", helo: true, tls: sender.TLSRequired, wantErr: sender.ErrNoTLS},
		{code: "421 4.3.2 busy", wantCode: 421, tls: sender.TLSOpportunistic},
		{code: "451 4.3.0 try later", wantCode: 451, tls: sender.TLSOpportunistic},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/tls=%s", tc.code, tc.tls), func(t *testing.T) {
			s := startFault(t, faultOpts{OnCommand: func(c *fconn, verb, line string) bool {
				if verb != "EHLO" {
					return false
				}
				c.Reply(tc.code)
				return true
			}})
			cfg := faultConfig(s)
			cfg.TLS = tc.tls
			c, err := sender.Dial(context.Background(), cfg, 1)
			helos := s.CommandCount("HELO ")
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Dial: %v, want %v", err, tc.wantErr)
				}
			case tc.wantCode != 0:
				re, ok := errorsAs[*sender.ReplyError](err)
				if !ok || re.Reply.Code != tc.wantCode {
					t.Fatalf("Dial: %v, want a *ReplyError %d", err, tc.wantCode)
				}
			default:
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				defer c.Close()
				if h := c.Hello(); h.Code != 250 || h.Text != "fault.test" {
					t.Errorf("Hello() %+v, want the HELO reply", h)
				}
				if len(c.Extensions()) != 0 {
					t.Errorf("extensions %v after HELO, want none", c.Extensions())
				}
				if _, err := c.Send(context.Background(), testMessage(0), noCommit); err != nil {
					t.Fatalf("Send after HELO: %v", err)
				}
				if n := len(s.Accepted()); n != 1 {
					t.Errorf("server accepted %d, want 1", n)
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.helo]; helos != want {
				t.Errorf("server saw %d HELO, want %d", helos, want)
			}
		})
	}
}

func TestFaultSTARTTLS(t *testing.T) {
	srvTLS, roots := testCert()
	trusting := &tls.Config{RootCAs: roots}

	t.Run("required, not offered", func(t *testing.T) {
		s := startFault(t, faultOpts{})
		cfg := faultConfig(s)
		cfg.TLS = sender.TLSRequired
		if _, err := sender.Dial(context.Background(), cfg, 1); !errors.Is(err, sender.ErrNoTLS) {
			t.Fatalf("Dial: %v, want ErrNoTLS", err)
		}
		pcfg := faultPoolConfig(s)
		pcfg.Dial = cfg
		res, err := runJobs(t, pcfg, testMessages(3), nil)
		if !errors.Is(err, sender.ErrNoTLS) {
			t.Errorf("Run: %v, want ErrNoTLS", err)
		}
		if len(res) != 0 {
			t.Errorf("%d jobs reported, want none", len(res))
		}
		if n := s.CommandCount("MAIL"); n != 0 {
			t.Errorf("server saw %d MAIL in plain text, want none", n)
		}
	})

	for _, mode := range []sender.TLSMode{sender.TLSRequired, sender.TLSOpportunistic} {
		t.Run("self-signed, verification on/tls="+mode.String(), func(t *testing.T) {
			s := startFault(t, faultOpts{TLS: srvTLS})
			cfg := faultConfig(s)
			cfg.TLS = mode
			_, err := sender.Dial(context.Background(), cfg, 1)
			var ua x509.UnknownAuthorityError
			if !errors.As(err, &ua) {
				t.Fatalf("Dial: %v, want an unknown authority error", err)
			}
			if n := s.CommandCount("MAIL"); n != 0 {
				t.Errorf("server saw %d MAIL, want none", n)
			}
		})
	}

	t.Run("trusted certificate", func(t *testing.T) {
		s := startFault(t, faultOpts{TLS: srvTLS, Ext: []string{"PIPELINING"}})
		cfg := faultConfig(s)
		cfg.TLS = sender.TLSRequired
		cfg.TLSConfig = trusting
		c := dialFault(t, cfg)
		if c.TLS() == nil {
			t.Fatalf("TLS() nil after STARTTLS")
		}
		if _, ok := c.Extension("STARTTLS"); ok {
			t.Errorf("extensions still list STARTTLS: EHLO not sent again after TLS")
		}
		d, err := c.Send(context.Background(), testMessage(0), noCommit)
		if err != nil || d.Data.Code != 250 {
			t.Fatalf("Send: %v %+v", err, d)
		}
		if err := c.Quit(); err != nil {
			t.Errorf("Quit: %v", err)
		}
		conns := s.Conns()
		if len(conns) != 1 || conns[0].EHLOs != 2 {
			t.Fatalf("server saw %+v, want one connection with 2 EHLO", conns)
		}
		if got, want := fmt.Sprint(conns[0].Verbs()), "[EHLO STARTTLS EHLO MAIL RCPT DATA QUIT]"; got != want {
			t.Errorf("commands %s, want %s", got, want)
		}
		if n := len(s.Accepted()); n != 1 {
			t.Errorf("server accepted %d, want 1", n)
		}
	})

	t.Run("reply injected with the 220", func(t *testing.T) {
		s := startFault(t, faultOpts{TLS: srvTLS, OnCommand: on("STARTTLS", nil, func(c *fconn, _ string) {
			c.Write("220 go ahead\r\n250 injected\r\n")
			c.Stall()
		})})
		cfg := faultConfig(s)
		cfg.TLS = sender.TLSRequired
		cfg.TLSConfig = trusting
		_, err := sender.Dial(context.Background(), cfg, 1)
		if !errors.Is(err, sender.ErrStrayReply) {
			t.Fatalf("Dial: %v, want ErrStrayReply", err)
		}
		if n := len(s.Conns()[0].Lines); n != 2 {
			t.Errorf("server saw %q, want EHLO and STARTTLS only", s.Conns()[0].Lines)
		}
	})
}

func TestFaultAUTH(t *testing.T) {
	const user, pass = "alice", "s3cret pass"
	users := map[string]string{user: pass}
	b64 := base64.StdEncoding.EncodeToString
	secrets := []string{pass, b64([]byte(pass)), b64([]byte("\x00" + user + "\x00" + pass))}

	// checkTrace checks that the trace has AUTH and that nothing the
	// client sent during it is shown.
	checkTrace := func(t *testing.T, trace, mech string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(trace, s) {
				t.Errorf("trace contains the secret %q:\n%s", s, trace)
			}
		}
		want := "> AUTH " + mech
		if mech == "PLAIN" {
			want = "> AUTH PLAIN [redacted]"
		}
		if !strings.Contains(trace, want) {
			t.Errorf("trace has no %q:\n%s", want, trace)
		}
		in := false
		for _, line := range strings.Split(trace, "\n") {
			f := strings.SplitN(line, " ", 4)
			if len(f) < 4 {
				continue
			}
			dir, text := f[2], f[3]
			switch {
			case dir == ">" && strings.HasPrefix(text, "AUTH "):
				in = true
			case dir == "<" && (strings.HasPrefix(text, "235") || strings.HasPrefix(text, "535")):
				in = false
			case in && dir == ">" && text != "[redacted]":
				t.Errorf("trace shows %q during AUTH", text)
			}
		}
	}

	for _, mech := range []string{"PLAIN", "LOGIN", "CRAM-MD5", ""} {
		t.Run("accepted/"+mech, func(t *testing.T) {
			s := startFault(t, faultOpts{Users: users})
			var trace bytes.Buffer
			cfg := faultConfig(s)
			cfg.Auth = &sender.Auth{Username: user, Password: pass, Mechanism: mech}
			cfg.Trace = sender.NewTrace(&trace)
			c := dialFault(t, cfg)
			if d, err := c.Send(context.Background(), testMessage(0), noCommit); err != nil || d.Data.Code != 250 {
				t.Fatalf("Send after AUTH: %v %+v", err, d)
			}
			if n := len(s.Accepted()); n != 1 {
				t.Errorf("server accepted %d, want 1", n)
			}
			if mech == "" {
				mech = "PLAIN"
			}
			checkTrace(t, trace.String(), mech)
		})
	}

	for _, mech := range []string{"PLAIN", "LOGIN", "CRAM-MD5"} {
		t.Run("refused/"+mech, func(t *testing.T) {
			s := startFault(t, faultOpts{Users: map[string]string{user: "other"}})
			var trace bytes.Buffer
			cfg := faultConfig(s)
			cfg.Auth = &sender.Auth{Username: user, Password: pass, Mechanism: mech}
			cfg.Trace = sender.NewTrace(&trace)
			_, err := sender.Dial(context.Background(), cfg, 1)
			ae, ok := errorsAs[*sender.AuthError](err)
			want := sender.Reply{Code: 535, Enhanced: "5.7.8", Text: "authentication credentials invalid"}
			if !ok || ae.Reply != want || ae.Mechanism != mech {
				t.Fatalf("Dial: %v, want a *AuthError %s %+v", err, mech, want)
			}
			for _, sec := range secrets {
				if strings.Contains(err.Error(), sec) {
					t.Errorf("error %q contains a secret", err)
				}
			}
			checkTrace(t, trace.String(), mech)
		})
	}

	t.Run("refused in a pool", func(t *testing.T) {
		s := startFault(t, faultOpts{Users: map[string]string{user: "other"}})
		cfg := faultPoolConfig(s)
		cfg.Workers = 3
		cfg.Dial.Auth = &sender.Auth{Username: user, Password: pass}
		res, err := runJobs(t, cfg, testMessages(10), nil)
		if _, ok := errorsAs[*sender.AuthError](err); !ok {
			t.Fatalf("Run: %v, want a *AuthError", err)
		}
		if len(res) != 0 {
			t.Errorf("%d jobs reported, want none: %v", len(res), res)
		}
		if n := s.CommandCount("MAIL"); n != 0 {
			t.Errorf("server saw %d MAIL, want none", n)
		}
	})

	t.Run("IsLoopback", func(t *testing.T) {
		for addr, want := range map[string]bool{
			"127.0.0.1:25": true, "[::1]:25": true, "localhost:25": true, "127.1.2.3:587": true,
			"192.0.2.1:25": false, "[2001:db8::1]:25": false, "mail.example.com:25": false, "localhost.example.com:25": false,
		} {
			if got := sender.IsLoopback(addr); got != want {
				t.Errorf("IsLoopback(%q) = %v, want %v", addr, got, want)
			}
		}
	})

	t.Run("[::1] allowed in plain text", func(t *testing.T) {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		s := serveFault(t, ln, faultOpts{Users: users})
		cfg := faultConfig(s)
		cfg.Auth = &sender.Auth{Username: user, Password: pass}
		c := dialFault(t, cfg)
		if _, err := c.Send(context.Background(), testMessage(0), noCommit); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("plain text to a host that is not loopback", func(t *testing.T) {
		t.Skip("needs a non-loopback peer; the refusal rests on IsLoopback, tested above")
	})
}

// wireForm is what a receiver must get for data: NUL dropped, every lone
// CR or LF made CRLF, and a final CRLF when the data does not end with one.
func wireForm(data string) string {
	s := strings.ReplaceAll(data, "\x00", "")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	s = strings.ReplaceAll(s, "\n", "\r\n")
	if s != "" && !strings.HasSuffix(s, "\r\n") {
		s += "\r\n"
	}
	return s
}

// bareLineEnd finds a CR not followed by LF or an LF not preceded by CR.
func bareLineEnd(b []byte) int {
	for i, c := range b {
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') || c == '\n' && (i == 0 || b[i-1] != '\r') {
			return i
		}
	}
	return -1
}

func TestFaultDotStuffing(t *testing.T) {
	bodies := map[string]string{
		"CRLF dot CRLF":        "Subject: a\r\n\r\nbefore\r\n.\r\nMAIL FROM:<evil@example.com>\r\nafter\r\n",
		"LF dot LF":            "Subject: a\r\n\r\nbefore\n.\nMAIL FROM:<evil@example.com>\nafter\r\n",
		"CR dot CRLF":          "Subject: a\r\n\r\nbefore\r.\r\nafter\r\n",
		"LF dot CRLF":          "Subject: a\r\n\r\nbefore\n.\r\nafter\r\n",
		"CRLF NUL dot CRLF":    "Subject: a\r\n\r\nbefore\r\n\x00.\r\nafter\r\n",
		"CR dot CR":            "Subject: a\r\n\r\nbefore\r.\rafter\r\n",
		"lone dot":             ".",
		"lone dot line":        ".\r\n",
		"two dots":             "..",
		"three dots":           "...\r\n",
		"dot lines":            "Subject: a\r\n\r\n.\r\n..\r\n...\r\n.x\r\n",
		"QP soft break to dot": "Subject: a\r\n\r\nsoft=\r\n.break\r\n",
		"no trailing newline":  "Subject: a\r\n\r\nno end",
		"ends with a dot":      "Subject: a\r\n\r\nend\r\n.",
		"empty":                "",
	}
	for name, body := range bodies {
		for _, chunking := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/chunking=%v", name, chunking), func(t *testing.T) {
				t.Parallel()
				o := faultOpts{}
				if chunking {
					o.Ext = []string{"CHUNKING"}
				}
				s := startFault(t, o)
				c := dialFault(t, faultConfig(s))
				m := testMessage(0)
				m.Data = []byte(body)
				d, err := c.Send(context.Background(), m, noCommit)
				if err != nil || d.Data.Code != 250 {
					t.Fatalf("Send: %v %+v", err, d)
				}
				// A second message on the connection proves the first ended
				// where it should and nothing was left over.
				if d, err := c.Send(context.Background(), testMessage(1), noCommit); err != nil || d.Data.Code != 250 {
					t.Fatalf("second Send: %v %+v", err, d)
				}
				got := s.Received()
				if len(got) != 2 || len(s.Accepted()) != 2 {
					t.Fatalf("server read %d messages and accepted %d, want 2 and 2", len(got), len(s.Accepted()))
				}
				want := wireForm(body)
				if string(got[0].Data) != want {
					t.Errorf("server got %q, want %q", got[0].Data, want)
				}
				if got[0].Chunked != chunking {
					t.Errorf("chunked %v, want %v", got[0].Chunked, chunking)
				}
				raw := got[0].Raw
				if i := bareLineEnd(raw); i >= 0 {
					t.Errorf("bare CR or LF at %d on the wire: %q", i, raw)
				}
				if bytes.IndexByte(raw, 0) >= 0 {
					t.Errorf("NUL on the wire: %q", raw)
				}
				if !chunking {
					wire := "\r\n" + string(raw) // the CRLF of the DATA line
					if n := strings.Count(wire, "\r\n.\r\n"); n != 1 || !strings.HasSuffix(wire, "\r\n.\r\n") {
						t.Errorf("%d end-of-data sequences on the wire, want exactly one, at the end: %q", n, raw)
					}
				}
			})
		}
	}
}

func TestFaultPoolConnections(t *testing.T) {
	t.Run("MaxPerConnection 5, 23 messages", func(t *testing.T) {
		t.Parallel()
		for _, pipe := range []bool{false, true} {
			o := faultOpts{}
			if pipe {
				o.Ext = []string{"PIPELINING"}
			}
			s := startFault(t, o)
			cfg := faultPoolConfig(s)
			cfg.MaxPerConnection = 5
			msgs := testMessages(23)
			res, err := runPool(t, cfg, msgs)
			if err != nil {
				t.Fatal(err)
			}
			for i := range msgs {
				if r := res[i]; r.Status != sender.Delivered || r.Attempts != 1 {
					t.Errorf("job %d: %s after %d attempts (%v)", i, r.Status, r.Attempts, r.Err)
				}
			}
			checkLedger(t, s, msgs, res)
			conns := s.Conns()
			if len(conns) != 5 {
				t.Errorf("pipelining=%v: %d connections, want 5", pipe, len(conns))
			}
			perConn := map[int]int{}
			for _, m := range s.Accepted() {
				perConn[m.Conn]++
			}
			for _, c := range conns {
				if perConn[c.ID] > 5 || perConn[c.ID] == 0 {
					t.Errorf("conn %d carried %d messages, want 1 to 5", c.ID, perConn[c.ID])
				}
				if !c.Quit {
					t.Errorf("conn %d closed without QUIT: %v", c.ID, c.Verbs())
				}
			}
		}
	})

	t.Run("421 at greeting beyond 2 connections", func(t *testing.T) {
		t.Parallel()
		s := startFault(t, faultOpts{OnConnect: func(c *fconn) bool {
			if c.s.Open() <= 2 {
				return false
			}
			c.Reply("421 4.7.0 fault.test too many connections from you")
			c.Close()
			return true
		}})
		cfg := faultPoolConfig(s)
		cfg.Workers = 6
		cfg.MaxErrors = 0 // the default
		msgs := testMessages(40)
		res, err := runPool(t, cfg, msgs)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkAllDelivered(t, s, msgs, res)
	})

	t.Run("421 at greeting beyond 2 connections for a while, then the pool regrows", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		const busy = 300 * time.Millisecond
		var mu sync.Mutex
		most := 0    // connections open at once after the busy spell
		refused := 0 // during it
		s := startFault(t, faultOpts{
			OnConnect: func(c *fconn) bool {
				if time.Since(start) < busy && c.s.Open() > 2 {
					mu.Lock()
					refused++
					mu.Unlock()
					c.Reply("421 4.7.0 fault.test busy, try later")
					c.Close()
					return true
				}
				if time.Since(start) >= busy {
					mu.Lock()
					most = max(most, c.s.Open())
					mu.Unlock()
				}
				return false
			},
			// A slow server, so that the run outlasts the busy spell.
			OnData: func(c *fconn, m *fmsg) bool { time.Sleep(5 * time.Millisecond); return false },
		})
		cfg := faultPoolConfig(s)
		cfg.Workers = 4
		msgs := testMessages(400)
		res, err := runPool(t, cfg, msgs)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkAllDelivered(t, s, msgs, res)
		if time.Since(start) < busy {
			t.Fatalf("the run ended within the busy spell: the test proves nothing")
		}
		mu.Lock()
		defer mu.Unlock()
		if refused == 0 {
			t.Fatalf("no connection was refused during the busy spell: the test proves nothing")
		}
		if most < 3 {
			t.Errorf("after the busy spell at most %d connections were open at once, want the pool back to more than 2", most)
		}
	})

	t.Run("421 at greeting beyond 2 connections, MaxErrors 3", func(t *testing.T) {
		t.Parallel()
		s := startFault(t, faultOpts{OnConnect: func(c *fconn) bool {
			if c.s.Open() <= 2 {
				return false
			}
			c.Reply("421 4.7.0 fault.test too many connections from you")
			c.Close()
			return true
		}})
		cfg := faultPoolConfig(s)
		cfg.Workers = 6
		cfg.MaxErrors = 3
		msgs := testMessages(40)
		res, err := runPool(t, cfg, msgs)
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		checkAllDelivered(t, s, msgs, res)
	})

	t.Run("circuit breaker: every connection closed at once", func(t *testing.T) {
		t.Parallel()
		s := startFault(t, faultOpts{OnConnect: func(c *fconn) bool { c.Close(); return true }})
		cfg := faultPoolConfig(s)
		cfg.Workers = 3
		cfg.MaxErrors = 3
		start := time.Now()
		res, err := runJobs(t, cfg, testMessages(20), nil)
		if be, ok := errorsAs[*sender.BreakerError](err); !ok || be.Failures < 3 {
			t.Fatalf("Run: %v, want a *BreakerError after 3 failures", err)
		}
		if len(res) != 0 {
			t.Errorf("%d jobs reported, want none: %v", len(res), res)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("took %v to stop", el)
		}
	})

	t.Run("circuit breaker: nothing listening", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		cfg := sender.PoolConfig{
			Dial:      sender.Config{Addr: addr, TLS: sender.TLSNone, Timeouts: quickTimeouts()},
			Workers:   2,
			Retries:   2,
			RetryWait: 10 * time.Millisecond, RetryMaxWait: 50 * time.Millisecond,
			MaxErrors: 3,
		}
		start := time.Now()
		res, err := runJobs(t, cfg, testMessages(10), nil)
		if _, ok := errorsAs[*sender.BreakerError](err); !ok {
			t.Fatalf("Run: %v, want a *BreakerError", err)
		}
		for id, r := range res {
			if r.Status == sender.Delivered {
				t.Errorf("job %d reported delivered", id)
			}
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("took %v to stop", el)
		}
	})

	t.Run("shared rate limiter", func(t *testing.T) {
		t.Parallel()
		s := startFault(t, faultOpts{Ext: []string{"PIPELINING"}})
		cfg := faultPoolConfig(s)
		cfg.Workers = 3
		cfg.Limiter = rate.NewLimiter(rate.Limit(1e6), 1)
		msgs := testMessages(20)
		res, err := runPool(t, cfg, msgs)
		if err != nil {
			t.Fatal(err)
		}
		if n := s.MaxConcurrent(); n > 3 {
			t.Errorf("server saw %d connections at once, want at most 3", n)
		}
		for i := range msgs {
			if res[i].Status != sender.Delivered {
				t.Errorf("job %d: %s (%v)", i, res[i].Status, res[i].Err)
			}
		}
		checkLedger(t, s, msgs, res)
	})
}

func TestFaultTransactionState(t *testing.T) {
	for _, pipe := range []bool{false, true} {
		t.Run(fmt.Sprintf("probe with Command, then Send/pipelining=%v", pipe), func(t *testing.T) {
			t.Parallel()
			o := faultOpts{}
			if pipe {
				o.Ext = []string{"PIPELINING"}
			}
			s := startFault(t, o)
			c := dialFault(t, faultConfig(s))
			ctx := context.Background()
			if r, err := c.Command(ctx, 25, "MAIL FROM:<probe@example.com>"); err != nil {
				t.Fatalf("MAIL probe: %v %+v", err, r)
			}
			if r, err := c.Command(ctx, 25, "RCPT TO:<probe@example.org>"); err != nil {
				t.Fatalf("RCPT probe: %v %+v", err, r)
			}
			d, err := c.Send(ctx, testMessage(0), noCommit)
			if err != nil || d.Mail.Code != 250 || d.Data.Code != 250 {
				t.Errorf("Send after a probe: %v, %+v; want delivered", err, d)
			}
			if v := s.Violations(); len(v) > 0 {
				t.Errorf("protocol violations: %q", v)
			}
			if a := s.Accepted(); len(a) != 1 || len(a[0].To) != 1 || a[0].To[0] != "user0@example.org" {
				t.Errorf("server accepted %d messages (%+v), want one to user0 only", len(a), a)
			}
		})
	}

	t.Run("RSET between messages", func(t *testing.T) {
		t.Parallel()
		for _, pipe := range []bool{false, true} {
			o := faultOpts{}
			if pipe {
				o.Ext = []string{"PIPELINING"}
			}
			s := startFault(t, o)
			c := dialFault(t, faultConfig(s))
			for i := 0; i < 3; i++ {
				if _, err := c.Send(context.Background(), testMessage(i), noCommit); err != nil {
					t.Fatal(err)
				}
			}
			// A message refused locally sends nothing and needs no RSET.
			big := testMessage(9)
			big.UTF8 = true
			if _, err := c.Send(context.Background(), big, noCommit); err == nil {
				t.Fatalf("a UTF8 envelope went to a server without SMTPUTF8")
			}
			if _, err := c.Send(context.Background(), testMessage(3), noCommit); err != nil {
				t.Fatal(err)
			}
			c.Quit()
			want := "[EHLO MAIL RCPT DATA RSET MAIL RCPT DATA RSET MAIL RCPT DATA RSET MAIL RCPT DATA QUIT]"
			if got := fmt.Sprint(s.Conns()[0].Verbs()); got != want {
				t.Errorf("pipelining=%v: commands %s, want %s", pipe, got, want)
			}
			if v := s.Violations(); len(v) > 0 {
				t.Errorf("protocol violations: %q", v)
			}
		}
	})
}

func TestFaultBodyStall(t *testing.T) {
	// Bigger than the loopback socket buffers, so the writes block.
	body := []byte("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 78)+"\r\n", 300_000))
	big := &sender.Message{From: "big@example.com", To: []string{"big@example.org"}, Data: body}
	short := func(t *sender.Timeouts) { t.DataBlock = time.Second }

	t.Run("client", func(t *testing.T) {
		s := startFault(t, faultOpts{OnCommand: on("DATA", nil, func(c *fconn, _ string) {
			c.Reply("354 go ahead")
			c.Freeze()
		})})
		cfg := faultConfig(s)
		short(&cfg.Timeouts)
		c := dialFault(t, cfg)
		d, err := c.Send(context.Background(), big, noCommit)
		if _, ok := errorsAs[*sender.ProtocolError](err); !ok || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Send: %v, want a *ProtocolError wrapping a deadline", err)
		}
		if d.Committed {
			t.Errorf("Committed, but the final dot never left")
		}
	})
	t.Run("pool", func(t *testing.T) {
		s := startFault(t, faultOpts{OnCommand: on("DATA", nil, func(c *fconn, _ string) {
			c.Reply("354 go ahead")
			c.Freeze()
		})})
		cfg := faultPoolConfig(s)
		short(&cfg.Dial.Timeouts)
		msgs := []*sender.Message{big, testMessage(1)}
		res, err := runJobs(t, cfg, msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The stalled attempt is retried, never in doubt. On a loaded machine
		// a slow reader can make a later attempt time out too: the count is
		// at least 2, not exactly 2.
		if r := res[0]; r.Status != sender.Delivered || r.Attempts < 2 {
			t.Errorf("job 0: %s after %d attempts (%v), want delivered after at least 2", r.Status, r.Attempts, r.Err)
		}
		checkLedger(t, s, msgs, res)
	})
}

func TestFaultSizeDeclared(t *testing.T) {
	s := startFault(t, faultOpts{Ext: []string{"SIZE 100000"}})
	m := testMessage(0)
	m.Data = []byte("Subject: lf\n\n" + strings.Repeat("line\n", 100))
	c := dialFault(t, faultConfig(s))
	if _, err := c.Send(context.Background(), m, noCommit); err != nil {
		t.Fatal(err)
	}
	a := s.Accepted()
	if len(a) != 1 {
		t.Fatalf("server accepted %d, want 1", len(a))
	}
	want := fmt.Sprintf("MAIL FROM:<%s> SIZE=%d", m.From, len(a[0].Data))
	if n := s.CommandCount(want); n != 1 {
		t.Errorf("server saw %q, want %q", s.Conns()[0].Lines[1], want)
	}
}

func TestFaultCommitError(t *testing.T) {
	for _, chunking := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunking=%v", chunking), func(t *testing.T) {
			o := faultOpts{}
			if chunking {
				o.Ext = []string{"CHUNKING"}
			}
			s := startFault(t, o)
			cfg := faultPoolConfig(s)
			journal := errors.New("journal: disk full")
			cfg.Commit = func(j *sender.Job, attempt int) error {
				if j.ID == 1 {
					return journal
				}
				return nil
			}
			msgs := testMessages(3)
			res, err := runJobs(t, cfg, msgs, nil)
			if !errors.Is(err, journal) {
				t.Fatalf("Run: %v, want the commit error", err)
			}
			if _, ok := res[1]; ok {
				t.Errorf("job 1 reported: %+v", res[1])
			}
			if _, ok := res[2]; ok {
				t.Errorf("job 2 reported after the run stopped: %+v", res[2])
			}
			if r := res[0]; r.Status != sender.Delivered {
				t.Errorf("job 0: %s, want delivered", r.Status)
			}
			// The server never got the end of job 1's data.
			if n := len(s.Received()); n != 1 {
				t.Errorf("server read %d messages in full, want 1", n)
			}
		})
	}
}

func TestFaultImplicitTLS(t *testing.T) {
	srvTLS, roots := testCert()
	implicit := func(stall bool) faultOpts {
		return faultOpts{OnConnect: func(c *fconn) bool {
			if stall {
				c.Freeze()
				return true
			}
			tc := tls.Server(c.nc, srvTLS)
			if err := tc.Handshake(); err != nil {
				c.Close()
				return true
			}
			c.nc, c.r, c.tls = tc, bufio.NewReader(tc), true
			c.Reply("220 fault.test ESMTP over TLS")
			return true
		}}
	}
	t.Run("handshake", func(t *testing.T) {
		s := startFault(t, implicit(false))
		cfg := faultConfig(s)
		cfg.ImplicitTLS = true
		cfg.TLS = sender.TLSRequired
		cfg.TLSConfig = &tls.Config{RootCAs: roots}
		c := dialFault(t, cfg)
		if c.TLS() == nil {
			t.Fatalf("TLS() nil")
		}
		if d, err := c.Send(context.Background(), testMessage(0), noCommit); err != nil || d.Data.Code != 250 {
			t.Fatalf("Send: %v %+v", err, d)
		}
		if got := fmt.Sprint(s.Conns()[0].Verbs()); got != "[EHLO MAIL RCPT DATA]" {
			t.Errorf("commands %s, want no STARTTLS", got)
		}
	})
	t.Run("handshake stall", func(t *testing.T) {
		s := startFault(t, implicit(true))
		cfg := faultConfig(s)
		cfg.ImplicitTLS = true
		cfg.TLSConfig = &tls.Config{RootCAs: roots}
		cfg.Timeouts.Connect = 300 * time.Millisecond
		start := time.Now()
		_, err := sender.Dial(context.Background(), cfg, 1)
		if !errors.Is(err, os.ErrDeadlineExceeded) || !strings.Contains(err.Error(), "TLS handshake") {
			t.Fatalf("Dial: %v, want a TLS handshake timeout", err)
		}
		if el := time.Since(start); el > 1500*time.Millisecond {
			t.Errorf("took %v", el)
		}
	})
}

func TestFaultDialCancel(t *testing.T) {
	srvTLS, roots := testCert()
	for _, stage := range []string{"EHLO before TLS", "EHLO after TLS"} {
		t.Run(stage, func(t *testing.T) {
			afterTLS := stage == "EHLO after TLS"
			s := startFault(t, faultOpts{TLS: srvTLS, OnCommand: func(c *fconn, verb, _ string) bool {
				if verb != "EHLO" || c.tls != afterTLS {
					return false
				}
				c.s.Signal()
				c.Stall()
				return true
			}})
			cfg := faultConfig(s)
			cfg.TLS = sender.TLSRequired
			cfg.TLSConfig = &tls.Config{RootCAs: roots}
			cfg.Timeouts.Command = 20 * time.Second
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				c, err := sender.Dial(ctx, cfg, 1)
				if c != nil {
					c.Close()
				}
				errc <- err
			}()
			s.WaitSignal(t)
			start := time.Now()
			cancel()
			select {
			case err := <-errc:
				if err == nil {
					t.Fatalf("Dial succeeded after its context ended")
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("Dial did not return after its context ended")
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Errorf("Dial took %v to notice the cancellation", el)
			}
		})
	}
}

func TestFaultLongLine(t *testing.T) {
	s := startFault(t, faultOpts{})
	m := testMessage(0)
	m.Data = []byte("Subject: long\r\n\r\n" + strings.Repeat("z", 999) + "\r\nshort\r\n")
	c := dialFault(t, faultConfig(s))
	_, err := c.Send(context.Background(), m, noCommit)
	if _, ok := errorsAs[*sender.LocalError](err); !ok {
		t.Errorf("Send: %v, want a *sender.LocalError", err)
	}
	if n := s.CommandCount("MAIL"); n != 0 {
		t.Errorf("server saw %d MAIL, want none", n)
	}
	// 998 octets is the limit, not over it.
	m.Data = []byte("Subject: long\r\n\r\n" + strings.Repeat("z", 998) + "\r\n")
	if d, err := c.Send(context.Background(), m, noCommit); err != nil || d.Data.Code != 250 {
		t.Errorf("Send with a 998-octet line: %v %+v", err, d)
	}
}

func TestFaultRunCancelledMidMessage(t *testing.T) {
	// The run is cancelled while a message waits for its final reply: the
	// message on the wire finishes and is reported; nothing else starts.
	s := startFault(t, faultOpts{OnData: firstData(func(c *fconn, m *fmsg) {
		c.s.Signal()
		c.s.WaitProceed()
		c.Accept(m)
		c.Reply(queuedReply(m))
	})})
	cfg := faultPoolConfig(s)
	var mu sync.Mutex
	results := map[int]sender.Result{}
	cfg.Done = func(r sender.Result) error {
		mu.Lock()
		defer mu.Unlock()
		results[r.Job.ID] = r
		return nil
	}
	msgs := testMessages(3)
	jobs := make(chan *sender.Job, len(msgs))
	for i, m := range msgs {
		jobs <- &sender.Job{ID: i, Msg: m}
	}
	close(jobs)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- sender.NewPool(cfg).Run(runCtx, jobs) }()
	s.WaitSignal(t)
	stop()
	s.Proceed()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		t.Fatal("Run did not return")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v, want context.Canceled", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if r, ok := results[0]; !ok || r.Status != sender.Delivered {
		t.Errorf("job 0: %+v, want delivered", r)
	}
	if len(results) != 1 {
		t.Errorf("%d jobs reported, want only the one on the wire", len(results))
	}
	if n := len(s.Accepted()); n != 1 {
		t.Errorf("server accepted %d, want 1", n)
	}
	if n := s.CommandCount("MAIL"); n != 1 {
		t.Errorf("server saw %d MAIL after the cancellation, want 1 in all", n)
	}
}
