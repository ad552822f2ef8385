package sender_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultServer is a raw-protocol SMTP server driven by a script: by default
// it behaves (tracks MAIL/RCPT/DATA, un-stuffs the data, records what it
// accepted), and per-test hooks make it misbehave byte for byte. Every
// reply that accepts an address echoes it, so a test can tell that no row
// got another row's reply.
type faultServer struct {
	ln net.Listener
	o  faultOpts
	wg sync.WaitGroup

	mu       sync.Mutex
	conns    []*fconn
	raw      []net.Conn
	open     int
	maxOpen  int
	counters map[string]int
	received []*fmsg // every message whose data was read in full
	accepted []*fmsg // those answered with a 2xx
	closed   bool
	signal   chan struct{}
	proceed  chan struct{}
	closing  chan struct{}

	closeOnce sync.Once
}

// faultOpts scripts a faultServer. Hooks run on the connection's goroutine.
type faultOpts struct {
	// Greeting is the first line; "" means "220 fault.test ESMTP ready".
	Greeting string
	// Ext are the EHLO keywords announced after the greeting line.
	Ext []string
	// TLS, when set, offers STARTTLS.
	TLS *tls.Config
	// Users, when set, offers AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2 and
	// requires it (for XOAUTH2 the table holds the token).
	Users map[string]string
	// Lockstep checks, after every command but BDAT, that nothing else
	// arrives before its reply, and records a violation if it does.
	Lockstep bool
	// ExpectPipelining checks that RSET, MAIL and RCPT are each followed by
	// another command before they are answered, and records a violation if
	// not (a client that waits for each reply).
	ExpectPipelining bool
	// OnConnect runs before the greeting; true means it handled the
	// greeting (or closed the connection).
	OnConnect func(c *fconn) bool
	// OnCommand runs for every command line before the default handling;
	// true means it handled the command.
	OnCommand func(c *fconn, verb, line string) bool
	// OnData runs when a message's data is complete, before the default
	// "250 queued" reply; true means it handled the reply (call c.Accept
	// to count the message as accepted).
	OnData func(c *fconn, m *fmsg) bool
}

// fmsg is one message whose data the server read in full.
type fmsg struct {
	Conn    int
	From    string
	To      []string
	Data    []byte // un-stuffed
	Raw     []byte // as on the wire after the 354 (or the BDAT chunks), terminator included
	Chunked bool
}

// fconn is one connection of a faultServer.
type fconn struct {
	s  *faultServer
	ID int // 1, 2, ... in accept order

	nc  net.Conn
	r   *bufio.Reader
	tls bool

	// Session state, used by the connection's goroutine only.
	done    bool
	authed  bool
	hasMail bool
	from    string
	rcpts   []string
	bdat    []byte
	Msgs    int // messages whose data was read on this connection

	// Recorded under s.mu.
	lines      []string
	mark       int // index in lines where the server gave up (421), or -1
	violations []string
	quit       bool
	ehlos      int
}

// startFault starts a fault server on 127.0.0.1:0 for one test.
func startFault(t *testing.T, o faultOpts) *faultServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFault(t, ln, o)
}

// serveFault serves o on ln until the test ends.
func serveFault(t *testing.T, ln net.Listener, o faultOpts) *faultServer {
	s := &faultServer{ln: ln, o: o, counters: map[string]int{},
		signal: make(chan struct{}, 16), proceed: make(chan struct{}, 16), closing: make(chan struct{})}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

func (s *faultServer) Addr() string { return s.ln.Addr().String() }

// Close stops accepting, closes every connection and waits for them.
func (s *faultServer) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for _, c := range s.raw {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *faultServer) serve() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		c := &fconn{s: s, ID: len(s.conns) + 1, nc: nc, r: bufio.NewReader(nc), mark: -1}
		s.conns = append(s.conns, c)
		s.raw = append(s.raw, nc)
		s.open++
		s.maxOpen = max(s.maxOpen, s.open)
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				nc.Close()
				s.mu.Lock()
				s.open--
				s.mu.Unlock()
			}()
			c.session()
		}()
	}
}

// Count increments the named counter and returns its new value: "the Nth
// RCPT the server saw" across connections.
func (s *faultServer) Count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters[key]++
	return s.counters[key]
}

// Signal tells a waiting test that a hook reached its point.
func (s *faultServer) Signal() { s.signal <- struct{}{} }

// WaitSignal waits for a hook's Signal.
func (s *faultServer) WaitSignal(t *testing.T) {
	t.Helper()
	select {
	case <-s.signal:
	case <-time.After(10 * time.Second):
		t.Error("the server's hook never signalled")
	}
}

// Proceed lets a hook waiting in WaitProceed go on.
func (s *faultServer) Proceed() { s.proceed <- struct{}{} }

// WaitProceed waits for the test's Proceed (or the server's Close).
func (s *faultServer) WaitProceed() bool {
	select {
	case <-s.proceed:
		return true
	case <-time.After(10 * time.Second):
		return false
	}
}

// Accepted returns the messages answered with a 2xx.
func (s *faultServer) Accepted() []*fmsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*fmsg(nil), s.accepted...)
}

// Received returns every message whose data was read in full.
func (s *faultServer) Received() []*fmsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*fmsg(nil), s.received...)
}

// connLog is what the server saw on one connection.
type connLog struct {
	ID         int
	Lines      []string // command lines in order
	Mark       int      // index in Lines of the command the server gave up at (421 and the like), or -1
	Violations []string
	Quit       bool
	EHLOs      int
}

// Verbs returns the upper-case command verbs of the lines.
func (l connLog) Verbs() []string {
	var v []string
	for _, line := range l.Lines {
		verb, _, _ := strings.Cut(line, " ")
		if i := strings.IndexByte(verb, ':'); i >= 0 {
			verb = verb[:i]
		}
		v = append(v, strings.ToUpper(verb))
	}
	return v
}

// Conns returns what the server saw on each connection, in accept order.
func (s *faultServer) Conns() []connLog {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []connLog
	for _, c := range s.conns {
		out = append(out, connLog{
			ID: c.ID, Lines: append([]string(nil), c.lines...), Mark: c.mark,
			Violations: append([]string(nil), c.violations...), Quit: c.quit, EHLOs: c.ehlos,
		})
	}
	return out
}

// MaxConcurrent returns the largest number of connections open at once.
func (s *faultServer) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxOpen
}

// Open returns the number of connections open now.
func (s *faultServer) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// Violations returns every protocol violation seen on any connection.
func (s *faultServer) Violations() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var v []string
	for _, c := range s.conns {
		for _, x := range c.violations {
			v = append(v, fmt.Sprintf("conn %d: %s", c.ID, x))
		}
	}
	return v
}

// CommandCount counts the command lines (on every connection) that start
// with prefix, case-insensitively.
func (s *faultServer) CommandCount(prefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.conns {
		for _, l := range c.lines {
			if len(l) >= len(prefix) && strings.EqualFold(l[:len(prefix)], prefix) {
				n++
			}
		}
	}
	return n
}

// Write sends raw bytes in one write.
func (c *fconn) Write(s string) { c.nc.Write([]byte(s)) }

// Reply sends lines, each ended with CRLF, in one write.
func (c *fconn) Reply(lines ...string) { c.Write(strings.Join(lines, "\r\n") + "\r\n") }

// Bytewise sends s one byte per write: one byte per TCP segment (Go sets
// TCP_NODELAY).
func (c *fconn) Bytewise(s string) {
	for i := 0; i < len(s); i++ {
		c.nc.Write([]byte{s[i]})
	}
}

// Close ends the connection with a FIN.
func (c *fconn) Close() {
	c.done = true
	c.nc.Close()
}

// Reset ends the connection with a RST.
func (c *fconn) Reset() {
	c.done = true
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.nc.Close()
}

// GiveUp sends its last reply lines (a 421, or garbage), then answers
// nothing more: every line read later is recorded after a mark, until the
// client closes. A well-behaved client starts nothing new. The mark is set
// before the reply goes out, so a test never sees the client's reaction
// without it.
func (c *fconn) GiveUp(lines ...string) {
	c.s.mu.Lock()
	c.mark = len(c.lines)
	c.s.mu.Unlock()
	if len(lines) > 0 {
		c.Reply(lines...)
	}
	c.Stall()
}

// Freeze stops reading and answering until the test ends: the client's
// writes fill the TCP buffers and then block.
func (c *fconn) Freeze() {
	c.done = true
	<-c.s.closing
}

// Stall answers nothing more: it records what the client sends until the
// client (or the test's cleanup) closes the connection.
func (c *fconn) Stall() {
	c.done = true
	for {
		line, err := c.r.ReadString('\n')
		if line != "" {
			c.record(strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			return
		}
	}
}

// Violation records a protocol violation by the client.
func (c *fconn) Violation(format string, args ...any) {
	c.s.mu.Lock()
	c.violations = append(c.violations, fmt.Sprintf(format, args...))
	c.s.mu.Unlock()
}

func (c *fconn) record(line string) {
	c.s.mu.Lock()
	c.lines = append(c.lines, line)
	c.s.mu.Unlock()
}

// Accept records m as accepted (answered with a 2xx).
func (c *fconn) Accept(m *fmsg) {
	c.s.mu.Lock()
	c.s.accepted = append(c.s.accepted, m)
	c.s.mu.Unlock()
}

// followed reports whether more data from the client arrives within d.
func (c *fconn) followed(d time.Duration) bool {
	if c.r.Buffered() > 0 {
		return true
	}
	c.nc.SetReadDeadline(time.Now().Add(d))
	_, err := c.r.Peek(1)
	c.nc.SetReadDeadline(time.Time{})
	return err == nil
}

func (c *fconn) session() {
	if c.s.o.OnConnect != nil && c.s.o.OnConnect(c) {
		if c.done {
			return
		}
	} else {
		g := c.s.o.Greeting
		if g == "" {
			g = "220 fault.test ESMTP ready"
		}
		c.Reply(g)
	}
	for !c.done {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		c.record(line)
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		if i := strings.IndexByte(verb, ':'); i >= 0 {
			verb, arg = verb[:i], line[i+1:]
		}
		if c.s.o.Lockstep && verb != "BDAT" && verb != "QUIT" && c.followed(30*time.Millisecond) {
			c.Violation("%q was followed by another command before its reply (no PIPELINING offered)", line)
		}
		if c.s.o.ExpectPipelining && (verb == "RSET" || verb == "MAIL" || verb == "RCPT") && !c.followed(2*time.Second) {
			c.Violation("%q was not followed by the rest of its group before its reply", line)
		}
		if c.s.o.OnCommand != nil && c.s.o.OnCommand(c, verb, line) {
			continue
		}
		c.handle(verb, strings.TrimSpace(arg))
	}
}

// resetTxn forgets the transaction in progress.
func (c *fconn) resetTxn() {
	c.hasMail, c.from, c.rcpts, c.bdat = false, "", nil, nil
}

func (c *fconn) handle(verb, arg string) {
	switch verb {
	case "EHLO":
		c.s.mu.Lock()
		c.ehlos++
		c.s.mu.Unlock()
		c.resetTxn()
		lines := []string{"fault.test greets " + arg}
		lines = append(lines, c.s.o.Ext...)
		if c.s.o.TLS != nil && !c.tls {
			lines = append(lines, "STARTTLS")
		}
		if c.s.o.Users != nil {
			lines = append(lines, "AUTH PLAIN LOGIN CRAM-MD5 XOAUTH2")
		}
		for i := range lines {
			sep := "-"
			if i == len(lines)-1 {
				sep = " "
			}
			lines[i] = "250" + sep + lines[i]
		}
		c.Reply(lines...)
	case "HELO":
		c.resetTxn()
		c.Reply("250 fault.test")
	case "STARTTLS":
		if c.s.o.TLS == nil || c.tls {
			c.Reply("502 5.5.1 not offered")
			return
		}
		c.Reply("220 2.0.0 go ahead")
		tc := tls.Server(c.nc, c.s.o.TLS)
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			c.Close()
			return
		}
		tc.SetDeadline(time.Time{})
		c.nc, c.r, c.tls = tc, bufio.NewReader(tc), true
		c.resetTxn()
	case "AUTH":
		c.auth(arg)
	case "MAIL":
		switch {
		case c.s.o.Users != nil && !c.authed:
			c.Reply("530 5.7.0 authentication required")
		case c.hasMail:
			c.Violation("nested MAIL: %q", arg)
			c.Reply("503 5.5.1 sender already specified")
		default:
			c.hasMail, c.from = true, addrOf(arg)
			c.Reply("250 2.1.0 <" + c.from + "> sender ok")
		}
	case "RCPT":
		if !c.hasMail {
			c.Violation("RCPT without MAIL: %q", arg)
			c.Reply("503 5.5.1 need MAIL first")
			return
		}
		to := addrOf(arg)
		c.rcpts = append(c.rcpts, to)
		c.Reply("250 2.1.5 <" + to + "> recipient ok")
	case "DATA":
		switch {
		case !c.hasMail:
			c.Reply("503 5.5.1 need MAIL first")
		case len(c.rcpts) == 0:
			c.Reply("554 5.5.1 no valid recipients")
		default:
			c.Reply("354 go ahead")
			m, err := c.ReadData()
			if err != nil {
				c.done = true
				return
			}
			c.finishMessage(m)
		}
	case "BDAT":
		f := strings.Fields(arg)
		n := -1
		if len(f) > 0 {
			n, _ = strconv.Atoi(f[0])
		}
		if n < 0 {
			c.Reply("501 5.5.4 bad BDAT")
			c.Close()
			return
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(c.r, buf); err != nil {
			c.done = true
			return
		}
		c.bdat = append(c.bdat, buf...)
		if !c.hasMail || len(c.rcpts) == 0 {
			c.Reply("503 5.5.1 no transaction")
			c.bdat = nil
			return
		}
		if len(f) > 1 && strings.EqualFold(f[1], "LAST") {
			m := c.newMsg(c.bdat, c.bdat)
			m.Chunked = true
			c.finishMessage(m)
			return
		}
		c.Reply(fmt.Sprintf("250 2.0.0 %d octets received", n))
	case "RSET":
		c.resetTxn()
		c.Reply("250 2.0.0 reset")
	case "NOOP":
		c.Reply("250 2.0.0 ok")
	case "QUIT":
		c.s.mu.Lock()
		c.quit = true
		c.s.mu.Unlock()
		c.Reply("221 2.0.0 bye")
		c.Close()
	default:
		c.Reply("502 5.5.2 unknown command")
	}
}

func (c *fconn) newMsg(data, raw []byte) *fmsg {
	c.Msgs++
	return &fmsg{Conn: c.ID, From: c.from, To: append([]string(nil), c.rcpts...), Data: data, Raw: raw}
}

// ReadData reads message data up to the lone dot, un-stuffing it. It
// records the message as received.
func (c *fconn) ReadData() (*fmsg, error) {
	var data, raw []byte
	for {
		line, err := c.r.ReadBytes('\n')
		raw = append(raw, line...)
		if err != nil {
			return nil, err
		}
		if string(line) == ".\r\n" {
			return c.newMsg(data, raw), nil
		}
		if line[0] == '.' {
			line = line[1:]
		}
		data = append(data, line...)
	}
}

// finishMessage records m as received and answers it (through OnData
// when set).
func (c *fconn) finishMessage(m *fmsg) {
	c.s.mu.Lock()
	c.s.received = append(c.s.received, m)
	c.s.mu.Unlock()
	defer c.resetTxn()
	if c.s.o.OnData != nil && c.s.o.OnData(c, m) {
		return
	}
	c.Accept(m)
	c.Reply(queuedReply(m))
}

// queuedReply is the default acceptance, naming the first recipient.
func queuedReply(m *fmsg) string {
	to := ""
	if len(m.To) > 0 {
		to = m.To[0]
	}
	return fmt.Sprintf("250 2.0.0 <%s> queued as Q%d", to, m.Conn)
}

func (c *fconn) auth(arg string) {
	users := c.s.o.Users
	if users == nil {
		c.Reply("502 5.5.1 not offered")
		return
	}
	mech, initial, _ := strings.Cut(arg, " ")
	ok := func(user, pass string) {
		if want, found := users[user]; found && want == pass {
			c.authed = true
			c.Reply("235 2.7.0 authenticated")
			return
		}
		c.Reply("535 5.7.8 authentication credentials invalid")
	}
	readB64 := func() (string, bool) {
		line, err := c.r.ReadString('\n')
		if err != nil {
			c.done = true
			return "", false
		}
		line = strings.TrimRight(line, "\r\n")
		c.record(line)
		b, err := base64.StdEncoding.DecodeString(line)
		if err != nil {
			c.Reply("501 5.5.2 not base64")
			return "", false
		}
		return string(b), true
	}
	switch strings.ToUpper(mech) {
	case "PLAIN":
		b, err := base64.StdEncoding.DecodeString(initial)
		f := strings.Split(string(b), "\x00")
		if err != nil || len(f) != 3 {
			c.Reply("501 5.5.2 malformed")
			return
		}
		ok(f[1], f[2])
	case "LOGIN":
		c.Reply("334 " + base64.StdEncoding.EncodeToString([]byte("Username:")))
		user, good := readB64()
		if !good {
			return
		}
		c.Reply("334 " + base64.StdEncoding.EncodeToString([]byte("Password:")))
		pass, good := readB64()
		if !good {
			return
		}
		ok(user, pass)
	case "CRAM-MD5":
		challenge := fmt.Sprintf("<%d.%d@fault.test>", c.ID, time.Now().UnixNano())
		c.Reply("334 " + base64.StdEncoding.EncodeToString([]byte(challenge)))
		resp, good := readB64()
		if !good {
			return
		}
		user, digest, _ := strings.Cut(resp, " ")
		pass, found := users[user]
		mac := hmac.New(md5.New, []byte(pass))
		mac.Write([]byte(challenge))
		if found && hmac.Equal([]byte(digest), []byte(hex.EncodeToString(mac.Sum(nil)))) {
			c.authed = true
			c.Reply("235 2.7.0 authenticated")
			return
		}
		c.Reply("535 5.7.8 authentication credentials invalid")
	case "XOAUTH2":
		// user=U\x01auth=Bearer TOKEN\x01\x01; the table holds the token
		// as the password. A refusal comes as a 334 with a JSON error, then
		// a 535 after the client's empty line (Gmail's way).
		b, err := base64.StdEncoding.DecodeString(initial)
		f := strings.Split(string(b), "\x01")
		if err != nil || len(f) < 2 || !strings.HasPrefix(f[0], "user=") || !strings.HasPrefix(f[1], "auth=Bearer ") {
			c.Reply("501 5.5.2 malformed")
			return
		}
		user, token := strings.TrimPrefix(f[0], "user="), strings.TrimPrefix(f[1], "auth=Bearer ")
		if want, found := users[user]; found && want == token {
			c.authed = true
			c.Reply("235 2.7.0 authenticated")
			return
		}
		c.Reply("334 " + base64.StdEncoding.EncodeToString([]byte(`{"status":"401","schemes":"bearer"}`)))
		if _, err := c.r.ReadString('\n'); err != nil {
			c.done = true
			return
		}
		c.Reply("535 5.7.8 username and token not accepted")
	default:
		c.Reply("504 5.5.4 unknown mechanism")
	}
}

// addrOf takes the address out of "FROM:<a@b> SIZE=1" or "<a@b>".
func addrOf(arg string) string {
	if i := strings.IndexByte(arg, '<'); i >= 0 {
		if j := strings.IndexByte(arg[i:], '>'); j >= 0 {
			return arg[i+1 : i+j]
		}
	}
	return arg
}

// testCert is a self-signed certificate for 127.0.0.1, ::1 and localhost,
// made once per test binary.
var testCert = sync.OnceValues(func() (*tls.Config, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "fault.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	srv := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}
	return srv, pool
})

// errorsAs is errors.As for a fresh target, for table-driven checks.
func errorsAs[T error](err error) (T, bool) {
	var target T
	ok := errors.As(err, &target)
	return target, ok
}
