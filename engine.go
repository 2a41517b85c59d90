package wshub

import "context"

// An Engine puts the messages of each room in one order and carries them
// to every hub that follows the room, the publishing hub included: it is
// the one road of a room message (see docs/DESIGN.md). A hub publishes a
// room message to its engine and delivers to its local members only what
// the engine passes back to it, in the engine's order. The default engine
// keeps everything in the process (NewMemoryEngine); the natsbroker module
// has engines on NATS (core NATS, and a JetStream log for rooms with
// history). Set one in Options.Engine; the hub closes it when Shutdown or
// Close finishes.
//
// A room that keeps history (its HistoryPolicy keeps messages) numbers its
// messages: an Entry's Seq is its place in the room's history, increasing
// in the room's order, not necessarily by one. The hub calls Follow when a
// room gets its first local member and Unfollow when its last one leaves,
// one at a time for one room. It never calls an engine while holding a
// lock. Methods must be safe for concurrent use.
type Engine interface {
	// Publish hands msg, a room message encoded with JSONCodec and without
	// a seq, to the room's order and returns without waiting for the
	// engine to keep it. The returned wait waits for that: the message is
	// stored in the room's history if p keeps one, or handed to the bus,
	// as the engine documents. It returns nil then, an error if the
	// message will not reach the followers, and returns when ctx is done
	// at the latest; ctx may have no deadline, so an engine that waits on
	// the network bounds the wait itself. The hub calls wait once. If
	// Publish passed msg to this hub's follower before returning, wait
	// must return at once: the hub then calls it on the publishing
	// client's read goroutine. Messages published one after
	// another (each Publish returning before the next is called) keep
	// their order. id is unique to this publish and comes back in the
	// Entry that Follow passes, so that the publishing hub knows its own.
	Publish(ctx context.Context, room string, p HistoryPolicy, id string, msg []byte) (wait func() error)

	// Follow starts passing the messages of room, published by any hub,
	// to deliver, one at a time, in the room's order. For a room that
	// keeps history it starts after seq after, and goes on across
	// reconnections from the last message it passed. When it finds that
	// the history no longer holds messages that it has not passed, it
	// calls deliver with an Entry whose JSON is nil: the hub then closes
	// the room's local members with 1012 (service restart), so that they
	// recover what they can. deliver does not block on clients.
	Follow(room string, p HistoryPolicy, after uint64, deliver func(Entry)) error

	// Unfollow stops the deliveries of room; a delivery under way may
	// still finish.
	Unfollow(room string) error

	// Read returns the retained messages of a room that keeps history
	// with a seq greater than after, oldest first, at most limit of them
	// (the newest ones when there are more; all with a negative limit),
	// and where the history stands. A room without history yet gets a new
	// epoch and Latest 0.
	Read(ctx context.Context, room string, p HistoryPolicy, after uint64, limit int) (LogPage, error)

	// Close releases the engine.
	Close() error
}

// A PresenceEngine is an Engine that also shares the presence of rooms
// between hubs, so that a presence room's state and diffs cover its
// members on every hub. The natsbroker module's engines implement it on
// a JetStream key-value bucket.
//
// The hub calls WatchPresence before a presence room gets its first local
// member and UnwatchPresence when its last one leaves, SetPresence with
// its local members after each change (coalesced, at most once per 100 ms
// per room), and SetPresence(room, nil) when it has none. Close withdraws
// what the hub published.
type PresenceEngine interface {
	Engine

	// SetPresence publishes this hub's members of room, a JSON array of
	// Presence, replacing what it published before; nil withdraws them.
	// The engine keeps them visible to the other hubs while this hub is
	// alive and connected, and withdraws them within a bound it documents
	// when it is not.
	SetPresence(room string, members []byte) error

	// WatchPresence calls update with the members other hubs published
	// for room, as each hub's set changes (with nil when the hub withdrew
	// them or they expired), starting with the current ones, which it
	// passes before it returns. Calls for one room come one at a time.
	WatchPresence(room string, update func(hub string, members []byte)) error

	// UnwatchPresence stops the updates of room.
	UnwatchPresence(room string) error
}

// An Entry is a room message as an Engine carries it.
type Entry struct {
	// Seq is the message's place in its room's history; 0 in a room
	// without history.
	Seq uint64

	// Epoch names the room's history, when the engine knows it on a
	// message that Follow passes (the memory engine does). When it differs
	// from the epoch the hub knows, the history started anew without the
	// loss of a message the follower had not had (an in-memory history
	// that expired while the room was idle): its seqs start again, and
	// members learn the new epoch from this message. Engines that cannot
	// tell leave it empty and report a loss instead.
	Epoch string

	// ID is the id the message was published with; empty when read.
	ID string

	// JSON is the message encoded with JSONCodec, without a seq.
	JSON []byte
}

// A LogPage is a part of a room's history, as Engine.Read returns it.
type LogPage struct {
	Messages []Entry // oldest first
	Epoch    string  // names the history; it changes only if the history is lost and started again
	Latest   uint64  // the seq of the room's newest message, or a seq below any the room will get

	// Complete reports that the history still holds every message of the
	// room with a seq greater than after: none was dropped by retention.
	Complete bool
}
