package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// client is the shared benchmark client, a gorilla/websocket connection
// whose read loop counts deliveries. It counts the messages in a frame by
// the "ts" key of the payload, so a frame carrying a batch of messages
// (wshub.json-batch arrays, centrifuge's newline-separated replies,
// gorilla-batch's newline-joined messages) counts each of them, and frames
// without a payload (acks, replies) count nothing.
type client struct {
	conn     *websocket.Conn
	room     int
	received atomic.Int64
	frames   atomic.Int64 // frames that carried at least one message
	lost     atomic.Bool  // the connection failed before close
	closing  atomic.Bool
	done     chan struct{}

	// why says how a lost connection ended; it is set before lost.
	why string

	// wmu serializes writes: the read loop answers centrifuge pings while
	// a flood publisher writes on the same connection.
	wmu sync.Mutex

	// stamp, when set before start, makes the read loop keep in last the
	// time (unix ns) of the latest message received.
	stamp bool
	last  atomic.Int64

	// hist, when set, records the latency of each message received while
	// *recording is true.
	hist      *histogram
	recording *atomic.Bool

	// onFrame, when set before start, sees every frame the read loop
	// reads, before it is counted.
	onFrame func(data []byte)
}

var tsKey = []byte(`"ts":`)

var dialer = websocket.Dialer{
	HandshakeTimeout: setupTimeout,
	NetDialContext:   (&net.Dialer{Timeout: setupTimeout}).DialContext,
}

// dial connects to the contender's server at addr and joins room.
func dial(ctx context.Context, addr string, p protocol, room string) (*websocket.Conn, error) {
	d := dialer
	d.Subprotocols = p.subprotocols()
	conn, resp, err := d.DialContext(ctx, "ws://"+addr+"/ws"+p.query(room), nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	if err := p.join(conn, room); err != nil {
		conn.Close()
		return nil, fmt.Errorf("join %s: %w", room, err)
	}
	return conn, nil
}

// connectAll connects n clients, client i to room roomOf(i), at most 64
// dials at a time, and starts their read loops.
func connectAll(ctx context.Context, addr string, p protocol, n int, roomOf func(i int) int) ([]*client, error) {
	clients := make([]*client, n)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	sem := make(chan struct{}, 64)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r := roomOf(i)
			conn, err := dial(ctx, addr, p, roomName(r))
			if err != nil {
				mu.Lock()
				ferr = cmpOr(ferr, err)
				mu.Unlock()
				return
			}
			clients[i] = &client{conn: conn, room: r, done: make(chan struct{})}
		})
	}
	wg.Wait()
	if ferr != nil {
		for _, c := range clients {
			if c != nil {
				c.conn.Close()
			}
		}
		return nil, ferr
	}
	return clients, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func roomName(i int) string { return fmt.Sprintf("room-%d", i) }

// start starts the read loops of clients.
func start(clients []*client) {
	for _, c := range clients {
		go c.readLoop()
	}
}

func (c *client) readLoop() {
	defer close(c.done)
	var buf bytes.Buffer
	for {
		_, r, err := c.conn.NextReader()
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			if !c.closing.Load() {
				c.why = closeReason(err)
				c.lost.Store(true)
			}
			return
		}
		if c.onFrame != nil {
			c.onFrame(buf.Bytes())
		}
		c.count(buf.Bytes())
	}
}

func (c *client) count(data []byte) {
	n := bytes.Count(data, tsKey)
	if n == 0 {
		if string(data) == "{}" {
			// A centrifuge ping: answer with a pong.
			c.write(data)
		}
		return
	}
	if c.hist != nil && c.recording.Load() {
		now := time.Now().UnixNano()
		for rest := data; ; {
			i := bytes.Index(rest, tsKey)
			if i < 0 {
				break
			}
			rest = rest[i+len(tsKey):]
			c.hist.record((now - parseInt(rest)) / 1000)
		}
	}
	if c.stamp {
		c.last.Store(time.Now().UnixNano())
	}
	c.received.Add(int64(n))
	c.frames.Add(1)
}

// write sends one text frame; it may be called while the read loop runs.
func (c *client) write(data []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.conn.WriteMessage(websocket.TextMessage, data)
}

// closeReason names how a connection ended: the close status and reason
// the server sent, or that it was cut without a close frame.
func closeReason(err error) string {
	ce, ok := errors.AsType[*websocket.CloseError](err)
	if !ok {
		if oe, ok := errors.AsType[*net.OpError](err); ok {
			err = oe.Err // without the addresses, which differ per client
		}
		return "cut: " + err.Error()
	}
	switch ce.Code {
	case websocket.CloseAbnormalClosure:
		return "cut without a close frame"
	case websocket.CloseNoStatusReceived:
		return "close frame without a status"
	}
	if ce.Text == "" {
		return strconv.Itoa(ce.Code)
	}
	return strconv.Itoa(ce.Code) + " " + ce.Text
}

// parseInt parses the decimal digits at the start of b.
func parseInt(b []byte) int64 {
	var v int64
	for _, d := range b {
		if d < '0' || d > '9' {
			break
		}
		v = v*10 + int64(d-'0')
	}
	return v
}

// closeAll cuts every client's connection and waits, at most a few
// seconds, for their read loops to end.
func closeAll(clients []*client) {
	for _, c := range clients {
		if c == nil {
			continue
		}
		c.closing.Store(true)
		c.conn.Close()
	}
	deadline := time.After(5 * time.Second)
	for _, c := range clients {
		if c == nil {
			continue
		}
		select {
		case <-c.done:
		case <-deadline:
			return
		}
	}
}

// countLost returns how many clients lost their connection.
func countLost(clients []*client) int {
	n := 0
	for _, c := range clients {
		if c.lost.Load() {
			n++
		}
	}
	return n
}

func totalReceived(clients []*client) int64 {
	var n int64
	for _, c := range clients {
		n += c.received.Load()
	}
	return n
}

func totalFrames(clients []*client) int64 {
	var n int64
	for _, c := range clients {
		n += c.frames.Load()
	}
	return n
}
