// Package wshubtest helps test applications built on wshub, in the spirit
// of net/http/httptest: it serves a hub on a loopback test server, dials
// clients that speak the JSON protocol, and asserts on what they receive,
// with timeouts and clear failure messages.
//
//	func TestChat(t *testing.T) {
//		s := wshubtest.NewServer(t, nil, &wshub.Options{AuthorizeJoin: allow})
//		alice, bob := s.Dial(t, "?name=alice"), s.Dial(t, "?name=bob")
//		alice.Join("lobby")
//		bob.Join("lobby")
//		alice.Publish("lobby", "hi")
//		if m := bob.Expect(wshub.TypeMessage); string(m.Data.(json.RawMessage)) != `"hi"` { … }
//		bob.ExpectNothing(100 * time.Millisecond)
//	}
package wshubtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// DefaultTimeout is a Client's Timeout unless set, and bounds the hub's
// Shutdown at the end of a test.
const DefaultTimeout = 10 * time.Second

// Server is a hub served over HTTP on a loopback address, at /ws.
type Server struct {
	*httptest.Server
	Hub *wshub.Hub
	URL string // the hub's WebSocket URL: ws://127.0.0.1:port/ws
}

// NewServer starts a hub made with wshub.New(handler, opts) on a test
// server. The test's cleanup shuts the hub down (then closes it if that
// takes longer than DefaultTimeout) and closes the server.
func NewServer(t testing.TB, handler wshub.Handler, opts *wshub.Options) *Server {
	t.Helper()
	h := wshub.New(handler, opts)
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	ts := httptest.NewServer(mux)
	s := &Server{Server: ts, Hub: h, URL: "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
		defer cancel()
		h.Shutdown(ctx)
		ts.Close()
	})
	return s
}

// Client is a test client speaking the JSON protocol (one message per
// frame). Its methods fail the test, with what was expected and what came,
// rather than return errors; call them from the test's goroutine.
type Client struct {
	// Timeout bounds each wait: a write, an Expect. Default:
	// DefaultTimeout.
	Timeout time.Duration

	t      testing.TB
	conn   *websocket.Conn
	frames chan frame
	done   chan struct{} // closed by the test's cleanup
	next   int
}

type frame struct {
	m   *wshub.Message
	raw []byte
	err error
}

// Dial connects a client to the hub, with query (e.g. "?name=alice")
// appended to its URL. The test's cleanup closes it.
func (s *Server) Dial(t testing.TB, query string) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, s.URL+query, nil)
	if err != nil {
		t.Fatalf("wshubtest: dial %s: %v", s.URL+query, err)
	}
	conn.SetReadLimit(-1)
	c := &Client{Timeout: DefaultTimeout, t: t, conn: conn, frames: make(chan frame, 64), done: make(chan struct{})}
	go c.read()
	t.Cleanup(func() {
		close(c.done)
		conn.CloseNow()
	})
	return c
}

func (c *Client) read() {
	defer close(c.frames)
	for {
		f := frame{}
		_, b, err := c.conn.Read(context.Background())
		switch {
		case err != nil:
			f.err = err
		default:
			f.raw, f.m = b, new(wshub.Message)
			if err := (wshub.JSONCodec{}).Unmarshal(b, f.m); err != nil {
				f.m, f.err = nil, fmt.Errorf("undecodable frame %s: %w", b, err)
			}
		}
		select {
		case c.frames <- f:
		case <-c.done:
			return
		}
		if f.raw == nil {
			return
		}
	}
}

// Conn returns the client's WebSocket connection, for what the helpers do
// not cover (a raw frame, a close code).
func (c *Client) Conn() *websocket.Conn { return c.conn }

// Send sends m as one JSON frame.
func (c *Client) Send(m *wshub.Message) {
	c.t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		c.t.Fatalf("wshubtest: encode %+v: %v", m, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.Timeout)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("wshubtest: send %s: %v", b, err)
	}
}

// Next returns the next message the client receives, failing the test if
// none comes within Timeout or the connection ends.
func (c *Client) Next() *wshub.Message {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		switch {
		case !ok:
			c.t.Fatalf("wshubtest: connection ended; expected a message")
		case f.err != nil:
			c.t.Fatalf("wshubtest: expected a message: %v", f.err)
		}
		return f.m
	case <-time.After(c.Timeout):
		c.t.Fatalf("wshubtest: no message within %v", c.Timeout)
	}
	return nil
}

// Expect returns the next message, failing the test unless it has type
// typ.
func (c *Client) Expect(typ string) *wshub.Message {
	c.t.Helper()
	m := c.Next()
	if m.Type != typ {
		c.t.Fatalf("wshubtest: expected a %q message, got %s", typ, describe(m))
	}
	return m
}

// ExpectData returns the next message, failing the test unless it is a
// room message of room whose data is the JSON encoding of data.
func (c *Client) ExpectData(room string, data any) *wshub.Message {
	c.t.Helper()
	want, err := json.Marshal(data)
	if err != nil {
		c.t.Fatalf("wshubtest: encode %v: %v", data, err)
	}
	m := c.Expect(wshub.TypeMessage)
	got, _ := m.Data.(json.RawMessage)
	if m.Room != room || string(got) != string(want) {
		c.t.Fatalf("wshubtest: expected a message in %q with data %s, got %s", room, want, describe(m))
	}
	return m
}

// ExpectNothing fails the test if the client receives anything within d.
func (c *Client) ExpectNothing(d time.Duration) {
	c.t.Helper()
	select {
	case f, ok := <-c.frames:
		if !ok || f.err != nil {
			c.t.Fatalf("wshubtest: expected nothing within %v, the connection ended: %v", d, f.err)
		}
		c.t.Fatalf("wshubtest: expected nothing within %v, got %s", d, describe(f.m))
	case <-time.After(d):
	}
}

// ExpectClose reads until the connection ends and fails the test unless
// the server closed it with code.
func (c *Client) ExpectClose(code websocket.StatusCode) {
	c.t.Helper()
	timeout := time.After(c.Timeout)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("wshubtest: expected close status %d, the connection had ended", code)
			}
			if f.raw == nil {
				if got := websocket.CloseStatus(f.err); got != code {
					c.t.Fatalf("wshubtest: expected close status %d, got %d (%v)", code, got, f.err)
				}
				return
			}
		case <-timeout:
			c.t.Fatalf("wshubtest: connection not closed within %v", c.Timeout)
		}
	}
}

// Request sends m with a new ID and returns the server's answer, an ack
// or an error frame; messages that come before the answer fail the test
// (use Send and Next to see them).
func (c *Client) Request(m *wshub.Message) *wshub.Message {
	c.t.Helper()
	c.next++
	out := *m
	out.ID = "wshubtest-" + strconv.Itoa(c.next)
	c.Send(&out)
	ans := c.Next()
	if (ans.Type != wshub.TypeAck && ans.Type != wshub.TypeError) || ans.ID != out.ID {
		c.t.Fatalf("wshubtest: expected the answer to %s %q, got %s", out.Type, out.ID, describe(ans))
	}
	return ans
}

// mustAck sends m and fails the test unless it is acked.
func (c *Client) mustAck(m *wshub.Message) *wshub.Message {
	c.t.Helper()
	ans := c.Request(m)
	if ans.Type != wshub.TypeAck {
		c.t.Fatalf("wshubtest: %s %q refused: %s", m.Type, m.Room, ans.Error)
	}
	return ans
}

// Join joins room and returns the ack; it fails the test if the join is
// refused or anything comes before the ack (a room with history or
// presence sends some: use Request and Next there).
func (c *Client) Join(room string) *wshub.Message {
	c.t.Helper()
	return c.mustAck(&wshub.Message{Type: wshub.TypeJoin, Room: room})
}

// Leave leaves room, failing the test if the server refuses.
func (c *Client) Leave(room string) {
	c.t.Helper()
	c.mustAck(&wshub.Message{Type: wshub.TypeLeave, Room: room})
}

// Publish publishes data to room and expects, as the protocol says, the
// client's own message and then the ack.
func (c *Client) Publish(room string, data any) {
	c.t.Helper()
	c.next++
	id := "wshubtest-" + strconv.Itoa(c.next)
	c.Send(&wshub.Message{Type: wshub.TypePublish, Room: room, Data: data, ID: id})
	c.ExpectData(room, data)
	if ans := c.Next(); ans.Type != wshub.TypeAck || ans.ID != id {
		c.t.Fatalf("wshubtest: expected the ack of the publish to %q, got %s", room, describe(ans))
	}
}

// Close closes the connection normally.
func (c *Client) Close() { c.conn.Close(websocket.StatusNormalClosure, "") }

func describe(m *wshub.Message) string {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Sprintf("%+v", m)
	}
	return string(b)
}
