package wshub

import (
	"log/slog"
	"math"
	"net/http"
	"time"
)

// Defaults of Options, and limits of the protocol that are not options;
// each is documented where it applies.
const (
	defaultReadLimit      = 32 << 10 // bytes
	defaultSendQueue      = 256      // messages
	defaultSendQueueBytes = 1 << 20  // bytes
	defaultWriteTimeout   = 10 * time.Second
	defaultPingInterval   = 30 * time.Second
	defaultMaxRooms       = 128 // rooms per client

	maxRoomNameLen     = 128 // bytes
	maxInvalidMessages = 5   // in a row, before the client is closed

	// maxBatchBytes bounds a batch frame so that a client with the usual
	// 32 KiB read limit can read it. A single bigger message is sent alone.
	maxBatchBytes = 32 << 10
)

// Options configures a Hub. A nil *Options and every zero field mean the
// documented default. The hub reads Options only in New.
type Options struct {
	// Codecs lists the codecs a client may choose with the
	// Sec-WebSocket-Protocol header, by Codec.Name. The first one is used
	// when the client offers none of them.
	// Default: JSONCodec, JSONBatchCodec.
	Codecs []Codec

	// OriginPatterns lists host patterns of cross-origin pages allowed to
	// connect, as in coder/websocket's AcceptOptions.OriginPatterns.
	// Same-origin requests and requests without an Origin header are
	// always allowed. Default: same-origin only; a refused Origin gets 403.
	OriginPatterns []string

	// ReadLimit is the largest inbound message in bytes. A bigger one
	// closes the client with status 1009. Default: 32 KiB.
	ReadLimit int64

	// SendQueue is how many outbound messages may wait for one client, and
	// SendQueueBytes how many bytes (a single bigger message is let into an
	// empty queue). A message that would exceed either closes the client
	// with 1008 and "send queue full" (ErrSlowClient), and its queued
	// messages count in Stats.Dropped. Server-side senders never wait; a
	// client's own publishes and requests are paced so that they do not
	// fill others' queues (see the package documentation).
	// Defaults: 256 messages and 1 MiB.
	SendQueue      int
	SendQueueBytes int

	// WriteTimeout bounds how long a client may hold things up: a client
	// whose socket takes no bytes for this long (up to half as long
	// again), or whose congested queue has kept another client's publish
	// waiting this long, is closed with "write timeout" (ErrSlowClient,
	// status 1008 when a close frame can still be written). It also bounds
	// the wait for an Engine that has no deadline of its own. Default: 10s.
	WriteTimeout time.Duration

	// MaxRooms caps the rooms one client may be in; a join past it fails
	// with "too many rooms" (ErrDenied). Default: 128; negative means no
	// limit.
	MaxRooms int

	// RateLimit caps the messages per second the hub reads from one
	// client, with bursts of up to RateBurst (default: RateLimit rounded
	// up, at least 1). A message past the limit is not handled: it is
	// answered with an error frame ("rate limit exceeded", ErrDenied), and
	// 5 of them in a row close the client with 1008. Default: 0, no limit.
	RateLimit float64
	RateBurst int

	// PingInterval is how often the hub pings each client. A client that
	// has not answered a ping by the next one is closed with
	// ErrPongTimeout. Pongs are read between messages, so a Handler that
	// blocks longer than this times its client out too, and WriteTimeout,
	// which bounds how long flow control pauses a client's reads, must
	// stay below it. Default: 30s; negative disables pings.
	PingInterval time.Duration

	// MaxClients caps connected clients; past it, upgrades get 503 Service
	// Unavailable. Default: 0, no limit.
	MaxClients int

	// Authenticate runs before the upgrade with the HTTP request. A non-nil
	// error refuses the connection: an error from Reject carries its status
	// and body; any other error gets 401 Unauthorized with the error's text
	// as the body. The returned Identity names the client and sets its
	// initial values. Default: nil, everyone is accepted with a generated
	// ID (a "?name=" in the URL means nothing unless Authenticate reads it).
	Authenticate func(r *http.Request) (Identity, error)

	// OnConnect runs once a client is connected, before its first message is
	// read, on the client's read goroutine. It may call any Client or Hub
	// method, for example c.Join to put every client in a room.
	OnConnect func(c *Client)

	// AuthorizeJoin decides a join requested by the client. A nil error
	// allows it. Default: nil, every client-requested join is refused with
	// "join denied" (ErrDenied); Client.Join, the server's, is not affected.
	// To allow every valid room name:
	//
	//	AuthorizeJoin: func(*wshub.Client, string) error { return nil },
	AuthorizeJoin func(c *Client, room string) error

	// AuthorizePublish runs for every publish from a client, after the
	// membership check and before the message goes out. It may rewrite
	// m.Data (for example to stamp the sender's name). A non-nil error
	// refuses the publish with an error frame ("publish denied", ErrDenied).
	// Default: nil, members may publish.
	AuthorizePublish func(c *Client, m *Message) error

	// OnDisconnect runs once per client after it left all rooms and its
	// connection is closed, with the reason: an error of this package
	// (ErrSlowClient, ErrPongTimeout, ErrHubClosed, ErrClientClosed,
	// ErrInvalid, ErrDenied for rate limits, ErrEngine when the room's
	// history lost messages), the peer's websocket.CloseError, or the
	// connection's error. It may run after Shutdown or Close returned.
	OnDisconnect func(c *Client, reason error)

	// Rooms gives the options of a room: its history policy and whether it
	// has presence (see the package documentation). The hub calls it with
	// a room's name, never under a lock, when a client joins it (before it
	// exists on this hub) and on Room.Publish, Room.History and
	// Room.Position; it must be fast and safe for concurrent use, and may
	// call the Hub. A room keeps the options it was created with while it
	// has members. Default: nil, no room keeps history or has presence.
	Rooms func(room string) RoomOptions

	// OnPresence runs after each change of a presence room's members (on
	// all hubs, with a PresenceEngine, while this hub has members in the
	// room), with the IDs that joined and left, at most once per 100 ms
	// per room and never while the hub holds a lock. Default: nil.
	OnPresence func(room string, joins, leaves []Presence)

	// Engine orders and carries room messages and keeps their history.
	// Default: NewMemoryEngine(0), rooms local to this hub with histories
	// in memory. The natsbroker module's engines let rooms span processes.
	Engine Engine

	// Logger receives connection-level events at debug level and
	// kicked clients at warn level. Default: nil, discard.
	Logger *slog.Logger
}

// RoomOptions are the options of one room, given by Options.Rooms.
type RoomOptions struct {
	// History says how many of the room's messages to keep; zero keeps
	// none, and the room's messages carry no seq.
	History HistoryPolicy

	// Presence makes the room tell its members who is in it.
	Presence bool
}

// Identity is what Options.Authenticate learns about a connecting client.
type Identity struct {
	// ID names the client in the "from" field of its messages. Empty means
	// a generated random ID, unique among clients. IDs set here need not be
	// unique: one user may hold several connections.
	ID string

	// Values are the client's initial values, read with Client.Value.
	Values map[string]any

	// Info is what the client shows of itself to the members of the
	// presence rooms it joins (a display name, an avatar URL), sent as its
	// JSON encoding, at most 1 KiB. Only the server sets it; nil sends
	// none.
	Info any
}

// Reject returns an error that, returned from Options.Authenticate, refuses
// the upgrade with the given HTTP status and reason as the response body.
// It wraps ErrDenied.
func Reject(status int, reason string) error {
	return &rejectError{status: status, reason: reason}
}

type rejectError struct {
	status int
	reason string
}

func (e *rejectError) Error() string { return e.reason }
func (e *rejectError) Unwrap() error { return errRejected }

// options is Options with the defaults applied.
type options struct {
	Options
	codecNames []string
}

func (o *Options) withDefaults() options {
	var opts options
	if o != nil {
		opts.Options = *o
	}
	if len(opts.Codecs) == 0 {
		opts.Codecs = []Codec{JSONCodec{}, JSONBatchCodec{}}
	}
	opts.Codecs = append([]Codec(nil), opts.Codecs...)
	for _, c := range opts.Codecs {
		opts.codecNames = append(opts.codecNames, c.Name())
	}
	setDefault(&opts.ReadLimit, defaultReadLimit)
	setDefault(&opts.SendQueue, defaultSendQueue)
	setDefault(&opts.SendQueueBytes, defaultSendQueueBytes)
	setDefault(&opts.WriteTimeout, defaultWriteTimeout)
	if opts.MaxRooms == 0 {
		opts.MaxRooms = defaultMaxRooms
	}
	if opts.RateLimit > 0 && opts.RateBurst <= 0 {
		opts.RateBurst = max(1, int(math.Ceil(opts.RateLimit)))
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = defaultPingInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Engine == nil {
		opts.Engine = NewMemoryEngine(0)
	}
	return opts
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
