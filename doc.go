// Package wshub gives a Go service WebSocket rooms: a Hub that any
// net/http router can mount, clients that join rooms, and broadcasts that
// never wait for a slow client.
//
//	hub := wshub.New(nil, &wshub.Options{
//		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
//	})
//	mux.Handle("/ws", hub)
//	...
//	hub.Room("lobby").Broadcast(ctx, &wshub.Message{Data: "hello"})
//	...
//	hub.Shutdown(ctx)
//
// # Model
//
// A Hub is an http.Handler: each request it upgrades becomes a Client.
// Clients join and leave named Rooms, from the server (Client.Join) or by
// sending a join, which Options.AuthorizeJoin must allow. A room exists
// while it has members. Room.Broadcast sends to a room's members,
// Hub.Broadcast to every client of the hub, Client.Send to one. Messages
// whose type is not the protocol's go to the Handler given to New.
//
// A Codec turns Messages into frames; each client picks one by offering its
// name in the Sec-WebSocket-Protocol header (JSONCodec by default). A
// message is encoded once per codec, not once per recipient.
//
// The wire protocol (joins, publishes, acks and errors, history and
// recovery, presence, close codes) is specified in docs/PROTOCOL.md.
//
// # One road for every message
//
// Every room message, a client's publish or the server's Room.Broadcast,
// goes the same way: it is encoded as JSON and handed to the Engine, which
// gives it its place in the room's one order (and its seq, in a room that
// keeps history) and passes it back to every hub that follows the room;
// each hub queues it for its local members. The default engine keeps it in
// the process (NewMemoryEngine); the natsbroker module's engines span
// processes over NATS. docs/DESIGN.md draws the road.
//
// Options.Rooms gives each room its options: a HistoryPolicy, under which
// the engine keeps the room's last messages so that clients can ask for
// them when they join and recover what they missed after a reconnect; and
// presence, under which members learn who is in the room.
//
// # Sign-in
//
// Options.Authenticate names a client from its upgrade request (a cookie,
// a header, a one-time ticket in the URL). Options.AuthenticateToken
// checks tokens sent over the connection instead: with its first frame,
// where browsers put a token that must not travel in a URL, and in
// refreshes, so that a sign-in that expires (Identity.Expires) is renewed
// without a reconnect; one that expires is closed with
// StatusTokenExpired. Options.AuthorizeGrant checks joins that carry a
// room's own token, which may expire too. Hub.DisconnectUser closes a
// user's connections on every hub. docs/PROTOCOL.md §11 has the frames.
//
// # Goroutines and locks
//
// Every method of Hub, Room and Client is safe for concurrent use. No lock
// of the hub is held while a hook (Options.Authenticate,
// AuthenticateToken, OnConnect, AuthorizeJoin, AuthorizeGrant,
// AuthorizePublish, OnDisconnect, OnPresence, Rooms), the
// Handler, a Codec or the Engine runs, so they may call back into the hub,
// Shutdown and Close included. A client's messages are handled one at a
// time, in order, on its read goroutine. Like its acker (while publishes
// wait for the engine), the read goroutine exists only while there is
// something to do: an idle client's socket is watched by the hub's
// poller, on Linux (elsewhere, and over TLS, the read goroutine stays).
// Writes go through the hub's write pool, a goroutine per CPU, which
// writes what a socket takes at once; a client gets a writer goroutine of
// its own only while its socket is full or its queue holds over 32 KiB
// (elsewhere, over TLS, and with a BatchCodec of the application's, while
// it has messages queued).
//
// # Slow clients and floods
//
// Server-side sends only queue: they never wait for a client, and one that
// would overflow a client's queue (Options.SendQueue) closes it with
// ErrSlowClient. A client's own messages are paced: its next message is
// read once the queues its last one congested have drained, so a flooding
// client is slowed down by TCP and the members who read stay; a member
// holding it up past WriteTimeout is closed with ErrSlowClient. Messages
// from other hubs are paced too: the engine passes a room's next message
// once the queues the last one congested were taken. A closed client's
// unwritten messages count in Stats.Dropped: nothing is dropped silently.
//
// # Figures
//
// Hub.Stats returns what the hub has done, always counted and cheap to
// read: clients, rooms and members now; upgrades accepted and refused,
// and closes, by reason; messages read and queued by kind; publish→ack and
// engine latencies; recoveries; presence diffs; engine errors; and, with
// Options.RoomLabel, messages by room label. The wshubprom module exports
// them to Prometheus.
//
// # Shutdown
//
// Shutdown writes every client's queued messages, closes each with 1001 and
// waits for the hub's goroutines, or cuts the connections when its context
// ends. Close cuts them at once. Both are idempotent and close the Engine.
package wshub
