package main

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/wshub/wshub"
)

// wshubServer serves both wshub rows with the default options: clients
// pick the JSON or the batching JSON codec by subprotocol and join rooms
// with the wshub protocol.
type wshubServer struct {
	hub *wshub.Hub

	mu    sync.Mutex
	rooms map[string]struct{} // every room ever joined, to count members
}

func newWshub() (server, error) {
	s := &wshubServer{rooms: make(map[string]struct{})}
	s.hub = wshub.New(nil, &wshub.Options{
		AuthorizeJoin: func(_ *wshub.Client, room string) error {
			s.mu.Lock()
			s.rooms[room] = struct{}{}
			s.mu.Unlock()
			return nil
		},
	})
	return s, nil
}

func (s *wshubServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.hub.ServeHTTP(w, r) }

func (s *wshubServer) publish(room string, payload []byte) error {
	return s.hub.Room(room).Broadcast(context.Background(), &wshub.Message{Data: json.RawMessage(payload)})
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
