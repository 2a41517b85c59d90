package wshub

import (
	"context"
	"fmt"
)

// Joining a room. A join in a room without history or presence only adds
// the member. Otherwise the client first joins as a joiner: the room's
// live messages after its start (the room's cursor then) are queued in the
// joiner's buffer while the hub reads the history and encodes the
// presence state, outside the room's lock. Then, under the lock, the hub
// checks that what it read still fits (the history reaches the start, no
// presence diff went out meanwhile; else it reads again) and queues, in
// one step, the replay up to the start, the buffer, and the state: the
// client misses nothing and gets nothing twice, and a slow history read
// holds up nobody but the joiner.

// maxHistoryReplay caps the messages a join's "history" asks for; a
// recovery ("since") is capped by HistoryPolicy.Messages instead.
const maxHistoryReplay = 100

// maxEpochLen bounds the epoch a join may name; the memory engine's are 16
// bytes, a shared log's may be longer.
const maxEpochLen = 128

// joiner is a client joining a room with history or presence.
type joiner struct {
	start      uint64 // the seq its replay goes up to; live messages after it go to the buffer
	positioned bool   // start is known: the room was positioned
	frames     [][]byte
	seqs       []uint64 // of frames
	epochs     []string // of frames, when known
	committed  bool     // it became a member
}

// buffer keeps the message of enc, of the room's epoch, encoded for c, for
// c's join.
func (j *joiner) buffer(enc *encoding, c *Client, epoch string) {
	if b, err := enc.get(enc.h.encKey[c.codecIndex]); err == nil {
		j.frames = append(j.frames, b)
		j.seqs = append(j.seqs, enc.m.Seq)
		j.epochs = append(j.epochs, epoch)
	}
}

// join adds c to room name and follows the room when it is new here. req
// is the client's join message, nil for Client.Join; the returned ack says
// where the room's history stands, if it has one.
func (h *Hub) join(c *Client, name string, req *Message) (*Message, error) {
	if err := validRoom(name); err != nil {
		return nil, err
	}
	opts := h.roomOptions(name)
	if opts.Presence {
		h.watchPresence(name)
	}
	ack, err := h.addMember(c, name, opts, req)
	if err != nil {
		h.syncFollow(name) // stops following a room left empty
		return nil, err
	}
	if err := h.syncFollow(name); err != nil {
		h.leave(c, name)
		return nil, err
	}
	h.m.joins.Add(1)
	return ack, nil
}

// addMember adds c to the room, creating it with opts if needed.
func (h *Hub) addMember(c *Client, name string, opts RoomOptions, req *Message) (*Message, error) {
	rm := h.lockRoom(name, opts)
	if _, member := rm.members[c]; member {
		defer rm.mu.Unlock()
		return rm.memberAck(req)
	}
	if rm.joining[c] != nil {
		rm.mu.Unlock()
		return nil, fmt.Errorf("%w: a join of %q is under way", errInvalidMessage, name)
	}
	if err := c.addRoom(name); err != nil {
		h.unlockRoom(rm)
		return nil, err
	}
	if !rm.opts.History.on() && !rm.opts.Presence {
		rm.members[c] = struct{}{}
		rm.mu.Unlock()
		return rm.memberAck(req)
	}
	j := &joiner{start: rm.cursor, positioned: rm.positioned}
	if rm.joining == nil {
		rm.joining = make(map[*Client]*joiner)
	}
	rm.joining[c] = j
	if rm.opts.Presence {
		if rm.pres == nil {
			rm.pres = h.presRoomFor(name)
		}
		h.presenceJoin(c, rm.pres)
	}
	rm.mu.Unlock()
	ack, err := h.admit(c, rm, j, req)
	if err != nil {
		rm.mu.Lock()
		if rm.joining[c] == j {
			delete(rm.joining, c)
			c.removeRoom(name)
			if rm.pres != nil {
				h.presenceLeave(c, rm.pres)
			}
		}
		h.unlockRoom(rm)
		return nil, err
	}
	return ack, nil
}

// memberAck is the ack of a join of a client already in the room (rm.mu
// held), or of a room without history.
func (rm *room) memberAck(req *Message) (*Message, error) {
	ack := &Message{Type: TypeAck}
	switch {
	case rm.opts.History.on():
		ack.Room, ack.Epoch, ack.Seq = rm.name, rm.epoch, rm.cursor
		if req != nil && req.Epoch != "" {
			same := req.Epoch == rm.epoch
			if same && req.Since > rm.cursor {
				return nil, fmt.Errorf("%w: since %d is past the room's latest seq %d", errInvalidMessage, req.Since, rm.cursor)
			}
			ack.Recovered = &same // a member has had every message since it joined
		}
	case req != nil && req.Epoch != "":
		ack.Room = rm.name
		ack.Recovered = new(bool) // the room keeps no history
	}
	return ack, nil
}

// replayPlan is what a join reads from the history, outside the room's
// lock.
type replayPlan struct {
	page      LogPage  // where the history stood
	frames    [][]byte // the messages to replay, encoded for the client
	seqs      []uint64 // of frames
	recovered *bool    // for a recovery: whether it is complete
}

// admit reads what c's join needs, then makes c a member, as the comment
// at the top of this file describes.
func (h *Hub) admit(c *Client, rm *room, j *joiner, req *Message) (*Message, error) {
	ctx, cancel := context.WithTimeout(c.ctx, h.opts.WriteTimeout)
	defer cancel()
	var plan *replayPlan
	for {
		if c.ctx.Err() != nil {
			return nil, ErrClientClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("%w: join of %q: %w", errHistory, rm.name, err)
		}
		if rm.opts.History.on() && plan == nil {
			var err error
			if plan, err = h.readReplay(ctx, c, rm, req); err != nil {
				return nil, err
			}
		}
		var state []byte
		var version uint64
		if rm.pres != nil {
			state, version = h.presenceFrame(c, rm.pres)
		}
		rm.mu.Lock()
		if rm.joining[c] != j {
			rm.mu.Unlock()
			return nil, errNotMember // it left meanwhile
		}
		if plan != nil && !rm.reaches(j, plan.page) {
			rm.mu.Unlock()
			plan = nil // messages were delivered since: read again
			continue
		}
		if rm.pres != nil && rm.pres.versionNow() != version {
			rm.mu.Unlock()
			continue // a diff went out since the state was taken
		}
		ack := rm.commit(c, j, plan, req, state)
		rm.mu.Unlock()
		return ack, nil
	}
}

// reaches reports, rm.mu held, whether page reaches j's start, positioning
// the room (and its joiners) if it was not: past page and past what was
// delivered meanwhile, which the joiners read again if page lacks it.
func (rm *room) reaches(j *joiner, page LogPage) bool {
	if !rm.positioned {
		rm.cursor, rm.positioned, rm.epoch = max(page.Latest, rm.unplaced), true, page.Epoch
		rm.unplaced = 0
		for _, o := range rm.joining {
			o.start, o.positioned = rm.cursor, true
		}
	}
	switch page.Epoch {
	case rm.epoch:
		return page.Latest >= j.start
	case rm.prevEpoch:
		return false // read before the members learnt the new epoch
	}
	// The history started anew after the members' last message: the
	// joiner takes the new one whole, and they learn it from the next
	// message.
	j.start = page.Latest
	return true
}

// commit makes the joiner c a member, rm.mu held: it queues the replay up
// to j's start, the live messages after it, and the presence state.
func (rm *room) commit(c *Client, j *joiner, plan *replayPlan, req *Message, state []byte) *Message {
	ack := &Message{Type: TypeAck}
	var frames [][]byte
	if plan != nil {
		ack.Room, ack.Epoch, ack.Recovered = rm.name, plan.page.Epoch, plan.recovered
		for i, b := range plan.frames {
			if plan.seqs[i] <= j.start {
				frames = append(frames, b)
			}
		}
		c.hub.m.replayed.Add(uint64(len(frames)))
		var since uint64
		if req != nil && plan.recovered != nil && *plan.recovered {
			since = req.Since
		}
		epoch := plan.page.Epoch
		for i, b := range j.frames {
			if j.seqs[i] > max(since, j.start) && (j.epochs[i] == "" || j.epochs[i] == epoch) {
				frames = append(frames, b)
			}
		}
		mark := skipMark{since, epoch}
		if epoch != rm.epoch {
			// It has the new history up to start; the members will learn
			// it from messages that may include those.
			mark.seq = j.start
		}
		if mark.seq > rm.cursor || epoch != rm.epoch {
			// It has, from another hub or from its replay, messages that
			// this hub has yet to deliver.
			if rm.skip == nil {
				rm.skip = make(map[*Client]skipMark)
			}
			rm.skip[c] = mark
		}
		ack.Seq = j.start // what follows the replay has a greater seq
	} else {
		frames = j.frames
		ack, _ = rm.memberAck(req) // a room without history: no error
	}
	if state != nil {
		frames = append(frames, state)
	}
	delete(rm.joining, c)
	j.committed = true
	rm.members[c] = struct{}{}
	c.enqueueReplay(frames)
	return ack
}

// readReplay reads the history that c's join request req (nil for none)
// asks for, and encodes it for c.
func (h *Hub) readReplay(ctx context.Context, c *Client, rm *room, req *Message) (*replayPlan, error) {
	p := rm.opts.History
	recovery := req != nil && req.Epoch != ""
	after, limit := ^uint64(0), 0 // where the room stands, no messages
	switch {
	case recovery:
		after, limit = req.Since, -1
	case req != nil && req.History > 0:
		after, limit = 0, min(req.History, maxHistoryReplay)
	}
	page, err := h.read(ctx, rm.name, p, after, limit)
	if err != nil {
		return nil, err
	}
	plan := &replayPlan{page: page}
	msgs := page.Messages
	if recovery {
		same := page.Epoch == req.Epoch
		if same && req.Since > page.Latest {
			return nil, fmt.Errorf("%w: since %d is past the room's latest seq %d", errInvalidMessage, req.Since, page.Latest)
		}
		recovered := same && page.Complete
		plan.recovered = &recovered
		if !recovered {
			msgs = nil
			if req.History > 0 {
				p2, err := h.read(ctx, rm.name, p, 0, min(req.History, maxHistoryReplay))
				if err != nil {
					return nil, err
				}
				msgs = p2.Messages
			}
		}
	}
	for _, en := range msgs {
		if b, err := c.encodeStored(en); err == nil {
			plan.frames = append(plan.frames, b)
			plan.seqs = append(plan.seqs, en.Seq)
		}
	}
	return plan, nil
}
