package wshub

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// Presence. A room for which Options.Presence returns true tells its
// members who is in it: on joining, a client gets the room's state once (a
// "presence" frame), then diffs ("presence_diff" frames: who joined, who
// left), coalesced so that a room sends at most one diff every
// PresenceInterval however many clients come and go. Presence is keyed by
// client ID: an ID joins when its first connection joins the room and
// leaves when its last one leaves or drops, so that one user with three
// tabs is one member with three connections. What a member shows of
// itself is its Identity.Info, set by Options.Authenticate; a client
// cannot set it. With a PresenceBroker, the state spans every hub.
//
// Each presence room has a presRoom, shared by its room struct while it
// has local members and kept by the hub while a diff is pending or other
// hubs have members in it. Lock order: Hub.mu, room.mu, Hub.presMu,
// presRoom.mu.

// Presence bounds.
const (
	// PresenceInterval is the longest a join or leave waits before the
	// room's members hear of it: changes within it go out in one diff.
	PresenceInterval = 100 * time.Millisecond

	// MaxPresenceList is how many members a presence state lists at most
	// (fewer when their Info would make the frame larger than 32 KiB); its
	// "total" counts them all.
	MaxPresenceList = 100

	// MaxInfoBytes caps the JSON encoding of Identity.Info.
	MaxInfoBytes = 1024
)

// Message types of presence.
const (
	TypePresence     = "presence"      // client → server: ask for a room's state; server → client: the state
	TypePresenceDiff = "presence_diff" // server → client: who joined and left a room
)

// A Presence is one member of a presence room: a client ID, what it shows
// of itself, and how many connections it has in the room.
type Presence struct {
	ID    string          `json:"id"`
	Info  json.RawMessage `json:"info,omitempty"`
	Conns int             `json:"conns"`
}

// presenceState is the Data of a "presence" frame.
type presenceState struct {
	Members []Presence `json:"members"`
	Total   int        `json:"total"`
}

// presenceDiff is the Data of a "presence_diff" frame.
type presenceDiff struct {
	Joins  []Presence `json:"joins"`
	Leaves []Presence `json:"leaves"`
}

// A PresenceBroker is a Broker that also shares the presence of rooms
// between hubs, so that a presence room's state and diffs cover its
// members on every hub. The natsbroker module implements it on a
// JetStream key-value bucket.
//
// The hub calls WatchPresence before a presence room gets its first local
// member and UnwatchPresence when its last one leaves, SetPresence with
// its local members after each change (coalesced, at most once per
// PresenceInterval per room), and SetPresence(room, nil) when it has none.
// Close withdraws what the hub published.
type PresenceBroker interface {
	Broker

	// SetPresence publishes this hub's members of room, a JSON array of
	// Presence, replacing what it published before; nil withdraws them.
	// The broker keeps them visible to the other hubs while this hub is
	// alive and connected, and withdraws them within a bound it documents
	// when it is not.
	SetPresence(room string, members []byte) error

	// WatchPresence calls update with the members other hubs published
	// for room, as each hub's set changes (with nil when the hub withdrew
	// them or they expired), starting with the current ones, which it
	// passes before it returns. Calls for one room come one at a time.
	WatchPresence(room string, update func(hub string, members []byte)) error

	// UnwatchPresence stops the updates of room.
	UnwatchPresence(room string) error
}

// presRoom is the presence of one room.
type presRoom struct {
	name string

	mu     sync.Mutex
	local  map[string]*Presence           // this hub's members, by ID
	remote map[string]map[string]Presence // other hubs' members, by hub and ID
	ids    []string                       // every member's ID over all hubs, sorted
	joins  map[string]Presence            // IDs that appeared since the last diff
	leaves map[string]Presence            // IDs that disappeared since the last diff
	timer  *time.Timer                    // pending flush
	dirty  bool                           // local changed since the last SetPresence
	watch  bool                           // watching other hubs

	putMu sync.Mutex // orders SetPresence calls
}

func newPresRoom(name string) *presRoom {
	return &presRoom{name: name, local: make(map[string]*Presence), remote: make(map[string]map[string]Presence),
		joins: make(map[string]Presence), leaves: make(map[string]Presence)}
}

// presenceOn reports whether room name has presence.
func (h *Hub) presenceOn(name string) bool {
	return h.opts.Presence != nil && h.opts.Presence(name)
}

// presRoomFor returns the presence of room name, creating it if needed.
func (h *Hub) presRoomFor(name string) *presRoom {
	h.presMu.Lock()
	defer h.presMu.Unlock()
	pr := h.pres[name]
	if pr == nil {
		pr = newPresRoom(name)
		h.pres[name] = pr
	}
	return pr
}

// totalLocked returns the connections of id over all hubs, and its entry.
func (pr *presRoom) totalLocked(id string) (int, Presence) {
	var p Presence
	n := 0
	if l := pr.local[id]; l != nil {
		n, p = l.Conns, *l
	}
	for _, ms := range pr.remote {
		if r, ok := ms[id]; ok {
			if n == 0 {
				p = r
			}
			n += r.Conns
		}
	}
	p.Conns = n
	return n, p
}

// changedLocked records that id went from before connections to its
// current ones, and schedules a diff if it appeared or disappeared.
func (h *Hub) changedLocked(pr *presRoom, id string, before int, old Presence) {
	now, p := pr.totalLocked(id)
	switch i, found := slices.BinarySearch(pr.ids, id); {
	case now > 0 && !found:
		pr.ids = slices.Insert(pr.ids, i, id)
	case now == 0 && found:
		pr.ids = slices.Delete(pr.ids, i, i+1)
	}
	switch {
	case before == 0 && now > 0:
		if _, ok := pr.leaves[id]; ok {
			delete(pr.leaves, id) // left and came back within one diff
		} else {
			pr.joins[id] = p
		}
	case before > 0 && now == 0:
		if _, ok := pr.joins[id]; ok {
			delete(pr.joins, id)
		} else {
			old.Conns = 0
			pr.leaves[id] = old
		}
	}
	h.scheduleLocked(pr)
}

func (h *Hub) scheduleLocked(pr *presRoom) {
	if pr.timer == nil && !h.closing.Load() {
		pr.timer = time.AfterFunc(PresenceInterval, func() { h.flushPresence(pr) })
	}
}

// presenceJoin counts c's connection in pr, and queues the state for c:
// rm.mu is held, so no diff goes out meanwhile.
func (h *Hub) presenceJoin(c *Client, pr *presRoom) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	before, old := pr.totalLocked(c.id)
	l := pr.local[c.id]
	if l == nil {
		l = &Presence{ID: c.id, Info: c.info}
		pr.local[c.id] = l
	}
	l.Conns++
	pr.dirty = true
	h.changedLocked(pr, c.id, before, old)
	c.sendPresence(pr.name, pr.stateLocked())
}

// presenceLeave uncounts c's connection; rm.mu is held.
func (h *Hub) presenceLeave(c *Client, pr *presRoom) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	l := pr.local[c.id]
	if l == nil {
		return
	}
	before, old := pr.totalLocked(c.id)
	if l.Conns--; l.Conns == 0 {
		delete(pr.local, c.id)
	}
	pr.dirty = true
	h.changedLocked(pr, c.id, before, old)
}

// presenceUpdate takes another hub's members of the room.
func (h *Hub) presenceUpdate(pr *presRoom, hub string, members []byte) {
	var list []Presence
	if members != nil {
		if err := json.Unmarshal(members, &list); err != nil {
			h.opts.Logger.Warn("wshub: undecodable presence from another hub", "room", pr.name, "hub", hub, "err", err)
			return
		}
	}
	next := make(map[string]Presence, len(list))
	for _, p := range list {
		if p.ID != "" && p.Conns > 0 {
			next[p.ID] = p
		}
	}
	rm := h.lookup(pr.name)
	if rm != nil {
		rm.mu.Lock() // no state goes to a joiner halfway through
		defer rm.mu.Unlock()
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	prev := pr.remote[hub]
	ids := make(map[string]int)
	for id := range prev {
		ids[id], _ = pr.totalLocked(id)
	}
	for id := range next {
		if _, ok := ids[id]; !ok {
			ids[id], _ = pr.totalLocked(id)
		}
	}
	olds := make(map[string]Presence, len(prev))
	for id := range prev {
		_, olds[id] = pr.totalLocked(id)
	}
	if len(next) == 0 {
		delete(pr.remote, hub)
	} else {
		pr.remote[hub] = next
	}
	for id, before := range ids {
		h.changedLocked(pr, id, before, olds[id])
	}
}

// stateLocked returns the room's state, as sent to a client: the first
// members by ID, without going through all of them, since it runs for
// every join with the room's lock held.
func (pr *presRoom) stateLocked() presenceState {
	st := presenceState{Total: len(pr.ids), Members: make([]Presence, 0, min(len(pr.ids), MaxPresenceList))}
	size := 64
	for _, id := range pr.ids {
		_, p := pr.totalLocked(id)
		size += len(p.ID) + len(p.Info) + 32
		if len(st.Members) == MaxPresenceList || size > maxBatchBytes {
			break
		}
		st.Members = append(st.Members, p)
	}
	return st
}

// membersLocked returns every member over all hubs, by ID.
func (pr *presRoom) membersLocked() []Presence {
	out := make([]Presence, 0, len(pr.ids))
	for _, id := range pr.ids {
		_, p := pr.totalLocked(id)
		out = append(out, p)
	}
	return out
}

// sendPresence queues a state frame for c.
func (c *Client) sendPresence(room string, st presenceState) {
	if _, err := c.send(&Message{Type: TypePresence, Room: room, Data: st}); err != nil && err != ErrClientClosed {
		c.hub.opts.Logger.Debug("wshub: presence not sent", "client", c.id, "err", err)
	}
}

// flushPresence sends the room's pending diff to its local members, gives
// its local members to the PresenceBroker, and calls Options.OnPresence.
func (h *Hub) flushPresence(pr *presRoom) {
	if h.closing.Load() {
		return
	}
	rm := h.lookup(pr.name)
	if rm != nil {
		rm.mu.Lock()
	}
	pr.mu.Lock()
	pr.timer = nil
	diff := presenceDiff{Joins: sortedValues(pr.joins), Leaves: sortedValues(pr.leaves)}
	clear(pr.joins)
	clear(pr.leaves)
	var local []byte
	put := pr.dirty && h.presenceBroker() != nil
	if put {
		pr.dirty = false
		if len(pr.local) > 0 {
			ms := make([]Presence, 0, len(pr.local))
			for _, id := range slices.Sorted(maps.Keys(pr.local)) {
				ms = append(ms, *pr.local[id])
			}
			local, _ = json.Marshal(ms) // Presence always encodes
		}
	}
	pr.mu.Unlock()
	if rm != nil {
		if !rm.dead {
			for _, d := range splitDiff(diff) {
				enc := h.newEncoding(&Message{Type: TypePresenceDiff, Room: pr.name, Data: d})
				for c := range rm.members {
					enc.send(c)
				}
			}
		}
		rm.mu.Unlock()
	}
	if put {
		pr.putMu.Lock()
		err := h.withBroker(func(b Broker) error { return b.(PresenceBroker).SetPresence(pr.name, local) })
		pr.putMu.Unlock()
		if err != nil {
			h.opts.Logger.Warn("wshub: presence not shared", "room", pr.name, "err", err)
		}
	}
	if h.opts.OnPresence != nil && (len(diff.Joins) > 0 || len(diff.Leaves) > 0) {
		h.opts.OnPresence(pr.name, diff.Joins, diff.Leaves) // on the timer's goroutine, holding nothing
	}
	h.dropPresRoom(pr)
}

// dropPresRoom forgets pr once nothing is left of it.
func (h *Hub) dropPresRoom(pr *presRoom) {
	h.presMu.Lock()
	defer h.presMu.Unlock()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if len(pr.local) == 0 && len(pr.remote) == 0 && pr.timer == nil && !pr.dirty && !pr.watch && h.pres[pr.name] == pr {
		delete(h.pres, pr.name)
	}
}

func sortedValues(m map[string]Presence) []Presence {
	out := make([]Presence, 0, len(m))
	for _, id := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[id])
	}
	return out
}

// splitDiff splits d into frames of at most about 32 KiB; none if empty.
func splitDiff(d presenceDiff) []presenceDiff {
	var out []presenceDiff
	cur := presenceDiff{Joins: []Presence{}, Leaves: []Presence{}}
	size, n := 64, 0
	take := func(p Presence, leave bool) {
		s := len(p.ID) + len(p.Info) + 32
		if n > 0 && size+s > maxBatchBytes {
			out = append(out, cur)
			cur, size, n = presenceDiff{Joins: []Presence{}, Leaves: []Presence{}}, 64, 0
		}
		if leave {
			cur.Leaves = append(cur.Leaves, p)
		} else {
			cur.Joins = append(cur.Joins, p)
		}
		size += s
		n++
	}
	for _, p := range d.Joins {
		take(p, false)
	}
	for _, p := range d.Leaves {
		take(p, true)
	}
	if n > 0 {
		out = append(out, cur)
	}
	return out
}

// presenceBroker returns the broker if it shares presence.
func (h *Hub) presenceBroker() PresenceBroker {
	pb, _ := h.opts.Broker.(PresenceBroker)
	return pb
}

// presenceRequest answers a client's request for a room's state.
func (c *Client) presenceRequest(m *Message) error {
	if err := validRoom(m.Room); err != nil {
		return err
	}
	h := c.hub
	rm := h.lookup(m.Room)
	if rm == nil || !c.inRoom(m.Room) {
		return ErrNotMember
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.pres == nil {
		return fmt.Errorf("%w: %q", ErrNoPresence, m.Room)
	}
	rm.pres.mu.Lock()
	st := rm.pres.stateLocked()
	rm.pres.mu.Unlock()
	c.sendPresence(m.Room, st)
	return nil
}

// Presence returns every member of the room, on this hub and, with a
// PresenceBroker, on the others, sorted by ID; none when the room has no
// presence (see Options.Presence). A hub follows the other hubs' members
// of a room only while it has members in it itself: without any, it
// returns none, whatever the other hubs have.
func (r Room) Presence() []Presence {
	h := r.hub
	h.presMu.Lock()
	pr := h.pres[r.name]
	h.presMu.Unlock()
	if pr == nil {
		return nil
	}
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.membersLocked()
}

// watchPresence makes sure that the hub follows the members that other
// hubs have in room name, with a PresenceBroker. The hub's join calls it
// before adding the room's first member, so that its state covers every
// hub; syncSubscription stops it with the room's last member.
func (h *Hub) watchPresence(name string) {
	pb := h.presenceBroker()
	if pb == nil {
		return
	}
	s := h.lockSubscription(name)
	defer h.unlockSubscription(name, s)
	pr := h.presRoomFor(name)
	pr.mu.Lock()
	watching := pr.watch
	pr.mu.Unlock()
	if watching {
		return
	}
	err := h.withBroker(func(Broker) error {
		return pb.WatchPresence(name, func(hub string, members []byte) { h.presenceUpdate(pr, hub, members) })
	})
	if err != nil {
		// Not worth failing the join for: the room shows this hub's
		// members, and the next join tries again.
		h.opts.Logger.Warn("wshub: presence of other hubs not followed", "room", name, "err", err)
		h.dropPresRoom(pr)
		return
	}
	pr.mu.Lock()
	pr.watch = true
	pr.mu.Unlock()
}

// unwatchPresence stops following the other hubs' members of the room,
// which has no local members left: they are forgotten without a diff. The
// room's subscription lock is held.
func (h *Hub) unwatchPresence(name string) {
	pb := h.presenceBroker()
	if pb == nil {
		return
	}
	h.presMu.Lock()
	pr := h.pres[name]
	h.presMu.Unlock()
	if pr == nil {
		return
	}
	pr.mu.Lock()
	watching := pr.watch
	pr.watch = false
	clear(pr.remote)
	pr.ids = slices.Sorted(maps.Keys(pr.local))
	pr.mu.Unlock()
	if !watching {
		return
	}
	err := h.withBroker(func(Broker) error { return pb.UnwatchPresence(name) })
	if err != nil && !errors.Is(err, ErrHubClosed) {
		h.opts.Logger.Warn("wshub: presence", "room", name, "err", err)
	}
	h.dropPresRoom(pr)
}

// stopPresence stops the pending diffs, as the hub closes.
func (h *Hub) stopPresence() {
	h.presMu.Lock()
	defer h.presMu.Unlock()
	for _, pr := range h.pres {
		pr.mu.Lock()
		if pr.timer != nil {
			pr.timer.Stop()
		}
		pr.mu.Unlock()
	}
}
