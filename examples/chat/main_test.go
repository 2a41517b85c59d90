package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"go.uber.org/goleak"
)

// timeout bounds every wait of a test; generous, since failing is the only
// way to reach it, and the machine may be busy.
const timeout = time.Minute

// clientBin is examples/client, built once by TestMain so that tests drive
// the real program, exactly as a user runs it.
var clientBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chat-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clientBin = filepath.Join(dir, "client")
	if runtime.GOOS == "windows" {
		clientBin += ".exe"
	}
	if out, err := exec.Command("go", "build", "-o", clientBin, "../client").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building examples/client: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// server is the chat server running in-process on a random loopback port.
type server struct {
	addr   string
	log    *testLog
	hub    *wshub.Hub
	stop   context.CancelFunc // Ctrl-C
	served chan error
}

func startServer(t *testing.T) *server {
	t.Helper()
	return startServerAt(t, "127.0.0.1:0")
}

func startServerAt(t *testing.T, addr string) *server {
	t.Helper()
	return startServerWith(t, addr, debugPages{})
}

// startServerWith is startServerAt with the operator's pages of debug.
func startServerWith(t *testing.T, addr string, debug debugPages) *server {
	t.Helper()
	return startServerLogin(t, addr, debug, nil)
}

// startServerLogin is startServerWith in the login mode of lg, if not nil,
// whose logger it sets.
func startServerLogin(t *testing.T, addr string, debug debugPages, lg *login) *server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, stop := context.WithCancel(context.Background())
	out := &testLog{w: t.Output()}
	t.Cleanup(out.stop) // after the shutdown, registered below
	logger := slog.New(slog.NewTextHandler(out, nil))
	if lg != nil {
		lg.logger = logger
	}
	s := &server{addr: ln.Addr().String(), log: out, hub: newHub(logger, lg), stop: stop, served: make(chan error, 1)}
	go func() { s.served <- serve(ctx, ln, s.hub, logger, debug, lg) }()
	t.Cleanup(func() { s.shutdown(t) })
	return s
}

// testLog is a test's log output, which ends with the test. The hub runs
// OnDisconnect, which logs, outside the goroutines that Shutdown waits
// for, so a client's last line may come after serve returned, and writing
// it to the test's output once the test has ended would panic.
// It also keeps what was written, for waitFor.
type testLog struct {
	mu      sync.Mutex
	w       io.Writer // nil once stopped
	all     strings.Builder
	written chan struct{} // closed, and replaced, by each write
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.all.Write(p)
	if l.written != nil {
		close(l.written)
		l.written = nil
	}
	if l.w == nil {
		return len(p), nil
	}
	return l.w.Write(p)
}

// waitFor waits until a line of the log contains all of parts.
func (l *testLog) waitFor(t *testing.T, parts ...string) {
	t.Helper()
	l.waitUntil(t, fmt.Sprintf("a line with %q", parts), func(log string) bool {
		for line := range strings.Lines(log) {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(line, p) }) {
				return true
			}
		}
		return false
	})
}

// waitUntil waits until ok accepts the log written so far; what says
// what ok looks for.
func (l *testLog) waitUntil(t *testing.T, what string, ok func(log string) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		all := l.all.String()
		if ok(all) {
			l.mu.Unlock()
			return
		}
		if l.written == nil {
			l.written = make(chan struct{})
		}
		written := l.written
		l.mu.Unlock()
		select {
		case <-written:
		case <-deadline:
			t.Fatalf("no %s in the log:\n%s", what, all)
		}
	}
}

func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w = nil
}

// shutdown stops the server as Ctrl-C does and checks it stopped cleanly.
// It may be called more than once.
func (s *server) shutdown(t *testing.T) {
	t.Helper()
	s.stop()
	select {
	case err := <-s.served:
		s.served <- err
		if err != nil {
			t.Errorf("serve: %v", err)
		}
	case <-time.After(timeout):
		t.Fatal("server did not shut down")
	}
}

func (s *server) wsURL() string { return "ws://" + s.addr + "/ws" }

// cli is one run of the client program, with piped stdin and stdout.
type cli struct {
	t        *testing.T
	name     string  // as connect gave it
	pushed   *string // a line skipPrefix read too far
	stdin    io.WriteCloser
	lines    chan string // stdout, line by line, but for presence lines
	presence chan string // the lines saying that someone joined or left a room
	stderr   *syncBuffer
	exit     chan int
}

// presenceLine matches what the client prints when someone joins or
// leaves a room ("* bob joined lobby"), which the chat server's presence
// makes it print at any time: so they have a channel of their own, and
// tests that are not about them never see them. ("* joined lobby", the
// client's own join, is not one.)
var presenceLine = regexp.MustCompile(`^\* .+ (joined|left) .+$`)

func startClient(t *testing.T, args ...string) *cli {
	t.Helper()
	cmd := exec.Command(clientBin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW := io.Pipe()
	c := &cli{t: t, stdin: stdin, lines: make(chan string, 1000), presence: make(chan string, 1000), stderr: &syncBuffer{}, exit: make(chan int, 1)}
	cmd.Stdout, cmd.Stderr = outW, c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(c.lines)
		defer close(c.presence)
		sc := bufio.NewScanner(outR)
		for sc.Scan() {
			if presenceLine.MatchString(sc.Text()) {
				c.presence <- sc.Text()
			} else {
				c.lines <- sc.Text()
			}
		}
	}()
	go func() {
		cmd.Wait() // the exit status is all we need from the error
		outW.Close()
		c.exit <- cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		stdin.Close() // EOF: the client says goodbye and exits
		select {
		case code := <-c.exit:
			c.exit <- code
		case <-time.After(timeout):
			cmd.Process.Kill()
			t.Error("client did not exit on EOF")
			<-c.exit
		}
	})
	return c
}

// connect starts a client and waits until it joined room.
func connect(t *testing.T, s *server, name, room string) *cli {
	t.Helper()
	return connectTo(t, s.wsURL(), name, room)
}

// connectTo starts a client of the server at url and waits until it
// joined room.
func connectTo(t *testing.T, url, name, room string) *cli {
	t.Helper()
	c := startClient(t, "-url", url, "-name", name, "-room", room)
	c.name = name
	c.expect("* connected to " + url + " as " + name)
	c.expect("* joined " + room)
	return c
}

// missing is what the client prints when it cannot get a room's missed
// messages back.
func missing(room string) string {
	return "* [" + room + "] some messages may be missing: the server could not replay what was sent while this client was away"
}

// proxy forwards TCP connections to the server, and can cut them: a
// network failure between a client behind it and the server, which the
// client sees as a connection lost without a close frame (1006).
type proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup // the goroutines that accept and forward

	mu    sync.Mutex
	down  bool // the network is out: connections are closed at once
	conns map[net.Conn]bool
}

// startProxy starts a proxy to the server at target on a loopback port.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &proxy{ln: ln, target: target, conns: make(map[net.Conn]bool)}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed by the cleanup
		}
		if p.track(c) {
			p.wg.Go(func() { p.forward(c) })
		}
	}
}

// track adds c to the connections to cut, or closes it if the network is
// out, and reports which.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// forward copies between c and a new connection to the server until
// either side closes, or the proxy cuts them.
func (p *proxy) forward(c net.Conn) {
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		p.untrack(c)
		return
	}
	if !p.track(s) {
		p.untrack(c)
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, c); done <- struct{}{} }()
	go func() { io.Copy(c, s); done <- struct{}{} }()
	<-done
	p.untrack(c, s) // ends the other copy
	<-done
}

// cut closes every connection through the proxy, and closes those that
// come until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
}

// hold closes the connections that come, until restore, and keeps those
// already through: a network that lets no new client in.
func (p *proxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
}

// restore lets connections through again.
func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

func (c *cli) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("stdin: %v", err)
	}
}

// expectPrefix fails unless the next line of output starts with prefix.
func (c *cli) expectPrefix(prefix string) {
	c.t.Helper()
	if got := c.next(); !strings.HasPrefix(got, prefix) {
		c.t.Fatalf("got line %q, want one starting with %q", got, prefix)
	}
}

// skipPrefix skips the lines of output that start with prefix; the next
// expect sees the first that does not.
func (c *cli) skipPrefix(prefix string) {
	c.t.Helper()
	for {
		line := c.next()
		if !strings.HasPrefix(line, prefix) {
			c.pushed = &line
			return
		}
	}
}

// next returns the next line of output.
func (c *cli) next() string {
	c.t.Helper()
	if c.pushed != nil {
		line := *c.pushed
		c.pushed = nil
		return line
	}
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

// expectPresence fails unless the next line saying that someone joined or
// left a room is want.
func (c *cli) expectPresence(want string) {
	c.t.Helper()
	select {
	case got, ok := <-c.presence:
		if !ok {
			c.t.Fatalf("output ended; stderr: %s", c.stderr)
		}
		if got != want {
			c.t.Fatalf("got line %q, want %q", got, want)
		}
	case <-time.After(timeout):
		c.t.Fatalf("no line %q; stderr: %s", want, c.stderr)
	}
}

// noMorePresence fails if the client, which has exited, printed another
// line saying that someone joined or left.
func (c *cli) noMorePresence() {
	c.t.Helper()
	select {
	case line, ok := <-c.presence:
		if ok {
			c.t.Errorf("%s printed %q", c.name, line)
		}
	case <-time.After(timeout):
		c.t.Fatalf("%s: output did not end", c.name)
	}
}

// expect fails unless the next line of output is want.
func (c *cli) expect(want string) {
	c.t.Helper()
	if got := c.next(); got != want {
		c.t.Fatalf("got line %q, want %q", got, want)
	}
}

// waitStderr waits until the client wrote want on stderr, which reaches
// the test on its own pipe, and so possibly after later lines of stdout.
func (c *cli) waitStderr(want string) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for c.stderr.String() != want {
		if time.Now().After(deadline) {
			c.t.Fatalf("stderr: got %q, want %q", c.stderr, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait returns the exit status.
func (c *cli) wait() int {
	c.t.Helper()
	select {
	case code := <-c.exit:
		c.exit <- code
		return code
	case <-time.After(timeout):
		c.t.Fatal("client did not exit")
		return 0
	}
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

// peer is a hand-driven connection, for what the client program would
// never send.
type peer struct {
	t     *testing.T
	conn  *websocket.Conn
	ahead []string // frames read while looking for another kind
}

func dial(t *testing.T, s *server, name string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, s.wsURL()+"?name="+name, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return &peer{t: t, conn: conn}
}

func (p *peer) send(frame string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// read returns the next frame that is not about presence: the chat's
// rooms have presence, whose diffs come at any time (see readPresence).
func (p *peer) read() (frame string, err error) {
	return p.next(func(f string) bool { return !isPresence(f) })
}

// next returns the next frame that want accepts; frames read past
// meanwhile are kept for later calls.
func (p *peer) next(want func(string) bool) (string, error) {
	if i := slices.IndexFunc(p.ahead, want); i >= 0 {
		f := p.ahead[i]
		p.ahead = slices.Delete(p.ahead, i, i+1)
		return f, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		_, b, err := p.conn.Read(ctx)
		if err != nil {
			return "", err
		}
		if want(string(b)) {
			return string(b), nil
		}
		p.ahead = append(p.ahead, string(b))
	}
}

// isPresence reports whether frame is a presence state or diff.
func isPresence(frame string) bool {
	var m struct{ Type string }
	return json.Unmarshal([]byte(frame), &m) == nil && (m.Type == "presence" || m.Type == "presence_diff")
}

// readUntilClosed skips what is left to read (a few frames at most) and
// returns the error that ended the connection.
func (p *peer) readUntilClosed() error {
	for range 100 {
		if _, err := p.read(); err != nil {
			return err
		}
	}
	return errors.New("connection still open after 100 frames")
}

// expect fails unless the next frame is want, as JSON.
func (p *peer) expect(want string) {
	p.t.Helper()
	got, err := p.read()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	if !jsonEqual(got, want) {
		p.t.Fatalf("got %s, want %s", got, want)
	}
}

// join joins room, asking for no history, and returns the room's epoch.
func (p *peer) join(room string) string {
	p.t.Helper()
	p.send(fmt.Sprintf(`{"type":"join","room":%q,"id":"j"}`, room))
	return p.ack("j", room, -1)
}

// ack reads the ack of a join with id, which must say that room's history
// is at seq (any seq if negative), and returns the room's epoch.
func (p *peer) ack(id, room string, seq int) string {
	p.t.Helper()
	got, err := p.read()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	var m struct {
		Type, ID, Room, Epoch string
		Seq                   *int
	}
	if err := json.Unmarshal([]byte(got), &m); err != nil || m.Type != "ack" || m.ID != id || m.Room != room || m.Epoch == "" ||
		seq >= 0 && (m.Seq == nil && seq != 0 || m.Seq != nil && *m.Seq != seq) {
		p.t.Fatalf("got %s, want the ack %q of joining %s at seq %d", got, id, room, seq)
	}
	return m.Epoch
}

// welcome reads the greeting every client gets first and returns its ID.
func (p *peer) welcome(name string) string {
	p.t.Helper()
	got, err := p.read()
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	var m struct {
		Type string
		Data welcome
	}
	if err := json.Unmarshal([]byte(got), &m); err != nil || m.Type != "welcome" || m.Data.Name != name || m.Data.ID == "" {
		p.t.Fatalf("got %s, want a welcome for %s", got, name)
	}
	return m.Data.ID
}

func jsonEqual(a, b string) bool {
	var va, vb any
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return false
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

func equal[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func TestPage(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, tc := range []struct {
		path   string
		status int
		body   string
	}{
		{"/", http.StatusOK, "<title>wshub chat</title>"},
		{"/favicon.svg", http.StatusOK, "<svg"},
		{"/favicon.ico", http.StatusOK, "<svg"},
		{"/wshub.js", http.StatusOK, "export class Client"},
		{"/wshub.d.ts", http.StatusOK, "export class Client"},
		{"/index.html", http.StatusNotFound, ""},
		{"/nope", http.StatusNotFound, ""},
	} {
		resp, err := http.Get("http://" + s.addr + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		equal(t, "GET "+tc.path, resp.StatusCode, tc.status)
		if !strings.Contains(string(body), tc.body) {
			t.Errorf("GET %s: body does not contain %q", tc.path, tc.body)
		}
	}
}

// TestShutdownWithUnusedConnection: a connection that has not sent a
// request yet, as browsers open ahead of need, does not hold up the
// shutdown until its deadline.
func TestShutdownWithUnusedConnection(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A request on another connection, answered, shows that the server
	// has accepted the first one.
	resp, err := http.Get("http://" + s.addr + "/favicon.svg")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	s.shutdown(t) // fails on a shutdown error
}

func TestRefusesBadNames(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, tc := range []struct{ query, body string }{
		{"", "name is required"},
		{"?name=%20%20", "name is required"},
		{"?name=" + strings.Repeat("x", maxNameLen+1), "name must be valid UTF-8 of at most 32 characters"},
		{"?name=%ff", "name must be valid UTF-8 of at most 32 characters"},
		{"?name=%1b%5b2Jevil", "name must not contain control characters"},
		{"?name=a%00b", "name must not contain control characters"},
		{"?name=a%0ab", "name must not contain control characters"},
		{"?name=%e2%80%aeevil", "name must not contain control characters"}, // U+202E reverses text
	} {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		_, resp, err := websocket.Dial(ctx, s.wsURL()+tc.query, nil)
		cancel()
		if err == nil || resp == nil {
			t.Fatalf("%q: dial succeeded, want a refusal", tc.query)
		}
		body, _ := io.ReadAll(resp.Body)
		equal(t, tc.query+" status", resp.StatusCode, http.StatusBadRequest)
		equal(t, tc.query+" body", strings.TrimSpace(string(body)), tc.body)
	}
}

// TestWireFormat pins down the messages of the issue: what a page sends and
// what everyone receives, with the name stamped by the server whatever the
// sender claims.
func TestWireFormat(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	mallory, bob := dial(t, s, "mallory"), dial(t, s, "bob")
	malloryID := mallory.welcome("mallory")
	bob.welcome("bob")
	for _, p := range []*peer{mallory, bob} {
		p.join("lobby")
	}

	mallory.send(`{"type":"publish","room":"lobby","data":{"name":"alice","text":"  hi  "}}`)
	want := fmt.Sprintf(`{"type":"message","room":"lobby","from":%q,"data":{"name":"mallory","text":"hi"},"seq":1}`, malloryID)
	bob.expect(want)
	mallory.expect(want)

	// Rooms keep history: a join may ask for the last messages, which come
	// before the ack, and the ack says where the room's history stands.
	carol := dial(t, s, "carol")
	carol.welcome("carol")
	carol.send(`{"type":"join","room":"lobby","history":50,"id":"h"}`)
	carol.expect(want)
	epoch := carol.ack("h", "lobby", 1)
	carol.send(`{"type":"leave","room":"lobby","id":"l"}`)
	carol.expect(`{"type":"ack","id":"l"}`)
	carol.send(fmt.Sprintf(`{"type":"join","room":"lobby","epoch":%q,"since":1,"history":50,"id":"r"}`, epoch))
	carol.expect(fmt.Sprintf(`{"type":"ack","id":"r","room":"lobby","epoch":%q,"seq":1,"recovered":true}`, epoch))

	for _, tc := range []struct{ frame, err string }{
		{`{"type":"publish","room":"lobby","id":"1","data":{"text":"  "}}`, "wshub: publish denied: empty message"},
		{`{"type":"publish","room":"lobby","id":"2","data":{"text":"` + strings.Repeat("é", maxTextLen+1) + `"}}`, "wshub: publish denied: message longer than 2000 characters"},
		{`{"type":"publish","room":"lobby","id":"3","data":"hi"}`, `wshub: publish denied: data must be {"text": "..."}: json: cannot unmarshal string into Go value of type main.chatMessage`},
	} {
		mallory.send(tc.frame)
		var m struct{ Type, Error string }
		got, _ := mallory.read()
		if json.Unmarshal([]byte(got), &m) != nil || m.Type != "error" || m.Error != tc.err {
			t.Errorf("%.60s: got %s, want error %q", tc.frame, got, tc.err)
		}
	}
}

// TestClients drives two real client programs through the server: rooms
// keep their messages to themselves, names come from the server, /leave
// stops delivery, and a server shutdown reaches the clients as 1001.
func TestClients(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := connect(t, s, "alice", "lobby")
	bob := connect(t, s, "bob", "games")

	alice.send("hello lobby")
	alice.expect("[lobby] alice: hello lobby")
	alice.send("/join games")
	alice.expect("* joined games")
	alice.send("hello games")
	alice.expect("[games] alice: hello games")
	// alice spoke in the lobby first, and the hub handles her messages in
	// order: had bob got the lobby message, it would come before this one.
	bob.expect("[games] alice: hello games")

	// Whatever a client puts in data, the server says who spoke.
	mallory := dial(t, s, "mallory")
	mallory.welcome("mallory")
	mallory.join("games")
	mallory.send(`{"type":"publish","room":"games","data":{"name":"alice","text":"I am alice"}}`)
	bob.expect("[games] mallory: I am alice")
	alice.expect("[games] mallory: I am alice")

	bob.send("/join lobby")
	bob.expect("* joined lobby")
	bob.expect("[lobby] alice: hello lobby") // the room's history
	bob.send("/leave lobby")
	bob.expect("* left lobby")
	alice.send("/join lobby")
	alice.expect("* joined lobby")
	alice.send("bob is gone")
	alice.expect("[lobby] alice: bob is gone")
	alice.send("/join games")
	alice.expect("* joined games")
	alice.send("still here?")
	bob.expect("[games] alice: still here?")
	alice.expect("[games] alice: still here?")

	// A peer answers the server's close frame only while it reads.
	malloryErr := make(chan error, 1)
	go func() { malloryErr <- mallory.readUntilClosed() }()
	s.shutdown(t)
	equal(t, "close status", websocket.CloseStatus(<-malloryErr), websocket.StatusGoingAway)

	// The clients do not exit: they try again until the server is back,
	// and join their rooms again, the current one last. The new server
	// has no history of them: the clients say they may have missed
	// messages.
	for _, c := range []*cli{alice, bob} {
		c.expectPrefix("* disconnected: 1001 server shutting down; reconnecting in ")
	}
	startServerAt(t, s.addr)
	for _, c := range []*cli{alice, bob} {
		c.skipPrefix("* cannot reconnect: ")
		c.expect("* connected to " + s.wsURL() + " as " + c.name)
	}
	alice.expect("* joined lobby")
	alice.expect(missing("lobby"))
	alice.expect("* joined games")
	alice.expect(missing("games"))
	bob.expect("* joined games")
	bob.expect(missing("games"))
	alice.send("welcome back")
	bob.expect("[games] alice: welcome back")
	for _, c := range []*cli{alice, bob} {
		equal(t, "stderr", c.stderr.String(), "")
	}
}

// TestClientHistory: the client prints the last 20 messages of a room it
// joins, with -room or /join, then the live ones.
func TestClientHistory(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := connect(t, s, "alice", "lobby")
	for i := 1; i <= 25; i++ {
		alice.send(fmt.Sprint("m", i))
		alice.expect(fmt.Sprint("[lobby] alice: m", i))
	}
	bob := connect(t, s, "bob", "lobby")
	carol := connect(t, s, "carol", "games")
	carol.send("/join lobby")
	carol.expect("* joined lobby")
	for _, c := range []*cli{bob, carol} {
		for i := 6; i <= 25; i++ {
			c.expect(fmt.Sprint("[lobby] alice: m", i))
		}
	}
	alice.send("live")
	bob.expect("[lobby] alice: live")
	carol.expect("[lobby] alice: live")
}

// TestClientRecovers cuts the network between a client and the server,
// publishes while it is out, and brings it back: the client prints the
// message it missed, once, and nothing it printed before.
func TestClientRecovers(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	p := startProxy(t, s.addr)
	viaProxy := "ws://" + p.addr() + "/ws"
	alice := connect(t, s, "alice", "lobby")
	bob := connectTo(t, viaProxy, "bob", "lobby")
	alice.send("before")
	alice.expect("[lobby] alice: before")
	bob.expect("[lobby] alice: before")

	p.cut()
	bob.expectPrefix("* connection lost: ")
	alice.send("while you were away")
	alice.expect("[lobby] alice: while you were away")
	p.restore()
	bob.skipPrefix("* cannot reconnect: ")
	bob.expect("* connected to " + viaProxy + " as bob")
	bob.expect("* joined lobby")
	bob.expect("[lobby] alice: while you were away")
	alice.send("after")
	bob.expect("[lobby] alice: after")
	equal(t, "stderr", bob.stderr.String(), "")
}

// TestClientRooms drives the real client through the command sequences of
// issue 13: the rooms it is in and the one typed lines go to follow the
// server's answers.
func TestClientRooms(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := startClient(t, "-url", s.wsURL(), "-name", "alice", "-room", "")
	alice.expect("* connected to " + s.wsURL() + " as alice")
	bob := connect(t, s, "bob", "lobby")

	alice.send("/join lobby")
	alice.expect("* joined lobby")
	alice.send("/join dev")
	alice.expect("* joined dev")
	alice.send("/leave dev")
	alice.expect("* left dev")
	alice.send("still in the lobby")
	bob.expect("[lobby] alice: still in the lobby")
	alice.expect("[lobby] alice: still in the lobby")

	// A refused join does not become the current room: the chat server
	// refuses room names with control characters.
	alice.send("/JOIN bad\x1b[2Jroom")
	alice.expect(`! [bad\x1b[2Jroom] wshub: join denied: room name must not contain control characters`)
	alice.send("still here")
	bob.expect("[lobby] alice: still here")
	alice.expect("[lobby] alice: still here")

	alice.send("/bogus")
	alice.send("/Help")
	alice.expect("commands (in any case):")
	alice.waitStderr("unknown command /bogus (/help lists the commands)\n")
}

// TestClientEscapes: whatever a peer puts in a message, the client prints
// no control character raw.
func TestClientEscapes(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := connect(t, s, "alice", "lobby")
	mallory := dial(t, s, "mallory")
	mallory.welcome("mallory")
	mallory.join("lobby")
	mallory.send(`{"type":"publish","room":"lobby","data":{"text":"\u001b]0;pwned\u0007\u001b[2J\u009b1m\r\nfake line\u202e"}}`)
	alice.expect(`[lobby] mallory: \x1b]0;pwned\a\x1b[2J\u009b1m\r\nfake line\u202e`)
}

// TestClientWrongURL points the client at the page instead of /ws: it says
// so in one line, without printing the page.
func TestClientWrongURL(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	for _, url := range []string{"http://" + s.addr + "/", "ws://" + s.addr + "/"} {
		c := startClient(t, "-url", url, "-name", "alice")
		equal(t, "exit status", c.wait(), 1)
		want := "client: cannot connect to " + url + ": 200 OK: the server sent a web page, not a WebSocket: check -url (e.g. ws://localhost:8080/ws)\n"
		equal(t, "stderr", c.stderr.String(), want)
	}
}

func TestClientExits(t *testing.T) {
	t.Parallel()
	s := startServer(t)

	t.Run("EOF", func(t *testing.T) {
		t.Parallel()
		c := connect(t, s, "alice", "lobby")
		c.stdin.Close()
		equal(t, "exit status", c.wait(), 0)
		equal(t, "stderr", c.stderr.String(), "")
	})

	t.Run("unreachable", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "ws://" + ln.Addr().String() + "/ws"
		ln.Close()
		c := startClient(t, "-url", url)
		equal(t, "exit status", c.wait(), 1)
		if got, want := c.stderr.String(), "client: cannot connect to "+url+": "; !strings.HasPrefix(got, want) {
			t.Errorf("stderr: got %q, want it to start with %q", got, want)
		}
	})
}

// presenceFrame is a presence state or diff, as a client gets it.
type presenceFrame struct {
	Type, Room string
	Data       struct {
		Members, Joins, Leaves []member
		Total                  int
	}
}

// member is one member in a presence frame.
type member struct {
	ID    string
	Info  json.RawMessage
	Conns int
}

// readPresence returns the next presence state or diff.
func (p *peer) readPresence() presenceFrame {
	p.t.Helper()
	got, err := p.next(isPresence)
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	var f presenceFrame
	if err := json.Unmarshal([]byte(got), &f); err != nil {
		p.t.Fatalf("decoding %s: %v", got, err)
	}
	return f
}

// expectPresence fails unless the next presence frame is want, as JSON.
func (p *peer) expectPresence(want string) {
	p.t.Helper()
	got, err := p.next(isPresence)
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	if !jsonEqual(got, want) {
		p.t.Fatalf("got %s, want %s", got, want)
	}
}

// waitDiff reads presence frames until a diff of room in which id joined
// (or left, with leave), and returns every diff read, that one included.
func (p *peer) waitDiff(room, id string, leave bool) []presenceFrame {
	p.t.Helper()
	var diffs []presenceFrame
	for {
		f := p.readPresence()
		if f.Type != "presence_diff" || f.Room != room {
			p.t.Fatalf("got %+v, want a diff of %s", f, room)
		}
		diffs = append(diffs, f)
		list := f.Data.Joins
		if leave {
			list = f.Data.Leaves
		}
		if slices.ContainsFunc(list, func(m member) bool { return m.ID == id }) {
			return diffs
		}
	}
}

// mentions reports whether any of diffs has id join or leave.
func mentions(diffs []presenceFrame, id string) bool {
	return slices.ContainsFunc(diffs, func(f presenceFrame) bool {
		return slices.ContainsFunc(slices.Concat(f.Data.Joins, f.Data.Leaves), func(m member) bool { return m.ID == id })
	})
}

// TestPresence: every room has presence. Joining sends the room's state
// before the ack, with each member's name as its info; then diffs say who
// joined and left; a name is one member however many connections it has;
// and a member may ask for the state again.
func TestPresence(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := dial(t, s, "alice")
	equal(t, "alice's ID", alice.welcome("alice"), "alice") // the name is the ID
	alice.send(`{"type":"join","room":"lobby","id":"j"}`)
	alice.expectPresence(`{"type":"presence","room":"lobby","data":{"members":[{"id":"alice","info":{"name":"alice"},"conns":1}],"total":1}}`)
	alice.ack("j", "lobby", -1) // after the state: read skips none of it
	if len(alice.ahead) != 0 {
		t.Fatalf("frames before the state: %q", alice.ahead)
	}
	// Her own join comes as a diff too; once it is out, nothing about her
	// is pending.
	alice.waitDiff("lobby", "alice", false)

	bob := dial(t, s, "bob")
	bob.welcome("bob")
	bob.join("lobby")
	bob.expectPresence(`{"type":"presence","room":"lobby","data":{"members":[{"id":"alice","info":{"name":"alice"},"conns":1},{"id":"bob","info":{"name":"bob"},"conns":1}],"total":2}}`)
	alice.expectPresence(`{"type":"presence_diff","room":"lobby","data":{"joins":[{"id":"bob","info":{"name":"bob"},"conns":1}],"leaves":[]}}`)
	bob.waitDiff("lobby", "bob", false)

	// A second tab of alice's: the same member, with two connections. Its
	// join is no news to the others: carol's join, later, comes in the
	// first diff that mentions anyone.
	alice2 := dial(t, s, "alice")
	alice2.welcome("alice")
	alice2.join("lobby")
	alice2.expectPresence(`{"type":"presence","room":"lobby","data":{"members":[{"id":"alice","info":{"name":"alice"},"conns":2},{"id":"bob","info":{"name":"bob"},"conns":1}],"total":2}}`)
	carol := dial(t, s, "carol")
	carol.welcome("carol")
	carol.join("lobby")
	if diffs := bob.waitDiff("lobby", "carol", false); mentions(diffs, "alice") {
		t.Fatalf("alice's second connection made a diff: %+v", diffs)
	}

	// One of alice's tabs leaves: she is still there.
	alice2.send(`{"type":"leave","room":"lobby","id":"l"}`)
	alice2.expect(`{"type":"ack","id":"l"}`)
	carol.send(`{"type":"leave","room":"lobby","id":"l"}`)
	carol.expect(`{"type":"ack","id":"l"}`)
	if diffs := bob.waitDiff("lobby", "carol", true); mentions(diffs, "alice") {
		t.Fatalf("alice's second connection leaving made a diff: %+v", diffs)
	}
	// Her last one goes, closing the connection: she left.
	alice.conn.Close(websocket.StatusNormalClosure, "")
	diffs := bob.waitDiff("lobby", "alice", true)
	equal(t, "alice's leave", fmt.Sprintf("%+v", diffs[len(diffs)-1].Data.Leaves), `[{ID:alice Info:[123 34 110 97 109 101 34 58 34 97 108 105 99 101 34 125] Conns:0}]`)

	// Asking again: the state, then the ack.
	bob.send(`{"type":"presence","room":"lobby","id":"w"}`)
	bob.expectPresence(`{"type":"presence","room":"lobby","data":{"members":[{"id":"bob","info":{"name":"bob"},"conns":1}],"total":1}}`)
	bob.expect(`{"type":"ack","id":"w"}`)
}

// TestClientWho drives the real client program in a room with presence:
// it prints who comes and goes, never itself nor those there before it,
// lists the members with /who, and a name with two connections is one
// member there too.
func TestClientWho(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	alice := connect(t, s, "alice", "lobby")
	bob := connect(t, s, "bob", "lobby")
	alice.expectPresence("* bob joined lobby")
	bob.send("/who")
	bob.expect("* 2 in lobby: alice, bob")

	alice2 := connect(t, s, "alice", "lobby") // a second terminal of alice's
	bob.send("/who")
	bob.expect("* 2 in lobby: alice, bob")
	carol := connect(t, s, "carol", "lobby")
	// Presence lines come in order: had alice's second connection made
	// bob print one, it would come first.
	bob.expectPresence("* carol joined lobby")
	alice.expectPresence("* carol joined lobby")

	alice2.send("/leave")
	alice2.expect("* left lobby")
	carol.send("/leave")
	carol.expect("* left lobby")
	bob.expectPresence("* carol left lobby")
	alice.send("/quit")
	equal(t, "alice's exit status", alice.wait(), 0)
	bob.expectPresence("* alice left lobby")
	bob.send("/who")
	bob.expect("* 1 in lobby: bob")

	// Neither their own joins nor the members there before them: only
	// carol's join, which alice's second terminal saw.
	alice2.expectPresence("* carol joined lobby")
	for _, c := range []*cli{alice2, carol} {
		c.send("/quit")
		equal(t, c.name+"'s exit status", c.wait(), 0)
		c.noMorePresence()
	}
	for _, c := range []*cli{alice, bob, alice2, carol} {
		equal(t, c.name+"'s stderr", c.stderr.String(), "")
	}
}

// waitConns asks for the state of room until it says that id has n
// connections in it.
func (p *peer) waitConns(room, id string, n int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for ctx.Err() == nil {
		p.send(fmt.Sprintf(`{"type":"presence","room":%q}`, room))
		for {
			f := p.readPresence()
			if f.Type != "presence" {
				continue // a diff
			}
			i := slices.IndexFunc(f.Data.Members, func(m member) bool { return m.ID == id })
			if i >= 0 && f.Data.Members[i].Conns == n {
				return
			}
			break
		}
	}
	p.t.Fatalf("%s never had %d connections in %s", id, n, room)
}

// TestDisconnectLogged: a client that closes its connection normally is
// logged as such, not as an error text.
func TestDisconnectLogged(t *testing.T) {
	s := startServer(t)
	alice := dial(t, s, "alice")
	alice.welcome("alice")
	alice.conn.Close(websocket.StatusNormalClosure, "")
	s.log.waitFor(t, "msg=disconnect", "name=alice", `reason="closed by the client (1000)"`)
}
