package wshub_test

import (
	"context"
	"encoding/json"
	"errors"
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
		OnConnect: func(c *wshub.Client) {
			clientsMu.Lock()
			clients = append(clients, c)
			clientsMu.Unlock()
		},
		Limits: wshub.Limits{SendQueue: 1 << 16},
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
	// A message is counted once its write returns, which may be after the
	// peer read it.
	eventually(t, "out (acks)", func() bool { return h.Stats().MessagesOut == 3 })
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
		Limits:        wshub.Limits{ReadLimit: 1 << 16},
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

// TestStopFromOnConnect: OnConnect may close its client or the whole hub.
func TestStopFromOnConnect(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		stop func(h *wshub.Hub, c *wshub.Client) error
		code websocket.StatusCode
	}{
		{"Client.Close", func(_ *wshub.Hub, c *wshub.Client) error {
			c.Close(websocket.StatusPolicyViolation, "no")
			return nil
		}, websocket.StatusPolicyViolation},
		{"Hub.Shutdown", func(h *wshub.Hub, _ *wshub.Client) error { return h.Shutdown(context.Background()) }, websocket.StatusGoingAway},
		{"Hub.Close", func(h *wshub.Hub, _ *wshub.Client) error { return h.Close() }, -1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var h *wshub.Hub
			stopped := make(chan error, 1)
			gone := make(chan error, 1)
			h = wshub.New(nil, &wshub.Options{
				OnConnect:    func(c *wshub.Client) { stopped <- tt.stop(h, c) },
				OnDisconnect: func(_ *wshub.Client, err error) { gone <- err },
			})
			p := dial(t, serve(t, h))
			equal(t, "close status", p.readClose(), tt.code)
			if err := <-stopped; err != nil {
				t.Fatal(err)
			}
			if err := <-gone; err == nil {
				t.Fatal("no disconnect reason")
			}
			equal(t, "clients", h.Stats().Clients, 0)
		})
	}
}

// TestChurnWithEngine: clients join, leave, publish and disconnect in
// every way while the server broadcasts; afterwards the hub is empty,
// OnDisconnect ran once per client, the broker's Subscribe and Unsubscribe
// never overlapped or repeated, and a gone client's Send and Join fail.
func TestChurnWithBroker(t *testing.T) {
	t.Parallel()
	b := newStrictBroker()
	var mu sync.Mutex
	disconnects := make(map[*wshub.Client]int)
	var all []*wshub.Client
	h := wshub.New(nil, &wshub.Options{
		Engine:        b,
		AuthorizeJoin: allowAll,
		OnConnect: func(c *wshub.Client) {
			mu.Lock()
			all = append(all, c)
			mu.Unlock()
		},
		OnDisconnect: func(c *wshub.Client, _ error) {
			mu.Lock()
			disconnects[c]++
			mu.Unlock()
		},
		Limits: wshub.Limits{PingInterval: -1},
	})
	ts := serve(t, h)
	ctx := testCtx(t)
	const nClients, rounds = 24, 30
	var g errgroup.Group
	for i := range nClients {
		g.Go(func() error {
			conn, _, err := websocket.Dial(ctx, wsURL(ts), nil)
			if err != nil {
				return err
			}
			go func() {
				for {
					if _, _, err := conn.Read(ctx); err != nil {
						return
					}
				}
			}()
			for j := range rounds {
				room := fmt.Sprintf("r%d", (i+j)%3)
				for _, msg := range []string{
					`{"type":"join","room":"%s"}`,
					`{"type":"publish","room":"%s","data":1}`,
					`{"type":"leave","room":"%s"}`,
					`{"type":"join","room":"%s"}`,
				} {
					if err := conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, msg, room)); err != nil {
						return nil // closed by the server below
					}
				}
			}
			switch i % 3 {
			case 0:
				conn.Close(websocket.StatusNormalClosure, "")
			case 1:
				conn.CloseNow()
			}
			return nil
		})
	}
	g.Go(func() error {
		for i := range 200 {
			h.Room(fmt.Sprintf("r%d", i%3)).Broadcast(ctx, &wshub.Message{Data: i})
			if i%50 == 0 {
				mu.Lock()
				if len(all) > 0 {
					all[i%len(all)].Close(websocket.StatusNormalClosure, "bye")
				}
				mu.Unlock()
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	s := h.Stats()
	equal(t, "clients", s.Clients, 0)
	equal(t, "rooms", s.Rooms, 0)
	// OnDisconnect hooks run outside what Shutdown waits for (so that they
	// may call it), and may finish after it returns.
	eventually(t, "every OnDisconnect", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(disconnects) == len(all)
	})
	mu.Lock()
	defer mu.Unlock()
	equal(t, "clients seen", len(all), nClients)
	for _, c := range all {
		equal(t, "OnDisconnect calls", disconnects[c], 1)
		if err := c.Send(&wshub.Message{Data: 1}); !errors.Is(err, wshub.ErrClientClosed) {
			t.Fatalf("Send after disconnect: %v", err)
		}
		if err := c.Join("r0"); !errors.Is(err, wshub.ErrClientClosed) {
			t.Fatalf("Join after disconnect: %v", err)
		}
	}
	subscribed, violations := b.state()
	equal(t, "broker subscriptions", subscribed, 0)
	if len(violations) > 0 {
		t.Fatalf("broker contract broken: %v", violations)
	}
}
