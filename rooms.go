package wshub

import (
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// The room table: where rooms are created, found and removed. A room
// exists on a hub while it has local members (or clients joining it); the
// hub follows it on the engine meanwhile, and the engine passes its
// messages to Hub.deliver (deliver.go).

// Room is a handle to a named room of a hub, returned by Hub.Room. Rooms
// exist while they have members: the first join creates one and the last
// leave removes it. A Room value stays valid across that: it always refers
// to the hub's current room of that name, empty when nobody is in it.
type Room struct {
	hub  *Hub
	name string
}

// room is the live state of a room with local members.
type room struct {
	name string
	opts RoomOptions   // resolved once, when the room is created
	gone chan struct{} // closed when the room is removed

	mu      sync.Mutex // orders deliveries and joins, so that every member sees one order
	members map[*Client]struct{}
	joining map[*Client]*joiner // joins reading the history
	dead    bool                // removed from Hub.rooms; a new room of the name may exist

	// In a room with history: the seq of the last message delivered to
	// its members, set by the first join (positioned), the epoch the
	// members know, and the members that recovered past the cursor on
	// this hub, with the seq they have.
	cursor     uint64
	positioned bool
	epoch      string
	prevEpoch  string // the epoch before, whose pages are stale
	unplaced   uint64 // the highest seq delivered while not positioned
	skip       map[*Client]skipMark

	followed atomic.Bool // the engine passes the room's messages to this room

	ownMu sync.Mutex             // guards own
	own   map[string]*ownPublish // this hub's publishes on their way through the engine

	pres *presRoom // with presence (presence.go)

	label     atomic.Pointer[labelCounters] // of Options.RoomLabel, once asked
	delivered atomic.Uint64                 // room messages queued for its members here
}

// skipMark is where a member's messages start: it has those of epoch up to
// seq.
type skipMark struct {
	seq   uint64
	epoch string
}

func newRoom(name string, opts RoomOptions) *room {
	return &room{name: name, opts: opts, gone: make(chan struct{}), members: make(map[*Client]struct{})}
}

// Name returns the room's name.
func (r Room) Name() string { return r.name }

// Len returns the number of members on this hub.
func (r Room) Len() int {
	rm := r.hub.lookup(r.name)
	if rm == nil {
		return 0
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return len(rm.members)
}

// Clients returns an iterator over the members on this hub at the time of
// the call. The hub holds no lock while the loop body runs, so the body
// may call any Hub, Room or Client method.
func (r Room) Clients() iter.Seq[*Client] {
	return slices.Values(r.hub.members(r.name))
}

// members returns the local members of room name.
func (h *Hub) members(name string) []*Client {
	rm := h.lookup(name)
	if rm == nil {
		return nil
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	members := make([]*Client, 0, len(rm.members))
	for c := range rm.members {
		members = append(members, c)
	}
	return members
}

func (h *Hub) lookup(name string) *room {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.rooms[name]
}

// lockRoom returns the room called name, locked, creating it with opts if
// it does not exist. It does not wait for the room's lock while holding
// the hub's, so a busy room holds up no other.
func (h *Hub) lockRoom(name string, opts RoomOptions) *room {
	for {
		h.mu.Lock()
		rm := h.rooms[name]
		if rm == nil {
			rm = newRoom(name, opts)
			h.rooms[name] = rm
		}
		h.mu.Unlock()
		rm.mu.Lock()
		if !rm.dead {
			return rm
		}
		rm.mu.Unlock() // removed meanwhile: look again
	}
}

// unlockRoom unlocks rm, removing it if nobody is in it or joining it.
func (h *Hub) unlockRoom(rm *room) {
	empty := len(rm.members) == 0 && len(rm.joining) == 0
	rm.mu.Unlock()
	if !empty {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if len(rm.members) == 0 && len(rm.joining) == 0 && !rm.dead {
		rm.dead = true
		close(rm.gone)
		delete(h.rooms, rm.name)
	}
}

// roomOptions returns the options of room name: those of the room if it
// exists here, else Options.Rooms'. It is called outside every lock.
func (h *Hub) roomOptions(name string) RoomOptions {
	_, opts := h.lookupOptions(name)
	return opts
}

// lookupOptions returns the room called name, nil if it does not exist
// here, and its options, as roomOptions does.
func (h *Hub) lookupOptions(name string) (*room, RoomOptions) {
	if rm := h.lookup(name); rm != nil {
		return rm, rm.opts
	}
	if h.opts.Rooms == nil {
		return nil, RoomOptions{}
	}
	return nil, h.opts.Rooms(name)
}

// leave removes c from room name, and the room when it is empty.
func (h *Hub) leave(c *Client, name string) error {
	if err := validRoom(name); err != nil {
		return err
	}
	rm := h.lookup(name)
	if rm == nil || !c.removeRoom(name) {
		return errNotMember
	}
	rm.mu.Lock()
	delete(rm.members, c)
	delete(rm.joining, c)
	delete(rm.skip, c)
	if rm.pres != nil {
		h.presenceLeave(c, rm.pres)
	}
	h.unlockRoom(rm)
	h.syncFollow(name)
	h.m.leaves.Add(1)
	return nil
}

// forget removes a disconnected client from the hub.
func (h *Hub) forget(c *Client) {
	for _, name := range c.Rooms() {
		h.leave(c, name)
	}
	h.mu.Lock()
	delete(h.clients, c)
	delete(h.waiting, c)
	h.mu.Unlock()
	h.codecUsers[h.encKey[c.codecIndex]].Add(-1)
}

// follow is the engine state of one room name. Its mutex serializes
// Follow and Unfollow for that room, so the last call wins whatever order
// joins and leaves ran in, while other rooms go on. It is held across the
// engine's call: only the joins and leaves of that room that change
// whether it is followed wait for it.
type follow struct {
	mu   sync.Mutex
	rm   *room // the room the engine's deliveries go to; guarded by mu
	refs int   // callers holding or waiting for mu; guarded by Hub.followMu
}

// syncFollow makes the engine follow room name for the hub's current room
// of that name, or not at all when there is none, and returns the
// engine's error when it cannot follow.
func (h *Hub) syncFollow(name string) error {
	if rm := h.lookup(name); rm != nil && rm.isFollowed() {
		return nil
	}
	f := h.lockFollow(name)
	defer h.unlockFollow(name, f)
	rm := h.lookup(name)
	if f.rm == rm {
		if rm != nil {
			rm.setFollowed()
		}
		return nil
	}
	if f.rm != nil {
		f.rm = nil
		err := h.withEngine(func(e Engine) error { return e.Unfollow(name) })
		if err != nil && err != ErrHubClosed {
			h.opts.Logger.Warn("wshub: unfollow", "room", name, "err", err)
		}
	}
	if rm == nil {
		h.unwatchPresence(name)
		return nil
	}
	rm.mu.Lock()
	after, ready := rm.cursor, rm.positioned || !rm.opts.History.on()
	rm.mu.Unlock()
	if !ready {
		return nil // the first join's read positions it, then it is followed
	}
	err := h.withEngine(func(e Engine) error {
		return e.Follow(name, rm.opts.History, after, func(en Entry) { h.deliver(rm, en) })
	})
	if err != nil {
		if err != ErrHubClosed {
			h.m.engineErrs.Add(1)
		}
		return fmt.Errorf("%w: follow %q: %w", errBroker, name, err)
	}
	f.rm = rm
	rm.setFollowed()
	return nil
}

func (rm *room) isFollowed() bool { return rm.followed.Load() }

func (rm *room) setFollowed() { rm.followed.Store(true) }

func (h *Hub) lockFollow(name string) *follow {
	h.followMu.Lock()
	f := h.follows[name]
	if f == nil {
		f = new(follow)
		h.follows[name] = f
	}
	f.refs++
	h.followMu.Unlock()
	f.mu.Lock()
	return f
}

// unlockFollow releases f, and forgets it when nobody else holds or waits
// for it and the room is not followed. It decides while still holding
// f.mu: a caller that counted itself in refs may follow as soon as f.mu is
// released, and then f must stay.
func (h *Hub) unlockFollow(name string, f *follow) {
	h.followMu.Lock()
	f.refs--
	if f.refs == 0 && f.rm == nil {
		delete(h.follows, name)
	}
	h.followMu.Unlock()
	f.mu.Unlock()
}

// roomOf returns the room called name if c is in it.
func (c *Client) roomOf(name string) (*room, error) {
	if err := validRoom(name); err != nil {
		return nil, err
	}
	rm := c.hub.lookup(name)
	if rm == nil || !c.inRoom(name) {
		return nil, errNotMember
	}
	return rm, nil
}

func validRoom(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", errInvalidRoom)
	case len(name) > maxRoomNameLen:
		return fmt.Errorf("%w: longer than %d bytes", errInvalidRoom, maxRoomNameLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", errInvalidRoom)
	}
	return nil
}
