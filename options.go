package wshub

import (
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/coder/websocket"
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
	// Codecs lists the codecs a client may choose by name in the
	// Sec-WebSocket-Protocol header; the first is used when it offers
	// none of them. Default: JSONCodec, JSONBatchCodec.
	Codecs []Codec

	// OriginPatterns lists host patterns of cross-origin pages allowed to
	// connect, as in coder/websocket's AcceptOptions. Default: same-origin
	// only (and requests without Origin); a refused Origin gets 403.
	OriginPatterns []string

	Limits Limits // what one client may take; each zero field has its default

	// Authenticate runs before the upgrade. An error refuses it: one from
	// Reject with its status, any other with 401 and the error's text. The
	// Identity names the client. Default: everyone is accepted with a
	// random ID (a "?name=" in the URL means nothing unless it reads it).
	Authenticate func(r *http.Request) (Identity, error)

	// AuthenticateToken checks a token a client sends over its
	// connection (docs/PROTOCOL.md §11), on the client's read goroutine.
	// With Authenticate nil, every client must sign in with its first
	// frame, an "auth" with a token (browsers cannot set headers, and a
	// token in a URL ends up in logs): the hub waits 10 s for it and
	// accepts nothing else before it; a missing or refused token closes
	// the connection with StatusSignedOut, none in time with
	// StatusTokenExpired. Until then the client is in no room, gets no
	// Hub.Broadcast and ID returns "". Every later "auth" or "refresh"
	// frame is a refresh: the identity returned replaces the client's
	// Expires and Info and sets its Values; its ID must be empty or the
	// client's. A refused refresh gets an error frame ("refresh refused",
	// ErrDenied) and the client still expires when it would have. After a
	// refresh, the rooms the client joined at its own request are
	// authorized again (AuthorizeJoin): it leaves those refused, and is
	// told why. Default: nil, and "auth" and "refresh" are application
	// messages.
	AuthenticateToken func(c *Client, token string) (Identity, error)

	// OnConnect runs on the client's read goroutine before its first
	// message is read (after it signed in, with AuthenticateToken); it may
	// call any method, c.Join for instance.
	OnConnect func(c *Client)

	// AuthorizeJoin decides a join the client asks for: a nil error allows
	// it, an error refuses it. Default: no AuthorizeJoin, and every join a
	// client asks for is refused with "join denied" (ErrDenied; the hub
	// logs a warning the first time); Client.Join, the server's, is not
	// affected. To allow every valid room name:
	//
	//	AuthorizeJoin: func(*wshub.Client, string) error { return nil },
	AuthorizeJoin func(c *Client, room string) error

	// AuthorizeGrant decides, instead of AuthorizeJoin, a join that
	// carries a token: a grant of the room (a private room, a paid
	// channel). A nil error allows the join until expires (zero: for
	// good); the ack tells the client when it expires, and a join of the
	// room with a new token before then renews it. When a grant expires,
	// the client leaves the room and gets a "leave" frame saying "grant
	// expired". A refused renewal is an error and leaves the grant as it
	// was. Default: nil, and joins go to AuthorizeJoin with their token
	// unread.
	AuthorizeGrant func(c *Client, room, token string) (expires time.Time, err error)

	// AuthorizePublish runs for every publish from a member before it goes
	// out; it may rewrite m.Data. An error refuses it with "publish
	// denied" (ErrDenied). Default: members may publish.
	AuthorizePublish func(c *Client, m *Message) error

	// OnDisconnect runs once per client that OnConnect saw, after it left
	// its rooms and its connection closed, with the reason: an error of
	// this package, the peer's websocket.CloseError, or the connection's
	// error. It may run after Shutdown or Close returned.
	OnDisconnect func(c *Client, reason error)

	// Rooms gives a room's options, when the room is created on this hub
	// (it keeps them while it has members) and for Room.Broadcast,
	// History and Position on a room without members here. It runs
	// outside every lock, may call the Hub, and must be fast and safe for
	// concurrent use. Default: no history, no presence.
	Rooms func(room string) RoomOptions

	// RoomLabel, if set, names the group a room belongs to ("chat" for
	// "chat:42", say), once per room while it has members here, and
	// Stats.Labels counts room messages by it. Room names themselves are
	// never labels of the hub's figures: there may be millions. Keep the
	// labels few. Default: nil, no counts by label.
	RoomLabel func(room string) string

	// OnPresence runs after changes of a presence room's members (on every
	// hub, with a PresenceEngine, while this hub has members in it), at
	// most once per 100 ms per room, outside every lock. Default: nil.
	OnPresence func(room string, joins, leaves []Presence)

	// Engine orders, carries and keeps room messages. Default:
	// NewMemoryEngine(0), rooms local to this hub. The natsbroker module's
	// engines span processes.
	Engine Engine

	// Logger gets connection events at debug level and kicked clients at
	// warn level. Default: discard.
	Logger *slog.Logger
}

// Limits bound what one client may take, and how long it may hold the
// hub up. Each zero field means its default.
type Limits struct {
	// ReadLimit is the largest inbound message in bytes; a bigger one
	// closes the client with 1009. Default: 32 KiB.
	ReadLimit int64

	// SendQueue and SendQueueBytes bound the messages and bytes waiting
	// for one client (one bigger message may enter an empty queue). A
	// message past either closes the client with 1008 and "send queue
	// full" (ErrSlowClient). Defaults: 256 messages, 1 MiB.
	SendQueue      int
	SendQueueBytes int

	// WriteTimeout: a client whose socket takes no bytes this long (up to
	// 1.5 times), or whose queue held up a publish this long, is closed
	// with "write timeout" (ErrSlowClient). It also bounds a join's reads
	// of history and a publish's wait for its delivery. Default: 10s.
	WriteTimeout time.Duration

	// MaxRooms caps the rooms of one client; a join past it fails with
	// "too many rooms" (ErrDenied). Default: 128; negative: no limit.
	MaxRooms int

	// RateLimit caps the messages read per second, in bursts of RateBurst
	// (default: RateLimit rounded up); one past it is refused ("rate limit
	// exceeded"), 5 in a row close the client with 1008. Default: none.
	RateLimit float64
	RateBurst int

	// PingInterval: a client that has not answered a ping by the next is
	// closed with ErrPongTimeout. Each client's first ping comes at a
	// random point of its first interval, so that pings are spread (the
	// hub pings one of up to 128 groups of its clients at a time, at most
	// every 100 ms). Keep it above WriteTimeout and what a Handler blocks.
	// Default: 30s; negative disables pings.
	PingInterval time.Duration

	MaxClients int // connected clients; past it, upgrades get 503. Default: none
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
	// ID names the client in the "from" of its messages; empty means a
	// random one. One user may hold several connections with one ID.
	ID string

	Values map[string]any // the client's initial values, see Client.Value

	// Info is what the client shows of itself in presence rooms (a name,
	// an avatar URL), as JSON of at most 1 KiB. Only the server sets it.
	Info any

	// Expires, if not zero, is when the sign-in ends, usually its token's
	// expiry. The hub tells the client how long it has left ("auth" frame
	// with a ttl) so that it refreshes before then (AuthenticateToken);
	// without a refresh, the hub closes it with StatusTokenExpired 5 s
	// after Expires, an allowance for a refresh in flight and for the
	// clocks of the hub and of the token's issuer.
	Expires time.Time
}

// Close codes of the protocol's tokens (docs/PROTOCOL.md §11). A client
// closed with StatusTokenExpired gets a new token and reconnects; one
// closed with StatusSignedOut stops, as a new token of the same sign-in
// would not help (a refused token, a ban, a sign-out: see
// Hub.DisconnectUser).
const (
	StatusTokenExpired websocket.StatusCode = 4001
	StatusSignedOut    websocket.StatusCode = 4003
)

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

// options is Options with the defaults applied; its Limits are the ones
// in force.
type options struct {
	Options
	Limits
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
	opts.Limits = opts.Options.Limits
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
