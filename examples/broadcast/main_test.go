package main

import (
	"context"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestBroadcastFromPOST(t *testing.T) {
	t.Parallel()
	hub := wshub.New(nil, &wshub.Options{AuthorizeJoin: func(*wshub.Client, string) error { return nil }})
	ts := httptest.NewServer(newMux(hub))
	t.Cleanup(func() {
		hub.Close()
		ts.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"join","room":"news","id":"j"}`)); err != nil {
		t.Fatal(err)
	}
	expect(t, ctx, conn, `{"type":"ack","id":"j"}`)

	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/healthz", http.StatusOK},
		{"POST", "/broadcast/news", http.StatusNoContent},
		{"POST", "/broadcast/" + strings.Repeat("x", 128+1), http.StatusBadRequest}, // past the longest room name
		{"GET", "/broadcast/news", http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequestWithContext(ctx, tc.method, ts.URL+tc.path, strings.NewReader("extra extra"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %.30s: got %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}
	expect(t, ctx, conn, `{"type":"message","room":"news","data":{"text":"extra extra"}}`)
}

// lineWriter passes on each log line it gets.
type lineWriter chan string

func (w lineWriter) Write(p []byte) (int, error) {
	w <- strings.TrimSuffix(string(p), "\n")
	return len(p), nil
}

// TestRun follows what the program prints when it starts, then stops it as
// Ctrl-C does: the client is told goodbye with 1001.
func TestRun(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	logs := make(lineWriter, 10)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, ln, log.New(logs, "", 0)) }()

	host := ln.Addr().String()
	for _, want := range []string{
		"listening on http://" + host + "; try it, in two more terminals:",
		"  go run ./examples/client -url ws://" + host + "/ws -room news",
		"  curl -d hello http://" + host + "/broadcast/news",
	} {
		select {
		case got := <-logs:
			if got != want {
				t.Fatalf("log: got %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("log: nothing, want %q", want)
		}
	}

	conn, _, err := websocket.Dial(ctx, "ws://"+host+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"join","room":"news","id":"j"}`)); err != nil {
		t.Fatal(err)
	}
	expect(t, ctx, conn, `{"type":"ack","id":"j"}`)
	resp, err := http.Post("http://"+host+"/broadcast/news", "application/x-www-form-urlencoded", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	expect(t, ctx, conn, `{"type":"message","room":"news","data":{"text":"hello"}}`)

	stop()
	_, _, err = conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("close: got %v, want status 1001", err)
	}
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
}

func TestHostPort(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ addr, want string }{
		{"127.0.0.1:8080", "127.0.0.1:8080"},
		{"0.0.0.0:8080", "localhost:8080"},
		{"[::]:8080", "localhost:8080"},
		{"[::1]:8080", "[::1]:8080"},
	} {
		addr, err := net.ResolveTCPAddr("tcp", tc.addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := hostPort(addr); got != tc.want {
			t.Errorf("%s: got %s, want %s", tc.addr, got, tc.want)
		}
	}
}

func expect(t *testing.T, ctx context.Context, conn *websocket.Conn, want string) {
	t.Helper()
	_, got, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
