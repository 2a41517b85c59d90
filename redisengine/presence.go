package redisengine

import (
	"context"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// presence is this hub's share of the rooms' presence: the entries it
// wrote, kept alive, and the rooms it watches.
//
// The writes of one room's entry, by SetPresence and by the refresh, run
// one at a time under that room's write lock, each writing what own holds
// then: a refresh that read an older value cannot land after a newer
// one. The lock is the room's alone (a stripe of it), so a slow write
// delays no other room's.
type presence struct {
	e      *Engine
	ttl    time.Duration
	wake   chan struct{} // write every entry again: the connection came back
	ctx    context.Context
	cancel context.CancelFunc // ends run
	wg     sync.WaitGroup     // run
	writes [64]sync.Mutex     // the write locks, by a hash of the room

	mu      sync.Mutex
	own     map[string]string // room → this hub's members, as written
	dirty   map[string]bool   // rooms whose entry was not written: retried
	watches map[string]*watch
	closed  bool
}

func newPresence(e *Engine, ttl time.Duration) *presence {
	p := &presence{
		e:       e,
		ttl:     ttl,
		wake:    make(chan struct{}, 1),
		own:     make(map[string]string),
		dirty:   make(map[string]bool),
		watches: make(map[string]*watch),
	}
	p.ctx, p.cancel = context.WithCancel(e.ctx)
	return p
}

// start starts keeping the entries alive, once there is a client.
func (p *presence) start() { p.wg.Go(p.run) }

// writeLock returns room's write lock.
func (p *presence) writeLock(room string) *sync.Mutex {
	h := fnv.New32a()
	h.Write([]byte(room))
	return &p.writes[h.Sum32()%uint32(len(p.writes))]
}

// sync writes room's entry as own holds it now, under the room's write
// lock; refresh only renews its expiry, unless Redis lost it. It notes
// a failure, for the next refresh to retry.
func (p *presence) sync(room string, refresh bool) error {
	l := p.writeLock(room)
	l.Lock()
	defer l.Unlock()
	p.mu.Lock()
	v, ok := p.own[room]
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}
	var err error
	switch {
	case !ok:
		err = p.write(p.ctx, room, "")
	case refresh:
		var there bool
		if there, err = p.writeOK(p.ctx, room, "="); err == nil && !there {
			err = p.write(p.ctx, room, v) // Redis lost it
		}
	default:
		err = p.write(p.ctx, room, v)
	}
	p.mu.Lock()
	if err != nil {
		p.dirty[room] = true
	} else {
		delete(p.dirty, room)
	}
	p.mu.Unlock()
	return err
}

func (p *presence) kick() { signal(p.wake) }

// SetPresence publishes this hub's members of room, a JSON array of
// wshub.Presence, replacing what it published before; nil withdraws
// them. The other hubs that watch the room learn it at once. The engine
// writes the entry again every PresenceTTL/3, and it expires two thirds
// of PresenceTTL after its last write (see the package documentation,
// "Presence"). It waits for Redis, at most Options.Timeout; a write that
// failed is retried with the next refresh.
func (e *Engine) SetPresence(room string, members []byte) error {
	p := e.pres
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if members == nil {
		delete(p.own, room)
	} else {
		p.own[room] = string(members)
	}
	p.mu.Unlock()
	return p.sync(room, false)
}

// write runs presenceScript for room: members "" withdraws this hub's
// entry, "=" refreshes its expiry. It reports, for a refresh, whether
// the entry was there.
func (p *presence) write(ctx context.Context, room, members string) error {
	_, err := p.writeOK(ctx, room, members)
	return err
}

func (p *presence) writeOK(ctx context.Context, room, members string) (bool, error) {
	e := p.e
	n, err := e.runScript(ctx, presenceScript, []string{e.key(room, "pres"), e.key(room, "presx")}, []string{
		e.hubID, members, strconv.FormatInt(p.life().Milliseconds(), 10), e.publishCmd(), e.key(room, "p"),
	}).AsInt64()
	if err != nil {
		return false, classify("presence of "+strconv.Quote(room), err)
	}
	return n == 1, nil
}

// life is how long an entry lives after its last write: two thirds of
// the TTL. The hub writes it again every third, so one late refresh does
// not drop it, and the watchers, who read every third, see it go within
// the TTL of the hub's last write.
func (p *presence) life() time.Duration { return p.ttl * 2 / 3 }

// refreshes is how many entries a refresh writes at once.
const refreshes = 32

// run keeps this hub's entries alive: every PresenceTTL/3 it refreshes
// them and writes again those whose write failed or that Redis lost;
// after a reconnection it writes them all again.
func (p *presence) run() {
	t := time.NewTicker(p.ttl / 3)
	defer t.Stop()
	for {
		full := false
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
		case <-p.wake:
			full = true
		}
		p.mu.Lock()
		rooms := slices.Collect(maps.Keys(p.own))
		dirty := maps.Clone(p.dirty)
		p.mu.Unlock()
		for room := range dirty {
			if !slices.Contains(rooms, room) {
				rooms = append(rooms, room) // a withdrawal that failed
			}
		}
		// Many at once, which rueidis pipelines: a pass over many rooms
		// takes a few round trips, not one per room.
		var g errgroup.Group
		g.SetLimit(refreshes)
		for _, room := range rooms {
			g.Go(func() error {
				p.sync(room, !full && !dirty[room])
				return nil
			})
		}
		g.Wait()
	}
}

// watch is a room whose presence this hub watches.
type watch struct {
	task
	p      *presence
	room   string
	update func(hub string, members []byte)
	seen   map[string]string // the other hubs' entries passed to update
	lastOK time.Time         // of the last read that succeeded
}

// WatchPresence calls update with the members each other hub published
// for room, and nil when they are withdrawn or expired, starting with the
// current ones before it returns. It re-reads the room's entries when a
// hub announces a change, every PresenceTTL/3 (to see expired ones go),
// and after a reconnection. While Redis cannot be reached the watch goes
// on, and when that lasts PresenceTTL, update withdraws the other hubs'
// members, since this hub can no longer tell which are alive. It waits
// for the subscription and the first read at most about twice
// Options.Timeout; when Redis is down it returns nil without the current
// entries, which come once Redis is back. It returns ErrFollowed for a
// room already watched and ErrClosed after Close.
func (e *Engine) WatchPresence(room string, update func(hub string, members []byte)) error {
	p := e.pres
	w := &watch{p: p, room: room, update: update, seen: make(map[string]string), lastOK: time.Now()}
	w.init(e.ctx)
	p.mu.Lock()
	switch {
	case p.closed:
		p.mu.Unlock()
		w.cancel()
		return ErrClosed
	case p.watches[room] != nil:
		p.mu.Unlock()
		w.cancel()
		return fmt.Errorf("%w: presence of %q", ErrFollowed, room)
	}
	p.watches[room] = w
	p.mu.Unlock()

	w.subscribe(e, e.key(room, "p"), func(string) { w.kick() }, func(first bool) {
		w.kick()
		if !first {
			p.kick() // the connection came back: on a cluster, maybe another node's
		}
	})
	w.refresh()
	w.wg.Go(w.run)
	return nil
}

// UnwatchPresence stops the updates of room, waiting for one under way
// and for Redis to drop the subscription, at most Options.Timeout.
func (e *Engine) UnwatchPresence(room string) error {
	p := e.pres
	p.mu.Lock()
	w := p.watches[room]
	delete(p.watches, room)
	p.mu.Unlock()
	if w != nil {
		w.stop()
	}
	return nil
}

func (w *watch) run() {
	t := time.NewTicker(w.p.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		case <-w.wake:
		}
		w.refresh()
	}
}

// refresh reads the room's live entries and passes what changed.
func (w *watch) refresh() {
	entries, err := w.p.read(w.ctx, w.room)
	if w.ctx.Err() != nil {
		return
	}
	if err != nil {
		if time.Since(w.lastOK) < w.p.ttl {
			return
		}
		entries = nil // out of touch for a TTL: withdraw them all
	} else {
		w.lastOK = time.Now()
	}
	delete(entries, w.p.e.hubID)
	for hub, v := range entries {
		if w.seen[hub] != v {
			w.seen[hub] = v
			w.update(hub, []byte(v))
		}
	}
	for hub := range w.seen {
		if _, ok := entries[hub]; !ok {
			delete(w.seen, hub)
			w.update(hub, nil)
		}
	}
}

// read returns the live entries of room's presence, by hub ID.
func (p *presence) read(ctx context.Context, room string) (map[string]string, error) {
	e := p.e
	vals, err := e.runScript(ctx, presenceReadScript, []string{e.key(room, "pres"), e.key(room, "presx")}, nil).ToArray()
	if err != nil {
		return nil, readErr("presence of "+strconv.Quote(room), err)
	}
	out := make(map[string]string, len(vals)/2)
	for i := 0; i+1 < len(vals); i += 2 {
		hub, _ := vals[i].ToString()
		v, _ := vals[i+1].ToString()
		out[hub] = v
	}
	return out, nil
}

// close stops the watches and the refresh, then withdraws this hub's
// entries, waiting at most 2 seconds: the other hubs see its members
// leave at once. What it could not withdraw expires.
func (p *presence) close() {
	p.mu.Lock()
	p.closed = true
	watches := p.watches
	p.watches = nil
	own := p.own
	p.own = nil
	p.mu.Unlock()
	for _, w := range watches {
		w.cancel()
	}
	for _, w := range watches {
		w.wg.Wait()
	}
	p.cancel()
	p.wg.Wait()
	if len(own) == 0 || p.e.conn() == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for room := range own {
		wg.Go(func() {
			l := p.writeLock(room) // after a SetPresence under way
			l.Lock()
			defer l.Unlock()
			p.write(ctx, room, "")
		})
	}
	wg.Wait()
}
