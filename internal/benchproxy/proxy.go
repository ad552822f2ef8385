// Package benchproxy is a TCP proxy that delays every byte by a fixed
// time in each direction, to measure a sender against a distant server
// on loopback. Bytes are held, not throttled: data read at t is written
// at t+Delay however much follows it, so a pipelining client gains what
// it would gain on a real long link, and a lock-step one pays a round
// trip of 2×Delay per command.
package benchproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards each connection it accepts to a target address.
type Proxy struct {
	ln     net.Listener
	target string
	delay  time.Duration

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start listens on addr ("" means 127.0.0.1:0, a free loopback port) and
// forwards every connection to target, delaying each direction by delay.
// It fails if addr cannot be listened on.
func Start(addr, target string, delay time.Duration) (*Proxy, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("benchproxy: listen: %w", err)
	}
	p := &Proxy{ln: ln, target: target, delay: delay, conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.serve)
	return p, nil
}

// Addr returns the host:port clients should connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops listening, closes every connection and waits for the
// forwarding goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

// track registers c so Close can end it; it reports false (and closes c)
// once the proxy is closing.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(client) {
			return
		}
		p.wg.Go(func() { p.handle(client) })
	}
}

func (p *Proxy) handle(client net.Conn) {
	defer p.untrack(client)
	server, err := net.DialTimeout("tcp", p.target, 10*time.Second)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	var wg sync.WaitGroup
	wg.Go(func() { pipe(server, client, p.delay) })
	wg.Go(func() { pipe(client, server, p.delay) })
	wg.Wait()
}

// chunk is what one read returned and when it may be written.
type chunk struct {
	data []byte
	due  time.Time
}

// pipe copies src to dst, each read written delay after it was read. A
// reader and a writer goroutine share a queue, so reading never waits for
// a delayed write: the link keeps its bandwidth and only gains latency.
// At the end of src the write side of dst is closed once the queue has
// drained; an error on either side closes both.
func pipe(dst, src net.Conn, delay time.Duration) {
	queue := make(chan chunk, 4096)
	var wg sync.WaitGroup
	wg.Go(func() {
		var timer *time.Timer
		for c := range queue {
			if wait := time.Until(c.due); wait > 0 {
				if timer == nil {
					timer = time.NewTimer(wait)
				} else {
					timer.Reset(wait)
				}
				<-timer.C
			}
			if _, err := dst.Write(c.data); err != nil {
				src.Close()
				dst.Close()
				for range queue {
				}
				return
			}
		}
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	})
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			queue <- chunk{data: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				dst.Close()
			}
			break
		}
	}
	close(queue)
	wg.Wait()
}
