package main

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
)

// coderHub is the baseline: the minimal hub one writes directly on
// coder/websocket. The handler goroutine reads; one writer goroutine per
// client drains a buffered channel with one conn.Write per message. A
// client whose channel is full is closed, as wshub does.
type coderHub struct {
	mu    sync.RWMutex
	rooms map[string]map[*coderClient]struct{}

	nMembers atomic.Int64
	nKicked  atomic.Uint64
}

type coderClient struct {
	conn   *websocket.Conn
	send   chan []byte
	ctx    context.Context
	cancel context.CancelFunc
}

func newCoderHub() (server, error) {
	return &coderHub{rooms: make(map[string]map[*coderClient]struct{})}, nil
}

func (h *coderHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	room := r.URL.Query().Get("room")
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &coderClient{conn: conn, send: make(chan []byte, 256), ctx: ctx, cancel: cancel}
	h.add(room, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.writeLoop()
	}()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			break
		}
		h.publish(room, data)
	}
	h.remove(room, c)
	cancel()
	<-done
	conn.CloseNow()
}

func (c *coderClient) writeLoop() {
	for {
		select {
		case msg := <-c.send:
			if err := c.conn.Write(c.ctx, websocket.MessageText, msg); err != nil {
				c.cancel()
				return
			}
		case <-c.ctx.Done():
			return
		}
	}
}

func (h *coderHub) add(room string, c *coderClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.rooms[room]
	if m == nil {
		m = make(map[*coderClient]struct{})
		h.rooms[room] = m
	}
	m[c] = struct{}{}
	h.nMembers.Add(1)
}

func (h *coderHub) remove(room string, c *coderClient) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.rooms[room]
	if _, ok := m[c]; !ok {
		return
	}
	delete(m, c)
	if len(m) == 0 {
		delete(h.rooms, room)
	}
	h.nMembers.Add(-1)
}

func (h *coderHub) publish(room string, payload []byte) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for c := range h.rooms[room] {
		select {
		case c.send <- payload:
		default:
			h.nKicked.Add(1)
			c.cancel()
		}
	}
	return nil
}

func (h *coderHub) members() int   { return int(h.nMembers.Load()) }
func (h *coderHub) kicked() uint64 { return h.nKicked.Load() }
func (h *coderHub) close()         {}
