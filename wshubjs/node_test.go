package wshubjs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// nodeTimeout bounds one run of node's test runner, on a busy machine.
const nodeTimeout = 5 * time.Minute

// TestNode runs the JavaScript tests, test/*.test.mjs, with node's test
// runner against a real hub; WSHUB_URL tells them where it is. Without
// node, or with a node that has no WebSocket, the test skips, unless
// WSHUB_REQUIRE_NODE=1 (set by CI), where it fails.
func TestNode(t *testing.T) {
	t.Parallel()
	node, flags := findNode(t)
	tests, err := filepath.Glob(filepath.Join("test", "*.test.mjs"))
	if err != nil || len(tests) == 0 {
		t.Fatalf("no tests in test/: %v", err)
	}
	url := startHub(t)

	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append(append(flags, "--test"), tests...)...)
	cmd.Env = append(os.Environ(), "WSHUB_URL="+url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test: %v\n%s", err, out)
	}
	t.Logf("node --test:\n%s", out)
}

// findNode returns node's path and the flags it needs for a global
// WebSocket: none from Node.js 22 on, --experimental-websocket on 20.
func findNode(t *testing.T) (string, []string) {
	t.Helper()
	skip := func(msg string) {
		t.Helper()
		if os.Getenv("WSHUB_REQUIRE_NODE") == "1" {
			t.Fatal(msg + "; WSHUB_REQUIRE_NODE=1 requires the Node.js tests to run")
		}
		t.Skip(msg)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		skip("no node in PATH: install Node.js (docs/CLIENTS.md gives the versions) to run the tests of wshub.js")
	}
	for _, flags := range [][]string{nil, {"--experimental-websocket"}} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := exec.CommandContext(ctx, node, append(flags, "-e", `process.exit(typeof WebSocket === "function" ? 0 : 1)`)...).Run()
		cancel()
		if err == nil {
			return node, flags
		}
	}
	out, _ := exec.Command(node, "--version").Output()
	skip(fmt.Sprintf("node %s has no WebSocket, even with --experimental-websocket: see docs/CLIENTS.md for the Node.js versions wshub.js runs on", strings.TrimSpace(string(out))))
	return "", nil
}

// startHub serves a hub for the JavaScript tests and returns its URL. A
// client is named by ?name=, which is its ID, and shown as {"name": …}.
// Every room keeps history and has presence, except those named plain-…
// (neither) and small-… (only its last 10 messages); rooms named denied-…
// cannot be joined. Application messages drive the hub from the tests:
//
//	{"type":"echo","data":…}             answered with {"type":"echo","data":…}
//	{"type":"kick","data":{"code":1001,"hold":true}}
//	                                     closes the sender's connection with code;
//	                                     with hold, its name cannot connect (503)
//	{"type":"release","data":"alice"}    … until another client releases it
//	{"type":"stall","data":"k"}          holds up the sender's connection until
//	{"type":"unstall","data":"k"}        another client sends this
func startHub(t *testing.T) string {
	t.Helper()
	var mu sync.Mutex
	held := map[string]bool{}
	stalls := map[string]chan struct{}{}
	stall := func(key string) chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if stalls[key] == nil {
			stalls[key] = make(chan struct{})
		}
		return stalls[key]
	}
	handler := wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
		raw, _ := m.Data.(json.RawMessage)
		switch m.Type {
		case "echo":
			return c.Send(&wshub.Message{Type: "echo", Data: raw})
		case "kick":
			var k struct {
				Code   int
				Reason string
				Hold   bool
			}
			if err := json.Unmarshal(raw, &k); err != nil {
				return err
			}
			if k.Hold {
				mu.Lock()
				held[c.ID()] = true
				mu.Unlock()
			}
			c.Close(websocket.StatusCode(k.Code), k.Reason)
			return nil
		case "release":
			var name string
			if err := json.Unmarshal(raw, &name); err != nil {
				return err
			}
			mu.Lock()
			delete(held, name)
			mu.Unlock()
			return nil
		case "stall", "unstall":
			var key string
			if err := json.Unmarshal(raw, &key); err != nil {
				return err
			}
			ch := stall(key)
			if m.Type == "unstall" {
				close(ch)
				return nil
			}
			select {
			case <-ch:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return fmt.Errorf("unknown type %q", m.Type)
	})
	hub := wshub.New(handler, &wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			name := r.URL.Query().Get("name")
			mu.Lock()
			defer mu.Unlock()
			if held[name] {
				return wshub.Identity{}, wshub.Reject(http.StatusServiceUnavailable, "held by the test")
			}
			return wshub.Identity{ID: name, Info: map[string]string{"name": name}}, nil
		},
		AuthorizeJoin: func(_ *wshub.Client, room string) error {
			if strings.HasPrefix(room, "denied-") {
				return errors.New("this room is closed")
			}
			return nil
		},
		Rooms: func(room string) wshub.RoomOptions {
			o := wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}, Presence: true}
			switch {
			case strings.HasPrefix(room, "plain-"):
				o = wshub.RoomOptions{}
			case strings.HasPrefix(room, "small-"):
				o.History.Messages = 10
			}
			return o
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", hub)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("hub shutdown: %v", err)
		}
		srv.Close()
	})
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}
