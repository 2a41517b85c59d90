package wshub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/sync/errgroup"
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

	// group owns the writer, closer and pinger goroutines; the read
	// goroutine waits for it before the client is forgotten.
	group     errgroup.Group
	closeOnce sync.Once
	pinger    *time.Timer

	info json.RawMessage // Identity.Info, encoded

	valuesMu sync.RWMutex
	values   map[string]any

	mu          sync.Mutex
	queue       [][]byte // messages waiting for the writer
	queueBytes  int      // bytes in queue
	replayed    int      // messages of queue that a history replay put there, past the limits
	replayBytes int
	space       chan struct{} // closed when the queue is taken or the client closes; made by a waiter
	spare       [][]byte      // the writer's previous batch, reused
	writing     bool          // a writer goroutine is running
	closeCode   websocket.StatusCode
	closeReason string
	cause       error // disconnect reason, set once
	flush       bool  // write the queue before closing
	rooms       map[string]struct{}

	// Read goroutine only.
	invalidRun int       // consecutive invalid or rate-limited messages
	waitFor    []*Client // clients its last message left congested; see flow.go
	rate       rateLimit
	pipe       chan pipeItem  // publishes in flight, to the acker; see log.go
	piped      sync.WaitGroup // counts them

	ends []frameEnd // the writer's frames of the batch it writes; writer only
}

func newClient(h *Hub, conn *websocket.Conn, netConn *corkConn, id Identity) *Client {
	c := &Client{hub: h, conn: conn, netConn: netConn, id: id.ID}
	if c.id == "" {
		c.id = newID()
	}
	if len(id.Values) > 0 {
		c.values = maps.Clone(id.Values)
	}
	c.codecIndex = max(0, slices.Index(h.opts.codecNames, conn.Subprotocol()))
	c.codec = h.opts.Codecs[c.codecIndex]
	c.ctx, c.cancel = context.WithCancel(context.Background())
	conn.SetReadLimit(h.opts.ReadLimit)
	return c
}

// ID returns the client's ID: the one given by Options.Authenticate, or a
// generated one.
func (c *Client) ID() string { return c.id }

// Info returns the JSON encoding of the client's Identity.Info, nil if it
// has none.
func (c *Client) Info() json.RawMessage { return c.info }

// Codec returns the codec negotiated with the client.
func (c *Client) Codec() Codec { return c.codec }

// Context returns a context that is canceled when the client starts
// closing: the hub or the application closed it, or its connection failed.
// The hub reads a client's next message only after the Handler returned, so
// a peer's departure during a long handler is noticed after it returns (or,
// with pings enabled, when the unanswered ping times out).
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
// Options.AuthorizeJoin is not consulted. It returns ErrInvalidRoom,
// ErrTooManyRooms past Options.MaxRooms, ErrHistory when the room's
// history store fails, once the client is closing ErrClientClosed, and
// with a Broker that cannot
// subscribe to a new room ErrBroker (the client is then not in the room).
func (c *Client) Join(room string) error {
	_, err := c.hub.join(c, room, nil)
	return err
}

// Leave removes the client from a room, and the room when it is empty. It
// returns ErrNotMember if the client is not in it.
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
// and ErrSendQueueFull if the queue was full: the client is then closed
// with status 1008.
func (c *Client) Send(m *Message) error {
	out := m.orMessage()
	_, err := c.send(&out)
	return err
}

// send encodes m with the client's codec and queues it; see enqueue.
func (c *Client) send(m *Message) (congested bool, err error) {
	b, err := c.codec.Marshal(m)
	if err != nil {
		return false, err
	}
	return c.enqueue(b)
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
		return fmt.Errorf("%w: %d", ErrTooManyRooms, max)
	}
	if c.rooms == nil {
		c.rooms = make(map[string]struct{})
	}
	c.rooms[name] = struct{}{}
	return nil
}

func (c *Client) removeRoom(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.rooms[name]; !ok {
		return false
	}
	delete(c.rooms, name)
	return true
}

func (c *Client) inRoom(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.rooms[name]
	return ok
}

// enqueue queues an encoded message and starts the writer if it is idle.
// It reports whether the queue is now congested (see flow.go). A message
// that overflows the queue closes the client.
func (c *Client) enqueue(b []byte) (congested bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return false, ErrClientClosed
	}
	o := &c.hub.opts
	n, size := len(c.queue)-c.replayed, c.queueBytes-c.replayBytes
	if n >= o.SendQueue || (n > 0 && size+len(b) > o.SendQueueBytes) {
		c.hub.dropped.Add(1)
		c.kickLocked(ErrSendQueueFull)
		return false, ErrSendQueueFull
	}
	c.queue = append(c.queue, b)
	c.queueBytes += len(b)
	c.startWriterLocked()
	return c.congestedLocked(), nil
}

// enqueueReplay queues a join's replay of history at once, since it must
// come before any live message of the room. It does not count against the
// queue's limits until the writer takes it (it is bounded by
// MaxHistoryReplay or the room's HistoryPolicy.Messages), so a long replay
// does not get its client closed; it does count as congestion, so the
// client's next message and the room's publishers wait for it.
func (c *Client) enqueueReplay(frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return
	}
	for _, b := range frames {
		c.queue = append(c.queue, b)
		c.queueBytes += len(b)
		c.replayBytes += len(b)
	}
	c.replayed += len(frames)
	c.startWriterLocked()
}

// kickLocked closes the client with 1008 for hurting others, dropping its
// queue, and counts it in Stats.Kicked.
func (c *Client) kickLocked(cause error) {
	if c.cause != nil {
		return
	}
	c.hub.kicked.Add(1)
	c.closeLocked(websocket.StatusPolicyViolation, strings.TrimPrefix(cause.Error(), "wshub: "), cause, false)
}

func (c *Client) startWriterLocked() {
	if c.writing {
		return
	}
	c.writing = true
	c.spawn(c.writeLoop)
}

// spawn runs f on a goroutine that the client's group and Shutdown wait for.
func (c *Client) spawn(f func()) {
	c.hub.hold()
	c.group.Go(func() error {
		defer c.hub.release()
		f()
		return nil
	})
}

// closeWith starts closing the client with code and reason, recording
// cause as its disconnect reason. With flush, queued messages are written
// first; without, they are dropped. Only the first call has an effect.
func (c *Client) closeWith(code websocket.StatusCode, reason string, cause error, flush bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason, cause, flush)
}

func (c *Client) closeLocked(code websocket.StatusCode, reason string, cause error, flush bool) {
	if c.cause != nil {
		return
	}
	c.closeCode, c.closeReason, c.cause, c.flush = code, reason, cause, flush
	c.cancel()
	c.wakeLocked()
	if !flush {
		c.dropQueueLocked()
	}
	if !c.writing {
		// The writer closes the connection once the queue is empty.
		c.startWriterLocked()
		return
	}
	if !flush {
		// The writer may be stuck on a slow peer: close from a goroutine of
		// its own, which also unblocks the writer.
		c.spawn(c.closeConn)
	}
}

// closeConn runs the close handshake, once.
func (c *Client) closeConn() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		code, reason, cause := c.closeCode, c.closeReason, c.cause
		c.mu.Unlock()
		if errors.Is(cause, ErrSendQueueFull) || errors.Is(cause, ErrWriteTimeout) {
			c.hub.opts.Logger.Warn("wshub: client kicked", "client", c.id, "reason", cause)
		}
		if code == 0 {
			c.conn.CloseNow() // the connection failed or the peer closed it
			return
		}
		c.conn.Close(code, reason)
	})
}

// abort cuts the connection without a handshake, dropping the queue even
// if a graceful close was flushing it.
func (c *Client) abort(cause error) {
	c.mu.Lock()
	c.closeLocked(websocket.StatusGoingAway, "", cause, false)
	c.flush = false
	c.dropQueueLocked()
	c.mu.Unlock()
	c.netConn.cut()
}

// dropQueueLocked discards the queued messages, counting them as Dropped.
func (c *Client) dropQueueLocked() {
	c.hub.dropped.Add(uint64(len(c.queue)))
	clear(c.queue)
	c.queue = c.queue[:0]
	c.queueBytes, c.replayed, c.replayBytes = 0, 0, 0
}

// writeLoop writes queued messages until the queue is empty, then exits;
// when the client is closing, it closes the connection instead of exiting.
func (c *Client) writeLoop() {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 || (c.cause != nil && !c.flush) {
			closing := c.cause != nil
			if !closing {
				c.writing = false
			}
			c.mu.Unlock()
			if closing {
				c.closeConn()
			}
			return
		}
		batch := c.queue
		c.queue, c.spare = c.spare, nil
		c.queueBytes, c.replayed, c.replayBytes = 0, 0, 0
		c.wakeLocked()
		c.mu.Unlock()

		written, err := c.write(batch)
		c.hub.messagesOut.Add(uint64(written))
		c.hub.dropped.Add(uint64(len(batch) - written))

		clear(batch)
		c.mu.Lock()
		if cap(batch) <= 64 {
			c.spare = batch[:0]
		}
		c.mu.Unlock()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// No write progress for WriteTimeout: the socket is full,
				// so no close frame could reach the peer either.
				err = ErrWriteTimeout
				c.mu.Lock()
				if c.cause == nil {
					c.hub.kicked.Add(1)
				}
				c.mu.Unlock()
			}
			c.abort(err)
			return
		}
	}
}

// write writes msgs, as batch frames if the codec batches. The frames of
// one call go out together, with as few system calls as corkConn allows:
// usually one, even for a frame bigger than the connection's buffer. It
// returns how many of msgs reached the socket; after an error the others
// were not written.
func (c *Client) write(msgs [][]byte) (written int, err error) {
	c.ends = c.ends[:0]
	c.netConn.cork()
	defer func() {
		if uerr := c.netConn.uncork(); err == nil {
			err = uerr
		}
		_, flushed := c.netConn.progress()
		for _, f := range c.ends {
			if f.end <= flushed {
				written += f.msgs
			}
		}
	}()
	typ := websocket.MessageText
	if c.codec.Binary() {
		typ = websocket.MessageBinary
	}
	bc, ok := c.codec.(BatchCodec)
	if !ok {
		for _, b := range msgs {
			if err := c.conn.Write(context.Background(), typ, b); err != nil {
				return 0, err
			}
			c.frameWritten(1)
		}
		return 0, nil
	}
	bufp := c.hub.getBuf()
	defer c.hub.putBuf(bufp)
	for len(msgs) > 0 {
		n := batchLen(msgs)
		*bufp = bc.AppendBatch((*bufp)[:0], msgs[:n])
		if err := c.conn.Write(context.Background(), typ, *bufp); err != nil {
			return 0, err
		}
		c.frameWritten(n)
		msgs = msgs[n:]
	}
	return 0, nil
}

// frameEnd is where a frame of msgs messages ends in corkConn's stream.
type frameEnd struct {
	end  int64
	msgs int
}

// frameWritten records that the frame just handed to the connection holds
// n messages.
func (c *Client) frameWritten(n int) {
	c.ends = append(c.ends, frameEnd{end: c.netConn.taken.Load(), msgs: n})
}

// batchLen returns how many of msgs, at least one, go into the next batch
// frame: as many as fit in maxBatchBytes with a separator between them and
// two bytes around them.
func batchLen(msgs [][]byte) int {
	n, size := 1, len(msgs[0])+2
	for n < len(msgs) && size+len(msgs[n])+1 <= maxBatchBytes {
		size += len(msgs[n]) + 1
		n++
	}
	return n
}

// run serves the client on its read goroutine until it disconnects.
func (c *Client) run() {
	defer c.hub.release()
	h := c.hub
	if h.opts.PingInterval > 0 {
		c.mu.Lock() // ping reads c.pinger under c.mu
		c.pinger = time.AfterFunc(h.opts.PingInterval, c.ping)
		c.mu.Unlock()
	}
	h.opts.Logger.Debug("wshub: client connected", "client", c.id, "codec", c.codec.Name())
	if h.opts.OnConnect != nil {
		h.userCode(func() { h.opts.OnConnect(c) })
	}
	err := c.readLoop()
	if c.pipe != nil {
		close(c.pipe) // the acker answers what is in flight, then ends
	}
	if ce, ok := errors.AsType[websocket.CloseError](err); ok {
		err = ce // the peer closed: its status and reason are the whole story
	}
	c.closeWith(0, "", err, false)
	if c.pinger != nil {
		c.pinger.Stop()
	}
	c.conn.CloseNow()
	c.group.Wait()
	h.forget(c)
	c.cancel()

	c.mu.Lock()
	cause := c.cause
	c.mu.Unlock()
	h.opts.Logger.Debug("wshub: client disconnected", "client", c.id, "reason", cause)
	if h.opts.OnDisconnect != nil {
		h.userCode(func() { h.opts.OnDisconnect(c, cause) })
	}
}

// ping checks that the peer answers within the ping interval. It runs on
// the pinger timer's goroutine and does the ping on one of the client's.
func (c *Client) ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return
	}
	c.spawn(func() {
		// Not c.ctx: closing cancels it, and a ping frame whose context
		// ends mid-write makes coder/websocket cut the connection, which
		// would turn a graceful close into an abrupt one.
		ctx, cancel := context.WithTimeout(context.Background(), c.hub.opts.PingInterval)
		defer cancel()
		err := c.conn.Ping(ctx)
		switch {
		case err == nil:
			c.mu.Lock()
			if c.cause == nil { // else run has stopped the timer for good
				c.pinger.Reset(c.hub.opts.PingInterval)
			}
			c.mu.Unlock()
		case errors.Is(err, context.DeadlineExceeded):
			c.abort(ErrPongTimeout)
		}
	})
}

// readLoop reads and handles messages until the connection fails. Once
// the client is closing, it reads only to see the peer's close frame.
func (c *Client) readLoop() error {
	for {
		typ, data, err := c.conn.Read(context.Background())
		if err != nil {
			return err
		}
		c.hub.messagesIn.Add(1)
		if c.ctx.Err() != nil {
			continue
		}
		c.dispatch(typ, data)
		c.awaitFlow()
	}
}

// dispatch handles one inbound frame.
func (c *Client) dispatch(typ websocket.MessageType, data []byte) {
	if typ == websocket.MessageText && !utf8.Valid(data) {
		err := fmt.Errorf("%w: text frame is not valid UTF-8", ErrInvalidMessage)
		c.closeWith(websocket.StatusInvalidFramePayloadData, "invalid UTF-8", err, true)
		return
	}
	var m Message
	if err := c.decode(typ, data, &m); err != nil {
		c.refuse(&m, err, websocket.StatusInvalidFramePayloadData, "too many invalid messages")
		return
	}
	if !c.rate.allow(&c.hub.opts) {
		c.refuse(&m, ErrRateLimited, websocket.StatusPolicyViolation, "rate limit exceeded")
		return
	}
	c.invalidRun = 0
	ack, err := c.handle(&m)
	switch {
	case err == errPipelined:
	case err != nil:
		c.reply(&Message{Type: TypeError, ID: m.ID, Room: m.Room, Error: err.Error()})
	case m.ID != "":
		if ack == nil {
			ack = &Message{Type: TypeAck}
		}
		ack.ID = m.ID
		c.reply(ack)
	}
}

// refuse answers a message that was not handled with an error frame, and
// closes the client with code after MaxInvalidMessages in a row.
func (c *Client) refuse(m *Message, err error, code websocket.StatusCode, reason string) {
	c.invalidRun++
	c.reply(&Message{Type: TypeError, ID: m.ID, Room: m.Room, Error: err.Error()})
	if c.invalidRun >= MaxInvalidMessages {
		c.closeWith(code, reason, err, true)
	}
}

func (c *Client) decode(typ websocket.MessageType, data []byte, m *Message) error {
	if binary := typ == websocket.MessageBinary; binary != c.codec.Binary() {
		kind := "text"
		if binary {
			kind = "binary"
		}
		return fmt.Errorf("%w: unexpected %s frame for codec %s", ErrInvalidMessage, kind, c.codec.Name())
	}
	if err := c.codec.Unmarshal(data, m); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidMessage, err)
	}
	return nil
}

// handle handles a decoded message and returns its ack, if not the plain
// one.
func (c *Client) handle(m *Message) (*Message, error) {
	h := c.hub
	switch m.Type {
	case TypeJoin:
		return c.join(m)
	case TypeLeave:
		return nil, c.Leave(m.Room)
	case TypePublish:
		return nil, c.publish(m)
	case TypePresence:
		return nil, c.presenceRequest(m)
	}
	if h.handler == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, m.Type)
	}
	var err error
	h.userCode(func() { err = h.handler.ServeMessage(c.ctx, c, m) })
	return nil, err
}

// maxEpochLen bounds the epoch a join may name; the hub's own are 16
// bytes, a shared store's may be longer.
const maxEpochLen = 128

// join handles a client's join request, with its history fields.
func (c *Client) join(m *Message) (*Message, error) {
	h := c.hub
	if err := validRoom(m.Room); err != nil {
		return nil, err
	}
	switch {
	case m.History < 0:
		return nil, fmt.Errorf("%w: history %d is negative", ErrInvalidMessage, m.History)
	case m.Since > 0 && m.Epoch == "":
		return nil, fmt.Errorf("%w: since needs the epoch it refers to", ErrInvalidMessage)
	case len(m.Epoch) > maxEpochLen:
		return nil, fmt.Errorf("%w: epoch longer than %d bytes", ErrInvalidMessage, maxEpochLen)
	}
	if h.opts.AuthorizeJoin == nil {
		return nil, ErrJoinDenied
	}
	var err error
	h.userCode(func() { err = h.opts.AuthorizeJoin(c, m.Room) })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrJoinDenied, err)
	}
	return h.join(c, m.Room, m)
}

func (c *Client) publish(m *Message) error {
	if err := validRoom(m.Room); err != nil {
		return err
	}
	if !c.inRoom(m.Room) {
		return ErrNotMember
	}
	h := c.hub
	if h.opts.AuthorizePublish != nil {
		var err error
		h.userCode(func() { err = h.opts.AuthorizePublish(c, m) })
		if err != nil {
			return fmt.Errorf("%w: %w", ErrPublishDenied, err)
		}
	}
	out := Message{Type: TypeMessage, Room: m.Room, From: c.id, Data: m.Data}
	if h.log != nil {
		if p := h.roomPolicy(m.Room); p.on() {
			a, err := h.startLog(c.ctx, m.Room, &out, c, nil, p)
			if err != nil {
				return err
			}
			c.pipeline(m.ID, m.Room, a)
			return errPipelined
		}
	}
	if _, ok := h.opts.Broker.(AsyncBroker); ok {
		b, err := h.startBus(c.ctx, m.Room, &out, nil)
		if err != nil {
			return err
		}
		c.pipeline(m.ID, m.Room, b)
		return errPipelined
	}
	return h.publish(c.ctx, m.Room, &out, c, nil, HistoryPolicy{})
}

// reply sends a protocol answer, on the read goroutine, which then waits
// if the reply congested the client's queue. Codecs that cannot carry it
// (RawCodec) leave the client without one.
func (c *Client) reply(m *Message) {
	c.piped.Wait() // the acker answers earlier publishes first
	congested, err := c.send(m)
	if congested {
		c.congested(c)
	}
	if err != nil && !errors.Is(err, ErrClientClosed) {
		c.hub.opts.Logger.Debug("wshub: reply not sent", "client", c.id, "err", err)
	}
}
