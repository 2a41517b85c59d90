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

// memBus is a working in-process bus, and memBroker an Engine on it, one
// per hub: like natsbroker's core-NATS engine, it passes every message to
// every hub following the room, the publishing one included, and a room
// with history is numbered by each hub in the order it gets the messages
// (a memory engine per room). It tests the hub's side of the Engine
// contract without a network; the natsbroker module tests the same
// against a real NATS server.
type memBus struct {
	mu   sync.Mutex
	subs map[string]map[*memBroker]*busFollow
	down atomic.Bool // publishes fail while set
}

func newMemBus() *memBus { return &memBus{subs: make(map[string]map[*memBroker]*busFollow)} }

type busFollow struct {
	p       wshub.HistoryPolicy
	deliver func(wshub.Entry)
}

type memBroker struct {
	bus    *memBus
	closed atomic.Int32

	mu      sync.Mutex
	hist    map[string]wshub.Engine // the history of each room, while followed (or read)
	changed *sync.Cond
	gate    int      // with gate > 0, publishes are held until gate were made
	held    []func() // their deliveries
	started int
	refuse  string // data of a held publish that fails
}

func newMemBroker(bus *memBus) *memBroker {
	b := &memBroker{bus: bus, hist: make(map[string]wshub.Engine)}
	b.changed = sync.NewCond(&b.mu)
	return b
}

func (b *memBroker) Publish(_ context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) func() error {
	if b.bus.down.Load() {
		return func() error { return errors.New("bus unreachable") }
	}
	msg = slices.Clone(msg)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.started++
	if b.gate == 0 {
		b.bus.send(room, id, msg)
		return func() error { return nil }
	}
	var err error
	if b.refuse != "" && strings.Contains(string(msg), b.refuse) {
		err = errors.New("not confirmed")
	} else {
		b.held = append(b.held, func() { b.bus.send(room, id, msg) })
	}
	if b.started >= b.gate {
		for _, send := range b.held {
			send()
		}
		b.held = nil
		b.changed.Broadcast()
	}
	return func() error {
		b.mu.Lock()
		defer b.mu.Unlock()
		for b.started < b.gate {
			b.changed.Wait()
		}
		return err
	}
}

// send passes a message to every hub following room.
func (bus *memBus) send(room, id string, msg []byte) {
	bus.mu.Lock()
	var targets []*busFollow
	var brokers []*memBroker
	for b, f := range bus.subs[room] {
		targets, brokers = append(targets, f), append(brokers, b)
	}
	bus.mu.Unlock()
	for i, f := range targets {
		if f.p.Messages > 0 {
			brokers[i].history(room).Publish(context.Background(), room, f.p, id, msg)()
			continue
		}
		f.deliver(wshub.Entry{ID: id, JSON: msg})
	}
}

// history returns the room's history on this hub, new after an Unfollow.
func (b *memBroker) history(room string) wshub.Engine {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	e := b.hist[room]
	if e == nil {
		e = wshub.NewMemoryEngine(0)
		b.hist[room] = e
	}
	return e
}

func (b *memBroker) Follow(room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) error {
	if p.Messages > 0 {
		if err := b.history(room).Follow(room, p, after, deliver); err != nil {
			return err
		}
	}
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	if b.bus.subs[room] == nil {
		b.bus.subs[room] = make(map[*memBroker]*busFollow)
	}
	b.bus.subs[room][b] = &busFollow{p, deliver}
	return nil
}

func (b *memBroker) Unfollow(room string) error {
	b.bus.mu.Lock()
	defer b.bus.mu.Unlock()
	delete(b.bus.subs[room], b)
	delete(b.hist, room) // this hub misses the room's messages from now on
	return nil
}

func (b *memBroker) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	return b.history(room).Read(ctx, room, p, after, limit)
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
	bus := newMemBus()
	var brokers []*memBroker
	var hubs []*wshub.Hub
	var peers []*peer
	for range 2 {
		b := newMemBroker(bus)
		h := wshub.New(nil, &wshub.Options{Engine: b, AuthorizeJoin: allowAll})
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
	if err := hubs[0].Room("lobby").Broadcast(ctx, &wshub.Message{Data: 1}); !errors.Is(err, wshub.ErrEngine) {
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

// strictBroker refuses a second Follow of a room and an Unfollow of a
// room it does not follow, as natsbroker does, and records any call made
// after Close or while another call for the same room is under way. It
// passes a publish back to the room's follower once publish, if set,
// returns.
type strictBroker struct {
	mu         sync.Mutex
	followed   map[string]func(wshub.Entry)
	busy       map[string]bool
	closed     bool
	violations []string
	publish    func(ctx context.Context) error // optional, runs before Publish returns
}

func newStrictBroker() *strictBroker {
	return &strictBroker{followed: make(map[string]func(wshub.Entry)), busy: make(map[string]bool)}
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

func (b *strictBroker) Publish(ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) func() error {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return func() error { return errors.New("publish after Close") }
	}
	if b.publish != nil {
		if err := b.publish(ctx); err != nil {
			return func() error { return err }
		}
	}
	b.mu.Lock()
	deliver := b.followed[room]
	b.mu.Unlock()
	if deliver != nil {
		deliver(wshub.Entry{ID: id, JSON: msg})
	}
	return func() error { return nil }
}

func (b *strictBroker) Follow(room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) error {
	b.enter("Follow", room)
	defer b.exit(room)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.followed[room] != nil {
		return errors.New("room already followed")
	}
	b.followed[room] = deliver
	return nil
}

func (b *strictBroker) Unfollow(room string) error {
	b.enter("Unfollow", room)
	defer b.exit(room)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.followed[room] == nil {
		return errors.New("room not followed")
	}
	delete(b.followed, room)
	return nil
}

func (b *strictBroker) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	return wshub.LogPage{Epoch: "strict", Complete: true}, nil
}

func (b *strictBroker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	return nil
}

func (b *strictBroker) state() (followed int, violations []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.followed), slices.Clone(b.violations)
}

// TestBrokerSubscriptionFollowsMembership: concurrent joins and leaves of
// one room leave the broker subscribed exactly while the room has members,
// with Subscribe and Unsubscribe never overlapping or repeated.
func TestBrokerSubscriptionFollowsMembership(t *testing.T) {
	t.Parallel()
	b := newStrictBroker()
	connected := make(chan *wshub.Client, 16)
	h := wshub.New(nil, &wshub.Options{Engine: b, OnConnect: func(c *wshub.Client) { connected <- c }, Limits: wshub.Limits{PingInterval: -1}})
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
		Engine:       b,
		OnConnect:    func(c *wshub.Client) { c.Join("r") },
		OnDisconnect: func(*wshub.Client, error) { gone <- struct{}{} },
		Limits:       wshub.Limits{PingInterval: -1},
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
	h := wshub.New(nil, &wshub.Options{Engine: b, OnConnect: func(c *wshub.Client) { c.Join("r") }, Limits: wshub.Limits{PingInterval: -1}})
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

// TestEnginePipelines: a client's publishes are handed to the engine
// without waiting for each confirmation (none comes before ten were
// handed over); each reaches the local members before its ack, the acks
// come in order, and a failed confirmation is an error in its place. The
// engine passes on only what it confirms, so nobody gets the refused one.
func TestEnginePipelines(t *testing.T) {
	t.Parallel()
	bus := newMemBus()
	var peers []*peer
	var brokers []*memBroker
	for range 2 {
		b := newMemBroker(bus)
		h := wshub.New(nil, &wshub.Options{Engine: b, AuthorizeJoin: allowAll})
		p := dial(t, serve(t, h))
		p.join("r")
		peers, brokers = append(peers, p), append(brokers, b)
	}
	b := brokers[0]
	b.mu.Lock()
	b.gate, b.refuse = b.started+10, `"3"`
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
	equal(t, "sender's frames", strings.Join(got, " "), "m0 m1 m2 m4 m5 m6 m7 m8 m9 a0 a1 a2 e3 a4 a5 a6 a7 a8 a9")
	for _, i := range []int{0, 1, 2, 4, 5, 6, 7, 8, 9} {
		if m := peers[1].read(); string(m.Data) != fmt.Sprintf(`"%d"`, i) {
			t.Fatalf("other hub: got %+v, want %d", m, i)
		}
	}
}

// TestConcurrentBroadcastsInFlight: broadcasts from several server
// goroutines are in flight together (no confirmation comes before ten were
// handed over), every member gets each once, and except is honoured.
func TestConcurrentBroadcastsInFlight(t *testing.T) {
	t.Parallel()
	b := newMemBroker(newMemBus())
	b.gate = 10
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{Engine: b, AuthorizeJoin: allowAll, OnConnect: func(c *wshub.Client) { connected <- c }})
	ts := serve(t, h)
	p, q := dial(t, ts), dial(t, ts)
	<-connected
	skip := <-connected
	p.join("r")
	q.join("r")
	ctx := testCtx(t)
	var g errgroup.Group
	for i := range 10 {
		g.Go(func() error { return h.Room("r").Broadcast(ctx, &wshub.Message{Data: i}, skip) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
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
		seen := map[string]bool{d: true}
		for range 9 {
			seen[string(c.read().Data)] = true
		}
		equal(t, "distinct messages", len(seen), 10)
		equal(t, "then", string(c.read().Data), `"end"`)
	}
	equal(t, "clients left out", left, 1)
}
