// Package natsbroker implements wshub.Engine on NATS, so that the rooms of
// many wshub hubs, in as many processes, behave as one: a message published
// in room "lobby" on one hub reaches the members of "lobby" on every hub.
//
// Connect to NATS and give the broker to the hub as its engine:
//
//	b, err := natsbroker.Connect("nats://127.0.0.1:4222", nil)
//	if err != nil { … }
//	hub := wshub.New(handler, &wshub.Options{Engine: b})
//
// or, with a connection of your own, natsbroker.New(nc, nil). The hub
// closes the broker when it shuts down; a broker made by Connect then
// closes its connection, one made by New leaves the connection to you.
//
// A hub delivers to its members only what its engine hands back to it,
// its own messages included (see wshub.Engine). A Broker is that road on
// core NATS: the hub publishes each room message on the room's subject
// and delivers the messages that its subscription to the subject
// receives, from every hub, its own included. A Log (see "Room log
// (JetStream)") takes the rooms with history through JetStream instead.
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
// A Log's history rooms have their subjects in JetStream streams instead:
// the prefix, "log", a token of the room's history policy, and the room's
// token, e.g. "wshub.room.log.100_3600s.bG9iYnk" for "lobby" with
// HistoryPolicy{Messages: 100} (Log.LogSubject). Having two more tokens,
// they never match a core-NATS room subject. Each distinct policy has one
// stream, named after the prefix (its characters other than letters,
// digits, "-" and "_" replaced by "_"), a hash of the exact prefix, "log"
// and the policy token, e.g. "wshub_room_1b2c3d4e_log_100_3600s"
// (Log.LogStream), holding the subjects "<prefix>.log.<policy>.*". The Log
// also uses the JetStream API of the account ("$JS.API.>", without a
// domain or API prefix), with direct gets.
//
// The hubs' commands (see "Commands") have one subject: the prefix and
// "cmd", "wshub.room.cmd" by default. No room has it: the token of a
// room is never "cmd".
//
// A message's payload is the room message as the hub encodes it (JSON,
// without a seq), and its "Wshub-Id" header the id the hub published it
// with, unique to that publish, by which the hub knows its own messages
// when NATS hands them back. A Log's history rooms carry the id in
// JetStream's "Nats-Msg-Id" header.
//
// # Guarantees
//
// The core-NATS broker is at most once across hubs. NATS core does not
// store messages: it forwards each one to the subscriptions it has at that
// moment. A hub that is disconnected from NATS or reconnecting, or whose
// subscription the server has not registered yet (right after it connects
// or reconnects), misses what is published meanwhile, and its members
// never see those messages; so do all the other hubs when a server fails
// between confirming a message and forwarding it. This holds for the hub
// that published a message too: its own members get the message only as
// NATS hands it back. Rooms that must not lose messages across hubs need
// a log that hubs can resume from: see "Room log (JetStream)" below.
//
// # What "acknowledged" means
//
// By default the wait that Broker.Publish returns returns nil only once
// the NATS server the hub is connected to has read the message: it is
// followed on the connection by a PING, and the server has answered with
// its PONG. That is all an acknowledgement means here, for Room.Broadcast
// returning nil as for the ack frame a client gets for a publish. It does
// not mean that another hub received the message: one that is
// reconnecting or not yet subscribed misses it, as above.
//
// A hub pipelines each client's publishes: Publish writes a message and
// returns at once, so that several of one client are written before the
// first is confirmed, and the hub acks each once confirmed, in order.
// Confirmations are pipelined and, under load, shared. While at most 16
// publishes of a broker wait at once, each writes its own PING without
// waiting for the others' PONGs, so a confirmation costs one round trip,
// as if each publisher were alone. When more wait, a PING is written only
// while fewer than two are in flight, and the publishes that arrive
// meanwhile share the next one (a group commit): a publish then waits at
// most two round trips, and the server answers a few PINGs instead of
// one per message. A PONG received on a new connection, after nats.go
// reconnected, confirms nothing written on the old one: the wait then
// returns ErrNotConnected. Options.NoConfirm skips the wait, and a
// message written just before a connection breaks is then lost although
// its wait returned nil.
//
// # When NATS is unreachable
//
// A NATS outage stops room messages on every hub, local members included.
// While the connection is down the wait of Broker.Publish returns
// ErrNotConnected, so Room.Broadcast returns an error wrapping
// wshub.ErrEngine and ErrNotConnected, a client's publish gets an error
// frame, and the hub delivers the message to none of its own members,
// since nothing comes back; other hubs got it only if the connection
// broke after the server read it. Delivering locally and reporting the
// cluster error instead would split each room into one conversation per
// hub for the length of the outage, each looking healthy to its members;
// refusing makes the outage visible to the publisher, who can retry.
// Joins keep working: Follow registers the room with nats.go, which
// subscribes on the server when it is back. Hub.Broadcast, which stays on
// its hub, keeps working too. For Publish to fail rather than queue while
// nats.go reconnects, the connection must not buffer: Connect sets
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
// Echo. NATS hands each message back to the hub that published it, and
// that is how the hub's own members get it: the connection must not be
// made with nats.NoEcho (Connect does not, and New refuses such a
// connection). Each member gets a message exactly once, and the members
// of one hub get a room's messages in the order that hub receives them,
// its own among the others'.
//
// Reconnection is nats.go's: it reconnects on its own and re-creates the
// broker's subscriptions.
//
// Bursts. The hub delivers a room's messages at the pace its members take
// them (wshub.Engine's Follow): a message that leaves members' queues
// congested is followed by the next once they were taken, or after a
// second for a member that stopped reading (it is then closed alone). Core NATS does
// not wait, so what arrives meanwhile waits in the room's subscription, up
// to Options.BurstBytes (8 MiB by default) of payloads per room. Past it,
// nats.go drops messages for this hub as a slow consumer (and reports it
// to the connection's nats.ErrorHandler); the Broker then passes the hub a
// loss, which closes the room's local members with 1012, so that they
// learn that they missed messages, and, in a room with history, starts
// this hub's numbering of the room anew (a new epoch), so that their
// rejoins are told they could not recover. A Log's history rooms need no
// bound: a follow reads the room log only as fast as the hub delivers.
//
// # History rooms on core NATS
//
// Core NATS keeps no log. For a room whose policy keeps history (see
// wshub.RoomOptions), a Broker numbers the room's messages on each hub in
// the order that hub receives them, and keeps them in memory for the
// hub's history and recovery (wshub.NewMemoryEngine, one per room): the
// members of one hub see one order and consecutive seqs, but each hub has
// its own numbering and its own epoch, so a client recovers only on the
// hub it left. A hub's history of a room ends when its last member there
// leaves (the hub misses the room's messages from then on): when the room
// gets members again, it starts a new epoch, and a client that rejoins
// with an older one is told that it could not recover. A Log shares one
// history, and one order, between all hubs.
//
// # Presence
//
// Broker and Log implement wshub.PresenceEngine: a hub whose
// Options.Rooms gives rooms presence shares their members with the other
// hubs through a JetStream key-value bucket, so that each room's state
// and diffs cover its members on every hub. There is nothing to set up
// beyond the rooms' presence in Options.Rooms (and Authenticate, for the
// members' IDs and Info) with a natsbroker broker:
//
//	b, err := natsbroker.Connect("nats://127.0.0.1:4222", nil)
//	if err != nil { … }
//	hub := wshub.New(handler, &wshub.Options{
//		Engine: b,
//		Rooms: func(room string) wshub.RoomOptions {
//			return wshub.RoomOptions{Presence: true}
//		},
//	})
//
// Presence needs JetStream on the server (nats-server 2.11 or later, for
// the markers of expired keys). A Broker otherwise works on core NATS
// alone: the bucket is created, or its configuration updated, on the
// first SetPresence or WatchPresence, and without JetStream these fail
// (the hub then logs a warning and shows only its own members).
//
// Layout. One bucket per prefix, named like the log's streams with
// "presence": e.g. "wshub_room_1b2c3d4e_presence" (Broker.PresenceBucket;
// its stream is "KV_" and that name), History 1, TTL Options.PresenceTTL,
// memory or file storage per Options.MemoryStorage, Options.Replicas
// replicas. Each broker has a random ID of 16 hexadecimal digits
// (Broker.PresenceID), and keeps its members of room r under the key
// "<token of r>.<ID>" (Broker.PresenceKey), where the token is the one of
// the room's subject; the value is the JSON array of wshub.Presence that
// the hub encodes. A hub follows a room, while it has members in it, with
// a key watcher on "<token of r>.*" (an ephemeral ordered consumer),
// ignoring its own key.
//
// Liveness. A hub writes each of its non-empty entries again every
// PresenceTTL/3 (one goroutine per broker, the writes pipelined), and the
// server drops an entry PresenceTTL after its last write, leaving a
// marker that tells the watchers. So:
//
//   - While a hub is alive and connected its members stay visible.
//   - When it crashes, or loses NATS, its members disappear from the other
//     hubs' views when its entries expire: at most PresenceTTL (30 s by
//     default) after it stopped, plus the delivery of the marker. The
//     server's clock measures this, so the hubs' clocks do not matter.
//   - A hub that reconnects writes its entries again at once, and reads
//     every followed room again, passing what changed meanwhile: its
//     members come back for the others, and the others' for its own.
//     While a hub's connection is down for PresenceTTL it withdraws the
//     other hubs' members from its own view, since it can no longer tell
//     which of them are alive; they come back when it reconnects.
//   - On a clean shutdown (Hub.Shutdown or Hub.Close, which close the
//     broker) the hub deletes its keys, waiting at most 2 seconds: the
//     others see its members leave at once. What it could not delete
//     expires as after a crash.
//   - A restart of a server with memory storage loses the bucket: the
//     hubs create it again and write their entries again on reconnecting.
//     A hub that reads the room before another one wrote its entry again
//     shows that hub's members leave, and come back once it has.
//
// Cost. Each change of a hub's members of a room is one put (or one
// delete) of that room's key, which the hub coalesces to at most ten per
// second per room (one per 100 ms), plus a refresh of every room
// with members every PresenceTTL/3. Each presence room with members on a
// hub costs that hub one ordered consumer on the server and a status
// listener, made when the room's first local member joins and deleted
// when its last one leaves, and the key watcher's round trips when it is
// made. A value holds all the room's members on that hub, so it must fit
// within the server's max_payload (1 MB by default). Hubs that share a
// prefix must agree on PresenceTTL, MemoryStorage and Replicas: each one
// updates the bucket's configuration to its own.
//
// Hubs with presence that share a prefix see each other's members; the
// bucket's subjects are "$KV.<bucket>.>", for permissions.
//
// # Commands
//
// Broker and Log implement wshub.CommandEngine, so that
// Hub.DisconnectUser closes a user's connections on every hub that
// shares the prefix, not only its own. The hub publishes the command, a
// small JSON object, on the subject "<prefix>.cmd" over core NATS (a Log
// too, not JetStream), and Command returns once the server confirmed it,
// as Publish's wait does, even with Options.NoConfirm. Every hub
// subscribes to that subject when it starts (HandleCommands) and carries
// out each command it receives; the hub that sent one has acted already,
// and ignores it when NATS hands it back.
//
// Delivery is at most once, as in a room without history: NATS forwards
// a command to the subscriptions it has at that moment and keeps none.
// A hub that is disconnected from NATS or reconnecting when a command
// passes, or that was not started yet, misses it and does not learn of
// it later: the user's connections there stay open, until they close or
// their sign-in expires. So refuse the user's tokens as well (in
// wshub.Options.AuthenticateToken), so that a connection that missed the
// command cannot refresh and no new one can sign in. A hub also drops
// the commands that wait for it beyond Options.BurstBytes. Hubs need
// permission to publish and subscribe to the subject.
//
// # Room log (JetStream)
//
// A Log is an engine whose rooms with a history policy (the History of
// their wshub.RoomOptions, from wshub.Options.Rooms) go through a log in
// NATS JetStream that every hub shares; the other rooms go through core
// NATS as with a Broker, on the same connection. Connect to a NATS server
// (or cluster) with JetStream enabled and give the Log to the hub as its
// engine:
//
//	l, err := natsbroker.ConnectLog("nats://127.0.0.1:4222", nil)
//	if err != nil { … }
//	hub := wshub.New(handler, &wshub.Options{
//		Engine: l,
//		Rooms: func(room string) wshub.RoomOptions {
//			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}}
//		},
//	})
//
// or natsbroker.NewLog(nc, nil) on a connection of your own (made with
// nats.ReconnectBufSize(-1)). ConnectLog uses Connect's connection
// settings.
//
// What a history room gets, against the core-NATS broker:
//
//   - One order. Core NATS orders the messages of each publisher; with a
//     Log, every member of a room, on every hub, gets all its messages in
//     one order, the log's, each with its seq. The hub that publishes
//     delivers its own messages as it reads them back from the log.
//   - Acknowledged means stored. Room.Broadcast returns nil, and a client
//     gets its ack, once JetStream stored the message (with Replicas, on a
//     majority of the stream's servers); every hub that follows the room
//     delivers it, also after an outage. A publish that failed definitely
//     (ErrNotConnected: the connection was down; or a JetStream error) was
//     stored nowhere and is delivered nowhere. One that failed with
//     ErrUnconfirmed (sent, no acknowledgement before its context ended)
//     may be stored: then it is delivered like any other, by every hub.
//     With core NATS, a message is delivered to the hubs connected and
//     subscribed at that instant.
//   - Resume. A hub follows each history room through a JetStream
//     consumer; after a reconnection, a server restart or a failed
//     consumer it goes on from the last message it delivered, so its
//     members miss nothing that the log still has. When the log dropped
//     messages that the hub had not delivered (retention, during a long
//     outage), the hub closes the room's members with 1012 (service
//     restart): they rejoin with since and learn whether they could
//     recover. With core NATS, messages published during an outage are
//     lost to the hubs that were away.
//   - Recovery on any hub. History and recovery (join with history, or
//     with since and epoch; Room.History, Room.Position) read the shared
//     log, so a client that reconnects to another hub recovers there. A
//     room's epoch names its stream: its name and creation time.
//   - Seqs increase but are not consecutive: a room's seq is the stream
//     sequence of its message, and a stream holds all the rooms of one
//     policy.
//
// Appends are pipelined: each is published asynchronously and waits for
// its own acknowledgement, so many are in flight at once; they are stored
// in the order Publish was called, also across reconnections (the
// messages awaiting an acknowledgement are sent again, in order, before
// any new one, and JetStream drops duplicates by message ID for two
// minutes, or the policy's MaxAge if shorter).
//
// Storage. By default streams are kept in files (Options.MemoryStorage
// false): they survive server restarts, and rooms keep their epochs. With
// memory storage a restart loses the streams: they are created again,
// empty, with new epochs; hubs close the members of their history rooms
// with 1012, and rejoining clients are told they could not recover.
// Options.Replicas (1 by default) sets each stream's replicas in a
// JetStream cluster; with more than one, a Read also asks the stream's
// leader for the room's last message, so that a lagging replica answering
// a direct get cannot hide messages. All hubs sharing a prefix must use
// the same storage and replicas.
//
// Retention is per stream, so per policy: MaxMsgsPerSubject is the
// policy's Messages, MaxAge its MaxAge (an hour, wshub's default, when
// zero; JetStream wants at least 100 ms). Streams are created (or
// updated) when a policy is first used, and remain after the hubs stop;
// delete those of policies no longer used.
//
// Cost. Each history room with members on a hub costs that hub one
// ephemeral, in-memory, unacknowledged pull consumer on the server, made
// when the room's first local member joins and deleted when its last one
// leaves (or, if the hub vanished, by the server after two minutes of
// inactivity), and a heartbeat every 2 seconds while the room is idle. A
// join's read takes two round trips (a direct get of the room's retained
// messages, or of its last one, and the stream's info); an append one,
// shared by all in flight.
//
// Not covered: messages that an operator deletes or purges from a stream
// (recovery and gap detection assume that JetStream drops messages only
// by retention, oldest first, so they may report a recovery as complete
// although such messages are missing), and deleting or recreating a
// stream while hubs run (its new incarnation has a new epoch, and hubs
// close the members of its rooms with 1012, but a message appended to the
// old one just before may be lost). JetStream domains and API prefixes
// are not supported.
package natsbroker
