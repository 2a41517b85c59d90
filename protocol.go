package wshub

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
)

// The protocol, on a client's read goroutine: read a frame, decode it,
// handle it (join, leave, publish, presence, or the Handler), answer it
// with an ack or an error in the order of the requests, then wait for the
// queues it congested (flow.go) before reading the next.

// run serves the client on its read goroutine until it disconnects or
// parks (park.go).
func (c *Client) run() {
	c.hub.keep.add(c.hub, c)
	c.started()
	c.serve(false)
}

// serve reads and handles the client's messages until it disconnects, and
// then cleans up, or until it parks; woken says that a parked reader was
// woken. The reader, from run to the cleanup, counts as one of the hub's
// goroutines, parked or not.
func (c *Client) serve(woken bool) {
	err := c.readLoop(woken)
	if err == errParked {
		return
	}
	c.finish(err)
}

// finish cleans up after the client's connection ended with err.
func (c *Client) finish(err error) {
	defer c.hub.release()
	h := c.hub
	if ce, ok := errors.AsType[websocket.CloseError](err); ok {
		err = ce // the peer closed: its status and reason are the whole story
	}
	c.closeWith(0, "", err, false)
	h.keep.remove(c)
	c.mu.Lock()
	if c.authStop != nil {
		c.authStop()
	}
	c.mu.Unlock()
	c.conn.CloseNow()
	c.writers.Wait()
	h.poll.forget(c.fd, c)
	h.forget(c)
	c.cancel()

	c.mu.Lock()
	cause, code := c.cause, c.closeCode
	if c.cut {
		code = 0
	}
	c.mu.Unlock()
	h.m.closed(cause, code)
	h.opts.Logger.Debug("wshub: client disconnected", "client", c.id, "reason", cause)
	if h.opts.OnDisconnect != nil && c.signed {
		h.userCode(func() { h.opts.OnDisconnect(c, cause) })
	}
}

// readLoop reads and handles messages until the connection fails, or
// until nothing is left to read and the reader parks (errParked). Once the
// client is closing, it reads only to see the peer's close frame.
func (c *Client) readLoop(woken bool) error {
	for {
		if c.ctx.Err() == nil && c.mayPark() && (!woken || c.probe()) && c.park() {
			return errParked
		}
		woken = false
		typ, data, err := c.conn.Read(context.Background())
		if err != nil {
			return err
		}
		c.hub.m.messagesIn.Add(1)
		if c.ctx.Err() != nil {
			continue
		}
		if !c.signed {
			c.signIn(typ, data)
			continue
		}
		c.dispatch(typ, data)
		c.awaitFlow()
	}
}

// dispatch handles one inbound frame.
func (c *Client) dispatch(typ websocket.MessageType, data []byte) {
	if typ == websocket.MessageText && !utf8.Valid(data) {
		err := fmt.Errorf("%w: text frame is not valid UTF-8", errInvalidMessage)
		c.closeWith(websocket.StatusInvalidFramePayloadData, "invalid UTF-8", err, true)
		return
	}
	var m Message
	if err := c.decode(typ, data, &m); err != nil {
		c.hub.m.in[inInvalid].Add(1)
		c.refuse(&m, err, websocket.StatusInvalidFramePayloadData, "too many invalid messages")
		return
	}
	if !c.rate.allow(&c.hub.opts) {
		c.hub.m.in[inInvalid].Add(1)
		c.refuse(&m, errRateLimited, websocket.StatusPolicyViolation, "rate limit exceeded")
		return
	}
	c.hub.m.in[inSlot(m.Type)].Add(1)
	c.invalidRun = 0
	var read time.Time
	if m.Type == TypePublish {
		read = time.Now()
	}
	ack, err := c.handle(&m, read)
	if err == errPipelined || err == nil && m.ID == "" {
		return
	}
	if !read.IsZero() {
		c.hub.m.publishAck.since(read)
	}
	switch {
	case err != nil:
		c.reply(&Message{Type: TypeError, ID: m.ID, Room: m.Room, Error: err.Error()})
	default:
		if ack == nil {
			ack = &Message{Type: TypeAck}
		}
		ack.ID = m.ID
		c.reply(ack)
	}
}

// refuse answers a message that was not handled with an error frame, and
// closes the client with code after maxInvalidMessages in a row.
func (c *Client) refuse(m *Message, err error, code websocket.StatusCode, reason string) {
	c.invalidRun++
	c.reply(&Message{Type: TypeError, ID: m.ID, Room: m.Room, Error: err.Error()})
	if c.invalidRun >= maxInvalidMessages {
		c.closeWith(code, reason, err, true)
	}
}

func (c *Client) decode(typ websocket.MessageType, data []byte, m *Message) error {
	if binary := typ == websocket.MessageBinary; binary != c.codec.Binary() {
		kind := "text"
		if binary {
			kind = "binary"
		}
		return fmt.Errorf("%w: unexpected %s frame for codec %s", errInvalidMessage, kind, c.codec.Name())
	}
	if err := c.codec.Unmarshal(data, m); err != nil {
		return fmt.Errorf("%w: %v", errInvalidMessage, err)
	}
	return nil
}

// handle handles a decoded message and returns its ack, if not the plain
// one. read is when a publish was read.
func (c *Client) handle(m *Message, read time.Time) (*Message, error) {
	h := c.hub
	switch m.Type {
	case TypeJoin:
		ack, err := c.join(m)
		h.m.joined(m, ack, err)
		return ack, err
	case TypeLeave:
		return nil, c.Leave(m.Room)
	case TypePublish:
		return nil, c.publish(m, read)
	case TypePresence:
		return nil, c.presenceRequest(m)
	case TypeAuth, TypeRefresh:
		if h.opts.AuthenticateToken != nil {
			return nil, c.refresh(m)
		}
	}
	if h.handler == nil {
		return nil, fmt.Errorf("%w: %q", errUnknownType, m.Type)
	}
	var err error
	h.userCode(func() { err = h.handler.ServeMessage(c.ctx, c, m) })
	return nil, err
}

// join handles a client's join request, with its history fields.
func (c *Client) join(m *Message) (*Message, error) {
	h := c.hub
	if err := validRoom(m.Room); err != nil {
		return nil, err
	}
	switch {
	case m.History < 0:
		return nil, fmt.Errorf("%w: history %d is negative", errInvalidMessage, m.History)
	case m.Since > 0 && m.Epoch == "":
		return nil, fmt.Errorf("%w: since needs the epoch it refers to", errInvalidMessage)
	case len(m.Epoch) > maxEpochLen:
		return nil, fmt.Errorf("%w: epoch longer than %d bytes", errInvalidMessage, maxEpochLen)
	}
	if m.Token != "" && h.opts.AuthorizeGrant != nil {
		return c.joinGranted(m)
	}
	if h.opts.AuthorizeJoin == nil {
		h.denyHint.Do(func() {
			h.opts.Logger.Warn("wshub: join denied: Options.AuthorizeJoin is nil, which denies every join a client asks for", "room", m.Room)
		})
		return nil, errJoinDenied
	}
	var err error
	h.userCode(func() { err = h.opts.AuthorizeJoin(c, m.Room) })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errJoinDenied, err)
	}
	ack, err := h.join(c, m.Room, m)
	if err == nil {
		c.asked(m.Room)
	}
	return ack, err
}

func (c *Client) publish(m *Message, read time.Time) error {
	rm, err := c.roomOf(m.Room)
	if err != nil {
		return err
	}
	h := c.hub
	if h.opts.AuthorizePublish != nil {
		h.userCode(func() { err = h.opts.AuthorizePublish(c, m) })
		if err != nil {
			return fmt.Errorf("%w: %w", errPublishDenied, err)
		}
	}
	out := Message{Type: TypeMessage, Room: m.Room, From: c.id, Data: m.Data}
	p, err := h.start(c.ctx, m.Room, rm, rm.opts, &out, c, nil)
	if err != nil {
		return err
	}
	if h.memory {
		// The memory engine keeps a message before Publish returns, and
		// delivers it at once or as soon as the publish before it is
		// delivered: wait here, so that a client has one publish at a
		// time beyond a congested queue, as flow.go says.
		congested, err := p.finish()
		c.waitFor = append(c.waitFor, congested...)
		return err
	}
	c.pipeline(m.ID, m.Room, p, read)
	return errPipelined
}

// reply sends a protocol answer, on the read goroutine, which then waits
// if the reply congested the client's queue. Codecs that cannot carry it
// (RawCodec) leave the client without one.
func (c *Client) reply(m *Message) {
	c.piped.Wait() // the acker answers earlier publishes first
	congested, err := c.send(m, qReply)
	if congested {
		c.congested(c)
	}
	if err != nil && !errors.Is(err, ErrClientClosed) {
		c.hub.opts.Logger.Debug("wshub: reply not sent", "client", c.id, "err", err)
	}
}

// Pipelining. With an engine other than the memory engine, a client's
// publishes are handed over one after another, in order, on its read goroutine,
// which goes on reading while up to pipeWindow of them are in flight. The
// client's acker goroutine waits for each in turn and answers it, so acks
// (and errors) come in the order of the publishes; the read goroutine
// waits for the acker to be done before it answers anything itself. The
// acker and its channel exist only while publishes are in flight, so that
// a reader may park meanwhile (park.go) and an idle client holds neither.

// pipeWindow bounds a client's publishes in flight.
const pipeWindow = 32

// errPipelined tells dispatch that the acker answers the message.
var errPipelined = errors.New("wshub: answered by the acker")

type pipeItem struct {
	id, room string
	p        *pending
	read     time.Time // when the publish was read
}

// pipeline passes p, a publish with id handed to the engine, to the
// acker, waiting while the window is full.
func (c *Client) pipeline(id, room string, p *pending, read time.Time) {
	c.pipeMu.Lock()
	pipe := c.pipe
	if pipe == nil {
		pipe = make(chan pipeItem, pipeWindow)
		c.pipe = pipe
		c.spawn(func() { c.acker(pipe) })
	}
	c.inFlight++ // before the send: the acker ends only when none is left
	c.pipeMu.Unlock()
	c.piped.Add(1)
	pipe <- pipeItem{id, room, p, read}
}

// acker answers the client's pipelined publishes in order, once kept and
// delivered to this hub's members, and waits for the queues their
// delivery congested (flow.go); it ends when none is left in flight.
func (c *Client) acker(pipe <-chan pipeItem) {
	for it := range pipe {
		congested, err := it.p.finish()
		c.awaitClients(congested)
		var answer *Message
		switch {
		case err != nil:
			answer = &Message{Type: TypeError, ID: it.id, Room: it.room, Error: err.Error()}
		case it.id != "":
			answer = &Message{Type: TypeAck, ID: it.id}
		}
		if answer != nil {
			c.hub.m.publishAck.since(it.read)
			if congested, _ := c.send(answer, qReply); congested {
				c.awaitClients([]*Client{c})
			}
		}
		c.piped.Done()
		c.pipeMu.Lock()
		c.inFlight--
		if c.inFlight == 0 {
			c.pipe = nil
			c.pipeMu.Unlock()
			return
		}
		c.pipeMu.Unlock()
	}
}
