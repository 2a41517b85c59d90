package wshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/wshub/wshub"
)

// The hub holds no lock across user code, a codec or the engine. These
// tests hold such code back, or make it call into the hub, and check that
// the rest of the hub goes on.

// slowRead is an Engine whose Read, when armed, blocks until released.
type slowRead struct {
	wshub.Engine
	armed   chan struct{} // a value armed the next Read
	reading chan struct{} // receives when an armed Read blocks
	release chan struct{} // closed to let it return
}

func newSlowRead(e wshub.Engine) *slowRead {
	return &slowRead{Engine: e, armed: make(chan struct{}, 1), reading: make(chan struct{}, 1), release: make(chan struct{})}
}

func (s *slowRead) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	select {
	case <-s.armed:
		s.reading <- struct{}{}
		select {
		case <-s.release:
		case <-ctx.Done():
			return wshub.LogPage{}, ctx.Err()
		}
	default:
	}
	return s.Engine.Read(ctx, room, p, after, limit)
}

// TestSlowHistoryReadDelaysNobodyElse: while a join's history read is
// blocked, the room's members get live messages, from the server and from
// a client, and so do other joins; once the read returns, the joiner gets
// the history, then the messages published meanwhile, each once, in order.
// Run with the memory engine and with a shared log.
func TestSlowHistoryReadDelaysNobodyElse(t *testing.T) {
	t.Parallel()
	engines := map[string]func() wshub.Engine{
		"memory": func() wshub.Engine { return wshub.NewMemoryEngine(0) },
		"log":    func() wshub.Engine { return newMemLog(newMemLogStore(), newMemBus()) },
	}
	for name, engine := range engines {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			slow := newSlowRead(engine())
			h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(100), Engine: slow})
			ts := serve(t, h)
			a, b := dial(t, ts), dial(t, ts)
			a.joinHist("r", "")
			b.joinHist("r", "")
			broadcastData(t, h, "r", "before")
			before := a.expectData("before")[0].Seq
			b.expectData("before")

			slow.armed <- struct{}{}
			c := dial(t, ts)
			c.sendRaw(`{"type":"join","room":"r","id":"j","history":10}`)
			<-slow.reading
			// The read is blocked: everything below would wait for it if
			// the join held the room's lock.
			broadcastData(t, h, "r", "during")
			a.expectData("during")
			b.expectData("during")
			b.sendRaw(`{"type":"publish","room":"r","data":"from b","id":"p"}`)
			b.expectData("from b")
			equal(t, "publish answer", b.readHist().Type, "ack")
			a.expectData("from b")
			d := dial(t, ts)
			d.joinHist("r", "")
			broadcastData(t, h, "r", "to d")
			d.expectData("to d")
			equal(t, "stats while blocked", h.Stats().Rooms, 1)

			close(slow.release)
			var got []string
			var last uint64
			for {
				m := c.readHist()
				if m.Type == "ack" {
					equal(t, "ack seq: the history's end when the join began", m.Seq, before)
					break
				}
				if m.Seq <= last {
					t.Fatalf("seq %d after %d", m.Seq, last)
				}
				last = m.Seq
				got = append(got, string(m.Data))
			}
			// The ack comes after what the join sends in one step: the
			// history up to the join, and what came during the read.
			want := []string{`"before"`, `"during"`, `"from b"`, `"to d"`}
			equal(t, "joiner's messages", fmt.Sprint(got), fmt.Sprint(want))
			broadcastData(t, h, "r", "after")
			c.expectData("after")
		})
	}
}

// reentrant is message data, or a codec, whose encoding calls into the
// hub.
type reentrant struct{ h *wshub.Hub }

func (r reentrant) call() {
	r.h.Stats()
	r.h.Room("r").Presence()
	r.h.Room("r").Len()
	r.h.Room("r").History(context.Background(), 5)
	r.h.Room("r").Position(context.Background())
}

func (r reentrant) MarshalJSON() ([]byte, error) {
	r.call()
	return []byte(`"reentrant"`), nil
}

// reentrantCodec is JSONCodec under another name, calling into the hub on
// every Marshal: every frame a client of it gets.
type reentrantCodec struct {
	wshub.JSONCodec
	r *reentrant
}

func (reentrantCodec) Name() string { return "reentrant.json" }

func (c reentrantCodec) Marshal(v any) ([]byte, error) {
	c.r.call()
	return c.JSONCodec.Marshal(v)
}

// TestEncodingMayCallTheHub: Message.Data whose MarshalJSON, and a codec
// whose Marshal, call hub.Stats, Room.Presence, Room.History and the like
// do not deadlock the hub: in Room.Broadcast, Hub.Broadcast, Client.Send,
// a client's publish, a join with history, presence states and diffs, and
// with Options.Rooms and hooks that call into the hub too.
func TestEncodingMayCallTheHub(t *testing.T) {
	t.Parallel()
	r := &reentrant{}
	var h *wshub.Hub
	connected := make(chan *wshub.Client, 2)
	h = wshub.New(nil, &wshub.Options{
		Codecs: []wshub.Codec{wshub.JSONCodec{}, reentrantCodec{r: r}},
		Rooms: func(room string) wshub.RoomOptions {
			h.Stats()
			h.Room(room).Presence()
			h.Room(room).Len()
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 10}, Presence: true}
		},
		AuthorizeJoin: func(c *wshub.Client, room string) error {
			r.call()
			return nil
		},
		OnPresence: func(string, []wshub.Presence, []wshub.Presence) { r.call() },
		OnConnect:  func(c *wshub.Client) { connected <- c },
		Authenticate: func(req *http.Request) (wshub.Identity, error) {
			return wshub.Identity{ID: req.URL.Query().Get("id")}, nil
		},
	})
	r.h = h
	ts := serve(t, h)
	ctx := testCtx(t)
	// A deadlock shows as a read that times out, or, inside a call, as
	// go test's timeout with every goroutine's stack.
	a := dial(t, ts, "reentrant.json")
	ca := <-connected
	a.sendRaw(`{"type":"join","room":"r","id":"j"}`)
	a.untilAnswer()
	if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: reentrant{h}}); err != nil {
		t.Error(err)
	}
	if err := h.Broadcast(ctx, &wshub.Message{Data: reentrant{h}}); err != nil {
		t.Error(err)
	}
	if err := ca.Send(&wshub.Message{Data: reentrant{h}}); err != nil {
		t.Error(err)
	}
	b := dial(t, ts)
	<-connected
	b.sendRaw(`{"type":"join","room":"r","id":"j","history":10}`)
	equal(t, "history of b's join", b.untilAnswer(), 1)
	b.sendRaw(`{"type":"publish","room":"r","data":"from b","id":"p"}`)
	b.untilAnswer()
	b.sendRaw(`{"type":"presence","room":"r","id":"s"}`)
	b.untilAnswer()
	a.sendRaw(`{"type":"presence","room":"r","id":"s"}`)
	a.untilAnswer()
}

// TestSlowEncodingDelaysNobodyElse: while a codec's Marshal for one
// client is blocked, the room's other members still get its messages.
func TestSlowEncodingDelaysNobodyElse(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	blocked := make(chan struct{}, 1)
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		Codecs:        []wshub.Codec{wshub.JSONCodec{}, blockingCodec{block: block, blocked: blocked}},
	})
	ts := serve(t, h)
	slow, fast := dial(t, ts, "blocking.json"), dial(t, ts)
	slow.join("r")
	fast.join("r")
	go h.Room("r").Broadcast(context.Background(), &wshub.Message{Data: json.RawMessage(`"block"`)})
	<-blocked
	// That broadcast is stuck in its encoding, outside every lock.
	fast.mustAck(`{"type":"leave","room":"r","id":"l"}`)
	fast.join("q")
	if err := h.Room("q").Broadcast(testCtx(t), &wshub.Message{Data: "other room"}); err != nil {
		t.Fatal(err)
	}
	equal(t, "other room", string(fast.read().Data), `"other room"`)
	close(block)
	equal(t, "slow client's message", string(slow.read().Data), `"block"`)
}

// blockingCodec is JSONCodec whose Marshal of data "block" waits.
type blockingCodec struct {
	wshub.JSONCodec
	block   chan struct{}
	blocked chan struct{}
}

func (blockingCodec) Name() string { return "blocking.json" }

func (c blockingCodec) Marshal(v any) ([]byte, error) {
	if m, ok := v.(*wshub.Message); ok {
		if d, ok := m.Data.(json.RawMessage); ok && string(d) == `"block"` {
			select {
			case c.blocked <- struct{}{}:
			default:
			}
			select {
			case <-c.block:
			case <-time.After(time.Minute):
			}
		}
	}
	return c.JSONCodec.Marshal(v)
}

// untilAnswer reads frames up to the answer to a request, which must be an
// ack, and returns how many room messages came before it.
func (p *peer) untilAnswer() int {
	p.t.Helper()
	n := 0
	for {
		m := p.readHist()
		switch m.Type {
		case "ack":
			return n
		case "error":
			p.t.Fatalf("got %+v, want ack", m)
		case "message":
			n++
		}
	}
}
