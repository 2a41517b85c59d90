package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// The room scenario of every engine on a bus (internal/enginetest), on
// core NATS: three hubs share a room; clients and the server side of each
// hub publish at once. Every member on every hub gets every message once,
// in the order of its publisher.
func TestRoomSpansHubs(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	nodes := newNodes(t, s.ClientURL(), 4, nil)
	et.RoomSpansHubs(t, hubs(nodes[:3]), nodes[3].Node)
	et.Equal(t, "NATS subscriptions of the room", s.GlobalAccount().Interest(nodes[0].broker.Subject("lobby")), 3)
}

// When the last member of a room on a hub leaves, the hub unsubscribes:
// NATS stops sending it the room's messages.
func TestLeaveUnsubscribes(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	nodes := newNodes(t, s.ClientURL(), 2, nil)
	ctx := et.Ctx(t)
	subject := nodes[0].broker.Subject("r")
	interest := func() int { return s.GlobalAccount().Interest(subject) }

	a, b, c := dial(t, nodes[0]), dial(t, nodes[1]), dial(t, nodes[1])
	a.Join("r")
	b.Join("r")
	c.Join("other")
	et.Equal(t, "subscriptions while both hubs have members", interest(), 2)

	b.Send(`{"type":"leave","room":"r","id":"leave"}`)
	et.Equal(t, "leave answer", b.Read().Type, "ack")
	et.Eventually(t, "hub B to unsubscribe", func() bool { return interest() == 1 })

	for seq := range 5 {
		a.Send(`{"type":"publish","room":"r","data":{"pub":"a","seq":%d}}`, seq)
		if err := broadcast(ctx, nodes[0], "r", "server", seq); err != nil {
			t.Fatalf("broadcast: %v", err)
		}
	}
	// a's publishes are handled in order: once the last is acknowledged,
	// all went out, and none can reach hub B after it joins again below.
	a.Send(`{"type":"publish","room":"r","id":"last","data":{"pub":"a","seq":5}}`)
	for i := 0; ; i++ { // a's and the server's eleven messages, then the ack
		m := a.Read()
		if m.Type == "ack" {
			break
		}
		et.Equal(t, "a's frame", m.Type, "message")
		if i == 11 {
			t.Fatal("no ack after eleven messages")
		}
	}
	if err := broadcast(ctx, nodes[0], "other", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	if got := c.ReadUntil("sentinel"); len(got) != 0 {
		t.Fatalf("hub B delivered %+v after its last member left", got)
	}
	// b's next frame is the answer to its next request, not a room message.
	b.Send(`{"type":"publish","room":"r","id":"p","data":1}`)
	m := b.Read()
	et.Equal(t, "publish after leave", m.Type, "error")
	if !strings.Contains(m.Error, et.ErrNotMemberText) {
		t.Fatalf("publish after leave: error %q, want %q", m.Error, et.ErrNotMemberText)
	}

	// Joining again subscribes again.
	b.Join("r")
	et.Equal(t, "subscriptions after rejoin", interest(), 2)
	if err := broadcast(ctx, nodes[0], "r", "again", 0); err != nil {
		t.Fatalf("broadcast: %v", err)
	}
	et.Equal(t, "message after rejoin", et.Data(t, b.Read()).Pub, "again")
}

// Room names with any characters map to distinct, working subjects.
func TestSpecialRoomNames(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	opts := &natsbroker.Options{Prefix: "app.rooms", NoConfirm: true}
	nodes := newNodes(t, s.ClientURL(), 2, opts)
	names := []string{
		"lobby", "a.b", "a_b", "a b", "*", ">", "a.*", "a.>", ".", "..", "tab\there",
		"line\nbreak", "ünïcödé 🎉", "$SYS", "\x00", strings.Repeat("x", 128), // the longest room name
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
		a.Join(name)
		b.Join(name)
		et.Equal(t, "subscriptions of "+name, s.GlobalAccount().Interest(nodes[0].broker.Subject(name)), 2)
		a.Send(`{"type":"publish","room":%s,"data":{"pub":"a","seq":%d}}`, et.JSONString(name), i)
		et.Equal(t, "a's own message", a.Read().Room, name)
		m := b.Read()
		et.Equal(t, "room on hub B", m.Room, name)
		et.Equal(t, "seq on hub B", et.Data(t, m).Seq, i)
	}
}

// The broker's own contract, without a hub.
func TestBrokerLifecycle(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := et.Ctx(t)
	plain := wshub.HistoryPolicy{}

	if _, err := natsbroker.New(nil, nil); err == nil {
		t.Fatal("New(nil) succeeded")
	}
	for _, p := range []string{"a..b", "a.*", ">", "a b", ".a", "a."} {
		if _, err := natsbroker.Connect(s.ClientURL(), &natsbroker.Options{Prefix: p}); err == nil {
			t.Fatalf("prefix %q accepted", p)
		}
	}
	// The hub gets its own messages from NATS: no NoEcho.
	if _, err := natsbroker.Connect(s.ClientURL(), nil, nats.NoEcho()); err == nil {
		t.Fatal("Connect with NoEcho succeeded")
	}

	b, err := natsbroker.Connect(s.ClientURL(), nil)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	et.Equal(t, "default subject", b.Subject("lobby"), "wshub.room.bG9iYnk")
	et.Equal(t, "reconnect buffer", b.Conn().Opts.ReconnectBufSize, -1)
	et.Equal(t, "reconnect wait", b.Conn().Opts.ReconnectWait, 100*time.Millisecond)
	et.Equal(t, "reconnect jitter", b.Conn().Opts.ReconnectJitter, 150*time.Millisecond)
	et.Equal(t, "reconnect jitter with TLS", b.Conn().Opts.ReconnectJitterTLS, 150*time.Millisecond)
	et.Equal(t, "retry on failed connect", b.Conn().Opts.RetryOnFailedConnect, false)
	et.Equal(t, "no echo", b.Conn().Opts.NoEcho, false)
	got := make(chan wshub.Entry, 1)
	if err := b.Follow("r", plain, 0, func(e wshub.Entry) { got <- e }); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if err := b.Follow("r", plain, 0, func(wshub.Entry) {}); !errors.Is(err, natsbroker.ErrFollowed) {
		t.Fatalf("second Follow: %v, want ErrFollowed", err)
	}
	if err := b.Follow("r", wshub.HistoryPolicy{Messages: 5}, 0, func(wshub.Entry) {}); !errors.Is(err, natsbroker.ErrFollowed) {
		t.Fatalf("second Follow, with history: %v, want ErrFollowed", err)
	}
	if err := b.Publish(ctx, "r", plain, "id1", []byte("hi"))(); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	// NATS hands the broker its own message back, with its id.
	select {
	case e := <-got:
		et.Equal(t, "delivered", string(e.JSON), "hi")
		et.Equal(t, "delivered id", e.ID, "id1")
		et.Equal(t, "delivered seq", e.Seq, 0)
	case <-ctx.Done():
		t.Fatal("no delivery")
	}
	et.Equal(t, "Unfollow of an unknown room", b.Unfollow("nope"), nil)
	et.Equal(t, "Close", b.Close(), nil)
	et.Equal(t, "second Close", b.Close(), nil)
	if !b.Conn().IsClosed() {
		t.Fatal("Close left Connect's connection open")
	}
	if err := b.Publish(ctx, "r", plain, "", nil)(); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if err := b.Follow("r", plain, 0, func(wshub.Entry) {}); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Follow after Close: %v, want ErrClosed", err)
	}
	if _, err := b.Read(ctx, "r", wshub.HistoryPolicy{Messages: 5}, 0, -1); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}

	// A connection given to New stays the caller's.
	nodes := newNodes(t, s.ClientURL(), 1, nil)
	nb := nodes[0].broker
	et.Equal(t, "Close", nb.Close(), nil)
	if nodes[0].nc.IsClosed() {
		t.Fatal("Close closed the caller's connection")
	}
	nb2, err := natsbroker.New(nodes[0].nc, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	nodes[0].nc.Close()
	if err := nb2.Publish(ctx, "r", plain, "", nil)(); !errors.Is(err, natsbroker.ErrNotConnected) {
		t.Fatalf("Publish on a closed connection: %v, want ErrNotConnected", err)
	}
	if err := nb2.Follow("r", plain, 0, func(wshub.Entry) {}); err == nil {
		t.Fatal("Follow on a closed connection succeeded")
	}
	if err := nb2.Follow("h", wshub.HistoryPolicy{Messages: 5}, 0, func(wshub.Entry) {}); err == nil {
		t.Fatal("Follow of a history room on a closed connection succeeded")
	}
	// The failed Follow left the room unfollowed.
	if err := nb2.Unfollow("h"); err != nil {
		t.Fatalf("Unfollow after a failed Follow: %v", err)
	}

	nc, err := nats.Connect(s.ClientURL(), nats.NoEcho())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := natsbroker.New(nc, nil); err == nil {
		t.Fatal("New on a NoEcho connection succeeded")
	}
}

// entries collects what a Follow delivers.
type entries chan wshub.Entry

func (ch entries) deliver(e wshub.Entry) { ch <- e }

// next returns the next delivery, failing when none comes within ctx.
func (ch entries) next(t testing.TB, ctx context.Context) wshub.Entry {
	t.Helper()
	select {
	case e := <-ch:
		return e
	case <-ctx.Done():
		t.Fatal("no delivery")
		return wshub.Entry{}
	}
}

// A Broker numbers a history room's messages itself, in the order it
// receives them, its own among the others', and keeps them for Read, in
// an epoch that starts when it follows the room (or, for a join, when it
// read the room just before) and ends when it unfollows it.
func TestBrokerHistoryRooms(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := et.Ctx(t)
	p := wshub.HistoryPolicy{Messages: 3}
	b1, b2 := connect(t, s.ClientURL(), nil), connect(t, s.ClientURL(), nil)

	before, err := b1.Read(ctx, "h", p, 0, -1)
	if err != nil || before.Epoch == "" || before.Latest != 0 || len(before.Messages) != 0 {
		t.Fatalf("Read of a room not followed: %+v, %v", before, err)
	}
	got := make(entries, 100)
	if err := b1.Follow("h", p, before.Latest, got.deliver); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	page, err := b1.Read(ctx, "h", p, 0, -1)
	if err != nil || page.Epoch != before.Epoch {
		t.Fatalf("Read once followed: %+v, %v; want the epoch of the Read before, %q", page, err, before.Epoch)
	}

	// One publish after another: b1 receives them in that order, b2's and
	// its own.
	for i, pub := range []*natsbroker.Broker{b2, b1, b2, b1} {
		id := fmt.Sprint("x", i+1)
		if err := pub.Publish(ctx, "h", p, id, fmt.Appendf(nil, `{"type":"message","data":%d}`, i+1))(); err != nil {
			t.Fatalf("Publish %s: %v", id, err)
		}
	}
	for i := range 4 {
		e := got.next(t, ctx)
		et.Equal(t, "seq", e.Seq, uint64(i+1))
		et.Equal(t, "id", e.ID, fmt.Sprint("x", i+1))
		et.Equal(t, "message", string(e.JSON), fmt.Sprintf(`{"type":"message","data":%d}`, i+1))
	}
	page, err = b1.Read(ctx, "h", p, 0, -1)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	var seqs []uint64
	for _, m := range page.Messages {
		seqs = append(seqs, m.Seq)
	}
	if !slices.Equal(seqs, []uint64{2, 3, 4}) || page.Latest != 4 || page.Epoch != before.Epoch {
		t.Fatalf("Read: seqs %v, latest %d, epoch %q; want [2 3 4], 4, %q", seqs, page.Latest, page.Epoch, before.Epoch)
	}
	et.Equal(t, "retained message", string(page.Messages[2].JSON), `{"type":"message","data":4}`)
	// b2 does not follow the room: it has no history of it.
	other, err := b2.Read(ctx, "h", p, 0, -1)
	if err != nil || other.Latest != 0 || len(other.Messages) != 0 || other.Epoch == before.Epoch {
		t.Fatalf("Read on a broker that does not follow the room: %+v, %v", other, err)
	}

	// Unfollowing ends the history: the next one has a new epoch.
	et.Equal(t, "Unfollow", b1.Unfollow("h"), nil)
	if err := b2.Publish(ctx, "h", p, "missed", []byte(`{"type":"message"}`))(); err != nil {
		t.Fatal(err)
	}
	after, err := b1.Read(ctx, "h", p, 0, -1)
	if err != nil || after.Epoch == before.Epoch || after.Latest != 0 || len(after.Messages) != 0 {
		t.Fatalf("Read after Unfollow: %+v, %v; want a new, empty history", after, err)
	}
	if err := b1.Follow("h", p, 0, got.deliver); err != nil {
		t.Fatalf("Follow again: %v", err)
	}
	if err := b2.Publish(ctx, "h", p, "again", []byte(`{"type":"message"}`))(); err != nil {
		t.Fatal(err)
	}
	e := got.next(t, ctx)
	if e.Seq != 1 || e.ID != "again" {
		t.Fatalf("first delivery after following again: seq %d id %q, want 1 and again", e.Seq, e.ID)
	}
	page, err = b1.Read(ctx, "h", p, 0, -1)
	if err != nil || page.Epoch != after.Epoch || page.Latest != 1 {
		t.Fatalf("Read after following again: %+v, %v; want epoch %q and latest 1", page, err, after.Epoch)
	}
}

// Hubs on Brokers with a history room: each numbers the room's messages,
// its own included, in the order it receives them, 1, 2, 3, …; a client
// recovers on the hub it left while the room kept members there, and
// not on another hub, nor once the room had none.
func TestBrokerHistoryPerHub(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	hist := func(string) wshub.HistoryPolicy { return wshub.HistoryPolicy{Messages: 100} }
	nodes := newHistoryNodes(t, s.ClientURL(), 2, nil, hist)
	ctx := et.Ctx(t)

	a, stay := dial(t, nodes[0]), dial(t, nodes[0])
	b := dial(t, nodes[1])
	_, ackA := a.JoinAck("h", "")
	_, ackStay := stay.JoinAck("h", "")
	_, ackB := b.JoinAck("h", "")
	if ackA.Epoch == "" || ackA.Epoch != ackStay.Epoch || ackB.Epoch == "" || ackB.Epoch == ackA.Epoch {
		t.Fatalf("join epochs %q, %q on hub 0 and %q on hub 1: want one per hub", ackA.Epoch, ackStay.Epoch, ackB.Epoch)
	}
	const n = 3
	type result struct {
		got []et.Logged
		err error
	}
	members := []*et.Peer{a, stay, b}
	results := make([]result, len(members))
	acks := make(chan string, 1)
	var readers sync.WaitGroup
	for i, p := range members {
		readers.Go(func() {
			got, err := p.CollectLog("sentinel", acks)
			results[i] = result{got, err}
		})
	}
	for seq := range n {
		id := ""
		if seq == n-1 {
			id = "a"
		}
		a.Send(`{"type":"publish","room":"h","id":%q,"data":{"pub":"a","seq":%d}}`, id, seq)
		if err := broadcast(ctx, nodes[1], "h", "server", seq); err != nil {
			t.Fatal(err)
		}
	}
	select { // a's publishes went out: the sentinel comes after them
	case <-acks:
	case <-ctx.Done():
		t.Fatal("a's publishes not acknowledged")
	}
	if err := broadcast(ctx, nodes[1], "h", "sentinel", 0); err != nil {
		t.Fatal(err)
	}
	readers.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("member %d: %v", i, r.err)
		}
		var ps []et.Payload
		for j, l := range r.got {
			et.Equal(t, fmt.Sprintf("member %d: seq of message %d", i, j), l.Seq, uint64(j+1))
			ps = append(ps, l.Payload)
		}
		et.CheckSequences(t, fmt.Sprintf("member %d", i), ps, map[string]int{"a": n, "server": n})
	}
	epoch, seq, err := nodes[0].Hub.Room("h").Position(ctx)
	if err != nil || epoch != ackA.Epoch || seq != 2*n+1 {
		t.Fatalf("hub 0's Position: %q, %d, %v; want %q, %d", epoch, seq, err, ackA.Epoch, 2*n+1)
	}

	// a leaves; two messages later it recovers them on hub 0, which kept
	// the room, but not on hub 1.
	a.Conn.Close(websocket.StatusNormalClosure, "")
	et.Eventually(t, "hub 0 to drop a", func() bool { return nodes[0].Hub.Room("h").Len() == 1 })
	for seq := range 2 {
		if err := broadcast(ctx, nodes[1], "h", "missed", seq); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		stay.Read()
	}
	since := fmt.Sprintf(`"since":%d,"epoch":%q`, 2*n+1, ackA.Epoch)
	other := dial(t, nodes[1])
	replay, ack := other.JoinAck("h", since)
	if ack.Recovered == nil || *ack.Recovered || len(replay) != 0 {
		t.Fatalf("recovery on hub 1: recovered %v, %d replayed; want false and none", ack.Recovered, len(replay))
	}
	again := dial(t, nodes[0])
	replay, ack = again.JoinAck("h", since)
	if ack.Recovered == nil || !*ack.Recovered {
		t.Fatalf("recovery on hub 0: recovered %v, want true", ack.Recovered)
	}
	var ps []et.Payload
	for i, l := range replay {
		et.Equal(t, "replayed seq", l.Seq, uint64(2*n+2+i))
		ps = append(ps, l.Payload)
	}
	et.CheckSequences(t, "replay on hub 0", ps, map[string]int{"missed": 2})

	// Once hub 0 has no member left in the room, its history ends.
	stay.Conn.Close(websocket.StatusNormalClosure, "")
	again.Conn.Close(websocket.StatusNormalClosure, "")
	et.Eventually(t, "hub 0's history of the room to end", func() bool {
		epoch, _, err := nodes[0].Hub.Room("h").Position(ctx)
		return err == nil && epoch != ackA.Epoch
	})
	last := dial(t, nodes[0])
	replay, ack = last.JoinAck("h", fmt.Sprintf(`"since":%d,"epoch":%q`, 2*n+3, ackA.Epoch))
	if ack.Recovered == nil || *ack.Recovered || len(replay) != 0 || ack.Epoch == ackA.Epoch {
		t.Fatalf("recovery after hub 0 had no member: %+v, %d replayed; want not recovered, in a new epoch", ack, len(replay))
	}
}
