package redisengine_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// While Redis is down the hub refuses room publishes, in rooms with and
// without history: the publisher gets an error wrapping ErrNotConnected
// and no member gets the message. Hub.Broadcast, which stays on the hub,
// still flows; once Redis is back, rooms work again, and the hub counts
// its reconnection. (Redis keeps an append-only file, so that the history
// room's history survives and its members stay.)
func TestOutageRefusesPublishes(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t, "--appendonly", "yes")
	n := newNodes(t, s.URL(), 1, nil, et.Policies(map[string]wshub.HistoryPolicy{"h": {Messages: 10}}))[0]
	ctx := et.Ctx(t)
	a, b := et.Dial(t, n), et.Dial(t, n)
	for _, room := range []string{"r", "h"} {
		a.Join(room)
		b.Join(room)
	}

	s.Kill()
	for _, room := range []string{"r", "h"} {
		// The first publish after the kill may find the connection
		// broken, not yet refused: it may fail as unconfirmed.
		var err error
		for range 3 {
			if err = et.Broadcast(ctx, n, room, "server", 0); errors.Is(err, redisengine.ErrNotConnected) {
				break
			}
			if !errors.Is(err, redisengine.ErrUnconfirmed) {
				t.Fatalf("Room.Broadcast to %s during the outage: %v, want ErrNotConnected", room, err)
			}
		}
		if !errors.Is(err, wshub.ErrEngine) || !errors.Is(err, redisengine.ErrNotConnected) {
			t.Fatalf("Room.Broadcast to %s during the outage: %v, want ErrEngine and ErrNotConnected", room, err)
		}
		a.Send(`{"type":"publish","room":%q,"id":"p","data":{"pub":"a","seq":0}}`, room)
		m := a.Read()
		if m.Type != "error" || m.ID != "p" || !strings.Contains(m.Error, et.ErrEngineText) {
			t.Fatalf("client publish to %s during the outage: got %+v, want a %q error", room, m, et.ErrEngineText)
		}
	}
	if err := n.Hub.Broadcast(ctx, &wshub.Message{Data: et.Payload{Pub: "local"}}); err != nil {
		t.Fatalf("Hub.Broadcast during the outage: %v", err)
	}
	et.Equal(t, "a's first message", et.Data(t, a.Read()).Pub, "local")
	et.Equal(t, "b's first message", et.Data(t, b.Read()).Pub, "local")

	s.Start()
	et.Eventually(t, "the hub to count its reconnection", func() bool { return n.Hub.Stats().EngineReconnects > 0 })
	// A room without history misses what is published before its
	// subscription is back: wait for it (and the history room's).
	for ch := range map[string]bool{engine(n).Key("r", "m"): true, engine(n).Key("h", "n"): true} {
		et.Eventually(t, "the hub to subscribe again to "+ch, func() bool { return s.Subscribers(ch) == 1 })
	}
	for _, room := range []string{"r", "h"} {
		if err := et.Broadcast(ctx, n, room, "after", 0); err != nil {
			t.Fatalf("Room.Broadcast to %s after the outage: %v", room, err)
		}
		et.Equal(t, "b's message after the outage", et.Data(t, b.Read()).Pub, "after")
	}
}

// A hub starts while Redis is down (RetryOnFailedConnect): joins work,
// publishes are refused, and the rooms work once Redis is up.
func TestStartWhileUnreachable(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	s.Kill()
	if _, err := redisengine.Connect(s.URL(), nil); !errors.Is(err, redisengine.ErrNotConnected) {
		t.Fatalf("Connect without RetryOnFailedConnect and no server: %v, want ErrNotConnected", err)
	}
	hist := et.Policies(map[string]wshub.HistoryPolicy{"h": {Messages: 10}})
	n := newNodes(t, s.URL(), 1, &redisengine.Options{RetryOnFailedConnect: true}, hist)[0]
	ctx := et.Ctx(t)
	c := et.Dial(t, n)
	c.Join("lobby")
	c.Send(`{"type":"publish","room":"lobby","id":"p","data":{"pub":"c","seq":0}}`)
	if m := c.Read(); m.Type != "error" || m.ID != "p" || !strings.Contains(m.Error, et.ErrEngineText) {
		t.Fatalf("publish before Redis is up: got %+v, want a %q error", m, et.ErrEngineText)
	}
	if err := et.Broadcast(ctx, n, "lobby", "server", 0); !errors.Is(err, redisengine.ErrNotConnected) {
		t.Fatalf("Room.Broadcast before Redis is up: %v, want ErrNotConnected", err)
	}

	s.Start()
	// Once connected, the hub subscribes to the room joined meanwhile (a
	// room without history misses what is published before that).
	et.Eventually(t, "the hub to subscribe", func() bool { return s.Subscribers(engine(n).Key("lobby", "m")) == 1 })
	other := newNodes(t, s.URL(), 1, nil, hist)[0]
	if err := et.Broadcast(ctx, other, "lobby", "other", 0); err != nil {
		t.Fatalf("Room.Broadcast from another hub: %v", err)
	}
	et.Equal(t, "message from another hub", et.Data(t, c.Read()).Pub, "other")
	if err := et.Broadcast(ctx, n, "lobby", "own", 0); err != nil {
		t.Fatalf("Room.Broadcast once connected: %v", err)
	}
	et.Equal(t, "own message", et.Data(t, c.Read()).Pub, "own")
	h := et.Dial(t, n)
	h.Join("h")
	if err := et.Broadcast(ctx, other, "h", "history", 0); err != nil {
		t.Fatalf("Room.Broadcast to a history room: %v", err)
	}
	et.Equal(t, "history room message", et.Data(t, h.Read()).Pub, "history")
}
