package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
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
// way to reach it, and the machine may be busy.
const timeout = time.Minute

// server is a chat hub like examples/chat's, reporting each client's
// disconnect reason. A client's name is its ID, and its info for presence.
// Rooms keep their last 100 messages, except those named plain-*, which
// keep none; rooms named here-* have presence; rooms named private-* are
// refused, and the publishes of clients named raw-* are passed on as they
// are, without a name. Its URL leads to whichever hub is current, so that a test can
// restart the hub behind it.
type server struct {
	t       *testing.T
	hub     *wshub.Hub                   // the first hub
	handler atomic.Pointer[http.Handler] // what the URL leads to
	url     string
	gone    chan error         // OnDisconnect reasons
	clients chan *wshub.Client // OnConnect
	engine  wshub.Engine       // nil: the default
}

func newServer(t *testing.T) *server {
	t.Helper()
	return newServerWith(t, nil)
}

// newServerWith is newServer with an engine of the test's (nil for the
// default).
func newServerWith(t *testing.T, engine wshub.Engine) *server {
	t.Helper()
	s := &server{t: t, gone: make(chan error, 16), clients: make(chan *wshub.Client, 16), engine: engine}
	s.hub = s.newHub()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*s.handler.Load()).ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	s.url = "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
	return s
}

// newHub starts a hub and makes the URL lead to it.
func (s *server) newHub() *wshub.Hub {
	hub := wshub.New(nil, &wshub.Options{
		Engine: s.engine,
		Rooms: func(room string) wshub.RoomOptions {
			var o wshub.RoomOptions
			if !strings.HasPrefix(room, "plain-") {
				o.History = wshub.HistoryPolicy{Messages: 100}
			}
			o.Presence = strings.HasPrefix(room, "here-")
			return o
		},
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			name := r.URL.Query().Get("name")
			if name == "" {
				return wshub.Identity{}, wshub.Reject(http.StatusBadRequest, "name is required")
			}
			return wshub.Identity{ID: name, Info: map[string]string{"name": name}, Values: map[string]any{"name": name}}, nil
		},
		AuthorizeJoin: func(_ *wshub.Client, room string) error {
			if strings.HasPrefix(room, "private-") {
				return errors.New("private room")
			}
			return nil
		},
		AuthorizePublish: func(c *wshub.Client, m *wshub.Message) error {
			if strings.HasPrefix(c.Value("name").(string), "raw-") {
				return nil
			}
			var d chatData
			if err := json.Unmarshal(m.Data.(json.RawMessage), &d); err != nil {
				return err
			}
			m.Data = chatData{Name: c.Value("name").(string), Text: d.Text}
			return nil
		},
		OnConnect:    func(c *wshub.Client) { s.clients <- c },
		OnDisconnect: func(_ *wshub.Client, reason error) { s.gone <- reason },
	})
	s.t.Cleanup(func() { hub.Close() })
	s.serve(hub)
	return hub
}

// serve makes the URL lead to h.
func (s *server) serve(h http.Handler) { s.handler.Store(&h) }

// shutdown shuts hub down as a server does when it stops.
func (s *server) shutdown(hub *wshub.Hub) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := hub.Shutdown(ctx); err != nil {
		s.t.Fatalf("Shutdown: %v", err)
	}
}

// client returns the next client that connected.
func (s *server) client() *wshub.Client {
	s.t.Helper()
	select {
	case c := <-s.clients:
		return c
	case <-time.After(timeout):
		s.t.Fatal("no client connected")
		return nil
	}
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
	stdout *syncBuffer // stdout as it came, prompts included
	seen   int         // how much of stdout waitOutput went through
	stderr *syncBuffer
	exit   chan int
	cancel context.CancelFunc // Ctrl-C
}

func start(t *testing.T, args ...string) *cli {
	t.Helper()
	return startWith(t, false, args...)
}

// startWith starts a client, with a prompt as on a terminal or without.
func startWith(t *testing.T, prompt bool, args ...string) *cli {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	c := &cli{t: t, stdin: inW, lines: make(chan string, 1000), stdout: &syncBuffer{}, stderr: &syncBuffer{}, exit: make(chan int, 1), cancel: cancel}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(io.TeeReader(outR, c.stdout))
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	go func() {
		code := run(ctx, args, inR, outW, c.stderr, prompt)
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

// expectPrefix fails unless the next line of output starts with prefix.
func (c *cli) expectPrefix(prefix string) {
	c.t.Helper()
	if got := c.next(); !strings.HasPrefix(got, prefix) {
		c.t.Fatalf("got line %q, want one starting with %q", got, prefix)
	}
}

// waitOutput waits until stdout, as a terminal gets it, contains want
// after what the previous waitOutput found.
func (c *cli) waitOutput(want string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out := c.stdout.String()[c.seen:]
		if i := strings.Index(out, want); i >= 0 {
			c.seen += i + len(want)
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("stdout %q does not contain %q", out, want)
		}
		time.Sleep(10 * time.Millisecond)
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
	bob.send("/leave games")
	bob.expect("* left games")
	bob.send("back") // to the lobby, current again
	alice.expect("[lobby] bob: back")
	bob.expect("[lobby] bob: back")

	bob.send("/leave nowhere")
	bob.expect("! [nowhere] wshub: not a member of the room")
	bob.send("/leave")
	bob.expect("* left lobby")
	bob.send("lost")
	bob.send("/join lobby")
	bob.expect("* joined lobby")
	// Lines are handled in order, so the hint is written by now.
	equal(t, "stderr", bob.stderr.String(), "not in a room: /join ROOM first\n")
	bob.send("here again")
	alice.expect("[lobby] bob: here again")
}

// TestRooms runs sequences of commands and checks which rooms the client
// says it is in, which one typed lines go to, and that they really go there.
func TestRooms(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		commands []string
		rooms    string // what /rooms says
		current  string // where a typed line goes
	}{
		{"leave the room joined last", []string{"/join lobby", "/join dev", "/leave dev"}, "* rooms: lobby; typing to lobby", "lobby"},
		{"leave the current room", []string{"/join lobby", "/join dev", "/leave"}, "* rooms: lobby; typing to lobby", "lobby"},
		{"leave another room", []string{"/join lobby", "/join dev", "/leave lobby"}, "* rooms: dev; typing to dev", "dev"},
		{"join again to switch", []string{"/join lobby", "/join dev", "/join lobby"}, "* rooms: dev, lobby; typing to lobby", "lobby"},
		{"back to the one before", []string{"/join a", "/join b", "/join c", "/join a", "/leave a"}, "* rooms: b, c; typing to c", "c"},
		{"refused join", []string{"/join lobby", "/join private-x"}, "* rooms: lobby; typing to lobby", "lobby"},
		{"leave a room not joined", []string{"/join lobby", "/leave dev"}, "* rooms: lobby; typing to lobby", "lobby"},
		{"any case", []string{"/JOIN lobby", "/Join dev", "/LEAVE"}, "* rooms: lobby; typing to lobby", "lobby"},
		{"leave everything", []string{"/join lobby", "/leave", "/leave lobby"}, "* not in a room", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t) // a server each: the rooms' names are the same
			c := start(t, "-url", s.url, "-name", "alice", "-room", "")
			c.expect("* connected to " + s.url + " as alice")
			for _, cmd := range tc.commands {
				c.send(cmd)
			}
			c.send("/rooms")
			for got := c.next(); got != tc.rooms; got = c.next() {
				if strings.HasPrefix(got, "* rooms") || strings.HasPrefix(got, "* not in") {
					t.Fatalf("/rooms: got %q, want %q", got, tc.rooms)
				}
			}
			c.send("hello")
			if tc.current == "" {
				c.send("/rooms") // a line after the hint, to know it is written
				c.expect(tc.rooms)
				equal(t, "stderr", c.stderr.String(), "not in a room: /join ROOM first\n")
				return
			}
			c.expect("[" + tc.current + "] alice: hello")
		})
	}
}

// TestPrompt checks that a terminal shows the current room in the prompt,
// and that a message arriving meanwhile is written over the prompt, which
// comes back after it.
func TestPrompt(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := startWith(t, true, "-url", s.url, "-name", "alice", "-room", "lobby")
	alice.waitOutput("* joined lobby\nlobby> ")
	alice.send("/join dev")
	alice.waitOutput("* joined dev\ndev> ")
	alice.send("/leave")
	alice.waitOutput("* left dev\nlobby> ")
	alice.send("/leave")
	alice.waitOutput("* left lobby\n(no room)> ")
	alice.send("/join lobby")
	alice.waitOutput("* joined lobby\nlobby> ")

	bob := connect(t, s, "bob", "lobby")
	bob.send("hi")
	alice.waitOutput("\r\x1b[K[lobby] bob: hi\nlobby> ") // over the prompt "lobby> " found above

	s.shutdown(s.hub)
	alice.waitOutput("reconnecting in ")
	alice.waitOutput("\nlobby (offline)> ")
}

// missing is what the client prints when a room's missed messages cannot
// be replayed.
func missing(room string) string {
	return "* [" + room + "] some messages may be missing: the server could not replay what was sent while this client was away"
}

// TestReconnect restarts the server behind the client: on 1001, and when
// the connection is cut, the client comes back, joins its rooms again in
// the same order, and goes on talking in the same room. The new hub has
// new histories, so the client says of each room that it may have missed
// messages.
func TestReconnect(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		stop func(s *server)
		why  string
	}{
		{"shutdown", func(s *server) { s.shutdown(s.hub) }, "* disconnected: 1001 server shutting down; reconnecting in "},
		{"cut", func(s *server) { s.hub.Close() }, "* connection lost: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t)
			alice := connect(t, s, "alice", "dev")
			alice.send("/join lobby")
			alice.expect("* joined lobby")

			s.newHub() // where the client will reconnect to
			tc.stop(s)
			alice.expectPrefix(tc.why)
			alice.expect("* connected to " + s.url + " as alice")
			alice.expect("* joined dev")
			alice.expect(missing("dev"))
			alice.expect("* joined lobby")
			alice.expect(missing("lobby"))
			alice.send("still here")
			alice.expect("[lobby] alice: still here")

			bob := connect(t, s, "bob", "dev")
			bob.send("in dev")
			alice.expect("[dev] bob: in dev")
			equal(t, "stderr", alice.stderr.String(), "")
		})
	}
}

// TestJoinHistory: /join prints the room's last 20 messages, oldest
// first, after "* joined", then the live ones, none twice; in a room
// without history it prints none.
func TestJoinHistory(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	bob := connect(t, s, "bob", "lobby")
	for i := 1; i <= 25; i++ {
		line := fmt.Sprintf("m%02d", i)
		bob.send(line)
		bob.expect("[lobby] bob: " + line)
	}
	bob.send("/join plain-talk")
	bob.expect("* joined plain-talk")
	bob.send("unrecorded")
	bob.expect("[plain-talk] bob: unrecorded")

	alice := start(t, "-url", s.url, "-name", "alice", "-room", "")
	alice.expect("* connected to " + s.url + " as alice")
	alice.send("/join lobby")
	alice.expect("* joined lobby")
	for i := 6; i <= 25; i++ {
		alice.expect(fmt.Sprintf("[lobby] bob: m%02d", i))
	}
	bob.send("/join lobby")
	bob.expect("* joined lobby") // bob is in the lobby already: nothing again
	bob.send("live")
	alice.expect("[lobby] bob: live")
	bob.expect("[lobby] bob: live")

	alice.send("/join plain-talk")
	alice.expect("* joined plain-talk")
	bob.send("/join plain-talk")
	bob.expect("* joined plain-talk")
	bob.send("plain and live")
	alice.expect("[plain-talk] bob: plain and live")

	// -room joins the same way.
	carol := connect(t, s, "carol", "lobby")
	for i := 7; i <= 25; i++ {
		carol.expect(fmt.Sprintf("[lobby] bob: m%02d", i))
	}
	carol.expect("[lobby] bob: live")
}

// TestRecover cuts the client's connection while the server turns it away
// for a moment, so that messages are published while it is offline: once
// back, it prints those, and only those, once each. When more were
// published than the room keeps, it says so and prints the last 20.
func TestRecover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		missed int      // messages published while offline
		want   []string // what the client prints after "* joined lobby"
	}{
		{"one", 1, []string{"[lobby] bob: missed 1"}},
		{"more than kept", 101, append([]string{missing("lobby")}, seqLines("[lobby] bob: missed ", 82, 101)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t)
			alice := connect(t, s, "alice", "lobby")
			aliceOnServer := s.client()
			bob := connect(t, s, "bob", "lobby")
			s.client()
			bob.send("before")
			alice.expect("[lobby] bob: before")
			bob.expect("[lobby] bob: before")

			s.serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "restarting", http.StatusServiceUnavailable)
			}))
			// 1006 cannot be sent in a close frame: the hub cuts the
			// connection.
			aliceOnServer.Close(websocket.StatusAbnormalClosure, "")
			alice.expectPrefix("* connection lost: ")
			for i := 1; i <= tc.missed; i++ {
				bob.send(fmt.Sprint("missed ", i))
				bob.expect(fmt.Sprint("[lobby] bob: missed ", i))
			}

			s.serve(s.hub)
			for line := alice.next(); line != "* connected to "+s.url+" as alice"; line = alice.next() {
				if !strings.HasPrefix(line, "* cannot reconnect: 503 Service Unavailable: restarting") {
					t.Fatalf("while reconnecting: %q", line)
				}
			}
			alice.expect("* joined lobby")
			for _, want := range tc.want {
				alice.expect(want)
			}
			bob.send("after")
			alice.expect("[lobby] bob: after")
			equal(t, "stderr", alice.stderr.String(), "")
		})
	}
}

// seqLines returns prefix followed by each number from first to last.
func seqLines(prefix string, first, last int) []string {
	var lines []string
	for i := first; i <= last; i++ {
		lines = append(lines, fmt.Sprint(prefix, i))
	}
	return lines
}

// TestReconnectRetries keeps a client offline for a while: it tries again
// on a server that refuses it for now (503), and a line typed meanwhile is
// refused with a hint instead of being lost silently.
func TestReconnectRetries(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := connect(t, s, "alice", "lobby")
	s.shutdown(s.hub) // the URL still leads to it: every upgrade gets 503
	alice.expectPrefix("* disconnected: 1001 server shutting down; reconnecting in ")
	alice.expectPrefix("* cannot reconnect: 503 Service Unavailable")
	alice.send("anyone?")
	alice.send("/rooms") // answered locally: the hint is written before it
	alice.expectPrefix("* ")
	if got := alice.stderr.String(); got != "not connected, message not sent: reconnecting\n" {
		t.Fatalf("stderr: %q", got)
	}

	s.newHub()
	for line := alice.next(); line != "* connected to "+s.url+" as alice"; line = alice.next() {
		if !strings.HasPrefix(line, "* cannot reconnect: 503 Service Unavailable") && !strings.HasPrefix(line, "* rooms: lobby") {
			t.Fatalf("while reconnecting: %q", line)
		}
	}
	alice.expect("* joined lobby")
}

// TestReconnectRefused ends the client when the server refuses it for
// good (a 4xx answer), since trying again would get the same answer.
func TestReconnectRefused(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := connect(t, s, "alice", "lobby")
	s.serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "banned", http.StatusForbidden)
	}))
	s.shutdown(s.hub)
	alice.expectPrefix("* disconnected: 1001 server shutting down; reconnecting in ")
	equal(t, "exit status", alice.wait(), 1)
	equal(t, "stderr", alice.stderr.String(), "client: cannot reconnect to "+s.url+": 403 Forbidden: banned\n")
}

// TestKicked ends the client when the server closes it with a status other
// than 1001: it closed this client on purpose.
func TestKicked(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := connect(t, s, "alice", "lobby")
	s.client().Close(websocket.StatusPolicyViolation, "go away")
	equal(t, "exit status", alice.wait(), 1)
	equal(t, "stderr", alice.stderr.String(), "client: server closed the connection: 1008 go away\n")
}

// TestSender: a message without a name in its data shows the sender's
// client ID, and only one the server sent itself shows "(server)".
func TestSender(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := connect(t, s, "alice", "lobby")
	s.client() // alice's

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, _, err := websocket.Dial(ctx, s.url+"?name=raw-bot", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.CloseNow()
	bot := s.client()
	if err := bot.Join("lobby"); err != nil {
		t.Fatal(err)
	}
	if err := raw.Write(ctx, websocket.MessageText, []byte(`{"type":"publish","room":"lobby","data":{"text":"beep"}}`)); err != nil {
		t.Fatal(err)
	}
	alice.expect("[lobby] " + bot.ID() + ": beep")

	if err := s.hub.Room("lobby").Broadcast(ctx, &wshub.Message{Data: chatData{Text: "maintenance at noon"}}); err != nil {
		t.Fatal(err)
	}
	alice.expect("[lobby] (server): maintenance at noon")
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
	alice.send("only lobby")
	alice.send("/join games")
	alice.send("in games")
	// A room's messages are delivered in order and alice sent the lobby one
	// first, so had bob still got it, it would come before this one.
	bob.expect("[games] alice: in games")
}

func TestCommands(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	c := connect(t, s, "alice", "lobby")
	c.send("/bogus")
	c.send("/join")
	c.send("/HeLp")
	for _, want := range strings.Split(help, "\n") {
		c.expect(want)
	}
	equal(t, "stderr", c.stderr.String(), "unknown command /bogus (/help lists the commands)\nusage: /join ROOM\n")
	if !strings.Contains(help, "/help") {
		t.Error("/help does not list itself")
	}
}

func TestExitNormally(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		quit func(c *cli)
	}{
		{"EOF", func(c *cli) { c.stdin.Close() }},
		{"quit", func(c *cli) { c.send("/quit") }},
		{"QUIT", func(c *cli) { c.send("/QUIT") }},
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

// TestExitWhileOffline: Ctrl-C and EOF still end the client normally while
// it waits to reconnect.
func TestExitWhileOffline(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		quit func(c *cli)
	}{
		{"EOF", func(c *cli) { c.stdin.Close() }},
		{"interrupt", func(c *cli) { c.cancel() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t)
			c := connect(t, s, "alice", "lobby")
			s.shutdown(s.hub)
			c.expectPrefix("* disconnected: 1001 server shutting down; reconnecting in ")
			tc.quit(c)
			equal(t, "exit status", c.wait(), 0)
			equal(t, "stderr", c.stderr.String(), "")
		})
	}
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
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><html><head><style>"+strings.Repeat("body { margin: 0 }\n", 100)+"</style></head></html>")
	}))
	t.Cleanup(web.Close)
	hint := ": check -url (e.g. ws://localhost:8080/ws)\n"

	for _, tc := range []struct {
		name, url, nick, want string
		exact                 bool
	}{
		{"unreachable", closedURL, "alice", "client: cannot connect to " + closedURL + ": ", false},
		{"refused", s.url, "", "client: cannot connect to " + s.url + ": 400 Bad Request: name is required\n", true},
		{"bad URL", "ws://[::1", "alice", "client: cannot connect to ws://[::1: ", false},
		{"web page", web.URL + "/", "alice", "client: cannot connect to " + web.URL + "/: 200 OK: the server sent a web page, not a WebSocket" + hint, true},
		{"not found", web.URL + "/nope", "alice", "client: cannot connect to " + web.URL + "/nope: 404 Not Found: no WebSocket endpoint there" + hint, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := start(t, "-url", tc.url, "-name", tc.nick)
			equal(t, "exit status", c.wait(), 1)
			got := c.stderr.String()
			if tc.exact && got != tc.want || !strings.HasPrefix(got, tc.want) {
				t.Errorf("stderr: got %q, want %q", got, tc.want)
			}
			if strings.Count(got, "\n") != 1 {
				t.Errorf("stderr: got %q, want one line", got)
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
		{`{"type":"message","room":"lobby","from":"c42","data":{"text":"no name"}}`, "[lobby] c42: no name"},
		{`{"type":"message","room":"news","data":{"text":"extra"}}`, "[news] (server): extra"},
		{`{"type":"message","data":{"text":"to all"}}`, "(server): to all"},
		{`{"type":"message","room":"lobby","data":"hello"}`, "[lobby] (server): hello"},
		{`{"type":"message","room":"raw","from":"c7","data":[1,2]}`, "[raw] c7: [1,2]"},
		{`{"type":"ack","id":"7"}`, "* ok 7"},
		{`{"type":"error","room":"x","error":"wshub: join denied"}`, "! [x] wshub: join denied"},
		{`{"type":"error","error":"wshub: invalid message"}`, "! wshub: invalid message"},
		{`{"type":"welcome","data":{"id":"x","name":"alice"}}`, ""},
		{`{"type":"presence","room":"lobby","data":{"members":[],"total":0}}`, ""}, // the session keeps them
		{`{"type":"presence_diff","room":"lobby","data":{"joins":[],"leaves":[]}}`, ""},
		{`{"type":"custom","data":1}`, `{"type":"custom","data":1}`},
		// Nothing from the network reaches the terminal raw.
		{`{"type":"message","room":"a\u001b[2Jb","data":{"name":"ev\u0000e","text":"x\u0007y\nz\u202ew"}}`, `[a\x1b[2Jb] ev\x00e: x\ay\nz\u202ew`},
		{`{"type":"message","from":"\u009b31m","data":"\u001b]0;pwned\u0007"}`, `\u009b31m: \x1b]0;pwned\a`},
		{`{"type":"error","room":"\r","error":"\u001bc"}`, `! [\r] \x1bc`},
		{`{"type":"custom","data":"\u001b[31m"}`, `{"type":"custom","data":"\u001b[31m"}`},
	} {
		var m wshub.Message
		if err := (wshub.JSONCodec{}).Unmarshal([]byte(tc.frame), &m); err != nil {
			t.Fatal(err)
		}
		equal(t, tc.frame, format(&m, nil), tc.want)
	}
	equal(t, "invalid UTF-8", clean("a\xffb\x1b"), `a`+"\uFFFD"+`b\x1b`)
}

// restartable is an in-memory engine (wshub.NewMemoryEngine) that the
// test can make start every room's history over, as expiry or eviction
// does on a real server: the next message of a followed room then comes
// with the new history's epoch.
type restartable struct {
	mu      sync.Mutex
	inner   wshub.Engine
	follows map[string]restartFollow
}

// restartFollow is a Follow of a restartable engine.
type restartFollow struct {
	p       wshub.HistoryPolicy
	deliver func(wshub.Entry)
}

func newRestartable() *restartable {
	return &restartable{inner: wshub.NewMemoryEngine(0), follows: make(map[string]restartFollow)}
}

func (r *restartable) engine() wshub.Engine {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.inner
}

// restart replaces the engine with a new one, moving the follows to it.
func (r *restartable) restart() {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.inner
	r.inner = wshub.NewMemoryEngine(0)
	for room, f := range r.follows {
		old.Unfollow(room)
		if err := r.inner.Follow(room, f.p, 0, f.deliver); err != nil {
			panic(err) // in memory: it cannot fail
		}
	}
	old.Close()
}

func (r *restartable) Publish(ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) func() error {
	return r.engine().Publish(ctx, room, p, id, msg)
}

func (r *restartable) Follow(room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.inner.Follow(room, p, after, deliver); err != nil {
		return err
	}
	r.follows[room] = restartFollow{p, deliver}
	return nil
}

func (r *restartable) Unfollow(room string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.follows, room)
	return r.inner.Unfollow(room)
}

func (r *restartable) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	return r.engine().Read(ctx, room, p, after, limit)
}

func (r *restartable) Close() error { return r.engine().Close() }

// TestHistoryStartsOver: when the server's history of a room starts over
// while the client is in it, the next message says so with its new epoch:
// the client prints a notice and that message, whose seq starts over, not
// nothing.
func TestHistoryStartsOver(t *testing.T) {
	t.Parallel()
	eng := newRestartable()
	s := newServerWith(t, eng)
	bob := connect(t, s, "bob", "lobby")
	bob.send("one")
	bob.expect("[lobby] bob: one")
	eng.restart()
	bob.send("two")
	bob.expect("* [lobby] some messages may be missing: the server's history of this room started over")
	bob.expect("[lobby] bob: two")
	bob.send("three")
	bob.expect("[lobby] bob: three")
}

// TestWho: in a room with presence, /who lists the members, and the client
// prints who joins and leaves, escaped, but neither itself nor those there
// before it; after a reconnect, the room's new state replaces what it knew,
// silently.
func TestWho(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	alice := connect(t, s, "alice", "here-lobby")
	bob := connect(t, s, "bob", "here-lobby")
	alice.expect("* bob joined here-lobby")
	bob.send("/who")
	bob.expect("* 2 in here-lobby: alice, bob")

	// Names come from the network: escaped.
	evil := connect(t, s, "ev\x1b[2Jil", "here-lobby")
	alice.expect(`* ev\x1b[2Jil joined here-lobby`)
	evil.send("/quit")
	equal(t, "exit status", evil.wait(), 0)
	alice.expect(`* ev\x1b[2Jil left here-lobby`)
	bob.expect(`* ev\x1b[2Jil joined here-lobby`)
	bob.expect(`* ev\x1b[2Jil left here-lobby`)
	bob.send("/quit")
	equal(t, "exit status", bob.wait(), 0)
	alice.expect("* bob left here-lobby")

	// In a room without presence, /who says so plainly; out of every
	// room, a hint.
	alice.send("/join plain-x")
	alice.expect("* joined plain-x")
	alice.send("/who")
	alice.expect("* plain-x has no presence: the server does not say who is in it")
	alice.send("/leave")
	alice.expect("* left plain-x")

	// carol is on the old hub, dave on the new one before alice comes
	// back: she then knows dave, and not carol, without a line for either.
	rawJoin(t, s.url, "carol", "here-lobby")
	alice.expect("* carol joined here-lobby")
	s.newHub()
	dave := rawJoin(t, s.url, "dave", "here-lobby")
	s.shutdown(s.hub)
	alice.expectPrefix("* disconnected: 1001 server shutting down; reconnecting in ")
	alice.expect("* connected to " + s.url + " as alice")
	alice.expect("* joined here-lobby")
	alice.expect(missing("here-lobby"))
	alice.send("/who")
	alice.expect("* 2 in here-lobby: alice, dave")
	dave.Close(websocket.StatusNormalClosure, "")
	alice.expect("* dave left here-lobby")

	alice.send("/leave")
	alice.expect("* left here-lobby")
	alice.send("/who")
	alice.send("/rooms") // a line after the hint, to know it is written
	alice.expect("* not in a room")
	equal(t, "stderr", alice.stderr.String(), "not in a room\n")
}

// rawJoin connects to url as name, with a WebSocket of the test's, and
// joins room; then it reads and drops what comes, until closed.
func rawJoin(t *testing.T, url, name, room string) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, url+"?name="+name, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.CloseNow() })
	join := fmt.Sprintf(`{"type":"join","room":%q,"id":"j"}`, room)
	if err := ws.Write(ctx, websocket.MessageText, []byte(join)); err != nil {
		t.Fatal(err)
	}
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("%s joining %s: %v", name, room, err)
		}
		var m struct{ Type, ID string }
		if json.Unmarshal(b, &m) == nil && m.ID == "j" {
			if m.Type != "ack" {
				t.Fatalf("%s joining %s: %s", name, room, b)
			}
			// Read on, as a browser does, so that closes are answered.
			go func() {
				for {
					if _, _, err := ws.Read(context.Background()); err != nil {
						return
					}
				}
			}()
			return ws
		}
	}
}

// TestAnyServer: against a hub that neither names its clients nor stamps
// their messages (as examples/cluster), messages show the name the client
// sends, or the sender's name in a presence room, and /who says plainly
// when a room has no presence.
func TestAnyServer(t *testing.T) {
	t.Parallel()
	hub := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		// Random client IDs; rooms named here-* show a name from the URL.
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			return wshub.Identity{Info: map[string]string{"name": r.URL.Query().Get("name")}}, nil
		},
		Rooms: func(room string) wshub.RoomOptions {
			return wshub.RoomOptions{Presence: strings.HasPrefix(room, "here-")}
		},
	})
	t.Cleanup(func() { hub.Close() })
	ts := httptest.NewServer(hub)
	t.Cleanup(ts.Close)
	url := "ws" + strings.TrimPrefix(ts.URL, "http")

	alice := start(t, "-url", url, "-name", "alice", "-room", "lobby")
	alice.expect("* connected to " + url + " as alice")
	alice.expect("* joined lobby")
	bob := start(t, "-url", url, "-name", "bob", "-room", "lobby")
	bob.expect("* connected to " + url + " as bob")
	bob.expect("* joined lobby")
	bob.send("hi")
	alice.expect("[lobby] bob: hi")
	alice.send("/who")
	alice.expect("* lobby has no presence: the server does not say who is in it")

	// A sender that puts no name in its data is named by its presence info.
	alice.send("/join here-x")
	alice.expect("* joined here-x")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	raw, _, err := websocket.Dial(ctx, url+"?name=carol", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.CloseNow()
	send := func(f string) {
		t.Helper()
		if err := raw.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	send(`{"type":"join","room":"here-x","id":"1"}`)
	alice.expect("* carol joined here-x") // alice learns carol's name
	send(`{"type":"publish","room":"here-x","data":{"text":"beep"}}`)
	alice.expect("[here-x] carol: beep")
	alice.send("/who")
	alice.expect("* 2 in here-x: alice, carol")
}
