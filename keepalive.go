package wshub

import (
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Keepalive. The hub pings each client every PingInterval and closes one
// that has not answered the last ping by the next. One goroutine per hub
// (keepalive) pings a slot of clients a tick; each client's slot is drawn
// when it connects, so its first ping comes at a random point of its
// first interval and a hub's pings are spread over the interval instead
// of going out in bursts of the clients that connected together. A ping
// is two bytes: written by that goroutine, without waiting, when the
// client's writer is idle; else by the writer, between frames. Its answer
// is taken off the inbound stream by a pongFilter before coder/websocket
// sees it: under coder's reader, or, for a parked client, by the poller,
// which then leaves the reader parked (park.go). So an idle client's ping
// and pong allocate nothing and start no goroutine.

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
	pending   []byte   // read by the poller, passed (takePongs): to be read first
}

// Read reads from src into p and returns what is not a pong, waiting for
// more while only pongs come (unless probing).
func (f *pongFilter) Read(p []byte) (int, error) {
	if len(f.pending) > 0 {
		n := copy(p, f.pending)
		if f.pending = f.pending[n:]; len(f.pending) == 0 {
			f.pending = nil
		}
		return n, nil
	}
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

// keepalive pings the hub's clients from one goroutine: a wheel of
// slots, one slot a tick, a turn every PingInterval. Each client sits in a
// slot drawn at random when it connects, so its first ping comes at a
// random point of its first interval and a hub's pings go out a slot at a
// time, spread over the interval; there is no timer per client. The
// goroutine starts with the hub's first client and ends with the hub.
type keepalive struct {
	once      sync.Once
	closeOnce sync.Once
	slots     []pingSlot
	stop      chan struct{}
	done      chan struct{}
}

type pingSlot struct {
	mu      sync.Mutex
	clients []*Client // each at its Client.slotAt
}

// pingTick is the least time between two slots: shorter intervals have
// fewer slots, down to one.
const (
	pingTick  = 100 * time.Millisecond
	pingSlots = 128 // at most; 234 ms apart for the default interval
)

// add puts c in a random slot, starting the goroutine with the first
// client.
func (k *keepalive) add(h *Hub, c *Client) {
	d := h.opts.PingInterval
	if d <= 0 {
		return
	}
	k.once.Do(func() {
		n := int(min(max(d/pingTick, 1), pingSlots))
		k.slots = make([]pingSlot, n)
		k.stop, k.done = make(chan struct{}), make(chan struct{})
		go k.run(d / time.Duration(n))
	})
	if k.slots == nil { // the hub closed first
		return
	}
	s := &k.slots[rand.N(len(k.slots))]
	s.mu.Lock()
	defer s.mu.Unlock()
	c.slot, c.slotAt = s, int32(len(s.clients))
	s.clients = append(s.clients, c)
}

// remove takes c out of its slot.
func (k *keepalive) remove(c *Client) {
	s := c.slot
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	last := len(s.clients) - 1
	moved := s.clients[last]
	s.clients[c.slotAt], moved.slotAt = moved, c.slotAt
	s.clients[last] = nil
	s.clients = s.clients[:last]
	c.slot = nil
}

func (k *keepalive) run(tick time.Duration) {
	defer close(k.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	io := newRawIO(nil)
	var batch []*Client
	for i := 0; ; i = (i + 1) % len(k.slots) {
		select {
		case <-k.stop:
			return
		case <-t.C:
		}
		s := &k.slots[i]
		s.mu.Lock()
		batch = append(batch[:0], s.clients...)
		s.mu.Unlock()
		for _, c := range batch {
			c.ping(io)
		}
		clear(batch)
	}
}

// close ends the goroutine; no ping goes out after.
func (k *keepalive) close() {
	k.once.Do(func() {}) // none starts after
	k.closeOnce.Do(func() {
		if k.stop != nil {
			close(k.stop)
			<-k.done
		}
	})
}

// ping checks that the peer answered the last ping, and pings it again.
// When the client's writer is idle, the ping is written here, with one
// write that does not wait (io's), and allocates nothing; when that
// cannot be done, or messages came meanwhile, a writer goroutine takes
// over. A busy writer writes the ping between two batches.
func (c *Client) ping(io *rawIO) {
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
	if c.writing {
		c.pingDue = true
		c.mu.Unlock()
		return
	}
	c.takeTurnLocked() // this goroutine's
	c.mu.Unlock()
	n := 0
	if io != nil {
		n = c.netConn.tryWrite(io, pingFrame)
	}
	c.mu.Lock()
	c.pingDue = n == 0 // else it was written, or its rest waits in netConn
	if n > 0 && n < len(pingFrame) || c.pingDue || len(c.queue) > 0 || c.cause != nil {
		c.mu.Unlock()
		go c.writeRun()
		return
	}
	c.endTurnLocked()
}

// writeRun runs writeLoop on a goroutine the client's group and the hub
// count already.
func (c *Client) writeRun() {
	defer c.writers.Done()
	defer c.hub.release()
	c.writeLoop()
}
