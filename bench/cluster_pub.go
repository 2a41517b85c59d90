package main

import (
	"bytes"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// A pubClient is a WebSocket client of a hub that publishes to its room,
// one of the room's members: the cluster scenario's publisher unless
// -cluster-broadcast. It writes {"type":"publish","room":…,"id":…,"data":…}
// frames, ids 1, 2, 3, …, without waiting for each ack, at most window
// unanswered at once; its read loop (the client's, which counts its
// deliveries, its own messages included) reads the acks as they come and
// checks that they come in the order of the ids.
type pubClient struct {
	c      *client
	room   string
	window int64

	handed   atomic.Int64 // publishes handed to it
	written  atomic.Int64 // publishes written; the last id
	acked    atomic.Int64 // ack frames
	errored  atomic.Int64 // error frames
	disorder atomic.Int64 // answers whose id was not the next one

	wake chan struct{} // a publish was handed over or answered
	stop chan struct{}
	done chan struct{} // the writer ended

	mu     sync.Mutex
	errMsg string // the first error frame, or why the writer failed
}

var (
	ackType   = []byte(`"type":"ack"`)
	errorType = []byte(`"type":"error"`)
	idKey     = []byte(`"id":"`)
)

// pubWriteTimeout bounds one write of a publish frame.
const pubWriteTimeout = 10 * time.Second

// newPubClient makes c, a member of room, a publisher; start its read loop
// with startPub.
func newPubClient(c *client, room string, window int) *pubClient {
	pc := &pubClient{
		c: c, room: room, window: int64(window),
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	c.onFrame = pc.frame
	return pc
}

// startPub starts the read loop of pc's client and its writer.
func (pc *pubClient) startPub() {
	go pc.c.readLoop()
	go pc.write()
}

// stopPub ends the writer and waits for it, at most a few seconds (a
// write blocked on a full socket ends when the connection is closed).
func (pc *pubClient) stopPub() {
	select {
	case <-pc.stop:
	default:
		close(pc.stop)
	}
	select {
	case <-pc.done:
	case <-time.After(pubWriteTimeout + time.Second):
	}
}

// publish hands pc n more publishes.
func (pc *pubClient) publish(n int64) {
	pc.handed.Add(n)
	pc.signal()
}

func (pc *pubClient) signal() {
	select {
	case pc.wake <- struct{}{}:
	default:
	}
}

// answered counts the publishes answered, with an ack or an error.
func (pc *pubClient) answered() int64 { return pc.acked.Load() + pc.errored.Load() }

// write writes the publishes handed over, keeping at most window of them
// unanswered, until stop.
func (pc *pubClient) write() {
	defer close(pc.done)
	for {
		select {
		case <-pc.stop:
			return
		default:
		}
		written := pc.written.Load()
		pend, out := pc.handed.Load()-written, written-pc.answered()
		if pend == 0 || out >= pc.window {
			select {
			case <-pc.wake:
			case <-pc.stop:
				return
			}
			continue
		}
		for range min(pend, pc.window-out) {
			id := pc.written.Load() + 1
			frame := fmt.Appendf(nil, `{"type":"publish","room":%q,"id":"%d","data":%s}`, pc.room, id, newPayload())
			pc.c.conn.SetWriteDeadline(time.Now().Add(pubWriteTimeout))
			if err := pc.c.write(frame); err != nil {
				if !pc.c.closing.Load() {
					pc.note("write: " + err.Error())
				}
				return
			}
			pc.written.Add(1)
		}
	}
}

// frame reads an answer to a publish; the client counts the messages.
func (pc *pubClient) frame(data []byte) {
	var n *atomic.Int64
	switch {
	case bytes.Contains(data, ackType):
		n = &pc.acked
	case bytes.Contains(data, errorType):
		n = &pc.errored
		pc.note("error frame " + string(data))
	default:
		return
	}
	if want := pc.answered() + 1; idOf(data) != want {
		pc.disorder.Add(1)
	}
	n.Add(1)
	pc.signal()
}

func (pc *pubClient) note(s string) {
	pc.mu.Lock()
	if pc.errMsg == "" {
		pc.errMsg = s
	}
	pc.mu.Unlock()
}

// idOf returns the numeric "id" of a frame, or -1.
func idOf(data []byte) int64 {
	i := bytes.Index(data, idKey)
	if i < 0 {
		return -1
	}
	rest := data[i+len(idKey):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return -1
	}
	n, err := strconv.ParseInt(string(rest[:j]), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// pubTally sums what the publishing clients were told.
type pubTally struct {
	handed, written, acked, errored, disorder int64
	first                                     string // the first error of one of them
}

func tallyPubs(pubs []*pubClient) pubTally {
	var t pubTally
	for _, pc := range pubs {
		t.handed += pc.handed.Load()
		t.written += pc.written.Load()
		t.acked += pc.acked.Load()
		t.errored += pc.errored.Load()
		t.disorder += pc.disorder.Load()
		pc.mu.Lock()
		if t.first == "" && pc.errMsg != "" {
			t.first = pc.errMsg
		}
		pc.mu.Unlock()
	}
	return t
}

// waitAnswered waits until every publish handed to pubs was written and
// answered, or until deadline, and returns the tally.
func waitAnswered(pubs []*pubClient, deadline time.Time) pubTally {
	for {
		t := tallyPubs(pubs)
		if t.acked+t.errored == t.handed || time.Now().After(deadline) {
			return t
		}
		time.Sleep(5 * time.Millisecond)
	}
}
