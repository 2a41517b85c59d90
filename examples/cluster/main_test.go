package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// A message sent by a client of node A reaches a client of node B.
func TestMessageCrossesNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	urlc := make(chan []string, 1)
	done := make(chan error, 1)
	go func() {
		cfg := config{Addrs: []string{"127.0.0.1:0", "127.0.0.1:0"}, NATSPort: server.RANDOM_PORT}
		done <- run(runCtx, cfg, slog.New(slog.DiscardHandler), func(urls []string) { urlc <- urls })
	}()
	var urls []string
	select {
	case urls = <-urlc:
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-ctx.Done():
		t.Fatal("nodes not ready")
	}

	resp, err := http.Get(urls[1])
	if err != nil {
		t.Fatalf("page: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Node B") {
		t.Fatalf("node B's page does not say so:\n%s", body)
	}

	a, b := dial(ctx, t, urls[0]), dial(ctx, t, urls[1])
	join(ctx, t, a)
	join(ctx, t, b)
	write(ctx, t, a, `{"type":"publish","room":"lobby","data":{"node":"A","name":"ann","text":"hello from A"}}`)
	m := read(ctx, t, b)
	if m.Type != "message" || m.Room != "lobby" || m.Data.Text != "hello from A" || m.Data.Node != "A" {
		t.Fatalf("node B's client got %+v, want A's message", m)
	}

	// Clients that answer the close handshake, as browsers do, let the
	// hubs shut down at once.
	var readers sync.WaitGroup
	for _, c := range []*websocket.Conn{a, b} {
		readers.Go(func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					return
				}
			}
		})
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("run after stop: %v", err)
	}
	readers.Wait()
}

type chatMsg struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Room string `json:"room"`
	Data struct {
		Node, Text string
	} `json:"data"`
}

func dial(ctx context.Context, t *testing.T, pageURL string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(pageURL, "http")+"ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func write(ctx context.Context, t *testing.T, c *websocket.Conn, s string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func read(ctx context.Context, t *testing.T, c *websocket.Conn) chatMsg {
	t.Helper()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m chatMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// join joins "lobby" as the page does and waits for the ack.
func join(ctx context.Context, t *testing.T, c *websocket.Conn) {
	t.Helper()
	write(ctx, t, c, `{"type":"join","room":"lobby","id":"join"}`)
	if m := read(ctx, t, c); m.Type != "ack" || m.ID != "join" {
		t.Fatalf("join: got %+v", m)
	}
}
