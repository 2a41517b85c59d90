package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	if _, err := c.Join(ctx, "lobby", 0); err != nil {
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
		History:       func(string) wshub.HistoryPolicy { return wshub.HistoryPolicy{Messages: 100} },
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
	if _, err := c.Join(ctx, "r", 0); err != nil {
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
	s := wshubtest.NewServer(t, nil, &wshub.Options{MaxClients: -1})
	s.Hub.Shutdown(testCtx(t))
	if _, err := client.Dial(testCtx(t), s.URL, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("dial a closed hub: %v", err)
	}
}
