package natsbroker_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/natsbroker"
)

// Three hubs share a room; clients and the server side of each hub
// publish at once. Every member on every hub gets every message once, in
// the order of its publisher.
func TestRoomSpansHubs(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	nodes := newNodes(t, s.ClientURL(), 3, nil)
	last := newNodes(t, s.ClientURL(), 1, nil)[0] // publishes the sentinel
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
	equal(t, "NATS subscriptions of the room", s.GlobalAccount().Interest(nodes[0].broker.Subject("lobby")), len(nodes))

	// Every member reads until the sentinel; the first member of each hub
	// also publishes, and reports its acks.
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
	// An ack means the hub's publish returned: NATS has the message, so the
	// sentinel, published after, reaches every hub after it. It comes from
	// a hub without members, so that no member gets it directly, before
	// what NATS still has to deliver.
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

// When the last member of a room on a hub leaves, the hub unsubscribes:
// NATS stops sending it the room's messages.
func TestLeaveUnsubscribes(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	nodes := newNodes(t, s.ClientURL(), 2, nil)
	ctx := testCtx(t)
	subject := nodes[0].broker.Subject("r")
	interest := func() int { return s.GlobalAccount().Interest(subject) }

	a, b, c := dial(t, nodes[0]), dial(t, nodes[1]), dial(t, nodes[1])
	a.join("r")
	b.join("r")
	c.join("other")
	equal(t, "subscriptions while both hubs have members", interest(), 2)

	b.send(`{"type":"leave","room":"r","id":"leave"}`)
	equal(t, "leave answer", b.read().Type, "ack")
	eventually(t, "hub B to unsubscribe", func() bool { return interest() == 1 })

	for seq := range 5 {
		a.send(`{"type":"publish","room":"r","data":{"pub":"a","seq":%d}}`, seq)
		if err := broadcast(ctx, nodes[0], "r", "server", seq); err != nil {
			t.Fatalf("broadcast: %v", err)
		}
	}
	// a's publishes are handled in order: once the last is acknowledged,
	// all went out, and none can reach hub B after it joins again below.
	a.send(`{"type":"publish","room":"r","id":"last","data":{"pub":"a","seq":5}}`)
	for i := 0; ; i++ { // a's and the server's eleven messages, then the ack
		m := a.read()
		if m.Type == "ack" {
			break
		}
		equal(t, "a's frame", m.Type, "message")
		if i == 11 {
			t.Fatal("no ack after eleven messages")
		}
	}
	if err := broadcast(ctx, nodes[0], "other", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	if got := c.readUntil("sentinel"); len(got) != 0 {
		t.Fatalf("hub B delivered %+v after its last member left", got)
	}
	// b's next frame is the answer to its next request, not a room message.
	b.send(`{"type":"publish","room":"r","id":"p","data":1}`)
	m := b.read()
	equal(t, "publish after leave", m.Type, "error")
	if !strings.Contains(m.Error, wshub.ErrNotMember.Error()) {
		t.Fatalf("publish after leave: error %q, want %q", m.Error, wshub.ErrNotMember)
	}

	// Joining again subscribes again.
	b.join("r")
	equal(t, "subscriptions after rejoin", interest(), 2)
	if err := broadcast(ctx, nodes[0], "r", "again", 0); err != nil {
		t.Fatalf("broadcast: %v", err)
	}
	equal(t, "message after rejoin", data(t, b.read()).Pub, "again")
}

// Room names with any characters map to distinct, working subjects.
func TestSpecialRoomNames(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	opts := &natsbroker.Options{Prefix: "app.rooms", NoConfirm: true}
	nodes := newNodes(t, s.ClientURL(), 2, opts)
	names := []string{
		"lobby", "a.b", "a_b", "a b", "*", ">", "a.*", "a.>", ".", "..", "tab\there",
		"line\nbreak", "ünïcödé 🎉", "$SYS", "\x00", strings.Repeat("x", wshub.MaxRoomNameLen),
	}
	subjects := make(map[string]string)
	for _, name := range names {
		subj := nodes[0].broker.Subject(name)
		if other, dup := subjects[subj]; dup {
			t.Fatalf("rooms %q and %q share subject %q", name, other, subj)
		}
		subjects[subj] = name
		rest, ok := strings.CutPrefix(subj, "app.rooms.")
		if !ok || rest == "" || strings.ContainsAny(rest, ".*> \t\r\n") {
			t.Fatalf("room %q: subject %q is not the prefix and one plain token", name, subj)
		}
	}

	a, b := dial(t, nodes[0]), dial(t, nodes[1])
	for i, name := range names {
		a.join(name)
		b.join(name)
		equal(t, "subscriptions of "+name, s.GlobalAccount().Interest(nodes[0].broker.Subject(name)), 2)
		a.send(`{"type":"publish","room":%s,"data":{"pub":"a","seq":%d}}`, jsonString(name), i)
		equal(t, "a's own message", a.read().Room, name)
		m := b.read()
		equal(t, "room on hub B", m.Room, name)
		equal(t, "seq on hub B", data(t, m).Seq, i)
	}
}

// The broker's own contract, without a hub.
func TestBrokerLifecycle(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := testCtx(t)

	if _, err := natsbroker.New(nil, nil); err == nil {
		t.Fatal("New(nil) succeeded")
	}
	for _, p := range []string{"a..b", "a.*", ">", "a b", ".a", "a."} {
		if _, err := natsbroker.Connect(s.ClientURL(), &natsbroker.Options{Prefix: p}); err == nil {
			t.Fatalf("prefix %q accepted", p)
		}
	}

	b, err := natsbroker.Connect(s.ClientURL(), nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	equal(t, "default subject", b.Subject("lobby"), "wshub.room.bG9iYnk")
	equal(t, "reconnect buffer", b.Conn().Opts.ReconnectBufSize, -1)
	equal(t, "reconnect wait", b.Conn().Opts.ReconnectWait, 100*time.Millisecond)
	equal(t, "reconnect jitter", b.Conn().Opts.ReconnectJitter, 150*time.Millisecond)
	equal(t, "reconnect jitter with TLS", b.Conn().Opts.ReconnectJitterTLS, 150*time.Millisecond)
	equal(t, "retry on failed connect", b.Conn().Opts.RetryOnFailedConnect, false)
	got := make(chan string, 1)
	if err := b.Subscribe("r", func(msg []byte) { got <- string(msg) }); err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	if err := b.Subscribe("r", func([]byte) {}); !errors.Is(err, natsbroker.ErrSubscribed) {
		t.Fatalf("second Subscribe: %v, want ErrSubscribed", err)
	}
	if err := b.Publish(ctx, "r", []byte("hi")); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	select {
	case m := <-got:
		equal(t, "delivered", m, "hi")
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	equal(t, "Unsubscribe of an unknown room", b.Unsubscribe("nope"), nil)
	equal(t, "Close", b.Close(), nil)
	equal(t, "second Close", b.Close(), nil)
	if !b.Conn().IsClosed() {
		t.Fatal("Close left Connect's connection open")
	}
	if err := b.Publish(ctx, "r", nil); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := b.Subscribe("r", func([]byte) {}); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v, want ErrClosed", err)
	}

	// A connection given to New stays the caller's.
	nodes := newNodes(t, s.ClientURL(), 1, nil)
	nb := nodes[0].broker
	equal(t, "Close", nb.Close(), nil)
	if nodes[0].nc.IsClosed() {
		t.Fatal("Close closed the caller's connection")
	}
	nb2, err := natsbroker.New(nodes[0].nc, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	nodes[0].nc.Close()
	if err := nb2.Publish(ctx, "r", nil); !errors.Is(err, natsbroker.ErrNotConnected) {
		t.Fatalf("Publish on a closed connection: %v, want ErrNotConnected", err)
	}
	if err := nb2.Subscribe("r", func([]byte) {}); err == nil {
		t.Fatal("Subscribe on a closed connection succeeded")
	}
}
