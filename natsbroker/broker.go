package natsbroker

import (
	"container/list"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/wshub/wshub"
)

// Defaults used for zero Options fields.
const (
	DefaultPrefix     = "wshub.room"
	DefaultTimeout    = 5 * time.Second
	DefaultBurstBytes = 8 << 20
)

// Errors of the broker. Errors from nats.go are wrapped in them or returned
// wrapped with %w; test for either with errors.Is.
var (
	// ErrNotConnected is returned by Publish's wait and Command while
	// the NATS connection is not up (connecting, reconnecting, draining
	// or closed), and when the connection broke, or nats.go replaced it,
	// before the server confirmed a message.
	ErrNotConnected = errors.New("natsbroker: not connected to NATS")

	// ErrClosed is returned by Publish's wait, Follow, Read, Command and
	// HandleCommands after Close.
	ErrClosed = errors.New("natsbroker: broker closed")

	// ErrFollowed is returned by Follow for a room that is already
	// followed.
	ErrFollowed = errors.New("natsbroker: room already followed")

	// ErrUnconfirmed is returned, wrapped, by the wait of Log.Publish, for
	// a room with history, when a message
	// was sent to JetStream but no acknowledgement came before the
	// context ended (the connection broke, or the server did not answer,
	// and retries with the same message ID were not answered either).
	// The message may or may not be stored. If it is, it is in the room's
	// log like any other and every hub that follows the room delivers it:
	// all of them or none, never some.
	ErrUnconfirmed = errors.New("natsbroker: append not confirmed, the message may or may not be stored")
)

// Options configures a Broker. A nil *Options and every zero field mean
// the documented default.
type Options struct {
	// Prefix is the subject prefix of the rooms: room r has the subject
	// Prefix + "." + base64url(r). It must be a valid NATS subject without
	// wildcards. Hubs that share rooms must use the same prefix.
	// Default: DefaultPrefix ("wshub.room").
	Prefix string

	// Timeout bounds the wait for the server's confirmation of a
	// published message when Publish's context has no deadline, and of
	// a subscription in Follow. It also bounds each flush that the
	// broker runs for publishes that share one, SetPresence, and the
	// reading of a room's current presence entries by WatchPresence.
	// Default: DefaultTimeout (5s).
	Timeout time.Duration

	// NoConfirm makes the wait of Publish return as soon as the message
	// is in nats.go's buffer for a connected connection, without waiting
	// for the server to confirm it. Publishing is then faster, but a
	// message written just before the connection breaks is lost although
	// its wait returned nil. It does not apply to the history rooms of a
	// Log, whose publishes wait for JetStream, nor to Command.
	// Default: false, the wait is for the confirmation.
	NoConfirm bool

	// RetryOnFailedConnect makes Connect return a broker at once when no
	// server answers, instead of an error, so that a hub can start while
	// NATS is unreachable. nats.go then keeps trying in the background, as
	// it does after losing a connection; until it connects, Publish
	// fails with ErrNotConnected and Follow registers the subscription,
	// returns nil, and nats.go creates it on the server when it connects.
	// New ignores this field: pass nats.RetryOnFailedConnect(true) to
	// nats.Connect for the same behaviour.
	// Default: false, Connect fails when no server answers.
	RetryOnFailedConnect bool

	// MemoryStorage makes a Log keep its streams in the NATS servers'
	// memory instead of in files. Memory is faster, but a stream does not
	// survive a restart of its servers: the room log starts again, empty,
	// under a new epoch, and the members of every history room are closed
	// with 1012 and told on rejoining that they could not recover. With
	// file storage (the default) the streams, and the rooms' epochs,
	// survive restarts. The presence bucket (see the package
	// documentation, "Presence") is kept likewise, by a Broker as by a
	// Log. Hubs that share a prefix must agree on it.
	// Default: false, file storage.
	MemoryStorage bool

	// Replicas is how many servers of a JetStream cluster keep each stream
	// of a Log, 1 to 5 (see the package documentation, "Room log"), and
	// the presence bucket (see "Presence"). Hubs that share a prefix must
	// agree on it.
	// Default: 1.
	Replicas int

	// PresenceTTL bounds how long the members that a hub published for
	// its presence rooms stay visible to the other hubs once it stops
	// refreshing them (it crashed, or lost NATS): it is the presence
	// bucket's TTL, and a hub writes its entries again every PresenceTTL/3
	// (see the package documentation, "Presence"). At least
	// MinPresenceTTL (1s). Hubs that share a prefix must agree on it.
	// MemoryStorage also applies to the presence bucket.
	// Default: DefaultPresenceTTL (30s).
	PresenceTTL time.Duration

	// BurstBytes bounds the messages of one room on core NATS (a room
	// without history on a Broker or a Log, or with history on a Broker)
	// that this hub holds while the room's members catch up: the hub
	// delivers a room's messages at the pace its members read them, and
	// core NATS does not wait. Past it, NATS drops messages for this hub
	// (a slow consumer); the hub then closes the room's members with 1012
	// so that they learn they missed some, and a room with history starts
	// a new epoch of this hub's history, so that rejoining clients are
	// told they could not recover. A Log's history rooms need no bound:
	// their follow reads the room log at the members' pace. It is counted
	// in message payload bytes, per room.
	// Default: DefaultBurstBytes (8 MiB).
	BurstBytes int
}

// Broker is a wshub.Engine on core NATS, a wshub.PresenceEngine on a
// JetStream key-value bucket (see the package documentation, "Presence"),
// and a wshub.CommandEngine on core NATS ("Commands"). Its methods are
// safe for concurrent use.
type Broker struct {
	nc        *nats.Conn
	ownConn   bool // Close closes nc: Connect made it
	prefix    string
	timeout   time.Duration
	noConfirm bool
	burst     int          // Options.BurstBytes
	commit    *groupCommit // confirms publishes (not with NoConfirm) and commands

	pres *presence // the presence of the hub's rooms, shared through JetStream

	mu      sync.Mutex
	subs    map[string]*nats.Subscription
	hists   map[string]*localHistory // rooms with history on core NATS: followed, or read lately
	idle    list.List                // the rooms of hists not followed, oldest first
	follows map[string]*follow       // rooms that a Log follows in JetStream; nil for a Broker
	cmds    *commandSub              // HandleCommands' subscription; nil before it
	closed  bool
	done    chan struct{} // closed by Close
}

var _ wshub.PresenceEngine = (*Broker)(nil)

// idHeader is the NATS header that carries the id of a room message on
// core NATS, so that the hub that published it knows it when it comes
// back. A Log's history rooms carry it in JetStream's Nats-Msg-Id.
const idHeader = "Wshub-Id"

// The histories of rooms that this hub reads but does not follow (a
// join reads a room's history before the hub follows the room, and
// Room.History and Room.Position read rooms without local members) are
// kept for idleHistoryAge, at most maxIdleHistories of them, so that the
// epoch a join read is the one its room's history gets when followed.
const (
	idleHistoryAge   = time.Minute
	maxIdleHistories = 1024
)

// localHistory is this hub's history of a room with history on core
// NATS: an in-memory engine that numbers the room's messages in the order
// the hub receives them.
type localHistory struct {
	eng      wshub.Engine
	followed bool
	made     time.Time     // when made, for an idle one
	elem     *list.Element // in Broker.idle while not followed
}

// New returns a broker on nc, which stays the caller's: Close does not
// close it. opts may be nil for the defaults. nc should be made with
// nats.ReconnectBufSize(-1): otherwise nats.go queues the messages
// published while it reconnects, Publish cannot tell they may be lost, and
// a confirmation may time out for a message delivered later. nc must not
// be made with nats.NoEcho(): the hub delivers its own messages as NATS
// hands them back. New returns an error if nc is nil or has NoEcho, the
// prefix is not a valid subject, or Options.PresenceTTL or
// Options.Replicas is out of range.
func New(nc *nats.Conn, opts *Options) (*Broker, error) {
	if nc == nil {
		return nil, errors.New("natsbroker: nil connection")
	}
	if nc.Opts.NoEcho {
		return nil, errors.New("natsbroker: connection made with NoEcho: the hub needs its own messages back")
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !validPrefix(o.Prefix) {
		return nil, fmt.Errorf("natsbroker: prefix %q: %w", o.Prefix, nats.ErrBadSubject)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.BurstBytes <= 0 {
		o.BurstBytes = DefaultBurstBytes
	}
	b := &Broker{
		burst:     o.BurstBytes,
		nc:        nc,
		prefix:    o.Prefix + ".",
		timeout:   o.Timeout,
		noConfirm: o.NoConfirm,
		subs:      make(map[string]*nats.Subscription),
		hists:     make(map[string]*localHistory),
		done:      make(chan struct{}),
	}
	var err error
	if b.pres, err = newPresence(b, o); err != nil {
		return nil, err
	}
	b.commit = newGroupCommit(nc, o.Timeout)
	return b, nil
}

// validPrefix reports whether p is a subject without wildcards: dot
// separated, non-empty tokens without whitespace.
func validPrefix(p string) bool {
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return false
		}
	}
	return true
}

// Conn returns the broker's NATS connection.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// Subject returns the NATS subject of room: the prefix, a dot and the room
// name in unpadded base64url. Distinct names have distinct subjects.
func (b *Broker) Subject(room string) string {
	return b.prefix + base64.RawURLEncoding.EncodeToString([]byte(room))
}

// Publish writes msg on the subject of room, with id in the Wshub-Id
// header, and returns at once; the returned wait waits for the server's
// confirmation. p does not matter: on core NATS every room goes through
// its subject. Messages written one after another keep their order, and
// every hub that follows the room gets them, this one included.
//
// When the connection is not up, wait returns ErrNotConnected. Unless
// Options.NoConfirm is set, wait then waits until the server has the
// message: a few publishes that wait at the same time each have their
// confirmation round trip in flight at once, many share them (see the
// package documentation). It returns nil once the server confirmed the
// message, which is all "acknowledged" means; it returns ErrNotConnected
// if the connection broke or was replaced before the confirmation,
// ErrClosed if Close ran meanwhile, ctx's error when ctx is done first
// or, when ctx has no deadline, after Options.Timeout, and an error when
// a flush shared with other publishes got no answer within
// Options.Timeout. After an error the message may or may not have been
// delivered. Publish does not retain msg. wait must be called once.
func (b *Broker) Publish(ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) (wait func() error) {
	fail := func(err error) func() error { return func() error { return err } }
	if b.isClosed() {
		return fail(ErrClosed)
	}
	if !b.nc.IsConnected() {
		return fail(fmt.Errorf("%w (%v)", ErrNotConnected, b.nc.Status()))
	}
	m := b.message(room, id, msg)
	if b.noConfirm {
		if err := b.nc.PublishMsg(m); err != nil {
			return fail(b.connErr(err))
		}
		return func() error { return nil }
	}
	t, err := b.write(m)
	if err != nil {
		return fail(err)
	}
	return func() error { return b.commit.wait(ctx, t) }
}

// message returns the NATS message of msg, published with id to room.
func (b *Broker) message(room, id string, msg []byte) *nats.Msg {
	m := &nats.Msg{Subject: b.Subject(room), Data: msg}
	if id != "" {
		m.Header = nats.Header{idHeader: []string{id}}
	}
	return m
}

// write publishes m and returns the ticket to wait for its confirmation
// with.
func (b *Broker) write(m *nats.Msg) (ticket, error) {
	conn := connID(b.nc)
	if err := b.nc.PublishMsg(m); err != nil {
		return ticket{}, b.connErr(err)
	}
	return b.commit.wrote(conn), nil
}

// connErr wraps err in ErrNotConnected when the connection is down, which
// is what nats.go's reconnect-buffer and closed-connection errors mean.
func (b *Broker) connErr(err error) error {
	if b.nc.IsConnected() && !errors.Is(err, nats.ErrReconnectBufExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrNotConnected, err)
}

// Follow subscribes to the subject of room and passes every message
// published to it, by any hub, this one included, to deliver, one at a
// time on a goroutine of nats.go, in the order of each publisher, with
// the id it was published with.
//
// Core NATS keeps no log, so for a room with history (p.Messages > 0)
// this hub numbers the room's messages in the order it receives them: an
// in-memory history of the room (wshub.NewMemoryEngine) numbers them 1,
// 2, 3, …, keeps them for Read, and passes them to deliver with their
// seq, starting after after. The history is this hub's own: another hub
// numbers the same messages its way, and Unfollow ends it, so that a
// later Follow starts a new epoch (a client recovers only on the hub it
// left, while that hub kept the room).
//
// When connected, Follow returns once the server has the subscription,
// so every message published after that reaches deliver; it fails,
// following nothing, if the server does not answer within
// Options.Timeout. While nats.go reconnects, or has not connected yet
// (see Options.RetryOnFailedConnect), it returns nil at once and nats.go
// subscribes when the connection is up; messages published before that
// do not reach deliver. It returns ErrFollowed if room is already
// followed and ErrClosed after Close.
func (b *Broker) Follow(room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) error {
	if p.Messages <= 0 {
		dropped := 0
		return b.subscribe(room, nil, func(m *nats.Msg) {
			if droppedSince(m, &dropped) {
				deliver(wshub.Entry{}) // the members missed messages
			}
			if len(m.Data) > 0 { // an Entry without JSON would mean a loss
				deliver(wshub.Entry{ID: m.Header.Get(idHeader), JSON: m.Data})
			}
		})
	}
	b.mu.Lock()
	if err := b.followableLocked(room); err != nil {
		b.mu.Unlock()
		return err
	}
	h := b.historyLocked(room)
	if h.elem != nil {
		b.idle.Remove(h.elem)
		h.elem = nil
	}
	h.followed = true
	eng := h.eng
	b.mu.Unlock()

	if err := eng.Follow(room, p, after, deliver); err != nil {
		b.dropHistory(room, h)
		return err
	}
	dropped := 0
	err := b.subscribe(room, h, func(m *nats.Msg) {
		if droppedSince(m, &dropped) {
			if eng = b.restartHistory(room, h, p, deliver); eng == nil {
				return // unfollowed meanwhile
			}
		}
		// The memory engine numbers, keeps and passes on the message;
		// its wait returns at once.
		if len(m.Data) > 0 {
			_ = eng.Publish(context.Background(), room, p, m.Header.Get(idHeader), m.Data)()
		}
	})
	if err != nil {
		b.dropHistory(room, h)
	}
	return err
}

// droppedSince reports whether NATS dropped messages of m's subscription
// since *seen was counted (a burst past BurstBytes), and counts them.
func droppedSince(m *nats.Msg, seen *int) bool {
	n, _ := m.Sub.Dropped()
	if n <= *seen {
		return false
	}
	*seen = n
	return true
}

// followableLocked returns ErrClosed after Close, ErrFollowed if room is
// followed. b.mu is held.
func (b *Broker) followableLocked(room string) error {
	if b.closed {
		return ErrClosed
	}
	if b.subs[room] != nil || b.follows[room] != nil {
		return fmt.Errorf("%w: %q", ErrFollowed, room)
	}
	if h := b.hists[room]; h != nil && h.followed {
		return fmt.Errorf("%w: %q", ErrFollowed, room)
	}
	return nil
}

// subscribe subscribes cb to the subject of room, for a Follow; h is the
// room's history that Follow has taken, or nil.
func (b *Broker) subscribe(room string, h *localHistory, cb nats.MsgHandler) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if b.subs[room] != nil || b.follows[room] != nil || h == nil && b.hists[room] != nil && b.hists[room].followed {
		b.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrFollowed, room)
	}
	sub, err := b.nc.Subscribe(b.Subject(room), cb)
	if err != nil {
		b.mu.Unlock()
		return b.connErr(err)
	}
	if err := sub.SetPendingLimits(-1, b.burst); err != nil {
		b.mu.Unlock()
		unsubscribe(sub)
		return err
	}
	b.subs[room] = sub
	b.mu.Unlock()

	// While reconnecting, nats.go sends the subscription when it is back;
	// a flush would wait for that.
	if !b.nc.IsConnected() {
		return nil
	}
	err = b.nc.FlushTimeout(b.timeout)
	if err == nil || (!b.nc.IsConnected() && !b.nc.IsClosed()) {
		return nil
	}
	b.drop(room, sub)
	return b.connErr(fmt.Errorf("natsbroker: subscription not confirmed: %w", err))
}

// drop removes sub, the subscription of room, unless Close or Unfollow
// took it first.
func (b *Broker) drop(room string, sub *nats.Subscription) {
	b.mu.Lock()
	if b.subs[room] == sub {
		delete(b.subs, room)
	}
	b.mu.Unlock()
	unsubscribe(sub)
}

// historyLocked returns this hub's history of room, making an idle one
// if it has none, and forgets the idle histories that are too old or too
// many. b.mu is held.
func (b *Broker) historyLocked(room string) *localHistory {
	h := b.hists[room]
	if h == nil {
		h = &localHistory{eng: wshub.NewMemoryEngine(0), made: time.Now()}
		h.elem = b.idle.PushBack(room)
		b.hists[room] = h
	}
	for e := b.idle.Front(); e != nil && e.Value.(string) != room; e = b.idle.Front() {
		old := b.hists[e.Value.(string)]
		if b.idle.Len() <= maxIdleHistories && time.Since(old.made) < idleHistoryAge {
			break
		}
		b.idle.Remove(e)
		delete(b.hists, e.Value.(string))
		old.eng.Close()
	}
	return h
}

// dropHistory forgets h, the history of room, and closes it, unless
// Unfollow or Close did.
func (b *Broker) dropHistory(room string, h *localHistory) {
	b.mu.Lock()
	mine := b.hists[room] == h
	eng := h.eng
	if mine {
		delete(b.hists, room)
	}
	b.mu.Unlock()
	if mine {
		eng.Unfollow(room)
		eng.Close()
	}
}

// restartHistory starts h, the history of a followed room, anew after
// NATS dropped messages for this hub: the old one's deliveries end, the
// hub learns of the loss (it closes the members) and rejoining clients
// read a new epoch. It returns the new engine, or nil if the room was
// unfollowed meanwhile. It runs on the room's subscription, one at a
// time with its deliveries.
func (b *Broker) restartHistory(room string, h *localHistory, p wshub.HistoryPolicy, deliver func(wshub.Entry)) wshub.Engine {
	b.mu.Lock()
	old := h.eng
	b.mu.Unlock()
	old.Unfollow(room)
	old.Close() // waits for a delivery under way
	deliver(wshub.Entry{})
	eng := wshub.NewMemoryEngine(0)
	if err := eng.Follow(room, p, 0, deliver); err != nil {
		eng.Close()
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.hists[room] != h {
		eng.Unfollow(room)
		eng.Close()
		return nil
	}
	h.eng = eng
	return eng
}

// Unfollow stops the deliveries of room; a delivery in progress
// finishes. Unfollowing a room that is not followed does nothing and
// returns nil. Without a connection, nats.go drops the subscription and
// the server forgets it with the connection, so that is not an error. For
// a room with history on core NATS, it ends this hub's history of the
// room (see Follow).
//
// On a Log, Unfollow also stops the room's follow of the room log, and
// returns once its goroutine has ended: its deliver is not called
// afterwards.
func (b *Broker) Unfollow(room string) error {
	b.mu.Lock()
	sub, f, h := b.subs[room], b.follows[room], b.hists[room]
	delete(b.subs, room)
	delete(b.follows, room)
	var eng wshub.Engine
	if h != nil && h.followed {
		delete(b.hists, room)
		eng = h.eng
	}
	b.mu.Unlock()
	if f != nil {
		f.stop()
	}
	var err error
	if sub != nil {
		err = unsubscribe(sub)
	}
	if eng != nil {
		eng.Unfollow(room)
		eng.Close()
	}
	return err
}

func unsubscribe(sub *nats.Subscription) error {
	err := sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		return nil
	}
	return err
}

// Read returns this hub's history of room (see Follow): the messages it
// received and kept since it followed the room, with a seq above after,
// oldest first, the newest limit of them when there are more (all with a
// negative limit). A room that the hub does not follow has no messages
// and an epoch of its own, kept for a while, so that a join that reads
// the room before the hub follows it gets the epoch of what follows. A
// room without history has no history to read: it gets an empty page. It
// does not use the network, and returns ErrClosed after Close.
func (b *Broker) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return wshub.LogPage{}, ErrClosed
	}
	if p.Messages <= 0 {
		b.mu.Unlock()
		// What the default engine answers.
		eng := wshub.NewMemoryEngine(0)
		defer eng.Close()
		return eng.Read(ctx, room, p, after, limit)
	}
	eng := b.historyLocked(room).eng
	b.mu.Unlock()
	return eng.Read(ctx, room, p, after, limit)
}

// Reconnects returns how many times the Broker's NATS connection
// reconnected. Hub.Stats reports it as EngineReconnects.
func (b *Broker) Reconnects() uint64 { return connID(b.nc) }

// Close unfollows every room, fails the publishes still waiting for a
// confirmation with ErrClosed and, for a broker made by Connect, closes
// the connection. A connection given to New stays open, and a publish
// whose own flush is in flight on it returns when that flush ends: at the
// server's answer, or when the publish's context or Options.Timeout ends
// it. Publish's wait, Follow, Read and Command return ErrClosed
// afterwards. Close ends the subscription of HandleCommands, waiting for
// a handle under way. It does not block on the network beyond nats.go's
// own Close; it returns the unsubscribe errors joined. Calling it again
// does nothing and returns nil.
//
// Close also withdraws the members that the hub published for its
// presence rooms: it deletes its keys of the presence bucket, waiting at
// most 2 seconds (or Options.Timeout if shorter) for JetStream, and stops
// every WatchPresence, returning once their goroutines have ended; what
// it could not delete expires within Options.PresenceTTL. SetPresence and
// WatchPresence return ErrClosed afterwards.
//
// On a Log, Close also stops every follow of the room log and returns
// once their goroutines have ended; a publish to a history room still
// waiting for its acknowledgement returns an error wrapping
// ErrUnconfirmed and ErrClosed.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.done)
	subs, follows, cmds := b.subs, b.follows, b.cmds
	engs := make([]wshub.Engine, 0, len(b.hists))
	for _, h := range b.hists {
		engs = append(engs, h.eng)
	}
	b.subs, b.follows, b.hists = nil, nil, nil
	b.idle.Init()
	b.mu.Unlock()

	b.pres.close()

	b.commit.stop()
	for _, f := range follows {
		f.cancel()
	}
	for _, f := range follows {
		f.stop()
	}
	var errs []error
	if cmds != nil {
		if err := cmds.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, sub := range subs {
		if err := unsubscribe(sub); err != nil {
			errs = append(errs, err)
		}
	}
	for _, eng := range engs {
		eng.Close()
	}
	if b.ownConn {
		b.nc.Close()
	}
	return errors.Join(errs...)
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}
