package wshub_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wshub/wshub"
)

// memBus is a working in-process Broker: one per hub, all sharing a bus.
// It tests the hub's side of the Broker contract without a network; the
// natsbroker module tests the same against a real NATS server.
type memBus struct {
	mu   sync.Mutex
	subs map[string]map[*memBroker]func([]byte)
	down atomic.Bool // publishes fail while set
}

type memBroker struct {
	bus    *memBus
	closed atomic.Int32
}

func (b *memBroker) Publish(_ context.Context, room string, msg []byte) error {
	if b.bus.down.Load() {
		return errors.New("bus unreachable")
	}
	b.bus.mu.Lock()
	var targets []func([]byte)
	for _, deliver := range b.bus.subs[room] {
		targets = append(targets, deliver)
	}
	b.bus.mu.Unlock()
	for _, deliver := range targets {
		deliver(append([]byte(nil), msg...))
	}
	return nil
}

func (b *memBroker) Subscribe(room string, deliver func([]byte)) error {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	if b.bus.subs[room] == nil {
		b.bus.subs[room] = make(map[*memBroker]func([]byte))
	}
	b.bus.subs[room][b] = deliver
	return nil
}

func (b *memBroker) Unsubscribe(room string) error {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	delete(b.bus.subs[room], b)
	return nil
}

func (b *memBroker) Close() error {
	b.closed.Add(1)
	return nil
}

func (bus *memBus) subscribers(room string) int {
	bus.mu.Lock()
	defer bus.mu.Unlock()
	return len(bus.subs[room])
}

func TestBrokerSpansHubs(t *testing.T) {
	t.Parallel()
	bus := &memBus{subs: make(map[string]map[*memBroker]func([]byte))}
	var brokers []*memBroker
	var hubs []*wshub.Hub
	var peers []*peer
	for range 2 {
		b := &memBroker{bus: bus}
		h := wshub.New(nil, &wshub.Options{Broker: b, AuthorizeJoin: allowAll})
		p := dial(t, serve(t, h))
		p.join("lobby")
		brokers, hubs, peers = append(brokers, b), append(hubs, h), append(peers, p)
	}
	equal(t, "subscribed hubs", bus.subscribers("lobby"), 2)

	// A client publish on hub 0 reaches both clients exactly once: the
	// next frame each reads after it is the sentinel.
	m := peers[0].request(`{"type":"publish","room":"lobby","data":"one","id":"p"}`)
	equal(t, "own message", string(m.Data), `"one"`)
	equal(t, "ack", peers[0].read().Type, "ack")
	ctx := testCtx(t)
	if err := hubs[1].Room("lobby").Broadcast(ctx, &wshub.Message{Data: "sentinel"}); err != nil {
		t.Fatal(err)
	}
	m = peers[1].read()
	equal(t, "remote", string(m.Data), `"one"`)
	if m.From == "" {
		t.Fatal("from lost across the broker")
	}
	for _, p := range peers {
		equal(t, "then the sentinel, no duplicate", string(p.read().Data), `"sentinel"`)
	}

	// While the bus is down, publishes fail loudly and reach nobody.
	bus.down.Store(true)
	m = peers[0].request(`{"type":"publish","room":"lobby","data":"lost?","id":"x"}`)
	equal(t, "type", m.Type, "error")
	if !strings.HasPrefix(m.Error, wshub.ErrBroker.Error()) {
		t.Fatalf("error %q", m.Error)
	}
	if err := hubs[0].Room("lobby").Broadcast(ctx, &wshub.Message{Data: 1}); !errors.Is(err, wshub.ErrBroker) {
		t.Fatalf("broadcast with the bus down: %v", err)
	}
	bus.down.Store(false)

	// The last local member leaving unsubscribes that hub.
	peers[1].mustAck(`{"type":"leave","room":"lobby","id":"l"}`)
	equal(t, "subscribed hubs after leave", bus.subscribers("lobby"), 1)

	for i, h := range hubs {
		peers[i].conn.CloseNow() // so that Shutdown need not wait for its close handshake
		if err := h.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		h.Close()
		equal(t, "broker closed once", brokers[i].closed.Load(), 1)
	}
	equal(t, "subscribed hubs after shutdown", bus.subscribers("lobby"), 0)
}
