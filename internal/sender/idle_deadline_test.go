package sender

import (
	"bufio"
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestCheckIdleAfterReadDeadline: a connection that sat idle past the
// read deadline of its last reply still has its socket looked at. (A look
// through the read path fails once that deadline has passed, and read as
// "nothing pending" it hid a stray reply or a close.)
func TestCheckIdleAfterReadDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	strayed := make(chan struct{})
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		c.Write([]byte("220 test ESMTP\r\n"))
		r.ReadString('\n') // EHLO
		c.Write([]byte("250-test\r\n250 PIPELINING\r\n"))
		time.Sleep(300 * time.Millisecond) // past the client's read deadline
		c.Write([]byte("421 4.4.2 idle timeout\r\n"))
		close(strayed)
		r.ReadString('\n')
	}()
	cfg := Config{Addr: ln.Addr().String(), TLS: TLSNone, Timeouts: Timeouts{Command: 100 * time.Millisecond}}
	c, err := Dial(context.Background(), cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-strayed
	time.Sleep(50 * time.Millisecond)
	if err := c.CheckIdle(); !errors.Is(err, ErrStrayReply) {
		t.Fatalf("CheckIdle = %v, want %v", err, ErrStrayReply)
	}
}
