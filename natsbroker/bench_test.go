package natsbroker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// BenchmarkFanOut measures deliveries per second to the clients of one
// room, all reading, when goroutines on the first hub call Room.Broadcast:
// 1,000 clients on one hub, with and without NATS, and 500 clients on each
// of two hubs sharing the room through NATS, with 1 publishing goroutine
// and with 10. An op is one broadcast, delivered to all 1,000 clients. Run
// it with
//
//	go test -run '^$' -bench FanOut ./natsbroker
func BenchmarkFanOut(b *testing.B) {
	for _, bc := range []struct {
		name           string
		nodes, clients int // clients per node
		broker         bool
		opts           *natsbroker.Options
	}{
		{"1node_1000clients_no_broker", 1, 1000, false, nil},
		{"1node_1000clients_nats", 1, 1000, true, nil},
		{"2nodes_500clients_nats", 2, 500, true, nil},
		{"2nodes_500clients_nats_noconfirm", 2, 500, true, &natsbroker.Options{NoConfirm: true}},
	} {
		for _, pubs := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s_%dpub", bc.name, pubs), func(b *testing.B) {
				benchFanOut(b, bc.nodes, bc.clients, pubs, bc.broker, bc.opts)
			})
		}
	}
}

func benchFanOut(b *testing.B, nodes, perNode, pubs int, broker bool, opts *natsbroker.Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var hubs []*wshub.Hub
	var servers []*httptest.Server
	if broker {
		s := startNATS(b, server.RANDOM_PORT)
		for _, n := range newNodes(b, s.ClientURL(), nodes, opts) {
			hubs, servers = append(hubs, n.Hub), append(servers, n.TS)
		}
	} else {
		h := wshub.New(nil, &wshub.Options{AuthorizeJoin: func(*wshub.Client, string) error { return nil }})
		mux := http.NewServeMux()
		mux.Handle("/ws", h)
		ts := httptest.NewServer(mux)
		b.Cleanup(func() { h.Close(); ts.Close() })
		hubs, servers = []*wshub.Hub{h}, []*httptest.Server{ts}
	}

	// Readers count deliveries and signal when the count reaches target.
	var delivered, target atomic.Int64
	reached := make(chan struct{}, 1)
	var readers sync.WaitGroup
	defer readers.Wait()
	total := int64(nodes * perNode)
	for _, ts := range servers {
		url := "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
		for range perNode {
			conn, _, err := websocket.Dial(ctx, url, nil)
			if err != nil {
				b.Fatalf("dial: %v", err)
			}
			defer conn.CloseNow()
			p := &et.Peer{T: b, Ctx: ctx, Conn: conn}
			p.Join("bench")
			readers.Go(func() {
				for {
					if _, _, err := conn.Read(ctx); err != nil {
						return
					}
					if delivered.Add(1) == target.Load() {
						select {
						case reached <- struct{}{}:
						default:
						}
					}
				}
			})
		}
	}
	waitFor := func(n int64) {
		target.Store(n)
		for delivered.Load() < n {
			select {
			case <-reached:
			case <-ctx.Done():
				b.Fatalf("delivered %d of %d", delivered.Load(), n)
			}
		}
	}

	// Publish in windows well below the clients' send queues, so that no
	// client is kicked for falling behind; the publishers share each
	// window.
	const window = 64
	room := hubs[0].Room("bench")
	msg := &wshub.Message{Data: map[string]any{"text": "hello, room", "n": 42}}
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		n := min(window, b.N-sent)
		var g sync.WaitGroup
		errs := make(chan error, pubs)
		for p := range pubs {
			share := n/pubs + btoi(p < n%pubs)
			g.Go(func() {
				for range share {
					if err := room.Broadcast(ctx, msg); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		g.Wait()
		close(errs)
		if err := <-errs; err != nil {
			b.Fatalf("broadcast: %v", err)
		}
		sent += n
		waitFor(int64(sent) * total)
	}
	b.ReportMetric(float64(int64(b.N)*total)/b.Elapsed().Seconds(), "deliveries/s")
	if k := kicked(hubs); k > 0 {
		b.Fatalf("%d clients kicked", k)
	}
	b.StopTimer()
	for _, h := range hubs {
		h.Close()
	}
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

// BenchmarkConfirmedPublish measures Broker.Publish in confirm mode, the
// default, with 1, 10 and 100 goroutines publishing at once on one broker
// to a room that another broker subscribes to. An op is one publish that
// returned nil, that is, one message the server confirmed. Run it with
//
//	go test -run '^$' -bench ConfirmedPublish ./natsbroker
func BenchmarkConfirmedPublish(b *testing.B) {
	for _, pubs := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("%dpub", pubs), func(b *testing.B) {
			benchConfirmedPublish(b, pubs)
		})
	}
}

func benchConfirmedPublish(b *testing.B, pubs int) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := startNATS(b, server.RANDOM_PORT)
	pub, err := natsbroker.Connect(s.ClientURL(), nil)
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	defer pub.Close()
	sub, err := natsbroker.Connect(s.ClientURL(), nil)
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	defer sub.Close()
	var received atomic.Int64
	if err := sub.Follow("bench", wshub.HistoryPolicy{}, 0, func(wshub.Entry) { received.Add(1) }); err != nil {
		b.Fatalf("follow: %v", err)
	}
	msg := make([]byte, 64)

	var next atomic.Int64
	errs := make(chan error, pubs)
	var g sync.WaitGroup
	b.ResetTimer()
	for range pubs {
		g.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := publish(ctx, pub, "bench", msg); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	g.Wait()
	b.StopTimer()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatalf("publish: %v", err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "publishes/s")
}

func kicked(hubs []*wshub.Hub) (n uint64) {
	for _, h := range hubs {
		n += h.Stats().Kicked
	}
	return n
}
