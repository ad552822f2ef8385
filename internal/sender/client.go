package sender

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// TLSMode says whether a plain-text connection must be upgraded with
// STARTTLS.
type TLSMode int

const (
	// TLSRequired refuses to go on unless STARTTLS succeeds (or the
	// connection is implicit TLS from the start).
	TLSRequired TLSMode = iota
	// TLSOpportunistic upgrades when the server offers STARTTLS and goes on
	// in plain text when it does not. A handshake that fails is still an
	// error: an offered upgrade is never silently skipped.
	TLSOpportunistic
	// TLSNone never sends STARTTLS.
	TLSNone
)

// ParseTLSMode parses "required", "opportunistic" or "none".
func ParseTLSMode(s string) (TLSMode, error) {
	switch strings.ToLower(s) {
	case "required":
		return TLSRequired, nil
	case "opportunistic":
		return TLSOpportunistic, nil
	case "none":
		return TLSNone, nil
	}
	return 0, fmt.Errorf("sender: unknown TLS mode %q (want required, opportunistic or none)", s)
}

func (m TLSMode) String() string {
	switch m {
	case TLSRequired:
		return "required"
	case TLSOpportunistic:
		return "opportunistic"
	case TLSNone:
		return "none"
	}
	return "TLSMode(" + strconv.Itoa(int(m)) + ")"
}

// Timeouts bound every step of a conversation. The defaults are the
// minimums of RFC 5321 4.5.3.2; a zero field takes its default.
type Timeouts struct {
	Connect   time.Duration // TCP connect and TLS handshake (default 30s)
	Greeting  time.Duration // waiting for the 220 greeting (4.5.3.2.1: 5m)
	Command   time.Duration // EHLO, HELO, STARTTLS, AUTH, RSET, NOOP, VRFY, HELP, QUIT (5m)
	Mail      time.Duration // MAIL FROM (4.5.3.2.2: 5m)
	Rcpt      time.Duration // RCPT TO (4.5.3.2.3: 5m)
	DataInit  time.Duration // DATA until 354 (4.5.3.2.4: 2m)
	DataBlock time.Duration // each write of message data (4.5.3.2.5: 3m)
	DataTerm  time.Duration // final dot or BDAT LAST until its reply (4.5.3.2.6: 10m)
}

// DefaultTimeouts returns the RFC 5321 4.5.3.2 timeouts.
func DefaultTimeouts() Timeouts {
	return Timeouts{
		Connect:   30 * time.Second,
		Greeting:  5 * time.Minute,
		Command:   5 * time.Minute,
		Mail:      5 * time.Minute,
		Rcpt:      5 * time.Minute,
		DataInit:  2 * time.Minute,
		DataBlock: 3 * time.Minute,
		DataTerm:  10 * time.Minute,
	}
}

func (t Timeouts) withDefaults() Timeouts {
	d := DefaultTimeouts()
	fill := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	fill(&t.Connect, d.Connect)
	fill(&t.Greeting, d.Greeting)
	fill(&t.Command, d.Command)
	fill(&t.Mail, d.Mail)
	fill(&t.Rcpt, d.Rcpt)
	fill(&t.DataInit, d.DataInit)
	fill(&t.DataBlock, d.DataBlock)
	fill(&t.DataTerm, d.DataTerm)
	return t
}

// Config says how to reach and talk to one SMTP server.
type Config struct {
	// Addr is host:port of the server.
	Addr string
	// ImplicitTLS starts TLS before the greeting (smtps://, port 465).
	ImplicitTLS bool
	// TLS is the STARTTLS policy for a plain connection.
	TLS TLSMode
	// TLSConfig is used for both implicit TLS and STARTTLS. nil means the
	// system roots with ServerName set to the host of Addr. Certificates are
	// verified unless the caller sets InsecureSkipVerify.
	TLSConfig *tls.Config
	// LocalName is the name sent with EHLO/HELO; "" means the address
	// literal of the connection's local address, e.g. "[192.0.2.7]".
	LocalName string
	// Auth, when not nil, authenticates after TLS. See Auth.
	Auth *Auth
	// Timeouts bound each step; zero fields take RFC 5321 defaults.
	Timeouts Timeouts
	// NoPipelining sends one command at a time even where the server
	// offers PIPELINING.
	NoPipelining bool
	// NoChunking uses DATA even where the server offers CHUNKING.
	NoChunking bool
	// Trace, when not nil, receives the conversation with AUTH redacted.
	Trace *Trace
}

// Client is one SMTP connection. It is not safe for concurrent use: a
// pool gives each connection to one worker for its whole life.
type Client struct {
	cfg       Config
	host      string
	id        int
	conn      net.Conn
	text      *textproto.Conn
	isTLS     bool
	tlsState  *tls.ConnectionState
	greeting  Reply
	hello     Reply
	ext       map[string]string // EHLO keywords, upper case, to their parameters
	esmtp     bool
	txns      int        // transactions started on this connection
	used      bool       // Command sent something since the last transaction
	queued    *envelope  // sent by SendThen ahead of its turn
	dataBuf   []byte     // the last message's wire form, reused for the next
	replies   replyCache // one-line replies met before, by their line
	peek      peeker     // looks at raw before each command group
	raw       net.Conn   // the TCP connection under any TLS, for interrupt
	broken    error      // set once the conversation is out of step
	redacting bool       // inside AUTH: trace lines hide their arguments
}

// Dial connects, reads the greeting, says EHLO (HELO only when EHLO gets
// a 5xx), upgrades to TLS as cfg.TLS demands and authenticates. id names
// the connection in traces and results. On failure the connection is
// closed and the error is a *ReplyError (the server refused: a 421 or 554
// greeting, a 535 to AUTH) or a *ProtocolError.
func Dial(ctx context.Context, cfg Config, id int) (*Client, error) {
	cfg.Timeouts = cfg.Timeouts.withDefaults()
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("sender: server address %q: %w", cfg.Addr, err)
	}
	d := net.Dialer{Timeout: cfg.Timeouts.Connect}
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, &ProtocolError{Phase: "connecting to " + cfg.Addr, Err: err}
	}
	if cfg.LocalName == "" {
		cfg.LocalName = addressLiteral(conn.LocalAddr())
	}
	c := &Client{cfg: cfg, host: host, id: id, conn: conn, raw: conn, text: textproto.NewConn(conn)}
	stop := context.AfterFunc(ctx, c.interrupt)
	defer stop()
	if cfg.ImplicitTLS {
		if err := c.handshake(); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.start(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *Client) start() error {
	c.trace("*", "connected to "+c.cfg.Addr)
	if err := c.conn.SetDeadline(time.Now().Add(c.cfg.Timeouts.Greeting)); err != nil {
		return c.fail("waiting for greeting", err)
	}
	r, err := c.readReply("greeting")
	if err != nil {
		return err
	}
	c.greeting = r
	if r.Code != 220 {
		c.broken = &ReplyError{Command: "greeting", Reply: r}
		return c.broken
	}
	if err := c.sayHello(); err != nil {
		return err
	}
	if !c.isTLS && c.cfg.TLS != TLSNone {
		if _, ok := c.ext["STARTTLS"]; ok {
			if err := c.startTLS(); err != nil {
				return err
			}
		} else if c.cfg.TLS == TLSRequired {
			c.broken = &ProtocolError{Phase: "STARTTLS", Err: ErrNoTLS}
			return c.broken
		}
	}
	if c.cfg.Auth != nil {
		if err := c.authenticate(c.cfg.Auth); err != nil {
			return err
		}
	}
	return nil
}

// ErrNoTLS means TLS is required but the server does not offer STARTTLS.
var ErrNoTLS = errors.New("TLS is required but the server does not offer STARTTLS (use --tls=opportunistic or --tls=none to allow plain text)")

// sayHello sends EHLO and falls back to HELO only when EHLO is refused
// with a 5xx (RFC 5321 4.1.4). Anything else is an error, never a silent
// downgrade that would lose STARTTLS (HAZARDS 6).
func (c *Client) sayHello() error {
	r, err := c.cmd(c.cfg.Timeouts.Command, "EHLO", "EHLO %s", c.cfg.LocalName)
	if err == nil {
		c.hello = r
		c.esmtp = true
		c.ext = parseExtensions(r.Text)
		return nil
	}
	var re *ReplyError
	if !errors.As(err, &re) || !re.Reply.Permanent() || c.isTLS {
		return err
	}
	r, err = c.cmd(c.cfg.Timeouts.Command, "HELO", "HELO %s", c.cfg.LocalName)
	if err != nil {
		return err
	}
	c.hello = r
	c.esmtp = false
	c.ext = map[string]string{}
	return nil
}

// parseExtensions reads the EHLO reply: the first line greets, each later
// line is a keyword with optional parameters.
func parseExtensions(text string) map[string]string {
	ext := map[string]string{}
	lines := strings.Split(text, "\n")
	for _, line := range lines[1:] {
		kw, params, _ := strings.Cut(strings.TrimSpace(line), " ")
		if kw != "" {
			ext[strings.ToUpper(kw)] = params
		}
	}
	return ext
}

func (c *Client) startTLS() error {
	if _, err := c.cmd(c.cfg.Timeouts.Command, "STARTTLS", "STARTTLS"); err != nil {
		return err
	}
	// Anything the server sent after its 220 was sent before the
	// handshake: a man in the middle injecting replies (CVE-2011-0411).
	if n := c.text.R.Buffered(); n > 0 {
		return c.fail("STARTTLS", fmt.Errorf("%w: %d bytes after the 220 to STARTTLS, before the TLS handshake", ErrStrayReply, n))
	}
	if err := c.handshake(); err != nil {
		return err
	}
	// RFC 3207 4.2: forget what was learnt before TLS and ask again.
	c.ext = nil
	return c.sayHello()
}

func (c *Client) handshake() error {
	cfg := c.cfg.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{}
	} else {
		cfg = cfg.Clone()
	}
	if cfg.ServerName == "" {
		cfg.ServerName = c.host
	}
	tc := tls.Client(c.conn, cfg)
	if err := tc.SetDeadline(time.Now().Add(c.cfg.Timeouts.Connect)); err != nil {
		return c.fail("TLS handshake", err)
	}
	if err := tc.Handshake(); err != nil {
		return c.fail("TLS handshake", err)
	}
	st := tc.ConnectionState()
	c.conn = tc
	c.text = textproto.NewConn(tc)
	c.isTLS = true
	c.tlsState = &st
	c.trace("*", "TLS "+tls.VersionName(st.Version)+" "+tls.CipherSuiteName(st.CipherSuite))
	return nil
}

// Extension reports whether the server announced an EHLO keyword, and
// its parameters.
func (c *Client) Extension(name string) (string, bool) {
	p, ok := c.ext[strings.ToUpper(name)]
	return p, ok
}

// Extensions returns the EHLO keywords with their parameters.
func (c *Client) Extensions() map[string]string { return c.ext }

// Greeting returns the server's 220 greeting.
func (c *Client) Greeting() Reply { return c.greeting }

// Hello returns the reply to EHLO (or HELO).
func (c *Client) Hello() Reply { return c.hello }

// TLS returns the TLS state, or nil on a plain connection.
func (c *Client) TLS() *tls.ConnectionState { return c.tlsState }

// ID returns the number the pool gave this connection.
func (c *Client) ID() int { return c.id }

// Broken returns why the connection is out of step with the server, or
// nil if it can carry another command.
func (c *Client) Broken() error { return c.broken }

// Transactions returns how many messages were started on this connection.
func (c *Client) Transactions() int { return c.txns }

// Command sends one command line and reads its reply; a reply outside the
// expected class (2 = any 2xx, 25 = 250 or 251) is a *ReplyError. It is
// for commands outside a mail transaction: NOOP, HELP, VRFY, RSET, and
// MAIL/RCPT for a probe.
func (c *Client) Command(ctx context.Context, expect int, line string) (Reply, error) {
	stop := context.AfterFunc(ctx, c.interrupt)
	defer stop()
	c.used = true
	verb, _, _ := strings.Cut(line, " ")
	r, err := c.cmd(c.cfg.Timeouts.Command, strings.ToUpper(verb), "%s", line)
	if err != nil {
		return r, err
	}
	if !codeMatches(r.Code, expect) {
		return r, &ReplyError{Command: verb, Reply: r}
	}
	return r, nil
}

// Quit sends QUIT and closes the connection. Its error never changes the
// outcome of a message already answered (listmonk#2206).
func (c *Client) Quit() error {
	var err error
	// With an envelope sent ahead the server may be reading message data:
	// a QUIT would become part of it. Closing makes it drop the message.
	if c.broken == nil && c.queued == nil {
		_, err = c.cmd(c.cfg.Timeouts.Command, "QUIT", "QUIT")
	}
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close closes the connection without QUIT.
func (c *Client) Close() error {
	if c.broken == nil {
		c.broken = errClosed
	}
	c.trace("*", "closed")
	return c.conn.Close()
}

var errClosed = &ProtocolError{Phase: "using connection", Err: net.ErrClosed}

// interrupt makes every pending read and write fail at once; it runs when
// the caller's context ends. It uses the TCP connection, which TLS does
// not replace, so it never races with the handshake.
func (c *Client) interrupt() { c.raw.SetDeadline(time.Unix(1, 0)) }

// cmd is the one place a single command is written and its reply read.
// Any reply other than 2xx/3xx comes back as a *ReplyError; an I/O or
// parse failure as a *ProtocolError that also marks the connection broken,
// and so does a 421 (RFC 5321 3.8: the server is closing).
func (c *Client) cmd(timeout time.Duration, verb, format string, args ...any) (Reply, error) {
	if c.broken != nil {
		return Reply{}, c.broken
	}
	line := fmt.Sprintf(format, args...)
	if err := validateLine(line); err != nil {
		return Reply{}, err
	}
	// In lock-step, a reply already waiting would be taken as the answer
	// to this command and every later result would shift by one
	// (HAZARDS 7).
	if err := c.checkIdle(); err != nil {
		return Reply{}, err
	}
	if err := c.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return Reply{}, c.fail("sending "+verb, err)
	}
	c.traceCommand(line)
	if _, err := c.text.W.WriteString(line + "\r\n"); err != nil {
		return Reply{}, c.fail("sending "+verb, err)
	}
	if err := c.text.W.Flush(); err != nil {
		return Reply{}, c.fail("sending "+verb, err)
	}
	r, err := c.readReply(verb)
	if err != nil {
		return r, err
	}
	return r, c.check(verb, r)
}

// check turns a reply into the error the caller acts on: nil for 2xx and
// 3xx, a *ReplyError otherwise. A 421 also breaks the connection.
func (c *Client) check(verb string, r Reply) error {
	if r.Positive() {
		return nil
	}
	err := &ReplyError{Command: verb, Reply: r}
	if r.Code == 421 {
		c.broken = err
	}
	return err
}

// readReply reads one reply; failure breaks the connection.
func (c *Client) readReply(verb string) (Reply, error) {
	r, err := readReply(c.text.R, &c.replies)
	if err != nil {
		return Reply{}, c.fail("reading reply to "+verb, err)
	}
	if c.cfg.Trace != nil { // wire() is not free, and this is every reply
		c.trace("<", r.wire())
	}
	return r, nil
}

// fail records that the conversation is broken and returns why.
func (c *Client) fail(phase string, err error) error {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		c.broken = pe
		return pe
	}
	pe = &ProtocolError{Phase: phase, Err: err}
	c.broken = pe
	return pe
}

// validateLine refuses a command line that could carry a second command.
func validateLine(line string) error {
	if strings.ContainsAny(line, "\r\n\x00") {
		return fmt.Errorf("sender: command contains CR, LF or NUL: %q", line)
	}
	return nil
}

// codeMatches reports whether code is in the class expect names: 2 is any
// 2xx, 25 is 250-259, 250 is exactly 250.
func codeMatches(code, expect int) bool {
	switch {
	case expect < 10:
		return code/100 == expect
	case expect < 100:
		return code/10 == expect
	}
	return code == expect
}

func (r Reply) wire() string {
	lines := strings.Split(r.Text, "\n")
	var b strings.Builder
	for i, l := range lines {
		if i > 0 {
			b.WriteString("\n")
		}
		b.WriteString(strconv.Itoa(r.Code))
		if i < len(lines)-1 {
			b.WriteByte('-')
		} else {
			b.WriteByte(' ')
		}
		if r.Enhanced != "" {
			b.WriteString(r.Enhanced + " ")
		}
		b.WriteString(l)
	}
	return b.String()
}

// addressLiteral is the EHLO argument for a client without a fully
// qualified name: its own address in brackets (RFC 5321 4.1.4, 4.1.3).
func addressLiteral(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || tcp.IP == nil {
		return "localhost"
	}
	if ip4 := tcp.IP.To4(); ip4 != nil {
		return "[" + ip4.String() + "]"
	}
	return "[IPv6:" + tcp.IP.String() + "]"
}

// isLoopback reports whether host names this machine.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLoopback reports whether the host of addr (host:port) is loopback.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	return isLoopback(host)
}
