package natsbroker

import "context"

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
	t, err := b.write(room, msg)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) error { return b.commit.wait(ctx, t) }, nil
}
