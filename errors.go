package wshub

import "errors"

// Sentinel errors. Errors returned by wshub wrap one of these with %w, so
// test for them with errors.Is. The text of each is also the reason sent to a
// client in an error frame or a close frame.
var (
	// ErrHubClosed is returned by operations on a hub after Shutdown or Close
	// began, and is the disconnect reason of clients closed by Shutdown.
	ErrHubClosed = errors.New("wshub: hub closed")

	// ErrClientClosed is returned by Client.Send, Join and Leave once the
	// client is disconnecting or gone.
	ErrClientClosed = errors.New("wshub: client closed")

	// ErrSendQueueFull is the disconnect reason of a client whose send queue
	// overflowed; Client.Send returns it for that client. The client is
	// closed with status 1008.
	ErrSendQueueFull = errors.New("wshub: send queue full")

	// ErrWriteTimeout is the disconnect reason of a client that took no
	// bytes for Options.WriteTimeout, or whose congested queue held up
	// another client's publish that long. It is closed with status 1008.
	ErrWriteTimeout = errors.New("wshub: write timeout")

	// ErrTooManyRooms reports a join past Options.MaxRooms.
	ErrTooManyRooms = errors.New("wshub: too many rooms")

	// ErrRateLimited answers a message read past Options.RateLimit; the
	// message was not handled. It is also the disconnect reason (status
	// 1008) of a client that sent MaxInvalidMessages of them in a row.
	ErrRateLimited = errors.New("wshub: rate limit exceeded")

	// ErrPongTimeout is the disconnect reason of a client that did not answer
	// a keepalive ping in time.
	ErrPongTimeout = errors.New("wshub: pong timeout")

	// ErrInvalidRoom reports a room name that is empty, too long
	// (see MaxRoomNameLen) or not valid UTF-8.
	ErrInvalidRoom = errors.New("wshub: invalid room name")

	// ErrJoinDenied reports a client-initiated join refused because no
	// Options.AuthorizeJoin is set. An AuthorizeJoin error is wrapped in it.
	ErrJoinDenied = errors.New("wshub: join denied")

	// ErrPublishDenied wraps an error returned by Options.AuthorizePublish.
	ErrPublishDenied = errors.New("wshub: publish denied")

	// ErrNotMember reports a publish to, or a leave of, a room the client is
	// not in.
	ErrNotMember = errors.New("wshub: not a member of the room")

	// ErrInvalidMessage reports an inbound frame that the client's codec
	// cannot decode or that breaks the protocol. After MaxInvalidMessages of
	// them in a row the client is closed with status 1007; a text frame
	// that is not valid UTF-8 closes it with 1007 at once (RFC 6455 8.1).
	ErrInvalidMessage = errors.New("wshub: invalid message")

	// ErrUnknownType answers a message whose type is not a protocol type
	// when the hub has no Handler.
	ErrUnknownType = errors.New("wshub: unknown message type")

	// ErrUnsupportedData reports a Message.Data value that a codec cannot
	// encode, such as a non-[]byte value given to RawCodec.
	ErrUnsupportedData = errors.New("wshub: data not supported by codec")

	// ErrRejected is wrapped by the errors that Reject returns.
	ErrRejected = errors.New("wshub: connection rejected")

	// ErrTooManyClients is the body of the 503 answer to an upgrade past
	// Options.MaxClients.
	ErrTooManyClients = errors.New("wshub: too many clients")

	// ErrHistory wraps an error of Options.HistoryStore. A broadcast that
	// fails with it was delivered to no member of this hub.
	ErrHistory = errors.New("wshub: history")

	// ErrNoPresence answers a presence request for a room that has no
	// presence (see Options.Presence).
	ErrNoPresence = errors.New("wshub: room has no presence")

	// ErrBroker wraps an error of Options.Broker. A broadcast that fails
	// with it was delivered to nobody.
	ErrBroker = errors.New("wshub: broker")
)
