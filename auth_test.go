package wshub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// testClock is a clock the test moves: timers fire in Advance, on the
// test's goroutine, when their time comes.
type testClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*testTimer
}

type testTimer struct {
	at   time.Time
	f    func()
	done bool // fired or stopped
}

func newTestClock(h *wshub.Hub) *testClock {
	c := &testClock{now: time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)}
	wshub.SetClock(h, c.Now, c.AfterFunc)
	return c
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	tm := &testTimer{at: c.now.Add(d), f: f}
	c.timers = append(c.timers, tm)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := tm.done
		tm.done = true
		return !was
	}
}

// Advance moves the clock by d and runs the timers due by then.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []*testTimer
	for _, tm := range c.timers {
		if !tm.done && !tm.at.After(c.now) {
			tm.done = true
			due = append(due, tm)
		}
	}
	c.mu.Unlock()
	for _, tm := range due {
		tm.f()
	}
}

// authMsg is a frame as a client of tokens decodes it.
type authMsg struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	Room  string `json:"room"`
	From  string `json:"from"`
	Error string `json:"error"`
	TTL   int64  `json:"ttl"`
	Data  json.RawMessage
}

func (p *peer) readAuth() authMsg {
	p.t.Helper()
	_, b, err := p.conn.Read(p.ctx)
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	var m authMsg
	if err := json.Unmarshal(b, &m); err != nil {
		p.t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// expectAuth reads the next frame, which must be an auth frame with ttl.
func (p *peer) expectAuth(ttl time.Duration) {
	p.t.Helper()
	m := p.readAuth()
	if m.Type != "auth" || m.TTL != ttl.Milliseconds() {
		p.t.Fatalf("got %+v, want an auth frame with ttl %d", m, ttl.Milliseconds())
	}
}

// readCloseReason reads until the connection ends and returns its close
// status and reason.
func (p *peer) readCloseReason() (websocket.StatusCode, string) {
	p.t.Helper()
	for {
		_, _, err := p.conn.Read(p.ctx)
		if ce, ok := errors.AsType[websocket.CloseError](err); ok {
			return ce.Code, ce.Reason
		}
		if err != nil {
			return websocket.CloseStatus(err), ""
		}
	}
}

// tokenHub is a hub whose tokens read "<id>/<seconds>" (an identity that
// expires that many seconds after the test clock's now; 0: never) or
// "<id>/<seconds>/<rooms>" (the rooms, comma-separated, that AuthorizeJoin
// allows; without, any); "bad" tokens are refused. With first, clients
// sign in with their first frame; else Authenticate reads the token from
// the query's "token".
type tokenHub struct {
	hub   *wshub.Hub
	ts    *httptest.Server
	clock *testClock

	mu           sync.Mutex
	disconnected map[string]error // by client ID
	connected    []string         // client IDs, in OnConnect's order
}

func newTokenHub(t *testing.T, first bool, opts wshub.Options) *tokenHub {
	t.Helper()
	th := &tokenHub{disconnected: make(map[string]error)}
	opts.AuthenticateToken = func(c *wshub.Client, token string) (wshub.Identity, error) {
		return th.parse(token)
	}
	if !first {
		opts.Authenticate = func(r *http.Request) (wshub.Identity, error) {
			return th.parse(r.URL.Query().Get("token"))
		}
	}
	if opts.AuthorizeJoin == nil {
		opts.AuthorizeJoin = func(c *wshub.Client, room string) error {
			allowed, _ := c.Value("rooms").([]string)
			if allowed == nil || slices.Contains(allowed, room) {
				return nil
			}
			return fmt.Errorf("not for %s", c.ID())
		}
	}
	opts.OnConnect = func(c *wshub.Client) {
		th.mu.Lock()
		th.connected = append(th.connected, c.ID())
		th.mu.Unlock()
	}
	opts.OnDisconnect = func(c *wshub.Client, reason error) {
		th.mu.Lock()
		th.disconnected[c.ID()] = reason
		th.mu.Unlock()
	}
	th.hub = wshub.New(nil, &opts)
	th.clock = newTestClock(th.hub)
	th.ts = serve(t, th.hub)
	return th
}

func (th *tokenHub) parse(token string) (wshub.Identity, error) {
	parts := strings.Split(token, "/")
	if len(parts) < 2 || parts[0] == "bad" {
		return wshub.Identity{}, errors.New("bad token")
	}
	id := wshub.Identity{ID: parts[0], Info: map[string]string{"token": token}}
	secs, err := strconv.Atoi(parts[1])
	if err != nil {
		return wshub.Identity{}, err
	}
	if secs != 0 {
		id.Expires = th.clock.Now().Add(time.Duration(secs) * time.Second)
	}
	if len(parts) > 2 {
		id.Values = map[string]any{"rooms": strings.Split(parts[2], ",")}
	}
	return id, nil
}

func (th *tokenHub) reason(id string) (error, bool) {
	th.mu.Lock()
	defer th.mu.Unlock()
	err, ok := th.disconnected[id]
	return err, ok
}

// dialToken connects with token in the URL ("" for none).
func (th *tokenHub) dialToken(t *testing.T, token string) *peer {
	t.Helper()
	u := wsURL(th.ts)
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	return dialURL(t, u)
}

// alive checks with a round trip that p's connection still serves it.
func (p *peer) alive(room string) {
	p.t.Helper()
	p.mustAck(`{"type":"join","room":%q,"id":"alive"}`, room)
}

func TestTokenExpiryCloses(t *testing.T) {
	th := newTokenHub(t, false, wshub.Options{})
	p := th.dialToken(t, "alice/60")
	p.expectAuth(time.Minute)

	// The hub closes 5 s after the expiry, not before.
	th.clock.Advance(time.Minute + wshub.ExpiryGrace - time.Second)
	p.alive("lobby")
	th.clock.Advance(time.Second)
	code, reason := p.readCloseReason()
	equal(t, "close code", code, wshub.StatusTokenExpired)
	equal(t, "close reason", reason, "token expired")
	eventually(t, "OnDisconnect", func() bool {
		err, ok := th.reason("alice")
		return ok && errors.Is(err, wshub.ErrTokenExpired)
	})

	// A client without an expiry is never closed for one.
	q := th.dialToken(t, "bob/0")
	q.alive("lobby") // the first frame is the ack: no auth frame came
	th.clock.Advance(24 * time.Hour)
	q.alive("lobby")

	// An identity expired already is closed at once.
	r := th.dialToken(t, "carol/-10")
	if m := r.readAuth(); m.Type != "auth" || m.TTL != 1 {
		t.Fatalf("got %+v, want an auth frame with the least ttl", m)
	}
	th.clock.Advance(0)
	code, _ = r.readCloseReason()
	equal(t, "close code of an expired identity", code, wshub.StatusTokenExpired)
}

func TestRefreshKeepsConnection(t *testing.T) {
	th := newTokenHub(t, false, wshub.Options{})
	p := th.dialToken(t, "alice/60")
	p.expectAuth(time.Minute)
	p.join("lobby")

	// Messages published across refreshes all arrive, in order: the
	// server publishes while alice refreshes three times, 50 s apart,
	// each time once the previous refresh was answered. Fewer than the
	// send queue holds: a server's broadcasts do not wait for a client.
	const n = 240
	published := make(chan error, 1)
	go func() {
		for i := range n {
			if err := th.hub.Room("lobby").Broadcast(testCtx(t), &wshub.Message{Data: i}); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	next, refreshes, answered := 0, 0, true
	for next < n || refreshes < 3 || !answered {
		if refreshes < 3 && answered && next >= refreshes*n/3 {
			th.clock.Advance(50 * time.Second)
			p.sendRaw(`{"type":"refresh","id":"r","token":"alice/60"}`)
			refreshes++
			answered = false
		}
		m := p.readAuth()
		switch m.Type {
		case "message":
			equal(t, "message", string(m.Data), strconv.Itoa(next))
			next++
		case "auth":
			equal(t, "ttl", m.TTL, time.Minute.Milliseconds())
			if a := p.readAuthSkipping(&next); a.Type != "ack" || a.ID != "r" {
				t.Fatalf("got %+v after the auth frame, want the refresh's ack", a)
			}
			answered = true
		default:
			t.Fatalf("got %+v", m)
		}
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	// 150 s have passed, past the first token's end: the last refresh holds.
	p.alive("lobby")
	th.clock.Advance(time.Minute + wshub.ExpiryGrace)
	code, _ := p.readCloseReason()
	equal(t, "close code after the last refresh's end", code, wshub.StatusTokenExpired)
}

// readAuthSkipping reads the next frame that is not a room message,
// checking that room messages go on in order (*next counts them).
func (p *peer) readAuthSkipping(next *int) authMsg {
	p.t.Helper()
	for {
		m := p.readAuth()
		if m.Type != "message" {
			return m
		}
		equal(p.t, "message", string(m.Data), strconv.Itoa(*next))
		*next++
	}
}

// publishOK publishes to room, which p is a member of: its own message
// comes back, then the ack.
func (p *peer) publishOK(room string) {
	p.t.Helper()
	p.sendRaw(fmt.Sprintf(`{"type":"publish","room":%q,"id":"p","data":"x"}`, room))
	if m := p.readAuth(); m.Type != "message" || m.Room != room {
		p.t.Fatalf("publish to %s: got %+v, want the message", room, m)
	}
	if m := p.readAuth(); m.Type != "ack" || m.ID != "p" {
		p.t.Fatalf("publish to %s: got %+v, want the ack", room, m)
	}
}

func TestRefusedRefreshStillExpires(t *testing.T) {
	th := newTokenHub(t, false, wshub.Options{})
	p := th.dialToken(t, "alice/60")
	p.expectAuth(time.Minute)

	m := p.request(`{"type":"refresh","id":"r","token":"bad"}`)
	if m.Type != "error" || m.ID != "r" || !strings.HasPrefix(m.Error, wshub.ErrRefreshRefused.Error()) {
		t.Fatalf("refused refresh: got %+v", m)
	}
	m = p.request(`{"type":"refresh","id":"r2","token":"mallory/600"}`)
	if m.Type != "error" || !strings.Contains(m.Error, "not the client's") {
		t.Fatalf("refresh to another ID: got %+v, want an error", m)
	}
	p.alive("lobby")
	th.clock.Advance(time.Minute + wshub.ExpiryGrace)
	code, _ := p.readCloseReason()
	equal(t, "close code", code, wshub.StatusTokenExpired)
}

func TestRefreshLeavesRoomsNoLongerAllowed(t *testing.T) {
	th := newTokenHub(t, false, wshub.Options{})
	p := th.dialToken(t, "alice/60/a,b")
	p.expectAuth(time.Minute)
	p.join("a")
	p.join("b")
	m := p.request(`{"type":"join","room":"c","id":"c"}`)
	if m.Type != "error" {
		t.Fatalf("join of c: got %+v, want it refused", m)
	}
	// The server joins alice to a room of its own, which AuthorizeJoin
	// would refuse: a refresh does not take it away.
	cs := th.hub.ClientsOf("alice")
	equal(t, "alice's connections", len(cs), 1)
	if err := cs[0].Join("srv"); err != nil {
		t.Fatal(err)
	}

	p.sendRaw(`{"type":"refresh","id":"r","token":"alice/60/a"}`)
	p.expectAuth(time.Minute)
	if m := p.readAuth(); m.Type != "leave" || m.Room != "b" || !strings.HasPrefix(m.Error, wshub.ErrJoinDenied.Error()) {
		t.Fatalf("got %+v, want a leave of b, join denied", m)
	}
	if m := p.readAuth(); m.Type != "ack" || m.ID != "r" {
		t.Fatalf("got %+v, want the refresh's ack", m)
	}
	equal(t, "rooms", strings.Join(cs[0].Rooms(), ","), "a,srv")
	m = p.request(`{"type":"publish","room":"b","id":"p"}`)
	if m.Type != "error" || m.Error != wshub.ErrNotMember.Error() {
		t.Fatalf("publish to b: got %+v, want not a member", m)
	}
}

func TestRefreshInfoShowsInPresence(t *testing.T) {
	th := newTokenHub(t, false, wshub.Options{
		Rooms: func(string) wshub.RoomOptions { return wshub.RoomOptions{Presence: true} },
	})
	alice := th.dialToken(t, "alice/60")
	alice.expectAuth(time.Minute)
	bob := th.dialToken(t, "bob/0")
	bob.joinPres("p")
	if d := bob.nextDiff("p"); d != "+[bob:1] -[]" { // his own join
		t.Fatalf("bob's diff: %s", d)
	}
	alice.joinPres("p")
	if d := bob.nextDiff("p"); d != "+[alice:1] -[]" {
		t.Fatalf("bob's diff: %s", d)
	}
	if d := alice.nextDiff("p"); d != "+[alice:1] -[]" {
		t.Fatalf("alice's diff: %s", d)
	}

	alice.sendRaw(`{"type":"refresh","id":"r","token":"alice/120"}`)
	alice.expectAuth(2 * time.Minute)
	for m := alice.readAuth(); m.Type != "ack"; m = alice.readAuth() {
		if m.Type != "presence_diff" { // of her own info, sent 100 ms later
			t.Fatalf("got %+v, want the refresh's ack", m)
		}
	}
	d := bob.readPres()
	if d.Type != "presence_diff" || len(d.Data.Joins) != 1 || len(d.Data.Leaves) != 0 {
		t.Fatalf("bob got %+v, want a diff with alice's new info", d)
	}
	equal(t, "alice's info", string(d.Data.Joins[0].Info), `{"token":"alice/120"}`)
	st := bob.joinPresFrame("p", `{"type":"presence","room":"p","id":"s"}`)
	for _, m := range st.Data.Members {
		if m.ID == "alice" {
			equal(t, "alice's info in the state", string(m.Info), `{"token":"alice/120"}`)
		}
	}
}

func TestFirstFrameSignIn(t *testing.T) {
	th := newTokenHub(t, true, wshub.Options{})

	// Nothing reaches a client before it signs in, not even a broadcast,
	// and it counts as a client (Stats) with no ID.
	p := th.dialToken(t, "")
	eventually(t, "the client counted", func() bool { return th.hub.Stats().Clients == 1 })
	if err := th.hub.Broadcast(testCtx(t), &wshub.Message{Data: "before"}); err != nil {
		t.Fatal(err)
	}
	p.sendRaw(`{"type":"auth","id":"a","token":"alice/60"}`)
	p.expectAuth(time.Minute)
	if m := p.readAuth(); m.Type != "ack" || m.ID != "a" {
		t.Fatalf("got %+v, want the auth's ack", m)
	}
	p.join("lobby")
	p.publishOK("lobby")
	equal(t, "alice's connections", len(th.hub.ClientsOf("alice")), 1)

	// A second auth is a refresh.
	p.sendRaw(`{"type":"auth","id":"a2","token":"alice/120"}`)
	p.expectAuth(2 * time.Minute)
}

func TestFirstFrameRefusals(t *testing.T) {
	th := newTokenHub(t, true, wshub.Options{})
	cases := []struct {
		name, first string
		code        websocket.StatusCode
		reason      string
	}{
		{"missing", `{"type":"join","room":"lobby","id":"1"}`, wshub.StatusSignedOut, "auth required"},
		{"undecodable", `{"type":`, wshub.StatusSignedOut, "auth required"},
		{"wrong", `{"type":"auth","id":"1","token":"bad"}`, wshub.StatusSignedOut, "unauthorized"},
		{"slow", "", wshub.StatusTokenExpired, "auth timeout"},
	}
	for _, tc := range cases {
		eventually(t, "the last client gone", func() bool { return th.hub.Stats().Clients == 0 })
		p := th.dialToken(t, "")
		if tc.first != "" {
			p.sendRaw(tc.first)
		} else {
			eventually(t, "the client counted", func() bool { return th.hub.Stats().Clients == 1 })
			th.clock.Advance(wshub.AuthTimeout)
		}
		code, reason := p.readCloseReason()
		equal(t, tc.name+": close code", code, tc.code)
		equal(t, tc.name+": close reason", reason, tc.reason)
	}
	eventually(t, "every client gone", func() bool { return th.hub.Stats().Clients == 0 })
	s := th.hub.Stats()
	equal(t, "closes signed out", s.Closes["signed out"], 3)
	equal(t, "closes token expired", s.Closes["token expired"], 1)
	equal(t, "closes with 4003", s.CloseCodes[4003], 3)
	equal(t, "closes with 4001", s.CloseCodes[4001], 1)
	th.mu.Lock()
	defer th.mu.Unlock()
	equal(t, "OnConnect calls", len(th.connected), 0)
	equal(t, "OnDisconnect calls", len(th.disconnected), 0)
}

func TestShutdownWhileSigningIn(t *testing.T) {
	th := newTokenHub(t, true, wshub.Options{})
	p := th.dialToken(t, "")
	eventually(t, "the client counted", func() bool { return th.hub.Stats().Clients == 1 })
	done := make(chan error, 1)
	go func() { done <- th.hub.Shutdown(testCtx(t)) }()
	equal(t, "close code", p.readClose(), websocket.StatusGoingAway)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestGrantExpiresAndRenews(t *testing.T) {
	var th *tokenHub
	grants := make(chan string, 10)
	th = newTokenHub(t, false, wshub.Options{
		AuthorizeGrant: func(c *wshub.Client, room, token string) (time.Time, error) {
			grants <- room + " " + token
			secs, err := strconv.Atoi(strings.TrimPrefix(token, "grant/"))
			if err != nil || !strings.HasPrefix(token, "grant/") {
				return time.Time{}, errors.New("no such grant")
			}
			if secs == 0 {
				return time.Time{}, nil
			}
			return th.clock.Now().Add(time.Duration(secs) * time.Second), nil
		},
	})
	p := th.dialToken(t, "alice/0/open") // AuthorizeJoin allows "open" only
	m := p.request(`{"type":"join","room":"vip","id":"g1","token":"grant/30"}`)
	if m.Type != "ack" || m.TTL != 30_000 {
		t.Fatalf("granted join: got %+v, want an ack with ttl 30000", m)
	}
	equal(t, "AuthorizeGrant saw", <-grants, "vip grant/30")
	m = p.request(`{"type":"join","room":"vip2","id":"g2","token":"nope"}`)
	if m.Type != "error" || !strings.HasPrefix(m.Error, wshub.ErrJoinDenied.Error()) {
		t.Fatalf("refused grant: got %+v", m)
	}
	<-grants

	// A renewal before the end pushes it back; a refused one changes
	// nothing.
	th.clock.Advance(20 * time.Second)
	m = p.request(`{"type":"join","room":"vip","id":"g3","token":"grant/30"}`)
	if m.Type != "ack" || m.TTL != 30_000 {
		t.Fatalf("renewal: got %+v, want an ack with ttl 30000", m)
	}
	m = p.request(`{"type":"join","room":"vip","id":"g4","token":"nope"}`)
	if m.Type != "error" {
		t.Fatalf("refused renewal: got %+v, want an error", m)
	}
	th.clock.Advance(20 * time.Second) // past the first grant's end
	p.publishOK("vip")

	// A refresh of the sign-in leaves a granted room to its grant.
	p.sendRaw(`{"type":"refresh","id":"r","token":"alice/0/open"}`)
	if m := p.readAuth(); m.Type != "auth" || m.TTL != 0 {
		t.Fatalf("got %+v, want an auth frame without ttl", m)
	}
	if m := p.readAuth(); m.Type != "ack" {
		t.Fatalf("got %+v, want the refresh's ack", m)
	}

	th.clock.Advance(10 * time.Second) // the renewed grant's end
	if m := p.readAuth(); m.Type != "leave" || m.Room != "vip" || m.Error != wshub.ErrGrantExpired.Error() {
		t.Fatalf("got %+v, want a leave of vip: grant expired", m)
	}
	m = p.request(`{"type":"publish","room":"vip","id":"p2"}`)
	if m.Type != "error" || m.Error != wshub.ErrNotMember.Error() {
		t.Fatalf("publish after the grant's end: got %+v, want not a member", m)
	}

	// A grant without an end lasts.
	m = p.request(`{"type":"join","room":"vip","id":"g5","token":"grant/0"}`)
	if m.Type != "ack" || m.TTL != 0 {
		t.Fatalf("join with a lasting grant: got %+v", m)
	}
	th.clock.Advance(time.Hour)
	p.publishOK("vip")
}

func TestDisconnectUser(t *testing.T) {
	th := newTokenHub(t, false, wshub.Options{})
	a1 := th.dialToken(t, "alice/0")
	a2 := th.dialToken(t, "alice/0")
	b := th.dialToken(t, "bob/0")
	for _, p := range []*peer{a1, a2, b} {
		p.join("lobby")
	}
	equal(t, "alice's connections", len(th.hub.ClientsOf("alice")), 2)
	equal(t, "nobody's connections", len(th.hub.ClientsOf("nobody")), 0)

	if err := th.hub.DisconnectUser(context.Background(), "alice", wshub.StatusSignedOut, "banned"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peer{a1, a2} {
		code, reason := p.readCloseReason()
		equal(t, "close code", code, wshub.StatusSignedOut)
		equal(t, "close reason", reason, "banned")
	}
	b.publishOK("lobby")
}

func TestAuthFramesWithoutTokens(t *testing.T) {
	// Without AuthenticateToken, "auth" and "refresh" are the
	// application's: here, with no Handler, unknown types.
	h := wshub.New(nil, nil)
	p := dial(t, serve(t, h))
	for _, typ := range []string{"auth", "refresh"} {
		m := p.request(`{"type":%q,"id":"1","token":"x"}`, typ)
		if m.Type != "error" || !strings.HasPrefix(m.Error, wshub.ErrUnknownType.Error()) {
			t.Fatalf("%s: got %+v, want unknown message type", typ, m)
		}
	}
}
