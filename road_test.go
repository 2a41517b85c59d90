package wshub_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wshub/wshub"
	"golang.org/x/sync/errgroup"
)

// Races of the road that a gated engine makes wide: a Read held after it
// read, a delivery held before it reaches the hub.

// gated wraps an engine: Read can be held after it read, deliveries can be held.
type gated struct {
	wshub.Engine
	holdRead    atomic.Bool
	readDone    chan struct{}
	readRelease chan struct{}
	holdDeliver atomic.Bool
	delivering  chan struct{}
	delRelease  chan struct{}
}

func newGated(e wshub.Engine) *gated {
	return &gated{Engine: e, readDone: make(chan struct{}, 1), readRelease: make(chan struct{}),
		delivering: make(chan struct{}, 1), delRelease: make(chan struct{})}
}

func (g *gated) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	page, err := g.Engine.Read(ctx, room, p, after, limit)
	if g.holdRead.CompareAndSwap(true, false) {
		g.readDone <- struct{}{}
		<-g.readRelease
	}
	return page, err
}

func (g *gated) Follow(room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) error {
	return g.Engine.Follow(room, p, after, func(en wshub.Entry) {
		if g.holdDeliver.CompareAndSwap(true, false) {
			g.delivering <- struct{}{}
			<-g.delRelease
		}
		deliver(en)
	})
}

// TestJoinDuringAnotherJoinsReadLosesNothing: a join that fails while the
// room's first join reads its history does not make the hub follow the
// room before it knows where its history stands: what is published
// meanwhile reaches the first joiner.
func TestJoinDuringAnotherJoinsReadLosesNothing(t *testing.T) {
	t.Parallel()
	g := newGated(wshub.NewMemoryEngine(0))
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(10), Engine: g,
		Limits: wshub.Limits{MaxRooms: 1}})
	ts := serve(t, h)
	ctx := testCtx(t)
	a := dial(t, ts)
	g.holdRead.Store(true)
	a.sendRaw(`{"type":"join","room":"r","id":"j"}`)
	<-g.readDone // A read the history: latest 0
	b := dial(t, ts)
	b.join("x")
	if m := b.request(`{"type":"join","room":"r","id":"j2"}`); m.Type != "error" {
		t.Fatalf("b: %+v", m)
	}
	if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: "m1"}); err != nil {
		t.Fatal(err)
	}
	close(g.readRelease)
	var seqs []uint64
	for {
		m := a.readHist()
		if m.Type == "ack" {
			break
		}
		seqs = append(seqs, m.Seq)
	}
	if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: "m2"}); err != nil {
		t.Fatal(err)
	}
	m := a.readHist()
	seqs = append(seqs, m.Seq)
	t.Logf("seqs %v", seqs)
	if len(seqs) != 2 || seqs[0] != 1 || seqs[1] != 2 {
		t.Fatalf("a got %v, want [1 2]", seqs)
	}
}

// TestNewEpochDuringJoinOnce: a join that reads a history started anew
// before its first message reached the members gets that message once.
func TestNewEpochDuringJoinOnce(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	g := newGated(wshub.NewMemoryEngineWithClock(0, clock))
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Engine: g,
		Rooms: func(string) wshub.RoomOptions {
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 10, MaxAge: time.Minute}}
		}})
	ts := serve(t, h)
	ctx := testCtx(t)
	m := dial(t, ts)
	m.joinHist("r", "")
	if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: "e1"}); err != nil {
		t.Fatal(err)
	}
	m.readHist()
	mu.Lock()
	now = now.Add(2 * time.Minute) // the history expires: next append starts E2
	mu.Unlock()
	g.holdDeliver.Store(true)
	done := make(chan error, 1)
	go func() { done <- h.Room("r").Broadcast(ctx, &wshub.Message{Data: "e2-1"}) }()
	<-g.delivering
	j := dial(t, ts)
	replay, ack := j.joinHist("r", `,"history":10`)
	t.Logf("replay %v ack seq %d epoch %s", seqs(replay), ack.Seq, ack.Epoch)
	close(g.delRelease)
	<-done
	if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: "e2-2"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		x := j.readHist()
		got = append(got, string(x.Data))
		if strings.Contains(string(x.Data), "e2-2") {
			break
		}
	}
	t.Logf("live after ack: %v", got)
	if len(got) != 1 {
		t.Fatalf("duplicate after replay %v: live %v", seqs(replay), got)
	}
}

// TestExceptHonouredAfterBroadcastReturned: a Broadcast whose ctx ends
// before its delivery still leaves out the clients it excepted.
func TestExceptHonouredAfterBroadcastReturned(t *testing.T) {
	t.Parallel()
	g := newGated(wshub.NewMemoryEngine(0))
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Engine: g})
	ts := serve(t, h)
	ctx := testCtx(t)
	a := dial(t, ts)
	a.join("r")
	var ca *wshub.Client
	for c := range h.Room("r").Clients() {
		ca = c
	}
	g.holdDeliver.Store(true)
	go h.Room("r").Broadcast(ctx, &wshub.Message{Data: "m0"})
	<-g.delivering
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err := h.Room("r").Broadcast(short, &wshub.Message{Data: "secret"}, ca)
	t.Logf("Broadcast returned %v", err)
	close(g.delRelease)
	if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: "m2"}); err != nil {
		t.Fatal(err)
	}
	for {
		x := a.read()
		if strings.Contains(string(x.Data), "secret") {
			t.Fatalf("excepted client got %s", x.Data)
		}
		if strings.Contains(string(x.Data), "m2") {
			return
		}
	}
}

// TestBroadcastDuringFirstJoinDoesNotWait: a Broadcast to a room whose
// first join is still reading its history returns at once (the message
// reaches the joiner from the history), instead of waiting WriteTimeout
// for a delivery that will not carry its id.
func TestBroadcastDuringFirstJoinDoesNotWait(t *testing.T) {
	t.Parallel()
	g := newGated(wshub.NewMemoryEngine(0))
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(10), Engine: g,
		Limits: wshub.Limits{WriteTimeout: time.Hour}})
	ts := serve(t, h)
	ctx := testCtx(t)
	a := dial(t, ts)
	g.holdRead.Store(true)
	a.sendRaw(`{"type":"join","room":"r","id":"j"}`)
	<-g.readDone
	done := make(chan error, 1)
	go func() { done <- h.Room("r").Broadcast(ctx, &wshub.Message{Data: "m1"}) }()
	awaitResult(t, ctx, done, "Broadcast waits for a delivery while the first join reads")
	close(g.readRelease)
	var got []string
	for {
		m := a.readHist()
		if m.Type == "ack" {
			break
		}
		got = append(got, string(m.Data))
	}
	if len(got) == 0 {
		got = append(got, string(a.readHist().Data))
	}
	equal(t, "joiner's message", fmt.Sprint(got), `["m1"]`)
}

// TestConcurrentBroadcastsOneOrder: many server goroutines broadcasting to
// one room of the memory engine (whose publishers pass each other's
// messages on, then hand a long queue to a goroutine of the engine): every
// member gets every message once, in seq order, the same order for all.
func TestConcurrentBroadcastsOneOrder(t *testing.T) {
	t.Parallel()
	const publishers, each = 8, 200
	// Server-side sends do not wait for readers: the queues hold it all.
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(publishers * each),
		Limits: wshub.Limits{SendQueue: 2 * publishers * each}})
	ts := serve(t, h)
	ctx := testCtx(t)
	var members []*peer
	for range 3 {
		p := dial(t, ts)
		p.joinHist("r", "")
		members = append(members, p)
	}
	orders := make([][]string, len(members))
	var readers errgroup.Group
	for k, p := range members {
		readers.Go(func() error {
			for seq := uint64(1); seq <= publishers*each; seq++ {
				m, err := readHist(ctx, p.conn)
				if err != nil {
					return err
				}
				if m.Seq != seq {
					return fmt.Errorf("member %d: seq %d, want %d", k, m.Seq, seq)
				}
				orders[k] = append(orders[k], string(m.Data))
			}
			return nil
		})
	}
	var publishing errgroup.Group
	for i := range publishers {
		publishing.Go(func() error {
			for n := range each {
				if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: fmt.Sprintf("%d-%d", i, n)}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := publishing.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := readers.Wait(); err != nil {
		t.Fatal(err)
	}
	for k := range members[1:] {
		equal(t, "order", strings.Join(orders[k+1], " "), strings.Join(orders[0], " "))
	}
}

// TestMemoryEngineHandsOverALongQueue: a publisher that finds itself
// passing on others' messages batch after batch hands the queue to a
// goroutine of the engine, and returns; the order holds, and Close waits
// for that goroutine.
func TestMemoryEngineHandsOverALongQueue(t *testing.T) {
	t.Parallel()
	e := wshub.NewMemoryEngine(0)
	p := wshub.HistoryPolicy{Messages: 10}
	got, step := make(chan wshub.Entry), make(chan struct{})
	if err := e.Follow("r", p, 0, func(en wshub.Entry) {
		got <- en
		<-step
	}); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	first := make(chan error, 1)
	go func() { first <- e.Publish(ctx, "r", p, "1", []byte(`{"type":"message","data":1}`))() }()
	var order []uint64
	order = append(order, (<-got).Seq)
	// Each message published while the one before is being passed on
	// makes a batch of its own for the first publisher.
	for i := 2; i <= 5; i++ {
		if err := e.Publish(ctx, "r", p, fmt.Sprint(i), []byte(fmt.Sprintf(`{"type":"message","data":%d}`, i)))(); err != nil {
			t.Fatal(err)
		}
		step <- struct{}{}
		if i < 5 {
			order = append(order, (<-got).Seq)
		}
	}
	// Four batches passed on: the first publisher has handed the fifth over.
	awaitResult(t, ctx, first, "the first publisher is still passing the queue on")
	order = append(order, (<-got).Seq)
	step <- struct{}{}
	equal(t, "order", fmt.Sprint(order), "[1 2 3 4 5]")
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
}

// awaitResult waits for the result of a call that must return before ctx
// ends, failing with stuck if it does not.
func awaitResult(t *testing.T, ctx context.Context, result <-chan error, stuck string) {
	t.Helper()
	select {
	case err := <-result:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal(stuck)
	}
}
