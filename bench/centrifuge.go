package main

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/centrifugal/centrifuge"
)

// centrifugeServer is a centrifuge Node with its in-memory broker and
// default Config, serving its WebSocket transport. Clients speak the
// centrifuge JSON protocol (connect, subscribe, publish, unsubscribe);
// every connection and subscription is allowed. The server publishes with
// Node.Publish.
type centrifugeServer struct {
	node    *centrifuge.Node
	handler http.Handler

	mu       sync.Mutex
	channels map[string]struct{}

	nSlow atomic.Uint64
}

func newCentrifuge() (server, error) {
	node, err := centrifuge.New(centrifuge.Config{LogLevel: centrifuge.LogLevelNone})
	if err != nil {
		return nil, err
	}
	s := &centrifugeServer{node: node, channels: make(map[string]struct{})}
	node.OnConnecting(func(context.Context, centrifuge.ConnectEvent) (centrifuge.ConnectReply, error) {
		return centrifuge.ConnectReply{Credentials: &centrifuge.Credentials{}}, nil
	})
	node.OnConnect(func(c *centrifuge.Client) {
		c.OnSubscribe(func(e centrifuge.SubscribeEvent, cb centrifuge.SubscribeCallback) {
			s.mu.Lock()
			s.channels[e.Channel] = struct{}{}
			s.mu.Unlock()
			cb(centrifuge.SubscribeReply{}, nil)
		})
		c.OnPublish(func(_ centrifuge.PublishEvent, cb centrifuge.PublishCallback) {
			cb(centrifuge.PublishReply{}, nil)
		})
		c.OnDisconnect(func(e centrifuge.DisconnectEvent) {
			if e.Disconnect.Code == centrifuge.DisconnectSlow.Code {
				s.nSlow.Add(1)
			}
		})
	})
	if err := node.Run(); err != nil {
		return nil, err
	}
	s.handler = centrifuge.NewWebsocketHandler(node, centrifuge.WebsocketConfig{})
	return s, nil
}

func (s *centrifugeServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.handler.ServeHTTP(w, r)
}

func (s *centrifugeServer) publish(room string, payload []byte) error {
	_, err := s.node.Publish(room, payload)
	return err
}

func (s *centrifugeServer) members() int {
	s.mu.Lock()
	names := make([]string, 0, len(s.channels))
	for ch := range s.channels {
		names = append(names, ch)
	}
	s.mu.Unlock()
	n := 0
	for _, ch := range names {
		n += s.node.Hub().NumSubscribers(ch)
	}
	return n
}

func (s *centrifugeServer) kicked() uint64 { return s.nSlow.Load() }

func (s *centrifugeServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.node.Shutdown(ctx)
}
