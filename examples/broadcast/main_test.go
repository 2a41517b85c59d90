package main

import (
	"context"
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
		{"POST", "/broadcast/" + strings.Repeat("x", wshub.MaxRoomNameLen+1), http.StatusBadRequest},
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
