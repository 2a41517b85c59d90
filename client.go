package wshub

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// Client is one connected WebSocket peer. Its methods are safe for
// concurrent use and never block on the network.
type Client struct {
	hub        *Hub
	conn       *websocket.Conn
	netConn    *corkConn
	codec      Codec
	codecIndex int
	id         string

	ctx    context.Context
	cancel context.CancelFunc

	// writers counts the writer's turns (a pool's or the client's own
	// goroutine), the closer and the pings in progress; the read goroutine
	// waits for them before the client is forgotten.
	writers   sync.WaitGroup
	closeOnce sync.Once
	slot      *pingSlot // the keepalive slot, under its lock (keepalive.go)
	slotAt    int32     // c's index in it

	filter *pongFilter   // netConn's: takes pongs off the inbound stream (keepalive.go)
	br     *bufio.Reader // coder/websocket's reader
	fd     int32         // the socket, for the poller; -1 if it cannot park (park.go)
	pooled bool          // the hub's write pool writes for it (pool.go)

	// readMu keeps the reader's own uses of br (mayPark, probe) apart
	// from coder's close handshake, which reads through br on the
	// goroutine that closes (closeConn).
	readMu sync.Mutex

	info json.RawMessage // Identity.Info, encoded; guarded by mu

	valuesMu sync.RWMutex
	values   map[string]any

	mu          sync.Mutex
	queue       [][]byte // messages waiting for the writer
	queueBytes  int      // bytes in queue
	replayed    int      // messages of queue that a history replay put there, past the limits
	replayBytes int
	space       chan struct{} // closed when the queue is taken or the client closes; made by a waiter
	unpaced     bool          // congested past paceWait: deliveries from other hubs wait no more for it (flow.go)
	spare       [][]byte      // the writer's previous batch, reused
	writing     bool          // the writer's turn is taken: queued in the pool, or writing
	pingDue     bool          // the writer writes a ping first
	nextWrite   *Client       // next in the write pool's queue, under its lock (pool.go)
	parked      bool          // the reader is parked: no goroutine reads (park.go)
	armed       bool          // fd is in the poller's set
	closeCode   websocket.StatusCode
	closeReason string
	cause       error           // disconnect reason, set once
	cut         bool            // closed without a close handshake
	flush       bool            // write the queue before closing
	rooms       map[string]bool // the client's rooms: true for those it joined by asking (AuthorizeJoin)

	// Tokens (auth.go), guarded by mu.
	expires  time.Time            // the sign-in's end; zero: none
	grants   map[string]time.Time // rooms joined with a grant, to its end (zero: none)
	authStop func() bool          // stops the expiry timer
	grantMu  sync.Mutex           // orders a grant's renewal and its expiry

	// Read goroutine only.
	signed     bool      // signed in: OnConnect ran
	invalidRun int       // consecutive invalid or rate-limited messages
	waitFor    []*Client // clients its last message left congested; see flow.go
	rate       rateLimit
	piped      sync.WaitGroup // counts publishes in flight; see protocol.go

	pipeMu   sync.Mutex    // guards pipe and inFlight, shared by the reader and its acker
	pipe     chan pipeItem // publishes in flight, to the acker
	inFlight int

	ends   []frameEnd  // the writer's frames of the batch it writes; writer only
	counts *writeShard // where its writer counts (metrics.go)
}

func newClient(h *Hub, conn *websocket.Conn, hw *hijackWriter, id Identity) *Client {
	c := &Client{hub: h, conn: conn, netConn: hw.cork, filter: &hw.cork.filter, br: hw.br, fd: -1,
		id: id.ID, expires: id.Expires, counts: h.m.shard()}
	c.fd, c.netConn.raw = sysFD(hw.cork.Conn)
	if c.id == "" && !h.tokenFirst() {
		c.id = newID()
	}
	if len(id.Values) > 0 {
		c.values = maps.Clone(id.Values)
	}
	c.codecIndex = max(0, slices.Index(h.opts.codecNames, conn.Subprotocol()))
	c.codec = h.opts.Codecs[c.codecIndex]
	// A batch codec's AppendBatch runs on the writer: the pool's
	// goroutines run the hub's own, not an application's, which could
	// hold up every client behind it.
	_, batches := c.codec.(BatchCodec)
	_, ours := c.codec.(JSONBatchCodec)
	c.pooled = c.netConn.raw != nil && (!batches || ours)
	c.ctx, c.cancel = context.WithCancel(context.Background())
	conn.SetReadLimit(h.opts.ReadLimit)
	return c
}

// ID returns the client's ID: the one given by Options.Authenticate (or
// AuthenticateToken), or a generated one; "" before a client that signs
// in with its first frame did.
func (c *Client) ID() string { return c.id }

// Info returns the JSON encoding of the client's Identity.Info, nil if it
// has none.
func (c *Client) Info() json.RawMessage {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// Codec returns the codec negotiated with the client.
func (c *Client) Codec() Codec { return c.codec }

// Context returns a context canceled when the client starts closing. A
// peer's departure during a long Handler is noticed after it returns, or
// when a ping goes unanswered.
func (c *Client) Context() context.Context { return c.ctx }

// Value returns the client's value for key, or nil.
func (c *Client) Value(key string) any {
	c.valuesMu.RLock()
	defer c.valuesMu.RUnlock()
	return c.values[key]
}

// SetValue sets the client's value for key; a nil v deletes it.
func (c *Client) SetValue(key string, v any) {
	c.valuesMu.Lock()
	defer c.valuesMu.Unlock()
	if v == nil {
		delete(c.values, key)
		return
	}
	if c.values == nil {
		c.values = make(map[string]any)
	}
	c.values[key] = v
}

// Join adds the client to a room, creating the room if needed; joining a
// room twice is not an error. It is the server's decision, so
// Options.AuthorizeJoin is not consulted. It may wait for the Engine (to
// read where the room's history stands, or to follow a room new on this
// hub), at most Options.WriteTimeout. It returns ErrInvalid for an invalid
// name, ErrDenied past Options.MaxRooms, ErrClientClosed once the client is
// closing, and ErrEngine when the engine fails (the client is then not in
// the room).
func (c *Client) Join(room string) error {
	_, err := c.hub.join(c, room, nil)
	return err
}

// Leave removes the client from a room, and the room when it is empty. It
// returns ErrDenied ("not a member of the room") if the client is not in
// it.
func (c *Client) Leave(room string) error { return c.hub.leave(c, room) }

// Rooms returns the names of the client's rooms, sorted.
func (c *Client) Rooms() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Sorted(maps.Keys(c.rooms))
}

// Send queues m for the client alone, as a message of type "message" when
// m.Type is empty. It does not wait for the write. It returns the codec's
// error if m cannot be encoded, ErrClientClosed once the client is closing,
// and ErrSlowClient if the queue was full: the client is then closed with
// status 1008.
func (c *Client) Send(m *Message) error {
	out := m.orMessage()
	_, err := c.send(&out, qApp)
	return err
}

// send encodes m with the client's codec and queues it, counting it as of
// kind (qApp, qReply); see enqueue.
func (c *Client) send(m *Message, kind int) (congested bool, err error) {
	b, err := c.codec.Marshal(m)
	if err != nil {
		return false, err
	}
	return c.enqueue(b, kind)
}

// Close writes the client's queued messages, then closes the connection
// with code and reason. A code that may not be sent on the wire or a reason
// over 123 bytes makes the close frame unsendable: the connection is then
// cut without one. Its disconnect reason is ErrClientClosed. Close does not
// wait; calling it again does nothing.
func (c *Client) Close(code websocket.StatusCode, reason string) {
	c.closeWith(code, reason, ErrClientClosed, true)
}

func (c *Client) addRoom(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return ErrClientClosed
	}
	if _, ok := c.rooms[name]; ok {
		return nil
	}
	if max := c.hub.opts.MaxRooms; max > 0 && len(c.rooms) >= max {
		return fmt.Errorf("%w: %d", errTooManyRooms, max)
	}
	if c.rooms == nil {
		c.rooms = make(map[string]bool)
	}
	c.rooms[name] = false
	c.hub.m.members.Add(1)
	return nil
}

func (c *Client) removeRoom(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.rooms[name]; !ok {
		return false
	}
	delete(c.rooms, name)
	delete(c.grants, name)
	c.hub.m.members.Add(-1)
	return true
}

// asked marks room as one the client joined at its own request, which a
// refresh authorizes again.
func (c *Client) asked(room string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.rooms[room]; ok {
		c.rooms[room] = true
	}
}

func (c *Client) inRoom(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.rooms[name]
	return ok
}
