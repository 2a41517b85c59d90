package wshub

import (
	"runtime"
	"sync"
)

// writePool writes for the hub's clients from a few goroutines, one per
// CPU that Go may use (GOMAXPROCS), that live as long as the hub: a client whose queue gets something
// while its writer is idle joins the pool's queue, and a pool goroutine
// writes one batch of it without waiting (Client.writeTurn). Most writes
// to a socket take at once, so a delivery costs no goroutine of its own,
// nor the stack a new one grows to write; the few that would wait (a
// full socket, a ping, a close) go on to a goroutine of the client's.
// Clients wait in turn, so while one waits its queue gathers more for its
// next batch.
type writePool struct {
	once    sync.Once
	mu      sync.Mutex
	cond    sync.Cond
	head    *Client // the queue, linked by Client.nextWrite
	tail    *Client
	idle    int // goroutines waiting for a client
	stopped bool
	wg      sync.WaitGroup
}

// push queues c, whose writer's turn it takes; false if the pool has
// stopped, or writes nothing without waiting here.
func (p *writePool) push(c *Client) bool {
	if !rawWrites {
		return false
	}
	p.once.Do(p.start)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return false
	}
	if p.tail == nil {
		p.head = c
	} else {
		p.tail.nextWrite = c
	}
	p.tail = c
	if p.idle > 0 {
		p.cond.Signal()
	}
	return true
}

func (p *writePool) start() {
	p.cond.L = &p.mu
	n := runtime.GOMAXPROCS(0)
	p.wg.Add(n)
	for range n {
		go p.work()
	}
}

func (p *writePool) work() {
	defer p.wg.Done()
	io := newRawIO(nil)
	p.mu.Lock()
	for {
		for p.head == nil && !p.stopped {
			p.idle++
			p.cond.Wait()
			p.idle--
		}
		c := p.head
		if c == nil {
			p.mu.Unlock()
			return
		}
		if p.head = c.nextWrite; p.head == nil {
			p.tail = nil
		}
		c.nextWrite = nil
		p.mu.Unlock()
		c.writeTurn(io)
		p.mu.Lock()
	}
}

// stop ends the pool's goroutines once its queue is empty (the hub has no
// client writing by then); clients queue no more after.
func (p *writePool) stop() {
	p.once.Do(func() {}) // none starts after
	p.mu.Lock()
	p.stopped = true
	p.cond.Broadcast()
	p.mu.Unlock()
	p.wg.Wait()
}
