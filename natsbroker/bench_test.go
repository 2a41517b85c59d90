package natsbroker_test

import (
	"context"
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
	"github.com/wshub/wshub/natsbroker"
)

// BenchmarkFanOut measures deliveries per second to the clients of one
// room, all reading, when one goroutine on the first hub calls
// Room.Broadcast: 1,000 clients on one hub, with and without NATS, and
// 500 clients on each of two hubs sharing the room through NATS. An op is
// one broadcast, delivered to all 1,000 clients. Run it with
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
		b.Run(bc.name, func(b *testing.B) {
			benchFanOut(b, bc.nodes, bc.clients, bc.broker, bc.opts)
		})
	}
}

func benchFanOut(b *testing.B, nodes, perNode int, broker bool, opts *natsbroker.Options) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var hubs []*wshub.Hub
	var servers []*httptest.Server
	if broker {
		s := startNATS(b, server.RANDOM_PORT)
		for _, n := range newNodes(b, s.ClientURL(), nodes, opts) {
			hubs, servers = append(hubs, n.hub), append(servers, n.ts)
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
			p := &peer{t: b, ctx: ctx, conn: conn}
			p.join("bench")
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
	// client is kicked for falling behind.
	const window = 64
	room := hubs[0].Room("bench")
	msg := &wshub.Message{Data: map[string]any{"text": "hello, room", "n": 42}}
	var sent int64
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := room.Broadcast(ctx, msg); err != nil {
			b.Fatalf("broadcast: %v", err)
		}
		if sent++; sent%window == 0 {
			waitFor(sent * total)
		}
	}
	waitFor(sent * total)
	b.ReportMetric(float64(sent*total)/b.Elapsed().Seconds(), "deliveries/s")
	if k := kicked(hubs); k > 0 {
		b.Fatalf("%d clients kicked", k)
	}
	b.StopTimer()
	for _, h := range hubs {
		h.Close()
	}
}

func kicked(hubs []*wshub.Hub) (n uint64) {
	for _, h := range hubs {
		n += h.Stats().Kicked
	}
	return n
}
