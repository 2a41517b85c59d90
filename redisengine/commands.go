package redisengine

import (
	"context"
	"errors"
	"sync"

	"github.com/wshub/wshub"
)

var _ wshub.CommandEngine = (*Engine)(nil)

// errCommandsHandled is HandleCommands' error when called a second time:
// each hub has its own engine, and its New calls HandleCommands once.
var errCommandsHandled = errors.New("redisengine: commands already handled")

// commandChannel is the channel of the hubs' commands: the prefix, empty
// braces and "cmd", as the control channel; no room's channel has the
// kind "cmd".
func (e *Engine) commandChannel() string { return e.key("", "cmd") }

// Command publishes cmd on the channel of commands (see the package
// documentation, "Commands") with the engine's publishes, after those
// queued before it, and waits for Redis's answer: nil means that Redis passed it to
// the hubs subscribed at that moment, this one included. It waits within
// ctx, at most Options.Timeout when ctx has no deadline. It returns
// ErrClosed after Close, an error wrapping ErrNotConnected when Redis
// could not be reached (no hub got the command), and one wrapping
// ErrUnconfirmed when no answer came (the hubs got it or none did).
func (e *Engine) Command(ctx context.Context, cmd []byte) error {
	if e.isClosed() {
		return ErrClosed
	}
	if e.conn() == nil {
		return classify("command", errNoConn)
	}
	op := &pubOp{
		cmd:  true,
		res:  make(chan error, 1),
		size: min(int64(len(cmd)+64), maxQueued),
		args: []string{e.commandChannel(), string(cmd)},
	}
	return e.pubs.queue(ctx, op)()
}

// HandleCommands subscribes to the channel of commands and passes each
// command of every hub, this one's included, to handle, one at a time on
// a goroutine of the engine, until Close, which waits for a handle under
// way. It returns once Redis confirmed the subscription, or once a first
// attempt failed (Redis is down: the engine subscribes when it is back),
// within Options.Timeout. Commands published while this hub is not
// subscribed never reach it; those waiting for handle beyond
// Options.BurstBytes are dropped. It returns ErrClosed after Close, and
// an error when called a second time.
func (e *Engine) HandleCommands(handle func(cmd []byte)) error {
	c := &commands{handle: handle, burst: e.burst}
	c.init(e.ctx)
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		c.cancel()
		return ErrClosed
	case e.cmds != nil:
		e.mu.Unlock()
		c.cancel()
		return errCommandsHandled
	}
	e.cmds = c
	// Held until the goroutines started: a Close from now on waits for
	// them, since Add above zero may run alongside Wait.
	c.wg.Add(1)
	e.mu.Unlock()
	defer c.wg.Done()
	c.wg.Go(c.run)
	c.subscribe(e, e.commandChannel(), c.received, func(bool) {})
	return nil
}

// commands passes the commands that the channel of commands receives to
// the hub's handle, one at a time.
type commands struct {
	task
	handle func([]byte)
	burst  int // Options.BurstBytes

	mu     sync.Mutex
	queue  [][]byte // received, not yet passed
	queued int      // bytes of queue
}

// received queues a command, or drops it past the bound. It runs on
// rueidis's reading goroutine, which must not wait for the hub.
func (c *commands) received(s string) {
	c.mu.Lock()
	if c.queued+len(s) > c.burst {
		c.mu.Unlock()
		return // at most once
	}
	c.queue = append(c.queue, []byte(s))
	c.queued += len(s)
	c.mu.Unlock()
	c.kick()
}

func (c *commands) run() {
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
		}
		c.mu.Lock()
		q := c.queue
		c.queue, c.queued = nil, 0
		c.mu.Unlock()
		for _, cmd := range q {
			if c.ctx.Err() != nil {
				return
			}
			c.handle(cmd)
		}
	}
}
