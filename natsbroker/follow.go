package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wshub/wshub"
)

// Settings of a follow's consumer. A follow pulls pullBatch messages at a
// time, and the next batch only once it passed the last one on: since the
// hub's deliver returns when the members took what a message congested,
// the follow reads the room log at their pace. Each pull lasts at most
// pullExpires, and the server sends a heartbeat every pullHeartbeat while
// it has nothing to send, so a follow that hears nothing for
// heartbeatLoss (not counting its waits in deliver) knows its consumer or
// server is gone. The server deletes a consumer that nobody pulled from for
// consumerInactive: the consumers of a hub that vanished.
const (
	pullBatch        = 256
	pullExpires      = 30 * time.Second
	pullHeartbeat    = 2 * time.Second
	heartbeatLoss    = 3 * pullHeartbeat
	consumerInactive = 2 * time.Minute
)

// follow is a Log's Follow of one room: a goroutine that reads the room's
// messages through an ephemeral consumer, ordered, and makes a new
// consumer from where it stopped whenever the connection comes back or
// the consumer fails.
type follow struct {
	l       *Log
	s       *logStream
	room    string
	subj    string
	p       wshub.HistoryPolicy
	deliver func(wshub.Entry)

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	// Owned by run.
	last   uint64   // seq of the last message passed to deliver, or Follow's after
	epoch  string   // of the stream that last refers to; "" before the first consumer
	lost   bool     // a loss was delivered for a gap after lostAt
	lostAt uint64   //
	stale  []string // consumers to delete once connected
}

func newFollow(l *Log, s *logStream, room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) *follow {
	ctx, cancel := context.WithCancel(context.Background())
	return &follow{
		l: l, s: s, room: room, subj: s.roomSubject(room), p: p, deliver: deliver,
		ctx: ctx, cancel: cancel, done: make(chan struct{}), last: after,
	}
}

// stop ends the follow and waits for its goroutine.
func (f *follow) stop() {
	f.cancel()
	<-f.done
}

// errReconnected ends a session whose connection went away.
var errReconnected = errors.New("natsbroker: reconnected")

func (f *follow) run() {
	defer close(f.done)
	nc := f.l.nc
	status := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)
	wait := retryMin
	resumed := false
	for {
		err := f.session(status, resumed, &wait)
		if f.ctx.Err() != nil {
			return
		}
		resumed = true
		if errors.Is(err, errReconnected) {
			continue
		}
		if cb := nc.Opts.AsyncErrorCB; cb != nil && nc.IsConnected() {
			cb(nc, nil, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-f.ctx.Done():
			t.Stop()
			return
		}
		wait = min(2*wait, retryMax)
	}
}

// opCtx bounds one request of the follow by the timeout.
func (f *follow) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(f.ctx, f.l.timeout)
}

// waitConnected returns once the connection is up, or when the follow
// ends; it drains status.
func (f *follow) waitConnected(status <-chan nats.Status) {
	for {
		for len(status) > 0 {
			<-status
		}
		if f.l.nc.IsConnected() {
			return
		}
		select {
		case <-status:
		case <-f.ctx.Done():
			return
		}
	}
}

// session runs one consumer, from the message after f.last, until the
// connection goes away, the consumer fails or the follow ends.
func (f *follow) session(status <-chan nats.Status, resumed bool, wait *time.Duration) error {
	l, nc := f.l, f.l.nc
	f.waitConnected(status)
	if f.ctx.Err() != nil {
		return f.ctx.Err()
	}
	conn := connID(nc)
	for _, name := range f.stale {
		// The server deletes them after consumerInactive anyway.
		_ = nc.Publish(apiDelete+f.s.name+"."+name, nil)
	}
	f.stale = nil

	ctx, cancel := f.opCtx()
	h, err := f.s.ensure(ctx, l)
	if err == nil {
		err = f.checkEpoch(ctx, h, resumed)
	}
	var cons jetstream.Consumer
	if err == nil {
		cons, err = l.js.CreateConsumer(ctx, f.s.name, jetstream.ConsumerConfig{
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       f.last + 1,
			AckPolicy:         jetstream.AckNonePolicy,
			FilterSubject:     f.subj,
			InactiveThreshold: consumerInactive,
			MemoryStorage:     true,
			Replicas:          1,
		})
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			f.s.invalidate(h)
		}
	}
	cancel()
	if err != nil {
		return fmt.Errorf("natsbroker: follow %q: %w", f.room, err)
	}
	name := cons.CachedInfo().Name
	*wait = retryMin

	msgs := make(chan *nats.Msg, 2*pullBatch)
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		f.stale = append(f.stale, name)
		return fmt.Errorf("natsbroker: follow %q: %w", f.room, err)
	}
	defer func() {
		sub.Unsubscribe()
		if nc.Publish(apiDelete+f.s.name+"."+name, nil) != nil {
			f.stale = append(f.stale, name)
		}
	}()
	next := apiNext + f.s.name + "." + name
	pull := fmt.Appendf(nil, `{"batch":%d,"expires":%d,"idle_heartbeat":%d}`, pullBatch, pullExpires, pullHeartbeat)
	if err := nc.PublishRequest(next, inbox, pull); err != nil {
		return fmt.Errorf("natsbroker: follow %q: pull: %w", f.room, err)
	}
	hb := time.NewTimer(heartbeatLoss)
	defer hb.Stop()
	var dseq uint64 // the consumer's sequence of the last message
	received := 0   // of the current pull
	first := true   // nothing heard yet from the consumer
	for {
		select {
		case <-f.ctx.Done():
			return f.ctx.Err()
		case <-status:
			if !nc.IsConnected() || connID(nc) != conn {
				return errReconnected
			}
			continue
		case <-hb.C:
			return fmt.Errorf("natsbroker: follow %q: no heartbeat from the consumer within %v", f.room, heartbeatLoss)
		case m := <-msgs:
			hb.Reset(heartbeatLoss)
			if code := m.Header.Get("Status"); code != "" {
				switch code {
				case "100": // idle heartbeat: the consumer has nothing to send
				case "404", "408": // the pull ended
					received = 0
					if err := nc.PublishRequest(next, inbox, pull); err != nil {
						return fmt.Errorf("natsbroker: follow %q: pull: %w", f.room, err)
					}
				default:
					return fmt.Errorf("natsbroker: follow %q: consumer status %s %s", f.room, code, m.Header.Get("Description"))
				}
				if first && resumed {
					// Caught up after an outage: did the log drop
					// messages meanwhile?
					first = false
					if err := f.checkGap(); err != nil {
						return err
					}
				}
				continue
			}
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("natsbroker: follow %q: %w", f.room, err)
			}
			if meta.Sequence.Consumer != dseq+1 {
				// A message was lost on the way (a slow consumer).
				return fmt.Errorf("natsbroker: follow %q: consumer sequence %d after %d", f.room, meta.Sequence.Consumer, dseq)
			}
			dseq = meta.Sequence.Consumer
			seq := meta.Sequence.Stream
			if first {
				first = false
				if seq != f.last+1 {
					if err := f.checkGap(); err != nil {
						return err
					}
				}
			}
			if seq > f.last {
				// deliver returns once the members took what it
				// congested (wshub.Engine): the follow reads on at
				// their pace, pulling more only as it gets through
				// what it pulled, and a wait there is not a silence of
				// the consumer.
				f.deliver(wshub.Entry{Seq: seq, ID: m.Header.Get(jetstream.MsgIDHeader), JSON: m.Data})
				f.last = seq
				hb.Reset(heartbeatLoss)
			}
			if received++; received == pullBatch {
				received = 0
				if err := nc.PublishRequest(next, inbox, pull); err != nil {
					return fmt.Errorf("natsbroker: follow %q: pull: %w", f.room, err)
				}
			}
		}
	}
}

// checkEpoch learns the epoch of the stream the follow reads and, when it
// is not the one f.last refers to (the stream was created again), starts
// over from its beginning after telling the hub that messages were lost.
// The first time it takes the epoch the stream had when it was last
// looked at; afterwards it asks the server.
func (f *follow) checkEpoch(ctx context.Context, h jetstream.Stream, resumed bool) error {
	epoch := ""
	if !resumed {
		_, epoch = f.s.current()
	}
	if epoch == "" {
		info, err := h.Info(ctx)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			f.s.invalidate(h)
			return errStreamGone
		} else if err != nil {
			return err
		}
		epoch = epochOf(f.s.name, info.Created)
	}
	if f.epoch != "" && epoch != f.epoch {
		f.last = 0
		f.signalLost()
	}
	f.epoch = epoch
	return nil
}

// checkGap tells the hub, once, if the log no longer holds every message
// after the last one passed.
func (f *follow) checkGap() error {
	ctx, cancel := f.opCtx()
	defer cancel()
	h, err := f.s.ensure(ctx, f.l)
	if err != nil {
		return err
	}
	ok, _, err := f.l.complete(ctx, f.s, h, f.subj, f.p, f.last)
	if err != nil {
		return fmt.Errorf("natsbroker: follow %q: %w", f.room, err)
	}
	if !ok {
		f.signalLost()
	}
	return nil
}

// signalLost passes the hub a loss, an Entry without JSON, unless it did
// already for the same last message.
func (f *follow) signalLost() {
	if f.lost && f.lostAt == f.last {
		return
	}
	f.lost, f.lostAt = true, f.last
	f.deliver(wshub.Entry{})
}
