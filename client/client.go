// Package client is a Go client of the wshub protocol (docs/PROTOCOL.md):
// it dials a hub, joins rooms, publishes and waits for the acks, and
// reconnects by itself, rejoining its rooms with recovery, so that an
// application sees every message of a room with history once, in order,
// or is told that some are missing.
//
//	c, err := client.Dial(ctx, "ws://localhost:8080/ws", nil)
//	if err != nil { … }
//	defer c.Close()
//	if _, err := c.Join(ctx, "lobby", &client.JoinOptions{History: 20}); err != nil { … }
//	go func() {
//		for m := range c.Messages() { … } // room messages only
//	}()
//	err = c.Publish(ctx, "lobby", map[string]string{"text": "hi"})
//
// Messages carries the rooms' messages and nothing else. The other frames
// a server sends (presence, error frames that answer no request, the
// application's own types) go to Options.OnFrame, and changes of the
// connection's state to Options.OnEvent.
//
// How the server names the client is up to its Options.Authenticate: a
// "?name=alice" in the URL, a cookie or a header in Options.Header mean
// something only if it reads them.
//
// With Options.Token the client signs in with a token instead, as the
// first frame of every connection (docs/PROTOCOL.md §11), and refreshes it
// before it expires, at a random point so that clients that connected
// together do not refresh together. When the server closes with 4001
// (token expired) it reconnects with a new token; when it closes with 4003
// (signed out) it stops, and Conn.Err wraps ErrSignedOut. A room joined
// with JoinOptions.Grant carries a grant token, renewed the same way, and
// a server that takes the client out of a room (a grant that expired) is
// reported as an Event with Left set; that room is not rejoined.
//
// It needs nothing beyond the wshub module's own dependencies.
package client

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// Errors of a Conn.
var (
	// ErrClosed is returned once Close was called, or the connection was
	// closed for good (see Conn.Err).
	ErrClosed = errors.New("client: closed")

	// ErrOffline is returned by a request made while the connection is
	// down, with Options.FailFast.
	ErrOffline = errors.New("client: offline")

	// ErrConnectionLost is returned by a request whose connection broke
	// before its answer came: it may or may not have been carried out.
	ErrConnectionLost = errors.New("client: connection lost before the answer")

	// ErrSignedOut ends a Conn that the server closed with 4003
	// (wshub.StatusSignedOut: a refused token, a ban, a sign-out), where a
	// new token of the same sign-in would not help: Conn.Err and the
	// Closed event's Err wrap it and the close error, whose Reason is the
	// server's. An error of Options.Token that wraps it ends the Conn too.
	ErrSignedOut = errors.New("client: signed out")

	// ErrNotRenewed is wrapped by the Err of an Event that reports a
	// failed renewal: of the sign-in (Event.Room is empty) or of the grant
	// of Event.Room. It wraps the cause too: the server's refusal (a
	// *ServerError) or the error of Options.Token or JoinOptions.Grant.
	ErrNotRenewed = errors.New("client: token not renewed")
)

// A ServerError is the server's error frame answering a request.
type ServerError struct {
	Room string
	Text string // the error frame's "error"
}

func (e *ServerError) Error() string { return e.Text }

// Options configure a Conn. A nil *Options and zero fields mean the
// documented defaults.
type Options struct {
	// Header is sent with every upgrade request (cookies, or a token for
	// a server's Authenticate).
	Header http.Header

	// Token, if set, returns a token for the server's
	// AuthenticateToken. It is called before every connection attempt,
	// Dial's included, and for every refresh, with a context that ends
	// with the attempt or the connection: the client never reuses a
	// token. Its token is the first frame of every connection, and
	// nothing else is sent before the server's answer; an error answer
	// (a server that takes no tokens) is not a failure. When the server
	// says that the sign-in expires, the client calls Token again and
	// refreshes it at a random point between 50 % and 90 % of the time
	// left, and, if that fails, once more halfway through what is then
	// left; failures are reported (ErrNotRenewed), and the server closes
	// with 4001 at the expiry, after which the client reconnects at once
	// with a new token. An error of Token before a connection is tried
	// again with backoff (Dial returns it), unless it wraps ErrSignedOut,
	// which ends the Conn. It must return once ctx ends: Close waits for
	// it. Default: nil, no token; the server's "auth" frames go to
	// OnFrame.
	Token func(ctx context.Context) (string, error)

	// NoBatch makes the client use wshub.json instead of wshub.json-batch:
	// one message per frame. Default: batching, which is cheaper for both.
	NoBatch bool

	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts: it starts at MinBackoff, doubles after each failure up to
	// MaxBackoff, and is varied by ±25 %. Defaults: 500 ms and 15 s. A
	// refusal with a Retry-After (a hub's 503: shutting down, full or
	// overloaded) waits at least what it says, plus up to a quarter more
	// at random, up to 5 minutes.
	MinBackoff, MaxBackoff time.Duration

	// NoReconnect makes the first loss of the connection final.
	NoReconnect bool

	// FailFast makes requests made while the connection is down fail with
	// ErrOffline instead of waiting for it (within their context). While
	// the rooms are being rejoined (Rejoining) they still wait: the
	// connection is up, and is Online after one round trip per room.
	FailFast bool

	// OnFrame, if set, gets every frame that is neither a room message
	// nor the answer to a request: presence states and diffs, error
	// frames that answer no request (a refused publish sent with Send),
	// and messages of the application's own types. Without it they are
	// dropped. It runs on the client's read goroutine, in the order the
	// frames came, and nothing is read while it runs: the room messages
	// that came before the frame are already in Messages' buffer, so a
	// reader that takes len(Messages()) of them before it handles the
	// frame keeps the server's order. It must return: Close waits for it.
	OnFrame func(*wshub.Message)

	// Buffer is the capacity of the Messages channel. The client stops
	// reading from the server while it is full, so that the server's flow
	// control slows the room down rather than the client dropping
	// anything. Default: 256.
	Buffer int

	// OnEvent, if set, is called with every change of the connection's
	// state and with the outcome of each room's rejoin. It runs on the
	// client's goroutines, one call at a time: it must not block.
	//
	// A room's rejoin is reported before the messages that follow its ack
	// (those recovered among them) are passed to Messages. So an
	// application that queues the events and, before handling each
	// message, handles the events queued so far, shows "rejoined" (or
	// "some messages may be missing") before what was recovered.
	OnEvent func(Event)
}

// State is the state of a Conn's connection.
type State int

// States of a Conn.
const (
	Connecting State = iota // dialing again
	Online                  // connected, rooms rejoined
	Offline                 // lost; waiting Event.Retry before the next attempt
	Closed                  // for good: see Conn.Err
	Rejoining               // connected again, rejoining the rooms
)

func (s State) String() string {
	return [...]string{"connecting", "online", "offline", "closed", "rejoining"}[s]
}

// An Event reports a change of state, a rejoin, a room the server took
// the client out of (Left), or a renewal that failed (Err wraps
// ErrNotRenewed). The last two do not change the state: State is the
// current one.
type Event struct {
	State State
	Err   error         // why it went offline or closed; a rejoin's, a leave's or a renewal's failure
	Retry time.Duration // Offline: the wait before the next attempt; 0 for the first after a 4001 (token expired)

	// Room and Recovered report a room rejoined after a reconnection
	// (State is Rejoining): Recovered is false when the server could not
	// replay everything the client missed (see docs/PROTOCOL.md, history;
	// always so in a room without history). When the server refused the
	// rejoin, Err is its *ServerError, and the room is no longer joined.
	// Rooms are rejoined in the order they were first joined.
	Room      string
	Recovered bool

	// Left reports that the server took the client out of Room (a grant
	// that expired, a refresh that no longer allows the room): Err is its
	// *ServerError, and the room is no longer joined, nor rejoined after
	// a reconnection.
	Left bool
}

// JoinResult is what the server says when a room is joined.
type JoinResult struct {
	Epoch string // of the room's history; "" without history
	Seq   uint64 // the room's latest seq when joined
}

// Conn is a connection to a hub that reconnects by itself. Its methods
// are safe for concurrent use.
type Conn struct {
	url  string
	opts Options
	msgs chan *wshub.Message
	done chan struct{} // closed when run ends

	ctx    context.Context // ends with Close
	cancel context.CancelFunc

	evMu sync.Mutex // held while OnEvent runs: one event at a time, in order

	mu      sync.Mutex
	reading *websocket.Conn // the connection run reads; Close closes it
	sess    *session        // reading's
	wasUp   bool            // was ever online: until then a loss is Dial's error, not retried
	ws      *websocket.Conn // current connection, usable for requests; nil while down
	changed chan struct{}   // closed, and replaced, when state changes
	state   State
	err     error
	rooms   map[string]*room
	pending map[string]chan *wshub.Message // request id → its answer
	joins   map[string]*joining            // join request id → the join
	nextID  uint64
	joined  uint64 // rooms joined so far: the order of the rejoins
}

// joining is a join awaiting its ack.
type joining struct {
	room    string
	history int
	grant   func(context.Context) (string, error)
	rejoin  bool
	renew   bool // a grant's renewal: the room is joined already
}

// room is a joined room: where the client stands in its history.
type room struct {
	order     uint64 // rooms are rejoined in this order: the order they were joined
	history   int    // the join's history request, kept as the fallback of a recovery
	epoch     string
	seq       uint64
	rejoining bool             // its rejoin awaits the ack: messages wait in held
	held      []*wshub.Message // until the ack tells the epoch
	grant     func(context.Context) (string, error)
}

// redialTimeout bounds each reconnection attempt, so that a server that
// accepts connections but does not answer is tried again, not waited for.
const redialTimeout = 10 * time.Second

// Dial connects to the hub at url and returns a Conn once connected (and
// signed in, with Options.Token), or the error of that first attempt (it
// is not retried: a wrong URL or a refusal shows at once; a refused token
// wraps ErrSignedOut). From then on the Conn reconnects by itself.
func Dial(ctx context.Context, url string, opts *Options) (*Conn, error) {
	c := &Conn{url: url, rooms: make(map[string]*room), pending: make(map[string]chan *wshub.Message), joins: make(map[string]*joining),
		done: make(chan struct{}), changed: make(chan struct{})}
	if opts != nil {
		c.opts = *opts
	}
	o := &c.opts
	if o.MinBackoff <= 0 {
		o.MinBackoff = 500 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(15*time.Second, o.MinBackoff)
	}
	if o.Buffer <= 0 {
		o.Buffer = 256
	}
	c.msgs = make(chan *wshub.Message, o.Buffer)
	ws, tok, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	s := c.newSession(ws)
	if o.Token == nil {
		c.setOnline(ws)
		go c.run(s)
		return c, nil
	}
	go c.run(s) // reads the answer
	if err := c.signIn(ctx, s, tok); err != nil {
		if ctx.Err() != nil {
			c.Close()
			return nil, err
		}
		<-c.done // lost: run ends, as it does not retry Dial's connection
		return nil, c.Err()
	}
	if !c.setOnline(ws) {
		<-c.done
		return nil, c.Err()
	}
	return c, nil
}

// connect gets a token, if the Conn has Options.Token, and dials.
func (c *Conn) connect(ctx context.Context) (*websocket.Conn, string, error) {
	var tok string
	if c.opts.Token != nil {
		var err error
		if tok, err = c.opts.Token(ctx); err != nil {
			return nil, "", fmt.Errorf("client: token: %w", err)
		}
	}
	ws, err := c.dial(ctx)
	return ws, tok, err
}

func (c *Conn) dial(ctx context.Context) (*websocket.Conn, error) {
	proto := []string{"wshub.json-batch", "wshub.json"}
	if c.opts.NoBatch {
		proto = proto[1:]
	}
	ws, resp, err := websocket.Dial(ctx, c.url, &websocket.DialOptions{HTTPHeader: c.opts.Header, Subprotocols: proto})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(resp.Body) // what coder/websocket kept of it
			return nil, &RefusedError{StatusCode: resp.StatusCode, Header: resp.Header, Body: body, err: err}
		}
		return nil, err
	}
	ws.SetReadLimit(-1) // the server bounds its frames
	return ws, nil
}

// A RefusedError is the server's HTTP answer to the upgrade request when
// it is not the upgrade: the application's refusal (wshub.Reject: 401,
// 403...), a hub shutting down or full (503), a proxy whose server is down
// (502), or no WebSocket endpoint at the URL (404, a web page). Dial
// returns it; after a reconnection it is Conn.Err, unless it was worth
// trying again (429 and 5xx are).
type RefusedError struct {
	StatusCode int
	Header     http.Header
	Body       []byte // the start of the answer's body (coder/websocket keeps 1 KiB)
	err        error
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("client: upgrade refused: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
}

func (e *RefusedError) Unwrap() error { return e.err }

// retryable reports whether a connection that ended with err is worth
// dialing again: it was lost, the server went away or restarts, the
// token expired (4001) or the application closed it with a code of its
// own (4000-4999, taken as 1006: docs/PROTOCOL.md §11), or it (or a proxy
// in front of it) was busy or down. Other close codes are about this
// client (docs/PROTOCOL.md §7), 4003 included, and other refusals would
// be the same next time.
func retryable(err error) bool {
	if errors.Is(err, ErrSignedOut) {
		return false
	}
	var re *RefusedError
	if errors.As(err, &re) {
		return re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 500
	}
	switch code := websocket.CloseStatus(err); code {
	case -1, websocket.StatusGoingAway, websocket.StatusServiceRestart, websocket.StatusAbnormalClosure:
		return true
	default:
		return code >= 4000 && code <= 4999 && code != wshub.StatusSignedOut
	}
}

// maxRetryAfter caps the wait after a server's Retry-After, spread
// included.
const maxRetryAfter = 5 * time.Minute

// retryAfter returns the wait that the Retry-After header of a refused
// upgrade asks for (in seconds, or until an HTTP date), or 0.
func retryAfter(err error) time.Duration {
	re, ok := errors.AsType[*RefusedError](err)
	if !ok || re.Header == nil {
		return 0
	}
	v := re.Header.Get("Retry-After")
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = time.Until(t)
	}
	return min(max(d, 0), maxRetryAfter)
}

// run reads the connection of session s, and reconnects when it is
// lost, until Close or a loss that is not worth retrying.
func (c *Conn) run(s *session) {
	defer close(c.done)
	defer close(c.msgs)
	backoff := c.opts.MinBackoff
	quick := false // the connection was made at once after a 4001
	for {
		if c.ctx.Err() != nil { // Close ran before reading was set
			s.ws.CloseNow()
		}
		err := signedOut(c.read(s.ws))
		s.cancel()
		wasOnline, wasUp := c.setOffline()
		s.wg.Wait()
		if c.ctx.Err() != nil {
			c.finish(ErrClosed)
			return
		}
		if c.opts.NoReconnect || !retryable(err) || !wasUp {
			c.finish(err)
			return
		}
		// A sign-in that expired: a new token, at once. Not for a
		// connection that did not come online, nor for one made at once
		// after a 4001 already, so that a server that keeps closing so is
		// not hammered.
		quick = !quick && wasOnline && websocket.CloseStatus(err) == wshub.StatusTokenExpired
		atOnce := quick
		var ws *websocket.Conn
		var tok string
		for {
			wait := time.Duration(float64(backoff) * (0.75 + rand.Float64()/2))
			switch ra := retryAfter(err); {
			case atOnce:
				wait, atOnce = 0, false
			case ra > wait:
				// The server said when: not before, and spread over a
				// quarter more, so that its clients do not all come back
				// at once.
				wait = min(ra+time.Duration(rand.Float64()*float64(ra)/4), maxRetryAfter)
				fallthrough
			default:
				backoff = min(2*backoff, c.opts.MaxBackoff)
			}
			c.event(Event{State: Offline, Err: err, Retry: wait})
			select {
			case <-time.After(wait):
			case <-c.ctx.Done():
				c.finish(ErrClosed)
				return
			}
			c.setState(Connecting)
			ctx, cancel := context.WithTimeout(c.ctx, redialTimeout)
			ws, tok, err = c.connect(ctx)
			cancel()
			if err == nil {
				break
			}
			quick = false // the connection, once made, was not made at once
			if c.ctx.Err() != nil {
				c.finish(ErrClosed)
				return
			}
			if !retryable(err) { // refused, and it would be again; or signed out
				c.finish(err)
				return
			}
		}
		backoff = c.opts.MinBackoff
		s = c.newSession(ws) // reading is set before the rejoin's setOnline
		c.setState(Rejoining)
		next := s
		s.wg.Go(func() { c.start(next, tok) })
	}
}

// start signs in on a new connection, if the Conn has Options.Token, then
// rejoins the rooms. A sign-in that gets no answer in time closes the
// connection, which is then tried again.
func (c *Conn) start(s *session, tok string) {
	if c.opts.Token != nil {
		ctx, cancel := context.WithTimeout(s.ctx, redialTimeout)
		err := c.signIn(ctx, s, tok)
		cancel()
		if err != nil {
			s.ws.CloseNow()
			return
		}
	}
	c.rejoin(s)
}

// rejoin joins the rooms again on a new connection, in the order they
// were joined, asking for what was missed and with a new grant where the
// room has one, then makes the connection usable for requests. The read
// goroutine reports each outcome (take); a grant that cannot be had is
// reported here, and the room is left.
func (c *Conn) rejoin(s *session) {
	c.mu.Lock()
	names := make([]string, 0, len(c.rooms))
	for name := range c.rooms {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return cmp.Compare(c.rooms[a].order, c.rooms[b].order) })
	c.mu.Unlock()
	for _, name := range names {
		c.mu.Lock()
		r := c.rooms[name]
		if r == nil {
			c.mu.Unlock()
			continue
		}
		m := &wshub.Message{Type: wshub.TypeJoin, Room: name, History: r.history, Epoch: r.epoch}
		if r.epoch != "" {
			m.Since = r.seq
		}
		j := &joining{room: name, history: r.history, grant: r.grant, rejoin: true}
		c.mu.Unlock()
		if j.grant != nil {
			var err error
			if m.Token, err = c.grantToken(s.ctx, j.grant); err != nil {
				if s.ctx.Err() != nil {
					return
				}
				c.mu.Lock()
				if c.rooms[name] == r {
					delete(c.rooms, name)
				}
				c.mu.Unlock()
				c.event(Event{State: Rejoining, Room: name, Err: err})
				continue
			}
		}
		_, err := c.request(s.ctx, s.ws, m, j)
		var se *ServerError
		if err != nil && !errors.As(err, &se) {
			return // lost, or closed: the next connection tries again
		}
	}
	c.setOnline(s.ws)
}

// grantToken calls grant, within redialTimeout.
func (c *Conn) grantToken(ctx context.Context, grant func(context.Context) (string, error)) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, redialTimeout)
	defer cancel()
	tok, err := grant(ctx)
	if err != nil {
		return "", fmt.Errorf("client: grant: %w", err)
	}
	return tok, nil
}

// read reads ws until it fails, passing answers to their requests and
// everything else on (pass).
func (c *Conn) read(ws *websocket.Conn) error {
	for {
		_, b, err := ws.Read(context.Background())
		if err != nil {
			return err
		}
		var batch []json.RawMessage
		if len(b) > 0 && b[0] == '[' {
			if err := json.Unmarshal(b, &batch); err != nil {
				continue
			}
		} else {
			batch = []json.RawMessage{b}
		}
		for _, raw := range batch {
			m := new(wshub.Message)
			if err := (wshub.JSONCodec{}).Unmarshal(raw, m); err != nil {
				continue
			}
			out, e, ans := c.take(m)
			if e != nil {
				c.event(*e)
			}
			if ans != nil {
				ans <- m // after the event: the rejoin's Online comes after it
			}
			for _, m := range out {
				if err := c.pass(m); err != nil {
					return err
				}
			}
		}
	}
}

// pass passes m on: a room message to Messages, anything else to
// OnFrame.
func (c *Conn) pass(m *wshub.Message) error {
	if m.Type != wshub.TypeMessage {
		if c.opts.OnFrame != nil {
			c.opts.OnFrame(m)
		}
		return nil
	}
	select {
	case c.msgs <- m:
		return nil
	case <-c.ctx.Done():
		return ErrClosed
	}
}

// take handles m, on the read goroutine: an answer goes to its request,
// a join's ack updates the room, the server's "auth" schedules the
// refresh, its "leave" forgets the room, and a room message seen before a
// reconnection is dropped. It returns what to pass on to Messages, the
// event of a rejoin's answer or of a leave, to report before, and for an
// answer the channel of its request, to pass it to after the event.
func (c *Conn) take(m *wshub.Message) ([]*wshub.Message, *Event, chan<- *wshub.Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case m.Type == wshub.TypeAuth && m.ID == "" && c.opts.Token != nil:
		c.expiresLocked("", m.TTL)
		return nil, nil, nil
	case m.Type == wshub.TypeLeave && m.ID == "" && m.Room != "":
		var held []*wshub.Message
		if r := c.rooms[m.Room]; r != nil {
			held = r.held // came before the leave
			delete(c.rooms, m.Room)
		}
		c.sess.cancelLocked(m.Room)
		return held, &Event{State: c.state, Room: m.Room, Left: true, Err: &ServerError{Room: m.Room, Text: m.Error}}, nil
	}
	if (m.Type == wshub.TypeAck || m.Type == wshub.TypeError) && m.ID != "" {
		ch := c.pending[m.ID]
		if ch == nil {
			return []*wshub.Message{m}, nil, nil
		}
		delete(c.pending, m.ID)
		var out []*wshub.Message
		var e *Event
		if j := c.joins[m.ID]; j != nil {
			delete(c.joins, m.ID)
			out = c.joinedLocked(j, m)
			if j.rejoin {
				e = &Event{State: Rejoining, Room: j.room, Recovered: m.Recovered != nil && *m.Recovered}
				if m.Type == wshub.TypeError {
					e.Err = &ServerError{Room: m.Room, Text: m.Error}
				}
			}
		}
		return out, e, ch // ch has room: the request's only answer
	}
	if m.Type != wshub.TypeMessage || m.Seq == 0 {
		return []*wshub.Message{m}, nil, nil
	}
	r := c.rooms[m.Room]
	switch {
	case r == nil:
		return []*wshub.Message{m}, nil, nil
	case r.rejoining:
		r.held = append(r.held, m)
		return nil, nil, nil
	case c.seenLocked(r, m):
		return nil, nil, nil
	}
	return []*wshub.Message{m}, nil, nil
}

// seenLocked reports whether the room message m was passed on already,
// and records it otherwise.
func (c *Conn) seenLocked(r *room, m *wshub.Message) bool {
	if m.Epoch != "" && m.Epoch != r.epoch {
		r.epoch, r.seq = m.Epoch, 0 // a new history: its seqs start over
	}
	if m.Seq <= r.seq {
		return true
	}
	r.seq = m.Seq
	return false
}

// joinedLocked takes the answer to join j: on an ack, the room is joined
// (again), in the epoch the ack names, and its grant's renewal scheduled;
// it returns the messages held during a rejoin that were not seen before.
// A rejoin or a renewal of a room left meanwhile joins nothing.
func (c *Conn) joinedLocked(j *joining, ans *wshub.Message) []*wshub.Message {
	r := c.rooms[j.room]
	if j.renew {
		// The room's seq is left alone: the ack's is the room's latest,
		// and live messages up to it may still be on their way.
		if r != nil && ans.Type == wshub.TypeAck {
			c.expiresLocked(j.room, ans.TTL)
		}
		return nil
	}
	if ans.Type == wshub.TypeError {
		if r != nil && j.rejoin {
			delete(c.rooms, j.room) // refused now
			c.sess.cancelLocked(j.room)
			return r.held
		}
		return nil
	}
	if r == nil {
		if j.rejoin {
			return nil
		}
		c.joined++
		r = &room{order: c.joined, history: j.history}
		c.rooms[j.room] = r
	}
	if !j.rejoin {
		r.grant = j.grant
	}
	if r.grant != nil {
		c.expiresLocked(j.room, ans.TTL)
	} else {
		c.sess.cancelLocked(j.room)
	}
	if r.epoch != ans.Epoch {
		r.epoch, r.seq = ans.Epoch, 0
	}
	held := r.held
	r.rejoining, r.held = false, nil
	var out []*wshub.Message
	for _, m := range held {
		if !c.seenLocked(r, m) {
			out = append(out, m)
		}
	}
	r.seq = max(r.seq, ans.Seq)
	return out
}

func (c *Conn) event(e Event) {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	c.emit(e)
}

// emit reports e; evMu is held.
func (c *Conn) emit(e Event) {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(e)
	}
}

// setStateLocked changes the state, waking those who wait for a change.
func (c *Conn) setStateLocked(s State) {
	c.state = s
	close(c.changed)
	c.changed = make(chan struct{})
}

// setState changes the state and reports it.
func (c *Conn) setState(s State) {
	c.mu.Lock()
	c.setStateLocked(s)
	c.mu.Unlock()
	c.event(Event{State: s})
}

// setOnline makes ws usable for requests, unless it is no longer the
// connection read (it broke during the rejoin) or the Conn is closing,
// and reports whether it did. It holds evMu throughout, so that Online is
// reported before the Offline that may follow at once.
func (c *Conn) setOnline(ws *websocket.Conn) bool {
	c.evMu.Lock()
	defer c.evMu.Unlock()
	c.mu.Lock()
	if c.reading != ws || c.state != Rejoining && c.state != Connecting {
		c.mu.Unlock()
		return false
	}
	c.ws = ws
	c.wasUp = true
	c.setStateLocked(Online)
	c.mu.Unlock()
	c.emit(Event{State: Online})
	return true
}

// setOffline forgets the connection, ends its session's renewals and
// fails the requests waiting on it. It reports whether the connection was
// online, and whether any connection ever was.
func (c *Conn) setOffline() (online, wasUp bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	online = c.ws != nil
	if c.ws != nil {
		c.ws.CloseNow()
		c.ws = nil
	}
	c.sess.endLocked()
	c.setStateLocked(Offline)
	for id, ch := range c.pending {
		delete(c.pending, id)
		ch <- nil
	}
	clear(c.joins)
	for _, r := range c.rooms {
		// What was held is asked for again after the next connection.
		r.rejoining, r.held = false, nil
	}
	return online, c.wasUp
}

func (c *Conn) finish(err error) {
	c.mu.Lock()
	c.err = err
	c.setStateLocked(Closed)
	c.mu.Unlock()
	c.event(Event{State: Closed, Err: err})
}

// Err returns why the Conn is closed for good (ErrClosed after Close, or
// the close status or error that was not worth a reconnection, wrapped
// with ErrSignedOut after a 4003), nil while it is not.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// State returns the connection's state.
func (c *Conn) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Messages returns the channel of the messages of the rooms joined (and
// of the server's broadcasts to all its clients): each once, in order,
// across reconnections in a room with history. Other
// frames go to Options.OnFrame. It is closed when the Conn is closed for
// good. Read it continuously: while it is full the client reads nothing.
func (c *Conn) Messages() <-chan *wshub.Message { return c.msgs }

// connection returns the current connection, waiting for it within ctx
// unless FailFast.
func (c *Conn) connection(ctx context.Context) (*websocket.Conn, error) {
	for {
		c.mu.Lock()
		ws, changed, state := c.ws, c.changed, c.state
		c.mu.Unlock()
		switch {
		case state == Closed:
			return nil, ErrClosed
		case ws != nil && state == Online:
			return ws, nil
		case c.opts.FailFast && state != Rejoining:
			return nil, ErrOffline
		}
		select {
		case <-changed:
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// request sends m with a new id on ws and waits for its answer; j, if
// not nil, is the join that m is.
func (c *Conn) request(ctx context.Context, ws *websocket.Conn, m *wshub.Message, j *joining) (*wshub.Message, error) {
	ch := make(chan *wshub.Message, 1)
	c.mu.Lock()
	if c.ws != ws && c.state == Online || c.state == Closed {
		c.mu.Unlock()
		return nil, ErrConnectionLost
	}
	c.nextID++
	m.ID = strconv.FormatUint(c.nextID, 10)
	c.pending[m.ID] = ch
	if j != nil {
		c.joins[m.ID] = j
		if r := c.rooms[j.room]; r != nil && j.rejoin {
			r.rejoining = true
		}
	}
	c.mu.Unlock()
	b, err := json.Marshal(m)
	if err == nil {
		err = ws.Write(ctx, websocket.MessageText, b)
	}
	if err != nil {
		c.forget(m.ID)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("%w: %w", ErrConnectionLost, err)
	}
	select {
	case ans := <-ch:
		if ans == nil {
			return nil, ErrConnectionLost
		}
		if ans.Type == wshub.TypeError {
			return nil, &ServerError{Room: ans.Room, Text: ans.Error}
		}
		return ans, nil
	case <-ctx.Done():
		c.forget(m.ID)
		return nil, ctx.Err()
	}
}

// forget drops request id, which will not wait for its answer.
func (c *Conn) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, id)
	if j := c.joins[id]; j != nil {
		delete(c.joins, id)
		if r := c.rooms[j.room]; r != nil && j.rejoin && r.rejoining {
			r.rejoining = false // its messages pass again, deduplicated
		}
	}
}

// Request sends m (its ID is set by the client) and waits for the
// server's answer: nil for an ack, a *ServerError for an error frame,
// ErrConnectionLost if the connection broke first. It waits for the
// connection if it is down (see Options.FailFast).
func (c *Conn) Request(ctx context.Context, m *wshub.Message) (*wshub.Message, error) {
	ws, err := c.connection(ctx)
	if err != nil {
		return nil, err
	}
	return c.request(ctx, ws, m, nil)
}

// JoinOptions are the options of a join; nil means none.
type JoinOptions struct {
	// History asks for the room's last History messages (at most 100, in
	// a room with history), passed to Messages before the live ones. After
	// a reconnection the client asks instead for what it missed, and for
	// these again only when the server cannot replay that.
	History int

	// Grant, if set, returns a token that grants the room, for the
	// server's AuthorizeGrant (a private room, a paid channel). It is
	// called for the join, for every rejoin after a reconnection, and for
	// every renewal: when the ack says that the grant expires, the client
	// joins the room again with a new token at a random point between
	// 50 % and 90 % of the time left, and, if that fails, once more
	// halfway through what is then left; failures are reported
	// (ErrNotRenewed), and when the grant ends the server takes the client
	// out of the room (an Event with Left). Its error fails Join; at a
	// rejoin, the room is left and the rejoin's Event has the error. It
	// must return once ctx ends: Close waits for it. A Join of a room
	// joined already replaces the room's Grant, nil included.
	Grant func(ctx context.Context) (string, error)
}

// Join joins the room name and waits for the server's answer. The room
// stays joined across reconnections, with recovery of what was missed,
// until Leave or the server takes the client out of it (Event.Left). A
// server refuses every join unless its Options.AuthorizeJoin (or, with
// JoinOptions.Grant, AuthorizeGrant) allows it: the error is then a
// *ServerError.
func (c *Conn) Join(ctx context.Context, name string, opts *JoinOptions) (JoinResult, error) {
	ws, err := c.connection(ctx)
	if err != nil {
		return JoinResult{}, err
	}
	var o JoinOptions
	if opts != nil {
		o = *opts
	}
	m := &wshub.Message{Type: wshub.TypeJoin, Room: name, History: o.History}
	if o.Grant != nil {
		if m.Token, err = c.grantToken(ctx, o.Grant); err != nil {
			return JoinResult{}, err
		}
	}
	ans, err := c.request(ctx, ws, m, &joining{room: name, history: o.History, grant: o.Grant})
	if err != nil {
		return JoinResult{}, err
	}
	return JoinResult{Epoch: ans.Epoch, Seq: ans.Seq}, nil
}

// Leave leaves room. The room is forgotten at once: whatever the answer,
// even ErrOffline, it is not rejoined after a reconnection (the server
// forgets a connection's rooms with it).
func (c *Conn) Leave(ctx context.Context, name string) error {
	c.mu.Lock()
	delete(c.rooms, name)
	c.sess.cancelLocked(name)
	c.mu.Unlock()
	_, err := c.Request(ctx, &wshub.Message{Type: wshub.TypeLeave, Room: name})
	return err
}

// Publish publishes data (any JSON value) to room and waits for the ack:
// nil means the server accepted it for the room's members, the client
// included, who gets it through Messages.
func (c *Conn) Publish(ctx context.Context, room string, data any) error {
	_, err := c.Request(ctx, &wshub.Message{Type: wshub.TypePublish, Room: room, Data: data})
	return err
}

// Send sends an application message without waiting for an answer; its
// ID, if any, is the caller's. It waits for the connection if it is down
// (see Options.FailFast).
func (c *Conn) Send(ctx context.Context, m *wshub.Message) error {
	ws, err := c.connection(ctx)
	if err != nil {
		return err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return ws.Write(ctx, websocket.MessageText, b)
}

// Close closes the connection (1000) and stops reconnecting; Messages is
// closed once the client's goroutine has ended, which Close waits for.
func (c *Conn) Close() error {
	c.cancel()
	c.mu.Lock()
	ws := c.reading
	c.mu.Unlock()
	if ws != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		go func() {
			<-ctx.Done()
			ws.CloseNow()
		}()
		ws.Close(websocket.StatusNormalClosure, "")
	}
	<-c.done
	return nil
}
