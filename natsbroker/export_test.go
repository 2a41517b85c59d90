package natsbroker

import (
	"context"

	"github.com/wshub/wshub"
)

// MaxFlushes is how many waiting publishes may each have a flush in
// flight; when more wait, they share.
const MaxFlushes = maxFlushes

// CommitStats returns the confirmation flushes b started and the publishes
// that waited for one.
func CommitStats(b *Broker) (flushes, waits uint64) { return b.commit.stats() }

// Write publishes msg as b.Publish does but returns at once, with the wait
// for the message's confirmation, so that a test can order the waits of
// messages already written.
func Write(b *Broker, room string, msg []byte) (wait func(context.Context) error, err error) {
	t, err := b.write(b.message(room, "", msg))
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return b.commit.wait(ctx, t) }, nil
}

// Append publishes msg to the log of a history room as l.Publish does,
// and its wait also returns the message's seq.
func Append(l *Log, ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) (wait func() (uint64, error)) {
	return l.appendLog(ctx, room, p, id, msg)
}

// CommandSubject returns the subject of the hubs' commands.
func CommandSubject(b *Broker) string { return b.commandSubject() }
