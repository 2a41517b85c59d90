package wshub

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// corkConn is the client's socket as the writer sees it, under
// coder/websocket's write buffer too (which flushes after every control
// frame coder writes). While corked it gathers the writer's frames
// (writeFrame), so that a batch of frames, each still a frame of its own,
// goes out with one system call. Other goroutines' frames (pongs, close
// frames) wait in it until the batch ends, which is soon: the batch is
// already in memory.
//
// Every write that may wait must make progress within the hub's
// WriteTimeout: a peer that stops reading fails the write with
// os.ErrDeadlineExceeded instead of holding its writer forever. Writes
// that do not wait (tryWrite, uncorkTry) need no deadline, and leave what
// the socket did not take in buf, to go first.
type corkConn struct {
	net.Conn
	hub *Hub // for its buffer pool and WriteTimeout

	// Reads go through filter (keepalive.go). early: bytes the client sent
	// with its upgrade request wait above, to be read before this
	// connection; the reader's goroutine clears it with its first Read.
	filter pongFilter
	early  atomic.Bool
	raw    syscall.RawConn // for writes that must not wait (tryWrite); nil if none

	mu       sync.Mutex
	deadline time.Time // the socket's write deadline
	closing  bool
	corked   bool
	whole    bool         // the writer's frames stay until uncork, past maxBatchBytes (cork)
	sentEnd  bool         // coder wrote the close frame: no data frame may follow
	buf      *[]byte      // pending bytes: while corked, or left by a write that did not wait
	taken    atomic.Int64 // bytes ever given to write (Write, writeFrame, tryWrite); written under mu, read by the writer without it
	written  int64        // bytes of those that reached the socket, a prefix
}

// Read reads the client's frames, minus pongs.
func (c *corkConn) Read(p []byte) (int, error) {
	c.early.Store(false)
	return c.filter.Read(p)
}

// Write writes p (coder's control frames, and pings), or keeps it while
// corked: while the batch is under maxBatchBytes, or, for a writer that
// must not wait (whole), always.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) > 0 && p[0] == 0x88 { // FIN and close: coder flushes each control frame whole
		c.sentEnd = true
	}
	c.taken.Add(int64(len(p)))
	if c.corked && (c.whole || len(*c.buf)+len(p) <= maxBatchBytes) {
		*c.buf = append(*c.buf, p...)
		return len(p), nil
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	n, err := c.writeLocked(p)
	return n, err
}

// writeFrame writes a data frame, FIN and opcode op (text or binary),
// holding payload p: gathered while corked, as Write does. The hub frames
// its messages itself, as coder/websocket would without compression
// (which the hub does not negotiate): one copy into the batch, no lock of
// coder's. It returns net.ErrClosed after coder wrote the close frame.
func (c *corkConn) writeFrame(op byte, p []byte) error {
	var hb [10]byte
	h := appendFrameHeader(hb[:0], op, len(p))
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sentEnd || c.closing {
		return net.ErrClosed
	}
	c.taken.Add(int64(len(h) + len(p)))
	fits := func() bool { return c.whole || len(*c.buf)+len(h)+len(p) <= maxBatchBytes }
	if !c.corked || !fits() {
		if err := c.flushLocked(); err != nil { // what went before goes first
			return err
		}
	}
	if c.corked && fits() {
		*c.buf = append(append(*c.buf, h...), p...)
		return nil
	}
	// Bigger than a batch, or not corked: written now, from p, which
	// other clients may share (no copy per client).
	return c.writeFrameLocked(h, p)
}

// writeFrameLocked writes header h and payload p to the socket with one
// system call (writev), under the deadline rules of writeLocked.
func (c *corkConn) writeFrameLocked(h, p []byte) error {
	c.armDeadlineLocked()
	bufs := net.Buffers{h, p}
	n, err := bufs.WriteTo(c.Conn)
	c.written += n
	return err
}

// appendFrameHeader appends the header of a server frame, FIN and opcode
// op, unmasked, with a payload of n bytes.
func appendFrameHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n < 126:
		return append(b, byte(n))
	case n < 1<<16:
		return append(b, 126, byte(n>>8), byte(n))
	}
	return append(b, 127, byte(uint64(n)>>56), byte(uint64(n)>>48), byte(uint64(n)>>40), byte(uint64(n)>>32),
		byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

// writeLocked writes p to the socket. Unless the connection is closing
// (Close set its own deadline), the write must end within WriteTimeout to
// 1.5 × WriteTimeout: the deadline is moved only when less than
// WriteTimeout of it is left, since setting it on every write of a busy
// connection costs a few percent of the hub's CPU.
func (c *corkConn) writeLocked(p []byte) (int, error) {
	c.armDeadlineLocked()
	n, err := c.Conn.Write(p)
	c.written += int64(n)
	return n, err
}

// armDeadlineLocked moves the write deadline as writeLocked says.
func (c *corkConn) armDeadlineLocked() {
	if c.closing {
		return
	}
	wt := c.hub.opts.WriteTimeout
	if now := time.Now(); c.deadline.Sub(now) < wt {
		c.deadline = now.Add(wt + wt/2)
		c.Conn.SetWriteDeadline(c.deadline)
	}
}

// tryWrite writes p with io, on a goroutine that holds the client's
// writer's turn, unless it would wait: for the socket's buffer, or for
// another write. It returns how many bytes of p it wrote; if some but not
// all, the rest is kept, to go first, and the writer's goroutine must
// write it (flushPending). A write deadline that has passed is cleared
// first: the write cannot wait, and the next writer's sets its own.
func (c *corkConn) tryWrite(io *rawIO, p []byte) int {
	if c.raw == nil || !c.mu.TryLock() {
		return 0
	}
	defer c.mu.Unlock()
	if c.closing || c.corked || c.buf != nil || !c.clearPastDeadline() {
		return 0
	}
	n := io.write(c.raw, p)
	if n == 0 {
		return 0
	}
	c.taken.Add(int64(len(p)))
	c.written += int64(n)
	if n < len(p) { // the rest goes before anything else (flushPending)
		c.buf = c.hub.getBuf()
		*c.buf = append((*c.buf)[:0], p[n:]...)
	}
	return n
}

// flushPending writes what a write without waiting left (tryWrite,
// uncorkTry), if anything.
func (c *corkConn) flushPending() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked || c.buf == nil {
		return nil
	}
	err := c.flushLocked()
	c.hub.putBuf(c.buf)
	c.buf = nil
	return err
}

// clearPastDeadline clears a write deadline that has passed, which would
// fail a write without waiting: it needs none, and the next write that may
// wait sets its own. It reports false if that failed.
func (c *corkConn) clearPastDeadline() bool {
	if c.closing {
		return false // Close's deadline stays
	}
	if c.deadline.IsZero() || time.Now().Before(c.deadline) {
		return true
	}
	c.deadline = time.Time{}
	return c.Conn.SetWriteDeadline(c.deadline) == nil
}

// uncorkTry is uncork without waiting, with io: what the socket does not
// take stays in the buffer, to go before anything else (uncork writes it),
// and uncorkTry returns errPending. Without io, it is uncork.
func (c *corkConn) uncorkTry(io *rawIO) error {
	if io == nil || c.raw == nil {
		return c.uncork()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked, c.whole = false, false
	if len(*c.buf) > 0 {
		if c.closing || !c.clearPastDeadline() {
			return errPending
		}
		n := io.write(c.raw, *c.buf)
		c.written += int64(n)
		if n < len(*c.buf) {
			*c.buf = (*c.buf)[:copy(*c.buf, (*c.buf)[n:])]
			return errPending
		}
	}
	c.hub.putBuf(c.buf)
	c.buf = nil
	return nil
}

// errPending tells a writer without waiting that corkConn holds bytes
// the socket did not take.
var errPending = errors.New("wshub: write pending")

// progress returns how many bytes Write was given and how many of those
// reached the socket. A message whose last byte is at or before written
// has been written.
func (c *corkConn) progress() (taken, written int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.taken.Load(), c.written
}

// cork gathers the writer's frames, up to maxBatchBytes at a time. With
// whole, they are kept until uncorkTry, however many bytes they make: a
// writer that must not wait writes nothing before.
func (c *corkConn) cork(whole bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked, c.whole = true, whole
	if c.buf == nil {
		c.buf = c.hub.getBuf()
		*c.buf = (*c.buf)[:0]
	}
}

// uncork writes what was gathered and returns its buffer to the pool.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked, c.whole = false, false
	err := c.flushLocked()
	if c.buf != nil {
		c.hub.putBuf(c.buf)
		c.buf = nil
	}
	return err
}

func (c *corkConn) flushLocked() error {
	if c.buf == nil || len(*c.buf) == 0 {
		return nil
	}
	_, err := c.writeLocked(*c.buf)
	*c.buf = (*c.buf)[:0]
	return err
}

// closeFlushTimeout bounds the write of what a corkConn holds when it is
// closed, so that a peer that stopped reading cannot hold up Close.
const closeFlushTimeout = time.Second

// Close writes what is gathered, typically a close frame coder/websocket
// just sent, then closes the connection. A write stuck on a slow peer is
// cut short by the deadline.
func (c *corkConn) Close() error {
	d := time.Now().Add(closeFlushTimeout)
	c.Conn.SetWriteDeadline(d) // first, to end a write under way, which holds mu
	c.mu.Lock()
	c.closing, c.deadline = true, d
	c.Conn.SetWriteDeadline(d) // again: a write without waiting may have cleared it meanwhile
	c.corked = false
	c.flushLocked()
	c.mu.Unlock()
	return c.Conn.Close()
}

// cut closes the connection at once, dropping what is gathered.
func (c *corkConn) cut() error { return c.Conn.Close() }
