package wshub

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The room log. With a LogBroker, a message of a history room is not
// delivered by the hub that publishes it: Hub.publishLog appends it to the
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

// publishLog appends m to the log of room name, whose history policy is
// p, and waits, within ctx or WriteTimeout, for its delivery here when the
// room has members on this hub.
func (h *Hub) publishLog(ctx context.Context, name string, m *Message, from *Client, except []*Client, p HistoryPolicy) error {
	stored, err := (JSONCodec{}).Marshal(m)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.opts.WriteTimeout)
		defer cancel()
	}
	own := &ownPublish{m: m, from: from, except: except, done: make(chan struct{})}
	ls := &h.logs
	ls.mu.Lock()
	ls.next++
	id := h.id + "-" + strconv.FormatUint(ls.next, 36)
	ls.mu.Unlock()
	gone := h.awaitOwn(name, id, own)
	if gone != nil {
		defer func() {
			ls.mu.Lock()
			delete(ls.own, id)
			ls.mu.Unlock()
		}()
	}
	err = h.withBroker(func(Broker) error {
		if _, err := h.log.Append(ctx, name, p, id, stored); err != nil {
			return fmt.Errorf("%w: append to %q: %w", ErrBroker, name, err)
		}
		return nil
	})
	if err != nil || gone == nil {
		return err
	}
	// Stored, so it is delivered: wait for that here, at most
	// WriteTimeout, unless the room's local members left meanwhile.
	t := time.NewTimer(h.opts.WriteTimeout)
	defer t.Stop()
	select {
	case <-own.done:
		if from != nil {
			for _, c := range own.congested {
				from.congested(c)
			}
		}
	case <-gone:
	case <-ctx.Done():
	case <-t.C:
	}
	return nil
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
	if rm.dead || seq <= rm.cursor {
		return
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

// roomPolicy returns the history policy of room name: policy when the
// caller knew it, else the room's, else Options.History's.
func (h *Hub) roomPolicy(name string, policy HistoryPolicy) HistoryPolicy {
	if policy.on() {
		return policy
	}
	if rm := h.lookup(name); rm != nil {
		return rm.policy
	}
	return h.policyFor(name)
}
