package natsbroker

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/wshub/wshub"
)

var (
	_ wshub.CommandEngine = (*Broker)(nil)
	_ wshub.CommandEngine = (*Log)(nil)
)

// errCommandsHandled is HandleCommands' error when called a second time:
// each hub has its own engine, and its New calls HandleCommands once.
var errCommandsHandled = errors.New("natsbroker: commands already handled")

// commandSubject returns the subject of the hubs' commands: the prefix
// and "cmd". No room has it: a room's token of three characters is the
// unpadded base64url of two bytes, whose last character encodes four bits
// and two zero bits, and "d" (29) has non-zero low bits.
func (b *Broker) commandSubject() string { return b.prefix + "cmd" }

// Command publishes cmd on the subject of commands (see the package
// documentation, "Commands"), for every hub subscribed to it at that
// moment, this one included, and waits until the server confirmed it,
// as Publish's wait does, whatever Options.NoConfirm says: within ctx,
// or Options.Timeout when ctx has no deadline. It returns ErrClosed after
// Close, an error wrapping ErrNotConnected when the connection is not up
// or broke before the confirmation, and ctx's error when ctx ended
// first. When the error came after the command was written, hubs may or
// may not have got it.
func (b *Broker) Command(ctx context.Context, cmd []byte) error {
	if b.isClosed() {
		return ErrClosed
	}
	if !b.nc.IsConnected() {
		return fmt.Errorf("%w (%v)", ErrNotConnected, b.nc.Status())
	}
	t, err := b.write(&nats.Msg{Subject: b.commandSubject(), Data: cmd})
	if err != nil {
		return err
	}
	return b.commit.wait(ctx, t)
}

// HandleCommands subscribes to the subject of commands and passes the
// payload of each command of every hub, this one's included, to handle,
// one at a time on a goroutine of the broker, until Close, which waits
// for a handle under way. When connected, it returns once the server has
// the subscription, or after Options.Timeout without an answer (the
// subscription stays: the server gets it late); while nats.go
// reconnects, it returns at once and nats.go subscribes when the
// connection is up. Commands published while this hub is not subscribed
// never reach it. More than Options.BurstBytes of commands waiting for
// handle are dropped. It returns ErrClosed after Close, an error wrapping
// ErrNotConnected when the connection is closed, and an error when
// called a second time.
func (b *Broker) HandleCommands(handle func(cmd []byte)) error {
	if err := b.startCommands(handle); err != nil {
		return err
	}
	// So that the commands published after this returns reach handle. An
	// answer late or missing is no error: nats.go keeps the subscription,
	// and the server has it once it read it.
	if b.nc.IsConnected() {
		b.nc.FlushTimeout(b.timeout)
	}
	return nil
}

// startCommands subscribes to the subject of commands and starts the
// goroutine that passes them to handle.
func (b *Broker) startCommands(handle func(cmd []byte)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	if b.cmds != nil {
		return errCommandsHandled
	}
	sub, err := b.nc.SubscribeSync(b.commandSubject())
	if err != nil {
		return b.connErr(err)
	}
	if err := sub.SetPendingLimits(-1, b.burst); err != nil {
		unsubscribe(sub)
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.cmds = &commandSub{sub: sub, cancel: cancel, done: make(chan struct{})}
	// Started under b.mu, so that Close, which takes b.cmds under it,
	// waits for a goroutine that exists.
	go b.cmds.run(ctx, handle)
	return nil
}

// commandSub is the subscription of HandleCommands and its goroutine.
type commandSub struct {
	sub    *nats.Subscription
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns
}

// run passes the commands to handle until ctx ends or the subscription
// or the connection is closed.
func (c *commandSub) run(ctx context.Context, handle func([]byte)) {
	defer close(c.done)
	for {
		m, err := c.sub.NextMsgWithContext(ctx)
		switch {
		case err == nil:
			handle(m.Data)
		case errors.Is(err, nats.ErrSlowConsumer):
			// Commands past BurstBytes were dropped: at most once.
		default:
			return
		}
	}
}

// stop ends the subscription and waits for run.
func (c *commandSub) stop() error {
	c.cancel()
	err := unsubscribe(c.sub)
	<-c.done
	return err
}
