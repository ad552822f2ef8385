package sender

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// CheckIdle reports whether the server sent anything while nobody asked:
// a stray reply (which would be read as the answer to the next command)
// or the end of the connection (an idle timeout, a 421 on shutdown). Either
// way the connection must not carry another message; the error says which
// and the connection is marked broken. It does not block.
func (c *Client) CheckIdle() error {
	if c.broken != nil {
		return c.broken
	}
	return c.checkIdle()
}

func (c *Client) checkIdle() error {
	if n := c.text.R.Buffered(); n > 0 {
		return c.fail("before the next command", fmt.Errorf("%w (%d bytes)", ErrStrayReply, n))
	}
	pending, err := c.peek.socket(c.raw)
	switch {
	case err != nil:
		return c.fail("before the next command", err)
	case !pending:
		return nil
	}
	if _, isTLS := c.conn.(*tls.Conn); !isTLS {
		return c.fail("before the next command", ErrStrayReply)
	}
	// On TLS the bytes may be a record the server sends on its own (a
	// session ticket, consumed inside crypto/tls), a close_notify, or a
	// stray reply. A short read through TLS tells them apart; it waits only
	// when the socket had something to say.
	if err := c.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		return c.fail("before the next command", err)
	}
	_, err = c.text.R.Peek(1)
	switch {
	case err == nil:
		return c.fail("before the next command", ErrStrayReply)
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil
	}
	return c.fail("before the next command", fmt.Errorf("connection closed by the server: %w", err))
}

// peeker looks at the TCP socket under any TLS. It is set up once per
// connection and reused: the look runs before every command group, and
// nothing in it allocates.
type peeker struct {
	raw   syscall.RawConn // nil: not a socket (a test's pipe)
	done  bool            // raw is looked up
	look  func(fd uintptr)
	n     uintptr
	errno syscall.Errno
	b     [1]byte
}

// socket looks, without blocking or consuming, at conn, the TCP socket
// under any TLS: pending is true if the server sent something; an io.EOF
// error means the server closed the connection.
func (p *peeker) socket(conn net.Conn) (pending bool, err error) {
	if !p.done {
		p.done = true
		if sc, ok := conn.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				p.raw = raw
				p.look = p.recv
			}
		}
	}
	if p.raw == nil {
		return false, nil
	}
	// Control, not Read: Read refuses to run once the read deadline of
	// the last reply has passed, and a connection idle for that long is
	// the one most likely to have been closed or written to. The look never
	// waits (MSG_DONTWAIT), and a Client has one goroutine, so nothing
	// reads the socket meanwhile.
	err = p.raw.Control(p.look)
	switch {
	case err != nil:
		return false, nil
	case p.errno == 0 && p.n == 0:
		return false, fmt.Errorf("connection closed by the server: %w", io.EOF)
	case p.errno == 0:
		return true, nil
	case p.errno == unix.EAGAIN, p.errno == unix.EWOULDBLOCK:
		return false, nil
	}
	return false, p.errno
}

// recv is recvfrom(2) of one octet with MSG_PEEK|MSG_DONTWAIT, as
// unix.Recvfrom makes it but without the address it asks for (a TCP socket
// has none to give) and the allocations that cost.
func (p *peeker) recv(fd uintptr) {
	p.n, _, p.errno = unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
}
