package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"time"
)

// The flood scenario is the opposite of the closed loop of the others: one
// client publishes as fast as its connection takes the frames, with no
// window, into a room of readers that read as fast as loopback allows. It
// shows what each contender does when a room's input outruns its output:
// queue, slow the publisher down, drop messages, or close readers.

// floodPlan bounds one flood in count and in time.
type floodPlan struct {
	messages   int           // the publisher sends at most this many
	publishFor time.Duration // and stops writing after this long
	drainFor   time.Duration // then the readers get at most this long to catch up
	quiet      time.Duration // or until none of them received anything for this long
}

// floodResult is what one flood did.
type floodResult struct {
	sent      int64 // frames the publisher wrote without an error
	delivered int64 // messages the readers received
	expected  int64 // sent times the readers

	publishTime time.Duration // first write to the end of the last
	deliverTime time.Duration // first write to the last delivery; 0 without one
	timedOut    bool          // the publisher ran out of publishFor

	readersClosed int
	reasons       map[string]int // how the closed readers' connections ended
	publisher     string         // how the publisher's connection ended; "" if it did not
}

// floodPlan is the plan of cfg's flood runs.
func (cfg *config) floodPlan() floodPlan {
	return floodPlan{messages: cfg.floodMessages, publishFor: cfg.floodFor, drainFor: cfg.floodDrain, quiet: cfg.floodQuiet}
}

// flood starts the read loops of pub and readers, all members of room,
// makes pub publish up to plan.messages fresh payloads to room with p's
// publish frame, as fast as its connection takes them, and waits, within
// plan's bounds, until every reader still connected has every message. It
// never fails: a contender closing clients or dropping messages is an
// outcome to report. It returns early, with what it saw, when ctx ends.
func flood(ctx context.Context, p protocol, room string, pub *client, readers []*client, plan floodPlan) floodResult {
	for _, r := range readers {
		r.stamp = true
	}
	start(readers)
	start([]*client{pub})

	res := floodResult{reasons: make(map[string]int)}
	t0 := time.Now()
	deadline := t0.Add(plan.publishFor)
	pub.wmu.Lock()
	pub.conn.SetWriteDeadline(deadline) // a server that stops reading must not hold the bench
	pub.wmu.Unlock()
	var writeErr error
	for res.sent < int64(plan.messages) && ctx.Err() == nil {
		if time.Now().After(deadline) {
			res.timedOut = true
			break
		}
		if err := pub.write(p.publishFrame(room, newPayload())); err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
				res.timedOut = true
			} else {
				writeErr = err
			}
			break
		}
		res.sent++
	}
	res.publishTime = time.Since(t0)
	res.expected = res.sent * int64(len(readers))

	waitReaders(ctx, readers, res.sent, plan)

	var last int64
	for _, r := range readers {
		res.delivered += r.received.Load()
		last = max(last, r.last.Load())
		if r.lost.Load() {
			res.readersClosed++
			res.reasons[r.why]++
		}
	}
	if last > 0 {
		res.deliverTime = time.Unix(0, last).Sub(t0)
	}
	switch {
	case pub.lost.Load():
		res.publisher = pub.why
	case writeErr != nil:
		res.publisher = "write failed: " + closeReason(writeErr)
	}
	return res
}

// waitReaders waits until every reader still connected received sent
// messages, at most plan.drainFor, and no more than plan.quiet after the
// last delivery to any of them.
func waitReaders(ctx context.Context, readers []*client, sent int64, plan floodPlan) {
	stop := time.Now().Add(plan.drainFor)
	total, moved := int64(-1), time.Now()
	for ctx.Err() == nil {
		now := time.Now()
		if t := totalReceived(readers); t != total {
			total, moved = t, now
		}
		behind := slices.ContainsFunc(readers, func(r *client) bool {
			return !r.lost.Load() && r.received.Load() < sent
		})
		if !behind || now.Sub(moved) > plan.quiet || now.After(stop) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var floodMetrics = []metric{
	{key: "rate", header: "deliveries/s", ratio: true},
	{key: "pubrate", header: "published/s"},
	{key: "delivered", header: "delivered %", digits: 1},
	{key: "closed", header: "readers closed"},
	{key: "pubclosed", header: "publisher closed"},
	{key: "kicked", header: "server kicked/dropped"},
	{key: "cpu", header: "server CPU µs/delivery", ratio: true, digits: 2},
}

func runFlood(ctx context.Context, cfg *config, c contender, rm *remote, n int) (runResult, error) {
	// Clients 0..n-1 read; client n publishes. All are in room 0: the
	// hubs without a protocol publish a client's frames to its own room.
	clients, err := connectAll(ctx, rm.addr, c.proto, n+1, func(int) int { return 0 })
	if err != nil {
		return runResult{}, err
	}
	defer closeAll(clients)
	if err := rm.waitMembers(n+1, 30*time.Second); err != nil {
		return runResult{}, err
	}
	prof, err := startProfile(cfg, rm, fmt.Sprintf("flood-%d", n), c.name)
	if err != nil {
		return runResult{}, err
	}
	s0, err := rm.stats(false)
	if err != nil {
		return runResult{}, err
	}
	plan := cfg.floodPlan()
	res := flood(ctx, c.proto, roomName(0), clients[n], clients[:n], plan)
	if err := ctx.Err(); err != nil {
		return runResult{}, err
	}
	s1, err := rm.stats(false)
	if err != nil {
		return runResult{}, err
	}
	if err := prof.stop(); err != nil {
		return runResult{}, err
	}
	pubClosed := 0.0
	if res.publisher != "" {
		pubClosed = 1
	}
	rate := 0.0
	if res.deliverTime > 0 {
		rate = float64(res.delivered) / res.deliverTime.Seconds()
	}
	return runResult{
		values: map[string]float64{
			"rate":      rate,
			"pubrate":   float64(res.sent) / res.publishTime.Seconds(),
			"delivered": 100 * float64(res.delivered) / float64(max(res.expected, 1)),
			"closed":    float64(res.readersClosed),
			"pubclosed": pubClosed,
			"kicked":    float64(s1.Kicked - s0.Kicked),
			"cpu":       float64(s1.CPUNanos-s0.CPUNanos) / 1e3 / float64(max(res.delivered, 1)),
		},
		notes: floodNotes(res, plan),
	}, nil
}

// floodNotes says how connections ended and which bound stopped the run.
func floodNotes(res floodResult, plan floodPlan) []string {
	var notes []string
	if res.delivered < res.expected {
		notes = append(notes, fmt.Sprintf("%s of %s delivered", format(float64(res.delivered), 0), format(float64(res.expected), 0)))
	}
	for _, why := range slices.Sorted(maps.Keys(res.reasons)) {
		notes = append(notes, fmt.Sprintf("%d readers closed: %s", res.reasons[why], why))
	}
	if res.publisher != "" {
		notes = append(notes, fmt.Sprintf("publisher closed (%s) after %s of %s sent", res.publisher, format(float64(res.sent), 0), format(float64(plan.messages), 0)))
	}
	if res.timedOut {
		notes = append(notes, fmt.Sprintf("publisher stopped by the %v bound after %s sent", plan.publishFor, format(float64(res.sent), 0)))
	}
	return notes
}
