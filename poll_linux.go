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
				c.woken()
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
