package natsbroker

import (
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
	DefaultPrefix  = "wshub.room"
	DefaultTimeout = 5 * time.Second
)

// Errors of the broker. Errors from nats.go are wrapped in them or returned
// wrapped with %w; test for either with errors.Is.
var (
	// ErrNotConnected is returned by Publish while the NATS connection is
	// not up (connecting, reconnecting, draining or closed), and when the
	// connection broke, or nats.go replaced it, before the server
	// confirmed a message.
	ErrNotConnected = errors.New("natsbroker: not connected to NATS")

	// ErrClosed is returned by Publish and Subscribe after Close.
	ErrClosed = errors.New("natsbroker: broker closed")

	// ErrSubscribed is returned by Subscribe for a room that is already
	// subscribed, and on a Log by Subscribe and Follow for a room that is
	// already subscribed or followed.
	ErrSubscribed = errors.New("natsbroker: room already subscribed")

	// ErrUnconfirmed is returned, wrapped, by Log.Append when a message
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
	// a subscription in Subscribe. It also bounds each flush that the
	// broker runs for publishes that share one, SetPresence, and the
	// reading of a room's current presence entries by WatchPresence.
	// Default: DefaultTimeout (5s).
	Timeout time.Duration

	// NoConfirm makes Publish return as soon as the message is in nats.go's
	// buffer for a connected connection, without waiting for the server to
	// confirm it. Publishing is then faster, but a message written just
	// before the connection breaks is lost although Publish returned nil.
	// Default: false, Publish waits for the confirmation.
	NoConfirm bool

	// RetryOnFailedConnect makes Connect return a broker at once when no
	// server answers, instead of an error, so that a hub can start while
	// NATS is unreachable. nats.go then keeps trying in the background, as
	// it does after losing a connection; until it connects, Publish
	// returns ErrNotConnected and Subscribe registers the subscription,
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
}

// Broker is a wshub.Broker on a NATS connection, and a
// wshub.PresenceBroker on a JetStream key-value bucket (see the package
// documentation, "Presence"). Its methods are safe for concurrent use.
type Broker struct {
	nc        *nats.Conn
	ownConn   bool // Close closes nc: Connect made it
	prefix    string
	timeout   time.Duration
	noConfirm bool
	commit    *groupCommit // confirms publishes; nil with NoConfirm

	pres *presence // the presence of the hub's rooms, shared through JetStream

	mu      sync.Mutex
	subs    map[string]*nats.Subscription
	follows map[string]*follow // rooms that a Log follows; nil for a Broker
	closed  bool
	done    chan struct{} // closed by Close
}

var _ wshub.AsyncBroker = (*Broker)(nil)

// New returns a broker on nc, which stays the caller's: Close does not
// close it. opts may be nil for the defaults. nc should be made with
// nats.ReconnectBufSize(-1): otherwise nats.go queues the messages
// published while it reconnects, Publish cannot tell they may be lost, and
// a confirmation may time out for a message delivered later. New returns
// an error if nc is nil, the prefix is not a valid subject, or
// Options.PresenceTTL or Options.Replicas is out of range.
func New(nc *nats.Conn, opts *Options) (*Broker, error) {
	if nc == nil {
		return nil, errors.New("natsbroker: nil connection")
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
	b := &Broker{
		nc:        nc,
		prefix:    o.Prefix + ".",
		timeout:   o.Timeout,
		noConfirm: o.NoConfirm,
		subs:      make(map[string]*nats.Subscription),
		done:      make(chan struct{}),
	}
	var err error
	if b.pres, err = newPresence(b, o); err != nil {
		return nil, err
	}
	if !o.NoConfirm {
		b.commit = newGroupCommit(nc, o.Timeout)
	}
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

// Publish sends msg to the subject of room. It returns ErrNotConnected at
// once when the connection is not up. Unless Options.NoConfirm is set, it
// then waits until the server has the message: a few publishes that wait
// at the same time each have their confirmation round trip in flight at
// once, many share them (see the package documentation), and one
// publisher's messages keep their order. It returns nil once the server
// confirmed the message, which is all "acknowledged" means; it returns
// ErrNotConnected if the connection broke or was replaced before the
// confirmation, ErrClosed if Close ran meanwhile, ctx's error when ctx is
// done first or, when ctx has no deadline, after Options.Timeout, and an
// error when a flush shared with other publishes got no answer within
// Options.Timeout. After an error the message may or may not have been
// delivered. Publish does not retain msg.
func (b *Broker) Publish(ctx context.Context, room string, msg []byte) error {
	return b.PublishAsync(ctx, room, msg)()
}

// PublishAsync is Publish in two steps, for the hub to pipeline a client's
// publishes (wshub.AsyncBroker): it writes msg and returns at once, and
// the returned wait waits for the confirmation and returns what Publish
// would. Messages written one after another keep their order. wait must
// be called once.
func (b *Broker) PublishAsync(ctx context.Context, room string, msg []byte) (wait func() error) {
	fail := func(err error) func() error { return func() error { return err } }
	if b.isClosed() {
		return fail(ErrClosed)
	}
	if !b.nc.IsConnected() {
		return fail(fmt.Errorf("%w (%v)", ErrNotConnected, b.nc.Status()))
	}
	if b.noConfirm {
		if err := b.nc.Publish(b.Subject(room), msg); err != nil {
			return fail(b.connErr(err))
		}
		return func() error { return nil }
	}
	t, err := b.write(room, msg)
	if err != nil {
		return fail(err)
	}
	return func() error { return b.commit.wait(ctx, t) }
}

// write publishes msg to the subject of room and returns the ticket to
// wait for its confirmation with.
func (b *Broker) write(room string, msg []byte) (ticket, error) {
	conn := connID(b.nc)
	if err := b.nc.Publish(b.Subject(room), msg); err != nil {
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

// Subscribe passes every message published to room to deliver, one at a
// time on a goroutine of nats.go, in the order of each publisher. When
// connected, it returns once the server has the subscription, so every
// message published after that reaches deliver; it fails, subscribing
// nothing, if the server does not answer within Options.Timeout. While
// nats.go reconnects, or has not connected yet (see
// Options.RetryOnFailedConnect), it returns nil at once and nats.go
// subscribes when the connection is up; messages published before that
// do not reach deliver. It returns ErrSubscribed if room is already
// subscribed and ErrClosed after Close.
func (b *Broker) Subscribe(room string, deliver func(msg []byte)) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	if b.subs[room] != nil || b.follows[room] != nil {
		b.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrSubscribed, room)
	}
	sub, err := b.nc.Subscribe(b.Subject(room), func(m *nats.Msg) { deliver(m.Data) })
	if err != nil {
		b.mu.Unlock()
		return b.connErr(err)
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

// drop removes sub, the subscription of room, unless Close or Unsubscribe
// took it first.
func (b *Broker) drop(room string, sub *nats.Subscription) {
	b.mu.Lock()
	if b.subs[room] == sub {
		delete(b.subs, room)
	}
	b.mu.Unlock()
	unsubscribe(sub)
}

// Unsubscribe stops the deliveries of room; a delivery in progress
// finishes. Unsubscribing a room that is not subscribed does nothing and
// returns nil. Without a connection, nats.go drops the subscription and
// the server forgets it with the connection, so that is not an error.
//
// On a Log, Unsubscribe also stops the room's Follow, whichever of the two
// the room has, and returns once its goroutine has ended: its deliver is
// not called afterwards.
func (b *Broker) Unsubscribe(room string) error {
	b.mu.Lock()
	sub, f := b.subs[room], b.follows[room]
	delete(b.subs, room)
	delete(b.follows, room)
	b.mu.Unlock()
	if f != nil {
		f.stop()
	}
	if sub == nil {
		return nil
	}
	return unsubscribe(sub)
}

func unsubscribe(sub *nats.Subscription) error {
	err := sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		return nil
	}
	return err
}

// Close unsubscribes every room, fails the publishes still waiting for a
// confirmation with ErrClosed and, for a broker made by Connect, closes
// the connection. A connection given to New stays open, and a publish
// whose own flush is in flight on it returns when that flush ends: at the
// server's answer, or when the publish's context or Options.Timeout ends
// it. Publish and Subscribe return ErrClosed afterwards. Close does not
// block on the network beyond nats.go's own Close; it returns the
// unsubscribe errors joined. Calling it again does nothing and returns
// nil.
//
// Close also withdraws the members that the hub published for its
// presence rooms: it deletes its keys of the presence bucket, waiting at
// most 2 seconds (or Options.Timeout if shorter) for JetStream, and stops
// every WatchPresence, returning once their goroutines have ended; what
// it could not delete expires within Options.PresenceTTL. SetPresence and
// WatchPresence return ErrClosed afterwards.
//
// On a Log, Close also stops every Follow and returns once their
// goroutines have ended; an Append still waiting for its acknowledgement
// returns an error wrapping ErrUnconfirmed and ErrClosed, and Append,
// Read and Follow return ErrClosed afterwards.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.done)
	subs, follows := b.subs, b.follows
	b.subs, b.follows = nil, nil
	b.mu.Unlock()

	b.pres.close()

	if b.commit != nil {
		b.commit.stop()
	}
	for _, f := range follows {
		f.cancel()
	}
	for _, f := range follows {
		f.stop()
	}
	var errs []error
	for _, sub := range subs {
		if err := unsubscribe(sub); err != nil {
			errs = append(errs, err)
		}
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
