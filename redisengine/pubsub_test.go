package redisengine_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/wshub/wshub"
	"github.com/wshub/wshub/redisengine"
)

// Rooms without history go through pub/sub: three hubs, two members and
// two publishers (a client and Room.Broadcast) on each; every member gets
// every publisher's messages once, in each publisher's order.
func TestPubSubRoomSpansHubs(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	nodes := newNodes(t, s.url(), 3, nil, nil)
	if redisengine.Sharded(nodes[0].eng) {
		t.Fatal("the engine took a single server for a cluster")
	}
	last := newNodes(t, s.url(), 1, nil, nil)[0] // publishes the sentinel
	ctx := testCtx(t)
	const perPub = 25

	var members []*peer
	for _, n := range nodes {
		for range 2 {
			p := dial(t, n)
			p.join("lobby")
			members = append(members, p)
		}
	}
	type result struct {
		got []payload
		err error
	}
	results := make([]result, len(members))
	acks := make(chan string, len(members))
	var readers sync.WaitGroup
	for i, p := range members {
		readers.Go(func() {
			got, err := p.collect("sentinel", acks)
			results[i] = result{got, err}
		})
	}
	want := make(map[string]int)
	var pubs sync.WaitGroup
	errs := make(chan error, len(nodes))
	for i, n := range nodes {
		client, srv := fmt.Sprintf("client%d", i), fmt.Sprintf("server%d", i)
		want[client], want[srv] = perPub, perPub
		pub := members[2*i]
		for seq := range perPub {
			id := ""
			if seq == perPub-1 {
				id = client
			}
			pub.send(`{"type":"publish","room":"lobby","id":%q,"data":{"pub":%q,"seq":%d}}`, id, client, seq)
		}
		pubs.Go(func() {
			if err := broadcastSeqs(ctx, n, "lobby", srv, perPub); err != nil {
				errs <- err
			}
		})
	}
	pubs.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Room.Broadcast: %v", err)
	}
	// An ack means Redis ran the PUBLISH, passing the message to every
	// hub subscribed: the sentinel, published after, comes after it.
	for range nodes {
		select {
		case <-acks:
		case <-ctx.Done():
			t.Fatal("publishers not acknowledged")
		}
	}
	if err := broadcast(ctx, last, "lobby", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	readers.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("member %d: %v", i, r.err)
		}
		checkSequences(t, fmt.Sprintf("member %d (hub %d)", i, i/2), r.got, want)
	}
}

// While Redis is down the hub refuses room publishes, in rooms with and
// without history: the publisher gets an error wrapping ErrNotConnected
// and no member gets the message. Hub.Broadcast, which stays on the hub,
// still flows; once Redis is back, rooms work again, and the hub counts
// its reconnection. (Redis keeps an append-only file, so that the history
// room's history survives and its members stay.)
func TestOutageRefusesPublishes(t *testing.T) {
	t.Parallel()
	s := startRedis(t, true)
	n := newNodes(t, s.url(), 1, nil, policies(map[string]wshub.HistoryPolicy{"h": {Messages: 10}}))[0]
	ctx := testCtx(t)
	a, b := dial(t, n), dial(t, n)
	for _, room := range []string{"r", "h"} {
		a.join(room)
		b.join(room)
	}

	s.kill()
	for _, room := range []string{"r", "h"} {
		// The first publish after the kill may find the connection
		// broken, not yet refused: it may fail as unconfirmed.
		var err error
		for range 3 {
			if err = broadcast(ctx, n, room, "server", 0); errors.Is(err, redisengine.ErrNotConnected) {
				break
			}
			if !errors.Is(err, redisengine.ErrUnconfirmed) {
				t.Fatalf("Room.Broadcast to %s during the outage: %v, want ErrNotConnected", room, err)
			}
		}
		if !errors.Is(err, wshub.ErrEngine) || !errors.Is(err, redisengine.ErrNotConnected) {
			t.Fatalf("Room.Broadcast to %s during the outage: %v, want ErrEngine and ErrNotConnected", room, err)
		}
		a.send(`{"type":"publish","room":%q,"id":"p","data":{"pub":"a","seq":0}}`, room)
		m := a.read()
		if m.Type != "error" || m.ID != "p" || !strings.Contains(m.Error, errBrokerText) {
			t.Fatalf("client publish to %s during the outage: got %+v, want a %q error", room, m, errBrokerText)
		}
	}
	if err := n.hub.Broadcast(ctx, &wshub.Message{Data: payload{Pub: "local"}}); err != nil {
		t.Fatalf("Hub.Broadcast during the outage: %v", err)
	}
	equal(t, "a's first message", data(t, a.read()).Pub, "local")
	equal(t, "b's first message", data(t, b.read()).Pub, "local")

	s.start()
	eventually(t, "the hub to count its reconnection", func() bool { return n.hub.Stats().EngineReconnects > 0 })
	for _, room := range []string{"r", "h"} {
		eventually(t, "publishes to "+room+" to work again", func() bool { return broadcast(ctx, n, room, "after", 0) == nil })
		equal(t, "b's message after the outage", data(t, b.read()).Pub, "after")
	}
}

// A hub starts while Redis is down (RetryOnFailedConnect): joins work,
// publishes are refused, and the rooms work once Redis is up.
func TestStartWhileUnreachable(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	s.kill()
	if _, err := redisengine.Connect(s.url(), nil); !errors.Is(err, redisengine.ErrNotConnected) {
		t.Fatalf("Connect without RetryOnFailedConnect and no server: %v, want ErrNotConnected", err)
	}
	hist := policies(map[string]wshub.HistoryPolicy{"h": {Messages: 10}})
	n := newNodes(t, s.url(), 1, &redisengine.Options{RetryOnFailedConnect: true}, hist)[0]
	ctx := testCtx(t)
	c := dial(t, n)
	c.join("lobby")
	c.send(`{"type":"publish","room":"lobby","id":"p","data":{"pub":"c","seq":0}}`)
	if m := c.read(); m.Type != "error" || m.ID != "p" || !strings.Contains(m.Error, errBrokerText) {
		t.Fatalf("publish before Redis is up: got %+v, want a %q error", m, errBrokerText)
	}
	if err := broadcast(ctx, n, "lobby", "server", 0); !errors.Is(err, redisengine.ErrNotConnected) {
		t.Fatalf("Room.Broadcast before Redis is up: %v, want ErrNotConnected", err)
	}

	s.start()
	other := newNodes(t, s.url(), 1, nil, hist)[0]
	eventually(t, "the room to work", func() bool { return broadcast(ctx, other, "lobby", "other", 0) == nil })
	// The first messages may have gone before the hub subscribed: read
	// until one published once the hub surely is.
	for seq := 1; ; seq++ {
		if err := broadcast(ctx, n, "lobby", "own", seq); err == nil {
			break
		}
	}
	for {
		if data(t, c.read()).Pub == "own" {
			break
		}
	}
	h := dial(t, n)
	h.join("h")
	if err := broadcast(ctx, other, "h", "history", 0); err != nil {
		t.Fatalf("Room.Broadcast to a history room: %v", err)
	}
	equal(t, "history room message", data(t, h.read()).Pub, "history")
}
