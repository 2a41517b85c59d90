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
	want := h.lookup(name) != nil
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
		if err := b.Subscribe(name, func(msg []byte) { h.receive(name, msg) }); err != nil {
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
