package wshub

import "context"

// An Engine puts each room's messages in one order and carries them to
// every hub that follows the room, the publishing hub included: a hub
// delivers to its members only what its engine passes back, in that
// order (docs/DESIGN.md). NewMemoryEngine is the default; the natsbroker
// module has engines on NATS. The hub calls an engine holding no lock of
// its clients or rooms, calls Follow and Unfollow of one room one at a
// time (under that room's follow lock), and closes
// the engine when Shutdown or Close finishes. Methods must be safe for
// concurrent use.
//
// In a room whose HistoryPolicy keeps messages, the engine numbers them:
// an Entry's Seq is its place in the room's history, increasing in the
// room's order, not necessarily by one.
type Engine interface {
	// Publish hands msg, a room message encoded with JSONCodec and without
	// a seq, to the room's order, and returns without waiting for the
	// network or clients (only, within ctx, while the room's messages not
	// yet passed on pass a bound: the memory engine's is 1 MiB). wait waits
	// until the engine kept msg (stored it in the room's history if p keeps
	// one, or handed it to its bus, as it documents) and returns nil, or
	// why msg will not reach the followers; the hub calls it once. ctx may
	// have no deadline: an engine that waits on the network bounds the
	// wait itself. Messages published one after another keep their order.
	// id is unique to this publish and comes back in its Entry.
	Publish(ctx context.Context, room string, p HistoryPolicy, id string, msg []byte) (wait func() error)

	// Follow starts passing room's messages, from every hub, to deliver,
	// one at a time, in the room's order; in a room with history, those
	// after seq after, going on across reconnections. An Entry with a nil
	// JSON says that the history lost messages not yet passed: the hub
	// closes the room's members with 1012 so that they recover. deliver
	// returns, for another hub's message, once the queues it congested
	// were taken (a second at most): an engine reading a log reads on at
	// that pace; one that cannot be paced holds what comes meanwhile, up
	// to a bound it documents, and passes a loss past it.
	Follow(room string, p HistoryPolicy, after uint64, deliver func(Entry)) error

	// Unfollow stops the deliveries of room; one under way may finish.
	Unfollow(room string) error

	// Read returns the room's retained messages with a seq above after,
	// oldest first, at most limit (the newest; all if negative), and where
	// the history stands; a room without history yet gets a new epoch.
	// The hub only reads the page: its messages may be shared.
	Read(ctx context.Context, room string, p HistoryPolicy, after uint64, limit int) (LogPage, error)

	// Close releases the engine.
	Close() error
}

// A PresenceEngine is an Engine that shares the presence of rooms between
// hubs. The hub calls WatchPresence before a presence room gets its first
// local member and UnwatchPresence after its last one left, and
// SetPresence after changes (at most once per 100 ms per room).
type PresenceEngine interface {
	Engine

	// SetPresence publishes this hub's members of room, a JSON array of
	// Presence, replacing what it published before; nil withdraws them.
	// The engine withdraws them within a bound it documents when this hub
	// is gone.
	SetPresence(room string, members []byte) error

	// WatchPresence calls update with the members each other hub published
	// for room, nil when withdrawn, starting with the current ones before
	// it returns; one call at a time per room.
	WatchPresence(room string, update func(hub string, members []byte)) error

	// UnwatchPresence stops the updates of room.
	UnwatchPresence(room string) error
}

// A CommandEngine is an Engine that carries commands between hubs, such
// as Hub.DisconnectUser's. Delivery is at most once: a hub cut off from
// the bus when a command passes misses it.
type CommandEngine interface {
	Engine

	// Command hands cmd, a JSON object, to the bus for every hub, this
	// one included, and returns once the bus took it, or why not.
	Command(ctx context.Context, cmd []byte) error

	// HandleCommands makes handle get the commands of every hub, one at a
	// time, until the engine closes; New calls it once.
	HandleCommands(handle func(cmd []byte)) error
}

// An Entry is a room message as an Engine carries it.
type Entry struct {
	Seq uint64 // its place in the room's history; 0 without history

	// Epoch names the room's history, if the engine knows it. A new one
	// means the history started anew without losing a message the hub had
	// not had (it expired while idle): members learn it from this message.
	Epoch string

	ID   string // the id it was published with; empty when read
	JSON []byte // encoded with JSONCodec, without seq
}

// A LogPage is a part of a room's history, as Engine.Read returns it.
type LogPage struct {
	Messages []Entry // oldest first
	Epoch    string  // names the history; changes only when it is lost and started again
	Latest   uint64  // the seq of the newest message, or one below any the room will get

	Complete bool // no message with a seq above after was dropped by retention
}
