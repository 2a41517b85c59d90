package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/natsbroker"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startNATS runs an embedded NATS server on 127.0.0.1 and the given port
// (server.RANDOM_PORT for any), shut down at cleanup.
func startNATS(t testing.TB, port int) *server.Server {
	t.Helper()
	return startServer(t, port, "")
}

// startJetStream runs an embedded NATS server with JetStream, keeping its
// streams in storeDir (t.TempDir(), or the directory of a server it
// replaces), shut down at cleanup.
func startJetStream(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	return startServer(t, port, storeDir)
}

// startServer runs a server, with JetStream in storeDir unless it is "".
func startServer(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: storeDir != "",
		StoreDir:  storeDir,
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func natsPort(s *server.Server) int { return s.Addr().(*net.TCPAddr).Port }

// node is one hub of a cluster with its broker.
type node struct {
	hub    *wshub.Hub
	ts     *httptest.Server
	broker *natsbroker.Broker
	log    *natsbroker.Log // with newLogNodes; broker is then log.Broker
	nc     *nats.Conn
}

// newNodes starts n hubs on their own test servers and NATS connections
// to url, each with a Broker, and no room with history. The connections
// retry quickly so restart tests stay short.
func newNodes(t testing.TB, url string, n int, opts *natsbroker.Options) []*node {
	t.Helper()
	return startNodes(t, url, n, opts, nil, false)
}

// newHistoryNodes starts n hubs as newNodes does, each with a Broker, and
// with history as the history policies of their Options.Rooms.
func newHistoryNodes(t testing.TB, url string, n int, opts *natsbroker.Options, history func(string) wshub.HistoryPolicy) []*node {
	t.Helper()
	return startNodes(t, url, n, opts, history, false)
}

// newLogNodes starts n hubs as newNodes does, each with a Log, and with
// history as the history policies of their Options.Rooms.
func newLogNodes(t testing.TB, url string, n int, opts *natsbroker.Options, history func(string) wshub.HistoryPolicy) []*node {
	t.Helper()
	if history == nil {
		history = func(string) wshub.HistoryPolicy { return wshub.HistoryPolicy{} }
	}
	return startNodes(t, url, n, opts, history, true)
}

// startNodes starts the hubs of newNodes, newHistoryNodes (a Broker, with
// history) or newLogNodes (useLog: a Log).
// tune, if any, changes the hubs' Options.
func startNodes(t testing.TB, url string, n int, opts *natsbroker.Options, history func(string) wshub.HistoryPolicy, useLog bool, tune ...func(*wshub.Options)) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nc, err := nats.Connect(url,
			nats.Name(fmt.Sprintf("node%d", i)),
			nats.ReconnectBufSize(-1),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(10*time.Millisecond),
			nats.ReconnectJitter(0, 0),
			// The restart test breaks connections on purpose.
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		nd := &node{nc: nc}
		var br wshub.Engine
		if useLog {
			if nd.log, err = natsbroker.NewLog(nc, opts); err != nil {
				t.Fatalf("NewLog: %v", err)
			}
			nd.broker, br = nd.log.Broker, nd.log
		} else {
			if nd.broker, err = natsbroker.New(nc, opts); err != nil {
				t.Fatalf("New: %v", err)
			}
			br = nd.broker
		}
		hopts := &wshub.Options{
			Engine:        br,
			Rooms:         roomsOf(history),
			AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		}
		for _, f := range tune {
			f(hopts)
		}
		h := wshub.New(nil, hopts)
		mux := http.NewServeMux()
		mux.Handle("/ws", h)
		ts := httptest.NewServer(mux)
		t.Cleanup(func() {
			h.Close()
			ts.Close()
			nc.Close()
		})
		nd.hub, nd.ts = h, ts
		nodes[i] = nd
	}
	return nodes
}

// roomsOf returns the Options.Rooms that gives rooms the policies of
// history, or nil for nil.
func roomsOf(history func(string) wshub.HistoryPolicy) func(string) wshub.RoomOptions {
	if history == nil {
		return nil
	}
	return func(room string) wshub.RoomOptions { return wshub.RoomOptions{History: history(room)} }
}

func testCtx(t testing.TB) context.Context {
	// Generous: the machine may be loaded, and nothing asserts durations.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// peer is a WebSocket client speaking the JSON protocol.
type peer struct {
	t    testing.TB
	ctx  context.Context
	conn *websocket.Conn
}

func dial(t testing.TB, n *node) *peer {
	t.Helper()
	ctx := testCtx(t)
	url := "ws" + strings.TrimPrefix(n.ts.URL, "http") + "/ws"
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return &peer{t: t, ctx: ctx, conn: conn}
}

// wireMsg is a message as a client decodes it.
type wireMsg struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Room      string          `json:"room"`
	From      string          `json:"from"`
	Data      json.RawMessage `json:"data"`
	Error     string          `json:"error"`
	Seq       uint64          `json:"seq"`
	Epoch     string          `json:"epoch"`
	Recovered *bool           `json:"recovered"`
}

func (p *peer) send(format string, args ...any) {
	p.t.Helper()
	if err := p.conn.Write(p.ctx, websocket.MessageText, fmt.Appendf(nil, format, args...)); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

func (p *peer) read() wireMsg {
	p.t.Helper()
	_, b, err := p.conn.Read(p.ctx)
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	var m wireMsg
	if err := json.Unmarshal(b, &m); err != nil {
		p.t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// join joins room and waits for the ack: the hub then follows the room and
// NATS has the subscription.
func (p *peer) join(room string) {
	p.t.Helper()
	p.send(`{"type":"join","room":%s,"id":"join"}`, jsonString(room))
	if m := p.read(); m.Type != "ack" || m.ID != "join" {
		p.t.Fatalf("join %q: got %+v, want ack", room, m)
	}
}

// jsonString quotes s for JSON (%q is Go syntax, not always JSON).
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// payload is the data of the test messages.
type payload struct {
	Pub string `json:"pub"`
	Seq int    `json:"seq"`
}

func data(t testing.TB, m wireMsg) payload {
	t.Helper()
	var p payload
	if err := json.Unmarshal(m.Data, &p); err != nil {
		t.Fatalf("decode data of %+v: %v", m, err)
	}
	return p
}

// readUntil reads room messages until one from publisher sentinel and
// returns the ones before it; it fails on any other kind of frame.
func (p *peer) readUntil(sentinel string) []payload {
	p.t.Helper()
	var got []payload
	for range 10000 {
		m := p.read()
		if m.Type != "message" {
			p.t.Fatalf("got %+v, want a room message", m)
		}
		d := data(p.t, m)
		if d.Pub == sentinel {
			return got
		}
		got = append(got, d)
	}
	p.t.Fatal("no sentinel after 10000 messages")
	return nil
}

// eventually polls cond until it holds, failing after a generous deadline.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func equal[T comparable](t testing.TB, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// Texts of wshub's errors as clients read them in error frames; wshub no
// longer exports the reasons, only their groups (errors.Is).
const (
	errBrokerText    = "wshub: broker"                   // a publish the engine refused: wshub.ErrEngine
	errNotMemberText = "wshub: not a member of the room" // wshub.ErrDenied
)

// publish publishes msg to room, a room without history, through b, and
// waits for the confirmation.
func publish(ctx context.Context, b *natsbroker.Broker, room string, msg []byte) error {
	return b.Publish(ctx, room, wshub.HistoryPolicy{}, "", msg)()
}

// broadcast sends payload{pub, seq} to room from the server side of n.
func broadcast(ctx context.Context, n *node, room, pub string, seq int) error {
	return n.hub.Room(room).Broadcast(ctx, &wshub.Message{Data: payload{Pub: pub, Seq: seq}})
}

// broadcastSeqs broadcasts count messages of publisher pub, seqs 0 on,
// one after another, stopping at the first error.
func broadcastSeqs(ctx context.Context, n *node, room, pub string, count int) error {
	for seq := range count {
		if err := broadcast(ctx, n, room, pub, seq); err != nil {
			return err
		}
	}
	return nil
}

// next reads one message, returning errors instead of failing, for
// goroutines other than the test's.
func (p *peer) next() (wireMsg, error) {
	_, b, err := p.conn.Read(p.ctx)
	if err != nil {
		return wireMsg{}, err
	}
	var m wireMsg
	err = json.Unmarshal(b, &m)
	return m, err
}

// collect reads room messages until one from publisher sentinel and
// returns the ones before it. An ack is sent to acks by ID (an error
// if acks is nil); any other frame is an error.
func (p *peer) collect(sentinel string, acks chan<- string) ([]payload, error) {
	got, err := p.collectLog(sentinel, acks)
	out := make([]payload, len(got))
	for i, l := range got {
		out[i] = l.payload
	}
	return out, err
}

// checkSequences fails unless got holds, for each publisher in want, the
// sequence numbers 0…want[pub]-1 in order and nothing else.
func checkSequences(t testing.TB, who string, got []payload, want map[string]int) {
	t.Helper()
	next := make(map[string]int)
	for _, d := range got {
		n, ok := want[d.Pub]
		if !ok {
			t.Fatalf("%s: unexpected message %+v", who, d)
		}
		if d.Seq != next[d.Pub] || d.Seq >= n {
			t.Fatalf("%s: from %s got seq %d, want %d (duplicate, gap or reorder)", who, d.Pub, d.Seq, next[d.Pub])
		}
		next[d.Pub]++
	}
	for pub, n := range want {
		if next[pub] != n {
			t.Fatalf("%s: got %d messages from %s, want %d", who, next[pub], pub, n)
		}
	}
}
