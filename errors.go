package wshub

import "errors"

// Errors. Every error that wshub returns or reports wraps one of these:
// test with errors.Is. Each groups reasons a caller handles alike; the
// full text ("wshub: join denied") names the reason, and is what a client
// gets in an error or close frame.
var (
	// ErrHubClosed: the hub is closing (Shutdown or Close began); also the
	// disconnect reason of the clients Shutdown closes.
	ErrHubClosed = errors.New("wshub: hub closed")

	// ErrClientClosed: the client is closing or gone.
	ErrClientClosed = errors.New("wshub: client closed")

	// ErrSlowClient: the client was closed with 1008 for holding others
	// up, counted in Stats.Kicked: "send queue full" or "write timeout"
	// (see Options.SendQueue and WriteTimeout).
	ErrSlowClient = errors.New("wshub: slow client")

	// ErrPongTimeout: the client did not answer a ping in time.
	ErrPongTimeout = errors.New("wshub: pong timeout")

	// ErrInvalid: input the hub cannot take: an undecodable or invalid
	// message ("invalid message"; 5 in a row close the client with 1007,
	// a text frame that is not UTF-8 at once), a room name empty, over 128
	// bytes or not UTF-8 ("invalid room name"), a type that is not the
	// protocol's without a Handler ("unknown message type"), Data a codec
	// cannot encode ("data not supported by codec").
	ErrInvalid = errors.New("wshub: invalid")

	// ErrDenied: refused by the hub's rules: "join denied" (no
	// AuthorizeJoin, or its error, wrapped), "publish denied", "not a
	// member of the room", "too many rooms", "room has no presence",
	// "rate limit exceeded", "connection rejected" (Reject), "too many
	// clients"; of tokens (Options.AuthenticateToken): "token expired",
	// "auth timeout", "auth required", "unauthorized", "refresh refused",
	// "grant expired".
	ErrDenied = errors.New("wshub: denied")

	// ErrEngine wraps an error of the Engine: "broker" for a message it
	// did not take (nobody got it) or a follow that failed, "history" for
	// a read that failed.
	ErrEngine = errors.New("wshub: engine")
)

// reason is one of the reasons an exported error groups: its text is the
// reason's, and errors.Is matches the group.
type reason struct {
	group error
	text  string
}

func (r *reason) Error() string { return r.text }
func (r *reason) Unwrap() error { return r.group }

var (
	errSendQueueFull   = &reason{ErrSlowClient, "wshub: send queue full"}
	errWriteTimeout    = &reason{ErrSlowClient, "wshub: write timeout"}
	errInvalidMessage  = &reason{ErrInvalid, "wshub: invalid message"}
	errInvalidRoom     = &reason{ErrInvalid, "wshub: invalid room name"}
	errUnknownType     = &reason{ErrInvalid, "wshub: unknown message type"}
	errUnsupportedData = &reason{ErrInvalid, "wshub: data not supported by codec"}
	errJoinDenied      = &reason{ErrDenied, "wshub: join denied"}
	errPublishDenied   = &reason{ErrDenied, "wshub: publish denied"}
	errNotMember       = &reason{ErrDenied, "wshub: not a member of the room"}
	errTooManyRooms    = &reason{ErrDenied, "wshub: too many rooms"}
	errNoPresence      = &reason{ErrDenied, "wshub: room has no presence"}
	errRateLimited     = &reason{ErrDenied, "wshub: rate limit exceeded"}
	errRejected        = &reason{ErrDenied, "wshub: connection rejected"}
	errTooManyClients  = &reason{ErrDenied, "wshub: too many clients"}
	errOverloaded      = &reason{ErrDenied, "wshub: overloaded, try again later"}
	errBroker          = &reason{ErrEngine, "wshub: broker"}
	errHistory         = &reason{ErrEngine, "wshub: history"}
	errTokenExpired    = &reason{ErrDenied, "wshub: token expired"}
	errAuthTimeout     = &reason{ErrDenied, "wshub: auth timeout"}
	errAuthRequired    = &reason{ErrDenied, "wshub: auth required"}
	errUnauthorized    = &reason{ErrDenied, "wshub: unauthorized"}
	errRefreshRefused  = &reason{ErrDenied, "wshub: refresh refused"}
	errGrantExpired    = &reason{ErrDenied, "wshub: grant expired"}
)
