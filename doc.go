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
// sending a join message, which Options.AuthorizeJoin must allow. A room
// exists while it has members. Room.Broadcast sends to a room's members,
// Hub.Broadcast to every client, Client.Send to one.
//
// A Codec turns Messages into frames. Each client picks one by offering its
// name in the Sec-WebSocket-Protocol header; without an offer it gets the
// first of Options.Codecs, JSONCodec by default. A broadcast is encoded once
// per codec, not once per recipient. JSONBatchCodec and RawCodec ship with
// the package; any type with Name, Binary, Marshal and Unmarshal is a codec.
//
// Application messages, those whose type is not join, leave or publish, go
// to the Handler given to New.
//
// # Wire protocol (JSONCodec, subprotocol "wshub.json")
//
// Each text frame holds one JSON object. Client to server:
//
//	{"type":"join","room":"lobby","id":"1"}
//	{"type":"leave","room":"lobby","id":"2"}
//	{"type":"publish","room":"lobby","data":<any JSON>,"id":"3"}
//
// "id" is optional; when present the server answers {"type":"ack","id":"1"}
// or {"type":"error","id":"1","error":"<reason>"}. Errors are sent even
// without an id, so a refused request is never silent. Any other type goes
// to the Handler. Server to client:
//
//	{"type":"message","room":"lobby","from":"<sender id>","data":<any JSON>}
//
// "from" is omitted when the server sent the message. A publish reaches
// every member of the room, the sender included, in the order the room
// received it; publishing to a room the client is not in is an error.
//
// With JSONBatchCodec (subprotocol "wshub.json-batch") every server frame
// is a JSON array of one or more of these objects: a busy client gets many
// messages per frame. Client frames stay single objects. Messages are never
// joined with newlines inside a frame.
//
// Close codes: 1001 when the hub shuts down; 1012 when a LogBroker's room
// log lost messages of a client's room that its hub had not delivered (the
// client should rejoin with since); 1007 after MaxInvalidMessages
// undecodable messages in a row, or at once for a text frame that is not
// valid UTF-8; 1008 when a client's send queue overflows, it hits
// Options.WriteTimeout, or it sends MaxInvalidMessages rate-limited
// messages in a row; 1009 for a message over Options.ReadLimit.
//
// # History
//
// A room whose Options.History policy keeps messages numbers them: every
// room message carries "seq", 1, 2, 3, … per room, in the order its
// members receive it, and the hub keeps the last ones in the HistoryStore
// (in memory by default). With a LogBroker the room's log keeps them
// instead, shared by every hub, and seqs increase with gaps. The history has an epoch that changes whenever
// it is lost or restarted. A client's join may ask for the last messages
// ({"type":"join","room":"r","history":50,"id":"1"}) or for everything
// after the last seq it saw ({"type":"join","room":"r","epoch":"E",
// "since":41,"id":"2"}): it gets exactly those, before any live message,
// and the ack ({"type":"ack","id":"2","room":"r","epoch":"E","seq":57,
// "recovered":true}) says where the room stands, and whether the recovery
// was complete. Room.History and Room.Position read it from the server.
//
// # Presence
//
// A room for which Options.Presence returns true tells its members who is
// in it. A member is a client ID, its Identity.Info (set by
// Options.Authenticate; clients cannot set it) and its number of
// connections in the room. Joining sends the room's state
// ({"type":"presence","room":"r","data":{"members":[…],"total":3}}, at
// most MaxPresenceList listed) before the ack; then presence_diff frames
// ({"type":"presence_diff","room":"r","data":{"joins":[…],"leaves":[…]}})
// say which IDs came (first connection) and went (last connection), at
// most one per PresenceInterval per room. {"type":"presence","room":"r"}
// asks for the state again. Room.Presence and Options.OnPresence serve the
// server; a PresenceBroker extends all of it across hubs.
//
// # Goroutines and locks
//
// Every method of Hub, Room and Client is safe for concurrent use. Hooks
// (Options.Authenticate, OnConnect, AuthorizeJoin, AuthorizePublish,
// OnDisconnect) and the Handler are never called while the hub holds a
// lock, so they may call back into the hub, including Shutdown and Close.
// A client's messages are handled one at a time, in order, on the client's
// read goroutine. Each client has one goroutine while idle; a writer
// goroutine runs only while it has messages queued.
//
// # Slow clients and floods
//
// Each client has a send queue of Options.SendQueue messages and
// Options.SendQueueBytes bytes. Server-side sends (Client.Send,
// Room.Broadcast, Hub.Broadcast) only queue, so they never wait for a
// client and never for each other.
//
// A client's own messages are paced instead: after handling one, the hub
// reads the client's next message only once every queue that message went
// to (its room's members' for a publish, its own for a reply) is no more
// than a quarter full, or WriteTimeout has passed. A client that publishes
// as fast as it can is slowed down by TCP; the members who read are not
// disconnected. A member whose queue still holds up a publisher after
// WriteTimeout (10 s by default), or whose socket takes no bytes for that
// long, is closed with 1008 and ErrWriteTimeout. A message that would
// overflow a queue closes that client with 1008 and ErrSendQueueFull. Either
// way its unwritten messages are counted in Stats.Dropped, the close in
// Stats.Kicked, and OnDisconnect gets the reason. Nothing is dropped
// silently.
//
// Pacing covers the queues of the publishing client's own hub. Messages
// that arrive from other hubs through a Broker are not paced: a flood on
// another hub can overflow a queue here, which closes that client with
// ErrSendQueueFull. A member that reads slowly but steadily paces its
// room's client publishers to its speed.
//
// Options.MaxRooms caps the rooms of a client (128), and Options.RateLimit
// can cap the messages per second read from each (off by default).
//
// # Shutdown
//
// Shutdown writes every client's queued messages, closes each with 1001 and
// waits for the hub's goroutines, or cuts the connections when its context
// ends. Close cuts them at once. Both are idempotent.
//
// # Many processes
//
// With Options.Broker, a room spans every hub connected to the same
// message bus; the natsbroker module provides one for NATS.
package wshub
