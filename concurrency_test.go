package wshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"golang.org/x/sync/errgroup"
)

// TestConcurrentUse runs clients that join, publish and leave while the
// server broadcasts, sends, iterates rooms and closes clients, all at once;
// -race and goleak check the rest.
func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	var clientsMu sync.Mutex
	var clients []*wshub.Client
	h := wshub.New(wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
		c.SetValue("seen", m.Type)
		return nil
	}), &wshub.Options{
		AuthorizeJoin: allowAll,
		SendQueue:     1 << 16,
		OnConnect: func(c *wshub.Client) {
			clientsMu.Lock()
			clients = append(clients, c)
			clientsMu.Unlock()
		},
	})
	ts := serve(t, h)
	ctx := testCtx(t)
	const nClients, nOps = 16, 50

	var g errgroup.Group
	for i := range nClients {
		p := dial(t, ts)
		g.Go(func() error {
			// Drain everything the client is sent until the end.
			go func() {
				for {
					if _, _, err := p.conn.Read(ctx); err != nil {
						return
					}
				}
			}()
			for j := range nOps {
				room := fmt.Sprintf("room%d", (i+j)%4)
				for _, msg := range []string{
					`{"type":"join","room":"%s"}`,
					`{"type":"publish","room":"%s","data":1}`,
					`{"type":"app","room":"%s"}`,
					`{"type":"leave","room":"%s"}`,
				} {
					if err := p.conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, msg, room)); err != nil {
						return err
					}
				}
			}
			return nil
		})
	}
	g.Go(func() error {
		for i := range nOps {
			room := h.Room(fmt.Sprintf("room%d", i%4))
			room.Broadcast(ctx, &wshub.Message{Data: i})
			for c := range room.Clients() {
				c.Send(&wshub.Message{Data: c.Value("seen")})
				c.Rooms()
			}
			room.Len()
			h.Broadcast(ctx, &wshub.Message{Data: "all"})
			h.Stats()
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "all messages read", func() bool { return h.Stats().MessagesIn == nClients*nOps*4 })
	// Close some clients from the server while others disconnect themselves.
	clientsMu.Lock()
	for i, c := range clients {
		if i%2 == 0 {
			c.Close(websocket.StatusNormalClosure, "done")
		}
	}
	clientsMu.Unlock()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	s := h.Stats()
	equal(t, "clients after shutdown", s.Clients, 0)
	equal(t, "rooms after shutdown", s.Rooms, 0)
}

func TestStats(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll})
	ts := serve(t, h)
	a, b := dial(t, ts), dial(t, ts)
	a.join("x")
	b.join("x")
	b.join("y")
	s := h.Stats()
	equal(t, "clients", s.Clients, 2)
	equal(t, "rooms", s.Rooms, 2)
	equal(t, "in", s.MessagesIn, 3)
	equal(t, "out (acks)", s.MessagesOut, 3)
	a.request(`{"type":"publish","room":"x","data":1}`)
	b.read()
	eventually(t, "out counted", func() bool { return h.Stats().MessagesOut == 5 })
}

// FuzzDispatch sends arbitrary frames to a hub over a real connection. Each
// must be answered (an ack, an error frame or a room message) or close the
// connection with a documented status, and the hub must keep serving.
func FuzzDispatch(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","room":"lobby","id":"1"}`,
		`{"type":"leave","room":"lobby","id":"2"}`,
		`{"type":"publish","room":"lobby","data":{"x":1},"id":"3"}`,
		`{"type":"publish","room":"","data":1}`,
		`{"type":"app","data":[1,2,3]}`,
		`{"type":"join","room":"` + strings.Repeat("r", 200) + `"}`,
		`{"type":null}`, `{"type":"join","room":5}`, `{"id":{}}`, `nope`, ``, `[{"type":"join"}]`,
	} {
		f.Add(s)
	}
	h := wshub.New(wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
		if m.Type == "fail" {
			return fmt.Errorf("failed")
		}
		return nil
	}), &wshub.Options{
		OnConnect:     func(c *wshub.Client) { c.Join("lobby") },
		AuthorizeJoin: allowAll,
		ReadLimit:     1 << 16,
	})
	ts := serve(f, h)
	f.Fuzz(func(t *testing.T, frame string) {
		p := dial(t, ts)
		defer p.conn.CloseNow()
		p.sendRaw(frame)
		// The probe's answer comes after the answer to frame, if any.
		p.sendRaw(`{"type":"leave","room":"never-joined","id":"probe"}`)
		answers := 0
		for {
			_, b, err := p.conn.Read(p.ctx)
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusInvalidFramePayloadData, websocket.StatusMessageTooBig:
					return
				}
				t.Fatalf("frame %q: connection ended: %v", frame, err)
			}
			s := string(b)
			if strings.Contains(s, `"id":"probe"`) {
				break
			}
			answers++
		}
		// Only a valid message without an ID may go unanswered.
		var m wireMsg
		if answers == 0 && (json.Unmarshal([]byte(frame), &m) != nil || m.Type == "" || m.ID != "") {
			t.Fatalf("frame %q got no answer", frame)
		}
	})
}
