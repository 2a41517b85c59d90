// Package redisengine implements wshub.Engine, wshub.PresenceEngine and
// wshub.CommandEngine on Redis, so that the rooms of many wshub hubs, in
// as many processes, behave as one: a message published in room "lobby"
// on one hub reaches the members of "lobby" on every hub, rooms with
// history keep one order and recover on any hub, presence covers the
// members of every hub, and Hub.DisconnectUser reaches every hub.
// It is built on github.com/redis/rueidis.
//
// Connect to Redis and give the engine to the hub:
//
//	e, err := redisengine.Connect("redis://127.0.0.1:6379", nil)
//	if err != nil { … }
//	hub := wshub.New(handler, &wshub.Options{Engine: e})
//
// or, with a rueidis client of your own, redisengine.New(client, nil).
// The hub closes the engine when it shuts down; an engine made by Connect
// then closes its client, one made by New leaves it to you. Redis 6.2 or
// later is needed (7 for a cluster); a Redis Cluster is used as one when
// the address is one of its nodes.
//
// # Keys
//
// Every key and channel of a room starts with the prefix
// (Options.Prefix, "wshub" by default), then the room name in unpadded
// base64url (RFC 4648 §5) within braces, then its kind: room "lobby" has
// "wshub:{bG9iYnk}:log" (Engine.Key). The braces make the room's name
// Redis Cluster's hash tag, so that all of a room's keys and channels are
// in one slot, as its scripts need. The kinds:
//
//	m      the pub/sub channel of a room without history
//	log    the stream of a room with history
//	meta   a hash: e, the epoch of the room's history; s, its last seq
//	n      the channel that announces each append: "<epoch> <seq>"
//	id:ID  the seq of the append with that id, for 2×Timeout+1s
//	pres   a hash: hub ID to the JSON array of that hub's members
//	presx  a sorted set: hub ID scored by when its entry expires
//	p      the channel that announces a change of a hub's entry
//
// The engine also publishes on "<prefix>:{}:ctl", which it subscribes to
// in order to notice reconnections, and carries the hubs' commands on
// "<prefix>:{}:cmd" (see "Commands"). Hubs that share rooms must share
// the prefix, and agree on each room's HistoryPolicy and on PresenceTTL.
//
// # Rooms without history
//
// They go through Redis pub/sub: the hub PUBLISHes each message on the
// room's channel (SPUBLISH on a cluster, whose sharded channels stay on
// the node of their slot), and delivers what its subscription receives,
// from every hub, its own included. It is at most once across hubs, as
// pub/sub is: a hub that is disconnected or reconnecting misses what is
// published meanwhile, and its members never see those messages. Each
// publisher's messages reach every hub in the order published.
//
// What acknowledged means. Publish's wait returns nil once Redis ran the
// PUBLISH, which means that Redis passed the message to the hubs
// subscribed at that instant; that is all an ack frame, or
// Room.Broadcast returning nil, means for such a room.
//
// Bursts. The hub delivers a room's messages at the pace its members take
// them, and pub/sub does not wait: what arrives meanwhile waits in the
// engine, up to Options.BurstBytes (8 MiB by default) of payloads per
// room. Past it the engine drops messages for this hub and passes the hub
// a loss, which closes the room's local members with 1012 so that they
// learn that they missed some.
//
// # Rooms with history
//
// A room whose RoomOptions.History keeps messages has one Redis Stream.
// One Lua script appends a message: it takes the room's next seq from
// the room's meta, adds the message to the stream with the ID
// "<seq>-0" and the server's time, cuts the stream to the policy's
// Messages (XADD MAXLEN), sets both keys to expire MaxAge after the last
// append, and announces "<epoch> <seq>" on the room's channel n. Redis
// runs a script atomically, so:
//
//   - One order. Every hub, the publishing hub included, delivers a
//     room's messages as it reads them from the stream, in the stream's
//     order, each with its seq; seqs have no gaps.
//   - Acknowledged means stored. Publish's wait returns nil once Redis ran
//     the script, and every hub that follows the room delivers the
//     message, also after an outage of its own, as long as the stream
//     still holds it. With persistence (appendonly yes) that survives a
//     restart of Redis; with appendfsync always, a crash of its machine.
//     Redis may come back with older data (a snapshot, an append-only file
//     fsynced a second before a crash, a replica that lagged when it took
//     over): the messages after it are lost. A hub that passed one of
//     them sees the history go back, ends its epoch for every hub (the
//     seqs would otherwise be given again), and closes the room's members
//     with 1012; their rejoins are told recovered:false.
//   - Resume. A hub follows a room by its announcements, reading the
//     stream after the last seq it delivered, a batch at a time and at the
//     pace its members take them. After a reconnection it reads on from
//     there; when the stream dropped messages it had not delivered (cut
//     to Messages, or expired), it closes the room's members with 1012:
//     they rejoin with since and learn whether they could recover.
//   - Recovery on any hub. History and recovery read the shared stream,
//     with the same recovered rules as the JetStream log of natsbroker.
//   - Epochs. The epoch is stored with the seq. When the meta is missing
//     (a restart without persistence, FLUSHALL, an evicted key, or a room
//     idle for MaxAge), the next read or append starts a new history
//     under a new epoch. Hubs close the room's members with 1012, and
//     their rejoins are told recovered:false, unless the old history
//     expired: the room was idle for MaxAge and the hub missed nothing
//     of it (its subscription stayed up); then the members learn the new
//     epoch from its first message.
//
// An append whose answer was lost (the connection broke) is sent again
// once, with the same id, when Redis can be reached; the id key makes the
// script store it once. If no answer comes, Publish's wait returns
// ErrUnconfirmed: the script ran or it did not, so every hub delivers the
// message or none does.
//
// Cost. An append is one script run (a few hundred bytes, pipelined with
// the others in flight) and leaves an id key for 2×Timeout+1s; a join's
// read is one script run. Scripts cost Redis more than a PUBLISH: in the
// benchmarks (BENCHMARKS.md, "Many hubs") a PUBLISH took 1.3–2 µs of
// Redis's time and a script run 84 µs on a busy machine, most of it in
// the Lua interpreter, which bounds what one Redis carries for rooms
// with history. Each room with history and members on a hub
// costs that hub one subscription on its connection and one goroutine,
// and Redis the stream of up to Messages entries.
//
// # When Redis is unreachable
//
// While Redis cannot be reached, Publish's wait returns ErrNotConnected
// (or ErrUnconfirmed, for a message sent just as the connection broke):
// Room.Broadcast returns an error wrapping wshub.ErrEngine, a client's
// publish gets an error frame, and the message reaches no member, on this
// hub or another. Delivering locally would split each room into one
// conversation per hub for the length of the outage. Nothing is
// acknowledged that was not stored. Joins keep working; rooms with
// history read their stream again when Redis is back, and Hub.Broadcast,
// which stays on its hub, keeps working too.
//
// The engine reconnects quickly: each subscription tries again after
// 100 ms plus up to 50 ms of jitter, doubling up to 2 s, so that the hubs
// of a cluster come back within a fraction of a second of Redis and not
// all at the same instant; a publish after an outage makes a new
// connection at once. Connect fails when Redis does not answer; with
// Options.RetryOnFailedConnect it returns an engine at once, so that a
// hub can start while Redis is down, and its rooms behave as in an outage
// until the first connection. Engine.Reconnects counts the reconnections
// (wshub.Stats.EngineReconnects).
//
// # Presence
//
// A hub whose Options.Rooms gives rooms presence shares their members
// with the other hubs through the room's pres hash: one entry per hub,
// the JSON array of its members there, with its expiry in the presx
// sorted set, measured by Redis's clock (the hubs' clocks do not
// matter). A hub writes an entry when its members change (at most ten
// times a second per room) and refreshes it every PresenceTTL/3; an
// entry lives two thirds of PresenceTTL after its last write. The hubs
// that watch the room read its live entries when a change is announced
// on the room's channel p and every PresenceTTL/3. So:
//
//   - While a hub is alive and connected its members stay visible.
//   - When it crashes or loses Redis, its members leave the others'
//     views within PresenceTTL (30 s by default).
//   - A hub that reconnects writes its entries again at once, and reads
//     the others'. While a hub cannot reach Redis for PresenceTTL, it
//     withdraws the other hubs' members from its own view, since it can
//     no longer tell which are alive; they come back when it reconnects.
//   - On a clean shutdown (Hub.Shutdown or Hub.Close) the hub deletes its
//     entries, waiting at most 2 seconds: the others see its members
//     leave at once.
//
// A value holds all of the room's members on that hub, so it must fit in
// a Redis string (512 MB), and is read whole by every watching hub at
// each change.
//
// # Commands
//
// The engine implements wshub.CommandEngine, so that Hub.DisconnectUser
// closes a user's connections on every hub that shares the prefix, not
// only its own. The hub PUBLISHes the command, a small JSON object, on
// the channel "<prefix>:{}:cmd" (SPUBLISH on a cluster, where the channel
// lives on the node of its slot, as a room's do), after the publishes
// queued before it, and Command returns once Redis ran the PUBLISH.
// Every hub subscribes to the channel when it starts (HandleCommands)
// and carries out each command it receives; the hub that sent one has
// acted already, and ignores it when Redis hands it back.
//
// Delivery is at most once, as pub/sub is: Redis passes a command to the
// subscriptions it has at that moment and keeps none. A hub that cannot
// reach Redis or is subscribing again when a command passes, or that was
// not started yet, misses it and does not learn of it later: the user's
// connections there stay open, until they close or their sign-in
// expires. So refuse the user's tokens as well (in
// wshub.Options.AuthenticateToken), so that a connection that missed the
// command cannot refresh and no new one can sign in. A hub also drops the
// commands that wait for it beyond Options.BurstBytes. A command whose
// answer was lost is not sent again (it would be carried out twice):
// Command then returns ErrUnconfirmed.
//
// # Compared with natsbroker
//
// Both give the same guarantees to rooms with history: one order,
// acknowledged means stored, recovery on any hub, a new epoch and 1012
// when the history is lost. Rooms without history, and the hubs'
// commands, are at most once on both. Here a history room's seqs are consecutive, its retention is per
// room, and a room idle for MaxAge starts a new epoch.
package redisengine
