package main

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/wshub/wshub"
)

// wshubServer serves the wshub rows: clients pick the JSON or the batching
// JSON codec by subprotocol and join rooms with the wshub protocol. The
// options are the defaults, but for history in the wshub-history row and
// the engine and history of the cluster scenario's hubs.
type wshubServer struct {
	hub *wshub.Hub
	// window is how many publishes a publisher goroutine of the child keeps
	// in flight (the cluster scenario's hubs), each a Room.Broadcast on a
	// goroutine of its own; at most 1, it calls Room.Broadcast one message
	// at a time.
	window int

	mu    sync.Mutex
	rooms map[string]struct{} // every room ever joined, to count members
}

// historyMessages is how many messages each room of the wshub-history row
// keeps: every room message is numbered and stored by the hub's default
// engine, in memory, which is what history costs a fan-out.
const historyMessages = 1000

func newWshub() (server, error) { return newWshubServer(nil, nil), nil }

// newWshubHistory is newWshub with every room keeping its last
// historyMessages messages.
func newWshubHistory() (server, error) {
	return newWshubServer(keepHistory, nil), nil
}

// keepHistory is the room options of every room of the history rows.
func keepHistory(string) wshub.RoomOptions {
	return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: historyMessages}}
}

// newWshubServer returns a wshub server with the default options but for
// rooms (Options.Rooms) and engine, which may be nil.
func newWshubServer(rooms func(room string) wshub.RoomOptions, engine wshub.Engine) *wshubServer {
	return newWshubServerWith(wshub.Options{Rooms: rooms, Engine: engine})
}

// newWshubServerWith returns a wshub server with opts, whose AuthorizeJoin
// it sets: every join is allowed, and its room counted by members.
func newWshubServerWith(opts wshub.Options) *wshubServer {
	s := &wshubServer{rooms: make(map[string]struct{})}
	opts.AuthorizeJoin = func(_ *wshub.Client, room string) error {
		s.mu.Lock()
		s.rooms[room] = struct{}{}
		s.mu.Unlock()
		return nil
	}
	s.hub = wshub.New(nil, &opts)
	return s
}

func (s *wshubServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.hub.ServeHTTP(w, r) }

func (s *wshubServer) publish(room string, payload []byte) error {
	return s.hub.Room(room).Broadcast(context.Background(), &wshub.Message{Data: json.RawMessage(payload)})
}

// publishWindow and startPublish make s a windowedServer. Room.Broadcast
// carries the calls of several goroutines at once, which is how a server
// keeps many messages in flight: each publish of the window is a
// Room.Broadcast on a goroutine of its own (so the messages of one window
// may go out in any order), and its wait returns that call's result.
func (s *wshubServer) publishWindow() int { return s.window }

func (s *wshubServer) startPublish(room string, payload []byte) (wait func() error) {
	done := make(chan error, 1)
	go func() { done <- s.publish(room, payload) }()
	return func() error { return <-done }
}

func (s *wshubServer) members() int {
	s.mu.Lock()
	names := make([]string, 0, len(s.rooms))
	for r := range s.rooms {
		names = append(names, r)
	}
	s.mu.Unlock()
	n := 0
	for _, r := range names {
		n += s.hub.Room(r).Len()
	}
	return n
}

func (s *wshubServer) kicked() uint64 { return s.hub.Stats().Kicked }
func (s *wshubServer) close()         { s.hub.Close() }
