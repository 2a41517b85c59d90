package wshub

import (
	"time"
)

// Flow control. A client's read goroutine is what produces most of the
// hub's traffic: its publishes are queued for every member of a room and
// its requests for replies. Left alone, one client writing as fast as it
// can fills the queues of readers that keep up perfectly well, only
// because one goroutine can queue faster than many writers get scheduled.
//
// So the read goroutine is paced by the writers it feeds. When a message
// it handled left a client's queue congested, more than a quarter full in
// messages or bytes, it reads its next message only once each such queue
// has been taken by its writer, that client is closed, or WriteTimeout
// has passed since it began to wait. TCP then slows the sender, not the
// room. A client still congested at that deadline held up the room for
// WriteTimeout: it is closed with 1008 and "write timeout". Every sender
// queues at most one message beyond a quarter of a queue before it waits,
// so senders overflow a queue only when more of them than three quarters
// of it holds send at the same moment. Publishes through an engine that
// waits on the network are pipelined (protocol.go): the client's acker
// does this waiting, and up to 32 of a client's publishes may be queued
// beyond a quarter before its read goroutine waits too.
//
// Messages published on other hubs are paced alike: the hub delivers the
// next message of a room once the queues the last one congested were
// taken, so the engine passes a room's messages at the pace of its
// members. An engine that reads from a log (natsbroker's Log) then reads
// no faster; one that cannot be paced, core NATS, holds a burst up to a
// bound it documents. A member that stops reading must not stop the room,
// though: the hub waits for each queue one message congested at most
// paceWait (1 s, or WriteTimeout if shorter), and a client still congested
// then is waited for no more until its writer takes its queue again; it
// overflows, or times out, and is closed alone.
//
// Server-side sends (Client.Send, Room.Broadcast and Hub.Broadcast, from a
// Handler too) never wait for a client: a queue they overflow closes its
// client with "send queue full".

// congestedLocked reports whether c's queue is more than a quarter full.
func (c *Client) congestedLocked() bool {
	o := &c.hub.opts
	return 4*len(c.queue) > o.SendQueue || 4*c.queueBytes > o.SendQueueBytes
}

// wakeLocked releases the read goroutines waiting for c's queue, which its
// writer took.
func (c *Client) wakeLocked() {
	c.unpaced = false
	if c.space != nil {
		close(c.space)
		c.space = nil
	}
}

// spaceSignal returns a channel closed once c's queue is taken or c
// closes, or nil if c is not congested, or if paced and c is unpaced.
func (c *Client) spaceSignal(paced bool) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil || !c.congestedLocked() || paced && c.unpaced {
		return nil
	}
	if c.space == nil {
		c.space = make(chan struct{})
	}
	return c.space
}

// congested records, on the read goroutine of c, that the message it is
// handling left d congested.
func (c *Client) congested(d *Client) {
	c.waitFor = append(c.waitFor, d)
}

// awaitFlow waits, on c's read goroutine, for the clients that c's last
// message congested, as the comment at the top of this file describes.
func (c *Client) awaitFlow() {
	if len(c.waitFor) == 0 {
		return
	}
	c.awaitClients(c.waitFor)
	clear(c.waitFor)
	c.waitFor = c.waitFor[:0]
}

// paceWait bounds the wait of an engine's delivery for the queues that a
// message of another hub congested.
const paceWait = time.Second

// pace waits, on an engine's delivery to rm, for the clients ds whose
// queues it congested, as the comment at the top of this file says: for
// each at most paceWait, so that a member that stopped reading costs the
// room that once, and only it is unpaced.
func (h *Hub) pace(rm *room, ds []*Client) {
	limit := min(paceWait, h.opts.WriteTimeout)
	for i := range ds {
		for _, d := range h.awaitQueues(ds[i:i+1], limit, rm.gone, true) {
			d.mu.Lock()
			if d.congestedLocked() {
				d.unpaced = true
			}
			d.mu.Unlock()
		}
	}
}

// awaitClients waits for each of ds to be no longer congested, at most
// WriteTimeout in all, and closes those still congested then; it stops
// waiting when c closes.
func (c *Client) awaitClients(ds []*Client) {
	for _, d := range c.hub.awaitQueues(ds, c.hub.opts.WriteTimeout, c.ctx.Done(), false) {
		d.mu.Lock()
		if d.congestedLocked() {
			d.kickLocked(errWriteTimeout)
		}
		d.mu.Unlock()
	}
}

// awaitQueues waits for each of ds in turn to be no longer congested (with
// paced, not for those unpaced), at most limit in all, and returns the
// clients it had not seen through when limit passed; none if done closes
// first.
func (h *Hub) awaitQueues(ds []*Client, limit time.Duration, done <-chan struct{}, paced bool) []*Client {
	var timer *time.Timer
	for i, d := range ds {
		space := d.spaceSignal(paced)
		if space == nil {
			continue
		}
		if timer == nil {
			timer = time.NewTimer(limit)
			defer timer.Stop()
		}
		select {
		case <-space:
		case <-done:
			return nil
		case <-timer.C:
			return ds[i:]
		}
	}
	return nil
}
