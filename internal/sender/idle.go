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
	pending, err := peekSocket(c.raw)
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

// peekSocket looks, without blocking or consuming, at the TCP socket
// under any TLS: pending is true if the server sent something; an io.EOF
// error means the server closed the connection.
func peekSocket(conn net.Conn) (pending bool, err error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, nil
	}
	var (
		n    int
		perr error
		b    [1]byte
	)
	err = raw.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // never wait: this is a look, not a read
	})
	switch {
	case err != nil:
		return false, nil
	case perr == nil && n == 0:
		return false, fmt.Errorf("connection closed by the server: %w", io.EOF)
	case perr == nil:
		return true, nil
	case errors.Is(perr, unix.EAGAIN), errors.Is(perr, unix.EWOULDBLOCK):
		return false, nil
	}
	return false, perr
}
