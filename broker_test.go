package wshub_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"golang.org/x/sync/errgroup"
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

// strictBroker refuses a second Subscribe of a room and an Unsubscribe of
// a room it does not have, as natsbroker does, and records any call made
// after Close or while another call for the same room is under way.
type strictBroker struct {
	mu         sync.Mutex
	subscribed map[string]bool
	busy       map[string]bool
	closed     bool
	violations []string
	publish    func(ctx context.Context) error // optional, runs before Publish returns
}

func newStrictBroker() *strictBroker {
	return &strictBroker{subscribed: make(map[string]bool), busy: make(map[string]bool)}
}

func (b *strictBroker) enter(op, room string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		b.violations = append(b.violations, op+" "+room+" after Close")
	}
	if room != "" && b.busy[room] {
		b.violations = append(b.violations, op+" "+room+" overlaps another call")
	}
	if room != "" {
		b.busy[room] = true
	}
}

func (b *strictBroker) exit(room string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.busy, room)
}

func (b *strictBroker) Publish(ctx context.Context, room string, msg []byte) error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return errors.New("publish after Close")
	}
	if b.publish != nil {
		return b.publish(ctx)
	}
	return nil
}

func (b *strictBroker) Subscribe(room string, deliver func([]byte)) error {
	b.enter("Subscribe", room)
	defer b.exit(room)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subscribed[room] {
		return errors.New("room already subscribed")
	}
	b.subscribed[room] = true
	return nil
}

func (b *strictBroker) Unsubscribe(room string) error {
	b.enter("Unsubscribe", room)
	defer b.exit(room)
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.subscribed[room] {
		return errors.New("room not subscribed")
	}
	delete(b.subscribed, room)
	return nil
}

func (b *strictBroker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

func (b *strictBroker) state() (subscribed int, violations []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subscribed), slices.Clone(b.violations)
}

// TestBrokerSubscriptionFollowsMembership: concurrent joins and leaves of
// one room leave the broker subscribed exactly while the room has members,
// with Subscribe and Unsubscribe never overlapping or repeated.
func TestBrokerSubscriptionFollowsMembership(t *testing.T) {
	t.Parallel()
	b := newStrictBroker()
	connected := make(chan *wshub.Client, 16)
	h := wshub.New(nil, &wshub.Options{Broker: b, PingInterval: -1, OnConnect: func(c *wshub.Client) { connected <- c }})
	ts := serve(t, h)
	var clients []*wshub.Client
	for range 16 {
		dial(t, ts)
		clients = append(clients, <-connected)
	}
	var g errgroup.Group
	for _, c := range clients {
		g.Go(func() error {
			for range 1000 {
				if err := c.Join("r"); err != nil {
					return err
				}
				if err := c.Leave("r"); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("join/leave: %v", err)
	}
	equal(t, "room members", h.Room("r").Len(), 0)
	subscribed, violations := b.state()
	equal(t, "broker subscriptions after the last leave", subscribed, 0)
	if len(violations) > 0 {
		t.Fatalf("broker contract broken: %v", violations)
	}
	// The room can still be joined.
	if err := clients[0].Join("r"); err != nil {
		t.Fatalf("join after the churn: %v", err)
	}
}

// TestShutdownWaitsForClientsInHandlers: with every client's read goroutine
// inside a Handler, Shutdown still writes each client's queue and closes it
// with 1001 before it returns, and nothing calls the broker after Close.
func TestShutdownWaitsForClientsInHandlers(t *testing.T) {
	t.Parallel()
	b := newStrictBroker()
	inHandler := make(chan *wshub.Client, 4)
	release := make(chan struct{})
	gone := make(chan struct{}, 4)
	h := wshub.New(wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
		inHandler <- c
		<-release
		return nil
	}), &wshub.Options{
		Broker:       b,
		PingInterval: -1,
		OnConnect:    func(c *wshub.Client) { c.Join("r") },
		OnDisconnect: func(*wshub.Client, error) { gone <- struct{}{} },
	})
	ts := serve(t, h)
	// No client has a writer running when Shutdown begins: each one's
	// queue is empty and its read goroutine is in the Handler.
	const n = 4
	statuses := make(chan string, n)
	for range n {
		p := dial(t, ts)
		p.sendRaw(`{"type":"block"}`)
		<-inHandler
		go func() {
			got := 0
			for {
				_, _, err := p.conn.Read(p.ctx)
				if err != nil {
					statuses <- fmt.Sprintf("%d messages, then %v", got, websocket.CloseStatus(err))
					return
				}
				got++
			}
		}()
	}
	if err := h.Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// A server that stops here must have said goodbye to everyone: Close
	// cuts whatever Shutdown left behind.
	h.Close()
	want := fmt.Sprintf("0 messages, then %v", websocket.StatusGoingAway)
	for range n {
		equal(t, "client saw", <-statuses, want)
	}
	close(release)
	for range n {
		<-gone
	}
	if _, violations := b.state(); len(violations) > 0 {
		t.Fatalf("broker used after Close: %v", violations)
	}
}

// TestBroadcastRacingShutdown: a room broadcast whose broker publish is
// still under way when Shutdown closes the room's members either reaches
// them or returns ErrHubClosed, never nil for nobody.
func TestBroadcastRacingShutdown(t *testing.T) {
	t.Parallel()
	b := newStrictBroker()
	inPublish, releasePublish := make(chan struct{}), make(chan struct{})
	b.publish = func(ctx context.Context) error {
		close(inPublish)
		<-releasePublish
		return nil
	}
	h := wshub.New(nil, &wshub.Options{Broker: b, PingInterval: -1, OnConnect: func(c *wshub.Client) { c.Join("r") }})
	ts := serve(t, h)
	p := dial(t, ts)
	eventually(t, "member joined", func() bool { return h.Room("r").Len() == 1 })
	broadcast := make(chan error, 1)
	go func() { broadcast <- h.Room("r").Broadcast(testCtx(t), &wshub.Message{Data: "late"}) }()
	<-inPublish
	shutdown := make(chan error, 1)
	go func() { shutdown <- h.Shutdown(testCtx(t)) }()
	// The member is closed while the broadcast waits for the broker.
	equal(t, "close status", p.readClose(), websocket.StatusGoingAway)
	close(releasePublish)
	if err := <-broadcast; !errors.Is(err, wshub.ErrHubClosed) {
		t.Fatalf("broadcast that reached nobody returned %v, want ErrHubClosed", err)
	}
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
}

// asyncMemBroker is a memBroker that pipelines: a publish goes to the bus
// at once, and its confirmation waits until gate publishes were made.
type asyncMemBroker struct {
	*memBroker
	mu      sync.Mutex
	changed *sync.Cond
	started int
	gate    int
	refuse  string // data of a publish whose confirmation fails
}

func (b *asyncMemBroker) PublishAsync(ctx context.Context, room string, msg []byte) func() error {
	err := b.memBroker.Publish(ctx, room, msg)
	b.mu.Lock()
	b.started++
	b.changed.Broadcast()
	b.mu.Unlock()
	return func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		for b.started < b.gate {
			b.changed.Wait()
		}
		if err == nil && b.refuse != "" && strings.Contains(string(msg), b.refuse) {
			err = errors.New("not confirmed")
		}
		return err
	}
}

// TestAsyncBrokerPipelines: with an AsyncBroker, a client's publishes are
// handed to the bus without waiting for each confirmation; each reaches
// the local members once confirmed, before its ack, in order, and a
// failed confirmation is an error in its place, delivered to nobody here.
func TestAsyncBrokerPipelines(t *testing.T) {
	t.Parallel()
	bus := &memBus{subs: make(map[string]map[*memBroker]func([]byte))}
	var peers []*peer
	var brokers []*asyncMemBroker
	for range 2 {
		b := &asyncMemBroker{memBroker: &memBroker{bus: bus}}
		b.changed = sync.NewCond(&b.mu)
		h := wshub.New(nil, &wshub.Options{Broker: b, AuthorizeJoin: allowAll})
		p := dial(t, serve(t, h))
		p.join("r")
		peers, brokers = append(peers, p), append(brokers, b)
	}
	b := brokers[0]
	b.mu.Lock()
	b.gate, b.refuse = 10, `"3"`
	b.mu.Unlock()
	for i := range 10 {
		peers[0].sendRaw(fmt.Sprintf(`{"type":"publish","room":"r","id":"%d","data":"%d"}`, i, i))
	}
	var got []string
	for len(got) < 19 {
		m := peers[0].read()
		switch m.Type {
		case "message":
			got = append(got, "m"+strings.Trim(string(m.Data), `"`))
		default:
			got = append(got, m.Type[:1]+m.ID)
		}
	}
	equal(t, "sender's frames", strings.Join(got, " "), "m0 a0 m1 a1 m2 a2 e3 m4 a4 m5 a5 m6 a6 m7 a7 m8 a8 m9 a9")
	// The other hub got all ten from the bus (the bus delivered the
	// refused one before its confirmation failed: at most once is all a
	// bus without a log promises).
	for i := range 10 {
		if m := peers[1].read(); string(m.Data) != fmt.Sprintf(`"%d"`, i) {
			t.Fatalf("other hub: got %+v, want %d", m, i)
		}
	}
}

// TestRoomPublishPipelines: a server goroutine keeps several publishes in
// flight with Room.Publish (no confirmation comes before ten were handed
// over), and the members get them in order; except is honoured.
func TestRoomPublishPipelines(t *testing.T) {
	t.Parallel()
	bus := &memBus{subs: make(map[string]map[*memBroker]func([]byte))}
	b := &asyncMemBroker{memBroker: &memBroker{bus: bus}, gate: 10}
	b.changed = sync.NewCond(&b.mu)
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{Broker: b, AuthorizeJoin: allowAll, OnConnect: func(c *wshub.Client) { connected <- c }})
	ts := serve(t, h)
	p, q := dial(t, ts), dial(t, ts)
	<-connected
	skip := <-connected
	p.join("r")
	q.join("r")
	ctx := testCtx(t)
	var waits []func() error
	for i := range 10 {
		waits = append(waits, h.Room("r").Publish(ctx, &wshub.Message{Data: i}, skip))
	}
	for i, wait := range waits {
		if err := wait(); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: "end"}); err != nil {
		t.Fatal(err)
	}
	// One of p and q was left out of the ten: its first frame is "end".
	left := 0
	for _, c := range []*peer{p, q} {
		d := string(c.read().Data)
		if d == `"end"` {
			left++
			continue
		}
		equal(t, "first", d, "0")
		for i := 1; i < 10; i++ {
			equal(t, "in order", string(c.read().Data), fmt.Sprint(i))
		}
		equal(t, "then", string(c.read().Data), `"end"`)
	}
	equal(t, "clients left out", left, 1)
}
