package natsbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/natsbroker"
)

// presNode is a hub whose rooms all have presence, and whose clients are
// named by the query: ?id=alice gives ID "alice" and Info {"name":"alice"}.
type presNode struct {
	hub    *wshub.Hub
	ts     *httptest.Server
	broker *natsbroker.Broker
	nc     *nats.Conn
}

// presenceNode starts a presence hub on a NATS connection to url, with a
// Broker, or with a Log when log is set.
func presenceNode(t testing.TB, url string, opts *natsbroker.Options, log bool) *presNode {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(10*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	n := &presNode{nc: nc}
	var br wshub.Engine
	if log {
		l, err := natsbroker.NewLog(nc, opts)
		if err != nil {
			t.Fatalf("NewLog: %v", err)
		}
		n.broker, br = l.Broker, l
	} else {
		if n.broker, err = natsbroker.New(nc, opts); err != nil {
			t.Fatalf("New: %v", err)
		}
		br = n.broker
	}
	n.hub = wshub.New(nil, &wshub.Options{
		Engine:        br,
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		Rooms:         func(string) wshub.RoomOptions { return wshub.RoomOptions{Presence: true} },
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			id := r.URL.Query().Get("id")
			return wshub.Identity{ID: id, Info: map[string]string{"name": id}}, nil
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", n.hub)
	n.ts = httptest.NewServer(mux)
	t.Cleanup(func() {
		n.hub.Close()
		n.ts.Close()
		nc.Close()
	})
	return n
}

// member is a client of a presence room, with its view of the room's
// members: the state, then each diff applied as set operations by ID.
type member struct {
	*peer
	id   string
	view map[string]bool
}

func dialMember(t testing.TB, n *presNode, id string) *member {
	t.Helper()
	ctx := testCtx(t)
	u := "ws" + strings.TrimPrefix(n.ts.URL, "http") + "/ws?id=" + url.QueryEscape(id)
	conn, _, err := websocket.Dial(ctx, u, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", id, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &member{peer: &peer{t: t, ctx: ctx, conn: conn}, id: id, view: make(map[string]bool)}
}

// presenceData is the data of a presence state or diff.
type presenceData struct {
	Members []wshub.Presence `json:"members"`
	Joins   []wshub.Presence `json:"joins"`
	Leaves  []wshub.Presence `json:"leaves"`
}

// apply reads one frame and applies it to the view; it reports whether
// it was the ack of a join.
func (m *member) apply() bool {
	m.t.Helper()
	f := m.read()
	var d presenceData
	if f.Type == "presence" || f.Type == "presence_diff" {
		if err := json.Unmarshal(f.Data, &d); err != nil {
			m.t.Fatalf("%s: decode %s: %v", m.id, f.Data, err)
		}
	}
	switch f.Type {
	case "presence":
		clear(m.view)
		for _, p := range d.Members {
			m.view[p.ID] = true
		}
	case "presence_diff":
		for _, p := range d.Joins {
			m.view[p.ID] = true
		}
		for _, p := range d.Leaves {
			delete(m.view, p.ID)
		}
	case "ack":
		return f.ID == "join"
	default:
		m.t.Fatalf("%s: got %+v, want presence frames", m.id, f)
	}
	return false
}

// join joins room and applies the state it gets first.
func (m *member) join(room string) {
	m.t.Helper()
	m.send(`{"type":"join","room":%s,"id":"join"}`, jsonString(room))
	for !m.apply() {
	}
}

// until applies frames until the view is exactly ids.
func (m *member) until(ids ...string) {
	m.t.Helper()
	want := strings.Join(slices.Sorted(slices.Values(ids)), " ")
	for m.sees() != want {
		m.apply()
	}
}

func (m *member) sees() string {
	return strings.Join(slices.Sorted(maps.Keys(m.view)), " ")
}

// presenceOf lists a hub's Room.Presence as "id:conns ...".
func presenceOf(n *presNode, room string) string {
	var out []string
	for _, p := range n.hub.Room(room).Presence() {
		out = append(out, fmt.Sprintf("%s:%d", p.ID, p.Conns))
	}
	return strings.Join(out, " ")
}

// TestPresenceAcrossHubs: three hubs (two Brokers and a Log) with members
// in one room: every member's view converges to the room's members on
// all hubs, every hub's Room.Presence lists them with their connections
// over all hubs (dave has one on two hubs), and a member that leaves
// leaves every view.
func TestPresenceAcrossHubs(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	nodes := []*presNode{
		presenceNode(t, s.ClientURL(), nil, false),
		presenceNode(t, s.ClientURL(), nil, false),
		presenceNode(t, s.ClientURL(), nil, true),
	}
	members := []*member{
		dialMember(t, nodes[0], "alice"),
		dialMember(t, nodes[1], "bob"),
		dialMember(t, nodes[2], "carol"),
		dialMember(t, nodes[0], "dave"),
		dialMember(t, nodes[1], "dave"),
	}
	for _, m := range members {
		m.join("p")
	}
	for _, m := range members {
		m.until("alice", "bob", "carol", "dave")
	}
	for i, n := range nodes {
		eventually(t, fmt.Sprintf("hub %d's Room.Presence", i), func() bool {
			return presenceOf(n, "p") == "alice:1 bob:1 carol:1 dave:2"
		})
	}

	members[2].conn.Close(websocket.StatusNormalClosure, "") // carol
	members[3].conn.CloseNow()                               // one of dave's two
	for _, m := range []*member{members[0], members[1], members[4]} {
		m.until("alice", "bob", "dave")
	}
	for i, n := range nodes[:2] { // hub 2 has no members left: it follows no more
		eventually(t, fmt.Sprintf("hub %d's Room.Presence after carol left", i), func() bool {
			return presenceOf(n, "p") == "alice:1 bob:1 dave:1"
		})
	}
}

// TestPresenceHubLosesNATS: a hub whose NATS connection breaks (it goes
// through a proxy, which cuts it; the hub itself runs on) has its members
// withdrawn from the other hubs' views once its entries expire, and back
// once it reconnects; meanwhile its own members see the others withdrawn,
// and back.
func TestPresenceHubLosesNATS(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	px := startProxy(t, s.Addr().String())
	opts := &natsbroker.Options{PresenceTTL: 3 * time.Second}
	nodes := []*presNode{
		presenceNode(t, s.ClientURL(), opts, false),
		presenceNode(t, s.ClientURL(), opts, true),
		presenceNode(t, px.url(), opts, false),
	}
	alice := dialMember(t, nodes[0], "alice")
	bob := dialMember(t, nodes[1], "bob")
	carol := dialMember(t, nodes[2], "carol")
	for _, m := range []*member{alice, bob, carol} {
		m.join("p")
	}
	for _, m := range []*member{alice, bob, carol} {
		m.until("alice", "bob", "carol")
	}

	px.cut() // hub 2 vanishes from NATS, abruptly
	alice.until("alice", "bob")
	bob.until("alice", "bob")
	equal(t, "hub 0's Room.Presence", presenceOf(nodes[0], "p"), "alice:1 bob:1")
	// Hub 2, cut off for longer than the TTL, can no longer vouch for the
	// others either.
	carol.until("carol")

	px.open() // it reconnects, writes its entries again and reads the others'
	alice.until("alice", "bob", "carol")
	bob.until("alice", "bob", "carol")
	carol.until("alice", "bob", "carol")
}

// TestPresenceShutdownWithdraws: a hub that shuts down deletes its
// entries, so its members leave the other hubs' views at once: with a
// TTL of an hour, expiry cannot explain it.
func TestPresenceShutdownWithdraws(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	opts := &natsbroker.Options{PresenceTTL: time.Hour}
	nodes := []*presNode{
		presenceNode(t, s.ClientURL(), opts, false),
		presenceNode(t, s.ClientURL(), opts, true),
	}
	alice := dialMember(t, nodes[0], "alice")
	bob := dialMember(t, nodes[1], "bob")
	alice.join("p")
	bob.join("p")
	alice.until("alice", "bob")
	bob.until("alice", "bob")
	read := make(chan struct{}) // bob answers the close handshake
	go func() {
		defer close(read)
		for {
			if _, _, err := bob.conn.Read(bob.ctx); err != nil {
				return
			}
		}
	}()
	if err := nodes[1].hub.Shutdown(testCtx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-read
	alice.until("alice")
	equal(t, "hub 0's Room.Presence", presenceOf(nodes[0], "p"), "alice:1")
}

// update is one call of a WatchPresence update.
type update struct{ hub, members string }

// recorder records the updates of a watch, in order, and fails the test
// if one comes after stopped is set.
type recorder struct {
	t       *testing.T
	ch      chan update
	busy    atomic.Int32 // calls under way: more than one at a time is an error
	stopped atomic.Bool
}

func newRecorder(t *testing.T) *recorder { return &recorder{t: t, ch: make(chan update, 100)} }

func (r *recorder) update(hub string, members []byte) {
	if r.busy.Add(1) != 1 {
		r.t.Errorf("concurrent updates")
	}
	defer r.busy.Add(-1)
	if r.stopped.Load() {
		r.t.Errorf("update after UnwatchPresence: %s %s", hub, members)
	}
	u := update{hub: hub, members: "<nil>"}
	if members != nil {
		u.members = string(members)
	}
	r.ch <- u
}

// next returns the next update, failing when none comes within the test's
// context.
func (r *recorder) next(ctx context.Context) update {
	r.t.Helper()
	select {
	case u := <-r.ch:
		return u
	case <-ctx.Done():
		r.t.Fatal("no update")
		return update{}
	}
}

// TestPresenceBrokerAPI exercises the PresenceEngine methods directly:
// the current entries come before WatchPresence returns, changes follow
// in order, a hub never sees its own entry, UnwatchPresence stops the
// updates, and Close deletes the hub's keys.
func TestPresenceBrokerAPI(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	ctx := testCtx(t)
	brokers := make([]*natsbroker.Broker, 3)
	for i := range brokers {
		b, err := natsbroker.Connect(s.ClientURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		brokers[i] = b
	}
	b0, b1, b2 := brokers[0], brokers[1], brokers[2]
	if b0.PresenceID() == b1.PresenceID() || len(b0.PresenceID()) != 16 {
		t.Fatalf("presence IDs %q and %q", b0.PresenceID(), b1.PresenceID())
	}
	if err := b1.SetPresence("r", []byte(`[{"id":"x","conns":1}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	if err := b2.SetPresence("r", []byte(`[{"id":"y","conns":1}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	if err := b0.SetPresence("r", []byte(`[{"id":"self","conns":1}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}

	rec := newRecorder(t)
	if err := b0.WatchPresence("r", rec.update); err != nil {
		t.Fatalf("WatchPresence: %v", err)
	}
	if len(rec.ch) != 2 {
		t.Fatalf("%d updates before WatchPresence returned, want the 2 current entries", len(rec.ch))
	}
	got := map[string]string{}
	for range 2 {
		u := rec.next(ctx)
		got[u.hub] = u.members
	}
	equal(t, "b1's entry", got[b1.PresenceID()], `[{"id":"x","conns":1}]`)
	equal(t, "b2's entry", got[b2.PresenceID()], `[{"id":"y","conns":1}]`)
	if err := b0.WatchPresence("r", rec.update); err == nil {
		t.Fatal("second WatchPresence of a room: no error")
	}

	if err := b1.SetPresence("r", []byte(`[{"id":"x","conns":2}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	equal(t, "change", rec.next(ctx), update{b1.PresenceID(), `[{"id":"x","conns":2}]`})
	if err := b1.SetPresence("r", nil); err != nil {
		t.Fatalf("SetPresence nil: %v", err)
	}
	equal(t, "withdrawal", rec.next(ctx), update{b1.PresenceID(), "<nil>"})
	if err := b1.SetPresence("other", []byte(`[{"id":"z","conns":1}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	// Another room's entry is no update; Close deletes b2's key.
	if err := b2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	equal(t, "b2 closed", rec.next(ctx), update{b2.PresenceID(), "<nil>"})
	if err := b2.SetPresence("r", []byte(`[]`)); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("SetPresence after Close: %v, want ErrClosed", err)
	}

	js, err := jetstream.New(b0.Conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, b0.PresenceBucket())
	if err != nil {
		t.Fatalf("bucket %s: %v", b0.PresenceBucket(), err)
	}
	if _, err := kv.Get(ctx, b2.PresenceKey("r")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("b2's key after Close: %v, want ErrKeyNotFound", err)
	}
	if e, err := kv.Get(ctx, b1.PresenceKey("other")); err != nil || string(e.Value()) != `[{"id":"z","conns":1}]` {
		t.Fatalf("b1's key of another room: %v", err)
	}

	if err := b0.UnwatchPresence("r"); err != nil {
		t.Fatalf("UnwatchPresence: %v", err)
	}
	rec.stopped.Store(true)
	if err := b1.SetPresence("r", []byte(`[{"id":"x","conns":3}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	// A new watch sees that change; the old one must not have.
	rec2 := newRecorder(t)
	if err := b0.WatchPresence("r", rec2.update); err != nil {
		t.Fatalf("WatchPresence again: %v", err)
	}
	equal(t, "after watching again", rec2.next(ctx), update{b1.PresenceID(), `[{"id":"x","conns":3}]`})
	if len(rec.ch) != 0 {
		t.Fatalf("%d updates after UnwatchPresence", len(rec.ch))
	}
}

// TestPresenceOptions: PresenceTTL and Replicas out of range fail New.
func TestPresenceOptions(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, o := range []natsbroker.Options{{PresenceTTL: time.Millisecond}, {Replicas: -1}} {
		if _, err := natsbroker.New(nc, &o); err == nil {
			t.Errorf("New with %+v: no error", o)
		}
	}
	// Without JetStream a Broker works, and presence fails.
	b, err := natsbroker.New(nc, &natsbroker.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.WatchPresence("r", func(string, []byte) {}); err == nil {
		t.Error("WatchPresence without JetStream: no error")
	}
	if err := b.SetPresence("r", []byte(`[{"id":"x","conns":1}]`)); err == nil {
		t.Error("SetPresence without JetStream: no error")
	}
}

// TestPresenceServerRestart: the NATS server restarts with memory
// storage, losing the bucket. The hubs create it again, write their
// entries again at once (the TTL is an hour: no refresh would), and
// follow the room on the new bucket: a member who joins afterwards is
// seen on the other hub.
func TestPresenceServerRestart(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	port := natsPort(s)
	opts := &natsbroker.Options{MemoryStorage: true, PresenceTTL: time.Hour}
	nodes := []*presNode{
		presenceNode(t, s.ClientURL(), opts, false),
		presenceNode(t, s.ClientURL(), opts, true),
	}
	alice := dialMember(t, nodes[0], "alice")
	bob := dialMember(t, nodes[1], "bob")
	alice.join("p")
	bob.join("p")
	alice.until("alice", "bob")
	bob.until("alice", "bob")

	s.Shutdown()
	s.WaitForShutdown()
	s = startJetStream(t, port, t.TempDir())

	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for _, n := range nodes {
		eventually(t, "the hub's entry in the new bucket", func() bool {
			kv, err := js.KeyValue(ctx, n.broker.PresenceBucket())
			if err != nil {
				return false
			}
			_, err = kv.Get(ctx, n.broker.PresenceKey("p"))
			return err == nil
		})
	}
	carol := dialMember(t, nodes[1], "carol")
	carol.join("p")
	alice.until("alice", "bob", "carol")
	carol.until("alice", "bob", "carol")
}
