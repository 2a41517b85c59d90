package wshub

import (
	"sync"
	"syscall"
)

// poller watches parked clients' sockets with one epoll instance per hub
// and one goroutine, started with the first client that parks and ended
// by the hub's Close or Shutdown.
type poller struct {
	once      sync.Once
	err       error // why there is no poller
	closeOnce sync.Once

	epfd int
	stop [2]int // a pipe whose read end in the set ends run
	done chan struct{}
	io   *rawIO // run's, for what woke a parked client (takePongs)

	mu      sync.Mutex
	clients map[int32]*Client // parked or once parked, by socket
}

// polling reports whether the hub has a poller, starting it if needed.
func (h *Hub) polling() bool {
	p := &h.poll
	p.once.Do(func() {
		if h.closing.Load() {
			p.err = ErrHubClosed
			return
		}
		p.err = p.start()
	})
	return p.err == nil
}

func (p *poller) start() error {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	if err := syscall.Pipe2(p.stop[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		syscall.Close(epfd)
		return err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: -1}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p.stop[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(p.stop[0])
		syscall.Close(p.stop[1])
		return err
	}
	p.epfd = epfd
	p.clients = make(map[int32]*Client)
	p.done = make(chan struct{})
	p.io = newRawIO(make([]byte, pollReadSize))
	go p.run()
	return nil
}

// watch arms fd for one wake-up of c: when it is readable, or closed by
// the peer. armed says fd is in the set already.
func (p *poller) watch(fd int32, c *Client, armed bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[fd] = c
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: fd}
	op := syscall.EPOLL_CTL_MOD
	if !armed {
		op = syscall.EPOLL_CTL_ADD
	}
	return syscall.EpollCtl(p.epfd, op, int(fd), &ev)
}

// forget drops c, whose connection is closed; the kernel dropped its
// socket from the set when it closed.
func (p *poller) forget(fd int32, c *Client) {
	if fd < 0 || p.clients == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.clients[fd] == c { // else the number went to a newer socket
		delete(p.clients, fd)
	}
}

func (p *poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == -1 {
				return
			}
			p.mu.Lock()
			c := p.clients[ev.Fd]
			p.mu.Unlock()
			if c != nil {
				c.takePongs(p.io)
			}
		}
	}
}

// close ends the poller, once no client is parked; none starts after.
func (p *poller) close() {
	p.once.Do(func() { p.err = ErrHubClosed })
	p.closeOnce.Do(func() {
		if p.done == nil {
			return
		}
		syscall.Write(p.stop[1], []byte{0})
		<-p.done
		syscall.Close(p.epfd)
		syscall.Close(p.stop[0])
		syscall.Close(p.stop[1])
	})
}

// rawWrites says that rawIO writes here.
const rawWrites = true

// pollReadSize is how much the poller reads from a woken client's socket
// at once: pongs, or the start of what the reader takes over.
const pollReadSize = 512

// rawIO makes reads and writes that do not wait, through a socket's
// RawConn, which keeps the socket from being closed under them. Each
// goroutine that uses one has its own: its closures are made once, so a
// call allocates nothing.
type rawIO struct {
	buf     []byte // read into, or written
	n       int
	err     error
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

func newRawIO(buf []byte) *rawIO {
	r := &rawIO{buf: buf}
	r.readFn = func(fd uintptr) bool {
		r.n, r.err = syscall.Read(int(fd), r.buf)
		return true
	}
	r.writeFn = func(fd uintptr) bool {
		r.n, r.err = syscall.Write(int(fd), r.buf)
		return true
	}
	return r
}

// readOnce reads what rc holds, up to len(r.buf), without waiting: n > 0
// bytes; 0 and nil at the end of the stream; 0 and EAGAIN if nothing is
// there; 0 and another error if the socket failed.
func (r *rawIO) readOnce(rc syscall.RawConn) (int, error) {
	r.n, r.err = 0, syscall.EAGAIN
	if err := rc.Read(r.readFn); err != nil {
		return 0, err
	}
	if r.n < 0 {
		r.n = 0
	}
	return r.n, r.err
}

// write writes p to rc without waiting and returns how many bytes it
// wrote.
func (r *rawIO) write(rc syscall.RawConn, p []byte) int {
	r.buf, r.n, r.err = p, 0, nil
	if rc.Write(r.writeFn) != nil || r.err != nil || r.n < 0 {
		r.n = 0
	}
	r.buf = nil
	return r.n
}

// takePongs handles what woke the parked client c, on the poller's
// goroutine. If it was only pongs, the client stays parked, and no
// goroutine starts: its socket is armed again. Else the reader starts,
// and reads first what was read here.
func (c *Client) takePongs(io *rawIO) {
	c.mu.Lock()
	if !c.parked { // woken already, to see its close
		c.mu.Unlock()
		return
	}
	c.parked = false // the reader's turn is this goroutine's
	c.mu.Unlock()
	if c.pongsOnly(io) {
		c.mu.Lock()
		if c.cause == nil && c.hub.poll.watch(c.fd, c, true) == nil {
			c.parked = true
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
	go c.serve(true)
}

// pongsOnly reads what the client's socket holds without waiting, and
// reports whether it was only pongs (or nothing). What else it read is
// left to the reader in the filter's pending bytes.
func (c *Client) pongsOnly(io *rawIO) bool {
	if c.netConn.raw == nil || !c.readMu.TryLock() {
		return false
	}
	defer c.readMu.Unlock()
	f := c.filter
	if f.carried > 0 { // a header cut off: Read completes it
		return false
	}
	n, err := io.readOnce(c.netConn.raw)
	if n == 0 {
		return err == syscall.EAGAIN // else the end of the stream, or a failure: the reader sees it
	}
	w := f.strip(io.buf[:n])
	if w > 0 {
		f.pending = append(f.pending, io.buf[:w]...)
	}
	return w == 0 && f.carried == 0
}
