// Package capture is a small SMTP receiver that keeps what it is sent:
// the default target of bulkmail when no server is configured, the server
// behind `bulkmail sink` for rehearsing a job, and the real SMTP peer of
// the tests and benchmarks. It is built on github.com/emersion/go-smtp,
// so the client under test talks to an independent implementation of the
// protocol, never to a mock of it.
package capture

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Reply is a refusal (or any reply) the server gives instead of the
// default acceptance.
type Reply struct {
	Code     int    // e.g. 550
	Enhanced string // e.g. "5.1.1"; "" lets the server pick X.0.0
	Text     string
}

// Config configures a Server. The zero value accepts everything on a free
// loopback port and keeps messages in memory only.
type Config struct {
	// Addr to listen on; "" means 127.0.0.1:0, a free loopback port.
	Addr string
	// Dir, when set, receives each message as an .eml file.
	Dir string
	// Domain is the name in the greeting (default "bulkmail-capture").
	Domain string
	// Rcpt, when set, decides each RCPT TO: a non-nil Reply refuses it.
	Rcpt func(to string) *Reply
	// Data, when set, decides each message after its data: a non-nil
	// Reply refuses it (or, with a 2xx code, replaces the acceptance).
	Data func(m *Message) *Reply
	// MaxMessageBytes is announced with SIZE and enforced (default 64 MiB).
	MaxMessageBytes int64
	// TLSConfig, when set, offers STARTTLS.
	TLSConfig *tls.Config
	// Users, when set, offers AUTH PLAIN and LOGIN and requires it.
	Users map[string]string
	// KeepInMemory keeps every message's bytes for Messages even when Dir
	// is set. Without Dir they are always kept.
	KeepInMemory bool
}

// Message is one message as the server received it.
type Message struct {
	Conn     int // which connection carried it (1, 2, ... in accept order)
	From     string
	To       []string
	Data     []byte // as received, dot-unstuffed; nil if only written to Dir
	Size     int
	QueueID  string
	File     string // the .eml path, when Dir is set
	Received time.Time
}

// ConnStats is what the server saw on one connection.
type ConnStats struct {
	ID       int
	Messages int      // messages accepted
	Commands []string // command verbs in order (RSET, MAIL, RCPT, DATA, ...)
}

// Server is a running capture server.
type Server struct {
	cfg  Config
	srv  *smtp.Server
	ln   net.Listener
	done chan struct{}

	mu       sync.Mutex
	messages []Message
	conns    []*ConnStats
	open     int
	maxOpen  int
	seq      int
}

// Start listens and serves in the background until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Domain == "" {
		cfg.Domain = "bulkmail-capture"
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = 64 << 20
	}
	if cfg.Dir != "" {
		if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("capture: listen: %w", err)
	}
	s := &Server{cfg: cfg, ln: ln, done: make(chan struct{})}
	if cfg.Dir != "" {
		// Numbered on from the files already there, so that a resumed
		// run's messages sort after the earlier run's.
		s.seq = lastSeq(cfg.Dir)
	}
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Domain
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxRecipients = 1000
	srv.ReadTimeout = 5 * time.Minute
	srv.WriteTimeout = 5 * time.Minute
	srv.EnableSMTPUTF8 = true
	srv.TLSConfig = cfg.TLSConfig
	srv.AllowInsecureAuth = true
	srv.ErrorLog = discardLogger{}
	s.srv = srv
	go func() {
		defer close(s.done)
		srv.Serve(&tapListener{Listener: ln, s: s})
	}()
	return s, nil
}

// lastSeq returns the highest number of the files in dir named as store
// names them (six digits, '-', a 12-character queue id, ".eml"), or 0.
// Other files, however named, do not count. Numbers are unique within one
// server; two servers on one folder may repeat one, and the queue id keeps
// their files apart.
func lastSeq(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	last := 0
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() || len(name) != len("000000-")+12+len(".eml") || name[6] != '-' || !strings.HasSuffix(name, ".eml") {
			continue
		}
		if n, err := strconv.Atoi(name[:6]); err == nil && n > last && n < 999999 {
			last = n
		}
	}
	return last
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and closes every connection.
func (s *Server) Close() error {
	err := s.srv.Close()
	// go-smtp closes only the listeners Serve has registered; one that
	// Serve has not reached yet is closed here, or Serve would block.
	s.ln.Close()
	<-s.done
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// Messages returns a copy of every message received so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.messages...)
}

// Conns returns what the server saw on each connection, in accept order.
func (s *Server) Conns() []ConnStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ConnStats, len(s.conns))
	for i, c := range s.conns {
		out[i] = ConnStats{ID: c.ID, Messages: c.Messages, Commands: append([]string(nil), c.Commands...)}
	}
	return out
}

// MaxConcurrent returns the largest number of connections open at once.
func (s *Server) MaxConcurrent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxOpen
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	nc := c.Conn()
	if tc, ok := nc.(*tls.Conn); ok {
		nc = tc.NetConn()
	}
	stats := &ConnStats{}
	if tc, ok := nc.(*tapConn); ok {
		stats = tc.stats
	}
	return &session{s: s, stats: stats}, nil
}

func (s *Server) newQueueID() string {
	var b [8]byte
	rand.Read(b[:])
	return strings.ToUpper(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:12]
}

func (s *Server) store(m *Message) error {
	if s.cfg.Dir != "" {
		s.mu.Lock()
		s.seq++
		seq := s.seq
		s.mu.Unlock()
		name := fmt.Sprintf("%06d-%s.eml", seq, m.QueueID)
		m.File = filepath.Join(s.cfg.Dir, name)
		var hdr strings.Builder
		fmt.Fprintf(&hdr, "Return-Path: <%s>\r\n", m.From)
		for _, to := range m.To {
			fmt.Fprintf(&hdr, "X-Original-To: <%s>\r\n", to)
		}
		// 0600, as the journal and results: a message holds its
		// recipient's address and whatever the list merged into it. It is
		// written under a hidden name and renamed, so that a process
		// killed meanwhile (the message not yet acknowledged) leaves no
		// empty or cut .eml among the messages received.
		tmp := filepath.Join(s.cfg.Dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, append([]byte(hdr.String()), m.Data...), 0o600); err != nil {
			os.Remove(tmp)
			return err
		}
		if err := os.Rename(tmp, m.File); err != nil {
			os.Remove(tmp)
			return err
		}
		if !s.cfg.KeepInMemory {
			m.Data = nil
		}
	}
	s.mu.Lock()
	s.messages = append(s.messages, *m)
	s.mu.Unlock()
	return nil
}

type session struct {
	s     *Server
	stats *ConnStats
	from  string
	to    []string
	authd bool
}

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

func (ss *session) AuthMechanisms() []string {
	if ss.s.cfg.Users == nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) error {
		if want, ok := ss.s.cfg.Users[user]; ok && want == pass {
			ss.authd = true
			return nil
		}
		return smtp.ErrAuthFailed
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error { return check(user, pass) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if ss.s.cfg.Users != nil && !ss.authd {
		// RFC 4954 6: 530 5.7.0, where go-smtp's ErrAuthRequired says 502.
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.s.cfg.Rcpt != nil {
		if r := ss.s.cfg.Rcpt(to); r != nil {
			return r.smtpError()
		}
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := &Message{
		Conn:     ss.stats.ID,
		From:     ss.from,
		To:       append([]string(nil), ss.to...),
		Data:     data,
		Size:     len(data),
		QueueID:  ss.s.newQueueID(),
		Received: time.Now(),
	}
	var custom *Reply
	if ss.s.cfg.Data != nil {
		if custom = ss.s.cfg.Data(m); custom != nil && custom.Code/100 != 2 {
			return custom.smtpError()
		}
	}
	if err := ss.s.store(m); err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "cannot store message: " + err.Error()}
	}
	ss.s.mu.Lock()
	ss.stats.Messages++
	ss.s.mu.Unlock()
	if custom != nil {
		return custom.smtpError()
	}
	// go-smtp sends the code of a returned *SMTPError as it is, so a 250
	// carries the queue id operators trace messages by.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + m.QueueID}
}

func (r *Reply) smtpError() *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, Message: r.Text, EnhancedCode: smtp.EnhancedCodeNotSet}
	if r.Enhanced != "" {
		var a, b, c int
		if n, _ := fmt.Sscanf(r.Enhanced, "%d.%d.%d", &a, &b, &c); n == 3 {
			e.EnhancedCode = smtp.EnhancedCode{a, b, c}
		}
	}
	return e
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}

// loginServer is the server side of AUTH LOGIN, which go-sasl lacks: ask
// for the user name, then the password.
type loginServer struct {
	check func(user, pass string) error
	user  string
	step  int
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		if response != nil {
			l.user = string(response)
			l.step++
			return []byte("Password:"), false, nil
		}
		return []byte("Username:"), false, nil
	case 2:
		l.user = string(response)
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(l.user, string(response))
}
