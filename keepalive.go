package wshub

import (
	"errors"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Keepalive. The hub pings each client every PingInterval and closes one
// that has not answered the last ping by the next. The first ping of each
// client comes at a random point of its first interval, so that a hub's
// pings are spread over the interval instead of going out in bursts of
// the clients that connected together. A ping is two bytes the client's
// writer writes between frames; its answer is taken off the inbound
// stream by a pongFilter, under coder/websocket's reader, before coder
// sees it. So a ping allocates nothing, and answering one does not keep an
// idle client's reader awake (park.go).

// pingFrame is a ping without payload: FIN and opcode 9; a server's
// frames are not masked.
var pingFrame = []byte{0x89, 0x00}

// errNothing tells a probe (pongFilter.probe) that what came was only
// pongs.
var errNothing = errors.New("wshub: nothing but pongs")

// pongFilter passes a client's frames from src to coder/websocket's
// reader, minus the pongs, which it records. It parses only frame headers
// (client frames are masked, their payloads are passed unread) and leaves
// anything that is not a well-formed pong to coder, which checks frames.
type pongFilter struct {
	src io.Reader

	awaiting atomic.Bool // a ping went out and no pong came since

	carry     [14]byte // a header that came without its end, then until passed
	carried   int      // bytes in carry
	out       int      // bytes of carry passed (or read by coder before, see skim)
	emit      bool     // carry is a whole header, to pass
	remaining int64    // payload bytes of the current frame not read yet
	skipping  bool     // the current frame is a pong
	probing   bool     // Read reads once, and says errNothing if it was only pongs
}

// Read reads from src into p and returns what is not a pong, waiting for
// more while only pongs come (unless probing).
func (f *pongFilter) Read(p []byte) (int, error) {
	for {
		if f.emit { // a header read alone, of a frame to pass
			n := copy(p, f.carry[f.out:f.carried])
			if f.out += n; f.out == f.carried {
				f.emit, f.out, f.carried = false, 0, 0
			}
			return n, nil
		}
		if f.carried > 0 {
			if err := f.completeHeader(); err != nil {
				return 0, err
			}
			continue
		}
		n, err := f.src.Read(p)
		w := f.strip(p[:n])
		if w > 0 || err != nil {
			return w, err
		}
		if f.probing {
			return 0, errNothing
		}
	}
}

// completeHeader reads the rest of a header that strip found cut off, a
// few bytes at a time (headers rarely straddle reads), and takes the
// frame as a pong to skip or a frame to pass.
func (f *pongFilter) completeHeader() error {
	for {
		if _, payload, ok := frameHeader(f.carry[:f.carried]); ok {
			f.remaining = payload
			if f.out == 0 && f.isPong(f.carry[0], payload) {
				f.carried = 0
			} else {
				f.emit = true
			}
			return nil
		}
		need := 2
		if f.carried >= 2 {
			need = headerSize(f.carry[1])
		}
		n, err := f.src.Read(f.carry[f.carried:need])
		f.carried += n
		if err != nil {
			return err
		}
	}
}

// isPong reports whether a frame whose first byte is b0 and whose payload
// is payload bytes is a well-formed pong, and starts skipping it.
func (f *pongFilter) isPong(b0 byte, payload int64) bool {
	if b0 != 0x8A || payload > 125 { // FIN and pong, a control frame's size
		return false
	}
	f.skipping = payload > 0
	if !f.skipping {
		f.awaiting.Store(false)
	}
	return true
}

// skim takes b, the bytes the client sent with its upgrade request, which
// coder reads before this filter's, as passed: the filter starts where
// they end. A header they cut off is passed whole, even a pong's.
func (f *pongFilter) skim(b []byte) {
	for len(b) > 0 {
		if f.remaining > 0 {
			k := int(min(f.remaining, int64(len(b))))
			b = b[k:]
			f.remaining -= int64(k)
			continue
		}
		size, payload, ok := frameHeader(b)
		if !ok {
			f.carried = copy(f.carry[:], b)
			f.out = f.carried
			return
		}
		b = b[size:]
		f.remaining = payload
	}
}

// strip removes the pongs from b, the inbound stream from where the last
// call left it, in place, and returns how many bytes are left. A header
// cut off at the end of b is carried to the next call.
func (f *pongFilter) strip(b []byte) int {
	r, w := 0, 0
	for r < len(b) {
		if f.remaining > 0 {
			k := int(min(f.remaining, int64(len(b)-r)))
			if !f.skipping {
				copy(b[w:], b[r:r+k])
				w += k
			}
			r += k
			f.remaining -= int64(k)
			if f.remaining == 0 && f.skipping {
				f.skipping = false
				f.awaiting.Store(false)
			}
			continue
		}
		size, payload, ok := frameHeader(b[r:])
		if !ok {
			f.carried = copy(f.carry[:], b[r:])
			break
		}
		if !f.isPong(b[r], payload) {
			copy(b[w:], b[r:r+size])
			w += size
		}
		r += size
		f.remaining = payload
	}
	return w
}

// headerSize returns the size of a client frame's header from its second
// byte.
func headerSize(b1 byte) int {
	size := 2
	switch b1 & 0x7f {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if b1&0x80 != 0 {
		size += 4 // the masking key
	}
	return size
}

// frameHeader parses the header at the start of b: its size and the
// payload's length, or ok false if b holds only part of it.
func frameHeader(b []byte) (size int, payload int64, ok bool) {
	if len(b) < 2 {
		return 0, 0, false
	}
	if size = headerSize(b[1]); len(b) < size {
		return 0, 0, false
	}
	switch n := b[1] & 0x7f; n {
	default:
		payload = int64(n)
	case 126:
		payload = int64(b[2])<<8 | int64(b[3])
	case 127:
		for _, x := range b[2:10] {
			payload = payload<<8 | int64(x)
		}
		payload &= 1<<63 - 1 // the most significant bit must be 0; coder checks it
	}
	return size, payload, true
}

// ping checks that the peer answered the last ping, and pings it again.
// It runs on the pinger timer's goroutine, which writes the ping itself
// when the client's writer is idle: no allocation, no goroutine of its
// own.
func (c *Client) ping() {
	c.mu.Lock()
	if c.cause != nil {
		c.mu.Unlock()
		return
	}
	if c.filter.awaiting.Swap(true) {
		c.mu.Unlock()
		c.abort(ErrPongTimeout)
		return
	}
	c.pingDue = true
	c.pinger.Reset(c.hub.opts.PingInterval)
	write := !c.writing
	if write {
		c.writing = true
		c.hub.hold()
		c.writers.Add(1)
	}
	c.mu.Unlock()
	if write {
		defer c.writers.Done()
		defer c.hub.release()
		c.writeLoop()
	}
}

// startPinger sets the client's first ping at a random point of its first
// interval.
func (c *Client) startPinger() {
	d := c.hub.opts.PingInterval
	if d <= 0 {
		return
	}
	c.mu.Lock() // ping reads c.pinger under c.mu
	c.pinger = time.AfterFunc(rand.N(d)+1, c.ping)
	c.mu.Unlock()
}
