package wshub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
)

// Presence. A room whose RoomOptions.Presence is true tells its
// members who is in it: on joining, a client gets the room's state once (a
// "presence" frame), then diffs ("presence_diff" frames: who joined, who
// left), coalesced so that a room sends at most one diff every
// presenceInterval however many clients come and go. Presence is keyed by
// client ID: an ID joins when its first connection joins the room and
// leaves when its last one leaves or drops, so that one user with three
// tabs is one member with three connections. What a member shows of
// itself is its Identity.Info, set by Options.Authenticate; a client
// cannot set it. With a PresenceEngine, the state spans every hub.
//
// Each presence room has a presRoom, shared by its room struct while it
// has local members and kept by the hub while a diff is pending or other
// hubs have members in it. States and diffs are encoded outside every
// lock; a state is sent only if no diff went out since it was taken (its
// version), else it is taken again, so that a state plus the diffs after
// it always add up to the truth.
//
// A diff says what became of every ID that appeared or disappeared since
// the last one. An ID that came and went within one interval (or went and
// came back) is no change to a member that knew the room before, so the
// diff leaves it out, unless a state went out meanwhile: that state may
// show the ID in between, and the diff then says where it ended (a join
// or a leave that, applied as a set operation, changes nothing for the
// others; PROTOCOL.md §6).

// Presence bounds.
const (
	// presenceInterval is the longest a join or leave waits before the
	// room's members hear of it: changes within it go out in one diff.
	presenceInterval = 100 * time.Millisecond

	// maxPresenceList is how many members a presence state lists at most
	// (fewer when their Info would make the frame larger than 32 KiB); its
	// "total" counts them all.
	maxPresenceList = 100

	// maxInfoBytes caps the JSON encoding of Identity.Info.
	maxInfoBytes = 1024
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

// presRoom is the presence of one room.
type presRoom struct {
	name string

	mu      sync.Mutex
	local   map[string]*Presence           // this hub's members, by ID
	remote  map[string]map[string]Presence // other hubs' members, by hub and ID
	ids     []string                       // every member's ID over all hubs, sorted
	changed map[string]presChange          // IDs that appeared or disappeared since the last diff
	shown   bool                           // a state was taken since the last diff
	timer   *time.Timer                    // pending or running flush
	dirty   bool                           // local changed since the last SetPresence
	watch   bool                           // watching other hubs
	version uint64                         // diffs taken so far
	changes uint64                         // changes of joins and leaves so far (not of counts)
}

// presChange is what became of an ID since the last diff.
type presChange struct {
	was, is bool     // a member at the last diff, and now
	renamed bool     // its Info changed (a refresh): shown as a join
	p       Presence // its entry now, or its last one if it left
}

func newPresRoom(name string) *presRoom {
	return &presRoom{name: name, local: make(map[string]*Presence), remote: make(map[string]map[string]Presence),
		changed: make(map[string]presChange)}
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
	renamed := before > 0 && now > 0 && !bytes.Equal(old.Info, p.Info)
	if (before == 0) != (now == 0) || renamed {
		pr.changes++
		ch, ok := pr.changed[id]
		if !ok {
			ch.was = before > 0
		}
		ch.is, ch.p = now > 0, p
		ch.renamed = ch.renamed || renamed
		if now == 0 {
			ch.p = old
		}
		pr.changed[id] = ch
	}
	h.scheduleLocked(pr)
}

func (h *Hub) scheduleLocked(pr *presRoom) {
	if pr.timer == nil && !h.closing.Load() {
		pr.timer = time.AfterFunc(presenceInterval, func() { h.flushPresence(pr) })
	}
}

// presenceJoin counts c's connection in pr; rm.mu is held.
func (h *Hub) presenceJoin(c *Client, pr *presRoom) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	before, old := pr.totalLocked(c.id)
	l := pr.local[c.id]
	if l == nil {
		l = &Presence{ID: c.id, Info: c.Info()}
		pr.local[c.id] = l
	}
	l.Conns++
	pr.dirty = true
	h.changedLocked(pr, c.id, before, old)
}

// presenceFrame returns the room's state encoded for c, and the version
// of the presence it shows. The encoding runs outside every lock.
func (h *Hub) presenceFrame(c *Client, pr *presRoom) ([]byte, uint64) {
	pr.mu.Lock()
	st, v := pr.stateLocked(), pr.version
	pr.shown = true
	pr.mu.Unlock()
	b, err := c.codec.Marshal(&Message{Type: TypePresence, Room: pr.name, Data: st})
	if err != nil {
		h.opts.Logger.Debug("wshub: presence not sent", "client", c.id, "err", err)
		return nil, v
	}
	return b, v
}

// versionNow returns the number of diffs taken so far.
func (pr *presRoom) versionNow() uint64 {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return pr.version
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

// presenceInfo shows c's new Info in room, if it is one of its presence
// rooms here.
func (h *Hub) presenceInfo(c *Client, room string) {
	rm := h.lookup(room)
	if rm == nil {
		return
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.pres == nil {
		return
	}
	pr := rm.pres
	pr.mu.Lock()
	defer pr.mu.Unlock()
	l := pr.local[c.id]
	if l == nil {
		return
	}
	before, old := pr.totalLocked(c.id)
	l.Info = c.Info()
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
	olds := make(map[string]Presence, len(ids))
	for id := range ids {
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
// every join.
func (pr *presRoom) stateLocked() presenceState {
	st := presenceState{Total: len(pr.ids), Members: make([]Presence, 0, min(len(pr.ids), maxPresenceList))}
	size := 64
	for _, id := range pr.ids {
		_, p := pr.totalLocked(id)
		size += len(p.ID) + len(p.Info) + 32
		if len(st.Members) == maxPresenceList || size > maxBatchBytes {
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

// flushPresence sends the room's pending diff to its local members, gives
// its local members to the PresenceEngine, and calls Options.OnPresence.
// The diff is encoded outside every lock, then taken and queued in one
// step under the room's lock, if nothing changed meanwhile (else it is
// encoded again). Flushes of a room run one at a time: pr.timer stays set
// until the end.
func (h *Hub) flushPresence(pr *presRoom) {
	if h.closing.Load() {
		return
	}
	var diff presenceDiff // the changes, for OnPresence
	var local []byte
	put := false
	for {
		pr.mu.Lock()
		var sent presenceDiff // what the members get
		diff, sent = pr.diffLocked()
		changes := pr.changes
		pr.mu.Unlock()
		var encs []*encoding
		for _, d := range splitDiff(sent) {
			enc := h.newEncoding(&Message{Type: TypePresenceDiff, Room: pr.name, Data: d})
			enc.prepare()
			encs = append(encs, enc)
		}
		entries := len(sent.Joins) + len(sent.Leaves)
		rm := h.lookup(pr.name)
		if rm != nil {
			rm.mu.Lock()
		}
		pr.mu.Lock()
		if pr.changes != changes {
			pr.mu.Unlock()
			if rm != nil {
				rm.mu.Unlock()
			}
			continue
		}
		clear(pr.changed)
		pr.shown = false
		pr.version++
		if put = pr.dirty && h.presence != nil; put {
			pr.dirty = false
			local = pr.localJSON()
		}
		pr.mu.Unlock()
		if rm != nil {
			h.sendAll(rm, encs)
			h.m.presDiffs.Add(uint64(len(encs)))
			h.m.presEntries.Add(uint64(entries))
		}
		break
	}
	if put {
		// Flushes of a room run one at a time, so its SetPresence calls do.
		err := h.withEngine(func(Engine) error { return h.presence.SetPresence(pr.name, local) })
		if err != nil {
			h.opts.Logger.Warn("wshub: presence not shared", "room", pr.name, "err", err)
		}
	}
	if h.opts.OnPresence != nil && (len(diff.Joins) > 0 || len(diff.Leaves) > 0) {
		h.opts.OnPresence(pr.name, diff.Joins, diff.Leaves) // on the timer's goroutine, holding nothing
	}
	pr.mu.Lock()
	pr.timer = nil
	if len(pr.changed) > 0 || pr.dirty {
		h.scheduleLocked(pr)
	}
	pr.mu.Unlock()
	h.dropPresRoom(pr)
}

// localJSON returns this hub's members of the room, for the engine.
func (pr *presRoom) localJSON() []byte {
	if len(pr.local) == 0 {
		return nil
	}
	ms := make([]Presence, 0, len(pr.local))
	for _, id := range slices.Sorted(maps.Keys(pr.local)) {
		ms = append(ms, *pr.local[id])
	}
	b, _ := json.Marshal(ms) // Presence always encodes
	return b
}

// sendAll queues encs, in order, for every member of rm, whose lock is
// held and is released: members of a codec not in use a moment ago get
// them after it.
func (h *Hub) sendAll(rm *room, encs []*encoding) {
	var late []*Client
	if !rm.dead && len(encs) > 0 {
		for c := range rm.members {
			if !encs[0].ready(c) {
				late = append(late, c)
				continue
			}
			for _, enc := range encs {
				enc.send(c, nil)
			}
		}
	}
	rm.mu.Unlock()
	for _, c := range late {
		for _, enc := range encs {
			enc.send(c, nil)
		}
	}
	for _, enc := range encs {
		enc.count()
	}
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

// diffLocked returns the changes since the last diff, and the diff for
// the members: the changes, and the IDs that came and went (or went and
// came back) if a state went out meanwhile, as the comment at the top of
// this file says.
func (pr *presRoom) diffLocked() (changes, sent presenceDiff) {
	changes = presenceDiff{Joins: []Presence{}, Leaves: []Presence{}}
	sent = presenceDiff{Joins: []Presence{}, Leaves: []Presence{}}
	for _, id := range slices.Sorted(maps.Keys(pr.changed)) {
		ch := pr.changed[id]
		if ch.was == ch.is && !pr.shown && !ch.renamed {
			continue
		}
		p := ch.p
		if !ch.is {
			p.Conns = 0
		}
		if ch.is {
			sent.Joins = append(sent.Joins, p)
		} else {
			sent.Leaves = append(sent.Leaves, p)
		}
		switch {
		case ch.is && (!ch.was || ch.renamed):
			changes.Joins = append(changes.Joins, p)
		case !ch.is && ch.was:
			changes.Leaves = append(changes.Leaves, p)
		}
	}
	return changes, sent
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

// presenceRequest answers a client's request for a room's state.
func (c *Client) presenceRequest(m *Message) error {
	rm, err := c.roomOf(m.Room)
	if err != nil {
		return err
	}
	h := c.hub
	if rm.pres == nil {
		return fmt.Errorf("%w: %q", errNoPresence, m.Room)
	}
	for {
		state, version := h.presenceFrame(c, rm.pres)
		if state == nil {
			return nil
		}
		rm.mu.Lock()
		if rm.pres.versionNow() == version {
			_, err := c.enqueue(state, qPresence)
			rm.mu.Unlock()
			if err != nil && err != ErrClientClosed {
				h.opts.Logger.Debug("wshub: presence not sent", "client", c.id, "err", err)
			}
			return nil
		}
		rm.mu.Unlock() // a diff went out since the state was taken
	}
}

// Presence returns every member of the room, sorted by ID: on this hub,
// and, with a PresenceEngine, on the others while this hub has members in
// the room; none when the room has no presence.
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
// hubs have in room name, with a PresenceEngine. The hub's join calls it
// before adding the room's first member, so that its state covers every
// hub; syncFollow stops it with the room's last member.
func (h *Hub) watchPresence(name string) {
	pb := h.presence
	if pb == nil {
		return
	}
	f := h.lockFollow(name)
	defer h.unlockFollow(name, f)
	pr := h.presRoomFor(name)
	pr.mu.Lock()
	watching := pr.watch
	pr.mu.Unlock()
	if watching {
		return
	}
	err := h.withEngine(func(Engine) error {
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
// room's follow lock is held.
func (h *Hub) unwatchPresence(name string) {
	pb := h.presence
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
	err := h.withEngine(func(Engine) error { return pb.UnwatchPresence(name) })
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
