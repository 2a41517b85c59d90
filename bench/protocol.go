package main

import (
	"bytes"
	"fmt"
	"net/url"
	"time"

	"github.com/gorilla/websocket"
)

// A protocol is how the shared client joins a room, publishes to it and
// leaves it on one contender.
type protocol interface {
	subprotocols() []string
	// query is the URL query of a client of room.
	query(room string) string
	// join makes a freshly dialed connection a member of room and returns
	// once the server confirmed it (or at once if it has no confirmation).
	join(conn *websocket.Conn, room string) error
	// publishFrame is the frame a client sends to publish payload to room.
	publishFrame(room string, payload []byte) []byte
	// leave leaves room before a clean disconnect.
	leave(conn *websocket.Conn, room string) error
}

// setupTimeout bounds each request-reply exchange of a join.
const setupTimeout = 10 * time.Second

// queryProtocol is the protocol of the hubs without one: the room is a
// query parameter, a frame from the client is published to its room and
// disconnecting leaves it.
type queryProtocol struct{}

func (queryProtocol) subprotocols() []string                 { return nil }
func (queryProtocol) query(room string) string               { return "?room=" + url.QueryEscape(room) }
func (queryProtocol) join(*websocket.Conn, string) error     { return nil }
func (queryProtocol) publishFrame(_ string, p []byte) []byte { return p }
func (queryProtocol) leave(*websocket.Conn, string) error    { return nil }

// wshubProtocol speaks wshub's JSON protocol, with the batching codec when
// batch is set.
type wshubProtocol struct{ batch bool }

func (p wshubProtocol) subprotocols() []string {
	if p.batch {
		return []string{"wshub.json-batch"}
	}
	return []string{"wshub.json"}
}

func (wshubProtocol) query(string) string { return "" }

func (wshubProtocol) join(conn *websocket.Conn, room string) error {
	req := fmt.Sprintf(`{"type":"join","room":%q,"id":"j"}`, room)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(req)); err != nil {
		return err
	}
	return waitFor(conn, `"id":"j"`, `"type":"ack"`)
}

func (wshubProtocol) publishFrame(room string, payload []byte) []byte {
	return fmt.Appendf(nil, `{"type":"publish","room":%q,"data":%s}`, room, payload)
}

func (wshubProtocol) leave(conn *websocket.Conn, room string) error {
	return conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"leave","room":%q}`, room))
}

// centrifugeProtocol speaks centrifuge's JSON protocol (version 2):
// commands are JSON objects with an id, replies carry the same id, and
// pushes (publications) carry none.
type centrifugeProtocol struct{}

func (centrifugeProtocol) subprotocols() []string { return nil }
func (centrifugeProtocol) query(string) string    { return "" }

func (centrifugeProtocol) join(conn *websocket.Conn, room string) error {
	if err := conn.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{"name":"bench"}}`)); err != nil {
		return err
	}
	if err := waitFor(conn, `"id":1`, `"connect"`); err != nil {
		return err
	}
	req := fmt.Sprintf(`{"id":2,"subscribe":{"channel":%q}}`, room)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(req)); err != nil {
		return err
	}
	return waitFor(conn, `"id":2`, `"subscribe"`)
}

func (centrifugeProtocol) publishFrame(room string, payload []byte) []byte {
	return fmt.Appendf(nil, `{"id":3,"publish":{"channel":%q,"data":%s}}`, room, payload)
}

func (centrifugeProtocol) leave(conn *websocket.Conn, room string) error {
	return conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":4,"unsubscribe":{"channel":%q}}`, room))
}

// waitFor reads frames until one contains every one of subs. A frame
// with an error answer ends the wait with that error.
func waitFor(conn *websocket.Conn, subs ...string) error {
	conn.SetReadDeadline(time.Now().Add(setupTimeout))
	defer conn.SetReadDeadline(time.Time{})
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(`"error"`)) {
			return fmt.Errorf("server answered %s", data)
		}
		if containsAll(data, subs) {
			return nil
		}
	}
}

func containsAll(data []byte, subs []string) bool {
	for _, s := range subs {
		if !bytes.Contains(data, []byte(s)) {
			return false
		}
	}
	return true
}
