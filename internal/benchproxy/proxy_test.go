package benchproxy_test

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/bulkmail/bulkmail/internal/benchproxy"
)

// startEcho runs a server on a free loopback port that echoes every
// connection back and closes its side at EOF.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func startProxy(t *testing.T, target string, delay time.Duration) *benchproxy.Proxy {
	t.Helper()
	p, err := benchproxy.Start("", target, delay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestProxyCarriesBytesBothWays(t *testing.T) {
	p := startProxy(t, startEcho(t), 0)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := bytes.Repeat([]byte("0123456789abcdef\r\n"), 50000) // ~900 KB, many reads
	go func() {
		c.Write(want)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes back, want the %d sent", len(got), len(want))
	}
}

func TestProxyDelaysEachDirection(t *testing.T) {
	const delay = 5 * time.Millisecond
	p := startProxy(t, startEcho(t), delay)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	for range 3 {
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		// A lower bound only: the proxy must add its delay both ways. How
		// much more a busy machine adds is not this test's business.
		if rtt := time.Since(start); rtt < 2*delay {
			t.Fatalf("round trip took %v, want at least %v", rtt, 2*delay)
		}
	}
}

func TestProxyCloseEndsConnections(t *testing.T) {
	p, err := benchproxy.Start("", startEcho(t), time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("x"))
	buf := make([]byte, 1)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	p.Close()
	if _, err := c.Read(buf); err == nil {
		t.Fatal("read after Close succeeded, want the connection closed")
	}
}
