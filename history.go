package wshub

import (
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// History. A room whose Options.History policy keeps messages numbers
// every room message with a seq, 1, 2, 3, … in the order its members
// receive them, and keeps the last ones in a HistoryStore. The store's
// epoch for the room names one unbroken run of seqs: it changes whenever
// the store loses or restarts the room's history, so that a client's seq
// from an older run is never taken for one of the current run. A client
// can then ask, when it joins, for the last messages of the room or for
// everything after the last seq it saw; it gets exactly those, or is told
// that they are gone (see the package documentation for the protocol).
//
// Rooms without history cost nothing more than before: no seq, no store
// call, no memory.

// Defaults of history.
const (
	// DefaultHistoryAge is how long a room's messages are kept when
	// HistoryPolicy.MaxAge is zero.
	DefaultHistoryAge = time.Hour

	// DefaultMaxHistoryBytes caps the default in-memory store: the
	// messages of all rooms, plus a small overhead per message.
	DefaultMaxHistoryBytes = 64 << 20

	// MaxHistoryReplay caps the messages a join's "history" asks for. A
	// recovery ("since") is not capped by it: it replays everything the
	// room retained after since, at most HistoryPolicy.Messages.
	MaxHistoryReplay = 100
)

// HistoryPolicy says how much of a room's recent history the hub keeps.
type HistoryPolicy struct {
	// Messages is how many of the room's last messages are kept; zero or
	// negative means the room keeps no history and its messages carry no
	// seq. It also bounds a recovery: a client that rejoins with since gets
	// up to this many messages at once, past its send queue's limits, so
	// keep it to what a client may need (a few hundred messages).
	Messages int

	// MaxAge is how long a message is kept. A room whose newest message is
	// older than this has lost its history: its next message starts a new
	// epoch. Default: DefaultHistoryAge (1 hour).
	MaxAge time.Duration
}

func (p HistoryPolicy) on() bool { return p.Messages > 0 }

func (p HistoryPolicy) maxAge() time.Duration {
	if p.MaxAge <= 0 {
		return DefaultHistoryAge
	}
	return p.MaxAge
}

// A HistoryStore keeps the recent messages of the rooms that have a
// history policy, and numbers them. The hub calls Append for every message
// of such a room that it delivers, and delivers the message with the seq
// Append returned; it calls Read when a client joins with a history or
// recovery request, and for Room.History and Room.Position. Append and
// the Read of a join run with the room's lock held, so that numbering and
// delivery are one step: a store must answer quickly (ctx is the
// publishing client's, the caller's, or bounded by Options.WriteTimeout),
// must not call the Hub, and must be safe for concurrent use.
//
// A store is local to its hub: with several hubs and a Broker, each hub
// numbers a room's messages, other hubs' included, in the order it
// delivers them, and a client that moves to another hub gets another
// epoch there and is told it could not recover. A store of one's own can
// keep histories across restarts of the hub (its epochs then survive). One
// history and one order shared by several hubs need the hubs to deliver in
// the store's order, which a Broker does not do today; sharing a store
// between hubs is not supported.
type HistoryStore interface {
	// Append adds msg, a room message encoded with JSONCodec and without a
	// seq, as the room's newest message and returns its seq and the
	// room's epoch. An error means msg was not stored; the hub then does
	// not deliver it.
	Append(ctx context.Context, room string, p HistoryPolicy, msg []byte) (seq uint64, epoch string, err error)

	// Read returns the room's retained messages with a seq greater than
	// after, oldest first, at most limit of them (the newest ones when
	// there are more), and the room's epoch and latest seq. A room that
	// has no history yet gets a new epoch and latest seq 0.
	Read(ctx context.Context, room string, p HistoryPolicy, after uint64, limit int) (msgs []HistoryMessage, epoch string, latest uint64, err error)
}

// A HistoryMessage is a retained room message: its seq and its JSON
// encoding without the seq, as given to HistoryStore.Append.
type HistoryMessage struct {
	Seq  uint64
	JSON []byte
}

// historyError wraps an error of the HistoryStore for room.
func historyError(room string, err error) error {
	return fmt.Errorf("%w: %q: %w", ErrHistory, room, err)
}

// withPosition returns the JSON object msg with "seq" and, unless empty,
// "epoch" members added.
func withPosition(msg []byte, seq uint64, epoch string) []byte {
	b := make([]byte, 0, len(msg)+24+len(epoch))
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	if epoch != "" {
		e, _ := json.Marshal(epoch) // a string always encodes
		b = append(append(b, `,"epoch":`...), e...)
	}
	if len(msg) > 2 {
		b = append(b, ',')
	}
	return append(b, msg[1:]...)
}

// memoryHistory is the default HistoryStore: a ring of messages per room,
// and a list of rooms by last append, so that the least recently written
// room's history is evicted first when the store is over its cap or the
// room has expired.
type memoryHistory struct {
	mu     sync.Mutex
	rooms  map[string]*roomLog
	byTime list.List // *roomLog, least recently written first
	bytes  int64
	max    int64
	now    func() time.Time
}

// roomLog is one room's history.
type roomLog struct {
	name   string
	epoch  string
	latest uint64     // seq of the newest message, 0 before the first
	msgs   []retained // oldest first
	bytes  int64
	maxAge time.Duration
	last   time.Time // of the newest message, or of the log's creation
	elem   *list.Element
}

type retained struct {
	HistoryMessage
	at int64 // UnixNano: a third of a time.Time's size
}

// retainedOverhead approximates what a retained message costs besides
// its bytes: its slice entry (40 bytes), spare room in the slice, and the
// rounding of its allocation (BenchmarkHistoryMemory measures it);
// logOverhead, what a room's log costs.
const (
	retainedOverhead = 64
	logOverhead      = 256
)

// NewMemoryHistory returns an in-memory HistoryStore holding at most
// maxBytes of messages (with a small overhead per message) over all rooms;
// past it, the history of the room written least recently is dropped
// whole, and that room starts a new epoch. A maxBytes of zero or less
// means DefaultMaxHistoryBytes. Its histories last as long as the process.
func NewMemoryHistory(maxBytes int64) HistoryStore {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxHistoryBytes
	}
	return &memoryHistory{rooms: make(map[string]*roomLog), max: maxBytes, now: time.Now}
}

// logLocked returns the room's log, expired messages dropped, creating it
// (with a new epoch) if the room has none.
func (s *memoryHistory) logLocked(room string, p HistoryPolicy, now time.Time) *roomLog {
	l := s.rooms[room]
	if l != nil {
		l.maxAge = p.maxAge()
		if now.Sub(l.last) > l.maxAge {
			s.dropLocked(l) // expired: the history is lost
			l = nil
		} else {
			s.expireLocked(l, now)
		}
	}
	if l == nil {
		l = &roomLog{name: room, epoch: newID(), maxAge: p.maxAge(), last: now, bytes: logOverhead}
		l.elem = s.byTime.PushBack(l)
		s.rooms[room] = l
		s.bytes += logOverhead
		s.evictLocked(l, now) // joins of many rooms count too
	}
	return l
}

func (s *memoryHistory) expireLocked(l *roomLog, now time.Time) {
	n := 0
	for n < len(l.msgs) && now.UnixNano()-l.msgs[n].at > int64(l.maxAge) {
		n++
	}
	s.trimLocked(l, n)
}

// trimLocked drops the room's n oldest messages.
func (s *memoryHistory) trimLocked(l *roomLog, n int) {
	for _, m := range l.msgs[:n] {
		l.bytes -= int64(len(m.JSON)) + retainedOverhead
		s.bytes -= int64(len(m.JSON)) + retainedOverhead
	}
	clear(l.msgs[:n])
	l.msgs = l.msgs[n:]
}

func (s *memoryHistory) dropLocked(l *roomLog) {
	s.trimLocked(l, len(l.msgs))
	s.bytes -= logOverhead
	s.byTime.Remove(l.elem)
	delete(s.rooms, l.name)
}

// forget drops the room's history: its next one has a new epoch.
func (s *memoryHistory) forget(room string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.rooms[room]; l != nil {
		s.dropLocked(l)
	}
}

// Append implements HistoryStore.
func (s *memoryHistory) Append(_ context.Context, room string, p HistoryPolicy, msg []byte) (uint64, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	l := s.logLocked(room, p, now)
	if over := len(l.msgs) + 1 - p.Messages; over > 0 {
		s.trimLocked(l, over)
	}
	l.latest++
	l.msgs = append(l.msgs, retained{HistoryMessage{Seq: l.latest, JSON: msg}, now.UnixNano()})
	size := int64(len(msg)) + retainedOverhead
	l.bytes += size
	s.bytes += size
	l.last = now
	s.byTime.MoveToBack(l.elem)
	s.evictLocked(l, now)
	return l.latest, l.epoch, nil
}

// evictLocked drops the histories of rooms written least recently while
// the store is over its cap, and those that have expired, but not keep's.
func (s *memoryHistory) evictLocked(keep *roomLog, now time.Time) {
	for e := s.byTime.Front(); e != nil; {
		l := e.Value.(*roomLog)
		e = e.Next()
		if l == keep {
			break
		}
		if s.bytes <= s.max && now.Sub(l.last) <= l.maxAge {
			break
		}
		s.dropLocked(l)
	}
	for s.bytes > s.max && len(keep.msgs) > 1 { // one room alone is too big
		s.trimLocked(keep, 1)
	}
}

// Read implements HistoryStore.
func (s *memoryHistory) Read(_ context.Context, room string, p HistoryPolicy, after uint64, limit int) ([]HistoryMessage, string, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logLocked(room, p, s.now())
	msgs := l.msgs
	// msgs holds seqs latest-len+1 … latest, without gaps.
	if first := l.latest - uint64(len(msgs)) + 1; after >= first {
		msgs = msgs[min(uint64(len(msgs)), after-first+1):]
	}
	if limit >= 0 && len(msgs) > limit {
		msgs = msgs[len(msgs)-limit:]
	}
	out := make([]HistoryMessage, len(msgs))
	for i, m := range msgs {
		out[i] = m.HistoryMessage
	}
	return out, l.epoch, l.latest, nil
}

// replay answers the history or recovery request req (nil for none) of
// c's join of rm, whose lock is held: it queues for c the messages to
// replay and fills in the ack. member tells that c was already in the
// room, and so gets nothing again.
//
// With a LogBroker, the room's cursor stands for the latest seq: the log
// may hold messages that this hub has not delivered yet, and those reach
// c live, so the replay stops at the cursor.
func (h *Hub) replay(c *Client, name string, rm *room, req *Message, member bool, ack *Message) error {
	ctx, p := c.ctx, rm.policy
	recovery := !member && req != nil && req.Epoch != ""
	after, limit := ^uint64(0), 0 // where the room stands, no messages
	switch {
	case recovery:
		after, limit = req.Since, -1
	case !member && req != nil && req.History > 0:
		after, limit = 0, min(req.History, MaxHistoryReplay)
	}
	page, err := h.readHistory(ctx, name, p, after, limit)
	if err != nil {
		return historyError(name, err)
	}
	if h.log != nil && !rm.positioned {
		rm.cursor, rm.positioned = page.Latest, true
	}
	ack.Epoch, ack.Seq = page.Epoch, page.Latest
	if h.log != nil {
		ack.Seq = rm.cursor
	}
	msgs := page.Messages
	if req != nil && req.Epoch != "" {
		sameEpoch := ack.Epoch == req.Epoch
		if sameEpoch && req.Since > page.Latest {
			return fmt.Errorf("%w: since %d is past the room's latest seq %d", ErrInvalidMessage, req.Since, page.Latest)
		}
		// Recovered when the history still holds every message after since
		// (a member has had every message since it joined).
		recovered := sameEpoch && (member || page.Complete)
		ack.Recovered = &recovered
		if recovery && !recovered {
			msgs = nil
			if req.History > 0 {
				page, err = h.readHistory(ctx, name, p, 0, min(req.History, MaxHistoryReplay))
				if err != nil {
					return historyError(name, err)
				}
				msgs = page.Messages
			}
		}
		if recovery && recovered && h.log != nil && req.Since > rm.cursor {
			// It had, on another hub, messages that this one has yet to
			// deliver.
			if rm.skip == nil {
				rm.skip = make(map[*Client]uint64)
			}
			rm.skip[c] = req.Since
		}
	}
	if rm.epoch == "" {
		rm.epoch = ack.Epoch
	}
	frames := make([][]byte, 0, len(msgs))
	for _, hm := range msgs {
		if h.log != nil && hm.Seq > rm.cursor {
			break // it comes live
		}
		if b, err := c.encodeStored(hm); err == nil {
			frames = append(frames, b)
		}
	}
	c.enqueueReplay(frames)
	return nil
}

// encodeStored encodes a retained message, with its seq, for c's codec. A
// codec that cannot carry it (RawCodec, for a type other than "message")
// gets an error, as for a live message. Retained messages are JSON, so a
// codec other than the JSON ones gets Data as it decodes from JSON (a
// json.RawMessage): RawCodec replays the JSON text of Data, which for
// []byte data is base64, unlike the live message.
func (c *Client) encodeStored(hm HistoryMessage) ([]byte, error) {
	b := withPosition(hm.JSON, hm.Seq, "")
	if c.hub.encKey[c.codecIndex] == len(c.hub.opts.Codecs) { // a JSON codec
		return b, nil
	}
	var m Message
	if err := (JSONCodec{}).Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return c.codec.Marshal(&m)
}

// History returns up to limit of the room's retained messages, the newest
// ones, oldest first, each with its Seq; none when the room keeps no
// history (see Options.History). It waits for the HistoryStore, within
// ctx, and returns ErrHistory wrapping the store's error.
func (r Room) History(ctx context.Context, limit int) ([]*Message, error) {
	h := r.hub
	p := h.policyFor(r.name)
	if !p.on() || limit <= 0 {
		return nil, nil
	}
	page, err := h.readHistory(ctx, r.name, p, 0, limit)
	if err != nil {
		return nil, historyError(r.name, err)
	}
	out := make([]*Message, 0, len(page.Messages))
	for _, hm := range page.Messages {
		m := new(Message)
		if err := (JSONCodec{}).Unmarshal(hm.JSON, m); err != nil {
			return nil, fmt.Errorf("%w: %q: stored message: %w", ErrHistory, r.name, err)
		}
		m.Seq = hm.Seq
		out = append(out, m)
	}
	return out, nil
}

// Position returns the epoch of the room's history and the seq of its
// latest message (0 before the first); "" and 0 when the room keeps no
// history. It waits for the HistoryStore, within ctx, and returns
// ErrHistory wrapping the store's error.
func (r Room) Position(ctx context.Context) (epoch string, seq uint64, err error) {
	h := r.hub
	p := h.policyFor(r.name)
	if !p.on() {
		return "", 0, nil
	}
	page, err := h.readHistory(ctx, r.name, p, ^uint64(0), 0)
	if err != nil {
		return "", 0, historyError(r.name, err)
	}
	return page.Epoch, page.Latest, nil
}
