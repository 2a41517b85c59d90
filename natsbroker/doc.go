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
// The core-NATS broker is at most once across hubs. NATS core does not
// store messages: it forwards each one to the subscriptions it has at that
// moment. A hub that is disconnected from NATS or reconnecting, or whose
// subscription the server has not registered yet (right after it connects
// or reconnects), misses what is published meanwhile, and its members
// never see those messages; so do all the other hubs when a server fails
// between confirming a message and forwarding it. Rooms that must not
// lose messages across hubs need a log that hubs can resume from; a
// JetStream-backed log is planned.
//
// # What "acknowledged" means
//
// By default Broker.Publish returns nil only once the NATS server the hub
// is connected to has read the message: it is followed on the connection
// by a PING, and the server has answered with its PONG. That is all an
// acknowledgement means here, for Room.Broadcast returning nil as for the
// ack frame a client gets for a publish. It does not mean that another hub
// received the message: one that is reconnecting or not yet subscribed
// misses it, as above.
//
// Confirmations are pipelined and, under load, shared. While at most 16
// publishes of a broker wait at once, each writes its own PING without
// waiting for the others' PONGs, so a confirmation costs one round trip,
// as if each publisher were alone. When more wait, a PING is written only
// while fewer than two are in flight, and the publishes that arrive
// meanwhile share the next one (a group commit): a publish then waits at
// most two round trips, and the server answers a few PINGs instead of
// one per message. A PONG received on a new connection, after nats.go
// reconnected, confirms nothing written on the old one: Publish then
// returns ErrNotConnected. Options.NoConfirm skips the wait,
// and a message written just before a connection breaks is then lost
// although Publish returned nil.
//
// # When NATS is unreachable
//
// A NATS outage stops room messages on every hub, local members included.
// While the connection is down Broker.Publish returns ErrNotConnected, so
// Room.Broadcast returns an error wrapping wshub.ErrBroker and
// ErrNotConnected, a client's publish gets an error frame, and the hub
// delivers the message to none of its own members; other hubs got it only
// if the connection broke after the server read it. Delivering locally
// and reporting the cluster error instead would split each room into one
// conversation per hub for the length of the outage, each looking healthy
// to its members; refusing makes the outage visible to the publisher,
// who can retry. Joins keep working:
// Subscribe registers the room with nats.go, which subscribes on the
// server when it is back. Hub.Broadcast, which stays on its hub, keeps
// working too. For Publish to fail rather than queue while nats.go
// reconnects, the connection must not buffer: Connect sets
// nats.ReconnectBufSize(-1), and a connection given to New should too.
//
// Connect reconnects quickly and forever: after trying every server of
// its list it waits 100 ms plus a random jitter of up to 150 ms, so the
// hubs of a cluster come back within a fraction of a second of the server
// and not all at the same instant. By default Connect fails when no
// server answers; with Options.RetryOnFailedConnect it returns a broker at
// once, so that a hub can start while NATS is unreachable, and its rooms
// behave as in an outage until the first connection.
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
// Reconnection is nats.go's: it reconnects on its own and re-creates the
// broker's subscriptions. Deliveries
// that nats.go cannot hand to the hub fast enough are dropped by nats.go
// as a slow consumer and reported to the connection's nats.ErrorHandler;
// the hub's delivery only queues messages for clients, so this takes a
// flood past nats.go's pending limits (by default 512k messages or 64 MB
// per room).
package natsbroker
