package sender

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"syscall"

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
	// On TLS the socket also carries records the server may send on its
	// own (session tickets): only the buffered check applies.
	if _, isTLS := c.conn.(*tls.Conn); isTLS {
		return nil
	}
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
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
		return nil
	case perr == nil && n == 0:
		return c.fail("before the next command", fmt.Errorf("connection closed by the server: %w", io.EOF))
	case perr == nil && n > 0:
		return c.fail("before the next command", ErrStrayReply)
	case errors.Is(perr, unix.EAGAIN), errors.Is(perr, unix.EWOULDBLOCK):
		return nil
	}
	return c.fail("before the next command", perr)
}
