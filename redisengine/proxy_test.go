package redisengine_test

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// proxy forwards TCP connections from a loopback listener to a NATS
// server. It can hold what clients send, so that confirmations stay
// pending for as long as a test needs, and cut every connection, as a
// broken network does.
type proxy struct {
	t      testing.TB
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	wake   *sync.Cond // held or the connections changed
	held   bool
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
	p.wake = sync.NewCond(&p.mu)
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
		p.wg.Go(func() { p.forward(s, c, true) })
		p.wg.Go(func() { p.forward(c, s, false) })
	}
}

// forward copies from src to dst until either fails; what a client sends
// waits while the proxy holds.
func (p *proxy) forward(dst, src net.Conn, fromClient bool) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		for fromClient && p.held && p.conns[src] {
			p.wake.Wait()
		}
		p.mu.Unlock()
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// hold stops forwarding what clients send; release resumes it.
func (p *proxy) hold()    { p.setHeld(true) }
func (p *proxy) release() { p.setHeld(false) }

func (p *proxy) setHeld(v bool) {
	p.mu.Lock()
	p.held = v
	p.wake.Broadcast()
	p.mu.Unlock()
}

// cut closes every connection, dropping what the proxy holds, and refuses
// new ones until open; it ends hold.
func (p *proxy) cut() {
	p.mu.Lock()
	p.refuse, p.held = true, false
	for c := range p.conns {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			p.t.Logf("proxy: close: %v", err)
		}
	}
	clear(p.conns)
	p.wake.Broadcast()
	p.mu.Unlock()
}

// open accepts connections again after cut.
func (p *proxy) open() {
	p.mu.Lock()
	p.refuse = false
	p.mu.Unlock()
}
