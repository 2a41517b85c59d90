package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
)

// A miniServer is a small server of the protocol's rooms (join, leave,
// publish, acks and errors; no history, no presence), written directly on
// coder/websocket, that can be told to break one rule: the suite must
// then fail the checks of that rule. With tokens, clients sign in with
// their first frame, an auth with miniToken, and may refresh with it.
type miniServer struct {
	fault  fault
	tokens bool

	mu    sync.Mutex // held while a room's message goes out, for one order
	rooms map[string]map[*miniConn]bool
	n     int
}

type fault int

const (
	noFault        fault = iota
	ackFirst             // acks a publish before delivering it to its sender
	noEcho               // does not deliver a publish to its sender
	arrays               // sends arrays, batching negotiated or not
	silent               // sends no error frame for a refused request without id
	noLimit              // reads messages of up to 1 MiB
	chatty               // breaks nothing: sends frames of an unknown type, at connect and before every answer
	anyFirstFrame        // with tokens: closes a first frame that is a join, and serves any other
	anyToken             // with tokens: accepts any token
	authAfterAck         // with tokens: sends the auth frame after the ack of a sign-in or refresh
	badTTL               // with tokens: sends ttl 0
	closeOnRefused       // with tokens: closes the connection on a refused refresh
	closeOnAuth          // without tokens: closes the connection on an auth frame
)

// miniToken is the token a miniServer with tokens accepts.
const miniToken = "mini-good"

type miniConn struct {
	ws     *websocket.Conn
	batch  bool
	id     string
	wmu    sync.Mutex
	signed bool // read and written by the connection's read loop only
}

func (s *miniServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"wshub.json", "wshub.json-batch"}})
	if err != nil {
		return
	}
	s.mu.Lock()
	s.n++
	c := &miniConn{ws: ws, batch: ws.Subprotocol() == "wshub.json-batch", id: fmt.Sprint("mini-", s.n)}
	s.mu.Unlock()
	if s.fault == noLimit {
		ws.SetReadLimit(1 << 20)
	}
	defer func() {
		s.mu.Lock()
		for _, members := range s.rooms {
			delete(members, c)
		}
		s.mu.Unlock()
		ws.CloseNow()
	}()
	if s.fault == chatty {
		s.send(c, miniMsg{Type: "conformance-mini-notice"})
	}
	for {
		_, b, err := ws.Read(context.Background())
		if err != nil {
			return
		}
		if s.tokens && !c.signed {
			if !s.signIn(c, b) {
				return
			}
			continue
		}
		s.handle(c, b)
	}
}

// signIn handles the first frame of a client of a server with tokens, and
// reports whether the connection goes on.
func (s *miniServer) signIn(c *miniConn, b []byte) bool {
	var m miniMsg
	json.Unmarshal(b, &m)
	switch {
	case m.Type == "auth" && (m.Token == miniToken || s.fault == anyToken):
		c.signed = true
		s.signedIn(c, m.ID)
		return true
	case s.fault == anyFirstFrame && m.Type != "join" && m.Type != "auth":
		c.signed = true
		s.handle(c, b)
		return true
	case m.Type == "auth":
		c.ws.Close(statusSignedOut, "unauthorized")
	default:
		c.ws.Close(statusSignedOut, "auth required")
	}
	return false
}

// signedIn answers an accepted sign-in or refresh: the auth frame, with
// the ttl, then the ack.
func (s *miniServer) signedIn(c *miniConn, id string) {
	ttl := int64(60_000)
	if s.fault == badTTL {
		ttl = 0
	}
	auth := miniMsg{Type: "auth", TTL: &ttl}
	if s.fault == authAfterAck && id != "" {
		s.send(c, miniMsg{Type: "ack", ID: id})
		s.send(c, auth)
		return
	}
	s.send(c, auth)
	if id != "" {
		s.send(c, miniMsg{Type: "ack", ID: id})
	}
}

type miniMsg struct {
	Type  string          `json:"type"`
	ID    string          `json:"id,omitempty"`
	Room  string          `json:"room,omitempty"`
	From  string          `json:"from,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Error string          `json:"error,omitempty"`
	Token string          `json:"token,omitempty"`
	TTL   *int64          `json:"ttl,omitempty"`
}

func (s *miniServer) send(c *miniConn, m miniMsg) {
	if s.fault == chatty && (m.Type == "ack" || m.Type == "error") {
		s.send(c, miniMsg{Type: "conformance-mini-notice", Data: json.RawMessage(`{"before":"` + m.Type + `"}`)})
	}
	b, _ := json.Marshal(m)
	if c.batch || s.fault == arrays {
		b = []byte("[" + string(b) + "]")
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.ws.Write(context.Background(), websocket.MessageText, b)
}

func (s *miniServer) handle(c *miniConn, b []byte) {
	var m miniMsg
	if err := json.Unmarshal(b, &m); err != nil || m.Type == "" {
		s.send(c, miniMsg{Type: "error", ID: m.ID, Error: "mini: invalid message"})
		return
	}
	refuse := func(why string) {
		if m.ID == "" && s.fault == silent {
			return
		}
		s.send(c, miniMsg{Type: "error", ID: m.ID, Room: m.Room, Error: "mini: " + why})
	}
	ack := func() {
		if m.ID != "" {
			s.send(c, miniMsg{Type: "ack", ID: m.ID})
		}
	}
	if m.Type == "auth" || m.Type == "refresh" {
		switch {
		case s.fault == closeOnAuth && m.Type == "auth":
			c.ws.Close(statusSignedOut, "auth required")
			return
		case !s.tokens:
		case m.Token == miniToken || s.fault == anyToken:
			s.signedIn(c, m.ID)
			return
		case s.fault == closeOnRefused:
			c.ws.Close(statusSignedOut, "unauthorized")
			return
		default:
			refuse("refresh refused")
			return
		}
	}
	if m.Type != "join" && m.Type != "leave" && m.Type != "publish" {
		refuse("unknown type or no presence")
		return
	}
	if m.Room == "" || len(m.Room) > 128 {
		refuse("invalid room name")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	members := s.rooms[m.Room]
	switch {
	case m.Type == "join":
		if members == nil {
			members = make(map[*miniConn]bool)
			s.rooms[m.Room] = members
		}
		members[c] = true
		ack()
	case !members[c]:
		refuse("not a member")
	case m.Type == "leave":
		delete(members, c)
		ack()
	default:
		if s.fault == ackFirst {
			ack()
		}
		for to := range members {
			if to != c || s.fault != noEcho {
				s.send(to, miniMsg{Type: "message", Room: m.Room, From: c.id, Data: m.Data})
			}
		}
		if s.fault != ackFirst {
			ack()
		}
	}
}

// TestBrokenServers: the checks of a rule fail against a server that
// breaks it (and pass, or skip, against the same server without the
// fault), so a PASS means something.
func TestBrokenServers(t *testing.T) {
	all := []string{
		"join-ack", "leave-ack", "publish-echo-before-ack", "publish-reaches-members",
		"error-without-id", "codec-none-objects", "codec-json-objects", "codec-batch-arrays",
		"read-limit-1009", "history-replay", "presence-request", "shutdown-1001",
	}
	all = append(all, tokenChecks...)
	// Checks that cannot apply skip: they never pass.
	cannot := map[string]Status{"history-replay": Skip, "presence-request": Skip, "shutdown-1001": Skip}
	without := maps.Clone(cannot) // a server without tokens
	for _, n := range tokenChecks[:4] {
		without[n] = Skip
	}
	with := maps.Clone(cannot) // a server whose clients sign in with the first frame
	with["auth-frame-not-fatal"] = Skip
	for _, tc := range []struct {
		name   string
		tokens bool
		fault  fault
		whole  bool              // run all, else the checks in want
		want   map[string]Status // of the checks in all; PASS for the others
	}{
		{"no fault", false, noFault, true, without},
		{"ack before the message", false, ackFirst, false, map[string]Status{"publish-echo-before-ack": Fail}},
		{"no echo", false, noEcho, false, map[string]Status{"publish-echo-before-ack": Fail}},
		{"arrays to everyone", false, arrays, false, map[string]Status{"codec-none-objects": Fail, "codec-json-objects": Fail}},
		{"silent errors", false, silent, false, map[string]Status{"error-without-id": Fail}},
		{"no read limit", false, noLimit, false, map[string]Status{"read-limit-1009": Skip}},
		{"closes on an auth frame", false, closeOnAuth, false, map[string]Status{"auth-frame-not-fatal": Fail}},
		{"tokens, no fault", true, noFault, true, with},
		{"tokens, frames of unknown types", true, chatty, true, with},
		{"tokens, any first frame", true, anyFirstFrame, false, map[string]Status{"auth-required-4003": Fail}},
		{"tokens, any token", true, anyToken, false, map[string]Status{"auth-refused-4003": Fail, "auth-refresh": Fail}},
		{"tokens, auth frame after the ack", true, authAfterAck, false, map[string]Status{"auth-first-frame": Fail, "auth-refresh": Fail}},
		{"tokens, ttl 0", true, badTTL, false, map[string]Status{"auth-first-frame": Fail, "auth-refresh": Fail}},
		{"tokens, closes on a refused refresh", true, closeOnRefused, false, map[string]Status{"auth-refresh": Fail}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			for _, n := range all {
				if _, ok := tc.want[n]; ok || tc.whole {
					names = append(names, regexp.QuoteMeta(n))
				}
			}
			s := &miniServer{fault: tc.fault, tokens: tc.tokens, rooms: make(map[string]map[*miniConn]bool)}
			ts := httptest.NewServer(s)
			defer ts.Close()
			cfg := Config{
				URL:     "ws" + strings.TrimPrefix(ts.URL, "http"),
				Timeout: testTimeout,
				Run:     regexp.MustCompile("^(" + strings.Join(names, "|") + ")$"),
			}
			if tc.tokens {
				cfg.Token = miniToken
			}
			var out strings.Builder
			cfg.Out = &out
			sum, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(sum.Results) != len(names) {
				t.Fatalf("ran %d checks, want %d:\n%s", len(sum.Results), len(names), out.String())
			}
			for _, r := range sum.Results {
				want, ok := tc.want[r.Name]
				if !ok {
					want = Pass
				}
				if r.Status != want {
					t.Errorf("%s: %s (%s), want %s", r.Name, r.Status, r.Reason, want)
				}
			}
			t.Logf("suite output:\n%s", out.String())
		})
	}
}
