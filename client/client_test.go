package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/client"
	"github.com/wshub/wshub/wshubtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func allowAll(*wshub.Client, string) error { return nil }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// next returns the next message of c, within the test's context.
func next(t *testing.T, ctx context.Context, c *client.Conn) *wshub.Message {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if !ok {
			t.Fatalf("messages closed: %v", c.Err())
		}
		return m
	case <-ctx.Done():
		t.Fatal("no message")
	}
	return nil
}

func data(m *wshub.Message) string {
	b, _ := m.Data.(json.RawMessage)
	return string(b)
}

func TestJoinPublishLeave(t *testing.T) {
	s := wshubtest.NewServer(t, nil, &wshub.Options{AuthorizeJoin: allowAll})
	ctx := testCtx(t)
	c, err := client.Dial(ctx, s.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other := s.Dial(t, "")
	other.Join("lobby")
	if _, err := c.Join(ctx, "lobby", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(ctx, "lobby", map[string]string{"text": "hi"}); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ctx, c); m.Type != "message" || data(m) != `{"text":"hi"}` || m.From == "" {
		t.Fatalf("got %+v", m)
	}
	other.ExpectData("lobby", map[string]string{"text": "hi"})
	var se *client.ServerError
	if err := c.Publish(ctx, "elsewhere", 1); !errors.As(err, &se) || !strings.Contains(se.Text, "not a member") {
		t.Fatalf("publish to a room not joined: %v", err)
	}
	if err := c.Leave(ctx, "lobby"); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-c.Messages(); ok {
		t.Fatal("messages still open after Close")
	}
	if err := c.Publish(ctx, "lobby", 1); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
}

// TestReconnectRecovers: the server closes the connection (1001, then
// 1012) while messages keep coming; the client reconnects, rejoins with
// since, and passes every message once, in order.
func TestReconnectRecovers(t *testing.T) {
	var mu sync.Mutex
	var conns []*wshub.Client
	s := wshubtest.NewServer(t, nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		Rooms:         func(string) wshub.RoomOptions { return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}} },
		OnConnect: func(c *wshub.Client) {
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		},
	})
	ctx := testCtx(t)
	events := make(chan client.Event, 100)
	c, err := client.Dial(ctx, s.URL, &client.Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		OnEvent: func(e client.Event) { events <- e }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	room := s.Hub.Room("r")
	n := 0
	broadcast := func(k int) {
		for range k {
			n++
			if err := room.Broadcast(ctx, &wshub.Message{Data: n}); err != nil {
				t.Fatal(err)
			}
		}
	}
	broadcast(5)
	for i, code := range []websocket.StatusCode{websocket.StatusGoingAway, websocket.StatusServiceRestart} {
		mu.Lock()
		last := conns[len(conns)-1]
		mu.Unlock()
		last.Close(code, "bye")
		broadcast(5) // to nobody, or after the close: recovered on rejoin
		for e := range events {
			if e.Room == "r" {
				if !e.Recovered {
					t.Fatalf("round %d: rejoin not recovered: %+v", i, e)
				}
				break
			}
		}
		broadcast(5)
	}
	for want := 1; want <= n; want++ {
		m := next(t, ctx, c)
		if data(m) != fmt.Sprint(want) {
			t.Fatalf("got %s, want %d", data(m), want)
		}
	}
}

// TestCloseCodeNotRetried: a close about the client (1008) ends the Conn.
func TestCloseCodeNotRetried(t *testing.T) {
	connected := make(chan *wshub.Client, 1)
	s := wshubtest.NewServer(t, nil, &wshub.Options{OnConnect: func(c *wshub.Client) { connected <- c }})
	ctx := testCtx(t)
	c, err := client.Dial(ctx, s.URL, &client.Options{MinBackoff: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	(<-connected).Close(websocket.StatusPolicyViolation, "go away")
	for range c.Messages() {
	}
	if got := websocket.CloseStatus(c.Err()); got != websocket.StatusPolicyViolation {
		t.Fatalf("err %v, want close status 1008", c.Err())
	}
	if c.State() != client.Closed {
		t.Fatalf("state %v", c.State())
	}
}

// TestDialRefused: a refused upgrade is an error of Dial.
func TestDialRefused(t *testing.T) {
	s := wshubtest.NewServer(t, nil, &wshub.Options{Limits: wshub.Limits{MaxClients: -1}})
	s.Hub.Shutdown(testCtx(t))
	if _, err := client.Dial(testCtx(t), s.URL, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("dial a closed hub: %v", err)
	}
}

// switchable serves hub at /ws, or another handler once set: a hub that
// restarts, a proxy whose server is down, a ban.
type switchable struct {
	hub     *wshub.Hub
	url     string
	mu      sync.Mutex
	handler http.Handler // nil: the hub
}

func newSwitchable(t *testing.T, opts *wshub.Options) *switchable {
	t.Helper()
	s := &switchable{hub: wshub.New(nil, opts)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		h := s.handler
		s.mu.Unlock()
		if h == nil {
			h = s.hub
		}
		h.ServeHTTP(w, r)
	}))
	s.url = "ws" + strings.TrimPrefix(ts.URL, "http")
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wshubtest.DefaultTimeout)
		defer cancel()
		s.hub.Shutdown(ctx)
		ts.Close()
	})
	return s
}

func (s *switchable) serve(h http.Handler) {
	s.mu.Lock()
	s.handler = h
	s.mu.Unlock()
}

func refuse(status int, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, body, status) })
}

// eventLog records a Conn's events, as an application that handles them
// between messages does.
type eventLog struct {
	mu     sync.Mutex
	events []client.Event
	ch     chan client.Event
}

func newEventLog() *eventLog { return &eventLog{ch: make(chan client.Event, 1000)} }

func (l *eventLog) add(e client.Event) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
	l.ch <- e
}

// rejoined reports whether room's rejoin was reported.
func (l *eventLog) rejoined(room string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.events {
		if e.Room == room {
			return true
		}
	}
	return false
}

// waitFor returns the next event that ok accepts.
func (l *eventLog) waitFor(t *testing.T, ctx context.Context, ok func(client.Event) bool) client.Event {
	t.Helper()
	for {
		select {
		case e := <-l.ch:
			if ok(e) {
				return e
			}
		case <-ctx.Done():
			t.Fatal("no such event")
		}
	}
}

// TestRejoinOrder: after a reconnection the rooms are rejoined in the
// order they were joined, between Rejoining and Online, and each room's
// rejoin is reported before the messages it recovered reach Messages.
func TestRejoinOrder(t *testing.T) {
	connected := make(chan *wshub.Client, 4)
	s := newSwitchable(t, &wshub.Options{
		AuthorizeJoin: allowAll,
		Rooms:         func(string) wshub.RoomOptions { return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}} },
		OnConnect:     func(c *wshub.Client) { connected <- c },
	})
	ctx := testCtx(t)
	log := newEventLog()
	c, err := client.Dial(ctx, s.url, &client.Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, OnEvent: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rooms := []string{"m", "z", "a", "q"}
	for _, r := range rooms {
		if _, err := c.Join(ctx, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	s.serve(refuse(http.StatusServiceUnavailable, "restarting"))
	(<-connected).Close(websocket.StatusGoingAway, "bye")
	e := log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Offline })
	if websocket.CloseStatus(e.Err) != websocket.StatusGoingAway {
		t.Fatalf("offline: %+v", e)
	}
	// Refused for now (503): tried again.
	e = log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Offline })
	var re *client.RefusedError
	if !errors.As(e.Err, &re) || re.StatusCode != http.StatusServiceUnavailable || strings.TrimSpace(string(re.Body)) != "restarting" {
		t.Fatalf("offline: %+v", e)
	}
	for _, r := range rooms {
		if err := s.hub.Room(r).Broadcast(ctx, &wshub.Message{Data: "missed in " + r}); err != nil {
			t.Fatal(err)
		}
	}
	s.serve(nil)
	log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Rejoining && e.Room == "" })
	for _, r := range rooms {
		e := log.waitFor(t, ctx, func(e client.Event) bool { return e.Room != "" || e.State == client.Online })
		if e.Room != r || !e.Recovered || e.Err != nil || e.State != client.Rejoining {
			t.Fatalf("got %+v, want the rejoin of %s, recovered", e, r)
		}
	}
	log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Online })
	for range rooms {
		m := next(t, ctx, c)
		if !log.rejoined(m.Room) {
			t.Fatalf("%s reached Messages before its room's rejoin was reported", data(m))
		}
		if data(m) != `"missed in `+m.Room+`"` {
			t.Fatalf("got %+v", m)
		}
	}
}

// TestReconnectRefused: a proxy whose server is down (502) is tried
// again; a refusal about the client (403) ends the Conn.
func TestReconnectRefused(t *testing.T) {
	connected := make(chan *wshub.Client, 4)
	s := newSwitchable(t, &wshub.Options{OnConnect: func(c *wshub.Client) { connected <- c }})
	ctx := testCtx(t)
	log := newEventLog()
	c, err := client.Dial(ctx, s.url, &client.Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, OnEvent: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.serve(refuse(http.StatusBadGateway, "bad gateway"))
	(<-connected).Close(websocket.StatusGoingAway, "bye")
	var re *client.RefusedError
	log.waitFor(t, ctx, func(e client.Event) bool {
		return e.State == client.Offline && errors.As(e.Err, &re) && re.StatusCode == http.StatusBadGateway
	})
	s.serve(refuse(http.StatusForbidden, "banned"))
	for range c.Messages() {
	}
	if !errors.As(c.Err(), &re) || re.StatusCode != http.StatusForbidden || strings.TrimSpace(string(re.Body)) != "banned" ||
		!strings.HasPrefix(re.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("err %v, want the 403", c.Err())
	}
	if e := log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Closed }); e.Err != c.Err() {
		t.Fatalf("closed with %v, Err %v", e.Err, c.Err())
	}
}

// TestFailFastRejoining: with FailFast, a request made while the rooms
// are being rejoined waits for them rather than failing with ErrOffline;
// one made while offline fails.
func TestFailFastRejoining(t *testing.T) {
	connected := make(chan *wshub.Client, 4)
	var mu sync.Mutex
	var block chan struct{} // while not nil, joins wait for it
	s := newSwitchable(t, &wshub.Options{
		AuthorizeJoin: func(*wshub.Client, string) error {
			mu.Lock()
			b := block
			mu.Unlock()
			if b != nil {
				<-b
			}
			return nil
		},
		OnConnect: func(c *wshub.Client) { connected <- c },
	})
	ctx := testCtx(t)
	log := newEventLog()
	c, err := client.Dial(ctx, s.url, &client.Options{FailFast: true, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, OnEvent: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	mu.Lock()
	block = release
	mu.Unlock()
	s.serve(refuse(http.StatusServiceUnavailable, "restarting"))
	(<-connected).Close(websocket.StatusGoingAway, "bye")
	log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Offline })
	if err := c.Publish(ctx, "r", 1); !errors.Is(err, client.ErrOffline) {
		t.Fatalf("publish while offline: %v", err)
	}
	s.serve(nil)
	log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Rejoining })
	if st := c.State(); st != client.Rejoining {
		t.Fatalf("state %v while the rejoin waits", st)
	}
	// The rejoin waits for release: the publish waits for it too, until
	// its context ends (any short wait shows it did not fail at once).
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.Publish(short, "r", 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("publish while rejoining: %v, want it to wait", err)
	}
	close(release)
	if err := c.Publish(ctx, "r", 2); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ctx, c); data(m) != "2" {
		t.Fatalf("got %+v", m)
	}
}

// TestReconnectHonoursRetryAfter: a hub that answers 503 with a
// Retry-After (a hub shutting down, full or overloaded) is tried again no
// sooner than it says, whatever MinBackoff.
func TestReconnectHonoursRetryAfter(t *testing.T) {
	connected := make(chan *wshub.Client, 4)
	s := newSwitchable(t, &wshub.Options{OnConnect: func(c *wshub.Client) { connected <- c }})
	closed := wshub.New(nil, nil)
	closed.Close() // answers 503 with a Retry-After of 1 or 2 s
	ctx := testCtx(t)
	log := newEventLog()
	c, err := client.Dial(ctx, s.url, &client.Options{MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond, OnEvent: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s.serve(closed)
	(<-connected).Close(websocket.StatusGoingAway, "restarting")
	var re *client.RefusedError
	e := log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Offline && errors.As(e.Err, &re) })
	secs, err := strconv.Atoi(re.Header.Get("Retry-After"))
	if re.StatusCode != http.StatusServiceUnavailable || err != nil || secs < 1 {
		t.Fatalf("refused with %d, Retry-After %q", re.StatusCode, re.Header.Get("Retry-After"))
	}
	if want := time.Duration(secs) * time.Second; e.Retry < want || e.Retry > want*5/4 {
		t.Fatalf("waits %v after a Retry-After of %v", e.Retry, want)
	}
	s.serve(nil) // the hub is back
	log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Online })
}

// TestFramesApart: Messages carries room messages only; presence frames,
// error frames that answer no request and the application's messages
// reach OnFrame, in the order the server sent them relative to the room
// messages before them.
func TestFramesApart(t *testing.T) {
	s := wshubtest.NewServer(t, wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
		return c.Send(&wshub.Message{Type: "pong", Data: m.Data})
	}), &wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			return wshub.Identity{ID: r.URL.Query().Get("name")}, nil
		},
		AuthorizeJoin: allowAll,
		Rooms:         func(string) wshub.RoomOptions { return wshub.RoomOptions{Presence: true} },
	})
	ctx := testCtx(t)
	type seen struct {
		m        *wshub.Message
		buffered int // room messages waiting in Messages when it came
	}
	frames := make(chan seen, 16)
	var c *client.Conn
	ready := make(chan struct{})
	c, err := client.Dial(ctx, s.URL, &client.Options{OnFrame: func(m *wshub.Message) {
		<-ready
		frames <- seen{m, len(c.Messages())}
	}})
	close(ready)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	nextFrame := func(typ string) seen {
		t.Helper()
		select {
		case f := <-frames:
			if f.m.Type != typ {
				t.Fatalf("frame %+v, want type %s", f.m, typ)
			}
			return f
		case <-ctx.Done():
			t.Fatalf("no %s frame", typ)
		}
		return seen{}
	}

	if _, err := c.Join(ctx, "lobby", nil); err != nil {
		t.Fatal(err)
	}
	nextFrame("presence")
	for i := range 3 {
		if err := c.Publish(ctx, "lobby", i); err != nil {
			t.Fatal(err)
		}
	}
	other, err := client.Dial(ctx, s.URL+"?name=other", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Join(ctx, "lobby", nil); err != nil { // a presence diff, after the three messages
		t.Fatal(err)
	}
	for { // the diff of the client's own join may come first
		f := nextFrame("presence_diff")
		if !strings.Contains(data(f.m), `"other"`) {
			continue
		}
		if f.buffered != 3 {
			t.Fatalf("%d room messages buffered before the diff, want the 3 sent before it", f.buffered)
		}
		break
	}
	if err := c.Send(ctx, &wshub.Message{Type: "ping", Data: "x"}); err != nil {
		t.Fatal(err)
	}
	if f := nextFrame("pong"); data(f.m) != `"x"` {
		t.Fatalf("pong %+v", f.m)
	}
	// A publish sent without waiting for its answer, to a room not
	// joined: its error frame answers no request.
	if err := c.Send(ctx, &wshub.Message{Type: wshub.TypePublish, Room: "elsewhere", Data: 1}); err != nil {
		t.Fatal(err)
	}
	if f := nextFrame(wshub.TypeError); f.m.Room != "elsewhere" {
		t.Fatalf("error frame %+v", f.m)
	}
	for i := range 3 {
		if m := next(t, ctx, c); m.Type != wshub.TypeMessage || data(m) != fmt.Sprint(i) {
			t.Fatalf("message %d: %+v", i, m)
		}
	}
	if n := len(c.Messages()); n != 0 {
		t.Fatalf("%d more in Messages", n)
	}
}

// tokenSource is a client's Options.Token or JoinOptions.Grant: a new
// token at every call, "name:1", "name:2"…, unless its fail says
// otherwise.
type tokenSource struct {
	name  string
	calls atomic.Int64
	mu    sync.Mutex
	fail  func(call int64) error // if set, its error fails that call
}

func (s *tokenSource) Token(context.Context) (string, error) {
	n := s.calls.Add(1)
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		if err := fail(n); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%s:%d", s.name, n), nil
}

func (s *tokenSource) setFail(f func(call int64) error) {
	s.mu.Lock()
	s.fail = f
	s.mu.Unlock()
}

// tokenHub is a hub whose clients sign in with their first frame: a
// token "name:n" names the client "name", for lifetime (0: for good). It
// records the tokens it sees.
type tokenHub struct {
	*wshubtest.Server
	lifetime  time.Duration
	connected chan *wshub.Client // each client signed in

	mu        sync.Mutex
	signIns   []string // in order, refused ones included
	refreshes []string
	refuse    func(refresh bool) error // if set, its error refuses the token
}

// newTokenHub starts a tokenHub with opts (AuthorizeJoin: allowAll if
// opts is nil).
func newTokenHub(t *testing.T, lifetime time.Duration, opts *wshub.Options) *tokenHub {
	t.Helper()
	h := &tokenHub{lifetime: lifetime, connected: make(chan *wshub.Client, 64)}
	o := wshub.Options{AuthorizeJoin: allowAll}
	if opts != nil {
		o = *opts
	}
	o.AuthenticateToken = h.authenticate
	o.OnConnect = func(c *wshub.Client) { h.connected <- c }
	h.Server = wshubtest.NewServer(t, nil, &o)
	return h
}

func (h *tokenHub) authenticate(c *wshub.Client, token string) (wshub.Identity, error) {
	refresh := c.ID() != "" // signed in already
	h.mu.Lock()
	if refresh {
		h.refreshes = append(h.refreshes, token)
	} else {
		h.signIns = append(h.signIns, token)
	}
	refuse := h.refuse
	h.mu.Unlock()
	if refuse != nil {
		if err := refuse(refresh); err != nil {
			return wshub.Identity{}, err
		}
	}
	name, _, _ := strings.Cut(token, ":")
	id := wshub.Identity{ID: name}
	if h.lifetime > 0 {
		id.Expires = time.Now().Add(h.lifetime)
	}
	return id, nil
}

func (h *tokenHub) setRefuse(f func(refresh bool) error) {
	h.mu.Lock()
	h.refuse = f
	h.mu.Unlock()
}

// seen returns the tokens of the sign-ins and of the refreshes so far.
func (h *tokenHub) seen() (signIns, refreshes []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.signIns), slices.Clone(h.refreshes)
}

// countPrefix counts the tokens of tokens that start with prefix.
func countPrefix(tokens []string, prefix string) int {
	n := 0
	for _, tok := range tokens {
		if strings.HasPrefix(tok, prefix) {
			n++
		}
	}
	return n
}

// distinct fails the test if a token was seen twice: the client never
// reuses one.
func distinct(t *testing.T, tokens ...[]string) {
	t.Helper()
	seen := map[string]bool{}
	for _, toks := range tokens {
		for _, tok := range toks {
			if seen[tok] {
				t.Fatalf("token %q used twice: %v", tok, tokens)
			}
			seen[tok] = true
		}
	}
}

// has reports whether an event that ok accepts was logged.
func (l *eventLog) has(ok func(client.Event) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.events, ok)
}

// untilOnline returns the events up to the next Online.
func (l *eventLog) untilOnline(t *testing.T, ctx context.Context) []client.Event {
	t.Helper()
	var out []client.Event
	for {
		e := l.waitFor(t, ctx, func(client.Event) bool { return true })
		out = append(out, e)
		if e.State == client.Online && e.Room == "" && e.Err == nil && !e.Left {
			return out
		}
	}
}

// TestTokenSignIn: with Options.Token, the token is the first frame of
// every connection, and the rooms are rejoined after its answer (a hub
// whose clients sign in so closes one that joins first). On a hub that
// authenticated the upgrade, it is a refresh; on one that takes no
// tokens, its error answer is no failure.
func TestTokenSignIn(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   func(h *tokenHub) *wshub.Options // nil: a tokenHub
		tokens bool                             // the hub reads tokens
	}{
		{name: "first frame", tokens: true},
		{name: "upgrade authenticated", tokens: true, opts: func(h *tokenHub) *wshub.Options {
			return &wshub.Options{
				AuthorizeJoin:     allowAll,
				Authenticate:      func(*http.Request) (wshub.Identity, error) { return wshub.Identity{ID: "alice"}, nil },
				AuthenticateToken: h.authenticate,
				OnConnect:         func(c *wshub.Client) { h.connected <- c },
			}
		}},
		{name: "no tokens", opts: func(h *tokenHub) *wshub.Options {
			return &wshub.Options{AuthorizeJoin: allowAll, OnConnect: func(c *wshub.Client) { h.connected <- c }}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &tokenHub{connected: make(chan *wshub.Client, 4)}
			if tc.opts == nil {
				h = newTokenHub(t, 0, nil)
			} else {
				h.Server = wshubtest.NewServer(t, nil, tc.opts(h))
			}
			ctx := testCtx(t)
			log := newEventLog()
			ts := &tokenSource{name: "alice"}
			c, err := client.Dial(ctx, h.URL, &client.Options{Token: ts.Token, OnEvent: log.add, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Join(ctx, "r", nil); err != nil {
				t.Fatal(err)
			}
			(<-h.connected).Close(websocket.StatusGoingAway, "restarting")
			log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Offline })
			for _, e := range log.untilOnline(t, ctx) {
				if e.Err != nil && e.State != client.Offline {
					t.Fatalf("event %+v", e)
				}
			}
			if !log.rejoined("r") {
				t.Fatal("r not rejoined")
			}
			if err := c.Publish(ctx, "r", "hi"); err != nil {
				t.Fatal(err)
			}
			m := next(t, ctx, c)
			if data(m) != `"hi"` {
				t.Fatalf("got %+v", m)
			}
			if tc.tokens && m.From != "alice" {
				t.Fatalf("from %q, want alice", m.From)
			}
			if calls := ts.calls.Load(); calls != 2 {
				t.Fatalf("Token called %d times for 2 connections", calls)
			}
			signIns, refreshes := h.seen()
			if got := append(signIns, refreshes...); tc.tokens && !slices.Equal(got, []string{"alice:1", "alice:2"}) {
				t.Fatalf("the hub saw %v", got)
			}
		})
	}
}

// TestTokenRefreshNoGap: a sign-in that expires is refreshed over the
// connection, again and again, while another client publishes to the
// reader's room without a pause: the reader gets every message once, in
// order, and its connection never ends.
func TestTokenRefreshNoGap(t *testing.T) {
	t.Parallel()
	h := newTokenHub(t, 1500*time.Millisecond, &wshub.Options{
		AuthorizeJoin: allowAll,
		Rooms:         func(string) wshub.RoomOptions { return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}} },
	})
	ctx := testCtx(t)
	log := newEventLog()
	reader := &tokenSource{name: "reader"}
	r, err := client.Dial(ctx, h.URL, &client.Options{Token: reader.Token, OnEvent: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Join(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	pub := &tokenSource{name: "publisher"}
	p, err := client.Dial(ctx, h.URL, &client.Options{Token: pub.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go func() {
		for range p.Messages() { // its own messages; until Close
		}
	}()
	if _, err := p.Join(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}

	const refreshes = 3
	readerRefreshes := func() int {
		_, refr := h.seen()
		return countPrefix(refr, "reader:")
	}
	total := make(chan int, 1)
	go func() {
		n := 0
		defer func() { total <- n }()
		tick := time.NewTicker(2 * time.Millisecond) // a steady stream, not a flood
		defer tick.Stop()
		for n < 100_000 && readerRefreshes() < refreshes {
			if err := p.Publish(ctx, "r", n+1); err != nil {
				t.Errorf("publish %d: %v", n+1, err)
				return
			}
			n++
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	n := -1 // the number published, once known
	for want := 1; n < 0 || want <= n; {
		select {
		case n = <-total:
		case m, ok := <-r.Messages():
			if !ok {
				t.Fatalf("messages closed: %v", r.Err())
			}
			if data(m) != fmt.Sprint(want) || m.Seq != uint64(want) {
				t.Fatalf("got %s (seq %d), want %d", data(m), m.Seq, want)
			}
			want++
		case <-ctx.Done():
			t.Fatal("timed out")
		}
	}
	if got := readerRefreshes(); got < refreshes {
		t.Fatalf("%d refreshes, want %d", got, refreshes)
	}
	t.Logf("%d messages across %d refreshes", n, refreshes)
	signIns, refr := h.seen()
	distinct(t, signIns, refr)
	log.mu.Lock()
	defer log.mu.Unlock()
	for _, e := range log.events {
		if e.State != client.Online || e.Err != nil {
			t.Fatalf("reader's event %+v: its connection should have lasted", e)
		}
	}
}

// TestTokenExpiredReconnects: a hub that stops taking refreshes closes
// the connection with 4001 at the expiry; the client reports the refused
// refresh, and reconnects at once with a new token.
func TestTokenExpiredReconnects(t *testing.T) {
	t.Parallel()
	h := newTokenHub(t, time.Second, nil)
	h.setRefuse(func(refresh bool) error {
		if refresh {
			return errors.New("no more refreshes")
		}
		return nil
	})
	ctx := testCtx(t)
	log := newEventLog()
	ts := &tokenSource{name: "alice"}
	c, err := client.Dial(ctx, h.URL, &client.Options{Token: ts.Token, OnEvent: log.add})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	e := log.waitFor(t, ctx, func(e client.Event) bool { return e.Err != nil })
	var se *client.ServerError
	if !errors.Is(e.Err, client.ErrNotRenewed) || e.Room != "" || !errors.As(e.Err, &se) || !strings.HasPrefix(se.Text, "wshub: refresh refused") {
		t.Fatalf("event %+v, want the refused refresh", e)
	}
	e = log.waitFor(t, ctx, func(e client.Event) bool { return e.State != client.Online })
	if e.State != client.Offline || websocket.CloseStatus(e.Err) != wshub.StatusTokenExpired || e.Retry != 0 {
		t.Fatalf("event %+v, want offline after a 4001, to reconnect at once", e)
	}
	for _, e := range log.untilOnline(t, ctx) {
		if e.Err != nil && !errors.Is(e.Err, client.ErrNotRenewed) || e.State == client.Closed {
			t.Fatalf("event %+v while reconnecting", e)
		}
	}
	if !log.rejoined("r") {
		t.Fatal("r not rejoined")
	}
	signIns, refreshes := h.seen()
	if len(signIns) != 2 {
		t.Fatalf("sign-ins %v, want 2", signIns)
	}
	distinct(t, signIns, refreshes)
	if calls := ts.calls.Load(); calls < int64(len(signIns)+len(refreshes)) {
		t.Fatalf("Token called %d times, the hub saw %v and %v", calls, signIns, refreshes)
	}
}

// TestTokenSignedOut: a close with 4003 (a refused token, a ban) and a
// Token error that wraps ErrSignedOut stop the client for good.
func TestTokenSignedOut(t *testing.T) {
	closedReason := func(err error) string {
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != wshub.StatusSignedOut {
			return ""
		}
		return ce.Reason
	}
	t.Run("refused at Dial", func(t *testing.T) {
		h := newTokenHub(t, 0, nil)
		h.setRefuse(func(bool) error { return errors.New("bad token") })
		ts := &tokenSource{name: "alice"}
		_, err := client.Dial(testCtx(t), h.URL, &client.Options{Token: ts.Token})
		if !errors.Is(err, client.ErrSignedOut) || closedReason(err) != "unauthorized" {
			t.Fatalf("dial: %v, want signed out, unauthorized", err)
		}
	})
	for _, tc := range []struct {
		name   string
		reason string
		out    func(h *tokenHub, ts *tokenSource, c *wshub.Client) // signs the client out
	}{
		{"refused at reconnect", "unauthorized", func(h *tokenHub, _ *tokenSource, c *wshub.Client) {
			h.setRefuse(func(bool) error { return errors.New("revoked") })
			c.Close(websocket.StatusGoingAway, "restarting")
		}},
		{"DisconnectUser", "banned", func(h *tokenHub, _ *tokenSource, c *wshub.Client) {
			if err := h.Hub.DisconnectUser(context.Background(), "alice", wshub.StatusSignedOut, "banned"); err != nil {
				t.Error(err)
			}
		}},
		{"Token signs out", "", func(_ *tokenHub, ts *tokenSource, c *wshub.Client) {
			ts.setFail(func(int64) error { return fmt.Errorf("session ended: %w", client.ErrSignedOut) })
			c.Close(websocket.StatusGoingAway, "restarting")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTokenHub(t, 0, nil)
			ctx := testCtx(t)
			log := newEventLog()
			ts := &tokenSource{name: "alice"}
			c, err := client.Dial(ctx, h.URL, &client.Options{Token: ts.Token, OnEvent: log.add, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			tc.out(h, ts, <-h.connected)
			for range c.Messages() { // closed when the Conn is
			}
			err = c.Err()
			if !errors.Is(err, client.ErrSignedOut) || tc.reason != "" && closedReason(err) != tc.reason {
				t.Fatalf("err %v, want signed out, %q", err, tc.reason)
			}
			if e := log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Closed }); e.Err != err {
				t.Fatalf("closed with %v, Err %v", e.Err, err)
			}
			if c.State() != client.Closed {
				t.Fatalf("state %v", c.State())
			}
			// The Conn has ended: these are all the tries there were.
			signIns, _ := h.seen()
			if calls := ts.calls.Load(); len(signIns) > 2 || calls > 2 {
				t.Fatalf("%d Token calls, sign-ins %v: tried again after signed out", calls, signIns)
			}
		})
	}
}

// TestTokenErrorRetried: a Token error that is not ErrSignedOut is tried
// again with backoff.
func TestTokenErrorRetried(t *testing.T) {
	h := newTokenHub(t, 0, nil)
	ctx := testCtx(t)
	log := newEventLog()
	down := errors.New("identity provider down")
	ts := &tokenSource{name: "alice", fail: func(n int64) error {
		if n == 2 || n == 3 {
			return down
		}
		return nil
	}}
	c, err := client.Dial(ctx, h.URL, &client.Options{Token: ts.Token, OnEvent: log.add, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	(<-h.connected).Close(websocket.StatusGoingAway, "restarting")
	log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Offline })
	var failed int
	for _, e := range log.untilOnline(t, ctx) {
		if e.State == client.Offline && errors.Is(e.Err, down) {
			failed++
		}
	}
	if signIns, _ := h.seen(); failed != 2 || !slices.Equal(signIns, []string{"alice:1", "alice:4"}) {
		t.Fatalf("%d attempts failed, sign-ins %v", failed, signIns)
	}
}

// TestServerLeaveNotRejoined: a room the server takes the client out of
// (here a refresh that no longer allows it) is reported as Left, not as a
// frame, and not rejoined after a reconnection.
func TestServerLeaveNotRejoined(t *testing.T) {
	t.Parallel()
	var vipClosed atomic.Bool
	h := newTokenHub(t, time.Second, &wshub.Options{AuthorizeJoin: func(_ *wshub.Client, room string) error {
		if room == "vip" && vipClosed.Load() {
			return errors.New("vip is closed")
		}
		return nil
	}})
	ctx := testCtx(t)
	log := newEventLog()
	var mu sync.Mutex
	var frames []string
	ts := &tokenSource{name: "alice"}
	c, err := client.Dial(ctx, h.URL, &client.Options{Token: ts.Token, OnEvent: log.add, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond,
		OnFrame: func(m *wshub.Message) {
			mu.Lock()
			frames = append(frames, m.Type)
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, room := range []string{"lobby", "vip"} {
		if _, err := c.Join(ctx, room, nil); err != nil {
			t.Fatal(err)
		}
	}
	first := <-h.connected
	vipClosed.Store(true) // the next refresh takes alice out of vip
	e := log.waitFor(t, ctx, func(e client.Event) bool { return e.Left })
	var se *client.ServerError
	if e.Room != "vip" || e.State != client.Online || !errors.As(e.Err, &se) || !strings.Contains(se.Text, "vip is closed") {
		t.Fatalf("event %+v, want vip left", e)
	}
	first.Close(websocket.StatusGoingAway, "restarting")
	log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Offline })
	var rejoined []string
	for _, e := range log.untilOnline(t, ctx) {
		if e.Room != "" {
			rejoined = append(rejoined, e.Room)
		}
	}
	if !slices.Equal(rejoined, []string{"lobby"}) {
		t.Fatalf("rejoined %v, want lobby only", rejoined)
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(frames, wshub.TypeLeave) {
		t.Fatalf("OnFrame got a leave frame: %v", frames)
	}
}

// TestGrantRenewedAndExpired: a room joined with a grant is renewed with a
// new grant before it expires and stays joined; a reconnection rejoins it
// with a new grant; a renewal refused is reported, and when the grant
// ends the server's leave is reported and the room is not rejoined.
//
// A grant ends at its expiry, with no grace: the client's margin is the
// last 10 % of the ttl. So the grant lasts 4 s, and the test does not run
// in parallel with the others, whose crowd of 1,000 clients could stall a
// small machine for longer than that margin.
func TestGrantRenewedAndExpired(t *testing.T) {
	const lifetime = 4 * time.Second
	type grantSeen struct {
		c     *wshub.Client
		token string
	}
	var mu sync.Mutex
	var grants []grantSeen
	granted := make(chan struct{}, 100)
	var refuse atomic.Bool
	var refused atomic.Int64 // renewals refused
	connected := make(chan *wshub.Client, 8)
	s := wshubtest.NewServer(t, nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		OnConnect:     func(c *wshub.Client) { connected <- c },
		AuthorizeGrant: func(c *wshub.Client, room, token string) (time.Time, error) {
			mu.Lock()
			grants = append(grants, grantSeen{c, token})
			mu.Unlock()
			if refuse.Load() {
				refused.Add(1)
				return time.Time{}, errors.New("subscription ended")
			}
			select {
			case granted <- struct{}{}:
			default:
			}
			return time.Now().Add(lifetime), nil
		},
	})
	seen := func() []grantSeen {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(grants)
	}
	ctx := testCtx(t)
	log := newEventLog()
	c, err := client.Dial(ctx, s.URL, &client.Options{OnEvent: log.add, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := <-connected
	gs := &tokenSource{name: "vip"}
	if _, err := c.Join(ctx, "vip", &client.JoinOptions{Grant: gs.Token}); err != nil {
		t.Fatal(err)
	}
	for range 3 { // the join and two renewals
		select {
		case <-granted:
		case <-ctx.Done():
			log.mu.Lock()
			events := slices.Clone(log.events)
			log.mu.Unlock()
			t.Fatalf("no renewal; grants %+v; events %+v", seen(), events)
		}
	}
	if err := s.Hub.Room("vip").Broadcast(ctx, &wshub.Message{Data: "still in"}); err != nil {
		t.Fatal(err)
	}
	if m := next(t, ctx, c); data(m) != `"still in"` {
		t.Fatalf("got %+v", m)
	}

	first.Close(websocket.StatusGoingAway, "restarting")
	e := log.waitFor(t, ctx, func(e client.Event) bool { return e.Room == "vip" })
	if e.State != client.Rejoining || e.Err != nil {
		t.Fatalf("event %+v, want vip rejoined", e)
	}
	second := <-connected
	before := map[string]bool{}
	var rejoinToken string
	for _, g := range seen() {
		if g.c == second {
			rejoinToken = g.token
			break
		}
		before[g.token] = true
	}
	if rejoinToken == "" || before[rejoinToken] {
		t.Fatalf("rejoined with grant %q, seen before: %v", rejoinToken, before)
	}

	refuse.Store(true)
	e = log.waitFor(t, ctx, func(e client.Event) bool { return e.Left })
	var se *client.ServerError
	if e.Room != "vip" || !errors.As(e.Err, &se) || se.Text != "wshub: grant expired" {
		t.Fatalf("event %+v, want vip's grant expired", e)
	}
	// The refused renewal is reported, before the leave or after it (they
	// come from two goroutines), unless the renewal was due too late, for
	// a stalled machine, and never reached the hub.
	notRenewed := func(e client.Event) bool {
		var se *client.ServerError
		return e.Room == "vip" && errors.Is(e.Err, client.ErrNotRenewed) && errors.As(e.Err, &se) && strings.Contains(se.Text, "subscription ended")
	}
	if refused.Load() > 0 && !log.has(notRenewed) {
		log.waitFor(t, ctx, notRenewed)
	}
	second.Close(websocket.StatusGoingAway, "restarting")
	log.waitFor(t, ctx, func(e client.Event) bool { return e.State == client.Offline })
	for _, e := range log.untilOnline(t, ctx) {
		if e.Room != "" {
			t.Fatalf("event %+v: vip rejoined after its grant ended", e)
		}
	}
	third := <-connected
	for _, g := range seen() {
		if g.c == third {
			t.Fatalf("grant %q asked on the connection after the grant ended", g.token)
		}
	}
}

// TestTokenRefreshSpread: 1,000 clients that connect at once, whose
// sign-ins last 20 s, each refresh once, at a random point between 50 %
// and 90 % of the ttl: over 8 s, an eighth of them per second on average.
// No one-second bucket may hold more than a quarter of the refreshes (the
// bound docs/CLIENTS.md gives), twice the average: a client that
// refreshed at a fixed share of the ttl would put nearly all of them into
// one or two seconds. It does not run in parallel with the other tests,
// whose timers its crowd would delay, and theirs its own.
func TestTokenRefreshSpread(t *testing.T) {
	const (
		clients  = 1000
		lifetime = 20 * time.Second
		maxShare = 0.25
	)
	var mu sync.Mutex
	signedIn := map[string]time.Time{}
	refreshed := map[string][]time.Time{}
	all := make(chan struct{}) // every client refreshed once
	s := wshubtest.NewServer(t, nil, &wshub.Options{
		AuthenticateToken: func(c *wshub.Client, token string) (wshub.Identity, error) {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			if c.ID() == "" {
				signedIn[token] = now
			} else {
				refreshed[c.ID()] = append(refreshed[c.ID()], now)
				if len(refreshed) == clients && len(refreshed[c.ID()]) == 1 {
					close(all)
				}
			}
			return wshub.Identity{ID: token, Expires: now.Add(lifetime)}, nil
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*lifetime)
	defer cancel()
	var trouble atomic.Int64 // events other than Online: there should be none
	conns := make([]*client.Conn, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			token := fmt.Sprintf("c%d", i)
			opts := &client.Options{
				Token: func(context.Context) (string, error) { return token, nil },
				OnEvent: func(e client.Event) {
					if e.State != client.Online || e.Err != nil {
						trouble.Add(1)
					}
				},
			}
			for attempt := 0; ; attempt++ {
				c, err := client.Dial(ctx, s.URL, opts)
				if err == nil {
					conns[i] = c
					return
				}
				// The hub may turn away part of a crowd (503, Retry-After), or
				// not read a sign-in in time (4001): come back, as an
				// application would.
				var re *client.RefusedError
				busy := errors.As(err, &re) && re.StatusCode == http.StatusServiceUnavailable ||
					websocket.CloseStatus(err) == wshub.StatusTokenExpired
				if !busy || attempt == 5 {
					t.Errorf("client %d: %v", i, err)
					return
				}
				select {
				case <-time.After(2 * time.Second):
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, c := range conns {
			if c != nil {
				wg.Go(func() { c.Close() })
			}
		}
		wg.Wait()
	})
	if t.Failed() {
		t.FailNow()
	}
	select {
	case <-all:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("%d of %d clients refreshed", len(refreshed), clients)
	}

	mu.Lock()
	defer mu.Unlock()
	var first time.Time
	for _, at := range signedIn {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	// The hub's refreshes per second, and each client's refresh per second
	// after its own sign-in: the second does not count on the clients
	// having connected within a second or two.
	hub, own := map[int]int{}, map[int]int{}
	for id, times := range refreshed {
		// Once per token: a second refresh comes half a lifetime after
		// the first, past the first token's lifetime. The first comes
		// before the hub would close the client (5 s after the expiry:
		// the frames of a crowd may take a while).
		var within int
		for _, at := range times {
			if at.Before(signedIn[id].Add(lifetime)) {
				within++
			}
		}
		if late := times[0].Sub(signedIn[id]); within > 1 || late > lifetime+5*time.Second {
			t.Fatalf("client %s refreshed %d times in its token's lifetime, first %v after its sign-in", id, within, late)
		}
		hub[int(times[0].Sub(first)/time.Second)]++
		own[int(times[0].Sub(signedIn[id])/time.Second)]++
	}
	for _, b := range []struct {
		name    string
		buckets map[int]int
	}{{"after the first sign-in", hub}, {"after each client's sign-in", own}} {
		secs := slices.Sorted(maps.Keys(b.buckets))
		hist := make([]string, 0, len(secs))
		for _, sec := range secs {
			hist = append(hist, fmt.Sprintf("%ds:%d", sec, b.buckets[sec]))
		}
		t.Logf("refreshes per second %s: %s", b.name, strings.Join(hist, " "))
		for _, sec := range secs {
			if n := b.buckets[sec]; float64(n) > maxShare*clients {
				t.Errorf("%d of %d refreshes in second %d %s, more than %.0f %%", n, clients, sec, b.name, 100*maxShare)
			}
		}
	}
	if n := trouble.Load(); n != 0 {
		t.Fatalf("%d events other than online: a connection broke or a refresh failed", n)
	}
}
