package wshub

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// A Broker carries room messages between hubs, so that a room spans every
// process that has members in it. Set one in Options.Broker; without one,
// rooms are local to the hub and cost nothing extra. The natsbroker module
// implements Broker on NATS.
//
// The hub calls Subscribe when a room gets its first local member and
// Unsubscribe when its last local member leaves; for one room it calls
// these one at a time, for different rooms possibly concurrently, and never
// while holding a lock on its clients or rooms. It calls Publish for every
// room broadcast, possibly concurrently. A message is delivered to local
// members directly and sent to the broker; the hub ignores its own messages
// coming back, so each member gets a message exactly once.
//
// Ordering across hubs is per publisher: the messages of one client, or of
// one goroutine calling Room.Broadcast, reach every member in the order
// they were sent, but messages of different publishers may interleave
// differently on different hubs. Hub.Broadcast stays local to its hub.
type Broker interface {
	// Publish sends msg, an opaque encoded room message, to every hub
	// subscribed to room. It must return an error, not drop msg, when it
	// cannot hand msg to the bus.
	Publish(ctx context.Context, room string, msg []byte) error

	// Subscribe starts passing every message published to room, by any
	// hub, to deliver, one at a time and in the order of each publisher.
	// deliver owns msg and does not block on clients.
	Subscribe(room string, deliver func(msg []byte)) error

	// Unsubscribe stops the deliveries of room.
	Unsubscribe(room string) error

	// Close releases the broker. The hub calls it once Shutdown or Close
	// has closed every connection.
	Close() error
}

// Broker envelope: the origin hub's ID (hubIDLen bytes), then the message
// encoded with JSONCodec.
const hubIDLen = 16

// subscription is the broker state of one room name. Its mutex
// serializes Subscribe and Unsubscribe for that room, so the last call wins
// whatever order joins and leaves ran in, while other rooms go on.
type subscription struct {
	mu         sync.Mutex
	subscribed bool // guarded by mu
	refs       int  // callers holding or waiting for mu; guarded by Hub.subMu
}

// syncSubscription makes the broker's subscription to room match whether
// the room has local members.
func (h *Hub) syncSubscription(name string) error {
	if h.opts.Broker == nil {
		return nil
	}
	s := h.lockSubscription(name)
	defer h.unlockSubscription(name, s)
	rm := h.lookup(name)
	want := rm != nil
	if !want {
		h.unwatchPresence(name)
	}
	if want == s.subscribed {
		return nil
	}
	err := h.withBroker(func(b Broker) error {
		if !want {
			s.subscribed = false
			if m, ok := h.history.(*memoryHistory); ok {
				// Unsubscribed, this hub misses the room's messages from
				// other hubs: its history of the room ends here.
				m.forget(name)
			}
			if err := b.Unsubscribe(name); err != nil {
				return fmt.Errorf("%w: unsubscribe %q: %w", ErrBroker, name, err)
			}
			return nil
		}
		if h.log != nil && rm.policy.on() {
			rm.mu.Lock()
			after := rm.cursor
			rm.mu.Unlock()
			deliver := func(seq uint64, id string, msg []byte) { h.receiveLog(name, seq, id, msg) }
			if err := h.log.Follow(name, rm.policy, after, deliver); err != nil {
				return fmt.Errorf("%w: follow %q: %w", ErrBroker, name, err)
			}
		} else if err := b.Subscribe(name, func(msg []byte) { h.receive(name, msg) }); err != nil {
			return fmt.Errorf("%w: subscribe %q: %w", ErrBroker, name, err)
		}
		s.subscribed = true
		return nil
	})
	if errors.Is(err, ErrHubClosed) && !want {
		return nil // closing the broker dropped the subscription
	}
	return err
}

func (h *Hub) lockSubscription(name string) *subscription {
	h.subMu.Lock()
	s := h.subs[name]
	if s == nil {
		s = new(subscription)
		h.subs[name] = s
	}
	s.refs++
	h.subMu.Unlock()
	s.mu.Lock()
	return s
}

// unlockSubscription releases s, and forgets it when nobody else holds or
// waits for it and the room is not subscribed. It decides while still
// holding s.mu: a caller that counted itself in refs may subscribe as soon
// as s.mu is released, and then s must stay.
func (h *Hub) unlockSubscription(name string, s *subscription) {
	h.subMu.Lock()
	s.refs--
	if s.refs == 0 && !s.subscribed {
		delete(h.subs, name)
	}
	h.subMu.Unlock()
	s.mu.Unlock()
}

// An AsyncBroker is a Broker that can confirm a publish apart from
// handing it to the bus, so that the hub pipelines each client's
// publishes: it hands up to 32 of them to the bus, in order, without
// waiting for each confirmation, and delivers each to its local members
// and acks it once confirmed, in order. With a plain Broker, a client's
// next publish waits for the previous one's Publish.
type AsyncBroker interface {
	Broker

	// PublishAsync hands msg to the bus as Publish does, and returns
	// without waiting for its confirmation: the returned wait does that,
	// returns what Publish would, and returns when ctx is done at the
	// latest. The hub calls wait once. Messages handed one after another
	// (each PublishAsync returning before the next is called) keep their
	// order.
	PublishAsync(ctx context.Context, room string, msg []byte) (wait func() error)
}

// A LogBroker is a Broker that also keeps, for the rooms with a history
// policy, one durable log per room that every hub shares, in one order.
// The natsbroker module implements it on NATS JetStream.
//
// With a LogBroker, a message of a history room is appended to the room's
// log and is not delivered by the hub that published it: every hub, that
// one included, delivers the room's messages as it follows the log, so the
// members of a room see one order on every hub, and each message's seq is
// its position in the log. A publish is acknowledged (and Room.Broadcast
// returns nil) only once the log stored the message; whether one that
// failed may still be stored is the LogBroker's to document (a message
// the log never got is delivered nowhere). A client's publishes are
// pipelined: up to 32 are in flight at once, in order, and their acks and
// errors come in that order. Room history and recovery read the log, so
// a client recovers on any hub. Rooms without a history policy still go
// through Publish and Subscribe. Options.HistoryStore must then be nil.
//
// A room's seqs increase in the log's order but need not be consecutive.
type LogBroker interface {
	Broker

	// Append hands msg, a room message encoded with JSONCodec and without
	// a seq, to the log as the room's newest message, without waiting for
	// the log to store it. The returned wait waits for that and returns
	// msg's seq once stored, or why it was not; it returns when ctx is done
	// at the latest. The hub calls wait once. Messages appended one after
	// another (each Append returning before the next is called) are stored
	// in that order, so that a client's publishes can be in flight
	// together and keep their order. id is unique to this publish. p is
	// the room's history policy, which says how much of the log to retain.
	Append(ctx context.Context, room string, p HistoryPolicy, id string, msg []byte) (wait func() (seq uint64, err error))

	// Read returns the room's retained messages with a seq greater than
	// after, oldest first, at most limit of them (the newest ones when
	// there are more; all with a negative limit), and where the log stands.
	Read(ctx context.Context, room string, p HistoryPolicy, after uint64, limit int) (LogPage, error)

	// Follow starts passing the messages appended to room after seq after,
	// by any hub, to deliver, one at a time and in the log's order, with
	// their seq and the id they were appended with. It goes on across
	// reconnections from the last message it passed. When it finds that
	// the log no longer holds messages it has not passed, it calls
	// deliver(0, "", nil), and the hub closes the room's local members
	// with 1012 (service restart) so that they recover what they can.
	// Unsubscribe stops it. deliver does not block on clients.
	Follow(room string, p HistoryPolicy, after uint64, deliver func(seq uint64, id string, msg []byte)) error
}

// A LogPage is a part of a room's log, as LogBroker.Read returns it.
type LogPage struct {
	Messages []HistoryMessage // oldest first
	Epoch    string           // names the log; it changes only if the log is lost and started again
	Latest   uint64           // the seq of the room's newest message, or a seq below any the room will get

	// Complete reports that the log still holds every message of the room
	// with a seq greater than after: none was dropped by its retention.
	Complete bool
}
