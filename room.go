package wshub

import (
	"context"
	"fmt"
	"iter"
	"slices"
	"sync"
	"unicode/utf8"
)

// Room is a handle to a named room of a hub, returned by Hub.Room. Rooms
// exist while they have members: the first join creates one and the last
// leave removes it. A Room value stays valid across that: it always refers
// to the hub's current room of that name, empty when nobody is in it.
type Room struct {
	hub  *Hub
	name string
}

// room is the live state of a room with at least one member, or of a
// history room while a server broadcast to it is stored.
type room struct {
	mu      sync.Mutex // serializes broadcasts so all members see one order
	members map[*Client]struct{}
	policy  HistoryPolicy // fixed when the room is created
	epoch   string        // of the history its members know; a message of another carries its epoch
	dead    bool          // removed from Hub.rooms; a new room of the name may exist

	// With a LogBroker: the seq of the last log message delivered to the
	// members (set by the first join), and the members that recovered
	// past it on this hub, with the seq they have (log.go).
	cursor     uint64
	positioned bool
	skip       map[*Client]uint64
	gone       chan struct{} // made by a publish waiting for its delivery; closed by kill

	pres *presRoom // with presence (presence.go)
}

// kill marks rm removed from Hub.rooms; rm.mu is held.
func (rm *room) kill() {
	rm.dead = true
	if rm.gone != nil {
		close(rm.gone)
	}
}

func newRoom(policy HistoryPolicy) *room {
	return &room{members: make(map[*Client]struct{}), policy: policy}
}

// Name returns the room's name.
func (r Room) Name() string { return r.name }

// Broadcast sends m to every member of the room except the given clients,
// as a message of type "message" (when m.Type is empty) with m.Room set to
// the room's name. It never waits for a client: m is encoded once per codec
// and queued for each member; a member whose send queue is full is closed
// (see Options.SendQueue) and the others still get m. A hub's members
// receive the room's messages in one order (across hubs, see Broker).
// Broadcast does not modify m.
//
// In a room with history (Options.History), m is numbered and kept, also
// when the room has no members (with a Broker, only while it has local
// members); the clients left out with except see its seq skipped.
//
// With Options.Broker, m also goes to the room's members on other hubs;
// ctx bounds that publish, and a broker error (ErrBroker) means nobody
// got m. Across a broker, Data travels as JSON.
//
// It returns ErrInvalidRoom for an invalid name, ErrHubClosed once the hub
// is closing (also when closing began during the call and m did not reach
// every member: the members it did reach get it before Shutdown's close),
// and the codec's error if m cannot be encoded. Broadcasting to
// a room without local members does nothing locally and returns nil.
func (r Room) Broadcast(ctx context.Context, m *Message, except ...*Client) error {
	return r.Publish(ctx, m, except...)()
}

// Publish is Broadcast for a producer that keeps several messages in
// flight. With a LogBroker (for a room with history) or an AsyncBroker, it
// hands m to the log or the bus and returns without waiting for it to be
// stored or confirmed; the returned wait does that, delivers m to this
// hub's members, and returns what Broadcast would. Messages published one
// after another (each Publish returning before the next is called) keep
// their order, as a client's publishes do. Otherwise Publish broadcasts m
// before it returns, and wait returns the result. Call wait once; ctx
// bounds the whole.
func (r Room) Publish(ctx context.Context, m *Message, except ...*Client) (wait func() error) {
	done := func(err error) func() error { return func() error { return err } }
	if err := validRoom(r.name); err != nil {
		return done(err)
	}
	if err := ctx.Err(); err != nil {
		return done(err)
	}
	h := r.hub
	if h.closing.Load() {
		return done(ErrHubClosed)
	}
	out := m.orMessage()
	out.Room = r.name
	out.Seq = 0
	p := h.policyFor(r.name)
	var f inflight
	var err error
	switch _, async := h.opts.Broker.(AsyncBroker); {
	case h.log != nil && p.on():
		f, err = h.startLog(ctx, r.name, &out, nil, except, p)
	case async:
		f, err = h.startBus(ctx, r.name, &out, except)
	default:
		return done(h.publish(ctx, r.name, &out, nil, except, p))
	}
	if err != nil {
		return done(err)
	}
	return func() error {
		_, err := f.finish()
		return err
	}
}

// Len returns the number of members. It takes the room's lock briefly.
func (r Room) Len() int {
	rm := r.hub.lookup(r.name)
	if rm == nil {
		return 0
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return len(rm.members)
}

// Clients returns an iterator over the members at the time of the call
// (taken under the room's lock, briefly).
// The hub holds no lock while the loop body runs, so the body may call any
// Hub, Room or Client method.
func (r Room) Clients() iter.Seq[*Client] {
	rm := r.hub.lookup(r.name)
	if rm == nil {
		return func(func(*Client) bool) {}
	}
	rm.mu.Lock()
	members := make([]*Client, 0, len(rm.members))
	for c := range rm.members {
		members = append(members, c)
	}
	rm.mu.Unlock()
	return slices.Values(members)
}

func validRoom(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidRoom)
	case len(name) > MaxRoomNameLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidRoom, MaxRoomNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", ErrInvalidRoom)
	}
	return nil
}
