package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
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
