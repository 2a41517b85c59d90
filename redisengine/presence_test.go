package redisengine_test

import (
	"context"
	"encoding/json"
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
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/redisengine"
)

// presNode is a hub whose rooms all have presence, and whose clients are
// named by the query: ?id=alice gives ID "alice" and Info {"name":"alice"}.
type presNode struct {
	hub *wshub.Hub
	ts  *httptest.Server
	eng *redisengine.Engine
}

// presenceNode starts a presence hub with an engine on url.
func presenceNode(t testing.TB, url string, opts *redisengine.Options) *presNode {
	t.Helper()
	e, err := redisengine.Connect(url, opts)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	n := &presNode{eng: e}
	n.hub = wshub.New(nil, &wshub.Options{
		Engine:        e,
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

// TestPresenceAcrossHubs: three hubs with members in one room: every
// member's view converges to the room's members on all hubs, every hub's
// Room.Presence lists them with their connections over all hubs (dave
// has one on two hubs), and members that leave leave every view.
func TestPresenceAcrossHubs(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	nodes := []*presNode{presenceNode(t, s.url(), nil), presenceNode(t, s.url(), nil), presenceNode(t, s.url(), nil)}
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
	for i, n := range nodes[:2] {
		eventually(t, fmt.Sprintf("hub %d's Room.Presence after carol left", i), func() bool {
			return presenceOf(n, "p") == "alice:1 bob:1 dave:1"
		})
	}
}

// TestPresenceHubCutOff: a hub whose connection to Redis is cut (it goes
// through a proxy, which cuts it; the hub itself runs on) has its members
// withdrawn from the other hubs' views once its entries expire, within
// the TTL, and back once it reconnects; meanwhile, cut off for longer than
// the TTL, its own members see the others withdrawn, and back.
func TestPresenceHubCutOff(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	px := startProxy(t, s.addr())
	opts := &redisengine.Options{PresenceTTL: 3 * time.Second}
	nodes := []*presNode{presenceNode(t, s.url(), opts), presenceNode(t, s.url(), opts), presenceNode(t, px.url(), opts)}
	alice := dialMember(t, nodes[0], "alice")
	bob := dialMember(t, nodes[1], "bob")
	carol := dialMember(t, nodes[2], "carol")
	for _, m := range []*member{alice, bob, carol} {
		m.join("p")
	}
	for _, m := range []*member{alice, bob, carol} {
		m.until("alice", "bob", "carol")
	}

	px.cut() // hub 2 vanishes from Redis, abruptly
	cut := time.Now()
	alice.until("alice", "bob")
	bob.until("alice", "bob")
	t.Logf("carol left the other hubs' views %v after the cut (TTL %v)", time.Since(cut).Round(time.Millisecond), opts.PresenceTTL)
	equal(t, "hub 0's Room.Presence", presenceOf(nodes[0], "p"), "alice:1 bob:1")
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
	s := startRedis(t, false)
	opts := &redisengine.Options{PresenceTTL: time.Hour}
	nodes := []*presNode{presenceNode(t, s.url(), opts), presenceNode(t, s.url(), opts)}
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

// TestPresenceServerRestart: Redis restarts without persistence, losing
// every entry: the hubs write theirs again on reconnecting, and every
// view comes back to every member.
func TestPresenceServerRestart(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	nodes := []*presNode{presenceNode(t, s.url(), nil), presenceNode(t, s.url(), nil)}
	alice := dialMember(t, nodes[0], "alice")
	bob := dialMember(t, nodes[1], "bob")
	alice.join("p")
	bob.join("p")
	alice.until("alice", "bob")
	bob.until("alice", "bob")
	s.kill()
	s.start()
	eventually(t, "the entries written again", func() bool {
		return s.do("HLEN", nodes[0].eng.Key("p", "pres")) == ":2"
	})
	// A new member on hub 0 sees bob, whose entry came back.
	carol := dialMember(t, nodes[0], "carol")
	carol.join("p")
	carol.until("alice", "bob", "carol")
	bob.until("alice", "bob", "carol")
}

// TestPresenceEngineAPI exercises the PresenceEngine methods directly:
// the current entries come before WatchPresence returns, changes follow
// in order, a hub never sees its own entry, UnwatchPresence stops the
// updates, and Close deletes the hub's entry.
func TestPresenceEngineAPI(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	ctx := testCtx(t)
	connect := func() *redisengine.Engine {
		e, err := redisengine.Connect(s.url(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	a, b := connect(), connect()
	if err := a.SetPresence("r", []byte(`[{"id":"x"}]`)); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(t)
	if err := b.WatchPresence("r", rec.update); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-rec.ch:
		equal(t, "first update", u, update{a.HubID(), `[{"id":"x"}]`})
	default:
		t.Fatal("WatchPresence returned before passing the current entry")
	}
	if err := b.SetPresence("r", []byte(`[{"id":"own"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPresence("r", []byte(`[{"id":"y"}]`)); err != nil {
		t.Fatal(err)
	}
	equal(t, "change", rec.next(ctx), update{a.HubID(), `[{"id":"y"}]`})
	if err := a.SetPresence("r", nil); err != nil {
		t.Fatal(err)
	}
	equal(t, "withdrawal", rec.next(ctx), update{a.HubID(), "<nil>"})
	if err := a.SetPresence("r", []byte(`[{"id":"z"}]`)); err != nil {
		t.Fatal(err)
	}
	equal(t, "again", rec.next(ctx), update{a.HubID(), `[{"id":"z"}]`})
	a.Close()
	equal(t, "after Close", rec.next(ctx), update{a.HubID(), "<nil>"})
	if err := b.UnwatchPresence("r"); err != nil {
		t.Fatal(err)
	}
	rec.stopped.Store(true)
	c := connect()
	if err := c.SetPresence("r", []byte(`[{"id":"late"}]`)); err != nil {
		t.Fatal(err)
	}
	equal(t, "entries left", s.do("HLEN", b.Key("r", "pres")), ":2") // b's own and c's
	select {
	case u := <-rec.ch:
		t.Fatalf("update after UnwatchPresence: %+v", u)
	default:
	}
	if err := a.SetPresence("r", nil); err == nil {
		t.Fatal("SetPresence after Close succeeded")
	}
}
