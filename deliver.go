package wshub

// Delivery: the hub's end of the road (see publish.go). The engine passes
// each room message to Hub.deliver, one at a time per room, in the room's
// order; deliver encodes it for the codecs in use outside every lock, then
// takes the room's lock only to queue it for each member.

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
	members, joiners := rm.admit(en, enc)
	if !members && !joiners {
		rm.mu.Unlock()
		return
	}
	epoch := en.Epoch
	if epoch == "" {
		epoch = rm.epoch
	}
	// Queues this message congested are waited for: by the publisher, for
	// a client's publish of this hub (flow.go); here, for a message of
	// another hub, so that the engine passes the room's messages at the
	// pace its members take them; never for the server's Room.Broadcast.
	var paced []*Client
	wait := &paced
	if own != nil {
		wait = nil
		if own.from != nil {
			wait = &own.congested
		}
	}
	var late []*Client // clients of a codec that was not in use a moment ago
	var lateJoins map[*Client]*joiner
	for c := range rm.members {
		if !members || own != nil && contains(own.except, c) {
			continue
		}
		if s, ok := rm.skip[c]; ok {
			if en.Seq <= s.seq {
				continue // it has it: recovered or replayed past the cursor
			}
			delete(rm.skip, c)
		}
		enc.sendOrDefer(c, wait, &late)
	}
	for c, j := range rm.joining {
		if en.Seq > 0 && en.Seq <= j.start || own != nil && contains(own.except, c) {
			continue
		}
		if !enc.ready(c) {
			if lateJoins == nil {
				lateJoins = make(map[*Client]*joiner)
			}
			lateJoins[c] = j
			continue
		}
		j.buffer(enc, c, epoch)
	}
	rm.mu.Unlock()
	// The next delivery to the room waits for this one to return, so the
	// late ones still get the message in order.
	for _, c := range late {
		enc.send(c, wait)
	}
	if len(lateJoins) > 0 {
		for c := range lateJoins {
			enc.get(enc.h.encKey[c.codecIndex])
		}
		rm.mu.Lock()
		for c, j := range lateJoins {
			if rm.joining[c] == j {
				j.buffer(enc, c, epoch)
			} else if _, ok := rm.members[c]; ok && j.committed && members {
				enc.send(c, wait) // it joined meanwhile, up to an earlier seq
			}
		}
		rm.mu.Unlock()
	}
	if own != nil {
		own.err = enc.result()
	}
	enc.count()
	if enc.queued > 0 {
		rm.delivered.Add(uint64(enc.queued))
		if h.opts.RoomLabel != nil {
			h.labelOf(rm, rm.name).delivered.Add(uint64(enc.queued))
		}
	}
	if len(paced) > 0 {
		h.pace(rm, paced)
	}
}

// admit decides, rm.mu held, whether rm's members and its joiners get en:
// in a room with history, a message they have not had. It moves the
// room's cursor, and takes a new epoch of the history into the encoding.
func (rm *room) admit(en Entry, enc *encoding) (members, joiners bool) {
	if rm.dead {
		return false, false
	}
	if !rm.opts.History.on() {
		return true, true
	}
	if !rm.positioned {
		// The history lost messages (the members are closing), or the
		// first join is reading it: joiners keep everything, and their
		// commit sorts it out by seq.
		rm.unplaced = max(rm.unplaced, en.Seq)
		return false, true
	}
	if en.Epoch != "" && rm.epoch != "" && en.Epoch != rm.epoch {
		// The history started anew (it expired or was evicted) while the
		// members knew another: they learn it from this message.
		rm.prevEpoch, rm.cursor = rm.epoch, 0
		for c, s := range rm.skip {
			if s.epoch != en.Epoch {
				delete(rm.skip, c)
			}
		}
		for _, j := range rm.joining {
			j.start = 0
		}
		enc.setEpoch(en.Epoch)
	}
	if en.Epoch != "" {
		rm.epoch = en.Epoch
	}
	if en.Seq <= rm.cursor {
		return false, false // they have it
	}
	rm.cursor = en.Seq
	return true, true
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
	kind   int   // what it counts as in Stats.Queued: qMessage or qPresence
}

// encSlot is one codec's encoding of a message.
type encSlot struct {
	frame []byte
	err   error
	done  bool
}

func (h *Hub) newEncoding(m *Message) *encoding {
	e := &encoding{h: h, m: m, slots: make([]encSlot, len(h.opts.Codecs)+1), kind: qMessage}
	if m.Type == TypePresenceDiff {
		e.kind = qPresence
	}
	return e
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

// sendOrDefer sends e to c if its codec's encoding is made, else adds c
// to late, for a send once the caller's lock is released.
func (e *encoding) sendOrDefer(c *Client, wait *[]*Client, late *[]*Client) {
	if !e.ready(c) {
		*late = append(*late, c)
		return
	}
	e.send(c, wait)
}

// send queues e for c and adds c to wait, if any, when that left its
// queue congested.
func (e *encoding) send(c *Client, wait *[]*Client) {
	if congested, _ := e.queue(c); congested && wait != nil {
		*wait = append(*wait, c)
	}
}

// queue queues e for c, counting it in the broadcast's result, and
// reports whether that left c congested.
func (e *encoding) queue(c *Client) (congested bool, err error) {
	b, err := e.get(e.h.encKey[c.codecIndex])
	if err != nil {
		return false, err
	}
	congested, err = c.enqueue(b, counted) // see e.count
	switch err {
	case nil:
		e.queued++
	case ErrClientClosed:
		e.closed++
	}
	return congested, err
}

// count counts in Stats.Queued the clients e was queued for, once it was
// queued for all.
func (e *encoding) count() { e.h.m.queued[e.kind].Add(uint64(e.queued)) }

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
