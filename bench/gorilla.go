package main

import (
	"net/http"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// gorillaHub is a hub in the style of gorilla/websocket's chat example:
// one hub goroutine owns the rooms and takes register, unregister and
// broadcast requests on channels; each client has a buffered send channel
// drained by its writePump and a readPump on the handler goroutine. A
// client whose channel is full is dropped by the hub. In the gorilla row
// each message is its own frame; in the gorilla-batch row (batch set) the
// writePump does what the example's does: one frame per wake, the first
// message and then every message already queued in the send channel,
// joined with newlines (a JSON client must split a frame at them, which
// the bench's client does not need: it counts the "ts" keys of a frame).
type gorillaHub struct {
	batch      bool
	upgrader   websocket.Upgrader
	register   chan *gorillaClient
	unregister chan *gorillaClient
	broadcast  chan roomMessage
	done       chan struct{}
	stopped    chan struct{}

	nMembers atomic.Int64
	nKicked  atomic.Uint64
}

type roomMessage struct {
	room string
	data []byte
}

type gorillaClient struct {
	hub  *gorillaHub
	conn *websocket.Conn
	room string
	send chan []byte
}

const (
	gorillaWriteWait  = 10 * time.Second
	gorillaPongWait   = 60 * time.Second
	gorillaPingPeriod = gorillaPongWait * 9 / 10
)

func newGorillaHub() (server, error) { return startGorillaHub(false), nil }

// newGorillaBatchHub is newGorillaHub whose writePumps join the queued
// messages into one frame with newlines, as gorilla's chat example does.
func newGorillaBatchHub() (server, error) { return startGorillaHub(true), nil }

func startGorillaHub(batch bool) *gorillaHub {
	h := &gorillaHub{
		batch:      batch,
		upgrader:   websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024},
		register:   make(chan *gorillaClient),
		unregister: make(chan *gorillaClient),
		broadcast:  make(chan roomMessage),
		done:       make(chan struct{}),
		stopped:    make(chan struct{}),
	}
	go h.run()
	return h
}

func (h *gorillaHub) run() {
	defer close(h.stopped)
	rooms := make(map[string]map[*gorillaClient]bool)
	drop := func(c *gorillaClient) {
		m := rooms[c.room]
		if !m[c] {
			return
		}
		delete(m, c)
		if len(m) == 0 {
			delete(rooms, c.room)
		}
		close(c.send)
		h.nMembers.Add(-1)
	}
	for {
		select {
		case c := <-h.register:
			if rooms[c.room] == nil {
				rooms[c.room] = make(map[*gorillaClient]bool)
			}
			rooms[c.room][c] = true
			h.nMembers.Add(1)
		case c := <-h.unregister:
			drop(c)
		case m := <-h.broadcast:
			for c := range rooms[m.room] {
				select {
				case c.send <- m.data:
				default:
					h.nKicked.Add(1)
					drop(c)
				}
			}
		case <-h.done:
			return
		}
	}
}

func (h *gorillaHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, err := h.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &gorillaClient{hub: h, conn: conn, room: r.URL.Query().Get("room"), send: make(chan []byte, 256)}
	select {
	case h.register <- c:
	case <-h.done:
		conn.Close()
		return
	}
	go c.writePump()
	c.readPump()
}

func (c *gorillaClient) readPump() {
	defer func() {
		select {
		case c.hub.unregister <- c:
		case <-c.hub.done:
		}
		c.conn.Close()
	}()
	c.conn.SetReadLimit(32 << 10)
	c.conn.SetReadDeadline(time.Now().Add(gorillaPongWait))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(gorillaPongWait))
	})
	for {
		_, msg, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		select {
		case c.hub.broadcast <- roomMessage{room: c.room, data: msg}:
		case <-c.hub.done:
			return
		}
	}
}

func (c *gorillaClient) writePump() {
	ticker := time.NewTicker(gorillaPingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case msg, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(gorillaWriteWait))
			if !ok {
				c.conn.WriteMessage(websocket.CloseMessage, nil)
				return
			}
			if c.hub.batch {
				if err := c.writeQueued(msg); err != nil {
					return
				}
				continue
			}
			if err := c.conn.WriteMessage(websocket.TextMessage, msg); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(gorillaWriteWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}

var newline = []byte{'\n'}

// writeQueued writes msg and every message already queued in c.send as
// one text frame, newline-separated: the writePump of gorilla's chat
// example (examples/chat/client.go), whose Write errors the Close
// reports.
func (c *gorillaClient) writeQueued(msg []byte) error {
	w, err := c.conn.NextWriter(websocket.TextMessage)
	if err != nil {
		return err
	}
	w.Write(msg)
	// Add the queued messages to the current frame.
	n := len(c.send)
	for range n {
		w.Write(newline)
		w.Write(<-c.send)
	}
	return w.Close()
}

func (h *gorillaHub) publish(room string, payload []byte) error {
	select {
	case h.broadcast <- roomMessage{room: room, data: payload}:
	case <-h.done:
	}
	return nil
}

func (h *gorillaHub) members() int   { return int(h.nMembers.Load()) }
func (h *gorillaHub) kicked() uint64 { return h.nKicked.Load() }

func (h *gorillaHub) close() {
	select {
	case <-h.done:
	default:
		close(h.done)
	}
	<-h.stopped
}
