package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Flushes in flight per broker. While at most maxFlushes publishers wait
// for a confirmation, each may flush for itself; when more wait, a flush
// starts only while fewer than busyFlushes are in flight, and the rest
// share the next one.
const (
	maxFlushes  = 16
	busyFlushes = 2
)

// groupCommit confirms published messages in pipelined round trips,
// shared once many publishers wait. A confirmation is a flush: nats.go
// writes a PING after everything it has buffered and the server answers
// PONG once it has read all of it, so one PONG confirms every message
// written on the connection before its PING. Each message gets a ticket
// once it is written, and a flush confirms the tickets handed out before
// it started. A publisher that waits for its ticket:
//
//   - returns at once when a flush that ended covered it;
//   - while at most maxFlushes publishers wait, starts a flush on its own
//     goroutine and under its own context, without waiting for the flushes
//     in flight: alone, a publish costs one round trip and no goroutine
//     switch, and a few concurrent publishers' PINGs are in flight at
//     once, as with one flush per publish;
//   - when more wait, and fewer than busyFlushes are in flight, also
//     starts a flush;
//   - otherwise joins the oldest flush in flight that covers it, one that
//     started after its message was written while it was on its way to
//     wait, or else the batch: the publishers that the next flush to
//     start confirms together, started by a goroutine of the broker when
//     a flush ends and leaves room for it.
//
// A publisher's flush runs under its context, which wait bounds by the
// timeout when it has no deadline; a batch's flush runs under the
// timeout, and stop ends it.
//
// Sharing costs a batched publish the wait for the flushes in flight,
// whose PINGs were written before it arrived, so at most two round trips
// in all, and one goroutine switch more; it saves a PING and a PONG per
// publisher, which is what the round trips cost when many publishers
// keep the CPUs busy. Measured on loopback, in process
// (BenchmarkConfirmedPublish, two busy shared cores, medians of 22 runs):
// with 1 publisher this is as fast as one flush per publish, with 10
// within the noise (7% slower, runs vary by 15%), where one shared flush
// at a time was 10 to 20% slower; with 100 publishers it is 30% faster
// than one flush per publish, as one shared flush at a time is, where
// pipelining up to 16 flushes without sharing gained 10 to 20%.
//
// When a starter's context ends, its flush is abandoned: the publishers
// that joined it do not get that context's error but wait again, and
// start or join another flush.
//
// A PONG on a new connection confirms nothing written on the old one, so
// a ticket carries the connection's reconnect count from before its
// message was written, and only a flush that ended on that same
// connection (the count read after its PONG) confirms it: the count never
// goes back, so the message, the PING and the PONG were all on one
// connection.
type groupCommit struct {
	nc      *nats.Conn
	timeout time.Duration
	wg      sync.WaitGroup // the goroutines that flush for a batch
	issued  atomic.Uint64  // tickets handed out, the last one's seq
	closed  chan struct{}  // closed by stop
	waiting atomic.Int64   // publishers in wait

	mu       sync.Mutex
	inFlight []*flush // started and not ended, oldest first
	batch    *flush   // waiters for the next flush to start; nil when none
	okSeq    uint64   // the tickets up to okSeq on connection okConn are confirmed
	okConn   uint64
	stopped  bool
	flushes  uint64 // flushes started, for tests
	joined   uint64 // waits begun, for tests
}

// ticket identifies a written message: its place among the messages
// written through the broker and the connection it was written on.
type ticket struct {
	seq  uint64
	conn uint64 // connID from before the message was written
}

// flush is one PING and its PONG, and the waiters it confirms.
type flush struct {
	upTo   uint64             // confirms the tickets up to this seq
	cancel context.CancelFunc // ends a batch's flush; nil for a publisher's
	done   chan struct{}      // closed when the fields below are set
	err    error
	conn   uint64 // connID after the PONG
	// abandoned is set when the context of the publisher that started
	// the flush ended first: it confirmed nothing and failed no one.
	abandoned bool
}

func newGroupCommit(nc *nats.Conn, timeout time.Duration) *groupCommit {
	return &groupCommit{nc: nc, timeout: timeout, closed: make(chan struct{})}
}

// connID returns the reconnect count of nc, which changes whenever nats.go
// is on a new connection.
func connID(nc *nats.Conn) uint64 { return nc.Stats().Reconnects }

// wrote returns the ticket of a message that the caller has written, on
// connection conn (a connID read before the write).
func (g *groupCommit) wrote(conn uint64) ticket {
	return ticket{seq: g.issued.Add(1), conn: conn}
}

// wait returns once a flush that started after t's message was written
// succeeded on t's connection, or with that flush's error, or with ctx's,
// or with ErrClosed once stop has begun. When ctx has no deadline, the
// timeout is its deadline.
func (g *groupCommit) wait(ctx context.Context, t ticket) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, g.timeout)
		defer cancel()
	}
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	g.mu.Lock()
	g.joined++
	for {
		if g.stopped {
			g.mu.Unlock()
			return ErrClosed
		}
		if t.seq <= g.okSeq && t.conn == g.okConn {
			g.mu.Unlock()
			return nil
		}
		var f *flush
		if len(g.inFlight) < g.limit() {
			f = &flush{done: make(chan struct{})}
			g.start(f)
			g.mu.Unlock()
			g.end(ctx, f)
			if f.abandoned {
				return fmt.Errorf("natsbroker: publish not confirmed: %w", ctx.Err())
			}
			return confirmed(f, t)
		}
		if f = g.covering(t.seq); f == nil {
			if g.batch == nil {
				g.batch = &flush{done: make(chan struct{})}
			}
			f = g.batch
		}
		g.mu.Unlock()

		select {
		case <-f.done:
		case <-ctx.Done():
			return fmt.Errorf("natsbroker: publish not confirmed: %w", ctx.Err())
		case <-g.closed:
			return ErrClosed
		}
		if !f.abandoned {
			return confirmed(f, t)
		}
		g.mu.Lock()
	}
}

// limit returns how many flushes may be in flight.
func (g *groupCommit) limit() int {
	if g.waiting.Load() <= maxFlushes {
		return maxFlushes
	}
	return busyFlushes
}

// covering returns the oldest flush in flight that confirms ticket seq,
// or nil.
func (g *groupCommit) covering(seq uint64) *flush {
	for _, f := range g.inFlight {
		if f.upTo >= seq {
			return f
		}
	}
	return nil
}

// start puts f in flight, covering every ticket handed out so far. g.mu
// is held.
func (g *groupCommit) start(f *flush) {
	f.upTo = g.issued.Load()
	g.inFlight = append(g.inFlight, f)
	g.flushes++
}

// run flushes for a batch, bounded by the timeout and ended by stop.
func (g *groupCommit) run(ctx context.Context, f *flush) {
	defer g.wg.Done()
	defer f.cancel()
	g.end(ctx, f)
}

// end flushes under ctx and hands the result to f's waiters: ctx is the
// context of the publisher that started f, or the batch's. The place that
// f leaves goes to the batch, if any waits.
func (g *groupCommit) end(ctx context.Context, f *flush) {
	conn, err := g.flush(ctx)

	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight = slices.DeleteFunc(g.inFlight, func(e *flush) bool { return e == f })
	switch {
	case err == nil:
		f.conn = conn
		if conn > g.okConn || conn == g.okConn && f.upTo > g.okSeq {
			g.okSeq, g.okConn = f.upTo, conn
		}
	case g.stopped:
		f.err = ErrClosed
	case errors.Is(err, ErrNotConnected):
		f.err = err
	case f.cancel == nil:
		// A publisher's flush, ended by its context.
		f.abandoned = true
	default:
		f.err = fmt.Errorf("natsbroker: publish not confirmed within %v: %w", g.timeout, err)
	}
	close(f.done)

	if b := g.batch; b != nil && !g.stopped && len(g.inFlight) < g.limit() {
		g.batch = nil
		var bctx context.Context
		bctx, b.cancel = context.WithTimeout(context.Background(), g.timeout)
		g.start(b)
		g.wg.Add(1)
		go g.run(bctx, b)
	}
}

// flush confirms everything written so far and returns the connection it
// ended on. It fails at once when the connection is not up, with
// ErrNotConnected when the connection breaks, and with ctx's error when
// ctx ends first.
func (g *groupCommit) flush(ctx context.Context) (uint64, error) {
	if !g.nc.IsConnected() {
		return 0, fmt.Errorf("%w (%v)", ErrNotConnected, g.nc.Status())
	}
	err := g.nc.FlushWithContext(ctx)
	switch {
	case err == nil:
		return connID(g.nc), nil
	case errors.Is(err, nats.ErrConnectionClosed) || !g.nc.IsConnected():
		// nats.go releases the pending flushes with ErrConnectionClosed
		// when the connection breaks, not only when it is closed.
		return 0, fmt.Errorf("%w: publish not confirmed: %w", ErrNotConnected, err)
	}
	return 0, err
}

// confirmed is t's result from flush f: f's error, or ErrNotConnected
// when f ended on another connection than the one t's message was
// written on.
func confirmed(f *flush, t ticket) error {
	switch {
	case f.err != nil:
		return f.err
	case f.conn != t.conn:
		return fmt.Errorf("%w: reconnected before the server confirmed the message", ErrNotConnected)
	}
	return nil
}

// stop fails the waiting and future publishes with ErrClosed, ends the
// flushes in flight and waits for the broker's own goroutines. It may be
// called more than once.
func (g *groupCommit) stop() {
	g.mu.Lock()
	if !g.stopped {
		g.stopped = true
		close(g.closed)
		g.batch = nil
		for _, f := range g.inFlight {
			if f.cancel != nil {
				f.cancel()
			}
		}
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// stats returns the flushes started and the waits begun, for tests.
func (g *groupCommit) stats() (flushes, joined uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.flushes, g.joined
}
