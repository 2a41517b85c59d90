package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

// msg is one server message as a client decodes it. Unknown fields are
// ignored, as the protocol says a client must.
type msg struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Room      string          `json:"room"`
	From      string          `json:"from"`
	Data      json.RawMessage `json:"data"`
	Error     string          `json:"error"`
	Seq       uint64          `json:"seq"`
	Epoch     string          `json:"epoch"`
	Recovered *bool           `json:"recovered"`
	TTLRaw    json.RawMessage `json:"ttl"`

	ttl int64 // TTLRaw of an auth or ack, checked: 0 when absent
	raw []byte
}

// String shows the message as it came, shortened.
func (m *msg) String() string {
	if m == nil {
		return "nothing"
	}
	return short(m.raw)
}

func short(b []byte) string {
	const max = 200
	if len(b) > max {
		return string(b[:max]) + fmt.Sprintf("… (%d bytes)", len(b))
	}
	return string(b)
}

// key names a room message by what every member sees of it alike.
func (m *msg) key() string {
	var data bytes.Buffer
	if json.Compact(&data, m.Data) != nil {
		data.Write(m.Data)
	}
	return m.From + "|" + data.String()
}

// frame is what the reader learned of one server frame.
type frame struct {
	size  int
	array bool
	msgs  int
}

// event is what the reader hands on: a message, a frame that breaks the
// protocol, or the end of the connection.
type event struct {
	m        *msg
	bad      error
	closed   bool
	closeErr error
}

// conn is one client connection. A goroutine reads it continuously (so
// that pings are answered, as the protocol asks of clients) and queues
// what it reads.
type conn struct {
	t     *T
	name  string // for messages: "client 2"
	ws    *websocket.Conn
	proto string
	batch bool

	mu     sync.Mutex
	q      []event
	frames []frame
	notify chan struct{}
	done   chan struct{}

	nextID int

	// expires says whether the last auth frame the check read gave the
	// sign-in a ttl. Only the check's goroutine uses it.
	expires bool
}

// dialURL returns the URL of connection n: the configured one, with {n}
// replaced and the ID parameter set to a value unique to the run.
func dialURL(cfg *Config, runID string, n int) (string, error) {
	ident := fmt.Sprintf("cf%s-%d", runID[:6], n)
	raw := strings.ReplaceAll(cfg.URL, "{n}", ident)
	if cfg.IDParam == "" {
		return raw, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set(cfg.IDParam, ident)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func (t *T) dialErr(protocols ...string) (*conn, error) {
	n := t.s.nextConn()
	u, err := dialURL(t.s.cfg, t.s.runID, n)
	if err != nil {
		return nil, err
	}
	ws, resp, err := websocket.Dial(t.ctx, u, &websocket.DialOptions{Subprotocols: protocols})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("dial: HTTP %s: %w", resp.Status, err)
		}
		return nil, fmt.Errorf("dial: %w", err)
	}
	ws.SetReadLimit(-1) // the suite reads whatever the server sends
	c := &conn{
		t: t, name: "client " + strconv.Itoa(n), ws: ws, proto: ws.Subprotocol(),
		batch:  ws.Subprotocol() == "wshub.json-batch",
		notify: make(chan struct{}, 1), done: make(chan struct{}),
	}
	t.conns = append(t.conns, c)
	go c.readLoop()
	return c, nil
}

// dial opens a connection offering protocols, or fails the check. Given
// -token, on a server that requires sign-in with the first frame, it
// signs in first, so that every check runs there as anywhere else.
func (t *T) dial(protocols ...string) *conn {
	c := t.dialRaw(protocols...)
	if t.s.cfg.Token != "" && t.firstFrame() {
		c.signIn(t.s.cfg.Token)
	}
	return c
}

// dialRaw opens a connection offering protocols and sends nothing on it,
// or fails the check.
func (t *T) dialRaw(protocols ...string) *conn {
	c, err := t.dialErr(protocols...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return c
}

func (c *conn) readLoop() {
	defer close(c.done)
	for {
		typ, b, err := c.ws.Read(context.Background())
		if err != nil {
			c.push(event{closed: true, closeErr: err})
			return
		}
		c.parse(typ, b)
	}
}

func (c *conn) push(evs ...event) {
	c.mu.Lock()
	c.q = append(c.q, evs...)
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// parse checks one frame against the negotiated codec and queues its
// messages.
func (c *conn) parse(typ websocket.MessageType, b []byte) {
	f := frame{size: len(b)}
	trimmed := bytes.TrimLeft(b, " \t\r\n")
	f.array = len(trimmed) > 0 && trimmed[0] == '['
	bad := func(format string, args ...any) {
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
		c.push(event{bad: fmt.Errorf("%s sent a frame that breaks the protocol (%s): %s",
			c.describe(), fmt.Sprintf(format, args...), short(b))})
	}
	if typ != websocket.MessageText {
		bad("a binary frame, the JSON codecs use text frames")
		return
	}
	var elems []json.RawMessage
	if c.batch {
		if !f.array {
			bad("not a JSON array, with wshub.json-batch")
			return
		}
		if err := json.Unmarshal(b, &elems); err != nil {
			bad("not a JSON array: %v", err)
			return
		}
		if len(elems) == 0 {
			bad("an empty array")
			return
		}
	} else {
		if f.array {
			bad("a JSON array, to a client that did not offer wshub.json-batch")
			return
		}
		elems = []json.RawMessage{b}
	}
	f.msgs = len(elems)
	var evs []event
	for _, e := range elems {
		m, err := decode(e)
		if err != nil {
			bad("%v", err)
			return
		}
		evs = append(evs, event{m: m})
	}
	c.mu.Lock()
	c.frames = append(c.frames, f)
	c.mu.Unlock()
	c.push(evs...)
}

// decode decodes one message, which must be a JSON object with a string
// type (and only that object: no second value after it).
func decode(b []byte) (*msg, error) {
	t := bytes.TrimSpace(b)
	if len(t) == 0 || t[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var m msg
	dec := json.NewDecoder(bytes.NewReader(t))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a message: %v", err)
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value in a frame")
	}
	var typ struct {
		Type *string `json:"type"`
	}
	if json.Unmarshal(t, &typ) != nil || typ.Type == nil || *typ.Type == "" {
		return nil, errors.New(`no string "type"`)
	}
	if m.TTLRaw != nil && (m.Type == "auth" || m.Type == "ack") {
		ttl, err := strconv.ParseInt(string(m.TTLRaw), 10, 64)
		if err != nil || ttl < 1 {
			return nil, fmt.Errorf("ttl %s: want an integer of milliseconds ≥ 1, or no ttl", m.TTLRaw)
		}
		m.ttl = ttl
	}
	m.raw = append([]byte(nil), t...)
	return &m, nil
}

func (c *conn) describe() string {
	if c.proto == "" {
		return c.name + " (no subprotocol)"
	}
	return c.name + " (" + c.proto + ")"
}

// next returns the next event, or fails the check when what does not come
// in time.
func (c *conn) next(what string) event {
	for {
		c.mu.Lock()
		if len(c.q) > 0 {
			ev := c.q[0]
			if !ev.closed { // the close stays, for every later read
				c.q = c.q[1:]
			}
			c.mu.Unlock()
			if ev.m != nil && ev.m.Type == "auth" {
				c.expires = ev.m.ttl > 0
			}
			return ev
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-c.t.ctx.Done():
			c.t.Fatalf("%s: timed out waiting for %s", c.name, what)
		}
	}
}

// read returns the next message, failing the check on a frame that breaks
// the protocol or on the end of the connection.
func (c *conn) read(what string) *msg {
	ev := c.next(what)
	switch {
	case ev.bad != nil:
		c.t.Fatalf("%v (waiting for %s)", ev.bad, what)
	case ev.closed:
		hint := ""
		if websocket.CloseStatus(ev.closeErr) == statusSignedOut && c.t.s.cfg.Token == "" {
			hint = " (a server that requires sign-in with the first frame needs -token)"
		}
		c.t.Fatalf("%s: connection closed (%s) while waiting for %s%s", c.name, closeText(ev.closeErr), what, hint)
	}
	return ev.m
}

// closeText describes how a connection ended.
func closeText(err error) string {
	if code := websocket.CloseStatus(err); code != -1 {
		return fmt.Sprintf("status %d", int(code))
	}
	return fmt.Sprintf("no close frame: %v", err)
}

// until reads messages until one matches, and returns it with the ones
// before it.
func (c *conn) until(what string, match func(*msg) bool) (*msg, []*msg) {
	var before []*msg
	for {
		m := c.read(what)
		if match(m) {
			return m, before
		}
		before = append(before, m)
	}
}

// send writes v as one JSON text frame.
func (c *conn) send(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatalf("encode: %v", err)
	}
	c.sendRaw(b)
}

func (c *conn) sendRaw(b []byte) {
	if err := c.write(b); err != nil {
		c.t.Fatalf("%v", err)
	}
}

// write writes b as one text frame, for a check that expects the server
// may have closed the connection already.
func (c *conn) write(b []byte) error {
	if err := c.ws.Write(c.t.ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("%s: write %s: %w", c.name, short(b), err)
	}
	return nil
}

// id returns a request ID new on this connection.
func (c *conn) id() string {
	c.nextID++
	return "c" + strconv.Itoa(c.nextID)
}

// req is a request: fields of a client message.
type req map[string]any

// start sends r with a new ID and returns the ID.
func (c *conn) start(r req) string {
	id := c.id()
	r["id"] = id
	c.send(r)
	return id
}

// answer reads until the ack or error of request id.
func (c *conn) answer(id, what string) (*msg, []*msg) {
	return c.until("the answer to "+what, func(m *msg) bool {
		return (m.Type == "ack" || m.Type == "error") && m.ID == id
	})
}

// request sends r and returns its answer and the messages before it.
func (c *conn) request(r req) (*msg, []*msg) {
	what := describeReq(r)
	return c.answer(c.start(r), what)
}

// ack sends r and fails the check unless it is acked.
func (c *conn) ack(r req) (*msg, []*msg) {
	what := describeReq(r)
	m, before := c.answer(c.start(r), what)
	if m.Type != "ack" {
		c.t.Fatalf("%s: %s got %s, want an ack", c.name, what, m)
	}
	return m, before
}

// refused sends r and fails the check unless it gets an error frame.
func (c *conn) refused(r req) *msg {
	what := describeReq(r)
	m, _ := c.answer(c.start(r), what)
	if m.Type != "error" {
		c.t.Fatalf("%s: %s got %s, want an error frame", c.name, what, m)
	}
	return m
}

// describeReq shows r for messages, without its token: the suite's
// output may end up in logs.
func describeReq(r req) string {
	if _, ok := r["token"]; ok {
		r = maps.Clone(r)
		r["token"] = "…"
	}
	b, _ := json.Marshal(r)
	return short(b)
}

func join(room string) req { return req{"type": "join", "room": room} }

func leave(room string) req { return req{"type": "leave", "room": room} }

func publish(room, text string) req {
	return req{"type": "publish", "room": room, "data": map[string]string{"text": text}}
}

// closed waits for the end of the connection, ignoring the messages
// before it, and returns its close status (-1 for none) and description.
func (c *conn) closed(what string) (websocket.StatusCode, string) {
	for {
		ev := c.next(what)
		if ev.closed {
			return websocket.CloseStatus(ev.closeErr), closeText(ev.closeErr)
		}
	}
}

// roomMsgs keeps the room messages of room among msgs.
func roomMsgs(msgs []*msg, room string) []*msg {
	var out []*msg
	for _, m := range msgs {
		if m.Type == "message" && m.Room == room {
			out = append(out, m)
		}
	}
	return out
}

// isMessage matches a room message of room.
func isMessage(room string) func(*msg) bool {
	return func(m *msg) bool { return m.Type == "message" && m.Room == room }
}

// framesSeen returns what the reader learned of the frames so far.
func (c *conn) framesSeen() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.frames...)
}
