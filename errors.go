package wshub

import "errors"

// Errors. Every error that wshub returns or reports wraps one of these,
// so test for them with errors.Is; each groups the reasons a caller would
// handle alike. The full text, such as "wshub: join denied", names the
// reason, and is what a client gets in an error frame or a close frame.
var (
	// ErrHubClosed is returned by operations on a hub after Shutdown or
	// Close began, and is the disconnect reason of clients closed by
	// Shutdown.
	ErrHubClosed = errors.New("wshub: hub closed")

	// ErrClientClosed is returned by Client.Send, Join and Leave once the
	// client is disconnecting or gone.
	ErrClientClosed = errors.New("wshub: client closed")

	// ErrSlowClient is the disconnect reason of a client closed (with
	// status 1008, counted in Stats.Kicked) for holding others up:
	// "wshub: send queue full" when a message would overflow its send
	// queue (Client.Send returns it for that client), "wshub: write
	// timeout" when its socket took no bytes, or its congested queue held
	// up another client's publish, for Options.WriteTimeout.
	ErrSlowClient = errors.New("wshub: slow client")

	// ErrPongTimeout is the disconnect reason of a client that did not
	// answer a keepalive ping in time.
	ErrPongTimeout = errors.New("wshub: pong timeout")

	// ErrInvalid reports input the hub cannot take: an inbound frame the
	// client's codec cannot decode or that breaks the protocol ("wshub:
	// invalid message"; after 5 in a row the client is closed with 1007,
	// at once for a text frame that is not UTF-8), a room name that is
	// empty, over 128 bytes or not UTF-8 ("wshub: invalid room name"), a
	// message type that is not the protocol's when the hub has no Handler
	// ("wshub: unknown message type"), or Message.Data that a codec
	// cannot encode ("wshub: data not supported by codec").
	ErrInvalid = errors.New("wshub: invalid")

	// ErrDenied reports a request or a connection refused by the hub's
	// rules: a join without Options.AuthorizeJoin or refused by it
	// ("wshub: join denied", wrapping AuthorizeJoin's error), a publish
	// refused by AuthorizePublish ("wshub: publish denied"), a publish,
	// leave or presence request for a room the client is not in ("wshub:
	// not a member of the room"), a join past MaxRooms ("wshub: too many
	// rooms"), a presence request for a room without presence ("wshub:
	// room has no presence"), a message past RateLimit ("wshub: rate limit
	// exceeded"; after 5 in a row the client is closed with 1008), an
	// upgrade refused by Reject ("wshub: connection rejected") or past
	// MaxClients ("wshub: too many clients").
	ErrDenied = errors.New("wshub: denied")

	// ErrEngine wraps an error of the Engine: a room message it did not
	// take ("wshub: broker") or a history it could not read ("wshub:
	// history"). A publish that fails with it was delivered to nobody
	// (with a log, see the engine's documentation for whether it may
	// still be stored).
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
	errBroker          = &reason{ErrEngine, "wshub: broker"}
	errHistory         = &reason{ErrEngine, "wshub: history"}
)
