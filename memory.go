package wshub

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"
)

// The memory engine: the default Engine, for a hub alone. It puts each
// room's messages in one order under one mutex, numbers those of rooms
// with history and keeps the last ones in a ring per room, and passes them
// to the room's follower in that order. The mutex is held only to change
// memory; the follower is called without it, by whichever publisher finds
// nobody else passing the room's messages on (it takes over the queue, so
// that no goroutine waits for another and the order holds). A publisher
// passes on at most maxDrainBatches batches: if others keep publishing, a
// goroutine of the engine takes over, so that no publisher works for the
// others for long.
type memEngine struct {
	mu    sync.Mutex
	rooms map[string]*memFollow // followed rooms
	hist  memHistory
	wg    sync.WaitGroup // the goroutines that took over a queue
}

// maxDrainBatches bounds the batches a publisher passes on for others.
const maxDrainBatches = 4

// maxQueueBytes bounds what a followed room's queue holds while another
// goroutine passes it on: a publisher past it waits until the queue is
// taken. The hub paces deliveries of messages from other hubs (flow.go),
// and natsbroker feeds those of core NATS rooms with history through a
// memory engine: this keeps the burst in the bound that natsbroker
// documents, not here.
const maxQueueBytes = 1 << 20

// memFollow is a followed room: its follower and what it has yet to get.
type memFollow struct {
	deliver  func(Entry)
	queue    []Entry
	spare    []Entry       // the last batch passed on, for reuse
	bytes    int           // of the JSON in queue
	draining bool          // a goroutine is passing queue on
	space    chan struct{} // closed when queue is taken; nil if nobody waits
}

// Defaults of the memory engine's histories.
const (
	defaultHistoryAge      = time.Hour // when HistoryPolicy.MaxAge is zero
	defaultMaxHistoryBytes = 64 << 20
)

// NewMemoryEngine returns the in-memory Engine: rooms local to the hub,
// histories that last as long as the process, at most maxBytes of them
// (64 MiB if zero or less; past it, the history of the room written least
// recently is dropped and that room starts a new epoch). It never fails.
func NewMemoryEngine(maxBytes int64) Engine {
	if maxBytes <= 0 {
		maxBytes = defaultMaxHistoryBytes
	}
	return &memEngine{
		rooms: make(map[string]*memFollow),
		hist:  memHistory{rooms: make(map[string]*ring), max: maxBytes, now: time.Now},
	}
}

// Publish implements Engine.
func (e *memEngine) Publish(ctx context.Context, room string, p HistoryPolicy, id string, msg []byte) func() error {
	e.mu.Lock()
	en := Entry{ID: id, JSON: msg}
	if p.on() {
		en.Seq, en.Epoch = e.hist.append(room, p, msg)
	}
	f := e.rooms[room]
	if f == nil {
		e.mu.Unlock()
		return noError
	}
	f.queue = append(f.queue, en)
	f.bytes += len(msg)
	if f.draining && f.bytes > maxQueueBytes {
		if f.space == nil {
			f.space = make(chan struct{})
		}
		space := f.space
		e.mu.Unlock()
		select { // msg is kept and queued either way
		case <-space:
		case <-ctx.Done():
		}
		return noError
	}
	e.drainLocked(f)
	return noError
}

func noError() error { return nil }

// drainLocked passes f's queue on, unless another goroutine does; e.mu is
// held, and released on return.
func (e *memEngine) drainLocked(f *memFollow) {
	if f.draining {
		e.mu.Unlock()
		return
	}
	f.draining = true
	e.drain(f, maxDrainBatches)
}

// drain passes f's queue on, at most batches batches (none is no limit),
// then hands it to a goroutine of its own; e.mu is held and f.draining
// set, and it releases e.mu.
func (e *memEngine) drain(f *memFollow, batches int) {
	for n := 0; len(f.queue) > 0; n++ {
		if batches > 0 && n == batches {
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.mu.Lock()
				e.drain(f, 0)
			}()
			e.mu.Unlock()
			return
		}
		batch, deliver := f.queue, f.deliver
		f.queue, f.spare, f.bytes = f.spare[:0], nil, 0
		if f.space != nil {
			close(f.space)
			f.space = nil
		}
		e.mu.Unlock()
		for _, en := range batch {
			deliver(en)
		}
		clear(batch)
		e.mu.Lock()
		f.spare = batch[:0]
	}
	f.draining = false
	e.mu.Unlock()
}

var errFollowed = errors.New("wshub: room already followed")

// Follow implements Engine.
func (e *memEngine) Follow(room string, p HistoryPolicy, after uint64, deliver func(Entry)) error {
	e.mu.Lock()
	f := e.rooms[room]
	if f != nil && f.deliver != nil {
		e.mu.Unlock()
		return errFollowed
	}
	if f == nil {
		f = new(memFollow)
		e.rooms[room] = f
	}
	f.deliver = deliver
	if p.on() {
		msgs, epoch, _ := e.hist.read(room, p, after, -1)
		for _, m := range msgs {
			m.Epoch = epoch
			f.queue = append(f.queue, m)
			f.bytes += len(m.JSON)
		}
	}
	e.drainLocked(f)
	return nil
}

// Unfollow implements Engine.
func (e *memEngine) Unfollow(room string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f := e.rooms[room]; f != nil {
		delete(e.rooms, room)
		f.queue, f.bytes = nil, 0
		if f.space != nil {
			close(f.space)
			f.space = nil
		}
	}
	return nil
}

// Read implements Engine.
func (e *memEngine) Read(_ context.Context, room string, p HistoryPolicy, after uint64, limit int) (LogPage, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	msgs, epoch, latest := e.hist.read(room, p, after, limit)
	// A ring numbers without gaps: complete when it starts right after
	// after.
	complete := after >= latest || len(msgs) > 0 && msgs[0].Seq == after+1
	return LogPage{Messages: msgs, Epoch: epoch, Latest: latest, Complete: complete}, nil
}

// Close implements Engine: it waits for the deliveries under way.
func (e *memEngine) Close() error {
	e.wg.Wait()
	return nil
}

// memHistory is the memory engine's histories: a ring of messages per
// room, and a list of rooms by last append, so that the least recently
// written room's history is evicted first when the engine is over its cap
// or the room has expired. Its methods run under memEngine.mu.
type memHistory struct {
	rooms  map[string]*ring
	byTime list.List // *ring, least recently written first
	bytes  int64
	max    int64
	now    func() time.Time
}

// ring is one room's history.
type ring struct {
	name   string
	epoch  string
	latest uint64     // seq of the newest message, 0 before the first
	msgs   []retained // oldest first
	bytes  int64
	maxAge time.Duration
	last   time.Time // of the newest message, or of the ring's creation
	elem   *list.Element
}

type retained struct {
	seq  uint64
	json []byte
	at   int64 // UnixNano: a third of a time.Time's size
}

// retainedOverhead approximates what a retained message costs besides
// its bytes: its slice entry, spare room in the slice, and the rounding
// of its allocation (BenchmarkHistoryMemory measures it); ringOverhead,
// what a room's ring costs.
const (
	retainedOverhead = 64
	ringOverhead     = 256
)

// ring returns the room's ring, expired messages dropped, creating it
// (with a new epoch) if the room has none.
func (s *memHistory) ring(room string, p HistoryPolicy, now time.Time) *ring {
	r := s.rooms[room]
	if r != nil {
		r.maxAge = p.maxAge()
		if now.Sub(r.last) > r.maxAge {
			s.drop(r) // expired: the history is lost
			r = nil
		} else {
			s.expire(r, now)
		}
	}
	if r == nil {
		r = &ring{name: room, epoch: newID(), maxAge: p.maxAge(), last: now, bytes: ringOverhead}
		r.elem = s.byTime.PushBack(r)
		s.rooms[room] = r
		s.bytes += ringOverhead
		s.evict(r, now) // joins of many rooms count too
	}
	return r
}

func (s *memHistory) expire(r *ring, now time.Time) {
	n := 0
	for n < len(r.msgs) && now.UnixNano()-r.msgs[n].at > int64(r.maxAge) {
		n++
	}
	s.trim(r, n)
}

// trim drops the room's n oldest messages.
func (s *memHistory) trim(r *ring, n int) {
	for _, m := range r.msgs[:n] {
		r.bytes -= int64(len(m.json)) + retainedOverhead
		s.bytes -= int64(len(m.json)) + retainedOverhead
	}
	clear(r.msgs[:n])
	r.msgs = r.msgs[n:]
}

func (s *memHistory) drop(r *ring) {
	s.trim(r, len(r.msgs))
	s.bytes -= ringOverhead
	s.byTime.Remove(r.elem)
	delete(s.rooms, r.name)
}

// append adds msg as the room's newest message and returns its seq and
// the room's epoch.
func (s *memHistory) append(room string, p HistoryPolicy, msg []byte) (uint64, string) {
	now := s.now()
	r := s.ring(room, p, now)
	if over := len(r.msgs) + 1 - p.Messages; over > 0 {
		s.trim(r, over)
	}
	r.latest++
	r.msgs = append(r.msgs, retained{r.latest, msg, now.UnixNano()})
	size := int64(len(msg)) + retainedOverhead
	r.bytes += size
	s.bytes += size
	r.last = now
	s.byTime.MoveToBack(r.elem)
	s.evict(r, now)
	return r.latest, r.epoch
}

// evict drops the histories of rooms written least recently while the
// engine is over its cap, and those that have expired, but not keep's.
func (s *memHistory) evict(keep *ring, now time.Time) {
	for e := s.byTime.Front(); e != nil; {
		r := e.Value.(*ring)
		e = e.Next()
		if r == keep {
			break
		}
		if s.bytes <= s.max && now.Sub(r.last) <= r.maxAge {
			break
		}
		s.drop(r)
	}
	for s.bytes > s.max && len(keep.msgs) > 1 { // one room alone is too big
		s.trim(keep, 1)
	}
}

// read returns the room's retained messages after after, at most limit
// (the newest; all if negative), and its epoch and latest seq.
func (s *memHistory) read(room string, p HistoryPolicy, after uint64, limit int) ([]Entry, string, uint64) {
	r := s.ring(room, p, s.now())
	msgs := r.msgs
	// msgs holds seqs latest-len+1 … latest, without gaps.
	if first := r.latest - uint64(len(msgs)) + 1; after >= first {
		msgs = msgs[min(uint64(len(msgs)), after-first+1):]
	}
	if limit >= 0 && len(msgs) > limit {
		msgs = msgs[len(msgs)-limit:]
	}
	out := make([]Entry, len(msgs))
	for i, m := range msgs {
		out[i] = Entry{Seq: m.seq, JSON: m.json}
	}
	return out, r.epoch, r.latest
}
