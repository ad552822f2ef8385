package capture

import (
	"bytes"
	"net"
	"strconv"
	"strings"
	"sync"
)

// tapListener counts connections and hands out tapConns, which record
// the command verbs a client sends: enough for a test to see that RSET
// separates the messages on a connection, which the session interface of
// go-smtp cannot tell apart from its own internal resets.
type tapListener struct {
	net.Listener
	s *Server
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s := l.s
	s.mu.Lock()
	st := &ConnStats{ID: len(s.conns) + 1}
	s.conns = append(s.conns, st)
	s.open++
	s.maxOpen = max(s.maxOpen, s.open)
	s.mu.Unlock()
	return &tapConn{Conn: c, s: s, stats: st}, nil
}

// tapConn follows the conversation just far enough to tell commands from
// message data: it matches each reply the server writes to the command it
// answers, enters data mode on a 354 to DATA, leaves it at the lone dot,
// skips BDAT chunks, and stops at STARTTLS (what follows is encrypted).
type tapConn struct {
	net.Conn
	s     *Server
	stats *ConnStats

	mu       sync.Mutex
	in       []byte   // partial line read
	out      []byte   // partial line written
	awaiting []string // verbs sent and not yet answered
	data     bool     // inside DATA
	skip     int      // BDAT octets still to pass
	off      bool     // after STARTTLS
	closed   sync.Once
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		c.feedIn(p[:n])
		c.mu.Unlock()
	}
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.feedOut(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *tapConn) Close() error {
	c.closed.Do(func() {
		c.s.mu.Lock()
		c.s.open--
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}

func (c *tapConn) feedIn(p []byte) {
	for len(p) > 0 && !c.off {
		if c.skip > 0 {
			n := min(c.skip, len(p))
			c.skip -= n
			p = p[n:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.in = append(c.in, p...)
			return
		}
		line := strings.TrimRight(string(append(c.in, p[:i]...)), "\r")
		c.in = c.in[:0]
		p = p[i+1:]
		if c.data {
			if line == "." {
				c.data = false
			}
			continue
		}
		verb, arg, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		c.s.mu.Lock()
		c.stats.Commands = append(c.stats.Commands, verb)
		c.s.mu.Unlock()
		c.awaiting = append(c.awaiting, verb)
		if verb == "BDAT" {
			f := strings.Fields(arg)
			if len(f) > 0 {
				c.skip, _ = strconv.Atoi(f[0])
			}
		}
	}
}

func (c *tapConn) feedOut(p []byte) {
	c.out = append(c.out, p...)
	for {
		i := bytes.IndexByte(c.out, '\n')
		if i < 0 {
			return
		}
		line := string(c.out[:i])
		c.out = c.out[i+1:]
		if len(line) < 4 || line[3] != ' ' {
			continue // a continuation line, or the greeting's kind
		}
		if len(c.awaiting) == 0 {
			continue // the greeting
		}
		verb := c.awaiting[0]
		c.awaiting = c.awaiting[1:]
		switch {
		case verb == "DATA" && strings.HasPrefix(line, "354"):
			c.data = true
		case verb == "STARTTLS" && strings.HasPrefix(line, "220"):
			c.off = true
		}
	}
}
