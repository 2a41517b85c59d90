package wshub

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// The road of a room message, the same for every message and every
// engine (docs/DESIGN.md draws it):
//
//  1. start: a client's publish (Client.publish) or the server's
//     Room.Broadcast encodes the message as JSON, outside every lock, and
//     hands it to the Engine with an id of this hub (Hub.start);
//  2. the engine gives it its place in the room's order, and its seq in a
//     room with history, and passes it to every hub that follows the room,
//     this one included;
//  3. Hub.deliver encodes it for the codecs in use, outside every lock,
//     then, holding the room's lock only to walk its members, queues it
//     for each (the clients joining get it in their join's buffer);
//  4. the publisher waits for its message to be kept by the engine and
//     delivered here (pending.finish), then for the queues it congested
//     (flow.go), then the client gets its ack.

// ownPublish is a publish of this hub on its way through the engine.
type ownPublish struct {
	m      *Message
	from   *Client   // the publishing client; nil for the server
	except []*Client // left out by Room.Broadcast

	publishing atomic.Bool // Engine.Publish has not returned

	// Set by the delivery here, before done closes.
	congested []*Client // queues that the delivery left congested
	err       error     // what Room.Broadcast returns: a codec's error, or ErrHubClosed
	inline    bool      // delivered before Engine.Publish returned
	done      chan struct{}
}

// pending is a publish handed to the engine.
type pending struct {
	h    *Hub
	rm   *room // nil when the room has no local members
	id   string
	own  *ownPublish
	wait func() error
	ctx  context.Context
}

// start hands m, a message for room name, to the engine. from is the
// publishing client, nil for the server; except are clients to leave out.
// It never blocks on the network: pending.finish waits.
func (h *Hub) start(ctx context.Context, name string, opts RoomOptions, m *Message, from *Client, except []*Client) (*pending, error) {
	msg, err := (JSONCodec{}).Marshal(m)
	if err != nil {
		return nil, err
	}
	p := &pending{h: h, ctx: ctx}
	p.id = h.id + "-" + strconv.FormatUint(h.nextPub.Add(1), 36)
	p.own = &ownPublish{m: m, from: from, except: except, done: make(chan struct{})}
	if rm := h.lookup(name); rm != nil {
		rm.ownMu.Lock()
		if rm.own == nil {
			rm.own = make(map[string]*ownPublish)
		}
		rm.own[p.id] = p.own
		rm.ownMu.Unlock()
		p.rm = rm
	}
	p.own.publishing.Store(true)
	err = h.withEngine(func(e Engine) error {
		p.wait = e.Publish(ctx, name, opts.History, p.id, msg)
		return nil
	})
	p.own.publishing.Store(false)
	if err != nil {
		p.forget()
		return nil, err
	}
	return p, nil
}

// delivered reports whether the message has been delivered here already.
func (p *pending) delivered() bool {
	select {
	case <-p.own.done:
		return true
	default:
		return false
	}
}

// kept reports whether the engine passed the message on before its
// Publish returned, as the memory engine does: then its wait returns at
// once.
func (p *pending) kept() bool { return p.delivered() && p.own.inline }

// finish waits until the engine kept the message, then, if the room has
// local members, for its delivery to them, at most WriteTimeout: a client
// sees its own message before its ack. It returns the clients whose queue
// that delivery left congested, for the publisher to wait for (flow.go).
func (p *pending) finish() ([]*Client, error) {
	defer p.forget()
	if err := p.wait(); err != nil {
		return nil, fmt.Errorf("%w: publish to %q: %w", errBroker, p.own.m.Room, err)
	}
	if p.delivered() {
		return p.own.congested, p.own.err
	}
	if p.rm == nil {
		return nil, p.h.closedErr(1)
	}
	t := time.NewTimer(p.h.opts.WriteTimeout)
	defer t.Stop()
	select {
	case <-p.own.done:
		return p.own.congested, p.own.err
	case <-p.rm.gone: // the room's local members left
	case <-p.ctx.Done(): // the publishing client is closing
	case <-t.C: // kept, so delivered here later
	}
	return nil, p.h.closedErr(1)
}

func (p *pending) forget() {
	if p.rm != nil {
		p.rm.ownMu.Lock()
		delete(p.rm.own, p.id)
		p.rm.ownMu.Unlock()
	}
}

// closedErr is what a broadcast returns when it was queued for n clients
// that were not closing: ErrHubClosed once the hub is closing and the
// broadcast missed someone (Shutdown then writes the queues it reached).
func (h *Hub) closedErr(missed int) error {
	if missed > 0 && h.closing.Load() {
		return ErrHubClosed
	}
	return nil
}

// deliver queues a room message that the engine passes, in the room's
// order, for rm's members; a nil JSON means the history lost messages that
// they have not had.
func (h *Hub) deliver(rm *room, en Entry) {
	if en.JSON == nil {
		h.historyLost(rm)
		return
	}
	var own *ownPublish
	if en.ID != "" {
		rm.ownMu.Lock()
		if own = rm.own[en.ID]; own != nil {
			delete(rm.own, en.ID)
		}
		rm.ownMu.Unlock()
	}
	if own != nil {
		own.inline = own.publishing.Load()
		defer close(own.done)
	}
	if h.closing.Load() {
		if own != nil {
			own.err = ErrHubClosed
		}
		return
	}
	var m *Message
	if own != nil {
		m = own.m
	} else {
		m = new(Message)
		if err := (JSONCodec{}).Unmarshal(en.JSON, m); err != nil {
			h.opts.Logger.Warn("wshub: undecodable room message from the engine", "room", rm.name, "err", err)
			return
		}
		m.Room = rm.name
	}
	m.Seq = en.Seq
	enc := h.newEncoding(m)
	enc.setJSON(en.JSON)
	enc.prepare()

	rm.mu.Lock()
	if !rm.admit(en, enc) {
		rm.mu.Unlock()
		return
	}
	var late, lateJoins []*Client // clients of a codec that was not in use a moment ago
	for c := range rm.members {
		if own != nil && contains(own.except, c) {
			continue
		}
		if s, ok := rm.skip[c]; ok {
			if en.Seq <= s {
				continue // recovered on this hub past the cursor
			}
			delete(rm.skip, c)
		}
		if !enc.ready(c) {
			late = append(late, c)
			continue
		}
		enc.send(c, own)
	}
	for c, j := range rm.joining {
		if en.Seq > 0 && en.Seq <= j.start || own != nil && contains(own.except, c) {
			continue
		}
		if !enc.ready(c) {
			lateJoins = append(lateJoins, c)
			continue
		}
		j.buffer(enc, c)
	}
	rm.mu.Unlock()
	// The next delivery to the room waits for this one to return, so the
	// late ones still get the message in order.
	for _, c := range late {
		enc.send(c, own)
	}
	if len(lateJoins) > 0 {
		for _, c := range lateJoins {
			enc.get(enc.h.encKey[c.codecIndex])
		}
		rm.mu.Lock()
		for _, c := range lateJoins {
			if j := rm.joining[c]; j != nil {
				j.buffer(enc, c)
			} else if _, ok := rm.members[c]; ok {
				enc.send(c, own)
			}
		}
		rm.mu.Unlock()
	}
	if own != nil {
		own.err = enc.result()
	}
}

// admit decides, rm.mu held, whether rm's members get en: in a room with
// history, a message they have not had. It moves the room's cursor, and
// takes a new epoch of the history into the encoding.
func (rm *room) admit(en Entry, enc *encoding) bool {
	if rm.dead {
		return false
	}
	if !rm.opts.History.on() {
		return true
	}
	if !rm.positioned {
		return false // the history lost messages: the members are closing
	}
	if en.Epoch != "" && rm.epoch != "" && en.Epoch != rm.epoch {
		// The history started anew (it expired or was evicted) while the
		// members knew another: they learn it from this message.
		rm.cursor, rm.skip = 0, nil
		for _, j := range rm.joining {
			j.start = 0
		}
		enc.setEpoch(en.Epoch)
	}
	if en.Epoch != "" {
		rm.epoch = en.Epoch
	}
	if en.Seq <= rm.cursor {
		return false // the members have it
	}
	rm.cursor = en.Seq
	return true
}

// encoding is one message being sent to many clients, encoded at most
// once per codec: slot i for Options.Codecs[i], the last slot for JSON.
// prepare encodes it, outside every lock, for the codecs in use.
type encoding struct {
	h      *Hub
	m      *Message
	json   []byte // stored JSON without seq, if known
	slots  []encSlot
	err    error // first encoding error
	queued int   // clients it was queued for
	closed int   // clients that were closing
}

// encSlot is one codec's encoding of a message.
type encSlot struct {
	frame []byte
	err   error
	done  bool
}

func (h *Hub) newEncoding(m *Message) *encoding {
	return &encoding{h: h, m: m, slots: make([]encSlot, len(h.opts.Codecs)+1)}
}

// setJSON supplies the message's JSON without seq, as stored.
func (e *encoding) setJSON(b []byte) { e.json = b }

// prepare encodes the message for every codec that a client of the hub
// uses.
func (e *encoding) prepare() {
	for slot := range e.slots {
		if e.h.codecUsers[slot].Load() > 0 {
			e.get(slot)
		}
	}
}

// setEpoch adds the epoch to the message: the JSON slot is made again,
// and the others when a client needs them.
func (e *encoding) setEpoch(epoch string) {
	e.m.Epoch = epoch
	clear(e.slots)
	e.get(len(e.slots) - 1) // the hub's own code: safe under the lock
}

// ready reports whether c's codec's encoding is made.
func (e *encoding) ready(c *Client) bool { return e.slots[e.h.encKey[c.codecIndex]].done }

func (e *encoding) get(slot int) ([]byte, error) {
	s := &e.slots[slot]
	if s.done {
		return s.frame, s.err
	}
	s.done = true
	var b []byte
	var err error
	switch {
	case slot == len(e.slots)-1 && e.json != nil:
		b = e.json
		if e.m.Seq > 0 {
			b = withPosition(e.json, e.m.Seq, e.m.Epoch)
		}
	case slot == len(e.slots)-1:
		b, err = (JSONCodec{}).Marshal(e.m)
	default:
		b, err = e.h.opts.Codecs[slot].Marshal(e.m)
	}
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
	return s.frame, s.err
}

// send queues e for c and notes in own, if any, a queue it congested.
func (e *encoding) send(c *Client, own *ownPublish) {
	if congested, _ := e.queue(c); congested && own != nil && own.from != nil {
		own.congested = append(own.congested, c)
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

// result is what a broadcast of e returns: a codec's error, or
// ErrHubClosed when the hub began closing before e reached every member.
func (e *encoding) result() error {
	if e.err != nil {
		return e.err
	}
	if e.queued == 0 {
		return e.h.closedErr(1)
	}
	return e.h.closedErr(e.closed)
}

func contains(cs []*Client, c *Client) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// Broadcast sends m to every member of the room except the given clients,
// on every hub that shares the Engine, as a message of type "message"
// (when m.Type is empty) with m.Room set to the room's name. It never
// waits for a client: m is encoded once per codec and queued for each
// member; a member whose send queue is full is closed (see
// Options.SendQueue) and the others still get m. The members of a room
// receive its messages in the engine's one order. Broadcast does not
// modify m.
//
// It goes the road of a client's publish: in a room with history
// (Options.Rooms) m is numbered and kept, also when the room has no
// members here (the memory engine keeps it; see the engine's documentation
// for others), and the clients left out with except see its seq skipped.
// Broadcast returns once the engine kept m and this hub's members have it
// queued; ctx, or WriteTimeout when ctx has no deadline, bounds that. Calls
// from one goroutine keep their order; calls from several goroutines are
// carried at once, which is how a server keeps many messages in flight.
//
// It returns ErrInvalid for an invalid name, ErrHubClosed once the hub is
// closing (also when closing began during the call and m did not reach
// every member: the members it did reach get it before Shutdown's close),
// ErrEngine when the engine did not take m (nobody got it), and the
// codec's error if m cannot be encoded.
func (r Room) Broadcast(ctx context.Context, m *Message, except ...*Client) error {
	if err := validRoom(r.name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	h := r.hub
	if h.closing.Load() {
		return ErrHubClosed
	}
	out := m.orMessage()
	out.Room = r.name
	out.Seq = 0
	p, err := h.start(ctx, r.name, h.roomOptions(r.name), &out, nil, except)
	if err != nil {
		return err
	}
	_, err = p.finish()
	return err
}
