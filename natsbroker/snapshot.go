package natsbroker

import (
	"context"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/wshub/wshub"
)

// Reads of a room's history share their work. A join with since reads the
// whole room (a snapshot: its messages, then the stream's state) and
// keeps what it needs; when a hub restarts, thousands of clients rejoin a
// few rooms at once, and one snapshot per client would make each of them
// wait for all the others' reads. So the reads of one room queue for one
// snapshot: a read takes the next snapshot to start, which starts once
// the one running has ended, and whatever reads queued meanwhile take it
// too. A snapshot that a read takes starts after the read began, so it
// holds every message stored before that: sharing changes no page.

// snapshot is the whole of a room's history at one moment.
type snapshot struct {
	done chan struct{} // closed once the fields are set
	msgs []wshub.Entry // oldest first; shared, never modified
	info *jetstream.StreamInfo
	err  error
}

// snapshots queues the snapshots of one room.
type snapshots struct {
	running *snapshot
	next    *snapshot // not started yet; reads that come now take it
}

// snapshotKey names a room's snapshots: its subject and how many messages
// a snapshot reads.
type snapshotKey struct {
	subj string
	max  int
}

// snapshotLog holds the rooms' snapshot queues of a Log.
type snapshotLog struct {
	mu    sync.Mutex
	rooms map[snapshotKey]*snapshots
}

// snapshot returns a snapshot of room subj of s taken after the call
// began: up to p.Messages of its messages, read in one step, then the
// stream's state.
func (l *Log) snapshot(ctx context.Context, s *logStream, h jetstream.Stream, subj string, p wshub.HistoryPolicy) (*snapshot, error) {
	key := snapshotKey{subj, p.Messages}
	sl := &l.snaps
	sl.mu.Lock()
	if sl.rooms == nil {
		sl.rooms = make(map[snapshotKey]*snapshots)
	}
	q := sl.rooms[key]
	if q == nil {
		q = new(snapshots)
		sl.rooms[key] = q
	}
	if sn := q.next; sn != nil {
		sl.mu.Unlock()
		return sn.wait(ctx)
	}
	sn := &snapshot{done: make(chan struct{})}
	q.next = sn
	running := q.running
	sl.mu.Unlock()

	// This read runs sn, for every read that takes it: after the running
	// one, and bounded by the Log's timeout, not by this read's context,
	// since others wait for it. So the read that runs a snapshot may take
	// up to twice the timeout (the running one, then its own) whatever
	// its context.
	if running != nil {
		<-running.done
	}
	sl.mu.Lock()
	q.running, q.next = sn, nil
	sl.mu.Unlock()
	rctx, cancel := l.boundCtx(context.WithoutCancel(ctx))
	sn.msgs, sn.err = l.directBatch(rctx, s, subj, p.Messages)
	if sn.err == nil {
		sn.info, sn.err = h.Info(rctx, jetstream.WithSubjectFilter(subj))
	}
	cancel()
	sl.mu.Lock()
	q.running = nil
	if q.next == nil {
		delete(sl.rooms, key)
	}
	sl.mu.Unlock()
	close(sn.done)
	return sn, sn.err
}

func (sn *snapshot) wait(ctx context.Context) (*snapshot, error) {
	select {
	case <-sn.done:
		return sn, sn.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
