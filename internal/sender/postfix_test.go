package sender_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/sender"
)

// TestPostfixInterop sends through a private Postfix instance: its own
// configuration, queue and log in a temporary directory, listening on a
// free loopback port, every transport set to discard so nothing leaves the
// machine. The machine's own Postfix (/etc/postfix, /var/spool/postfix) is
// never read, started or touched.
//
// Four runs of 54 messages with four workers (pipelining or lock-step,
// BDAT or DATA) check every reply: 250 2.0.0 "queued as" for accepted
// messages, Postfix's exact code, enhanced code and text for refusals.
// Held messages are read back with postcat to check that bare LFs, dot
// lines and 8-bit text arrive intact. The maillog then shows each message
// queued exactly once, delivered to discard for exactly its accepted
// recipients, every session ended by QUIT, and no complaint about
// pipelining or bare LFs from guards that probes first show to be live.
func TestPostfixInterop(t *testing.T) {
	pf := startPostfix(t)
	pf.probeGuards(t)

	var ledger interopLedger
	modes := []struct {
		name         string
		noPipelining bool
		noChunking   bool
	}{
		{"pipelining/bdat", false, false},
		{"pipelining/data", false, true},
		{"lockstep/bdat", true, false},
		{"lockstep/data", true, true},
	}
	for run, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			cases := interopCases(run)
			msgs := make([]*sender.Message, len(cases))
			for i, c := range cases {
				msgs[i] = c.msg
			}
			cfg := sender.PoolConfig{
				Dial: sender.Config{
					Addr:         pf.addr,
					TLS:          sender.TLSOpportunistic, // Postfix here offers no STARTTLS
					LocalName:    "bulkmail.test",
					NoPipelining: mode.noPipelining,
					NoChunking:   mode.noChunking,
					Timeouts:     interopTimeouts,
				},
				Workers: 4,
			}
			results, err := runPool(t, cfg, msgs)
			if err != nil {
				t.Fatalf("pool: %v", err)
			}
			if len(results) != len(cases) {
				t.Fatalf("got %d results, want %d", len(results), len(cases))
			}
			for i, c := range cases {
				r := results[i]
				ledger.check(t, pf, run, i, c, r, mode.noPipelining, mode.noChunking)
			}
		})
	}

	t.Run("maillog", func(t *testing.T) { pf.checkLog(t, &ledger) })

	// Last, because Postfix opens a queue file for it that no Result
	// names, which the maillog check would count against the sender.
	t.Run("size", func(t *testing.T) { pf.checkSize(t) })
}

// postfixSizeLimit is message_size_limit, announced as SIZE.
const postfixSizeLimit = 1_000_000

// checkSize sends a message whose Data is under the SIZE limit only
// because its lines end in bare LFs: on the wire, with CRLF, it is over.
// RFC 1870 4 defines the size as the octets sent after the 354, CRLF pairs
// included, so the client must find the message too big itself, or
// declare a SIZE that makes Postfix refuse MAIL FROM; it must not send the
// data only to have it refused at the end.
func (pf *postfixInstance) checkSize(t *testing.T) {
	data := []byte("From: news@example.com\r\nSubject: size\r\n\r\n" + strings.Repeat("x\n", postfixSizeLimit*4/10))
	wire := len(crlfOnly(data))
	if len(data) >= postfixSizeLimit || wire <= postfixSizeLimit*11/10 {
		t.Fatalf("bad test message: %d octets, %d on the wire", len(data), wire)
	}
	msg := &sender.Message{From: "news@example.com", To: []string{"size@example.org"}, Data: data}
	cfg := sender.PoolConfig{Dial: sender.Config{Addr: pf.addr, TLS: sender.TLSNone}, Workers: 1}
	results, err := runPool(t, cfg, []*sender.Message{msg})
	if err != nil {
		t.Fatalf("pool: %v", err)
	}
	r := results[0]
	if r.Status == sender.Delivered {
		t.Fatalf("status %s, want not delivered: %d octets on the wire, limit %d", r.Status, wire, postfixSizeLimit)
	}
	if r.Delivery.Committed {
		t.Errorf("the message went out in full (%d octets on the wire, limit %d) instead of being refused before: SIZE=%d declared", wire, postfixSizeLimit, len(data))
	}
	var le *sender.LocalError
	var re *sender.ReplyError
	switch {
	case errors.As(r.Err, &le) && r.Status == sender.Failed:
	case errors.As(r.Err, &re) && r.Status == sender.Rejected && r.Delivery.Mail.Code == 552:
	default:
		t.Errorf("status %s, error %v, MAIL FROM reply %q; want a local refusal or 552 to MAIL FROM", r.Status, r.Err, r.Delivery.Mail)
	}
}

// interopTimeouts make a stalled Postfix fail a run well inside runPool's
// 60 s, with the step named, instead of at the RFC's minutes.
var interopTimeouts = sender.Timeouts{
	Connect: 5 * time.Second, Greeting: 20 * time.Second, Command: 20 * time.Second,
	Mail: 20 * time.Second, Rcpt: 20 * time.Second,
	DataInit: 20 * time.Second, DataBlock: 20 * time.Second, DataTerm: 20 * time.Second,
}

// interopCase is one message and what Postfix must make of it.
type interopCase struct {
	msg      *sender.Message
	msgID    string
	status   sender.Status
	rcpt     []sender.Reply // expected reply to each RCPT
	held     bool           // header_checks puts it on hold: its body is read back
	body     string         // for held messages: the body lines as Postfix stores them
	accepted []string       // recipients Postfix queues it for
}

// interopBody has bare LFs, a lone CR, lines that are only a dot (after
// CRLF and after a bare LF) and lines starting with dots. The client must
// put it on the wire with CRLF only and dot-stuffed; Postfix refuses any
// bare LF (smtpd_forbid_bare_newline = reject), and a "\n.\n" that reached
// it unchanged would end the message early.
const interopBody = "first line\n" +
	".\n" +
	"after a bare-LF dot line\r\n" +
	".\r\n" +
	"after a CRLF dot line\r\n" +
	"..two dots\n" +
	".starts with a dot\r\n" +
	"lone\rCR\r\n" +
	"last line, no line end"

// interopStored is interopBody as Postfix stores it, one record a line.
const interopStored = "first line\n" +
	".\n" +
	"after a bare-LF dot line\n" +
	".\n" +
	"after a CRLF dot line\n" +
	"..two dots\n" +
	".starts with a dot\n" +
	"lone\nCR\n" +
	"last line, no line end\n"

var (
	replyMailOK  = sender.Reply{Code: 250, Enhanced: "2.1.0", Text: "Ok"}
	replyRcptOK  = sender.Reply{Code: 250, Enhanced: "2.1.5", Text: "Ok"}
	blockedRcpt  = "blocked@example.org"
	replyBlocked = sender.Reply{Code: 550, Enhanced: "5.1.1", Text: "<blocked@example.org>: Recipient address rejected: Mailbox unavailable"}
)

func replyRelayDenied(addr string) sender.Reply {
	return sender.Reply{Code: 554, Enhanced: "5.7.1", Text: "<" + addr + ">: Relay access denied"}
}

// interopSpec describes one message of interopCases.
type interopSpec struct {
	to           []string
	status       sender.Status
	rcpt         []sender.Reply
	held         bool
	utf8         bool
	body, stored string // "" means interopBody, interopStored
}

// interopCases returns 54 messages for run: single-recipient messages
// with awkward line ends (some held for a content check), two refusals,
// three multi-recipient envelopes, an SMTPUTF8 envelope with an 8-bit
// body, and a message of several write blocks, spread through the list so
// they land on different connections among accepted messages.
func interopCases(run int) []interopCase {
	var cases []interopCase
	add := func(s interopSpec) {
		i := len(cases)
		if s.body == "" {
			s.body, s.stored = interopBody, interopStored
		}
		id := fmt.Sprintf("<interop-%d-%d@bulkmail.test>", run, i)
		var b strings.Builder
		b.WriteString("From: news@example.com\r\n")
		fmt.Fprintf(&b, "To: %s\n", s.to[0]) // a bare LF in the header too
		fmt.Fprintf(&b, "Subject: interop %d/%d\r\n", run, i)
		fmt.Fprintf(&b, "Message-ID: %s\r\n", id)
		if s.held {
			b.WriteString("X-Bulkmail-Hold: yes\r\n")
		}
		b.WriteString("\r\n")
		b.WriteString(s.body)
		var accepted []string
		if s.status == sender.Delivered {
			for k, r := range s.rcpt {
				if r.Code/100 == 2 {
					accepted = append(accepted, s.to[k])
				}
			}
		}
		cases = append(cases, interopCase{
			msg:      &sender.Message{From: "news@example.com", To: s.to, Data: []byte(b.String()), UTF8: s.utf8},
			msgID:    id,
			status:   s.status,
			rcpt:     s.rcpt,
			held:     s.held,
			body:     s.stored,
			accepted: accepted,
		})
	}
	addr := func(name string) string { return fmt.Sprintf("%s.%d.%d@example.org", name, run, len(cases)) }
	ok := func(n int) []sender.Reply { return slices.Repeat([]sender.Reply{replyRcptOK}, n) }
	for n := 0; n < 46; n++ {
		switch n {
		case 5:
			add(interopSpec{to: []string{blockedRcpt}, status: sender.Rejected, rcpt: []sender.Reply{replyBlocked}})
		case 10:
			body, stored := bigBody()
			add(interopSpec{to: []string{addr("big")}, status: sender.Delivered, rcpt: ok(1), held: true, body: body, stored: stored})
		case 14:
			a := fmt.Sprintf("user.%d.%d@elsewhere.test", run, len(cases))
			add(interopSpec{to: []string{a}, status: sender.Rejected, rcpt: []sender.Reply{replyRelayDenied(a)}})
		case 19:
			add(interopSpec{to: []string{addr("jörg")}, status: sender.Delivered, rcpt: ok(1), held: true, utf8: true,
				body: "Grüße aus Köln\n.\nÜberall\r\n", stored: "Grüße aus Köln\n.\nÜberall\n"})
		case 23:
			add(interopSpec{to: []string{addr("a"), addr("b"), addr("c")}, status: sender.Delivered, rcpt: ok(3)})
		case 28:
			add(interopSpec{to: []string{addr("latin")}, status: sender.Delivered, rcpt: ok(1), held: true,
				body: "caf\xe9 in Latin-1\r\n", stored: "caf\xe9 in Latin-1\n"})
		case 32:
			add(interopSpec{to: []string{addr("d"), blockedRcpt}, status: sender.Delivered, rcpt: []sender.Reply{replyRcptOK, replyBlocked}})
		case 41:
			// The first recipient decides: nothing may be queued for the
			// second, though Postfix accepted it.
			a := fmt.Sprintf("nobody.%d.%d@elsewhere.test", run, len(cases))
			add(interopSpec{to: []string{a, addr("e")}, status: sender.Rejected, rcpt: []sender.Reply{replyRelayDenied(a), replyRcptOK}})
		}
		add(interopSpec{to: []string{addr("user")}, status: sender.Delivered, rcpt: ok(1), held: n%9 == 4})
	}
	return cases
}

// bigBody returns a body of about 300 KB, several of the client's 64 KB
// write blocks, with a dot line or a bare LF every few lines, and how
// Postfix stores it.
func bigBody() (body, stored string) {
	var b, s strings.Builder
	for i := 0; i < 6000; i++ {
		line := fmt.Sprintf("line %05d of a long message, padded to about fifty octets", i)
		switch i % 7 {
		case 0:
			line = "." + line
		case 3:
			line = "."
		}
		end := "\r\n"
		if i%5 == 0 {
			end = "\n"
		}
		b.WriteString(line + end)
		s.WriteString(line + "\n")
	}
	return b.String(), s.String()
}

// crlfOnly is data with every line ended by CRLF, as BDAT must carry it.
func crlfOnly(data []byte) string {
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// interopLedger records every message Postfix took, across runs, for the
// maillog check.
type interopLedger struct {
	mu     sync.Mutex
	queued map[string]queuedMessage // by queue id
	// abandoned lists the refused first recipients of envelopes whose
	// later recipient Postfix accepted: smtpd opened a queue file for
	// them, which the client must abandon without sending the data.
	abandoned []string
}

type queuedMessage struct {
	name     string // "run/job" for messages
	msgID    string
	held     bool
	accepted []string
}

// queuedAs matches Postfix's reply to the end of the data: "Ok: queued as
// QUEUEID" after DATA, "Ok: 123 bytes queued as QUEUEID" after BDAT.
var queuedAs = regexp.MustCompile(`^Ok: (?:([0-9]+) bytes )?queued as ([0-9A-Za-z]+)$`)

// check compares one Result with what Postfix must have answered.
func (l *interopLedger) check(t *testing.T, pf *postfixInstance, run, job int, c interopCase, r sender.Result, noPipelining, noChunking bool) {
	t.Helper()
	name := fmt.Sprintf("job %d (%s)", job, strings.Join(c.msg.To, ","))
	if r.Job == nil {
		t.Errorf("%s: no result", name)
		return
	}
	if r.Status != c.status {
		t.Errorf("%s: status %s, want %s (err %v, delivery %+v)", name, r.Status, c.status, r.Err, r.Delivery)
		return
	}
	if r.Attempts != 1 {
		t.Errorf("%s: %d attempts, want 1", name, r.Attempts)
	}
	if r.Delivery.Mail != replyMailOK {
		t.Errorf("%s: MAIL reply %q, want %q", name, r.Delivery.Mail, replyMailOK)
	}
	if len(r.Delivery.Rcpt) != len(c.rcpt) {
		t.Fatalf("%s: %d RCPT replies, want %d", name, len(r.Delivery.Rcpt), len(c.rcpt))
	}
	for k, want := range c.rcpt {
		if got := r.Delivery.Rcpt[k]; got != want {
			t.Errorf("%s: RCPT %d reply %q, want %q", name, k+1, got, want)
		}
	}
	switch c.status {
	case sender.Rejected:
		var re *sender.ReplyError
		if !errors.As(r.Err, &re) || re.Reply != c.rcpt[0] {
			t.Errorf("%s: error %v, want the RCPT refusal %q", name, r.Err, c.rcpt[0])
		}
		if r.Delivery.Data.Code/100 == 2 || r.Delivery.Committed {
			t.Errorf("%s: data reply %q, committed %v: no data may go after a refused first recipient", name, r.Delivery.Data, r.Delivery.Committed)
		}
		if slices.ContainsFunc(c.rcpt[1:], func(r sender.Reply) bool { return r.Code/100 == 2 }) {
			l.mu.Lock()
			l.abandoned = append(l.abandoned, c.msg.To[0])
			l.mu.Unlock()
		}
		// Postfix answers a DATA pipelined after the refusal (RFC 2920 3.1).
		if !noPipelining && noChunking && len(c.msg.To) == 1 {
			if want := (sender.Reply{Code: 554, Enhanced: "5.5.1", Text: "Error: no valid recipients"}); r.Delivery.Data != want {
				t.Errorf("%s: reply to pipelined DATA %q, want %q", name, r.Delivery.Data, want)
			}
		}
		return
	case sender.Delivered:
	default:
		t.Fatalf("%s: bad case status %s", name, c.status)
	}
	d := r.Delivery.Data
	if d.Code != 250 || d.Enhanced != "2.0.0" || !strings.Contains(d.Text, "queued as") {
		t.Errorf("%s: data reply %q, want 250 2.0.0 Ok: queued as ...", name, d)
		return
	}
	m := queuedAs.FindStringSubmatch(d.Text)
	if m == nil || (m[1] != "") != !noChunking {
		t.Errorf("%s: data reply text %q, want \"Ok: [N bytes ]queued as QUEUEID\" (N for BDAT only)", name, d.Text)
		return
	}
	if n := len(crlfOnly(c.msg.Data)); m[1] != "" && m[1] != strconv.Itoa(n) {
		t.Errorf("%s: Postfix got %s octets by BDAT, want %d", name, m[1], n)
	}
	qid := m[2]
	refused := len(c.msg.To) - len(c.accepted)
	switch {
	case refused == 0 && r.Err != nil:
		t.Errorf("%s: delivered with error %v, want none", name, r.Err)
	case refused > 0 && (r.Err == nil || !strings.Contains(r.Err.Error(), "recipient 2 refused: 550 5.1.1")):
		t.Errorf("%s: error %v, want the refusal of recipient 2", name, r.Err)
	}
	l.mu.Lock()
	if l.queued == nil {
		l.queued = map[string]queuedMessage{}
	}
	prev, dup := l.queued[qid]
	l.queued[qid] = queuedMessage{name: fmt.Sprintf("run %d job %d", run, job), msgID: c.msgID, held: c.held, accepted: c.accepted}
	l.mu.Unlock()
	if dup {
		t.Errorf("%s: queue id %s already given to %s", name, qid, prev.name)
	}
	if c.held {
		got := pf.body(t, qid)
		if got != c.body {
			t.Errorf("%s: Postfix stored the body as\n%q\nwant\n%q", name, got, c.body)
		}
	}
}

// checkLog reads the maillog, once every message Postfix took has been
// discarded or put on hold, and checks that each was queued exactly once
// and that Postfix complained about nothing the client did.
func (pf *postfixInstance) checkLog(t *testing.T, l *interopLedger) {
	l.mu.Lock()
	queued, abandoned := l.queued, l.abandoned
	l.mu.Unlock()
	if len(queued) == 0 {
		t.Fatal("no message was queued")
	}

	type entry struct {
		clients, msgIDs, actives, holds, removed int
		msgID                                    string
		nrcpt                                    int
		sent                                     []string
	}
	var (
		entries map[string]*entry
		lines   []string
		opened  map[string]string // queue id to the refused first recipient before it
	)
	parse := func() bool {
		entries = map[string]*entry{}
		opened = map[string]string{}
		pending := map[string]string{} // smtpd pid to a refused first recipient
		lines = pf.logLines(t)
		get := func(qid string) *entry {
			e := entries[qid]
			if e == nil {
				e = &entry{}
				entries[qid] = e
			}
			return e
		}
		for _, line := range lines {
			prog, msg, ok := splitLogLine(line)
			if !ok {
				continue
			}
			if strings.HasSuffix(prog, "/smtpd") {
				pid := line[:strings.Index(line, "]: ")]
				to := pending[pid]
				delete(pending, pid)
				if qid, ok := strings.CutSuffix(msg, ": client=unknown[127.0.0.1]"); ok && to != "" {
					opened[qid] = to
				}
				for _, a := range abandoned {
					if strings.HasPrefix(msg, "NOQUEUE: reject: RCPT ") && strings.Contains(msg, " to=<"+a+"> ") {
						pending[pid] = a
					}
				}
			}
			qid, rest, ok := strings.Cut(msg, ": ")
			if !ok || !isQueueID(qid) {
				continue
			}
			e := get(qid)
			switch {
			case strings.HasSuffix(prog, "/smtpd") && strings.HasPrefix(rest, "client="):
				e.clients++
			case strings.HasSuffix(prog, "/cleanup") && strings.HasPrefix(rest, "message-id="):
				e.msgIDs++
				e.msgID = strings.TrimPrefix(rest, "message-id=")
			case strings.HasSuffix(prog, "/cleanup") && strings.HasPrefix(rest, "hold: "):
				e.holds++
			case strings.HasSuffix(prog, "/qmgr") && strings.HasPrefix(rest, "from="):
				e.actives++
				if _, after, ok := strings.Cut(rest, ", nrcpt="); ok {
					n, _, _ := strings.Cut(after, " ")
					e.nrcpt, _ = strconv.Atoi(n)
				}
			case strings.HasSuffix(prog, "/qmgr") && rest == "removed":
				e.removed++
			case strings.HasSuffix(prog, "/discard") && strings.HasPrefix(rest, "to=<") && strings.Contains(rest, "status=sent"):
				to, _, _ := strings.Cut(strings.TrimPrefix(rest, "to=<"), ">")
				e.sent = append(e.sent, to)
			}
		}
		for qid, q := range queued {
			e := entries[qid]
			if e == nil || (q.held && e.holds == 0) || (!q.held && e.removed == 0) {
				return false
			}
		}
		return true
	}
	// The log is written by postlogd a moment after the replies, and
	// delivery to discard runs after the 250: wait for the last entries.
	deadline := time.Now().Add(30 * time.Second)
	for !parse() {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for every queued message to be removed or held")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	byMsgID := map[string][]string{}
	for qid, e := range entries {
		if e.clients == 0 {
			continue // not from the sender's sessions (the probes queue nothing)
		}
		byMsgID[e.msgID] = append(byMsgID[e.msgID], qid)
		_, ok := queued[qid]
		_, ok2 := opened[qid]
		if !ok && !ok2 {
			t.Errorf("Postfix queued %s (message-id %s) but no Result says so", qid, e.msgID)
		}
	}
	for _, a := range abandoned {
		var qids []string
		for qid, to := range opened {
			if to == a {
				qids = append(qids, qid)
			}
		}
		if len(qids) != 1 {
			t.Errorf("after refusing <%s>, Postfix opened queue files %v, want one (for the accepted second recipient)", a, qids)
			continue
		}
		if e := entries[qids[0]]; e.msgIDs != 0 || e.holds != 0 || e.actives != 0 {
			t.Errorf("after refusing first recipient <%s>, queue file %s got the data", a, qids[0])
		}
	}
	for qid, q := range queued {
		e := entries[qid]
		if e == nil {
			t.Errorf("%s: queue id %s not in the maillog", q.name, qid)
			continue
		}
		if e.clients != 1 || e.msgIDs != 1 {
			t.Errorf("%s: queue id %s logged by smtpd %d times and by cleanup %d times, want once each", q.name, qid, e.clients, e.msgIDs)
		}
		if e.msgID != q.msgID {
			t.Errorf("%s: queue id %s has message-id %s, want %s", q.name, qid, e.msgID, q.msgID)
		}
		if ids := byMsgID[q.msgID]; len(ids) != 1 {
			t.Errorf("%s: message-id %s queued as %v, want exactly once", q.name, q.msgID, ids)
		}
		if q.held {
			if e.holds != 1 || e.actives != 0 {
				t.Errorf("%s: queue id %s held %d times, active %d times; want held once", q.name, qid, e.holds, e.actives)
			}
			continue
		}
		if e.actives != 1 || e.removed != 1 || e.nrcpt != len(q.accepted) {
			t.Errorf("%s: queue id %s active %d times with nrcpt=%d, removed %d times; want once with nrcpt=%d", q.name, qid, e.actives, e.nrcpt, e.removed, len(q.accepted))
		}
		got := slices.Sorted(slices.Values(e.sent))
		want := slices.Sorted(slices.Values(q.accepted))
		if !slices.Equal(got, want) {
			t.Errorf("%s: queue id %s discarded for %q, want %q", q.name, qid, got, want)
		}
	}

	conns := 0
	for _, line := range lines {
		_, msg, ok := splitLogLine(line)
		if !ok {
			continue
		}
		for _, bad := range []string{"improper command pipelining", "bare <LF>", "lost connection", "timeout after", "fatal:", "panic:"} {
			if strings.Contains(msg, bad) {
				t.Errorf("maillog: %q", line)
			}
		}
		if strings.HasPrefix(msg, "connect from ") {
			conns++
		}
		// Every session ends with QUIT, even after refusals.
		if strings.HasPrefix(msg, "disconnect from ") && !strings.Contains(msg, " quit=1 ") {
			t.Errorf("maillog: session without QUIT: %q", line)
		}
	}
	// One connection per worker and run, at most.
	if conns == 0 || conns > 4*4 {
		t.Errorf("maillog: %d connections, want 1 to 16", conns)
	}
}

// splitLogLine splits a maillog line into the program ("postfix-x/smtpd")
// and its message.
func splitLogLine(line string) (prog, msg string, ok bool) {
	head, msg, ok := strings.Cut(line, "]: ")
	if !ok {
		return "", "", false
	}
	head, _, _ = strings.Cut(head[strings.LastIndexByte(head, ' ')+1:], "[")
	return head, msg, true
}

func isQueueID(s string) bool {
	if len(s) < 6 || len(s) > 20 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// postfixInstance is a private Postfix: configuration, queue, data and
// log under one temporary directory.
type postfixInstance struct {
	dir, conf, queue, log string
	addr                  string
	postfix, postcat      string
	bareLF, pipelining    bool // the installed Postfix has the guard
	logStart              int  // maillog offset where the sender's sessions begin
	sessions              int  // SMTP sessions the test itself opened before logStart
}

// startPostfix sets up and starts a private instance, stopped when the test
// ends however it ends. It skips when Postfix is not installed or the test
// does not run as root (the master daemon must start as root).
func startPostfix(t *testing.T) *postfixInstance {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("Postfix interop test runs on Linux only")
	}
	bin := func(name string) string {
		for _, p := range []string{"/usr/sbin/" + name, "/usr/local/sbin/" + name} {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
		p, err := exec.LookPath(name)
		if err != nil {
			t.Skipf("Postfix is not installed (%s not found); .ci/run installs Debian's postfix package", name)
		}
		return p
	}
	pf := &postfixInstance{postfix: bin("postfix"), postcat: bin("postcat")}
	postconf := bin("postconf")
	if os.Geteuid() != 0 {
		t.Skip("Postfix interop test needs root: the Postfix master daemon starts as root")
	}
	param := func(name string) string {
		// An unknown parameter prints nothing on stdout and a warning on
		// stderr.
		out, err := exec.Command(postconf, "-dh", name).Output()
		if err != nil {
			t.Fatalf("postconf -dh %s: %v", name, err)
		}
		return strings.TrimSpace(string(out))
	}
	t.Logf("Postfix %s", param("mail_version"))
	pf.bareLF = param("smtpd_forbid_bare_newline") != ""
	pf.pipelining = param("smtpd_forbid_unauth_pipelining") != ""

	pf.dir = t.TempDir()
	// The daemons run as the postfix user and must reach the queue: the
	// testing package makes its directories 0700.
	for _, d := range []string{pf.dir, filepath.Dir(pf.dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for d := filepath.Dir(pf.dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			t.Fatalf("%s is not searchable by others (mode %v): the postfix user cannot reach its queue; set TMPDIR elsewhere", d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	pf.conf = filepath.Join(pf.dir, "conf")
	pf.queue = filepath.Join(pf.dir, "queue")
	pf.log = filepath.Join(pf.dir, "maillog")
	for _, d := range []string{pf.conf, pf.queue} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pf.write(t, "main.cf", pf.mainCF())
	pf.write(t, "recipient_access", blockedRcpt+" 550 5.1.1 Mailbox unavailable\n")
	pf.write(t, "header_checks", "/^X-Bulkmail-Hold:/ HOLD interop content check\n")

	t.Cleanup(func() { pf.stop(t) })
	t.Cleanup(func() {
		if t.Failed() {
			lines := pf.logLines(t)
			t.Logf("maillog (last %d lines):\n%s", min(len(lines), 80), strings.Join(lines[max(0, len(lines)-80):], "\n"))
		}
	})

	var err error
	for try := 0; try < 5; try++ {
		// Another process may take the port between Close and Postfix's
		// bind; then try another.
		var port int
		port, err = freePort()
		if err != nil {
			continue
		}
		pf.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		pf.write(t, "master.cf", masterCF(pf.addr))
		if try == 0 {
			if err = pf.run("check"); err != nil {
				t.Fatalf("postfix check: %v\n%s", err, pf.logTail(t, 20))
			}
		}
		if err = pf.run("start"); err == nil {
			break
		}
		if !strings.Contains(pf.logTail(t, 10), "in use") {
			t.Fatalf("postfix start: %v\n%s", err, pf.logTail(t, 20))
		}
		t.Logf("postfix start on %s: %v; trying another port", pf.addr, err)
	}
	if err != nil {
		t.Fatalf("postfix start: %v\n%s", err, pf.logTail(t, 20))
	}

	// Ready when smtpd greets; the one session this makes ends with QUIT.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", pf.addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(20 * time.Second))
			r := bufio.NewReader(c)
			greeting, err := r.ReadString('\n')
			if err == nil && strings.HasPrefix(greeting, "220 ") {
				_, err = c.Write([]byte("QUIT\r\n"))
			}
			if err == nil {
				_, err = r.ReadString('\n')
			}
			c.Close()
			if err != nil || !strings.HasPrefix(greeting, "220 ") {
				t.Fatalf("Postfix on %s: greeting %q, %v\n%s", pf.addr, greeting, err, pf.logTail(t, 20))
			}
			pf.sessions++
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Postfix does not accept connections on %s: %v\n%s", pf.addr, err, pf.logTail(t, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return pf
}

func (pf *postfixInstance) mainCF() string {
	var b strings.Builder
	set := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	set("compatibility_level", "3.6")
	set("queue_directory", pf.queue)
	set("data_directory", filepath.Join(pf.dir, "data"))
	set("mail_owner", "postfix")
	set("setgid_group", "postdrop")
	set("syslog_name", "postfix-bulkmail-test")
	set("maillog_file", pf.log)
	set("maillog_file_prefixes", pf.dir)
	set("myhostname", "mx.bulkmail.test")
	set("mydomain", "bulkmail.test")
	set("inet_interfaces", "127.0.0.1")
	set("inet_protocols", "ipv4")
	// Nothing is local, only example.org is relayed, and everything
	// relayed is discarded: no mail can leave the machine.
	set("mydestination", "")
	set("relay_domains", "example.org")
	set("mynetworks", "127.0.0.0/8")
	for _, tr := range []string{"default_transport", "local_transport", "relay_transport", "virtual_transport"} {
		set(tr, "discard")
	}
	set("alias_maps", "")
	set("alias_database", "")
	set("local_recipient_maps", "")
	set("smtpd_peername_lookup", "no")
	// No permit_mynetworks: the loopback client may send to example.org
	// only, so another domain gets Postfix's own "Relay access denied".
	set("smtpd_relay_restrictions", "reject_unauth_destination")
	set("smtpd_recipient_restrictions", "check_recipient_access texthash:"+filepath.Join(pf.conf, "recipient_access"))
	set("header_checks", "regexp:"+filepath.Join(pf.conf, "header_checks"))
	set("message_size_limit", strconv.Itoa(postfixSizeLimit))
	// The smuggling guards, for loopback clients too. reject, not
	// normalize: a bare LF from the client must fail the test, not be
	// quietly mended.
	if pf.bareLF {
		set("smtpd_forbid_bare_newline", "reject")
		set("smtpd_forbid_bare_newline_exclusions", "")
	}
	if pf.pipelining {
		set("smtpd_forbid_unauth_pipelining", "yes")
	}
	return b.String()
}

// masterCF lists only the services this test needs, none chrooted, with
// smtpd on addr alone.
func masterCF(addr string) string {
	return addr + ` inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
flush     unix  n       -       n       1000?   0       flush
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`
}

func (pf *postfixInstance) write(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(pf.conf, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// run runs "postfix -c CONF cmd". Postfix reports to the maillog, not to
// a stderr that is no terminal.
func (pf *postfixInstance) run(cmd string) error {
	out, err := exec.Command(pf.postfix, "-c", pf.conf, cmd).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// stop stops the instance and waits until none of its processes is left,
// so that the temporary directory can be removed.
func (pf *postfixInstance) stop(t *testing.T) {
	if err := pf.run("stop"); err != nil {
		t.Logf("postfix stop: %v (not running?)", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		pids := processesIn(pf.dir)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("Postfix processes %v still running in %s after stop; killing them", pids, pf.dir)
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// processesIn returns the processes whose working directory is under dir:
// every Postfix daemon works in its queue directory.
func processesIn(dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// logLines returns the maillog from logStart on, in whole lines.
func (pf *postfixInstance) logLines(t *testing.T) []string {
	b, err := os.ReadFile(pf.log)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Errorf("maillog: %v", err)
	}
	if pf.logStart <= len(b) {
		b = b[pf.logStart:]
	}
	if i := strings.LastIndexByte(string(b), '\n'); i >= 0 {
		b = b[:i]
	} else {
		return nil
	}
	return strings.Split(string(b), "\n")
}

func (pf *postfixInstance) logTail(t *testing.T, n int) string {
	b, _ := os.ReadFile(pf.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return "maillog: " + strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// body returns a queued message's body as Postfix stored it, one record a
// line.
func (pf *postfixInstance) body(t *testing.T, qid string) string {
	t.Helper()
	out, err := exec.Command(pf.postcat, "-c", pf.conf, "-bq", qid).Output()
	if err != nil {
		t.Errorf("postcat -bq %s: %v", qid, err)
		return ""
	}
	// The body starts with the empty line that ends the header.
	return strings.TrimPrefix(string(out), "\n")
}

// probeGuards shows that the guards are live, so that their silence later
// means something: a bare LF and a pipelined NOOP from a raw client are
// refused and logged. The sender's sessions are judged on the log after
// these lines.
func (pf *postfixInstance) probeGuards(t *testing.T) {
	t.Helper()
	var want []string
	if pf.bareLF {
		got := pf.rawSession(t, "NOOP\n")
		if !strings.HasPrefix(got, "550 5.5.2 ") || !strings.Contains(got, "bare <LF> received") {
			t.Fatalf("bare LF probe: Postfix answered %q, want 550 5.5.2 ... bare <LF> received", got)
		}
		want = append(want, "bare <LF> received")
	} else {
		t.Log("this Postfix has no smtpd_forbid_bare_newline: bare LFs are not refused")
	}
	if pf.pipelining {
		// NOOP may only end a pipelined group (RFC 2920 3.1).
		got := pf.rawSession(t, "NOOP\r\nNOOP\r\n")
		if !strings.HasPrefix(got, "554 5.5.0 ") {
			t.Fatalf("pipelining probe: Postfix answered %q, want 554 5.5.0 Error: SMTP protocol synchronization", got)
		}
		want = append(want, "improper command pipelining after NOOP")
	} else {
		t.Log("this Postfix has no smtpd_forbid_unauth_pipelining")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(pf.log)
		s := string(b)
		missing := slices.DeleteFunc(slices.Clone(want), func(w string) bool { return strings.Contains(s, w) })
		// Each session's disconnect line is its last.
		if len(missing) == 0 && strings.Count(s, "]: disconnect from ") == pf.sessions {
			pf.logStart = len(b)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("maillog lacks %q\n%s", missing, pf.logTail(t, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawSession says EHLO, writes send in one write and returns the first
// line Postfix answers to it.
func (pf *postfixInstance) rawSession(t *testing.T, send string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", pf.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	pf.sessions++
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	reply := func() string {
		var first string
		for i := 0; ; i++ {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("probe %q: reading reply: %v", send, err)
			}
			if i == 0 {
				first = strings.TrimRight(line, "\r\n")
			}
			if len(line) < 4 || line[3] != '-' {
				return first
			}
		}
	}
	if got := reply(); !strings.HasPrefix(got, "220 ") {
		t.Fatalf("probe: greeting %q", got)
	}
	if _, err := c.Write([]byte("EHLO probe.bulkmail.test\r\n")); err != nil {
		t.Fatal(err)
	}
	reply()
	if _, err := c.Write([]byte(send)); err != nil {
		t.Fatal(err)
	}
	return reply()
}
