package redisengine

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
	"github.com/wshub/wshub"
)

// Defaults used for zero Options fields.
const (
	DefaultPrefix      = "wshub"
	DefaultTimeout     = 5 * time.Second
	DefaultPresenceTTL = 30 * time.Second
	MinPresenceTTL     = time.Second
	DefaultBurstBytes  = 8 << 20
)

// Errors of the engine. Errors from rueidis are wrapped in them or
// returned wrapped with %w; test for either with errors.Is.
var (
	// ErrNotConnected is returned by Publish's wait when Redis could not
	// be reached (the engine could not connect, or the connection failed
	// before the message was written): the message was stored and
	// published nowhere. It is also returned by Command, Read and the
	// presence methods when Redis cannot be reached.
	ErrNotConnected = errors.New("redisengine: not connected to Redis")

	// ErrUnconfirmed is returned, wrapped, by Publish's wait (and by
	// Command) when the message was sent to Redis but no answer came
	// (the connection broke, or Options.Timeout passed). It may or may
	// not have been stored and published: Redis runs a publish as one
	// script, so if it ran, every hub that follows the room delivers the
	// message, and if it did not, none does.
	ErrUnconfirmed = errors.New("redisengine: publish not confirmed, the message may or may not be stored")

	// ErrClosed is returned by the methods of an Engine after Close.
	ErrClosed = errors.New("redisengine: engine closed")

	// ErrFollowed is returned by Follow for a room that is already
	// followed, and by WatchPresence for a room whose presence is already
	// watched.
	ErrFollowed = errors.New("redisengine: room already followed")
)

// Options configures an Engine. A nil *Options and every zero field mean
// the documented default.
type Options struct {
	// Prefix starts the name of every key and channel of the engine (see
	// the package documentation, "Keys"). Hubs that share rooms must use
	// the same prefix; hubs of different applications on one Redis use
	// different ones. Default: DefaultPrefix ("wshub").
	Prefix string

	// Timeout bounds the wait for Redis's answer to a publish when
	// Publish's context has no deadline, and each read, presence write
	// and subscription. Default: DefaultTimeout (5s).
	Timeout time.Duration

	// PresenceTTL bounds how long the members that a hub published for
	// its presence rooms stay visible to the other hubs once it stops
	// refreshing them (it crashed, or lost Redis); see the package
	// documentation, "Presence". At least MinPresenceTTL (1s). Hubs that
	// share a prefix must agree on it. Default: DefaultPresenceTTL (30s).
	PresenceTTL time.Duration

	// BurstBytes bounds the messages of one room without history that
	// this hub holds while the room's members catch up: the hub delivers
	// a room's messages at the pace its members read them, and Redis
	// pub/sub does not wait. Past it the engine drops messages for this
	// hub and passes the hub a loss, which closes the room's local
	// members with 1012 so that they learn they missed some. It is counted
	// in message payload bytes, per room. Rooms with history need no
	// bound: their follow reads the room's stream at the members' pace.
	// Default: DefaultBurstBytes (8 MiB).
	BurstBytes int

	// RetryOnFailedConnect makes Connect return an engine at once when
	// Redis cannot be reached, instead of an error, so that a hub can
	// start while Redis is down. The engine then keeps trying in the
	// background; until it connects, its rooms behave as in an outage
	// (see the package documentation). Default: false, Connect fails
	// when Redis does not answer.
	RetryOnFailedConnect bool
}

// Engine is a wshub.Engine, wshub.PresenceEngine and
// wshub.CommandEngine on Redis: rooms without history and the hubs'
// commands on pub/sub, rooms with history on one Redis Stream each,
// presence in a hash per room. See the package documentation. Its
// methods are safe for concurrent use.
type Engine struct {
	prefix    string
	timeout   time.Duration
	burst     int
	ownConn   bool // Close closes the client: Connect made it
	hubID     string
	sharded   atomic.Bool // the server is a cluster: SPUBLISH and SSUBSCRIBE
	client    atomic.Pointer[rueidis.Client]
	ready     chan struct{} // closed once client is set
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the engine's goroutines
	reconns   atomic.Uint64
	closeOnce sync.Once

	pubs publisher
	pres *presence

	mu      sync.Mutex
	follows map[string]*follow
	cmds    *commands // of HandleCommands; nil before it
	closed  bool
}

var _ wshub.PresenceEngine = (*Engine)(nil)

// Connect connects to the Redis server at url ("redis://host:port/db",
// "rediss://" for TLS, or "host:port"), a Redis Cluster if the server is
// one, and returns an engine on that connection; Close closes it. opts
// may be nil for the defaults. Without Options.RetryOnFailedConnect,
// Connect fails when Redis does not answer within Options.Timeout.
func Connect(url string, opts *Options) (*Engine, error) {
	o, err := options(opts)
	if err != nil {
		return nil, err
	}
	copt, err := clientOption(url, o.Timeout)
	if err != nil {
		return nil, err
	}
	e := newEngine(o, true)
	c, err := rueidis.NewClient(copt)
	switch {
	case err == nil:
		e.setClient(c)
	case !o.RetryOnFailedConnect:
		e.cancel()
		e.pubs.close()
		return nil, fmt.Errorf("%w: %s: %w", ErrNotConnected, redact(url), err)
	default:
		e.wg.Go(func() { e.dialLoop(copt) })
	}
	return e, nil
}

// New returns an engine on c, which stays the caller's: Close does not
// close it. opts may be nil for the defaults; New ignores
// Options.RetryOnFailedConnect. c should not use client-side caching,
// and must not serve another Engine: the subscriptions of both would
// share its connections, and one's Unfollow would end the other's.
func New(c rueidis.Client, opts *Options) (*Engine, error) {
	if c == nil {
		return nil, errors.New("redisengine: nil client")
	}
	o, err := options(opts)
	if err != nil {
		return nil, err
	}
	e := newEngine(o, false)
	e.setClient(c)
	return e, nil
}

func options(opts *Options) (Options, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if strings.ContainsAny(o.Prefix, "{}") {
		return o, fmt.Errorf("redisengine: prefix %q has braces, which Redis Cluster reads as a hash tag", o.Prefix)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.PresenceTTL == 0 {
		o.PresenceTTL = DefaultPresenceTTL
	}
	if o.PresenceTTL < MinPresenceTTL {
		return o, fmt.Errorf("redisengine: PresenceTTL %v below %v", o.PresenceTTL, MinPresenceTTL)
	}
	if o.BurstBytes <= 0 {
		o.BurstBytes = DefaultBurstBytes
	}
	return o, nil
}

// clientOption is rueidis's configuration for url: no client-side cache,
// dials and writes bounded by timeout.
func clientOption(url string, timeout time.Duration) (rueidis.ClientOption, error) {
	if !strings.Contains(url, "://") {
		url = "redis://" + url
	}
	copt, err := rueidis.ParseURL(url)
	if err != nil {
		return copt, fmt.Errorf("redisengine: %s: %w", redact(url), err)
	}
	copt.DisableCache = true
	copt.Dialer.Timeout = timeout
	copt.ConnWriteTimeout = timeout
	return copt, nil
}

// redact hides the password of a URL for error messages.
func redact(url string) string {
	if i, j := strings.Index(url, "://"), strings.LastIndex(url, "@"); i >= 0 && j > i {
		return url[:i+3] + "…@" + url[j+1:]
	}
	return url
}

func newEngine(o Options, own bool) *Engine {
	var id [8]byte
	rand.Read(id[:])
	e := &Engine{
		prefix:  o.Prefix,
		timeout: o.Timeout,
		burst:   o.BurstBytes,
		ownConn: own,
		hubID:   hex.EncodeToString(id[:]),
		ready:   make(chan struct{}),
		follows: make(map[string]*follow),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.pubs.init(e)
	e.pres = newPresence(e, o.PresenceTTL)
	return e
}

// setClient makes c the engine's client and starts what needs one.
func (e *Engine) setClient(c rueidis.Client) {
	e.sharded.Store(c.Mode() == rueidis.ClientModeCluster)
	e.client.Store(&c)
	close(e.ready)
	// The control channel's subscription notices reconnections.
	e.wg.Go(func() {
		keep(e.ctx, e, e.key("", "ctl"), false, func(string) {}, func(first bool) {
			if !first {
				e.reconns.Add(1)
				e.pres.kick()
			}
		}, nil)
	})
	e.pres.start()
}

// dialLoop makes the client once Redis answers, for a Connect with
// RetryOnFailedConnect.
func (e *Engine) dialLoop(copt rueidis.ClientOption) {
	wait := retryMin
	for {
		c, err := rueidis.NewClient(copt)
		if err == nil {
			// Under e.mu, so that Close either comes first, and the
			// client is closed here, or finds what setClient starts.
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.closed {
				c.Close()
				return
			}
			e.setClient(c)
			return
		}
		if !sleep(e.ctx, jitter(&wait)) {
			return
		}
	}
}

// conn returns the client, or nil before the first connection.
func (e *Engine) conn() rueidis.Client {
	if p := e.client.Load(); p != nil {
		return *p
	}
	return nil
}

// waitConn returns the client once there is one, or nil once ctx ends.
func (e *Engine) waitConn(ctx context.Context) rueidis.Client {
	select {
	case <-e.ready:
		return e.conn()
	case <-ctx.Done():
		return nil
	}
}

// Reconnects returns how many times the engine's connection to Redis was
// made again after breaking; a hub reports it in
// wshub.Stats.EngineReconnects.
func (e *Engine) Reconnects() uint64 { return e.reconns.Load() }

// HubID returns the engine's random ID, which names its presence entries
// (see the package documentation, "Presence").
func (e *Engine) HubID() string { return e.hubID }

// Close stops the engine's follows, presence and commands (waiting for
// a handle of HandleCommands under way), deleting this hub's presence
// entries (waiting at most 2 seconds), fails the publishes and commands
// that wait with ErrClosed, and closes the connection if Connect made
// it. It waits for Redis at most about Options.Timeout plus 2 seconds. The hub
// calls it when it shuts down; later calls do nothing and return nil.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		follows, cmds := e.follows, e.cmds
		e.follows = map[string]*follow{}
		e.mu.Unlock()
		tasks := make([]*task, 0, len(follows)+1)
		for _, f := range follows {
			tasks = append(tasks, &f.task)
		}
		if cmds != nil {
			tasks = append(tasks, &cmds.task)
		}
		for _, t := range tasks {
			t.cancel() // all at once: each may wait for Redis to unsubscribe
		}
		for _, t := range tasks {
			t.wg.Wait()
		}
		e.pres.close()
		e.cancel()
		e.pubs.close()
		e.wg.Wait()
		if c := e.conn(); c != nil && e.ownConn {
			c.Close()
		}
	})
	return nil
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// key returns the name of a key or channel of room: the prefix, the room
// name in unpadded base64url within braces (Redis Cluster's hash tag, so
// that the keys and channels of a room are in one slot), and kind.
func (e *Engine) key(room, kind string) string {
	return e.prefix + ":{" + base64.RawURLEncoding.EncodeToString([]byte(room)) + "}:" + kind
}

// Key returns the name of room's key or channel of the given kind: "m"
// (the pub/sub channel of a room without history), "log" (the stream of
// a room with history), "meta" (its epoch and last seq), "n" (the channel
// that announces its appends), "pres" and "presx" (its presence entries
// and their expiry), "p" (the channel that announces their changes). For
// monitoring and for ACLs; e.g. "wshub:{bG9iYnk}:log" for room "lobby".
func (e *Engine) Key(room, kind string) string { return e.key(room, kind) }

// publishCmd returns the command that publishes on a channel: SPUBLISH on
// a cluster, where a room's channel lives on the node of its slot, and
// PUBLISH otherwise.
func (e *Engine) publishCmd() string {
	if e.sharded.Load() {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// dedupWindow is how long Redis remembers the id of an append, so that
// one that rueidis sends again is stored once: past the engine's own
// bound on a publish (Options.Timeout), with room to spare.
func (e *Engine) dedupWindow() time.Duration { return 2*e.timeout + time.Second }

// newEpoch returns a new epoch name: random, with the time, so that two
// histories of a room never share one (when two hubs start one at once,
// the first script wins in Redis). Every append carries one, in case it
// starts the history, so it is cheap: math/rand, not crypto/rand.
func newEpoch() string {
	return strconv.FormatUint(mrand.Uint64()>>16, 36) + strconv.FormatInt(time.Now().UnixMilli(), 36)
}

// Waits between the attempts to reach Redis again.
const (
	retryMin = 100 * time.Millisecond
	retryMax = 2 * time.Second
)

// jitter returns *wait plus up to half of it at random, and doubles *wait
// for the next time, up to retryMax: hubs that lost Redis together come
// back within a fraction of a second of it, not all at the same instant.
func jitter(wait *time.Duration) time.Duration {
	d := *wait + mrand.N(*wait/2+1)
	*wait = min(2**wait, retryMax)
	return d
}

// sleep waits for d, or returns false once ctx ends.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// classify wraps the error of a command that changes something: a
// definite failure (Redis could not be reached, or refused the command)
// or one that may have taken effect (ErrUnconfirmed).
func classify(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case isRedisErr(err):
		return fmt.Errorf("redisengine: %s: %w", what, err)
	case dialFailed(err) || errors.Is(err, errNoConn):
		return fmt.Errorf("%w: %s: %w", ErrNotConnected, what, err)
	case errors.Is(err, rueidis.ErrClosing):
		return fmt.Errorf("%w: %s", ErrClosed, what)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnconfirmed, what, err)
}

func isRedisErr(err error) bool {
	_, ok := rueidis.IsRedisErr(err)
	return ok
}

// dialFailed reports whether err says that no connection could be made,
// so that nothing was sent.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// brokenConn reports whether err says that the connection broke (or
// was found broken) around a command: it may or may not have been sent.
func brokenConn(err error) bool {
	return !isRedisErr(err) && !dialFailed(err) && !errors.Is(err, errNoConn) && !errors.Is(err, rueidis.ErrClosing) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// readErr wraps the error of a command that changes nothing.
func readErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := rueidis.IsRedisErr(err); ok {
		return fmt.Errorf("redisengine: %s: %w", what, err)
	}
	return fmt.Errorf("%w: %s: %w", ErrNotConnected, what, err)
}
