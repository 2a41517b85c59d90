package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wshub/wshub"
)

// loginServer is a hub whose clients sign in with tokens, as
// examples/chat's with -login: POST /login sets a session cookie for a
// name, GET /token gives a token of the session, POST /logout ends the
// session and closes the name's connections with 4003. Its tokens are
// random strings it remembers: the client never reads them.
type loginServer struct {
	t         *testing.T
	hub       *wshub.Hub
	url       string // the hub's
	ttl       time.Duration
	refreshed chan string // the name of each refresh the hub took

	mu       sync.Mutex
	sessions map[string]string // cookie → name
	tokens   map[string]string // token → name
}

const cookieName = "session"

// newLoginServer starts a login server whose tokens last ttl.
func newLoginServer(t *testing.T, ttl time.Duration) *loginServer {
	t.Helper()
	s := &loginServer{t: t, ttl: ttl, refreshed: make(chan string, 1000),
		sessions: make(map[string]string), tokens: make(map[string]string)}
	s.hub = wshub.New(nil, &wshub.Options{
		Rooms: func(string) wshub.RoomOptions {
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}, Presence: true}
		},
		AuthenticateToken: s.authenticate,
		AuthorizeJoin:     func(*wshub.Client, string) error { return nil },
		AuthorizePublish: func(c *wshub.Client, m *wshub.Message) error {
			var d chatData
			if err := json.Unmarshal(m.Data.(json.RawMessage), &d); err != nil {
				return err
			}
			m.Data = chatData{Name: c.Value("name").(string), Text: d.Text}
			return nil
		},
	})
	t.Cleanup(func() { s.hub.Close() })
	mux := http.NewServeMux()
	mux.Handle("/ws", s.hub)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("GET /token", s.token)
	mux.HandleFunc("POST /logout", s.logout)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	s.url = "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	return s
}

var errBadToken = errors.New("bad token")

func (s *loginServer) authenticate(c *wshub.Client, token string) (wshub.Identity, error) {
	s.mu.Lock()
	name, ok := s.tokens[token]
	s.mu.Unlock()
	if !ok {
		return wshub.Identity{}, errBadToken
	}
	if c.ID() != "" { // signed in already: a refresh
		select {
		case s.refreshed <- name:
		default: // the test reads them
		}
	}
	return wshub.Identity{ID: name, Info: map[string]string{"name": name}, Values: map[string]any{"name": name}, Expires: time.Now().Add(s.ttl)}, nil
}

func (s *loginServer) login(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if name == "" {
		http.Error(w, "name is required", http.StatusBadRequest)
		return
	}
	session := rand.Text()
	s.mu.Lock()
	s.sessions[session] = name
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: session, Path: "/", HttpOnly: true})
	w.WriteHeader(http.StatusNoContent)
}

// session returns the name of r's session, or "".
func (s *loginServer) session(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[c.Value]
}

func (s *loginServer) token(w http.ResponseWriter, r *http.Request) {
	name := s.session(r)
	if name == "" {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	token := rand.Text()
	s.mu.Lock()
	s.tokens[token] = name
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": token, "expires": time.Now().Add(s.ttl).UnixMilli()})
}

func (s *loginServer) logout(w http.ResponseWriter, r *http.Request) {
	if name := s.session(r); name != "" {
		s.endSessions(name)
		s.hub.DisconnectUser(r.Context(), name, wshub.StatusSignedOut, "signed out")
	}
	w.WriteHeader(http.StatusNoContent)
}

// endSessions ends every session of name.
func (s *loginServer) endSessions(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for session, n := range s.sessions {
		if n == name {
			delete(s.sessions, session)
		}
	}
}

// signOut signs name out as a browser does: it signs in, then out.
func (s *loginServer) signOut(name string) {
	s.t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		s.t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: timeout}
	base := "http" + strings.TrimSuffix(strings.TrimPrefix(s.url, "ws"), "/ws")
	for _, path := range []string{"/login", "/logout"} {
		resp, err := browser.PostForm(base+path, url.Values{"name": {name}})
		if err != nil {
			s.t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			s.t.Fatalf("POST %s: %s", path, resp.Status)
		}
	}
}

// waitRefresh waits until the hub took a refresh of name's.
func (s *loginServer) waitRefresh(name string) {
	s.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case n := <-s.refreshed:
			if n == name {
				return
			}
		case <-deadline:
			s.t.Fatalf("no refresh of %s", name)
		}
	}
}

// connectLogin starts a client signed in as name, and waits until it
// joined room.
func connectLogin(t *testing.T, s *loginServer, name, room string) *cli {
	t.Helper()
	c := start(t, "-url", s.url, "-login", name, "-room", room)
	c.expect("* connected to " + s.url + " as " + name)
	c.expect("* joined " + room)
	return c
}

// TestLogin: with -login, the client signs in at /login, connects with a
// token from /token and refreshes it, over the same connection, while
// messages go on; signed out (4003), it says so and exits with status 1.
func TestLogin(t *testing.T) {
	t.Parallel()
	s := newLoginServer(t, time.Second)
	alice := connectLogin(t, s, "alice", "lobby")
	bob := connectLogin(t, s, "bob", "lobby")
	alice.expect("* bob joined lobby")
	first := s.hub.ClientsOf("alice")
	equal(t, "alice's connections", len(first), 1)
	for i := range 3 {
		s.waitRefresh("alice")
		alice.send("after a refresh")
		alice.expect("[lobby] alice: after a refresh")
		bob.expect("[lobby] alice: after a refresh")
		if now := s.hub.ClientsOf("alice"); len(now) != 1 || now[0] != first[0] {
			t.Fatalf("after refresh %d, alice's connections are %v, want the first one", i+1, now)
		}
	}

	s.signOut("alice")
	equal(t, "exit status", alice.wait(), 1)
	equal(t, "stderr", alice.stderr.String(), "client: signed out: 4003 signed out\n")
	bob.expect("* alice left lobby")
	bob.send("alone")
	bob.expect("[lobby] bob: alone")
}

// TestLoginSessionEnded: a client whose token expired (4001) gets a new
// one, and when the server's session has ended (/token says 401), it says
// it is signed out and exits with status 1.
func TestLoginSessionEnded(t *testing.T) {
	t.Parallel()
	s := newLoginServer(t, time.Minute)
	alice := connectLogin(t, s, "alice", "lobby")
	s.hub.ClientsOf("alice")[0].Close(wshub.StatusTokenExpired, "token expired")
	alice.expectPrefix("* disconnected: 4001 token expired; reconnecting in ")
	alice.expect("* connected to " + s.url + " as alice")
	alice.expect("* joined lobby")

	s.endSessions("alice")
	s.hub.ClientsOf("alice")[0].Close(wshub.StatusTokenExpired, "token expired")
	alice.expectPrefix("* disconnected: 4001 token expired; reconnecting in ")
	equal(t, "exit status", alice.wait(), 1)
	equal(t, "stderr", alice.stderr.String(), "client: signed out: the session has ended\n")
}

// TestLoginRefused: the client says why it cannot sign in, and exits.
func TestLoginRefused(t *testing.T) {
	t.Parallel()
	withLogin := newLoginServer(t, time.Minute)
	without := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(without.Close)
	withoutURL := "ws" + strings.TrimPrefix(without.URL, "http") + "/ws"
	for _, tc := range []struct{ url, name, want string }{
		{withLogin.url, " ", "400 Bad Request: name is required"},
		{withoutURL, "alice", "404 Not Found: no login there: is the server examples/chat with -login?"},
		{"ftp://localhost/ws", "alice", "-url ftp://localhost/ws: not a ws:// or wss:// URL"},
	} {
		c := start(t, "-url", tc.url, "-login", tc.name)
		equal(t, "exit status", c.wait(), 1)
		equal(t, "stderr", c.stderr.String(), "client: cannot sign in at "+tc.url+": "+tc.want+"\n")
	}
}
