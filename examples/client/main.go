// Client is a terminal chat client for examples/chat.
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
// A /join or /leave waits for the server's answer before the next line is
// read, so the rooms the client shows are the rooms the server has it in: a
// refused join changes nothing. In a room with history (examples/chat's
// rooms have it), /join prints the room's last 20 messages after
// "* joined ROOM".
//
// In a room with presence (examples/chat's rooms have it), /who asks the
// server who is in the current room and prints "* 2 in lobby: alice, bob",
// and the client prints "* carol joined lobby" and "* carol left lobby" as
// people come and go (by client ID: a user with two connections comes
// once). It prints neither for the members already there when it joins,
// nor for itself, nor in a room of more members than the server lists
// (100), where they would drown the conversation.
//
// When the server goes away (close status 1001), the connection is lost
// (1006) or a room log lost messages (1012), the client reconnects with exponential backoff and jitter and
// joins its rooms again, as the chat page does: rooms belong to a
// connection, and the server forgets them with it. In a room with history
// it asks for every message after the last one it printed, so it prints
// what it missed, each message once; when the server cannot replay them
// (it restarted, or no longer has them all) it prints
// "* [ROOM] some messages may be missing: ...", then the room's last 20
// messages it has not printed. Any other close status
// means the server closed this client on purpose (1008: it could not keep
// up; 1007, 1009: it sent bad messages), so it exits with status 1 instead
// of trying again.
//
// Text from the network is printed with control characters escaped: a peer
// must not be able to send escape sequences to other people's terminals.
//
// It imports nothing from wshub on purpose: it shows everything a client in
// any language has to do, which is to dial a WebSocket and exchange the JSON
// objects of wshub's protocol.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/coder/websocket"
)

const (
	dialTimeout   = 10 * time.Second // connecting, so that an unreachable server is reported
	writeTimeout  = 10 * time.Second // a server that stops reading is a lost connection
	answerTimeout = 10 * time.Second // how long /join, /leave and /who wait for the server's answer

	// historyOnJoin is how many of a room's last messages a join asks
	// for: on /join, and after a reconnect when the missed ones are gone.
	historyOnJoin = 20

	// Reconnecting waits firstRetry, then twice as long after each failure
	// up to maxRetry, each delay ±25 % at random so that the clients of a
	// restarted server do not all come back at the same instant.
	firstRetry = 500 * time.Millisecond
	maxRetry   = 15 * time.Second
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

// message is one protocol message, in either direction. The fields after
// Error are those of rooms with history: a room message's seq; in a join,
// how many recent messages to replay, or the epoch and the last seq seen to
// replay what came after; in a join's ack, the room's epoch and latest seq,
// and whether what came after since was replayed.
type message struct {
	Type      string          `json:"type"`
	ID        string          `json:"id,omitempty"`
	Room      string          `json:"room,omitempty"`
	From      string          `json:"from,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Error     string          `json:"error,omitempty"`
	Seq       uint64          `json:"seq,omitempty"`
	History   int             `json:"history,omitempty"`
	Epoch     string          `json:"epoch,omitempty"`
	Since     *uint64         `json:"since,omitempty"` // 0 is a valid since
	Recovered *bool           `json:"recovered,omitempty"`
}

// position is where a room's history stood for this client: its epoch,
// and the seq of the last message printed, or of the join's ack if
// higher. An epoch names one run of seqs: in another epoch they start over.
type position struct {
	epoch string
	seq   uint64
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
	if err := flags.Parse(args); err != nil {
		return 2
	}

	s := &session{url: *rawURL, name: *name, out: stdout, errs: stderr, prompt: prompt, seen: make(map[string]*position), rosters: make(map[string]*roster)}
	ws, err := dial(ctx, s.url, s.name)
	if err != nil {
		fmt.Fprintf(stderr, "client: cannot connect to %s: %v\n", s.url, err)
		return 1
	}
	s.connected(ws)

	lines, stopLines := readLines(stdin)
	defer stopLines()

	if *room != "" {
		if code, stop := s.request(ctx, "join", *room); stop {
			return code
		}
	}
	for {
		s.showPrompt()
		select {
		case <-ctx.Done():
			return s.quit()
		case b, ok := <-s.frames():
			if !ok {
				if code, stop := s.lost(); stop {
					return code
				}
				continue
			}
			s.show(b)
		case <-s.retryTimer():
			if code, stop := s.reconnect(ctx); stop {
				return code
			}
		case line, ok := <-lines:
			s.promptShown = false // Enter took the cursor to a new line
			if !ok {
				return s.quit()
			}
			if code, stop := s.command(ctx, line); stop {
				return code
			}
		}
	}
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

// refusedError is an HTTP answer other than a WebSocket upgrade.
type refusedError struct {
	status int
	msg    string // one line, safe to print
}

func (e *refusedError) Error() string { return e.msg }

// dial connects to rawURL with name as the query parameter the server reads
// the nickname from.
func dial(ctx context.Context, rawURL, name string) (*websocket.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("name", name)
	u.RawQuery = q.Encode()

	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, u.String(), nil)
	if err != nil && resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		return nil, refused(resp)
	}
	var netErr *net.OpError
	if errors.As(err, &netErr) {
		return nil, netErr // "dial tcp 127.0.0.1:8080: connect: connection refused", without the layers above
	}
	return conn, err
}

// refused explains in one line an HTTP answer that is not an upgrade: with
// the server's reason when it gave a short one in plain text (examples/chat
// refuses a missing name so), else with a hint about the URL. It never
// prints a web page.
func refused(resp *http.Response) error {
	body, _ := io.ReadAll(resp.Body) // coder/websocket keeps at most 1 KiB of it
	reason := strings.TrimSpace(string(body))
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	status := clean(resp.Status)
	switch {
	case resp.StatusCode >= 400 && resp.StatusCode != http.StatusNotFound &&
		mediaType == "text/plain" && reason != "" && len(reason) <= 200 && !strings.Contains(reason, "\n"):
		return &refusedError{resp.StatusCode, status + ": " + clean(reason)}
	case mediaType == "text/html":
		return &refusedError{resp.StatusCode, status + ": the server sent a web page, not a WebSocket: check -url (e.g. ws://localhost:8080/ws)"}
	}
	return &refusedError{resp.StatusCode, status + ": no WebSocket endpoint there: check -url (e.g. ws://localhost:8080/ws)"}
}

// conn is one connection to the server and the goroutine that reads it.
type conn struct {
	ws      *websocket.Conn
	frames  chan []byte   // what the server sends; closed when the connection ends
	err     error         // why it ended; set before frames is closed
	closing chan struct{} // closed when the session closes the connection
}

func newConn(ws *websocket.Conn) *conn {
	c := &conn{ws: ws, frames: make(chan []byte, 16), closing: make(chan struct{})}
	go c.read()
	return c
}

// read passes on what the server sends until the connection ends. It does
// not read with a context: canceling a read cuts the connection at once,
// while Ctrl-C should first say goodbye with status 1000. Once the session
// is closing, it drops what it reads, so that the close handshake, which
// needs a reader, never waits for the session.
func (c *conn) read() {
	defer close(c.frames)
	for {
		_, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.err = err
			return
		}
		select {
		case c.frames <- b:
		case <-c.closing:
		}
	}
}

// close says goodbye (status 1000) and waits for the reader, which gets
// the server's answering close frame.
func (c *conn) close() {
	close(c.closing)
	c.ws.Close(websocket.StatusNormalClosure, "bye")
	for range c.frames {
	}
}

// session is the client's state: its connection, if any, and its rooms.
type session struct {
	url, name   string
	out, errs   io.Writer // stdout, stderr
	prompt      bool
	promptShown bool // the prompt is the last thing on the terminal

	conn    *conn                // nil while disconnected
	rooms   []string             // joined rooms, least recently current first: the last is current
	seen    map[string]*position // of the joined rooms with history
	rosters map[string]*roster   // of the joined rooms with presence
	nextID  int                  // of the last request
	attempt int                  // reconnections tried since the last success
	retry   *time.Timer          // while disconnected: when to dial again
}

// current is the room typed lines go to, or "".
func (s *session) current() string {
	if len(s.rooms) == 0 {
		return ""
	}
	return s.rooms[len(s.rooms)-1]
}

// enter makes room the current room.
func (s *session) enter(room string) {
	s.drop(room)
	s.rooms = append(s.rooms, room)
}

// drop forgets room; the room current before it becomes current again.
func (s *session) drop(room string) {
	s.rooms = slices.DeleteFunc(s.rooms, func(r string) bool { return r == room })
}

func (s *session) frames() <-chan []byte {
	if s.conn == nil {
		return nil
	}
	return s.conn.frames
}

func (s *session) retryTimer() <-chan time.Time {
	if s.retry == nil {
		return nil
	}
	return s.retry.C
}

func (s *session) connected(ws *websocket.Conn) {
	s.conn = newConn(ws)
	s.attempt = 0
	s.println(s.out, fmt.Sprintf("* connected to %s as %s", s.url, s.name))
}

// command handles one line of input. It reports whether the session ended,
// and with which exit status.
func (s *session) command(ctx context.Context, line string) (code int, stop bool) {
	line = strings.TrimSpace(line)
	if line == "" {
		return 0, false
	}
	if !strings.HasPrefix(line, "/") {
		return s.say(ctx, line)
	}
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch strings.ToLower(cmd) {
	case "/quit":
		return s.quit(), true
	case "/help":
		s.println(s.out, help)
	case "/rooms":
		s.listRooms()
	case "/who":
		return s.who(ctx)
	case "/join":
		if arg == "" {
			s.println(s.errs, "usage: /join ROOM")
			return 0, false
		}
		return s.request(ctx, "join", arg)
	case "/leave":
		if arg == "" {
			arg = s.current()
		}
		if arg == "" {
			s.println(s.errs, "not in a room")
			return 0, false
		}
		if s.conn == nil { // the server forgot the rooms with the connection
			s.drop(arg)
			delete(s.seen, arg)
			delete(s.rosters, arg)
			s.println(s.out, "* left "+clean(arg))
			return 0, false
		}
		return s.request(ctx, "leave", arg)
	default:
		s.println(s.errs, "unknown command "+clean(cmd)+" (/help lists the commands)")
	}
	return 0, false
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

// say publishes text to the current room.
func (s *session) say(ctx context.Context, text string) (code int, stop bool) {
	switch {
	case s.conn == nil:
		s.println(s.errs, "not connected, message not sent: reconnecting")
	case s.current() == "":
		s.println(s.errs, "not in a room: /join ROOM first")
	default:
		data, _ := json.Marshal(chatData{Text: text})
		if err := s.send(ctx, message{Type: "publish", Room: s.current(), Data: data}); err != nil {
			return s.sendFailed(ctx)
		}
	}
	return 0, false
}

// request sends a join or a leave and waits for the server's answer,
// showing what arrives meanwhile, so that the rooms change as the server
// says and the next line goes where the user expects. The messages of the
// room joined that arrive before the answer, its history among them, are
// held until the answer says which history they belong to.
func (s *session) request(ctx context.Context, typ, room string) (code int, stop bool) {
	if s.conn == nil {
		s.println(s.errs, "not connected, "+typ+" not sent: reconnecting")
		return 0, false
	}
	s.nextID++
	id := strconv.Itoa(s.nextID)
	req := message{Type: typ, Room: room, ID: id}
	if typ == "join" {
		req.History = historyOnJoin
		if p := s.seen[room]; p != nil {
			req.Epoch, req.Since = p.epoch, &p.seq
		}
	}
	if err := s.send(ctx, req); err != nil {
		return s.sendFailed(ctx)
	}
	var held []message
	answer, code, stop := s.await(ctx, id, typ+" "+room, func(m message) bool {
		if typ == "join" && m.Type == "message" && m.Room == room {
			held = append(held, m)
			return true
		}
		return false
	})
	if answer != nil {
		s.answered(typ, room, *answer, held)
	}
	return code, stop
}

// await waits for the server's answer (ack or error) to the request id,
// showing what arrives meanwhile unless take takes it. It returns the
// answer, or nil when none came: the session ended (stop), the connection
// was lost, or the server did not answer in time (which it says, naming
// the request what).
func (s *session) await(ctx context.Context, id, what string, take func(message) bool) (answer *message, code int, stop bool) {
	timer := time.NewTimer(answerTimeout)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, s.quit(), true
		case <-timer.C:
			s.println(s.errs, "no answer from the server to "+clean(what))
			return nil, 0, false
		case b, ok := <-s.conn.frames:
			if !ok {
				code, stop := s.lost()
				return nil, code, stop
			}
			var m message
			err := json.Unmarshal(b, &m)
			switch {
			case err == nil && m.ID == id && (m.Type == "ack" || m.Type == "error"):
				return &m, 0, false
			case err == nil && take(m):
			default:
				s.show(b)
			}
		}
	}
}

// who asks the server who is in the current room, and lists them: the
// room's state, which the server sends before its ack.
func (s *session) who(ctx context.Context) (code int, stop bool) {
	room := s.current()
	switch {
	case room == "":
		s.println(s.errs, "not in a room")
		return 0, false
	case s.conn == nil:
		s.println(s.errs, "not connected, /who not sent: reconnecting")
		return 0, false
	}
	s.nextID++
	id := strconv.Itoa(s.nextID)
	if err := s.send(ctx, message{Type: "presence", Room: room, ID: id}); err != nil {
		return s.sendFailed(ctx)
	}
	var state *presenceData
	answer, code, stop := s.await(ctx, id, "/who", func(m message) bool {
		if m.Type != "presence" || m.Room != room {
			return false
		}
		state = s.setRoster(m)
		return true
	})
	switch {
	case answer == nil:
	case answer.Type == "error":
		if answer.Room == "" {
			answer.Room = room
		}
		s.println(s.out, format(*answer, nil))
	case state == nil:
		s.println(s.errs, "no member list from the server for "+clean(room))
	default:
		names := make([]string, len(state.Members))
		for i, m := range state.Members {
			names[i] = clean(m.name())
		}
		head := fmt.Sprintf("* %d in %s", state.Total, clean(room))
		if state.Total > len(names) {
			head += fmt.Sprintf(", %d shown", len(names))
		}
		s.println(s.out, head+": "+strings.Join(names, ", "))
	}
	return code, stop
}

// setRoster takes a room's state: who is in it now. It replaces what the
// client knew, after a reconnect too, and says nothing: only the diffs
// that follow are news. It returns the state, nil if undecodable.
func (s *session) setRoster(m message) *presenceData {
	var d presenceData
	if json.Unmarshal(m.Data, &d) != nil {
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
func (s *session) applyDiff(m message) {
	r := s.rosters[m.Room]
	var d presenceData
	if r == nil || json.Unmarshal(m.Data, &d) != nil {
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

// answered updates the rooms with the server's answer to a join or leave,
// and prints the messages of the room joined that were held meanwhile.
func (s *session) answered(typ, room string, m message, held []message) {
	if m.Type == "error" {
		// Whatever it was, the server now does not have us in the room.
		s.drop(room)
		delete(s.seen, room)
		delete(s.rosters, room)
		if m.Room == "" {
			m.Room = room
		}
		s.println(s.out, format(m, nil))
		return
	}
	if typ == "leave" {
		s.drop(room)
		delete(s.seen, room)
		delete(s.rosters, room)
		s.println(s.out, "* left "+clean(room))
		return
	}
	s.enter(room)
	s.println(s.out, "* joined "+clean(room))
	if m.Recovered != nil && !*m.Recovered {
		s.println(s.out, "* ["+clean(room)+"] some messages may be missing: the server could not replay what was sent while this client was away")
	}
	p := s.seen[room]
	if m.Epoch == "" { // a room without history
		delete(s.seen, room)
		p = nil
	} else if p == nil || p.epoch != m.Epoch {
		p = &position{epoch: m.Epoch}
		s.seen[room] = p
	}
	for _, h := range held {
		s.showOnce(h, p)
	}
	if p != nil {
		p.seq = max(p.seq, m.Seq) // nothing up to the ack's seq comes any more
	}
}

func (s *session) send(ctx context.Context, m message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	return s.conn.ws.Write(ctx, websocket.MessageText, b)
}

// sendFailed ends the connection after a failed write: on Ctrl-C, the
// session; otherwise it was lost.
func (s *session) sendFailed(ctx context.Context) (code int, stop bool) {
	if ctx.Err() != nil {
		return s.quit(), true
	}
	s.conn.ws.CloseNow()
	for range s.conn.frames { // what was still on the way is of no use now
	}
	return s.lost()
}

// quit closes the connection normally (status 1000) and ends the session.
func (s *session) quit() int {
	if s.conn != nil {
		s.conn.close()
		s.conn = nil
	}
	if s.retry != nil {
		s.retry.Stop()
	}
	return 0
}

// lost handles the end of the connection, which the reader reported by
// closing frames: after a server shutdown or a network failure it plans a
// reconnection; any other close status ends the session.
func (s *session) lost() (code int, stop bool) {
	c := s.conn
	s.conn = nil
	c.ws.CloseNow()  // frees it; the reader has ended already
	clear(s.rosters) // the next connection gets each room's state again
	var ce websocket.CloseError
	if !errors.As(c.err, &ce) {
		s.reconnectLater("connection lost: " + c.err.Error())
		return 0, false
	}
	why := fmt.Sprintf("%d %s", int(ce.Code), closeReason(ce))
	switch ce.Code {
	case websocket.StatusGoingAway, websocket.StatusAbnormalClosure, websocket.StatusServiceRestart:
	default:
		s.println(s.errs, "client: server closed the connection: "+why)
		return 1, true
	}
	s.reconnectLater("disconnected: " + why)
	return 0, false
}

func closeReason(ce websocket.CloseError) string {
	if ce.Reason != "" {
		return clean(ce.Reason)
	}
	return strings.TrimPrefix(ce.Code.String(), "Status")
}

// reconnectLater says why the client is offline and when it tries again.
func (s *session) reconnectLater(why string) {
	delay := min(firstRetry<<s.attempt, maxRetry)
	delay = time.Duration(float64(delay) * (0.75 + rand.Float64()/2))
	s.attempt = min(s.attempt+1, 10) // enough to reach maxRetry, and no overflow
	s.retry = time.NewTimer(delay)
	s.println(s.out, fmt.Sprintf("* %s; reconnecting in %.1fs", why, delay.Seconds()))
}

// reconnect dials again and joins the rooms the client was in, in the same
// order, so that the same room is current.
func (s *session) reconnect(ctx context.Context) (code int, stop bool) {
	s.retry = nil
	ws, err := dial(ctx, s.url, s.name)
	if err != nil {
		if ctx.Err() != nil {
			return s.quit(), true
		}
		var re *refusedError
		if errors.As(err, &re) && re.status < 500 && re.status != http.StatusTooManyRequests {
			// Trying again would get the same answer.
			s.println(s.errs, fmt.Sprintf("client: cannot reconnect to %s: %v", s.url, err))
			return 1, true
		}
		s.reconnectLater("cannot reconnect: " + err.Error())
		return 0, false
	}
	s.connected(ws)
	for _, room := range slices.Clone(s.rooms) {
		if code, stop := s.request(ctx, "join", room); stop || s.conn == nil {
			return code, stop // if lost again, the next connection joins what is left
		}
	}
	return 0, false
}

// show prints one frame from the server.
func (s *session) show(b []byte) {
	var m message
	if err := json.Unmarshal(b, &m); err != nil {
		s.println(s.out, "? "+clean(string(b)))
		return
	}
	switch m.Type {
	case "message":
		s.showOnce(m, s.seen[m.Room])
		return
	case "presence":
		s.setRoster(m)
		return
	case "presence_diff":
		s.applyDiff(m)
		return
	}
	if line := format(m, b); line != "" {
		s.println(s.out, line)
	}
}

// showOnce prints the room message m unless p, the position of m's room,
// says it was printed already; it then moves p to m. A message that carries
// another epoch starts a new history on the server: its seqs start over,
// and what was sent in between is lost to this client.
func (s *session) showOnce(m message, p *position) {
	if p != nil && m.Epoch != "" && p.epoch != "" && m.Epoch != p.epoch {
		p.epoch, p.seq = m.Epoch, m.Seq-1
		s.println(s.out, fmt.Sprintf("* [%s] some messages may be missing: the server's history of this room started over", clean(m.Room)))
	}
	if p != nil && m.Seq != 0 {
		if m.Seq <= p.seq {
			return
		}
		p.seq = m.Seq
	}
	s.println(s.out, format(m, nil))
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
	if s.conn == nil {
		p += " (offline)"
	}
	fmt.Fprint(s.out, p+"> ")
	s.promptShown = true
}

// format renders one message for the terminal, or returns "" for one not
// worth showing; raw is the frame, shown for types this client does not
// know. Everything from the network goes through clean.
func format(m message, raw []byte) string {
	switch m.Type {
	case "message":
		sender, text := chatLine(m)
		if m.Room == "" {
			return fmt.Sprintf("%s: %s", clean(sender), clean(text))
		}
		return fmt.Sprintf("[%s] %s: %s", clean(m.Room), clean(sender), clean(text))
	case "ack":
		return "* ok " + clean(m.ID)
	case "error":
		if m.Room != "" {
			return fmt.Sprintf("! [%s] %s", clean(m.Room), clean(m.Error))
		}
		return "! " + clean(m.Error)
	case "welcome":
		return "" // examples/chat's greeting; the client knows who it is
	case "presence", "presence_diff":
		return "" // kept by the session, and printed as join and leave lines
	}
	return clean(string(raw))
}

// chatLine returns who sent a message and what it says: the name the chat
// server stamped, else the sender's client ID, else "(server)" for a
// message the server sent itself; the text, else the data as it came.
func chatLine(m message) (sender, text string) {
	var d chatData
	if json.Unmarshal(m.Data, &d) != nil || d.Text == "" {
		d = chatData{Text: string(m.Data)}
		var s string
		if json.Unmarshal(m.Data, &s) == nil {
			d.Text = s // a bare string, as from the Quick start's /announce
		}
	}
	switch {
	case d.Name != "":
		return d.Name, d.Text
	case m.From != "":
		return m.From, d.Text
	}
	return "(server)", d.Text
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
