package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// timeout bounds every wait of a test; generous, since failing is the only
// way to reach it.
const timeout = 10 * time.Second

// server is a chat hub like examples/chat's, reporting each client's
// disconnect reason.
type server struct {
	hub  *wshub.Hub
	url  string
	gone chan error // OnDisconnect reasons
}

func newServer(t *testing.T) *server {
	t.Helper()
	s := &server{gone: make(chan error, 16)}
	s.hub = wshub.New(nil, &wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			name := r.URL.Query().Get("name")
			if name == "" {
				return wshub.Identity{}, wshub.Reject(http.StatusBadRequest, "name is required")
			}
			return wshub.Identity{Values: map[string]any{"name": name}}, nil
		},
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		AuthorizePublish: func(c *wshub.Client, m *wshub.Message) error {
			var d chatData
			if err := json.Unmarshal(m.Data.(json.RawMessage), &d); err != nil {
				return err
			}
			m.Data = chatData{Name: c.Value("name").(string), Text: d.Text}
			return nil
		},
		OnDisconnect: func(_ *wshub.Client, reason error) { s.gone <- reason },
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", s.hub)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		s.hub.Close()
		ts.Close()
	})
	s.url = "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	return s
}

// closeStatus waits for the next client to disconnect and returns the close
// status it sent.
func (s *server) closeStatus(t *testing.T) websocket.StatusCode {
	t.Helper()
	select {
	case reason := <-s.gone:
		return websocket.CloseStatus(reason)
	case <-time.After(timeout):
		t.Fatal("no client disconnected")
		return 0
	}
}

// cli is one run of the client, in-process, with piped stdin and stdout.
type cli struct {
	t      *testing.T
	stdin  *io.PipeWriter
	lines  chan string // stdout, line by line
	stderr *syncBuffer
	exit   chan int
	cancel context.CancelFunc // Ctrl-C
}

func start(t *testing.T, args ...string) *cli {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &cli{t: t, stdin: inW, lines: make(chan string, 1000), stderr: &syncBuffer{}, exit: make(chan int, 1), cancel: cancel}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	go func() {
		code := run(ctx, args, inR, outW, c.stderr)
		outW.Close()
		c.exit <- code
	}()
	t.Cleanup(func() {
		inW.Close() // ends the stdin reader run leaves behind
		cancel()
		c.wait()
	})
	return c
}

func (c *cli) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("stdin: %v", err)
	}
}

// next returns the next line of output.
func (c *cli) next() string {
	c.t.Helper()
	select {
	case line, ok := <-c.lines:
		if !ok {
			c.t.Fatalf("output ended; stderr: %s", c.stderr)
		}
		return line
	case <-time.After(timeout):
		c.t.Fatalf("no output; stderr: %s", c.stderr)
		return ""
	}
}

// expect fails unless the next line of output is want.
func (c *cli) expect(want string) {
	c.t.Helper()
	if got := c.next(); got != want {
		c.t.Fatalf("got line %q, want %q", got, want)
	}
}

// wait returns the exit status.
func (c *cli) wait() int {
	c.t.Helper()
	select {
	case code := <-c.exit:
		c.exit <- code // so that wait may be called again
		return code
	case <-time.After(timeout):
		c.t.Fatal("client did not exit")
		return 0
	}
}

// connect starts a client and waits until it joined its room.
func connect(t *testing.T, s *server, name, room string) *cli {
	t.Helper()
	c := start(t, "-url", s.url, "-name", name, "-room", room)
	c.expect("* connected to " + s.url + " as " + name)
	c.expect("* joined " + room)
	return c
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func equal[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func TestConversation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := connect(t, s, "alice", "lobby")
	bob := connect(t, s, "bob", "lobby")

	alice.send("hi bob")
	alice.expect("[lobby] alice: hi bob")
	bob.expect("[lobby] alice: hi bob")

	bob.send("/join games")
	bob.expect("* joined games")
	bob.send("gg")
	bob.expect("[games] bob: gg") // typed lines go to the room joined last

	bob.send("/leave nowhere")
	bob.expect("! [nowhere] wshub: not a member of the room")
	bob.send("/leave games")
	bob.expect("* left games")
	bob.send("lost")
	bob.send("/join lobby")
	bob.expect("* joined lobby")
	// Lines are handled in order, so the hint is written by now.
	equal(t, "stderr", bob.stderr.String(), "not in a room: /join ROOM first\n")
	bob.send("back")
	alice.expect("[lobby] bob: back")
}

func TestLeaveStopsDelivery(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := connect(t, s, "alice", "lobby")
	bob := connect(t, s, "bob", "lobby")
	alice.send("/join games")
	alice.expect("* joined games")
	bob.send("/join games")
	bob.expect("* joined games")
	bob.send("/leave lobby")
	bob.expect("* left lobby")

	alice.send("/join lobby")
	alice.expect("* joined lobby")
	alice.send("only lobby")
	alice.send("/join games")
	alice.send("in games")
	// A room's messages are delivered in order and alice sent the lobby one
	// first, so had bob still got it, it would come before this one.
	bob.expect("[games] alice: in games")
}

func TestExitNormally(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		quit func(c *cli)
	}{
		{"EOF", func(c *cli) { c.stdin.Close() }},
		{"quit", func(c *cli) { c.send("/quit") }},
		{"interrupt", func(c *cli) { c.cancel() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t)
			c := connect(t, s, "alice", "lobby")
			tc.quit(c)
			equal(t, "exit status", c.wait(), 0)
			equal(t, "close status", s.closeStatus(t), websocket.StatusNormalClosure)
			equal(t, "stderr", c.stderr.String(), "")
		})
	}
}

func TestServerShutdown(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	c := connect(t, s, "alice", "lobby")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := s.hub.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	equal(t, "exit status", c.wait(), 1)
	equal(t, "stderr", c.stderr.String(), "client: server closed the connection: 1001 server shutting down\n")
}

func TestCannotConnect(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "ws://" + ln.Addr().String() + "/ws"
	ln.Close()
	s := newServer(t)

	for _, tc := range []struct {
		name, url, nick, want string
	}{
		{"unreachable", closedURL, "alice", "client: cannot connect to " + closedURL + ": "},
		{"refused", s.url, "", "client: cannot connect to " + s.url + ": 400 Bad Request: name is required\n"},
		{"bad URL", "ws://[::1", "alice", "client: cannot connect to ws://[::1: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := start(t, "-url", tc.url, "-name", tc.nick)
			equal(t, "exit status", c.wait(), 1)
			if got := c.stderr.String(); !strings.HasPrefix(got, tc.want) {
				t.Errorf("stderr: got %q, want it to start with %q", got, tc.want)
			}
		})
	}
}

func TestBadFlag(t *testing.T) {
	t.Parallel()
	c := start(t, "-nope")
	equal(t, "exit status", c.wait(), 2)
	if !strings.Contains(c.stderr.String(), "-url") {
		t.Errorf("stderr: %q, want usage", c.stderr)
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		frame, want string
	}{
		{`{"type":"message","room":"lobby","from":"x","data":{"name":"alice","text":"hi"}}`, "[lobby] alice: hi"},
		{`{"type":"message","room":"news","data":{"text":"extra"}}`, "[news] (server): extra"},
		{`{"type":"message","data":{"text":"to all"}}`, "(server): to all"},
		{`{"type":"message","room":"raw","data":[1,2]}`, "[raw] (server): [1,2]"},
		{`{"type":"ack","id":"join:lobby"}`, "* joined lobby"},
		{`{"type":"ack","id":"leave:lobby"}`, "* left lobby"},
		{`{"type":"ack","id":"7"}`, "* ok 7"},
		{`{"type":"error","room":"x","error":"wshub: join denied"}`, "! [x] wshub: join denied"},
		{`{"type":"error","error":"wshub: invalid message"}`, "! wshub: invalid message"},
		{`{"type":"welcome","data":{"id":"x","name":"alice"}}`, ""},
		{`{"type":"custom","data":1}`, `{"type":"custom","data":1}`},
	} {
		var m message
		if err := json.Unmarshal([]byte(tc.frame), &m); err != nil {
			t.Fatal(err)
		}
		equal(t, tc.frame, format(m, []byte(tc.frame)), tc.want)
	}
}
