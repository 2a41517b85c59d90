// Package enginetest holds what the tests of wshub's engines on message
// buses (natsbroker, redisengine) share: hubs served on loopback, clients
// that speak the JSON protocol, checks of order and exactly-once
// delivery, presence views, a TCP proxy that cuts connections, and the
// scenarios that every engine must pass, run through real hubs and
// WebSocket connections. It is internal to the wshub modules.
package enginetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// Ctx returns a context for a test: generous, since the machine may be
// loaded and nothing asserts durations.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Node is a hub served on a loopback test server.
type Node struct {
	Hub    *wshub.Hub
	TS     *httptest.Server
	Engine wshub.Engine // the hub's, if the test sets it
}

// Serve serves h at /ws on a test server; the test's cleanup closes both.
func Serve(t testing.TB, h *wshub.Hub) *Node {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		ts.Close()
	})
	return &Node{Hub: h, TS: ts}
}

// URL returns the hub's WebSocket URL, with query q ("" for none).
func (n *Node) URL(q string) string {
	return "ws" + strings.TrimPrefix(n.TS.URL, "http") + "/ws" + q
}

// AllowJoins is an AuthorizeJoin that allows every join.
func AllowJoins(*wshub.Client, string) error { return nil }

// RoomsOf returns the Options.Rooms that gives rooms the policies of
// history, or nil for nil.
func RoomsOf(history func(string) wshub.HistoryPolicy) func(string) wshub.RoomOptions {
	if history == nil {
		return nil
	}
	return func(room string) wshub.RoomOptions { return wshub.RoomOptions{History: history(room)} }
}

// Policies gives the rooms named in m their policy, and no history to
// the others.
func Policies(m map[string]wshub.HistoryPolicy) func(string) wshub.HistoryPolicy {
	return func(room string) wshub.HistoryPolicy { return m[room] }
}

// Peer is a WebSocket client speaking the JSON protocol.
type Peer struct {
	T    testing.TB
	Ctx  context.Context
	Conn *websocket.Conn
}

// Dial connects a client to n, closed at cleanup.
func Dial(t testing.TB, n *Node) *Peer { t.Helper(); return DialURL(t, n.URL("")) }

// DialURL connects a client to url, closed at cleanup.
func DialURL(t testing.TB, url string) *Peer {
	t.Helper()
	ctx := Ctx(t)
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	conn.SetReadLimit(1 << 20)
	t.Cleanup(func() { conn.CloseNow() })
	return &Peer{T: t, Ctx: ctx, Conn: conn}
}

// Msg is a message as a client decodes it.
type Msg struct {
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

// Send writes a frame, formatted as fmt.Sprintf does.
func (p *Peer) Send(format string, args ...any) {
	p.T.Helper()
	if err := p.Conn.Write(p.Ctx, websocket.MessageText, fmt.Appendf(nil, format, args...)); err != nil {
		p.T.Fatalf("write: %v", err)
	}
}

// Read reads a frame, failing the test on an error.
func (p *Peer) Read() Msg {
	p.T.Helper()
	m, err := p.Next()
	if err != nil {
		p.T.Fatalf("read: %v", err)
	}
	return m
}

// Next reads a frame, returning errors instead of failing, for
// goroutines other than the test's.
func (p *Peer) Next() (Msg, error) {
	_, b, err := p.Conn.Read(p.Ctx)
	if err != nil {
		return Msg{}, err
	}
	var m Msg
	if err := json.Unmarshal(b, &m); err != nil {
		return Msg{}, fmt.Errorf("decode %s: %w", b, err)
	}
	return m, nil
}

// Join joins room and waits for the ack: the hub then follows the room.
func (p *Peer) Join(room string) {
	p.T.Helper()
	p.Send(`{"type":"join","room":%s,"id":"join"}`, JSONString(room))
	if m := p.Read(); m.Type != "ack" || m.ID != "join" {
		p.T.Fatalf("join %q: got %+v, want ack", room, m)
	}
}

// JoinAck joins room with the extra join fields in extra (JSON members,
// or ""), and returns the replayed messages and the ack.
func (p *Peer) JoinAck(room, extra string) ([]Logged, Msg) {
	p.T.Helper()
	if extra != "" {
		extra = "," + extra
	}
	p.Send(`{"type":"join","room":%s,"id":"join"%s}`, JSONString(room), extra)
	var got []Logged
	for {
		m := p.Read()
		switch {
		case m.Type == "ack" && m.ID == "join":
			return got, m
		case m.Type == "message":
			got = append(got, Logged{Data(p.T, m), m.Seq})
		default:
			p.T.Fatalf("join %q: got %+v", room, m)
		}
	}
}

// JSONString quotes s for JSON (%q is Go syntax, not always JSON).
func JSONString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Payload is the data of the test messages: a publisher and its count.
type Payload struct {
	Pub string `json:"pub"`
	Seq int    `json:"seq"`
}

// Logged is a room message as a member got it, with its seq.
type Logged struct {
	Payload
	Seq uint64
}

// Data decodes the Payload of m.
func Data(t testing.TB, m Msg) Payload {
	t.Helper()
	var p Payload
	if err := json.Unmarshal(m.Data, &p); err != nil {
		t.Fatalf("decode data of %+v: %v", m, err)
	}
	return p
}

// Broadcast sends Payload{pub, seq} to room from the server side of n.
func Broadcast(ctx context.Context, n *Node, room, pub string, seq int) error {
	return n.Hub.Room(room).Broadcast(ctx, &wshub.Message{Data: Payload{Pub: pub, Seq: seq}})
}

// BroadcastSeqs broadcasts count messages of publisher pub, seqs 0 on,
// one after another, stopping at the first error.
func BroadcastSeqs(ctx context.Context, n *Node, room, pub string, count int) error {
	for seq := range count {
		if err := Broadcast(ctx, n, room, pub, seq); err != nil {
			return err
		}
	}
	return nil
}

// Collect reads room messages until one from publisher sentinel and
// returns the ones before it. An ack is sent to acks by ID (an error if
// acks is nil); any other frame is an error.
func (p *Peer) Collect(sentinel string, acks chan<- string) ([]Payload, error) {
	got, err := p.CollectLog(sentinel, acks)
	out := make([]Payload, len(got))
	for i, l := range got {
		out[i] = l.Payload
	}
	return out, err
}

// CollectLog is Collect, with each message's seq.
func (p *Peer) CollectLog(sentinel string, acks chan<- string) ([]Logged, error) {
	var got []Logged
	for range 100000 {
		m, err := p.Next()
		if err != nil {
			return got, err
		}
		switch m.Type {
		case "ack":
			if acks == nil {
				return got, fmt.Errorf("unexpected %+v", m)
			}
			acks <- m.ID
			continue
		case "message":
		default:
			return got, fmt.Errorf("got %+v, want a room message", m)
		}
		var d Payload
		if err := json.Unmarshal(m.Data, &d); err != nil {
			return got, fmt.Errorf("decode %s: %w", m.Data, err)
		}
		if d.Pub == sentinel {
			return got, nil
		}
		got = append(got, Logged{d, m.Seq})
	}
	return got, errors.New("no sentinel after 100000 messages")
}

// ReadUntil reads room messages until one from publisher sentinel and
// returns the ones before it; it fails on any other kind of frame.
func (p *Peer) ReadUntil(sentinel string) []Payload {
	p.T.Helper()
	got, err := p.Collect(sentinel, nil)
	if err != nil {
		p.T.Fatal(err)
	}
	return got
}

// CheckSequences fails unless got holds, for each publisher in want, the
// counts 0…want[pub]-1 in order and nothing else.
func CheckSequences(t testing.TB, who string, got []Payload, want map[string]int) {
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

// CheckOneOrder fails unless every member's messages are the same, in
// the same order, with increasing seqs.
func CheckOneOrder(t testing.TB, room string, lists [][]Logged) {
	t.Helper()
	for i, l := range lists {
		for j := 1; j < len(l); j++ {
			if l[j].Seq <= l[j-1].Seq {
				t.Fatalf("room %s, member %d: seq %d after %d", room, i, l[j].Seq, l[j-1].Seq)
			}
		}
		if !slices.Equal(l, lists[0]) {
			t.Fatalf("room %s: member %d got another order than member 0:\n%v\n%v", room, i, l, lists[0])
		}
	}
}

// Eventually polls cond until it holds, failing after a generous
// deadline.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Equal fails unless got == want.
func Equal[T comparable](t testing.TB, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// Texts of wshub's errors as clients read them in error frames.
const (
	ErrEngineText    = "wshub: broker"                   // a publish the engine refused: wshub.ErrEngine
	ErrNotMemberText = "wshub: not a member of the room" // wshub.ErrDenied
)
