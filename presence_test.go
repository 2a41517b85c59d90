package wshub_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// presMsg is a presence frame as a client decodes it.
type presMsg struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	Room  string `json:"room"`
	Error string `json:"error"`
	Data  struct {
		Members []wshub.Presence `json:"members"`
		Total   int              `json:"total"`
		Joins   []wshub.Presence `json:"joins"`
		Leaves  []wshub.Presence `json:"leaves"`
	} `json:"data"`
}

func (p *peer) readPres() presMsg {
	p.t.Helper()
	if len(p.early) > 0 {
		m := p.early[0]
		p.early = p.early[1:]
		return m
	}
	return p.readPresConn()
}

func (p *peer) readPresConn() presMsg {
	p.t.Helper()
	_, b, err := p.conn.Read(p.ctx)
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	var m presMsg
	if err := json.Unmarshal(b, &m); err != nil {
		p.t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// presenceHub serves a hub whose rooms starting with "p" have presence,
// and whose clients are named by the query: ?id=alice gives ID "alice"
// and Info {"name":"Alice"}.
func presenceHub(t *testing.T, opts wshub.Options) (*wshub.Hub, *httptest.Server) {
	t.Helper()
	opts.AuthorizeJoin = allowAll
	rooms := opts.Rooms
	opts.Rooms = func(room string) wshub.RoomOptions {
		var o wshub.RoomOptions
		if rooms != nil {
			o = rooms(room)
		}
		o.Presence = strings.HasPrefix(room, "p")
		return o
	}
	opts.Authenticate = func(r *http.Request) (wshub.Identity, error) {
		id := r.URL.Query().Get("id")
		info := any(map[string]string{"name": strings.ToUpper(id[:1]) + id[1:]})
		if big := r.URL.Query().Get("big"); big != "" {
			info = strings.Repeat("x", wshub.MaxInfoBytes)
		}
		return wshub.Identity{ID: id, Info: info}, nil
	}
	h := wshub.New(nil, &opts)
	return h, serve(t, h)
}

func dialAs(t *testing.T, ts *httptest.Server, id string) *peer {
	t.Helper()
	return dialURL(t, wsURL(ts)+"?id="+url.QueryEscape(id))
}

// joinPres joins room and returns the presence state that comes first.
func (p *peer) joinPres(room string) presMsg {
	p.t.Helper()
	return p.joinPresFrame(room, fmt.Sprintf(`{"type":"join","room":%q,"id":"j"}`, room))
}

// joinPresFrame sends frame, a join of room, and returns the presence
// state that comes first.
func (p *peer) joinPresFrame(room, frame string) presMsg {
	p.t.Helper()
	p.sendRaw(frame)
	st := p.readPres()
	if st.Type != "presence" || st.Room != room {
		p.t.Fatalf("join %s: got %+v, want the presence state", room, st)
	}
	// Diffs, like live messages, may come before the ack: readPres
	// returns them next.
	for {
		m := p.readPresConn()
		switch m.Type {
		case "ack":
			return st
		case "presence_diff":
			p.early = append(p.early, m)
		default:
			p.t.Fatalf("join %s: got %+v, want the ack", room, m)
		}
	}
}

func ids(ps []wshub.Presence) string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s:%d", p.ID, p.Conns))
	}
	return strings.Join(out, " ")
}

// nextDiff reads the next frame, which must be a diff of room.
func (p *peer) nextDiff(room string) string {
	p.t.Helper()
	m := p.readPres()
	if m.Type != "presence_diff" || m.Room != room {
		p.t.Fatalf("got %+v, want a presence diff of %s", m, room)
	}
	return fmt.Sprintf("+[%s] -[%s]", ids(m.Data.Joins), ids(m.Data.Leaves))
}

func TestPresenceStateThenDiffs(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var events []string
	h, ts := presenceHub(t, wshub.Options{OnPresence: func(room string, joins, leaves []wshub.Presence) {
		mu.Lock()
		events = append(events, fmt.Sprintf("%s +[%s] -[%s]", room, ids(joins), ids(leaves)))
		mu.Unlock()
	}})
	alice := dialAs(t, ts, "alice")
	st := alice.joinPres("p1")
	equal(t, "first state", ids(st.Data.Members), "alice:1")
	equal(t, "alice's info", string(st.Data.Members[0].Info), `{"name":"Alice"}`)
	equal(t, "alice's own join", alice.nextDiff("p1"), "+[alice:1] -[]")

	bob := dialAs(t, ts, "bob")
	st = bob.joinPres("p1")
	equal(t, "state", ids(st.Data.Members)+fmt.Sprintf(" total %d", st.Data.Total), "alice:1 bob:1 total 2")
	equal(t, "bob's join", alice.nextDiff("p1"), "+[bob:1] -[]")
	equal(t, "bob's own join", bob.nextDiff("p1"), "+[bob:1] -[]")

	bob.mustAck(`{"type":"leave","room":"p1","id":"l"}`)
	equal(t, "bob's leave", alice.nextDiff("p1"), "+[] -[bob:0]")

	carol := dialAs(t, ts, "carol")
	carol.joinPres("p1")
	equal(t, "carol's join", alice.nextDiff("p1"), "+[carol:1] -[]")
	carol.conn.CloseNow() // abrupt
	equal(t, "carol's drop", alice.nextDiff("p1"), "+[] -[carol:0]")
	equal(t, "Room.Presence", ids(h.Room("p1").Presence()), "alice:1")

	// The hook runs after the diff is queued.
	eventually(t, "five presence events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) == 5
	})
	mu.Lock()
	defer mu.Unlock()
	equal(t, "hook", strings.Join(events, "; "), "p1 +[alice:1] -[]; p1 +[bob:1] -[]; p1 +[] -[bob:0]; p1 +[carol:1] -[]; p1 +[] -[carol:0]")
}

// TestPresenceConnectionsOfOneID: an ID with two connections is one
// member with two connections; only its first join and its last leave are
// diffs.
func TestPresenceConnectionsOfOneID(t *testing.T) {
	t.Parallel()
	_, ts := presenceHub(t, wshub.Options{})
	bob := dialAs(t, ts, "bob")
	bob.joinPres("p")
	bob.nextDiff("p")
	tab1 := dialAs(t, ts, "alice")
	tab1.joinPres("p")
	equal(t, "first tab", bob.nextDiff("p"), "+[alice:1] -[]")
	tab2 := dialAs(t, ts, "alice")
	equal(t, "state seen by the second tab", ids(tab2.joinPres("p").Data.Members), "alice:2 bob:1")
	tab1.conn.Close(websocket.StatusNormalClosure, "")
	carol := dialAs(t, ts, "carol")
	carol.joinPres("p")
	// The second tab's join and the first one's close were no diff: the
	// next one is carol's.
	equal(t, "next diff", bob.nextDiff("p"), "+[carol:1] -[]")
	tab2.conn.CloseNow()
	equal(t, "last tab gone", bob.nextDiff("p"), "+[] -[alice:0]")
}

// TestPresenceStorm: 300 clients joining one after another make a few
// diffs, not 300, and every join is in one of them.
func TestPresenceStorm(t *testing.T) {
	t.Parallel()
	joined := make(chan *wshub.Client, 300)
	h, ts := presenceHub(t, wshub.Options{OnConnect: func(c *wshub.Client) {
		if c.ID() != "watcher" {
			joined <- c
		}
	}})
	w := dialAs(t, ts, "watcher")
	w.joinPres("p")
	w.nextDiff("p")
	clients := make([]*wshub.Client, 300)
	for i := range clients {
		dialAs(t, ts, fmt.Sprint("c", i))
		clients[i] = <-joined
	}
	for _, c := range clients { // server-side joins, in a tight loop
		if err := c.Join("p"); err != nil {
			t.Fatal(err)
		}
	}
	seen := make(map[string]bool)
	frames := 0
	for len(seen) < len(clients) {
		m := w.readPres()
		if m.Type != "presence_diff" || len(m.Data.Leaves) > 0 {
			t.Fatalf("got %+v", m)
		}
		frames++
		for _, p := range m.Data.Joins {
			if seen[p.ID] {
				t.Fatalf("%s joined twice", p.ID)
			}
			seen[p.ID] = true
		}
	}
	if frames > len(clients)/10 {
		t.Fatalf("%d joins took %d diffs", len(clients), frames)
	}
	equal(t, "members", len(h.Room("p").Presence()), len(clients)+1)
	t.Logf("%d joins in %d diffs", len(clients), frames)
}

// TestPresenceBounds: a state lists MaxPresenceList members and counts
// them all; an Info over MaxInfoBytes refuses the connection.
func TestPresenceBounds(t *testing.T) {
	t.Parallel()
	_, ts := presenceHub(t, wshub.Options{})
	for i := range wshub.MaxPresenceList + 20 {
		p := dialAs(t, ts, fmt.Sprintf("m%03d", i))
		p.joinPres("p")
	}
	last := dialAs(t, ts, "z")
	st := last.joinPres("p")
	equal(t, "listed", len(st.Data.Members), wshub.MaxPresenceList)
	equal(t, "total", st.Data.Total, wshub.MaxPresenceList+21)

	ctx := testCtx(t)
	conn, _, err := websocket.Dial(ctx, wsURL(ts)+"?id=big&big=1", nil)
	if err == nil {
		_, _, err = conn.Read(ctx)
		conn.CloseNow()
	}
	equal(t, "close status for a too big Info", websocket.CloseStatus(err), websocket.StatusInternalError)
}

// TestPresenceBadInput: presence requests that cannot be answered get an
// error frame; a client cannot set what others see of it.
func TestPresenceBadInput(t *testing.T) {
	t.Parallel()
	_, ts := presenceHub(t, wshub.Options{})
	bob := dialAs(t, ts, "bob")
	bob.joinPres("p")
	bob.nextDiff("p")
	mallory := dialAs(t, ts, "mallory")
	mallory.join("nopres")
	for _, tc := range []struct{ frame, want string }{
		{`{"type":"presence","room":"p","id":"1"}`, "not a member"},
		{`{"type":"presence","room":"nopres","id":"2"}`, "no presence"},
		{`{"type":"presence","room":"","id":"3"}`, "invalid room"},
	} {
		m := mallory.request("%s", tc.frame)
		if m.Type != "error" || !strings.Contains(m.Error, tc.want) {
			t.Fatalf("%s: got %+v, want an error with %q", tc.frame, m, tc.want)
		}
	}
	// Fields a client sends along are ignored: its info comes from the
	// server.
	st := mallory.joinPresFrame("p", `{"type":"join","room":"p","id":"j","info":{"name":"Bob"},"data":{"id":"bob"}}`)
	equal(t, "state", ids(st.Data.Members), "bob:1 mallory:1")
	equal(t, "mallory's info", string(st.Data.Members[1].Info), `{"name":"Mallory"}`)
	equal(t, "bob sees", bob.nextDiff("p"), "+[mallory:1] -[]")
	equal(t, "mallory sees", mallory.nextDiff("p"), "+[mallory:1] -[]")
	mallory.sendRaw(`{"type":"presence_diff","room":"p","data":{"joins":[{"id":"eve"}]}}`)
	mallory.sendRaw(`{"type":"presence","room":"p","id":"s","data":{"members":[{"id":"eve"}]}}`)
	equal(t, "unknown type", mallory.readPres().Type, "error")
	st = mallory.readPres()
	equal(t, "state on request", ids(st.Data.Members), "bob:1 mallory:1")
	equal(t, "then the ack", mallory.readPres().Type, "ack")
	bob.mustAck(`{"type":"leave","room":"p","id":"l"}`) // bob got nothing from mallory
}

// memPresence is a working in-process PresenceEngine: hubs share their
// members of a room through a map and are told of each other's changes.
type memPresence struct {
	*memBroker
	name string
	all  *presenceBus
}

type presenceBus struct {
	mu       sync.Mutex
	members  map[string]map[string][]byte // room → hub → members
	watchers map[string]map[string]func(string, []byte)
}

func (b *memPresence) SetPresence(room string, members []byte) error {
	b.all.mu.Lock()
	defer b.all.mu.Unlock()
	if b.all.members[room] == nil {
		b.all.members[room] = make(map[string][]byte)
	}
	if members == nil {
		delete(b.all.members[room], b.name)
	} else {
		b.all.members[room][b.name] = members
	}
	for hub, update := range b.all.watchers[room] {
		if hub != b.name {
			update(b.name, members)
		}
	}
	return nil
}

func (b *memPresence) WatchPresence(room string, update func(string, []byte)) error {
	b.all.mu.Lock()
	defer b.all.mu.Unlock()
	if b.all.watchers[room] == nil {
		b.all.watchers[room] = make(map[string]func(string, []byte))
	}
	b.all.watchers[room][b.name] = update
	for hub, ms := range b.all.members[room] {
		if hub != b.name {
			update(hub, ms)
		}
	}
	return nil
}

func (b *memPresence) UnwatchPresence(room string) error {
	b.all.mu.Lock()
	defer b.all.mu.Unlock()
	delete(b.all.watchers[room], b.name)
	return nil
}

// crash makes hub's members expire, as a broker does for a hub that
// stopped.
func (bus *presenceBus) crash(hub string) {
	bus.mu.Lock()
	defer bus.mu.Unlock()
	for room, ms := range bus.members {
		delete(ms, hub)
		for other, update := range bus.watchers[room] {
			if other != hub {
				update(hub, nil)
			}
		}
	}
}

// TestPresenceAcrossHubs: with a PresenceBroker, a room's state and diffs
// cover every hub's members, one ID with connections on two hubs is one
// member, and a hub that stops takes its members out of the others' view.
func TestPresenceAcrossHubs(t *testing.T) {
	t.Parallel()
	bus := newMemBus()
	pbus := &presenceBus{members: make(map[string]map[string][]byte), watchers: make(map[string]map[string]func(string, []byte))}
	var hubs []*wshub.Hub
	var servers []*httptest.Server
	for i := range 2 {
		b := &memPresence{memBroker: newMemBroker(bus), name: fmt.Sprint("hub", i), all: pbus}
		h, ts := presenceHub(t, wshub.Options{Engine: b})
		hubs, servers = append(hubs, h), append(servers, ts)
	}
	alice := dialAs(t, servers[0], "alice")
	alice.joinPres("p")
	alice.nextDiff("p")
	eventually(t, "hub 0 shares alice", func() bool {
		pbus.mu.Lock()
		defer pbus.mu.Unlock()
		return pbus.members["p"]["hub0"] != nil
	})
	bob := dialAs(t, servers[1], "bob")
	equal(t, "bob sees alice", ids(bob.joinPres("p").Data.Members), "alice:1 bob:1")
	equal(t, "alice sees bob", alice.nextDiff("p"), "+[bob:1] -[]")
	bob.nextDiff("p")
	bob2 := dialAs(t, servers[0], "bob") // bob's second tab, on the other hub
	equal(t, "one member, two connections", ids(bob2.joinPres("p").Data.Members), "alice:1 bob:2")
	eventually(t, "hub 1 counts bob's two connections", func() bool {
		return ids(hubs[1].Room("p").Presence()) == "alice:1 bob:2"
	})
	pbus.crash("hub1")
	// bob stays: his connection on hub 0 is alive.
	carol := dialAs(t, servers[0], "carol")
	equal(t, "after hub 1 stopped", ids(carol.joinPres("p").Data.Members), "alice:1 bob:1 carol:1")
	equal(t, "no leave for bob", alice.nextDiff("p"), "+[carol:1] -[]")
	bob2.conn.CloseNow()
	equal(t, "bob's last connection", alice.nextDiff("p"), "+[] -[bob:0]")
}
