package wshub

import (
	"context"
	"fmt"
	"strconv"
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
//  3. Hub.deliver (deliver.go) encodes it for the codecs in use, outside every lock,
//     then, holding the room's lock only to walk its members, queues it
//     for each (the clients joining get it in their join's buffer);
//  4. the publisher waits for its message to be kept by the engine and
//     delivered here (pending.finish), then for the queues it congested
//     (flow.go), then the client gets its ack.

// ownPublish is a publish of this hub on its way through the engine.
type ownPublish struct {
	m       *Message
	from    *Client   // the publishing client; nil for the server
	except  []*Client // left out by Room.Broadcast
	expires int64     // UnixNano after which it is forgotten if not delivered

	// Set by the delivery here, before done closes.
	congested []*Client // queues that the delivery left congested
	err       error     // what Room.Broadcast returns: a codec's error, or ErrHubClosed
	done      chan struct{}
}

// pending is a publish handed to the engine.
type pending struct {
	own     ownPublish // what its delivery here needs, found by id in rm.own
	started time.Time  // when it was handed to the engine
	h       *Hub
	rm      *room // nil when the room has no local members
	id      string
	wait    func() error
	ctx     context.Context
}

// start hands m, a message for room name (rm here, nil if it has no local
// members), to the engine. from is the publishing client, nil for the
// server; except are clients to leave out.
// It never blocks on the network: pending.finish waits.
func (h *Hub) start(ctx context.Context, name string, rm *room, opts RoomOptions, m *Message, from *Client, except []*Client) (*pending, error) {
	msg, err := (JSONCodec{}).Marshal(m)
	if err != nil {
		return nil, err
	}
	p := &pending{h: h, ctx: ctx, own: ownPublish{m: m, from: from, except: except, done: make(chan struct{})}}
	var id [48]byte
	p.id = string(strconv.AppendUint(append(append(id[:0], h.id...), '-'), h.nextPub.Add(1), 36))
	if rm != nil && rm.isFollowed() {
		// Its delivery here will find it by id. A room not followed yet
		// gets the message, if it keeps history, from the history when
		// the engine starts following it.
		now := time.Now().UnixNano()
		p.own.expires = now + 2*int64(h.opts.WriteTimeout)
		rm.ownMu.Lock()
		if rm.own == nil {
			rm.own = make(map[string]*ownPublish)
		}
		if len(rm.own) >= pipeWindow {
			rm.sweepOwnLocked(now)
		}
		rm.own[p.id] = &p.own
		rm.ownMu.Unlock()
		p.rm = rm
	}
	if h.opts.RoomLabel != nil {
		h.labelOf(rm, name).published.Add(1)
	}
	p.started = time.Now()
	err = h.withEngine(func(e Engine) error {
		p.wait = e.Publish(ctx, name, opts.History, p.id, msg)
		return nil
	})
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

// finish waits until the engine kept the message, then, if the room has
// local members, for its delivery to them, at most WriteTimeout: a client
// sees its own message before its ack. It returns the clients whose queue
// that delivery left congested, for the publisher to wait for (flow.go).
//
// A publish whose delivery here is late stays registered, so that the
// delivery still leaves out the clients it excepted.
func (p *pending) finish() ([]*Client, error) {
	err := p.wait()
	p.h.m.engineWait.since(p.started)
	if err != nil {
		p.h.m.engineErrs.Add(1)
		p.forget()
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

// sweepOwnLocked forgets the publishes whose delivery here did not come in
// twice WriteTimeout (an engine that lost them); rm.ownMu is held.
func (rm *room) sweepOwnLocked(now int64) {
	for id, o := range rm.own {
		if o.expires < now {
			delete(rm.own, id)
		}
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

// Broadcast sends m to every member of the room on every hub that shares
// the Engine, except the given clients, as a message of type "message"
// when m.Type is empty, with m.Room set; it does not modify m. It takes the
// road of a client's publish: members get the room's messages in one
// order, and in a room with history m is numbered and kept. It never waits
// for a client (one whose queue is full is closed). It returns once the
// engine kept m and this hub's members have it queued; calls from several
// goroutines are in flight together, calls from one keep their order.
//
// It returns ErrInvalid for an invalid name, a codec's error if one cannot
// encode m (the others' members get it), ErrEngine when the engine did not
// take m (nobody got it), and ErrHubClosed once the hub is closing, also
// when closing began during the call and m missed a member.
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
	rm, opts := h.lookupOptions(r.name)
	p, err := h.start(ctx, r.name, rm, opts, &out, nil, except)
	if err != nil {
		return err
	}
	_, err = p.finish()
	return err
}
