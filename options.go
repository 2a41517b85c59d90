package wshub

import (
	"log/slog"
	"math"
	"net/http"
	"time"
)

// Defaults used for zero Options fields.
const (
	DefaultReadLimit      = 32 << 10 // bytes
	DefaultSendQueue      = 256      // messages
	DefaultSendQueueBytes = 1 << 20  // bytes
	DefaultWriteTimeout   = 10 * time.Second
	DefaultPingInterval   = 30 * time.Second
	DefaultMaxRooms       = 128 // rooms per client
)

// Limits of the protocol that are not options.
const (
	// MaxRoomNameLen is the longest room name, in bytes, the hub accepts.
	MaxRoomNameLen = 128

	// MaxInvalidMessages is how many undecodable or invalid messages in a
	// row close a client with status 1007, and how many rate-limited ones
	// close it with 1008; each is answered with an error frame first.
	MaxInvalidMessages = 5

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
	// connect, as in coder/websocket's AcceptOptions.OriginPatterns (matched
	// with path.Match against the Origin host, or "scheme://host" when the
	// pattern has a scheme). Same-origin requests and requests without an
	// Origin header are always allowed. Default: same-origin only; a refused
	// Origin gets 403 Forbidden.
	OriginPatterns []string

	// ReadLimit is the largest inbound message in bytes. A bigger one
	// closes the client with status 1009. Default: DefaultReadLimit (32 KiB).
	ReadLimit int64

	// SendQueue is how many outbound messages may wait for one client, and
	// SendQueueBytes how many bytes (a single bigger message is let into an
	// empty queue). When a message would exceed either, the client is
	// closed with status 1008 ("send queue full") and ErrSendQueueFull, and
	// its queued messages are counted in Stats.Dropped. Server-side senders
	// never wait; a client's own publishes and requests are paced so that
	// they do not fill others' queues (see the package documentation).
	// Defaults: DefaultSendQueue (256) and DefaultSendQueueBytes (1 MiB).
	SendQueue      int
	SendQueueBytes int

	// WriteTimeout bounds how long a client may hold things up: a client
	// whose socket takes no bytes for this long (up to half as long again),
	// or whose congested queue has kept another client's publish waiting
	// this long, is closed with
	// ErrWriteTimeout (status 1008 when a close frame can still be written)
	// and counted in Stats.Kicked. Default: DefaultWriteTimeout (10s).
	WriteTimeout time.Duration

	// MaxRooms caps the rooms one client may be in; a join past it fails
	// with ErrTooManyRooms. Default: DefaultMaxRooms (128); negative means
	// no limit.
	MaxRooms int

	// RateLimit caps the messages per second the hub reads from one client,
	// with bursts of up to RateBurst (default: RateLimit rounded up, at
	// least 1). A message past the limit is not handled: it is answered
	// with an error frame wrapping ErrRateLimited, and MaxInvalidMessages of
	// them in a row close the client with 1008. Default: 0, no limit, since
	// what a legitimate client sends depends on the application.
	RateLimit float64
	RateBurst int

	// PingInterval is how often the hub pings each client. A client that has
	// not answered a ping by the next one is closed with ErrPongTimeout.
	// Pongs are read between messages, so a Handler that blocks longer than
	// this also times its client out, and so must WriteTimeout, which bounds
	// how long flow control pauses a client's reads, stay below it. Default: DefaultPingInterval (30s);
	// negative disables pings.
	PingInterval time.Duration

	// MaxClients caps connected clients; past it, upgrades get 503 Service
	// Unavailable. Default: 0, no limit.
	MaxClients int

	// Authenticate runs before the upgrade with the HTTP request. A non-nil
	// error refuses the connection: an error from Reject carries its status
	// and body; any other error gets 401 Unauthorized with the error's text
	// as the body. The returned Identity names the client and sets its
	// initial values. Default: nil, everyone is accepted with a generated ID.
	Authenticate func(r *http.Request) (Identity, error)

	// OnConnect runs once a client is connected, before its first message is
	// read, on the client's read goroutine. It may call any Client or Hub
	// method, for example c.Join to put every client in a room.
	OnConnect func(c *Client)

	// AuthorizeJoin decides a join requested by the client. A nil error
	// allows it. Default: nil, every client-requested join is refused with
	// ErrJoinDenied (Client.Join called by the server is not affected).
	// To allow every valid room name:
	//
	//	AuthorizeJoin: func(*wshub.Client, string) error { return nil },
	AuthorizeJoin func(c *Client, room string) error

	// AuthorizePublish runs for every publish from a client, after the
	// membership check and before the broadcast. It may rewrite m.Data (for
	// example to stamp the sender's name). A non-nil error refuses the
	// publish with an error frame. Default: nil, members may publish.
	AuthorizePublish func(c *Client, m *Message) error

	// OnDisconnect runs once per client after it left all rooms and its
	// connection is closed, with the reason: one of this package's errors
	// (ErrSendQueueFull, ErrPongTimeout, ErrHubClosed, ErrClientClosed,
	// ErrInvalidMessage), the peer's websocket.CloseError, or the
	// connection's error; websocket.CloseStatus reports a close status.
	// It may run after Shutdown or Close returned (see Shutdown).
	OnDisconnect func(c *Client, reason error)

	// History gives the history policy of a room: how many of its recent
	// messages the hub keeps and for how long, so that clients can ask for
	// them when they join and recover what they missed after a reconnect
	// (see the package documentation). It is called with a room's name on
	// every join and Room.Broadcast, never under a lock; it must be fast,
	// must not call the Hub, and must be safe for concurrent use. Default:
	// nil, no room keeps history and room messages carry no seq.
	History func(room string) HistoryPolicy

	// HistoryStore keeps the histories. Default: NewMemoryHistory(0), in
	// memory, local to this hub, at most DefaultMaxHistoryBytes (64 MiB).
	HistoryStore HistoryStore

	// Presence tells which rooms share who is in them: their members get
	// the room's state when they join, then who joins and leaves (see the
	// package documentation). It is called with a room's name when the
	// room gets a member; it must be fast, must not call the Hub, and must
	// be safe for concurrent use. Default: nil, no room has presence.
	Presence func(room string) bool

	// OnPresence runs after each change of a presence room's members (on
	// all hubs, with a PresenceBroker, while this hub has members in the
	// room), with the IDs that joined and left, at most once per
	// PresenceInterval per room and never while the hub holds a lock.
	// Default: nil.
	OnPresence func(room string, joins, leaves []Presence)

	// Broker carries room messages to and from other hubs, so that rooms
	// span processes. The hub closes it when Shutdown or Close finishes.
	// Default: nil, rooms are local to this hub.
	Broker Broker

	// Logger receives connection-level events at debug level and
	// kicked clients at warn level. Default: nil, discard.
	Logger *slog.Logger
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
	// JSON encoding, at most MaxInfoBytes. Only the server sets it; nil
	// sends none.
	Info any
}

// Reject returns an error that, returned from Options.Authenticate, refuses
// the upgrade with the given HTTP status and reason as the response body.
func Reject(status int, reason string) error {
	return &rejectError{status: status, reason: reason}
}

type rejectError struct {
	status int
	reason string
}

func (e *rejectError) Error() string { return e.reason }
func (e *rejectError) Unwrap() error { return ErrRejected }

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
	if opts.ReadLimit <= 0 {
		opts.ReadLimit = DefaultReadLimit
	}
	if opts.SendQueue <= 0 {
		opts.SendQueue = DefaultSendQueue
	}
	if opts.SendQueueBytes <= 0 {
		opts.SendQueueBytes = DefaultSendQueueBytes
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.MaxRooms == 0 {
		opts.MaxRooms = DefaultMaxRooms
	}
	if opts.RateLimit > 0 && opts.RateBurst <= 0 {
		opts.RateBurst = max(1, int(math.Ceil(opts.RateLimit)))
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = DefaultPingInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return opts
}
