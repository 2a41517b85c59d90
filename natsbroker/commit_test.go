package natsbroker_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// connect returns a broker made by Connect to url, closed at cleanup.
func connect(t testing.TB, url string, opts *natsbroker.Options) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.Connect(url, opts,
		// Tests break connections on purpose.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// inbox makes b follow room, a room without history, and returns the
// messages it receives.
func inbox(t testing.TB, b *natsbroker.Broker, room string) <-chan string {
	t.Helper()
	ch := make(chan string, 1<<16)
	if err := b.Follow(room, wshub.HistoryPolicy{}, 0, func(e wshub.Entry) { ch <- string(e.JSON) }); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	return ch
}

// receive returns the next message of ch, failing when ctx ends first.
func receive(t testing.TB, ctx context.Context, ch <-chan string) string {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-ctx.Done():
		t.Fatal("no message")
		return ""
	}
}

// Many goroutines publish at once through one broker: every Publish
// returns nil, the publishes share flushes, and another hub's broker gets
// every message exactly once and in the order of its publisher.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := et.Ctx(t)
	pub := connect(t, s.ClientURL(), nil)
	got := inbox(t, connect(t, s.ClientURL(), nil), "r")

	const pubs, perPub = 32, 100
	errs := make(chan error, pubs)
	var wg sync.WaitGroup
	for p := range pubs {
		wg.Go(func() {
			for seq := range perPub {
				if err := publish(ctx, pub, "r", fmt.Appendf(nil, "%d:%d", p, seq)); err != nil {
					errs <- fmt.Errorf("publisher %d, message %d: %w", p, seq, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// The sentinel follows every confirmed message on the connection, so
	// it arrives after all of them.
	if err := publish(ctx, pub, "r", []byte("sentinel")); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	next := make([]int, pubs)
	for {
		m := receive(t, ctx, got)
		if m == "sentinel" {
			break
		}
		ps, seqs, _ := strings.Cut(m, ":")
		p, _ := strconv.Atoi(ps)
		seq, _ := strconv.Atoi(seqs)
		if seq != next[p] {
			t.Fatalf("publisher %d: got message %d, want %d (duplicate, gap or reorder)", p, seq, next[p])
		}
		next[p]++
	}
	for p, n := range next {
		et.Equal(t, fmt.Sprintf("messages of publisher %d", p), n, perPub)
	}
	flushes, waits := natsbroker.CommitStats(pub)
	et.Equal(t, "confirmed publishes", waits, uint64(pubs*perPub+1))
	t.Logf("%d publishes confirmed by %d flushes", waits, flushes)
	if flushes >= waits {
		t.Fatalf("%d flushes for %d publishes: none shared", flushes, waits)
	}
}

// While confirmations are pending, many publishes that arrive take at
// most MaxFlushes flushes, then wait for the next flush together: however
// many they are, it takes one. A publisher whose context ends stops
// waiting without failing the others.
func TestGroupCommitShares(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := et.Ctx(t)
	px := et.StartProxy(t, s.Addr().String())
	pub := connect(t, "nats://"+px.Addr(), &natsbroker.Options{Timeout: time.Minute})
	got := inbox(t, connect(t, s.ClientURL(), nil), "r")

	px.Hold()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := publish(short, pub, "r", []byte("short")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with a context that ends while held: %v, want DeadlineExceeded", err)
	}

	const pubs = 50
	done := heldPublishes(t, ctx, pub, pubs, 1)
	held, _ := natsbroker.CommitStats(pub)
	if held < 2 || held > 1+natsbroker.MaxFlushes {
		t.Fatalf("%d flushes while held, want the short one's and 1 to %d", held, natsbroker.MaxFlushes)
	}
	px.Release()
	for _, err := range done() {
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	// At most one more: the one that the publishes beyond shared.
	if flushes, _ := natsbroker.CommitStats(pub); flushes > held+1 {
		t.Fatalf("%d flushes in all, %d while held: want at most one more", flushes, held)
	}

	// Every message went out, the one whose wait was cut short too.
	seen := make(map[string]bool)
	for len(seen) < pubs+1 {
		m := receive(t, ctx, got)
		if seen[m] {
			t.Fatalf("message %q twice", m)
		}
		seen[m] = true
	}
	if !seen["short"] {
		t.Fatal("the message whose wait timed out was not delivered")
	}
}

// Confirmations are pipelined: while at most MaxFlushes publishes wait,
// each starts its own flush at once, without waiting for those in flight;
// the publishes beyond wait together for the next.
func TestGroupCommitPipelines(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := et.Ctx(t)
	px := et.StartProxy(t, s.Addr().String())
	pub := connect(t, "nats://"+px.Addr(), &natsbroker.Options{Timeout: time.Minute})

	px.Hold()
	const beyond = 3
	errs := make(chan error, natsbroker.MaxFlushes+beyond)
	var wg sync.WaitGroup
	for p := range natsbroker.MaxFlushes + beyond {
		wg.Go(func() { errs <- publish(ctx, pub, "r", fmt.Appendf(nil, "%d", p)) })
		// Each publish waits before the next is written, so that no
		// flush covers a later one.
		et.Eventually(t, "the publish to wait", func() bool {
			_, waits := natsbroker.CommitStats(pub)
			return waits == uint64(p+1)
		})
		want := uint64(min(p+1, natsbroker.MaxFlushes))
		et.Equal(t, fmt.Sprintf("flushes in flight after publish %d", p), first(natsbroker.CommitStats(pub)), want)
	}
	px.Release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	et.Equal(t, "flushes in all", first(natsbroker.CommitStats(pub)), uint64(natsbroker.MaxFlushes+1))
}

// When many publishes wait, one whose message was written before a flush
// started waits for that flush, or for none when it already ended. When
// the publisher that started a flush gives up, the ones that waited for it
// do not fail with its context's error: they wait for another.
func TestGroupCommitCovers(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := et.Ctx(t)
	px := et.StartProxy(t, s.Addr().String())
	pub := connect(t, "nats://"+px.Addr(), &natsbroker.Options{Timeout: time.Minute})
	got := inbox(t, connect(t, s.ClientURL(), nil), "r")

	write := func(msg string) func(context.Context) error {
		t.Helper()
		wait, err := natsbroker.Write(pub, "r", []byte(msg))
		if err != nil {
			t.Fatalf("Write %q: %v", msg, err)
		}
		return wait
	}
	waits := func(n int) {
		t.Helper()
		et.Eventually(t, fmt.Sprintf("%d waits", n), func() bool {
			_, waits := natsbroker.CommitStats(pub)
			return waits == uint64(n)
		})
	}

	px.Hold()
	waitA, waitB := write("a"), write("b")
	ctxA, cancelA := context.WithCancel(ctx)
	defer cancelA()
	errA, errB := make(chan error, 1), make(chan error, 1)
	go func() { errA <- waitA(ctxA) }()
	waits(1)
	// MaxFlushes more publishes: all but the last start a flush, the last
	// waits for the next.
	errs := make(chan error, natsbroker.MaxFlushes)
	var wg sync.WaitGroup
	for p := range natsbroker.MaxFlushes {
		wg.Go(func() { errs <- publish(ctx, pub, "r", fmt.Appendf(nil, "%d", p)) })
		waits(2 + p)
	}
	et.Equal(t, "flushes before b waits", first(natsbroker.CommitStats(pub)), uint64(natsbroker.MaxFlushes))
	go func() { errB <- waitB(ctx) }()
	waits(2 + natsbroker.MaxFlushes)
	et.Equal(t, "flushes once b waits for a's", first(natsbroker.CommitStats(pub)), uint64(natsbroker.MaxFlushes))
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Fatalf("a's wait after its context ended: %v, want Canceled", err)
	}
	px.Release()
	et.Equal(t, "b's wait", <-errB, nil)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	flushes := first(natsbroker.CommitStats(pub))
	et.Equal(t, "flushes, with the one for the last publish", flushes, uint64(natsbroker.MaxFlushes+1))

	waitC, waitD := write("c"), write("d")
	et.Equal(t, "c's wait", waitC(ctx), nil)
	et.Equal(t, "d's wait, after c's flush confirmed it", waitD(ctx), nil)
	et.Equal(t, "flushes in all", first(natsbroker.CommitStats(pub)), flushes+1)

	seen := make(map[string]bool)
	for len(seen) < natsbroker.MaxFlushes+4 {
		seen[receive(t, ctx, got)] = true
	}
	for _, m := range []string{"a", "b", "c", "d"} {
		if !seen[m] {
			t.Fatalf("message %q not delivered", m)
		}
	}
}

// first returns the first of two results.
func first[T, U any](v T, _ U) T { return v }

// The connection breaks while publishes wait for their confirmation:
// every one of them returns ErrNotConnected, none hangs; publishing
// fails at once until nats.go reconnects, then works again.
func TestOutageFailsEveryWaiter(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := et.Ctx(t)
	px := et.StartProxy(t, s.Addr().String())
	pub := connect(t, "nats://"+px.Addr(), &natsbroker.Options{Timeout: time.Minute})
	got := inbox(t, connect(t, s.ClientURL(), nil), "r")

	px.Hold()
	const pubs = 50
	done := heldPublishes(t, ctx, pub, pubs, 0)
	px.Cut()
	for _, err := range done() {
		if !errors.Is(err, natsbroker.ErrNotConnected) {
			t.Fatalf("Publish when the connection broke: %v, want ErrNotConnected", err)
		}
	}
	if err := publish(ctx, pub, "r", []byte("down")); !errors.Is(err, natsbroker.ErrNotConnected) {
		t.Fatalf("Publish while disconnected: %v, want ErrNotConnected", err)
	}

	px.Open()
	et.Eventually(t, "the broker to reconnect", pub.Conn().IsConnected)
	if err := publish(ctx, pub, "r", []byte("after")); err != nil {
		t.Fatalf("Publish after reconnecting: %v", err)
	}
	// The proxy dropped what it held: the first message through is the
	// one published after the reconnect.
	et.Equal(t, "first message delivered", receive(t, ctx, got), "after")
}

// Close fails the publishes that wait for a confirmation with ErrClosed
// and stops the flusher (goleak checks that it ended).
func TestCloseFailsWaiters(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	ctx := et.Ctx(t)
	px := et.StartProxy(t, s.Addr().String())
	pub := connect(t, "nats://"+px.Addr(), &natsbroker.Options{Timeout: time.Minute})

	px.Hold()
	const pubs = 20
	done := heldPublishes(t, ctx, pub, pubs, 0)
	et.Equal(t, "Close", pub.Close(), nil)
	for _, err := range done() {
		if !errors.Is(err, natsbroker.ErrClosed) {
			t.Fatalf("Publish waiting when Close ran: %v, want ErrClosed", err)
		}
	}
	if err := publish(ctx, pub, "r", nil); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}

// With Options.RetryOnFailedConnect a broker starts while no NATS server
// answers: Connect returns at once, Publish fails with ErrNotConnected,
// Follow succeeds and takes effect when the server comes up, and a hub
// on the broker accepts joins but refuses publishes until then.
func TestStartWhileUnreachable(t *testing.T) {
	t.Parallel()
	ctx := et.Ctx(t)
	port := freePort(t)
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)

	if _, err := natsbroker.Connect(url, nil); err == nil {
		t.Fatal("Connect without RetryOnFailedConnect succeeded with no server")
	}
	b := connect(t, url, &natsbroker.Options{RetryOnFailedConnect: true})
	if b.Conn().IsConnected() {
		t.Fatal("connected with no server")
	}
	if err := publish(ctx, b, "r", []byte("early")); !errors.Is(err, natsbroker.ErrNotConnected) {
		t.Fatalf("Publish before the server is up: %v, want ErrNotConnected", err)
	}
	got := inbox(t, b, "r")

	h := wshub.New(nil, &wshub.Options{Engine: b, AuthorizeJoin: func(*wshub.Client, string) error { return nil }})
	n := serve(t, h)
	c := dial(t, n)
	c.Join("lobby")
	c.Send(`{"type":"publish","room":"lobby","id":"p","data":{"pub":"c","seq":0}}`)
	m := c.Read()
	if m.Type != "error" || m.ID != "p" || !strings.Contains(m.Error, et.ErrEngineText) {
		t.Fatalf("publish before the server is up: got %+v, want a %q error", m, et.ErrEngineText)
	}

	s := startNATS(t, port)
	et.Eventually(t, "the broker to connect", b.Conn().IsConnected)
	et.Eventually(t, "the subscriptions made before connecting", func() bool {
		return s.GlobalAccount().Interest(b.Subject("r")) == 1 && s.GlobalAccount().Interest(b.Subject("lobby")) == 1
	})
	other := connect(t, s.ClientURL(), nil)
	if err := publish(ctx, other, "r", []byte("from another hub")); err != nil {
		t.Fatalf("Publish from another broker: %v", err)
	}
	et.Equal(t, "delivered", receive(t, ctx, got), "from another hub")
	if err := publish(ctx, b, "r", []byte("own")); err != nil {
		t.Fatalf("Publish once connected: %v", err)
	}
	et.Equal(t, "delivered", receive(t, ctx, got), "own")
	c.Send(`{"type":"publish","room":"lobby","data":{"pub":"c","seq":1}}`)
	et.Equal(t, "client's publish once connected", et.Data(t, c.Read()).Seq, 1)
}

// While NATS is down the hub refuses room publishes outright: the
// publisher gets an error and no member, on this hub or another, gets the
// message, so that a message is either on every hub or on none. Messages
// that stay on the hub (Hub.Broadcast) still flow, and rooms work again
// once NATS is back.
func TestOutageRefusesLocalDelivery(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	port := natsPort(s)
	n := newNodes(t, s.ClientURL(), 1, nil)[0]
	ctx := et.Ctx(t)
	a, b := dial(t, n), dial(t, n)
	a.Join("r")
	b.Join("r")

	s.Shutdown()
	s.WaitForShutdown()
	et.Eventually(t, "the hub to see NATS go", func() bool { return !n.nc.IsConnected() })

	a.Send(`{"type":"publish","room":"r","id":"p","data":{"pub":"a","seq":0}}`)
	m := a.Read()
	if m.Type != "error" || m.ID != "p" || !strings.Contains(m.Error, et.ErrEngineText) {
		t.Fatalf("client publish during the outage: got %+v, want a %q error", m, et.ErrEngineText)
	}
	if err := broadcast(ctx, n, "r", "server", 0); !errors.Is(err, wshub.ErrEngine) || !errors.Is(err, natsbroker.ErrNotConnected) {
		t.Fatalf("Room.Broadcast during the outage: %v, want ErrEngine and ErrNotConnected", err)
	}
	if err := n.Hub.Broadcast(ctx, &wshub.Message{Data: et.Payload{Pub: "local"}}); err != nil {
		t.Fatalf("Hub.Broadcast during the outage: %v", err)
	}
	// The local broadcast came after both refused publishes: it is the
	// first message each member gets.
	et.Equal(t, "a's first message", et.Data(t, a.Read()).Pub, "local")
	et.Equal(t, "b's first message", et.Data(t, b.Read()).Pub, "local")

	startNATS(t, port)
	et.Eventually(t, "the hub to reconnect", n.nc.IsConnected)
	if err := broadcast(ctx, n, "r", "after", 0); err != nil {
		t.Fatalf("Room.Broadcast after the outage: %v", err)
	}
	et.Equal(t, "b's message after the outage", et.Data(t, b.Read()).Pub, "after")
}

// freePort returns a loopback port that nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// serve runs h on a test server, closed at cleanup.
func serve(t testing.TB, h *wshub.Hub) *node {
	t.Helper()
	return &node{Node: et.Serve(t, h)}
}

// heldPublishes starts n publishes of pub, each from its own goroutine,
// and returns once they all wait for their confirmation (with waiting
// earlier ones), with a function that waits for them to end and returns
// their errors.
func heldPublishes(t *testing.T, ctx context.Context, pub *natsbroker.Broker, n int, waiting uint64) func() []error {
	t.Helper()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for p := range n {
		wg.Go(func() { errs[p] = publish(ctx, pub, "r", fmt.Appendf(nil, "%d", p)) })
	}
	et.Eventually(t, "every publish to wait", func() bool {
		_, waits := natsbroker.CommitStats(pub)
		return waits == uint64(n)+waiting
	})
	return func() []error {
		wg.Wait()
		return errs
	}
}
