package enginetest

import (
	"errors"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections from a loopback listener to a server
// (NATS, Redis). It can hold what clients send, so that confirmations
// stay pending for as long as a test needs, and cut every connection, as
// a broken network does.
type Proxy struct {
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

// StartProxy starts a proxy to target (host:port), stopped at cleanup.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &Proxy{t: t, ln: ln, target: target, conns: make(map[net.Conn]bool)}
	p.wake = sync.NewCond(&p.mu)
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.Cut()
		p.wg.Wait()
	})
	return p
}

// Addr returns the proxy's address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
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
		if p.refuse { // cut while dialing
			p.mu.Unlock()
			c.Close()
			s.Close()
			continue
		}
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		p.wg.Go(func() { p.forward(s, c, true) })
		p.wg.Go(func() { p.forward(c, s, false) })
	}
}

// forward copies from src to dst until either fails; what a client sends
// waits while the proxy holds.
func (p *Proxy) forward(dst, src net.Conn, fromClient bool) {
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

// Hold stops forwarding what clients send; Release resumes it.
func (p *Proxy) Hold()    { p.setHeld(true) }
func (p *Proxy) Release() { p.setHeld(false) }

func (p *Proxy) setHeld(v bool) {
	p.mu.Lock()
	p.held = v
	p.wake.Broadcast()
	p.mu.Unlock()
}

// Cut closes every connection, dropping what the proxy holds, and refuses
// new ones until Open; it ends Hold.
func (p *Proxy) Cut() {
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

// Open accepts connections again after Cut.
func (p *Proxy) Open() {
	p.mu.Lock()
	p.refuse = false
	p.mu.Unlock()
}
