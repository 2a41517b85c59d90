package redisengine_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/redisengine"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// redisServer is a redis-server process of a test, on 127.0.0.1.
type redisServer struct {
	t    testing.TB
	port int
	dir  string
	aof  bool
	cmd  *exec.Cmd
}

// startRedis starts redis-server on a free loopback port with its files
// in a temporary directory, with the append-only file on or off and no
// snapshots; the test's cleanup kills it. Without redis-server the test
// skips, unless WSHUB_REQUIRE_REDIS=1 (as .ci/run sets), when it fails.
func startRedis(t testing.TB, aof bool) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("WSHUB_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not found, and WSHUB_REQUIRE_REDIS=1")
		}
		t.Skip("redis-server not found: install Debian's redis-server package to run the Redis tests")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &redisServer{t: t, port: port, dir: t.TempDir(), aof: aof}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }
func (s *redisServer) url() string  { return "redis://" + s.addr() }

// start runs the server on its port and waits until it answers.
func (s *redisServer) start() {
	s.t.Helper()
	aof := "no"
	if s.aof {
		aof = "yes"
	}
	s.cmd = exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port), "--dir", s.dir,
		"--save", "", "--appendonly", aof, "--protected-mode", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("redis-server: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s.ping() {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on port %d not ready after 20s:\n%s", s.port, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping reports whether the server answers PING (and has loaded its data).
func (s *redisServer) ping() bool {
	c, err := net.DialTimeout("tcp", s.addr(), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// kill ends the server at once, as a crash does (SIGKILL).
func (s *redisServer) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// do runs one command on the server, for what a test does behind the
// hubs' backs (FLUSHALL, DEBUG SLEEP), and returns its first reply line.
func (s *redisServer) do(args ...string) string {
	s.t.Helper()
	c, err := net.DialTimeout("tcp", s.addr(), 5*time.Second)
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write([]byte(b.String())); err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	return strings.TrimSpace(line)
}

// node is one hub with its engine.
type node struct {
	hub *wshub.Hub
	ts  *httptest.Server
	eng *redisengine.Engine
}

// newNodes starts n hubs on their own test servers, each with an engine
// on url, with the history policies of history (nil: none), every join
// allowed; tune, if any, changes the hubs' Options.
func newNodes(t testing.TB, url string, n int, opts *redisengine.Options, history func(string) wshub.HistoryPolicy, tune ...func(*wshub.Options)) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		e, err := redisengine.Connect(url, opts)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		hopts := &wshub.Options{
			Engine:        e,
			AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		}
		if history != nil {
			hopts.Rooms = func(room string) wshub.RoomOptions { return wshub.RoomOptions{History: history(room)} }
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
		})
		nodes[i] = &node{hub: h, ts: ts, eng: e}
	}
	return nodes
}

// policies gives the rooms named in it their policy, and no history to
// the others.
func policies(m map[string]wshub.HistoryPolicy) func(string) wshub.HistoryPolicy {
	return func(room string) wshub.HistoryPolicy { return m[room] }
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
