// Package natsbroker implements wshub.Broker on NATS, so that the rooms of
// many wshub hubs, in as many processes, behave as one: a message published
// in room "lobby" on one hub reaches the members of "lobby" on every hub.
//
// Connect to NATS and give the broker to the hub:
//
//	b, err := natsbroker.Connect("nats://127.0.0.1:4222", nil)
//	if err != nil { … }
//	hub := wshub.New(handler, &wshub.Options{Broker: b})
//
// or, with a connection of your own, natsbroker.New(nc, nil). The hub
// closes the broker when it shuts down; a broker made by Connect then
// closes its connection, one made by New leaves the connection to you.
//
// # Subjects
//
// Each room has one subject: the prefix (Options.Prefix, "wshub.room" by
// default), a dot, and the room name encoded in unpadded base64url
// (RFC 4648 §5, the alphabet A–Z a–z 0–9 - _). Room "lobby" is
// "wshub.room.bG9iYnk". The encoding maps every room name, whatever bytes
// it holds (spaces, dots, "*", ">"), to a single valid token, and distinct
// names to distinct subjects. Broker.Subject returns a room's subject, for
// monitoring or for permissions. Hubs that share rooms must share the
// prefix; hubs of different applications on one NATS use different
// prefixes (or NATS accounts).
//
// # Guarantees
//
// Delivery across hubs is at most once. NATS core does not store messages:
// a hub that is disconnected from NATS, or whose subscription the server
// has not registered yet (right after a reconnect), misses what is
// published meanwhile, and its members never see those messages; so do
// the other hubs when a server fails between confirming a message and
// forwarding it.
//
// A publish that fails is reported. Broker.Publish returns ErrNotConnected
// when the connection is not up, so Room.Broadcast returns an error and a
// client's publish gets an error frame; the hub then delivers the message
// to none of its own members (other hubs got it only if the connection
// broke after the server read it). By default Publish also waits for the
// server to confirm it has the message (a PING round trip), so a message
// written to a connection that broke before the server read it is an
// error too, not a silent loss. Options.NoConfirm trades that for
// throughput. For Publish to fail rather than queue while nats.go
// reconnects, the connection must not buffer: Connect sets
// nats.ReconnectBufSize(-1), and a connection given to New should too.
//
// Messages of one publisher, a client or a goroutine calling
// Room.Broadcast, reach every hub in the order they were published,
// because a hub publishes on one connection and NATS delivers each
// subscription's messages in order. Messages of different publishers have
// no agreed order across hubs.
//
// Nothing is echoed: the hub delivers its own messages to its local
// members directly, and drops them when NATS hands them back, by the
// origin the hub writes into each message. Each member gets a message
// exactly once.
//
// Reconnection is nats.go's: it reconnects on its own (Connect sets
// unlimited attempts) and re-creates the broker's subscriptions. Deliveries
// that nats.go cannot hand to the hub fast enough are dropped by nats.go
// as a slow consumer and reported to the connection's nats.ErrorHandler;
// the hub's delivery only queues messages for clients, so this takes a
// flood past nats.go's pending limits (by default 512k messages or 64 MB
// per room).
package natsbroker
