// Client is a terminal chat client for any wshub server, made for
// examples/chat.
//
//	go run ./examples/client -url ws://localhost:8080/ws -name alice -room lobby
//
// Lines typed are published to the current room, which the prompt shows
// ("lobby> "); messages of every joined room are printed as
// "[lobby] alice: hi". Commands, in any case:
//
//	/join ROOM     join ROOM and make it the current room
//	/leave [ROOM]  leave ROOM (default: the current room); the room that
//	               was current before becomes current again
//	/rooms         list the joined rooms
//	/who           list the members of the current room
//	/help          list the commands
//	/quit          close the connection and exit (as do EOF and Ctrl-C)
//
// A /join, /leave or /who waits for the server's answer before the next
// line is read, so the rooms the client shows are the rooms the server has
// it in: a refused join changes nothing. In a room with history
// (examples/chat's rooms have it), /join prints the room's last 20
// messages after "* joined ROOM".
//
// In a room with presence (examples/chat's rooms have it), /who asks the
// server who is in the current room and prints "* 2 in lobby: alice, bob",
// and the client prints "* carol joined lobby" and "* carol left lobby" as
// people come and go (by client ID: a user with two connections comes
// once). It prints neither for the members already there when it joins,
// nor for itself, nor in a room of more members than the server lists
// (100), where they would drown the conversation.
//
// It works with any wshub server: a message shows the "name" in its data
// (the client sends its -name so, and examples/chat stamps the sender's),
// else the sender's name in a presence room, else its client ID. How the
// server names the client itself is up to the server: examples/chat reads
// "?name=", which the client adds to the URL. In a room without presence,
// /who says that the server does not tell who is in it.
//
// With -login NAME, for examples/chat run with -login, the client signs in
// as NAME at the server's POST /login (the URL of -url, with http for ws),
// keeps the session cookie, and signs each connection in with an access
// token from GET /token, sent as the connection's first frame, never in
// the URL; the Go client refreshes it before it expires. When the server
// signs the client out (close status 4003: POST /logout, a refused token)
// or the session has ended (/token answers 401), the client prints
// "client: signed out: ..." and exits with status 1.
//
// When the server goes away (close status 1001), the connection is lost
// (1006) or a room log lost messages (1012), the client reconnects with
// exponential backoff and jitter and joins its rooms again, as the chat
// page does: rooms belong to a connection, and the server forgets them
// with it. In a room with history it asks for every message after the
// last one it printed, so it prints what it missed, each message once;
// when the server cannot replay them (it restarted, or no longer has them
// all) it prints "* [ROOM] some messages may be missing: ...", then the
// room's last 20 messages it has not printed. Any other close status
// means the server closed this client on purpose (1008: it could not keep
// up; 1007, 1009: it sent bad messages), so it exits with status 1 instead
// of trying again.
//
// Text from the network is printed with control characters escaped: a peer
// must not be able to send escape sequences to other people's terminals.
//
// It is written on github.com/wshub/wshub/client, the Go client of the
// protocol, which does the reconnecting, rejoining with recovery,
// deduplication and matching of answers to requests: what is left here is
// the terminal. A client in another language does what that package does;
// docs/PROTOCOL.md is the reference.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/client"
)

const (
	dialTimeout   = 10 * time.Second // the first connection, so that an unreachable server is reported
	answerTimeout = 10 * time.Second // how long a request waits for the server's answer

	// historyOnJoin is how many of a room's last messages a join asks
	// for: on /join, and after a reconnect when the missed ones are gone.
	historyOnJoin = 20
)

const help = `commands (in any case):
  /join ROOM     join ROOM and make it the current room
  /leave [ROOM]  leave ROOM (default: the current room)
  /rooms         list the joined rooms
  /who           list the members of the current room
  /help          show this list
  /quit          exit (as do Ctrl-D and Ctrl-C)
other lines are sent to the current room, shown in the prompt`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	prompt := isTerminal(os.Stdin) && isTerminal(os.Stdout)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, prompt)
	stop()
	os.Exit(code)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// presenceData is the data of a presence frame: a room's state
// ("presence": its members, the first 100 at most, and how many there are)
// or what changed ("presence_diff": who joined, who left).
type presenceData struct {
	Members []member `json:"members"`
	Total   int      `json:"total"`
	Joins   []member `json:"joins"`
	Leaves  []member `json:"leaves"`
}

// member is a member of a room with presence: a client ID, and what the
// server shows of it (examples/chat: {"name": "alice"}).
type member struct {
	ID   string          `json:"id"`
	Info json.RawMessage `json:"info"`
}

// name is the member's name from its info, else its ID.
func (m member) name() string {
	var info struct {
		Name string `json:"name"`
	}
	if json.Unmarshal(m.Info, &info) == nil && info.Name != "" {
		return info.Name
	}
	return m.ID
}

// roster is who is in a room with presence, by client ID, as the state
// the server sent on joining and the diffs since say. complete: the state
// listed every member, so the diffs are exact changes to it.
type roster struct {
	names    map[string]string
	complete bool
}

// chatData is the data of a chat message: the client sends only text, the
// server adds the sender's name.
type chatData struct {
	Name string `json:"name,omitempty"`
	Text string `json:"text"`
}

// run is the whole client: it parses args, connects, and relays between the
// connection and stdin/stdout until the user quits or ctx is done (exit
// status 0), the first connection fails or the server refuses or closes
// this client for good (1), or the arguments are wrong (2). With prompt, it
// shows the current room in a prompt, for a terminal.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, prompt bool) int {
	flags := flag.NewFlagSet("client", flag.ContinueOnError)
	flags.SetOutput(stderr)
	rawURL := flags.String("url", "ws://localhost:8080/ws", "WebSocket URL of the chat server")
	name := flags.String("name", "guest", "nickname")
	room := flags.String("room", "lobby", "room to join first (empty: none)")
	loginName := flags.String("login", "", "sign in as `NAME` at the server's /login and connect with its tokens (examples/chat -login); -name is not used")
	if err := flags.Parse(args); err != nil {
		return 2
	}

	s := &session{url: *rawURL, name: *name, out: stdout, errs: stderr, prompt: prompt,
		rosters: make(map[string]*roster), history: make(map[string]bool), signal: make(chan struct{}, 1),
		frames: make(chan *wshub.Message), done: make(chan struct{})}
	// FailFast: a line typed while offline is refused at once, with a hint.
	opts := &client.Options{FailFast: true, OnEvent: s.queue, OnFrame: s.frame}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	u := s.url
	var err error
	if *loginName != "" {
		s.name = *loginName
		var lg *login
		if lg, err = newLogin(s.url); err == nil {
			err = lg.signIn(dctx, s.name)
		}
		if err != nil {
			fmt.Fprintf(stderr, "client: cannot sign in at %s: %s\n", s.url, clean(err.Error()))
			return 1
		}
		opts.Token = lg.token
	} else {
		u, err = withName(s.url, s.name)
	}
	if err == nil {
		s.conn, err = client.Dial(dctx, u, opts)
	}
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "client: cannot connect to %s: %s\n", s.url, describe(err))
		return 1
	}
	s.connected()

	lines, stopLines := readLines(stdin)
	defer stopLines()
	s.mu.Lock()
	s.looping = true
	early := s.early
	s.early = nil
	s.mu.Unlock()
	for _, f := range early {
		s.receive(f)
	}
	if *room != "" {
		s.join(*room)
	}
	msgs := s.conn.Messages()
	for {
		var input <-chan string
		var answer <-chan error
		if s.op == nil {
			s.showPrompt()
			input = lines
		} else {
			answer = s.op.done
		}
		select {
		case <-ctx.Done():
			return s.quit()
		case <-s.signal:
			s.handleEvents()
		case m, ok := <-msgs:
			if !ok {
				return s.closed()
			}
			s.receive(m)
		case f := <-s.frames:
			// The messages that came before the frame are in msgs.
			s.drain(msgs)
			s.receive(f)
		case err := <-answer:
			// Show first what came before the answer: the state /who
			// asked for, the history of the room joined, one's own message.
			s.drain(msgs)
			s.answered(err)
		case line, ok := <-input:
			s.promptShown = false // Enter took the cursor to a new line
			if !ok || s.command(line) {
				return s.quit()
			}
		}
	}
}

// drain shows the messages waiting in msgs: those that came before what
// is shown next.
func (s *session) drain(msgs <-chan *wshub.Message) {
	for n := len(msgs); n > 0; n-- {
		if m, ok := <-msgs; ok {
			s.receive(m)
		}
	}
}

// frame is OnFrame: it hands a frame that is not a room message (presence,
// errors, the server's own types) to the loop, and returns once the loop
// has it, so that it is shown after the messages that came before it.
// Before the loop runs it keeps the frame for it: with a token, Dial
// returns only once the server acked the sign-in, after the frames it
// sent first (examples/chat's welcome), and no room is joined yet whose
// messages they could come after.
func (s *session) frame(m *wshub.Message) {
	s.mu.Lock()
	if !s.looping {
		s.early = append(s.early, m)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	select {
	case s.frames <- m:
	case <-s.done:
	}
}

// withName returns rawURL with name as the query parameter the server reads
// the nickname from.
func withName(rawURL, name string) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("name", name)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// readLines reads stdin line by line. Reading stdin blocks in a way nothing
// can interrupt, so its goroutine is the one run does not wait for: after
// stop it ends at the next line or EOF, or with the process.
func readLines(stdin io.Reader) (lines <-chan string, stop func()) {
	ch := make(chan string)
	done := make(chan struct{})
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case ch <- sc.Text():
			case <-done:
				return
			}
		}
	}()
	return ch, func() { close(done) }
}

// describe explains in one line why connecting failed.
func describe(err error) string {
	var re *client.RefusedError
	var netErr *net.OpError
	switch {
	case errors.As(err, &re) && re.StatusCode != http.StatusSwitchingProtocols:
		return refused(re)
	case errors.As(err, &netErr):
		return netErr.Error() // "dial tcp 127.0.0.1:8080: connect: connection refused", without the layers above
	}
	return clean(err.Error())
}

// refused explains in one line an HTTP answer that is not an upgrade: with
// the server's reason when it gave a short one in plain text (examples/chat
// refuses a missing name so), else with a hint about the URL. It never
// prints a web page.
func refused(re *client.RefusedError) string {
	reason := strings.TrimSpace(string(re.Body))
	mediaType, _, _ := mime.ParseMediaType(re.Header.Get("Content-Type"))
	status := fmt.Sprintf("%d %s", re.StatusCode, http.StatusText(re.StatusCode))
	switch {
	case re.StatusCode >= 400 && re.StatusCode != http.StatusNotFound &&
		mediaType == "text/plain" && reason != "" && len(reason) <= 200 && !strings.Contains(reason, "\n"):
		return status + ": " + clean(reason)
	case mediaType == "text/html":
		return status + ": the server sent a web page, not a WebSocket: check -url (e.g. ws://localhost:8080/ws)"
	}
	return status + ": no WebSocket endpoint there: check -url (e.g. ws://localhost:8080/ws)"
}

// session is the client's state: its connection, its rooms, and what the
// terminal shows.
type session struct {
	url, name   string
	out, errs   io.Writer // stdout, stderr
	prompt      bool
	promptShown bool // the prompt is the last thing on the terminal

	conn    *client.Conn
	online  bool               // as the events handled so far say
	rooms   []string           // joined rooms, least recently current first: the last is current
	rosters map[string]*roster // of the joined rooms with presence
	history map[string]bool    // the joined rooms with history
	op      *op                // the request awaiting its answer, if any

	mu      sync.Mutex       // guards events, early and looping, which OnEvent and OnFrame use
	events  []client.Event   // not handled yet
	early   []*wshub.Message // the frames that came before the loop ran
	looping bool             // the loop takes frames
	signal  chan struct{}    // there are events

	frames chan *wshub.Message // from OnFrame
	done   chan struct{}       // closed when run returns
}

// op is a request awaiting its answer.
type op struct {
	kind, room string
	done       chan error        // its outcome
	joined     client.JoinResult // a join's, once done
	held       []*wshub.Message  // a join's: the room's messages, shown after "* joined"
	state      *presenceData     // /who's: the room's state, which comes before the ack
}

// start runs the request o, done by f, in the background: the session
// shows what arrives meanwhile and reads no line until it is answered.
func (s *session) start(o *op, f func(ctx context.Context) error) {
	o.done = make(chan error, 1)
	s.op = o
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), answerTimeout)
		defer cancel()
		o.done <- f(ctx)
	}()
}

func (s *session) join(room string) {
	o := &op{kind: "join", room: room}
	s.start(o, func(ctx context.Context) (err error) {
		o.joined, err = s.conn.Join(ctx, room, &client.JoinOptions{History: historyOnJoin})
		return err
	})
}

// queue is OnEvent: it must not block, so the loop handles the events.
func (s *session) queue(e client.Event) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// handleEvents handles the events queued. It runs before each message is
// shown, so that a rejoin is shown before the messages it recovered.
func (s *session) handleEvents() {
	s.mu.Lock()
	events := s.events
	s.events = nil
	s.mu.Unlock()
	for _, e := range events {
		switch {
		case errors.Is(e.Err, client.ErrNotRenewed):
			// The server closes with 4001 when the sign-in ends, and the
			// client comes back with a new token.
			s.println(s.out, "! "+clean(e.Err.Error()))
		case e.Room != "": // a rejoin, or the server took the client out of the room
			s.rejoined(e)
		case e.State == client.Rejoining || e.State == client.Online:
			s.connected()
		case e.State == client.Offline:
			s.offline(e)
		}
	}
}

func (s *session) connected() {
	if !s.online {
		s.online = true
		s.println(s.out, fmt.Sprintf("* connected to %s as %s", s.url, s.name))
	}
}

// offline says why the client is offline and when it tries again.
func (s *session) offline(e client.Event) {
	why := "cannot reconnect: " + describe(e.Err)
	if s.online {
		s.online = false
		clear(s.rosters) // the next connection gets each room's state again
		var ce websocket.CloseError
		if errors.As(e.Err, &ce) {
			why = fmt.Sprintf("disconnected: %d %s", int(ce.Code), closeReason(ce))
		} else {
			why = "connection lost: " + e.Err.Error()
		}
	}
	s.println(s.out, fmt.Sprintf("* %s; reconnecting in %.1fs", why, e.Retry.Seconds()))
}

// rejoined shows the outcome of a room's rejoin after a reconnection.
func (s *session) rejoined(e client.Event) {
	if !slices.Contains(s.rooms, e.Room) {
		return // left meanwhile
	}
	if e.Err != nil {
		s.forget(e.Room)
		s.println(s.out, fmt.Sprintf("! [%s] %s", clean(e.Room), clean(e.Err.Error())))
		return
	}
	s.println(s.out, "* joined "+clean(e.Room))
	if !e.Recovered && s.history[e.Room] {
		s.println(s.out, "* ["+clean(e.Room)+"] some messages may be missing: the server could not replay what was sent while this client was away")
	}
}

// closed ends the session once the connection is closed for good: the
// server closed this client, or refused it when it came back.
func (s *session) closed() int {
	s.handleEvents()
	if s.op != nil {
		<-s.op.done // ends: the connection is closed
	}
	err := s.conn.Err()
	var re *client.RefusedError
	var ce websocket.CloseError
	switch {
	case errors.Is(err, client.ErrClosed):
		return 0
	case errors.Is(err, client.ErrSignedOut):
		why := "the session has ended"
		if errors.As(err, &ce) {
			why = fmt.Sprintf("%d %s", int(ce.Code), closeReason(ce))
		}
		s.println(s.errs, "client: signed out: "+why)
	case errors.As(err, &re):
		s.println(s.errs, fmt.Sprintf("client: cannot reconnect to %s: %s", s.url, describe(err)))
	case errors.As(err, &ce):
		s.println(s.errs, fmt.Sprintf("client: server closed the connection: %d %s", int(ce.Code), closeReason(ce)))
	default:
		s.println(s.errs, "client: connection ended: "+clean(err.Error()))
	}
	return 1
}

func closeReason(ce websocket.CloseError) string {
	if ce.Reason != "" {
		return clean(ce.Reason)
	}
	return strings.TrimPrefix(ce.Code.String(), "Status")
}

// quit closes the connection normally (status 1000) and ends the session.
func (s *session) quit() int {
	close(s.done) // a frame on its way is not waited for
	s.conn.Close()
	if s.op != nil {
		<-s.op.done
	}
	return 0
}

// current is the room typed lines go to, or "".
func (s *session) current() string {
	if len(s.rooms) == 0 {
		return ""
	}
	return s.rooms[len(s.rooms)-1]
}

// forget drops room; the room current before it becomes current again.
func (s *session) forget(room string) {
	s.rooms = slices.DeleteFunc(s.rooms, func(r string) bool { return r == room })
	delete(s.rosters, room)
	delete(s.history, room)
}

// command handles one line of input. It reports whether the user quits.
func (s *session) command(line string) (quit bool) {
	line = strings.TrimSpace(line)
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch {
	case line == "":
	case !strings.HasPrefix(line, "/"):
		room := s.current()
		if room == "" {
			s.println(s.errs, "not in a room: /join ROOM first")
			break
		}
		// Sent without waiting for the ack, as a chat does: a refusal
		// comes as an error frame of the room.
		s.start(&op{kind: "message", room: room}, func(ctx context.Context) error {
			return s.conn.Send(ctx, &wshub.Message{Type: wshub.TypePublish, Room: room, Data: chatData{Name: s.name, Text: line}})
		})
	case strings.EqualFold(cmd, "/quit"):
		return true
	case strings.EqualFold(cmd, "/help"):
		s.println(s.out, help)
	case strings.EqualFold(cmd, "/rooms"):
		s.listRooms()
	case strings.EqualFold(cmd, "/who"):
		room := s.current()
		if room == "" {
			s.println(s.errs, "not in a room")
			break
		}
		if s.rosters[room] == nil && s.online {
			// A room with presence sends its members before the join's
			// answer: this one has none.
			s.println(s.out, "* "+clean(room)+" has no presence: the server does not say who is in it")
			break
		}
		s.start(&op{kind: "/who", room: room}, func(ctx context.Context) error {
			_, err := s.conn.Request(ctx, &wshub.Message{Type: "presence", Room: room})
			return err
		})
	case strings.EqualFold(cmd, "/join"):
		if arg == "" {
			s.println(s.errs, "usage: /join ROOM")
			break
		}
		s.join(arg)
	case strings.EqualFold(cmd, "/leave"):
		if arg == "" {
			arg = s.current()
		}
		if arg == "" {
			s.println(s.errs, "not in a room")
			break
		}
		s.start(&op{kind: "leave", room: arg}, func(ctx context.Context) error { return s.conn.Leave(ctx, arg) })
	default:
		s.println(s.errs, "unknown command "+clean(cmd)+" (/help lists the commands)")
	}
	return false
}

func (s *session) listRooms() {
	if len(s.rooms) == 0 {
		s.println(s.out, "* not in a room")
		return
	}
	names := make([]string, len(s.rooms))
	for i, r := range s.rooms {
		names[i] = clean(r)
	}
	s.println(s.out, "* rooms: "+strings.Join(names, ", ")+"; typing to "+names[len(names)-1])
}

// answered shows the outcome of the request in flight, and updates the
// rooms as the server says.
func (s *session) answered(err error) {
	o := s.op
	s.op = nil
	room := clean(o.room)
	what := o.kind + " " + room // in "no answer from the server to ..."
	if o.kind != "join" && o.kind != "leave" {
		what = o.kind
	}
	var se *client.ServerError
	switch {
	case err == nil && o.kind == "join":
		s.rooms = slices.DeleteFunc(s.rooms, func(r string) bool { return r == o.room })
		s.rooms = append(s.rooms, o.room) // the current room
		s.history[o.room] = o.joined.Epoch != ""
		s.println(s.out, "* joined "+room)
		for _, m := range o.held {
			s.show(m)
		}
	case err == nil && o.kind == "/who":
		s.who(o)
	case o.kind == "leave" && (err == nil || errors.Is(err, client.ErrOffline) || errors.Is(err, client.ErrConnectionLost)):
		s.forget(o.room) // and the server does not have it, or forgot it with the connection
		s.println(s.out, "* left "+room)
	case err == nil, errors.Is(err, client.ErrClosed):
	case o.kind == "message" && !errors.Is(err, client.ErrOffline) && !errors.Is(err, context.DeadlineExceeded):
		// The write failed: the connection is lost, which its event says.
	case errors.As(err, &se):
		if o.kind == "leave" {
			s.forget(o.room)
		}
		s.println(s.out, fmt.Sprintf("! [%s] %s", room, clean(se.Text)))
	case errors.Is(err, client.ErrOffline):
		s.println(s.errs, "not connected, "+o.kind+" not sent: reconnecting")
	case errors.Is(err, client.ErrConnectionLost):
		s.println(s.errs, "no answer from the server to "+what+": connection lost")
	case errors.Is(err, context.DeadlineExceeded) && o.kind == "message":
		s.println(s.errs, "message not sent: the connection is stuck")
	case errors.Is(err, context.DeadlineExceeded):
		if o.kind == "leave" {
			s.forget(o.room) // the client will not join it again
		}
		s.println(s.errs, "no answer from the server to "+what)
	default:
		s.println(s.errs, clean(what+": "+err.Error()))
	}
}

// who lists the members of the room, from the state that came before the
// ack of o.
func (s *session) who(o *op) {
	if o.state == nil {
		s.println(s.errs, "no member list from the server for "+clean(o.room))
		return
	}
	names := make([]string, len(o.state.Members))
	for i, m := range o.state.Members {
		names[i] = clean(m.name())
	}
	slices.Sort(names) // the server sorts by client ID
	head := fmt.Sprintf("* %d in %s", o.state.Total, clean(o.room))
	if o.state.Total > len(names) {
		head += fmt.Sprintf(", %d shown", len(names))
	}
	s.println(s.out, head+": "+strings.Join(names, ", "))
}

// receive takes what the server sent, after the events that came before.
// The messages of a room being joined wait for the answer, to follow
// "* joined".
func (s *session) receive(m *wshub.Message) {
	s.handleEvents()
	if o := s.op; o != nil && o.kind == "join" && m.Type == wshub.TypeMessage && m.Room == o.room {
		o.held = append(o.held, m)
		return
	}
	s.show(m)
}

// show prints one message from the server.
func (s *session) show(m *wshub.Message) {
	switch m.Type {
	case "presence":
		state := s.setRoster(m)
		if o := s.op; o != nil && o.kind == "/who" && o.room == m.Room {
			o.state = state
		}
		return
	case "presence_diff":
		s.applyDiff(m)
		return
	case wshub.TypeMessage:
		if m.Epoch != "" { // the room's history started over: its seqs too
			s.println(s.out, fmt.Sprintf("* [%s] some messages may be missing: the server's history of this room started over", clean(m.Room)))
		}
	}
	if line := format(m, s.memberName); line != "" {
		s.println(s.out, line)
	}
}

// memberName is the name a room with presence shows for the client id,
// or "".
func (s *session) memberName(room, id string) string {
	if r := s.rosters[room]; r != nil {
		return r.names[id]
	}
	return ""
}

// setRoster takes a room's state: who is in it now. It replaces what the
// client knew, after a reconnect too, and says nothing: only the diffs
// that follow are news. It returns the state, nil if undecodable.
func (s *session) setRoster(m *wshub.Message) *presenceData {
	var d presenceData
	if json.Unmarshal(rawData(m), &d) != nil {
		return nil
	}
	r := &roster{names: make(map[string]string, len(d.Members)), complete: d.Total <= len(d.Members)}
	for _, p := range d.Members {
		r.names[p.ID] = p.name()
	}
	s.rosters[m.Room] = r
	return &d
}

// applyDiff takes who joined and left a room, as sets: a diff may repeat
// what the state said (the client's own join among it), and only real
// changes are printed.
func (s *session) applyDiff(m *wshub.Message) {
	r := s.rosters[m.Room]
	var d presenceData
	if r == nil || json.Unmarshal(rawData(m), &d) != nil {
		return
	}
	for _, p := range d.Joins {
		if _, ok := r.names[p.ID]; ok {
			continue
		}
		r.names[p.ID] = p.name()
		if r.complete {
			s.println(s.out, fmt.Sprintf("* %s joined %s", clean(p.name()), clean(m.Room)))
		}
	}
	for _, p := range d.Leaves {
		name, ok := r.names[p.ID]
		if !ok {
			continue
		}
		delete(r.names, p.ID)
		if r.complete {
			s.println(s.out, fmt.Sprintf("* %s left %s", clean(name), clean(m.Room)))
		}
	}
}

// println writes a line to w (stdout or stderr, which share the terminal),
// erasing the prompt first if it is shown.
func (s *session) println(w io.Writer, line string) {
	if s.prompt {
		io.WriteString(w, "\r\x1b[K")
		s.promptShown = false
	}
	fmt.Fprintln(w, line)
}

// showPrompt shows where typed lines go, unless it is shown already.
func (s *session) showPrompt() {
	if !s.prompt || s.promptShown {
		return
	}
	p := clean(s.current())
	if p == "" {
		p = "(no room)"
	}
	if !s.online {
		p += " (offline)"
	}
	fmt.Fprint(s.out, p+"> ")
	s.promptShown = true
}

// rawData is a message's data as it came.
func rawData(m *wshub.Message) json.RawMessage {
	b, _ := m.Data.(json.RawMessage)
	return b
}

// format renders one message for the terminal, or returns "" for one not
// worth showing; one of a type this client does not know is shown as
// JSON. nameOf, if not nil, names a room's member by its client ID ("" if
// unknown). Everything from the network goes through clean.
func format(m *wshub.Message, nameOf func(room, id string) string) string {
	switch m.Type {
	case wshub.TypeMessage:
		sender, text := chatLine(m, nameOf)
		if m.Room == "" {
			return fmt.Sprintf("%s: %s", clean(sender), clean(text))
		}
		return fmt.Sprintf("[%s] %s: %s", clean(m.Room), clean(sender), clean(text))
	case wshub.TypeAck:
		return "* ok " + clean(m.ID) // answering a request that timed out
	case wshub.TypeError:
		if m.Room != "" {
			return fmt.Sprintf("! [%s] %s", clean(m.Room), clean(m.Error))
		}
		return "! " + clean(m.Error)
	case "welcome":
		return "" // examples/chat's greeting; the client knows who it is
	case "presence", "presence_diff":
		return "" // kept by the session, and printed as join and leave lines
	}
	b, _ := json.Marshal(m)
	return clean(string(b))
}

// chatLine returns who sent a message and what it says: the name in its
// data (examples/chat stamps the sender's), else the sender's name in the
// room's presence (nameOf), else its client ID, else "(server)" for a
// message the server sent itself; the text, else the data as it came.
func chatLine(m *wshub.Message, nameOf func(room, id string) string) (sender, text string) {
	raw := rawData(m)
	var d chatData
	if json.Unmarshal(raw, &d) != nil || d.Text == "" {
		d = chatData{Text: string(raw)}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			d.Text = s // a bare string, as the Quick start's time or examples/quickstart's /announce
		}
	}
	switch {
	case d.Name != "":
		return d.Name, d.Text
	case m.From == "":
		return "(server)", d.Text
	case nameOf != nil:
		if name := nameOf(m.Room, m.From); name != "" {
			return name, d.Text
		}
	}
	return m.From, d.Text
}

// clean makes text from the network safe to print: control characters,
// among them ESC, which starts the terminal's escape sequences, and the
// Unicode controls that reorder text are shown escaped as in Go ("\x1b");
// invalid UTF-8 becomes U+FFFD.
func clean(s string) string {
	if !strings.ContainsFunc(s, unprintable) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s { // invalid bytes come as U+FFFD
		if unprintable(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func unprintable(r rune) bool {
	return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
}
