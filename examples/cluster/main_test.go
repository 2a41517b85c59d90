package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
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

// timeout bounds each test; generous, since failing is the only way to
// reach it, and the machine may be busy.
const timeout = time.Minute

// cluster is run in the background: an embedded NATS and two nodes.
type cluster struct {
	urls []string // the nodes' pages
	stop context.CancelFunc
	done chan error // run's result
}

// startCluster runs two nodes on loopback ports, with an embedded NATS,
// and waits until they are ready.
func startCluster(ctx context.Context, t *testing.T, useLog bool) *cluster {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	c := &cluster{stop: stop, done: make(chan error, 1)}
	urlc := make(chan []string, 1)
	go func() {
		cfg := config{Addrs: []string{"127.0.0.1:0", "127.0.0.1:0"}, Log: useLog, NATSPort: server.RANDOM_PORT}
		c.done <- run(runCtx, cfg, slog.New(slog.DiscardHandler), func(urls []string) { urlc <- urls })
	}()
	select {
	case c.urls = <-urlc:
	case err := <-c.done:
		stop()
		t.Fatalf("run: %v", err)
	case <-ctx.Done():
		stop()
		t.Fatal("nodes not ready")
	}
	return c
}

// shutdown stops the nodes, as Ctrl-C does, and checks that they stopped
// cleanly. Clients that answer the close handshake, as browsers do, let
// the hubs shut down at once: conns read until closed meanwhile.
func (c *cluster) shutdown(ctx context.Context, t *testing.T, conns ...*websocket.Conn) {
	t.Helper()
	var readers sync.WaitGroup
	for _, conn := range conns {
		readers.Go(func() {
			for {
				if _, _, err := conn.Read(ctx); err != nil {
					return
				}
			}
		})
	}
	c.stop()
	select {
	case err := <-c.done:
		if err != nil {
			t.Errorf("run after stop: %v", err)
		}
	case <-ctx.Done():
		t.Error("nodes did not stop")
	}
	readers.Wait()
}

// A message sent by a client of node A reaches a client of node B.
func TestMessageCrossesNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := startCluster(ctx, t, false)
	urls := c.urls

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

	if m.Seq != 0 {
		t.Errorf("a message with a seq, in a room without history: %+v", m)
	}
	c.shutdown(ctx, t, a, b)
}

// With -log, rooms go through the JetStream room log: while clients of
// both nodes publish at once, every client, on either node, gets all their
// messages in one order, with increasing seqs.
func TestLogOneOrder(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where JetStream's store goes
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := startCluster(ctx, t, true)
	const each = 50 // messages per publisher
	pubA, readA := dial(ctx, t, c.urls[0]), dial(ctx, t, c.urls[0])
	pubB, readB := dial(ctx, t, c.urls[1]), dial(ctx, t, c.urls[1])
	clients := []*websocket.Conn{pubA, readA, pubB, readB}
	for _, conn := range clients {
		join(ctx, t, conn)
	}

	// Every client reads, the publishers too, as a page does.
	got := make([][]string, len(clients))
	errs := make([]error, len(clients)+2)
	var wg sync.WaitGroup
	for i, conn := range clients {
		wg.Go(func() { got[i], errs[i] = readMessages(ctx, conn, 2*each) })
	}
	for i, p := range []struct {
		conn *websocket.Conn
		node string
	}{{pubA, "A"}, {pubB, "B"}} {
		wg.Go(func() {
			for k := range each {
				msg := fmt.Sprintf(`{"type":"publish","room":"lobby","data":{"node":%q,"text":"%s%d"}}`, p.node, p.node, k)
				if err := p.conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					errs[len(clients)+i] = fmt.Errorf("publisher %s: %w", p.node, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	names := []string{"A's publisher", "A's reader", "B's publisher", "B's reader"}
	for i := range clients {
		if !slices.Equal(got[i], got[0]) {
			t.Errorf("%s and %s got different orders:\n%q\n%q", names[0], names[i], got[0], got[i])
		}
	}
	// Each publisher's messages are in the order it sent them, and the two
	// are interleaved in some order: the log's.
	for _, node := range []string{"A", "B"} {
		var texts []string
		for _, m := range got[0] {
			if _, text, _ := strings.Cut(m, " "); strings.HasPrefix(text, node) {
				texts = append(texts, text)
			}
		}
		for k, text := range texts {
			if want := fmt.Sprintf("%s%d", node, k); text != want {
				t.Fatalf("%s's messages out of order: %q", node, texts)
			}
		}
	}
	c.shutdown(ctx, t, clients...)
	if left, err := os.ReadDir(tmp); err != nil || len(left) > 0 {
		t.Errorf("JetStream's store not removed: %v %v", left, err)
	}
}

// readMessages reads n room messages, each as "<seq> <text>", and checks
// that their seqs increase.
func readMessages(ctx context.Context, c *websocket.Conn, n int) ([]string, error) {
	var out []string
	var last uint64
	for len(out) < n {
		_, b, err := c.Read(ctx)
		if err != nil {
			return out, fmt.Errorf("after %d messages: %w", len(out), err)
		}
		var m chatMsg
		if err := json.Unmarshal(b, &m); err != nil {
			return out, fmt.Errorf("decode %s: %w", b, err)
		}
		if m.Type != "message" {
			return out, fmt.Errorf("got %s, want a message", b)
		}
		if m.Seq <= last {
			return out, fmt.Errorf("seq %d after %d: %s", m.Seq, last, b)
		}
		last = m.Seq
		out = append(out, fmt.Sprintf("%d %s", m.Seq, m.Data.Text))
	}
	return out, nil
}

type chatMsg struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Room string `json:"room"`
	Seq  uint64 `json:"seq"`
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
