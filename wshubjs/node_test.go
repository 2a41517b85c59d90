package wshubjs_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// nodeTimeout bounds one run of node's test runner, on a busy machine.
const nodeTimeout = 5 * time.Minute

// TestNode runs the JavaScript tests, test/*.test.mjs, with node's test
// runner against two real hubs: WSHUB_URL is the one of startHub,
// WSHUB_TOKEN_URL the one of startTokenHub. Without
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
	tokenURL := startTokenHub(t)

	ctx, cancel := context.WithTimeout(context.Background(), nodeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append(append(flags, "--test"), tests...)...)
	cmd.Env = append(os.Environ(), "WSHUB_URL="+url, "WSHUB_TOKEN_URL="+tokenURL)
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

// startTokenHub serves a hub whose clients sign in with their first frame
// (Options.AuthenticateToken, no Authenticate), for the JavaScript tests
// of tokens, and returns its base URL: the hub is at /ws. Its tokens are
// "ok:<user>:<ttl-ms>[:<anything>]", the sign-in of user expiring in ttl
// (0: never); any other is refused. Grants are "grant:<ttl-ms>[:…]",
// likewise. Every room keeps history; rooms named denied-… cannot be
// joined. The tests drive it over HTTP:
//
//	GET  /token?user=U&ttl=N        a new token of U: "ok:U:N:<n>" (by default
//	                                U is guest and N 0, for docs/CLIENTS.md's page)
//	GET  /grant?room=R              a grant for good: "grant:0:<n>"
//	GET  /tokens?user=U             the tokens of U the hub accepted, in order,
//	                                as [{"token":…,"refresh":bool}]
//	GET  /grants?user=U             the grants of U the hub accepted, in order
//	POST /refuse?user=U&on=1        refuse (on=0: accept again) U's refreshes
//	POST /deny?user=U&room=R        refuse U the room R from now on: its next
//	                                refresh takes it out
//	POST /disconnect?user=U&code=C&reason=S
//	                                Hub.DisconnectUser(U, C, S)
func startTokenHub(t *testing.T) string {
	t.Helper()
	type accepted struct {
		Token   string `json:"token"`
		Refresh bool   `json:"refresh"`
	}
	var (
		mu      sync.Mutex
		n       int
		tokens  = map[string][]accepted{}
		grants  = map[string][]string{}
		refused = map[string]bool{}
		denied  = map[[2]string]bool{}
	)
	// parse reads "<kind>:…:<ttl-ms>[:…]", the ttl at index i.
	parse := func(token, kind string, i int) ([]string, time.Time, error) {
		f := strings.Split(token, ":")
		if len(f) <= i || f[0] != kind {
			return nil, time.Time{}, fmt.Errorf("not a %s token: %q", kind, token)
		}
		ms, err := strconv.Atoi(f[i])
		if err != nil || ms < 0 {
			return nil, time.Time{}, fmt.Errorf("bad ttl in %q", token)
		}
		var expires time.Time
		if ms > 0 {
			expires = time.Now().Add(time.Duration(ms) * time.Millisecond)
		}
		return f, expires, nil
	}
	hub := wshub.New(nil, &wshub.Options{
		AuthenticateToken: func(c *wshub.Client, token string) (wshub.Identity, error) {
			f, expires, err := parse(token, "ok", 2)
			if err != nil {
				return wshub.Identity{}, err
			}
			user, refresh := f[1], c.ID() != ""
			mu.Lock()
			defer mu.Unlock()
			if refresh && refused[user] {
				return wshub.Identity{}, errors.New("refused by the test")
			}
			tokens[user] = append(tokens[user], accepted{token, refresh})
			return wshub.Identity{ID: user, Info: map[string]string{"name": user}, Expires: expires}, nil
		},
		AuthorizeJoin: func(c *wshub.Client, room string) error {
			mu.Lock()
			defer mu.Unlock()
			if strings.HasPrefix(room, "denied-") || denied[[2]string{c.ID(), room}] {
				return errors.New("this room is closed")
			}
			return nil
		},
		AuthorizeGrant: func(c *wshub.Client, room, token string) (time.Time, error) {
			_, expires, err := parse(token, "grant", 1)
			if err != nil {
				return time.Time{}, err
			}
			mu.Lock()
			defer mu.Unlock()
			grants[c.ID()] = append(grants[c.ID()], token)
			return expires, nil
		},
		Rooms: func(string) wshub.RoomOptions {
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}}
		},
	})
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(v); err != nil {
			t.Errorf("control: %v", err)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", hub)
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		user, ttl := cmp.Or(r.FormValue("user"), "guest"), cmp.Or(r.FormValue("ttl"), "0")
		token := fmt.Sprintf("ok:%s:%s:%d", user, ttl, n)
		mu.Unlock()
		fmt.Fprint(w, token)
	})
	mux.HandleFunc("GET /grant", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		token := fmt.Sprintf("grant:0:%d", n)
		mu.Unlock()
		fmt.Fprint(w, token)
	})
	mux.HandleFunc("GET /tokens", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		reply(w, append([]accepted{}, tokens[r.FormValue("user")]...))
	})
	mux.HandleFunc("GET /grants", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		reply(w, append([]string{}, grants[r.FormValue("user")]...))
	})
	mux.HandleFunc("POST /refuse", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		refused[r.FormValue("user")] = r.FormValue("on") == "1"
	})
	mux.HandleFunc("POST /deny", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		denied[[2]string{r.FormValue("user"), r.FormValue("room")}] = true
	})
	mux.HandleFunc("POST /disconnect", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.FormValue("code"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err := hub.DisconnectUser(r.Context(), r.FormValue("user"), websocket.StatusCode(code), r.FormValue("reason")); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := hub.Shutdown(ctx); err != nil {
			t.Errorf("token hub shutdown: %v", err)
		}
		srv.Close()
	})
	return srv.URL
}
