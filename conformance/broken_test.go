package main

import (
	"context"
	"encoding/json"
	"fmt"
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
// then fail the checks of that rule.
type miniServer struct {
	fault fault

	mu    sync.Mutex // held while a room's message goes out, for one order
	rooms map[string]map[*miniConn]bool
	n     int
}

type fault int

const (
	noFault  fault = iota
	ackFirst       // acks a publish before delivering it to its sender
	noEcho         // does not deliver a publish to its sender
	arrays         // sends arrays, batching negotiated or not
	silent         // sends no error frame for a refused request without id
	noLimit        // reads messages of up to 1 MiB
)

type miniConn struct {
	ws    *websocket.Conn
	batch bool
	id    string
	wmu   sync.Mutex
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
	for {
		_, b, err := ws.Read(context.Background())
		if err != nil {
			return
		}
		s.handle(c, b)
	}
}

type miniMsg struct {
	Type  string          `json:"type"`
	ID    string          `json:"id,omitempty"`
	Room  string          `json:"room,omitempty"`
	From  string          `json:"from,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Error string          `json:"error,omitempty"`
}

func (s *miniServer) send(c *miniConn, m miniMsg) {
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
	for _, tc := range []struct {
		name  string
		fault fault
		want  map[string]Status // of the checks in all; PASS for the others
	}{
		{"no fault", noFault, map[string]Status{
			// Checks that cannot apply skip: they never pass.
			"history-replay": Skip, "presence-request": Skip, "shutdown-1001": Skip,
		}},
		{"ack before the message", ackFirst, map[string]Status{"publish-echo-before-ack": Fail}},
		{"no echo", noEcho, map[string]Status{"publish-echo-before-ack": Fail}},
		{"arrays to everyone", arrays, map[string]Status{"codec-none-objects": Fail, "codec-json-objects": Fail}},
		{"silent errors", silent, map[string]Status{"error-without-id": Fail}},
		{"no read limit", noLimit, map[string]Status{"read-limit-1009": Skip}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var names []string
			for _, n := range all {
				if _, ok := tc.want[n]; ok || tc.fault == noFault {
					names = append(names, regexp.QuoteMeta(n))
				}
			}
			s := &miniServer{fault: tc.fault, rooms: make(map[string]map[*miniConn]bool)}
			ts := httptest.NewServer(s)
			defer ts.Close()
			var out strings.Builder
			sum, err := Run(context.Background(), Config{
				URL:     "ws" + strings.TrimPrefix(ts.URL, "http"),
				Timeout: testTimeout,
				Run:     regexp.MustCompile("^(" + strings.Join(names, "|") + ")$"),
				Out:     &out,
			})
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
