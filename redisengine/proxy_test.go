package redisengine_test

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// proxy forwards TCP connections from a loopback listener to a Redis
// server. It can cut every connection, as a broken network does, and
// refuse new ones until opened again.
type proxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	refuse bool
	conns  map[net.Conn]bool
}

func startProxy(t testing.TB, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{t: t, ln: ln, target: target, conns: make(map[net.Conn]bool)}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "redis://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		p.mu.Unlock()
		if refuse {
			c.Close()
			continue
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		p.wg.Go(func() { p.forward(s, c) })
		p.wg.Go(func() { p.forward(c, s) })
	}
}

// forward copies from src to dst until either fails.
func (p *proxy) forward(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// cut closes every connection and refuses new ones until open.
func (p *proxy) cut() {
	p.mu.Lock()
	p.refuse = true
	for c := range p.conns {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.t.Logf("proxy: close: %v", err)
		}
	}
	clear(p.conns)
	p.mu.Unlock()
}

// open accepts connections again after cut.
func (p *proxy) open() {
	p.mu.Lock()
	p.refuse = false
	p.mu.Unlock()
}
