package wshub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The room log. With a LogBroker, a message of a history room is not
// delivered by the hub that publishes it: Hub.startLog appends it to the
// room's log, and every hub delivers the log's messages, in the log's
// order, as it follows it (Hub.receiveLog). Each room keeps a cursor, the
// seq of the last message delivered to its members, so that a join's
// replay and the live messages meet without a gap or a repeat, as with a
// local HistoryStore.
//
// The publishing hub still knows its own messages when they come back, by
// the id it appended them with: it leaves out the clients the broadcast
// excepted, lets the publishing client's read goroutine wait for the
// queues the message congested (flow.go), and returns from the publish
// once its own members have the message, so that a client sees its
// message before its ack, as without a log.

// ownPublish is a publish of this hub on its way through the log.
type ownPublish struct {
	m         *Message
	from      *Client
	except    []*Client
	congested []*Client     // by the delivery, for from's read goroutine; written before done closes
	done      chan struct{} // closed once delivered to the room's members here
}

// logState is a Hub's part of the room log.
type logState struct {
	next uint64 // numbers this hub's publishes; guarded by mu
	mu   sync.Mutex
	own  map[string]*ownPublish // by append id
}

// A logAppend is a publish handed to the log.
type logAppend struct {
	h      *Hub
	name   string
	id     string
	own    *ownPublish
	gone   <-chan struct{} // nil when the room has no local members
	wait   func() (uint64, error)
	ctx    context.Context
	cancel context.CancelFunc
}

// startLog hands m to the log of room name and returns the append to
// finish, within ctx or, if it has no deadline, WriteTimeout.
func (h *Hub) startLog(ctx context.Context, name string, m *Message, from *Client, except []*Client, p HistoryPolicy) (*logAppend, error) {
	stored, err := (JSONCodec{}).Marshal(m)
	if err != nil {
		return nil, err
	}
	a := &logAppend{h: h, name: name, cancel: func() {}}
	if _, ok := ctx.Deadline(); !ok {
		ctx, a.cancel = context.WithTimeout(ctx, h.opts.WriteTimeout)
	}
	a.ctx = ctx
	a.own = &ownPublish{m: m, from: from, except: except, done: make(chan struct{})}
	ls := &h.logs
	ls.mu.Lock()
	ls.next++
	a.id = h.id + "-" + strconv.FormatUint(ls.next, 36)
	ls.mu.Unlock()
	a.gone = h.awaitOwn(name, a.id, a.own)
	err = h.withBroker(func(Broker) error {
		a.wait = h.log.Append(ctx, name, p, a.id, stored)
		return nil
	})
	if err != nil {
		a.forget()
		a.cancel()
		return nil, err
	}
	return a, nil
}

// finish waits until the log stored the message, then, if the room has
// local members, for its delivery to them, at most WriteTimeout: a client
// sees its own message before its ack. It returns the clients whose queue
// that delivery left congested, for the publisher to wait for (flow.go).
func (a *logAppend) finish() ([]*Client, error) {
	defer a.cancel()
	defer a.forget()
	if _, err := a.wait(); err != nil {
		return nil, fmt.Errorf("%w: append to %q: %w", ErrBroker, a.name, err)
	}
	if a.gone == nil {
		return nil, nil
	}
	t := time.NewTimer(a.h.opts.WriteTimeout)
	defer t.Stop()
	select {
	case <-a.own.done:
		return a.own.congested, nil
	case <-a.gone: // the room's local members left
	case <-a.ctx.Done(): // the publishing client is closing
	case <-t.C: // stored, so delivered here later
	}
	return nil, nil
}

func (a *logAppend) forget() {
	if a.gone != nil {
		ls := &a.h.logs
		ls.mu.Lock()
		delete(ls.own, a.id)
		ls.mu.Unlock()
	}
}

// awaitOwn registers own, the publish with append id, to be recognized
// when the log delivers it, if the room has local members; it returns a
// channel closed when the room is removed, or nil if it has no members.
func (h *Hub) awaitOwn(name, id string, own *ownPublish) <-chan struct{} {
	rm := h.lookup(name)
	if rm == nil {
		return nil
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.dead {
		return nil
	}
	if rm.gone == nil {
		rm.gone = make(chan struct{})
	}
	h.logs.mu.Lock()
	h.logs.own[id] = own
	h.logs.mu.Unlock()
	return rm.gone
}

// receiveLog delivers a message of the room's log to its local members,
// unless they had it already; a nil msg means the log lost messages that
// they have not had.
func (h *Hub) receiveLog(name string, seq uint64, id string, msg []byte) {
	if msg == nil {
		h.logLost(name)
		return
	}
	ls := &h.logs
	ls.mu.Lock()
	own := ls.own[id]
	delete(ls.own, id)
	ls.mu.Unlock()
	if own != nil {
		defer close(own.done)
	}
	if h.closing.Load() {
		return
	}
	rm := h.lookup(name)
	if rm == nil {
		return
	}
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.dead || !rm.positioned || seq <= rm.cursor {
		return // its members have it, or are closing since the log lost messages
	}
	rm.cursor = seq
	var m *Message
	if own != nil {
		m = own.m
	} else {
		m = new(Message)
		if err := (JSONCodec{}).Unmarshal(msg, m); err != nil || m.Type == "" {
			h.opts.Logger.Warn("wshub: undecodable log message", "room", name, "seq", seq, "err", err)
			return
		}
		m.Room = name
	}
	m.Seq = seq
	enc := h.newEncoding(m)
	enc.setJSON(withPosition(msg, seq, ""))
	for c := range rm.members {
		if own != nil && contains(own.except, c) {
			continue
		}
		if s, ok := rm.skip[c]; ok {
			if seq <= s {
				continue // recovered on this hub past its cursor
			}
			delete(rm.skip, c)
		}
		if congested, err := enc.queue(c); congested && own != nil && own.from != nil {
			own.congested = append(own.congested, c)
		} else if err != nil && err != ErrClientClosed {
			h.opts.Logger.Debug("wshub: log message not queued", "room", name, "client", c.id, "err", err)
		}
	}
}

// logLost closes the room's local members, since the log lost messages
// that they have not had: they rejoin with since and learn what they can
// recover.
func (h *Hub) logLost(name string) {
	rm := h.lookup(name)
	if rm == nil {
		return
	}
	rm.mu.Lock()
	// The next join takes its position from the log again: if the log
	// was started anew, its seqs may be below the cursor.
	rm.cursor, rm.positioned, rm.epoch, rm.skip = 0, false, "", nil
	members := make([]*Client, 0, len(rm.members))
	for c := range rm.members {
		members = append(members, c)
	}
	rm.mu.Unlock()
	h.opts.Logger.Warn("wshub: the room's log lost messages; closing its members", "room", name, "members", len(members))
	for _, c := range members {
		c.closeWith(websocket.StatusServiceRestart, "room log lost messages", fmt.Errorf("%w: the log of %q lost messages", ErrBroker, name), true)
	}
}

// readHistory reads the room's history from the log or the HistoryStore.
// A HistoryStore numbers a room's messages without gaps, so its read is
// complete when it starts right after after.
func (h *Hub) readHistory(ctx context.Context, name string, p HistoryPolicy, after uint64, limit int) (LogPage, error) {
	if h.log != nil {
		return h.log.Read(ctx, name, p, after, limit)
	}
	msgs, epoch, latest, err := h.history.Read(ctx, name, p, after, limit)
	complete := after >= latest || len(msgs) > 0 && msgs[0].Seq == after+1
	return LogPage{Messages: msgs, Epoch: epoch, Latest: latest, Complete: complete}, err
}

// roomPolicy returns the history policy of room name: the room's, or
// Options.History's if it has no members here.
func (h *Hub) roomPolicy(name string) HistoryPolicy {
	if rm := h.lookup(name); rm != nil {
		return rm.policy
	}
	return h.policyFor(name)
}

// Pipelining. A client's publishes to rooms with a log, or through an
// AsyncBroker, are handed over one after another, in order, on its read
// goroutine, which goes on reading while up to pipeWindow of them are in
// flight. The client's acker
// goroutine waits for each in turn and answers it, so acks (and errors)
// come in the order of the publishes; the read goroutine waits for the
// acker to be done before it answers anything itself.

// pipeWindow bounds a client's publishes in flight.
const pipeWindow = 32

// errPipelined tells dispatch that the acker answers the message.
var errPipelined = errors.New("wshub: answered by the acker")

type pipeItem struct {
	id, room string
	a        inflight
}

// inflight is a publish handed to the log or the broker.
type inflight interface {
	// finish waits for the publish to be stored or confirmed and
	// delivered here, and returns the clients whose queues that
	// congested.
	finish() ([]*Client, error)
}

// pipeline passes a, a publish with id handed to the log or the broker, to
// the acker, waiting while the window is full.
func (c *Client) pipeline(id, room string, a inflight) {
	if c.pipe == nil {
		c.pipe = make(chan pipeItem, pipeWindow)
		c.spawn(c.acker)
	}
	c.piped.Add(1)
	c.pipe <- pipeItem{id, room, a}
}

// acker answers the client's pipelined publishes in order, once stored
// and delivered to this hub's members, and waits for the queues their
// delivery congested (flow.go); it ends when the read goroutine does.
func (c *Client) acker() {
	for it := range c.pipe {
		congested, err := it.a.finish()
		c.awaitClients(congested)
		var answer *Message
		switch {
		case err != nil:
			answer = &Message{Type: TypeError, ID: it.id, Room: it.room, Error: err.Error()}
		case it.id != "":
			answer = &Message{Type: TypeAck, ID: it.id}
		}
		if answer != nil {
			if congested, _ := c.send(answer); congested {
				c.awaitClients([]*Client{c})
			}
		}
		c.piped.Done()
	}
}
