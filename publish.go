package wshub

import (
	"context"
	"fmt"
)

// The journey of a room message. It starts as a client's publish
// (Client.publish, on the client's read goroutine) or a server's
// Room.Publish or Room.Broadcast, or arrives from another hub through the
// Broker (Hub.receive). Hub.publish hands it to the Broker first, so that
// a broker error means nobody got it. Then Hub.deliver, holding the room's
// lock so that all members see one order, gives it its seq when the room
// keeps history (see history.go) and queues it for each local member,
// encoded once per codec by an encoding. A client's own publish then waits
// for the queues it congested (see flow.go). With an AsyncBroker the same
// happens in two steps (startBus, then busPublish.finish), and with a
// LogBroker a history room's message goes through the log (log.go); both
// let a client's publishes, or a server's, be in flight together.

// publish delivers m to the room's local members and, with a broker, to
// the other hubs. from is the publishing client when publish runs on its
// read goroutine, nil for the server; policy is the room's history policy
// when the caller knows it (a server broadcast may create a history room
// that has no members, so that the message is kept).
func (h *Hub) publish(ctx context.Context, name string, m *Message, from *Client, except []*Client, policy HistoryPolicy) error {
	enc := h.newEncoding(m)
	enc.from = from
	var stored []byte // the JSON without seq that the broker carries and the history keeps
	if h.opts.Broker != nil {
		var err error
		if stored, err = enc.json(); err != nil {
			return err
		}
		env := h.envelope(stored)
		err = h.withBroker(func(br Broker) error {
			if err := br.Publish(ctx, name, env); err != nil {
				return fmt.Errorf("%w: publish to %q: %w", ErrBroker, name, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Rooms without local members are not subscribed, so this hub's
		// history of them would miss other hubs' messages: keep none.
		policy = HistoryPolicy{}
	}
	return h.deliver(ctx, name, enc, except, policy, stored)
}

// envelope returns the broker message of stored, the JSON of a message.
func (h *Hub) envelope(stored []byte) []byte {
	env := make([]byte, 0, hubIDLen+len(stored))
	return append(append(env, h.id...), stored...)
}

// A busPublish is a publish handed to an AsyncBroker: once the
// broker confirms it, it is delivered to the local members (see
// Client.pipeline).
type busPublish struct {
	h      *Hub
	ctx    context.Context
	name   string
	enc    *encoding
	except []*Client
	stored []byte
	wait   func() error
}

// startBus hands m, a publish to room name, to the AsyncBroker.
func (h *Hub) startBus(ctx context.Context, name string, m *Message, except []*Client) (*busPublish, error) {
	b := &busPublish{h: h, ctx: ctx, name: name, enc: h.newEncoding(m), except: except}
	var err error
	if b.stored, err = b.enc.json(); err != nil {
		return nil, err
	}
	err = h.withBroker(func(br Broker) error {
		b.wait = br.(AsyncBroker).PublishAsync(ctx, name, h.envelope(b.stored))
		return nil
	})
	return b, err
}

// finish waits for the broker's confirmation, then delivers the message to
// the room's local members; it returns the clients that left congested.
func (b *busPublish) finish() ([]*Client, error) {
	if err := b.wait(); err != nil {
		return nil, fmt.Errorf("%w: publish to %q: %w", ErrBroker, b.name, err)
	}
	var congested []*Client
	b.enc.sink = &congested
	err := b.h.deliver(b.ctx, b.name, b.enc, b.except, HistoryPolicy{}, b.stored)
	return congested, err
}

// receive delivers a message from the broker to local members.
func (h *Hub) receive(name string, env []byte) {
	if len(env) < hubIDLen || string(env[:hubIDLen]) == h.id || h.closing.Load() {
		return
	}
	b := env[hubIDLen:]
	var m Message
	if err := (JSONCodec{}).Unmarshal(b, &m); err != nil || m.Type == "" {
		h.opts.Logger.Warn("wshub: undecodable broker message", "room", name, "err", err)
		return
	}
	m.Room = name
	enc := h.newEncoding(&m)
	enc.setJSON(b)
	if err := h.deliver(context.Background(), name, enc, nil, HistoryPolicy{}, b); err != nil {
		h.opts.Logger.Warn("wshub: broker message not delivered", "room", name, "err", err)
	}
}

// deliver queues a message for the local members of room name, except
// some clients; in a room with history it first stores the message and
// numbers it, under the room's lock. A room that does not exist is created
// only for a policy that keeps history.
func (h *Hub) deliver(ctx context.Context, name string, enc *encoding, except []*Client, policy HistoryPolicy, stored []byte) error {
	rm := h.lockRoom(name, policy)
	if rm == nil {
		return enc.result()
	}
	if rm.policy.on() && h.log == nil {
		var err error
		if stored == nil {
			stored, err = (JSONCodec{}).Marshal(enc.m)
		}
		var seq uint64
		var epoch string
		if err == nil {
			seq, epoch, err = h.appendHistory(ctx, name, rm.policy, stored)
		}
		if err != nil {
			h.unlockRoom(name, rm)
			return historyError(name, err)
		}
		enc.m.Seq = seq
		if epoch != rm.epoch {
			// The store started a new history (it expired or was evicted)
			// while members knew another: they learn it from this message.
			if rm.epoch != "" {
				enc.m.Epoch = epoch
			}
			rm.epoch = epoch
		}
		enc.setJSON(withPosition(stored, seq, enc.m.Epoch))
	}
	for c := range rm.members {
		if len(except) > 0 && contains(except, c) {
			continue
		}
		enc.send(c)
	}
	h.unlockRoom(name, rm)
	return enc.result()
}

// appendHistory appends to the room's history within ctx, or within
// WriteTimeout when ctx has no deadline (a broker delivery): the room's
// lock is held meanwhile.
func (h *Hub) appendHistory(ctx context.Context, name string, p HistoryPolicy, stored []byte) (uint64, string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.opts.WriteTimeout)
		defer cancel()
	}
	return h.history.Append(ctx, name, p, stored)
}

// lockRoom returns the room called name, locked, or nil if it has no
// members; for a policy that keeps history it creates the room instead.
func (h *Hub) lockRoom(name string, policy HistoryPolicy) *room {
	for {
		var rm *room
		if policy.on() {
			h.mu.Lock()
			if rm = h.rooms[name]; rm == nil {
				rm = newRoom(policy)
				h.rooms[name] = rm
			}
			h.mu.Unlock()
		} else if rm = h.lookup(name); rm == nil {
			return nil
		}
		rm.mu.Lock()
		if !rm.dead {
			return rm
		}
		rm.mu.Unlock() // removed meanwhile: look again
	}
}

// unlockRoom unlocks rm, removing it if it has no members (a history
// room that lockRoom created for a server broadcast).
func (h *Hub) unlockRoom(name string, rm *room) {
	empty := len(rm.members) == 0
	rm.mu.Unlock()
	if !empty {
		return
	}
	h.mu.Lock()
	rm.mu.Lock()
	if len(rm.members) == 0 && !rm.dead {
		rm.kill()
		delete(h.rooms, name)
	}
	rm.mu.Unlock()
	h.mu.Unlock()
}

func contains(cs []*Client, c *Client) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// encoding is one message being broadcast, encoded at most once per
// codec: slot i for Options.Codecs[i], the last slot for JSON.
type encoding struct {
	h      *Hub
	m      *Message
	slots  []encSlot
	err    error      // first encoding error
	queued int        // clients it was queued for
	closed int        // clients that were closing
	from   *Client    // the publishing client, on its read goroutine; nil for the server
	sink   *[]*Client // else, where to note the clients it congests, if anywhere
}

// encSlot is one codec's encoding of a message, made on first use.
type encSlot struct {
	frame []byte
	err   error
	done  bool
}

func (h *Hub) newEncoding(m *Message) *encoding {
	return &encoding{h: h, m: m, slots: make([]encSlot, len(h.opts.Codecs)+1)}
}

func (e *encoding) get(slot int) ([]byte, error) {
	s := &e.slots[slot]
	if !s.done {
		s.done = true
		var codec Codec = JSONCodec{}
		if slot < len(e.h.opts.Codecs) {
			codec = e.h.opts.Codecs[slot]
		}
		b, err := codec.Marshal(e.m)
		switch {
		case err != nil:
			s.err = err
			if e.err == nil {
				e.err = err
			}
		case b == nil:
			b = []byte{} // an empty message is still a frame
		}
		s.frame = b
	}
	return s.frame, s.err
}

// result is what a broadcast of e returns: a codec's error, or
// ErrHubClosed when the hub began closing before e reached every member
// (Shutdown then writes the queues e did reach).
func (e *encoding) result() error {
	if e.err != nil {
		return e.err
	}
	if e.h.closing.Load() && (e.closed > 0 || e.queued == 0) {
		return ErrHubClosed
	}
	return nil
}

func (e *encoding) json() ([]byte, error) { return e.get(len(e.slots) - 1) }

// setJSON supplies the JSON encoding, as received from the broker or
// with a seq.
func (e *encoding) setJSON(b []byte) {
	e.slots[len(e.slots)-1] = encSlot{frame: b, done: true}
}

func (e *encoding) send(c *Client) {
	congested, _ := e.queue(c)
	switch {
	case !congested:
	case e.from != nil:
		e.from.congested(c)
	case e.sink != nil:
		*e.sink = append(*e.sink, c)
	}
}

// queue queues e for c, counting it in the broadcast's result, and
// reports whether that left c congested.
func (e *encoding) queue(c *Client) (congested bool, err error) {
	b, err := e.get(e.h.encKey[c.codecIndex])
	if err != nil {
		return false, err
	}
	congested, err = c.enqueue(b)
	switch err {
	case nil:
		e.queued++
	case ErrClientClosed:
		e.closed++
	}
	return congested, err
}
