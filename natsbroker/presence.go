package natsbroker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Presence settings.
const (
	// DefaultPresenceTTL is the default of Options.PresenceTTL: how long
	// the members that a hub published stay visible to the other hubs
	// after the hub stopped refreshing them.
	DefaultPresenceTTL = 30 * time.Second

	// MinPresenceTTL is the shortest Options.PresenceTTL: JetStream keeps
	// the markers of expired keys for at least a second.
	MinPresenceTTL = time.Second

	// presenceCloseWait bounds Close's wait for the deletion of the hub's
	// keys, with Options.Timeout if shorter.
	presenceCloseWait = 2 * time.Second
)

// The KV protocol's headers, as nats.go's jetstream package writes them.
const (
	kvOpHeader = "KV-Operation"
	kvOpDelete = "DEL"
)

// presence shares a hub's presence through a JetStream key-value bucket;
// see the package documentation, "Presence". Every Broker has one; it uses
// the network only once SetPresence or WatchPresence is called.
type presence struct {
	b      *Broker
	id     string        // this hub's ID, the last token of its keys
	ttl    time.Duration // the bucket's TTL; entries are written again every ttl/3
	bucket string
	cfg    jetstream.KeyValueConfig
	js     jetstream.JetStream // presence's own, so that its async publishes are its alone

	ctx    context.Context // ends with Close
	cancel context.CancelFunc

	sem    chan struct{} // held while creating the bucket
	kvMu   sync.Mutex
	kv     jetstream.KeyValue // nil until created
	kvConn uint64             // connID on which kv was created

	// mu guards what follows. It is held while writing entries, so that
	// they go out on the connection, and JetStream stores them, in the
	// order of the changes.
	mu         sync.Mutex
	own        map[string][]byte // this hub's members, by room
	watches    map[string]*presWatch
	closed     bool
	refreshing bool          // the refresher runs
	refreshed  chan struct{} // closed when the refresher returns
}

func newPresence(b *Broker, o Options) (*presence, error) {
	ttl := o.PresenceTTL
	if ttl == 0 {
		ttl = DefaultPresenceTTL
	}
	if ttl < MinPresenceTTL {
		return nil, fmt.Errorf("natsbroker: presence TTL %v, want at least %v", ttl, MinPresenceTTL)
	}
	replicas := o.Replicas
	if replicas == 0 {
		replicas = 1
	}
	if replicas < 1 || replicas > 5 {
		return nil, fmt.Errorf("natsbroker: %d replicas, want 1 to 5", o.Replicas)
	}
	js, err := jetstream.New(b.nc, jetstream.WithPublishAsyncTimeout(b.timeout))
	if err != nil {
		return nil, fmt.Errorf("natsbroker: jetstream: %w", err)
	}
	var id [8]byte
	rand.Read(id[:])
	p := &presence{
		b:       b,
		id:      hex.EncodeToString(id[:]),
		ttl:     ttl,
		bucket:  prefixName(strings.TrimSuffix(b.prefix, ".")) + "_presence",
		js:      js,
		sem:     make(chan struct{}, 1),
		own:     make(map[string][]byte),
		watches: make(map[string]*presWatch),
	}
	p.cfg = jetstream.KeyValueConfig{
		Bucket:         p.bucket,
		Description:    "wshub presence of " + strings.TrimSuffix(b.prefix, "."),
		History:        1,
		TTL:            ttl,
		LimitMarkerTTL: ttl,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
	}
	if o.MemoryStorage {
		p.cfg.Storage = jetstream.MemoryStorage
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// PresenceID returns the ID of this broker's hub in the presence bucket:
// 16 random hexadecimal digits, the last token of its keys, and the hub
// name that WatchPresence passes to other hubs' updates.
func (b *Broker) PresenceID() string { return b.pres.id }

// PresenceBucket returns the name of the JetStream key-value bucket that
// holds the presence of every hub sharing the prefix, e.g.
// "wshub_room_1b2c3d4e_presence"; its stream is "KV_" and the name.
func (b *Broker) PresenceBucket() string { return b.pres.bucket }

// PresenceKey returns the key under which this hub publishes its members
// of room: the room's token, as in Subject, a dot, and PresenceID.
func (b *Broker) PresenceKey(room string) string {
	return roomToken(room) + "." + b.pres.id
}

func roomToken(room string) string { return base64.RawURLEncoding.EncodeToString([]byte(room)) }

// SetPresence publishes members, this hub's members of room (a JSON
// array that the hub encodes), under the room's key in the presence
// bucket, replacing what it published before; a nil or empty members
// withdraws them (a delete marker). It returns once JetStream stored the
// change, creating the bucket first if needed; when the connection is
// not up, after Options.Timeout, or when JetStream refuses, it returns an
// error. Either way the broker keeps members, writes them again every
// PresenceTTL/3 while they are not nil, and at once after a
// reconnection, so that a failed SetPresence is repaired by the next
// successful write; a withdrawal that failed expires within PresenceTTL.
// It returns ErrClosed after Close.
func (b *Broker) SetPresence(room string, members []byte) error {
	p := b.pres
	if len(members) == 0 {
		members = nil
	} else {
		members = bytes.Clone(members)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	_, had := p.own[room]
	if members == nil {
		delete(p.own, room)
	} else {
		p.own[room] = members
		if !p.refreshing {
			p.refreshing = true
			p.refreshed = make(chan struct{})
			go p.refresh()
		}
	}
	p.mu.Unlock()
	if members == nil && !had {
		return nil // nothing published
	}
	ctx, cancel := context.WithTimeout(p.ctx, b.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if _, err := p.ensure(ctx); err != nil {
			return fmt.Errorf("natsbroker: presence of %q: %w", room, err)
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return ErrClosed
		}
		f, err := p.writeLocked(room, p.own[room])
		p.mu.Unlock()
		if err != nil {
			return b.connErr(fmt.Errorf("natsbroker: presence of %q: %w", room, err))
		}
		err = waitAck(ctx, f)
		if errors.Is(err, jetstream.ErrNoStreamResponse) && attempt == 0 {
			p.invalidate() // the bucket is gone: a restart of memory storage
			continue
		}
		if err != nil {
			return b.connErr(fmt.Errorf("natsbroker: presence of %q: %w", room, err))
		}
		return nil
	}
}

// writeLocked writes room's entry: a put of members, or a delete marker
// when nil. p.mu is held.
func (p *presence) writeLocked(room string, members []byte) (jetstream.PubAckFuture, error) {
	m := nats.NewMsg("$KV." + p.bucket + "." + roomToken(room) + "." + p.id)
	if members != nil {
		m.Data = members
	} else {
		m.Header.Set(kvOpHeader, kvOpDelete)
	}
	return p.js.PublishMsgAsync(m, jetstream.WithRetryAttempts(0))
}

func waitAck(ctx context.Context, f jetstream.PubAckFuture) error {
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ensure returns the bucket, creating it (or updating its configuration)
// on the first call on each connection: a server restarted with memory
// storage lost it.
func (p *presence) ensure(ctx context.Context) (jetstream.KeyValue, error) {
	nc := p.b.nc
	if kv := p.current(); kv != nil {
		return kv, nil
	}
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-p.sem }()
	if kv := p.current(); kv != nil {
		return kv, nil
	}
	if !nc.IsConnected() {
		return nil, fmt.Errorf("%w (%v)", ErrNotConnected, nc.Status())
	}
	conn := connID(nc)
	kv, err := p.js.CreateOrUpdateKeyValue(ctx, p.cfg)
	if err != nil {
		return nil, p.b.connErr(fmt.Errorf("bucket %s: %w", p.bucket, err))
	}
	p.kvMu.Lock()
	p.kv, p.kvConn = kv, conn
	p.kvMu.Unlock()
	return kv, nil
}

// current returns the bucket if it was made on the current connection.
func (p *presence) current() jetstream.KeyValue {
	p.kvMu.Lock()
	defer p.kvMu.Unlock()
	if p.kv != nil && p.kvConn == connID(p.b.nc) {
		return p.kv
	}
	return nil
}

func (p *presence) invalidate() {
	p.kvMu.Lock()
	p.kv = nil
	p.kvMu.Unlock()
}

// refresh writes the hub's entries every ttl/3, and as soon as the
// connection is back after an outage, until Close. After a failed
// attempt it tries again sooner, backing off from retryMin.
func (p *presence) refresh() {
	defer close(p.refreshed)
	nc := p.b.nc
	status := nc.StatusChanged(nats.CONNECTED)
	defer nc.RemoveStatusListener(status)
	every := p.ttl / 3
	t := time.NewTimer(every)
	defer t.Stop()
	backoff := retryMin
	for {
		select {
		case <-t.C:
		case <-status:
		case <-p.ctx.Done():
			return
		}
		for len(status) > 0 {
			<-status
		}
		next := every
		if err := p.writeAll(); err != nil {
			if cb := nc.Opts.AsyncErrorCB; cb != nil && nc.IsConnected() {
				cb(nc, nil, err)
			}
			next = min(backoff, every)
			backoff = min(2*backoff, retryMax)
		} else {
			backoff = retryMin
		}
		t.Reset(next)
	}
}

// writeAll writes every entry of the hub again, pipelined, and waits for
// JetStream to store them.
func (p *presence) writeAll() error {
	nc := p.b.nc
	p.mu.Lock()
	none := len(p.own) == 0
	p.mu.Unlock()
	if none || !nc.IsConnected() {
		return nil // a reconnection triggers the next attempt
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.b.timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		if _, err := p.ensure(ctx); err != nil {
			return fmt.Errorf("natsbroker: presence refresh: %w", err)
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil
		}
		futures := make([]jetstream.PubAckFuture, 0, len(p.own))
		var err error
		for room, members := range p.own {
			var f jetstream.PubAckFuture
			if f, err = p.writeLocked(room, members); err != nil {
				break
			}
			futures = append(futures, f)
		}
		p.mu.Unlock()
		gone := false
		for _, f := range futures {
			e := waitAck(ctx, f)
			gone = gone || errors.Is(e, jetstream.ErrNoStreamResponse)
			if err == nil {
				err = e
			}
		}
		if gone && attempt == 0 {
			p.invalidate()
			continue
		}
		if err != nil {
			return fmt.Errorf("natsbroker: presence refresh: %w", err)
		}
		return nil
	}
}

// WatchPresence calls update with the members that other hubs published
// for room, and with nil when a hub withdrew them or they expired, from a
// goroutine of its own, one call at a time; never with this hub's own
// entry, and only for changes (a refresh that writes the same members
// again is no call). When connected, it first reads the room's current
// entries through an ordered JetStream consumer, passes them to update,
// and returns: it fails if that takes longer than Options.Timeout. When
// not connected, it returns nil at once and the updates start once the
// connection is up. After each reconnection it reads the room's entries
// again and passes what changed meanwhile; while the connection has been
// down for PresenceTTL, it withdraws every other hub's members (update
// with nil), since it can no longer tell which hubs are alive. It returns
// an error if room is already watched, ErrClosed after Close.
func (b *Broker) WatchPresence(room string, update func(hub string, members []byte)) error {
	p := b.pres
	w := &presWatch{
		p: p, room: room, filter: roomToken(room) + ".*", update: update,
		known: make(map[string][]byte), first: make(chan error, 1), done: make(chan struct{}),
	}
	w.ctx, w.cancel = context.WithCancel(p.ctx)
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if p.watches[room] != nil {
		p.mu.Unlock()
		return fmt.Errorf("natsbroker: presence of %q already watched", room)
	}
	p.watches[room] = w
	p.mu.Unlock()
	first := w.first // run's from now on
	go w.run()
	err := <-first
	if err != nil {
		p.mu.Lock()
		if p.watches[room] == w {
			delete(p.watches, room)
		}
		p.mu.Unlock()
		w.stop()
		return fmt.Errorf("natsbroker: presence of %q: %w", room, err)
	}
	return nil
}

// UnwatchPresence stops the updates of room and returns once the watch's
// goroutine has ended: update is not called afterwards. Unwatching a room
// that is not watched does nothing. It returns nil.
func (b *Broker) UnwatchPresence(room string) error {
	p := b.pres
	p.mu.Lock()
	w := p.watches[room]
	delete(p.watches, room)
	p.mu.Unlock()
	if w != nil {
		w.stop()
	}
	return nil
}

// close withdraws the hub's entries (best effort, waiting at most
// presenceCloseWait for JetStream), and stops the watches and the
// refresher.
func (p *presence) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	var futures []jetstream.PubAckFuture
	if p.b.nc.IsConnected() {
		for room := range p.own {
			if f, err := p.writeLocked(room, nil); err == nil {
				futures = append(futures, f)
			}
		}
	}
	p.own = nil
	watches := p.watches
	p.watches = nil
	refreshing := p.refreshing
	p.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), min(p.b.timeout, presenceCloseWait))
	defer cancel()
	for _, f := range futures {
		if waitAck(ctx, f) != nil {
			break // expired by the TTL instead
		}
	}
	p.cancel()
	for _, w := range watches {
		<-w.done
	}
	if refreshing {
		<-p.refreshed
	}
	p.js.CleanupPublisher()
}

// presWatch is a WatchPresence: a goroutine that reads the room's entries
// through a JetStream key watcher, made again after each reconnection.
type presWatch struct {
	p      *presence
	room   string
	filter string // the keys of the room: its token and "*"
	update func(hub string, members []byte)

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when run returns

	// Owned by run.
	known map[string][]byte // what update was last given, by hub; absent when withdrawn
	first chan error        // WatchPresence's answer; nil once sent
}

func (w *presWatch) stop() {
	w.cancel()
	<-w.done
}

// started answers WatchPresence, once.
func (w *presWatch) started(err error) {
	if w.first != nil {
		w.first <- err
		w.first = nil
	}
}

func (w *presWatch) run() {
	defer close(w.done)
	nc := w.p.b.nc
	status := nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)
	var lost time.Time // when the last session ended: the view is as old
	var pause time.Duration
	backoff := retryMin
	for {
		if !w.wait(status, lost, pause) {
			w.started(ErrClosed)
			return
		}
		ok, err := w.session(status)
		if w.ctx.Err() != nil {
			w.started(ErrClosed)
			return
		}
		if ok || lost.IsZero() {
			lost = time.Now()
		}
		if errors.Is(err, errReconnected) {
			pause, backoff = 0, retryMin
			continue
		}
		if w.first != nil {
			w.started(err) // WatchPresence fails and stops the watch
			<-w.ctx.Done()
			return
		}
		if cb := nc.Opts.AsyncErrorCB; cb != nil && nc.IsConnected() {
			cb(nc, nil, err)
		}
		if ok {
			backoff = retryMin
		}
		pause, backoff = backoff, min(2*backoff, retryMax)
	}
}

// wait returns true once pause has passed and the connection is up, and
// false when the watch ends. When the view is older than the TTL (lost,
// when not zero, is when it stopped following), it withdraws every hub.
// It answers WatchPresence with nil if the connection is down.
func (w *presWatch) wait(status <-chan nats.Status, lost time.Time, pause time.Duration) bool {
	nc := w.p.b.nc
	var paused <-chan time.Time
	if pause > 0 {
		t := time.NewTimer(pause)
		defer t.Stop()
		paused = t.C
	}
	var expire <-chan time.Time
	if !lost.IsZero() && len(w.known) > 0 {
		t := time.NewTimer(time.Until(lost.Add(w.p.ttl)))
		defer t.Stop()
		expire = t.C
	}
	for {
		for len(status) > 0 {
			<-status
		}
		connected := nc.IsConnected()
		if paused == nil && connected {
			return true
		}
		if !connected {
			w.started(nil) // the updates start once connected
		}
		select {
		case <-paused:
			paused = nil
		case <-status:
		case <-expire:
			expire = nil
			for hub := range w.known {
				w.set(hub, nil)
			}
		case <-w.ctx.Done():
			return false
		}
	}
}

// session follows the room's entries on one connection: it reads the
// current ones, passes what changed since the last session, answers
// WatchPresence, and passes each change until the connection goes away
// (errReconnected), the watcher fails or the watch ends. ok reports
// whether it got the current entries.
func (w *presWatch) session(status <-chan nats.Status) (ok bool, err error) {
	nc := w.p.b.nc
	conn := connID(nc)
	ctx, cancel := context.WithCancel(w.ctx)
	defer cancel()
	// Bounds getting the current entries; their arrival stops it.
	initDone := time.AfterFunc(w.p.b.timeout, cancel)
	defer initDone.Stop()
	timedOut := func(err error) error {
		if w.ctx.Err() == nil && ctx.Err() != nil {
			return fmt.Errorf("no current entries within %v: %w", w.p.b.timeout, context.DeadlineExceeded)
		}
		return err
	}
	kv, err := w.p.ensure(ctx)
	if err != nil {
		return false, timedOut(err)
	}
	kw, err := kv.Watch(ctx, w.filter)
	if err != nil {
		if !nc.IsConnected() || connID(nc) != conn {
			return false, errReconnected
		}
		return false, timedOut(w.p.b.connErr(err))
	}
	defer func() {
		cancel()
		kw.Stop()
		for range kw.Updates() {
			// Drained until nats.go closes it: its delivery goroutine may be
			// blocked on it.
		}
	}()
	current := make(map[string][]byte)
	for {
		select {
		case e, open := <-kw.Updates():
			if !open {
				if !nc.IsConnected() || connID(nc) != conn {
					return ok, errReconnected
				}
				return ok, errors.New("natsbroker: presence watcher stopped")
			}
			if e == nil { // the current entries have all come
				if !ok && initDone.Stop() {
					ok = true
					for hub := range w.known {
						if _, there := current[hub]; !there {
							w.set(hub, nil)
						}
					}
					for hub, members := range current {
						w.set(hub, members)
					}
					current = nil
					w.started(nil)
				}
				continue
			}
			i := strings.LastIndexByte(e.Key(), '.')
			hub := e.Key()[i+1:]
			if i < 0 || hub == w.p.id {
				continue
			}
			var members []byte
			if e.Operation() == jetstream.KeyValuePut && len(e.Value()) > 0 {
				members = e.Value()
			}
			switch {
			case ok:
				w.set(hub, members)
			case members != nil:
				current[hub] = members
			default:
				delete(current, hub)
			}
		case <-status:
			for len(status) > 0 {
				<-status
			}
			if !nc.IsConnected() || connID(nc) != conn {
				return ok, errReconnected
			}
		case <-ctx.Done():
			return ok, timedOut(ctx.Err())
		}
	}
}

// set passes hub's members to update if they changed.
func (w *presWatch) set(hub string, members []byte) {
	prev, had := w.known[hub]
	if members == nil {
		if !had {
			return
		}
		delete(w.known, hub)
	} else {
		if had && bytes.Equal(prev, members) {
			return
		}
		w.known[hub] = members
	}
	w.update(hub, members)
}
