package wshub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/wshubtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// soak returns full when the long soaks run (WSHUB_SOAK=1, as .ci/run
// sets), else short: a run of go test stays quick, and CI runs them whole.
func soak[T any](short, full T) T {
	if os.Getenv("WSHUB_SOAK") != "" {
		return full
	}
	return short
}

// allowAll is the one-line join authorizer of the docs.
func allowAll(*wshub.Client, string) error { return nil }

// serve mounts h on a test server and shuts both down at cleanup.
func serve(t testing.TB, h *wshub.Hub) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		ts.Close()
	})
	return ts
}

func wsURL(ts *httptest.Server) string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
}

func testCtx(t testing.TB) context.Context {
	return testCtxFor(t, time.Minute)
}

// testCtxFor is testCtx for tests that move a lot of data: their bound
// must hold on a busy machine under -race too.
func testCtxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// peer is a test client speaking the JSON protocol over a real connection.
type peer struct {
	t     testing.TB
	ctx   context.Context
	conn  *websocket.Conn
	early []presMsg // presence diffs read before a join's ack
}

func dial(t testing.TB, ts *httptest.Server, protocols ...string) *peer {
	t.Helper()
	return dialURL(t, wsURL(ts), protocols...)
}

// dialURL connects a peer to u, offering protocols, closed at cleanup.
func dialURL(t testing.TB, u string, protocols ...string) *peer {
	t.Helper()
	ctx := testCtx(t)
	conn, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{Subprotocols: protocols})
	if err != nil {
		t.Fatalf("dial %s: %v", u, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &peer{t: t, ctx: ctx, conn: conn}
}

func (p *peer) sendRaw(s string) {
	p.t.Helper()
	if err := p.conn.Write(p.ctx, websocket.MessageText, []byte(s)); err != nil {
		p.t.Fatalf("write %s: %v", s, err)
	}
}

// wireMsg is a message as a client decodes it.
type wireMsg struct {
	Type  string          `json:"type"`
	ID    string          `json:"id"`
	Room  string          `json:"room"`
	From  string          `json:"from"`
	Data  json.RawMessage `json:"data"`
	Error string          `json:"error"`
	Seq   uint64          `json:"seq"`
	TTL   int64           `json:"ttl"`
}

func (p *peer) read() wireMsg {
	p.t.Helper()
	typ, b, err := p.conn.Read(p.ctx)
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	if typ != websocket.MessageText {
		p.t.Fatalf("got %v frame, want text", typ)
	}
	var m wireMsg
	if err := json.Unmarshal(b, &m); err != nil {
		p.t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// request sends a message with an ID and returns the answer to it,
// failing on anything read before it.
func (p *peer) request(format string, args ...any) wireMsg {
	p.t.Helper()
	p.sendRaw(fmt.Sprintf(format, args...))
	return p.read()
}

func (p *peer) mustAck(format string, args ...any) {
	p.t.Helper()
	if m := p.request(format, args...); m.Type != "ack" {
		p.t.Fatalf("%s: got %+v, want ack", fmt.Sprintf(format, args...), m)
	}
}

func (p *peer) join(room string) {
	p.t.Helper()
	p.mustAck(`{"type":"join","room":%q,"id":"j"}`, room)
}

// readClose reads until the connection ends and returns its close status.
func (p *peer) readClose() websocket.StatusCode {
	p.t.Helper()
	for {
		_, _, err := p.conn.Read(p.ctx)
		if err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

func equal[T comparable](t testing.TB, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// eventually polls cond until it holds, failing after a generous deadline.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPublishReachesRoomMembersInOrder(t *testing.T) {
	t.Parallel()
	s := wshubtest.NewServer(t, nil, &wshub.Options{AuthorizeJoin: allowAll})
	alice, bob, carol := s.Dial(t, ""), s.Dial(t, ""), s.Dial(t, "")
	alice.Join("lobby")
	bob.Join("lobby")
	carol.Join("other")
	for i := range 3 {
		alice.Send(&wshub.Message{Type: wshub.TypePublish, Room: "lobby", Data: map[string]int{"n": i}})
	}
	// Every member, the sender included, gets them in order.
	for _, c := range []*wshubtest.Client{alice, bob} {
		for i := range 3 {
			if m := c.ExpectData("lobby", map[string]int{"n": i}); m.From == "" {
				t.Fatal("from is empty for a client publish")
			}
		}
	}
	alice.Publish("lobby", "last") // its message, then its ack
	bob.ExpectData("lobby", "last")
	// ...and carol, in another room, got nothing: her next frame is the
	// answer to her own request.
	carol.Leave("other")
}

func TestSenderReceivesOwnPublishBeforeAck(t *testing.T) {
	t.Parallel()
	s := wshubtest.NewServer(t, nil, &wshub.Options{AuthorizeJoin: allowAll})
	c := s.Dial(t, "")
	c.Join("r")
	c.Publish("r", []int{1, 2}) // fails unless the message comes, then the ack
}

func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: func(_ *wshub.Client, room string) error {
		if room == "secret" {
			return errors.New("members only")
		}
		return nil
	}})
	ts := serve(t, h)
	p := dial(t, ts)
	long := strings.Repeat("x", wshub.MaxRoomNameLen+1)
	tests := []struct {
		name, msg string
		want      error
	}{
		{"publish outside room", `{"type":"publish","room":"lobby","data":1,"id":"1"}`, wshub.ErrNotMember},
		{"leave outside room", `{"type":"leave","room":"lobby","id":"2"}`, wshub.ErrNotMember},
		{"empty room", `{"type":"join","room":"","id":"3"}`, wshub.ErrInvalidRoom},
		{"long room", `{"type":"join","room":"` + long + `","id":"4"}`, wshub.ErrInvalidRoom},
		{"join refused", `{"type":"join","room":"secret","id":"5"}`, wshub.ErrJoinDenied},
		{"no handler", `{"type":"chat","id":"6"}`, wshub.ErrUnknownType},
		{"missing type", `{"room":"lobby","id":"7"}`, wshub.ErrInvalidMessage},
		{"not JSON", `hello`, wshub.ErrInvalidMessage},
	}
	for _, tt := range tests {
		m := p.request("%s", tt.msg)
		equal(t, tt.name+": type", m.Type, "error")
		if !strings.HasPrefix(m.Error, tt.want.Error()) {
			t.Errorf("%s: error %q, want prefix %q", tt.name, m.Error, tt.want)
		}
		if id := m.ID; tt.want != wshub.ErrInvalidMessage && id == "" {
			t.Errorf("%s: error frame has no id", tt.name)
		}
	}
	// The connection survived all of it.
	p.join("lobby")
}

// TestJoinDeniedByDefault: without AuthorizeJoin every join a client asks
// for is refused, and the hub's log says why, once.
func TestJoinDeniedByDefault(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var log strings.Builder
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &log}, nil))
	ts := serve(t, wshub.New(nil, &wshub.Options{Logger: logger}))
	p := dial(t, ts)
	for _, room := range []string{"lobby", "other"} {
		m := p.request(`{"type":"join","room":%q,"id":"1"}`, room)
		equal(t, "type", m.Type, "error")
		equal(t, "error", m.Error, wshub.ErrJoinDenied.Error())
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(log.String(), "Options.AuthorizeJoin is nil"); n != 1 {
		t.Fatalf("the log says %d times why joins are denied, want once:\n%s", n, log.String())
	}
}

// lockedWriter writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestServerSideRoomsAndExcept(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 2)
	h := wshub.New(nil, &wshub.Options{OnConnect: func(c *wshub.Client) {
		if err := c.Join("news"); err != nil {
			t.Error(err)
		}
		connected <- c
	}})
	ts := serve(t, h)
	// Wait for each OnConnect before dialing the next: two concurrent
	// connections may run their hooks in either order.
	a := dial(t, ts)
	ca := <-connected
	b := dial(t, ts)
	cb := <-connected
	room := h.Room("news")
	equal(t, "len", room.Len(), 2)
	n := 0
	for c := range room.Clients() {
		if c != ca && c != cb {
			t.Fatal("unknown member")
		}
		n++
	}
	equal(t, "members", n, 2)
	equal(t, "rooms", strings.Join(ca.Rooms(), ","), "news")

	ctx := testCtx(t)
	if err := room.Broadcast(ctx, &wshub.Message{Data: "to all but a"}, ca); err != nil {
		t.Fatal(err)
	}
	if err := room.Broadcast(ctx, &wshub.Message{Data: "to all"}); err != nil {
		t.Fatal(err)
	}
	if err := ca.Send(&wshub.Message{Data: "just a"}); err != nil {
		t.Fatal(err)
	}
	if err := h.Broadcast(ctx, &wshub.Message{Type: "notice", Data: "hub"}); err != nil {
		t.Fatal(err)
	}
	m := a.read()
	equal(t, "a first", string(m.Data), `"to all"`)
	equal(t, "room", m.Room, "news")
	equal(t, "from", m.From, "")
	equal(t, "a second", string(a.read().Data), `"just a"`)
	hub := a.read()
	equal(t, "hub type", hub.Type, "notice")
	equal(t, "hub room", hub.Room, "")
	equal(t, "b first", string(b.read().Data), `"to all but a"`)
	equal(t, "b second", string(b.read().Data), `"to all"`)
	equal(t, "b third", b.read().Type, "notice")

	if err := h.Room("").Broadcast(ctx, &wshub.Message{}); !errors.Is(err, wshub.ErrInvalidRoom) {
		t.Fatalf("broadcast to empty name: %v", err)
	}
	if err := room.Broadcast(ctx, &wshub.Message{Data: make(chan int)}); err == nil {
		t.Fatal("broadcast of unencodable data succeeded")
	}
	if err := cb.Leave("news"); err != nil {
		t.Fatal(err)
	}
	if err := cb.Leave("news"); !errors.Is(err, wshub.ErrNotMember) {
		t.Fatalf("second leave: %v", err)
	}
	equal(t, "len after leave", room.Len(), 1)
	if err := ca.Leave("news"); err != nil {
		t.Fatal(err)
	}
	equal(t, "rooms after last leave", h.Stats().Rooms, 0)
	if err := room.Broadcast(ctx, &wshub.Message{Data: 1}); err != nil {
		t.Fatalf("broadcast to empty room: %v", err)
	}
}

func TestHandlerAndValues(t *testing.T) {
	t.Parallel()
	handlerStarted, handlerDone := make(chan struct{}), make(chan error, 1)
	h := wshub.New(wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
		switch m.Type {
		case "whoami":
			return c.Send(&wshub.Message{Type: "you", Data: c.Value("name")})
		case "wait":
			close(handlerStarted)
			<-ctx.Done()
			handlerDone <- ctx.Err()
			return nil
		}
		return errors.New("no such command")
	}), &wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			name := r.URL.Query().Get("name")
			switch name {
			case "":
				return wshub.Identity{}, errors.New("name required")
			case "mallory":
				return wshub.Identity{}, wshub.Reject(http.StatusForbidden, "banned")
			}
			return wshub.Identity{ID: "user-" + name, Values: map[string]any{"name": name}}, nil
		},
		AuthorizeJoin: allowAll,
	})
	ts := serve(t, h)
	ctx := testCtx(t)

	for _, tt := range []struct {
		query  string
		status int
		body   string
	}{{"", 401, "name required"}, {"?name=mallory", 403, "banned"}} {
		_, resp, err := websocket.Dial(ctx, wsURL(ts)+tt.query, nil)
		if err == nil {
			t.Fatalf("%q: dial succeeded", tt.query)
		}
		equal(t, tt.query+" status", resp.StatusCode, tt.status)
		if !strings.Contains(readBody(resp), tt.body) {
			t.Fatalf("%q: body lacks %q", tt.query, tt.body)
		}
	}

	conn, _, err := websocket.Dial(ctx, wsURL(ts)+"?name=alice", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	p := &peer{t: t, ctx: ctx, conn: conn}
	m := p.request(`{"type":"whoami","id":"1"}`)
	equal(t, "whoami", m.Type, "you")
	equal(t, "name", string(m.Data), `"alice"`)
	equal(t, "ack", p.read().Type, "ack")
	m = p.request(`{"type":"dance","id":"2"}`)
	equal(t, "error", m.Error, "no such command")
	equal(t, "id", m.ID, "2")

	p.join("lobby")
	m = p.request(`{"type":"publish","room":"lobby","data":1}`)
	equal(t, "from", m.From, "user-alice")

	p.sendRaw(`{"type":"wait"}`)
	<-handlerStarted
	h.Close()
	if err := <-handlerDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("handler ctx: %v", err)
	}
}

func readBody(resp *http.Response) string {
	b := new(strings.Builder)
	if resp.Body != nil {
		buf := make([]byte, 512)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
	}
	return b.String()
}

func TestDisconnectHookReason(t *testing.T) {
	t.Parallel()
	reasons := make(chan error, 1)
	h := wshub.New(nil, &wshub.Options{OnDisconnect: func(c *wshub.Client, reason error) {
		if c.Context().Err() == nil {
			t.Error("client context still live in OnDisconnect")
		}
		reasons <- reason
	}})
	ts := serve(t, h)
	p := dial(t, ts)
	p.conn.Close(websocket.StatusNormalClosure, "bye")
	equal(t, "close status", websocket.CloseStatus(<-reasons), websocket.StatusNormalClosure)
	eventually(t, "client removed", func() bool { return h.Stats().Clients == 0 })
}

func TestAuthorizePublishRewrites(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		AuthorizePublish: func(c *wshub.Client, m *wshub.Message) error {
			var in struct{ Text string }
			if err := json.Unmarshal(m.Data.(json.RawMessage), &in); err != nil || in.Text == "" {
				return errors.New("text required")
			}
			m.Data = map[string]string{"name": c.ID(), "text": in.Text}
			return nil
		},
	})
	ts := serve(t, h)
	p := dial(t, ts)
	p.join("r")
	m := p.request(`{"type":"publish","room":"r","data":{"text":"hi","name":"spoof"}}`)
	if !strings.Contains(string(m.Data), `"name":"`+m.From+`"`) {
		t.Fatalf("data not stamped: %s", m.Data)
	}
	m = p.request(`{"type":"publish","room":"r","data":{}}`)
	equal(t, "type", m.Type, "error")
	if !strings.HasPrefix(m.Error, wshub.ErrPublishDenied.Error()) {
		t.Fatalf("error %q", m.Error)
	}
}
