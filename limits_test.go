package wshub_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

func TestOriginCheck(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		patterns []string
		origin   string
		ok       bool
	}{
		{"no origin", nil, "", true},
		{"cross origin refused by default", nil, "https://evil.example", false},
		{"allowed pattern", []string{"*.example.com"}, "https://app.example.com", true},
		{"other origin with pattern", []string{"*.example.com"}, "https://evil.example", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ts := serve(t, wshub.New(nil, &wshub.Options{OriginPatterns: tt.patterns}))
			hdr := http.Header{}
			if tt.origin != "" {
				hdr.Set("Origin", tt.origin)
			}
			conn, resp, err := websocket.Dial(testCtx(t), wsURL(ts), &websocket.DialOptions{HTTPHeader: hdr})
			if tt.ok {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				conn.Close(websocket.StatusNormalClosure, "")
				return
			}
			if err == nil {
				conn.CloseNow()
				t.Fatal("cross-origin dial succeeded")
			}
			equal(t, "status", resp.StatusCode, http.StatusForbidden)
		})
	}
}

func TestSameOriginAllowed(t *testing.T) {
	t.Parallel()
	ts := serve(t, wshub.New(nil, nil))
	hdr := http.Header{"Origin": {ts.URL}}
	conn, _, err := websocket.Dial(testCtx(t), wsURL(ts), &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("same-origin dial: %v", err)
	}
	conn.Close(websocket.StatusNormalClosure, "")
}

func TestReadLimitCloses1009(t *testing.T) {
	t.Parallel()
	reasons := make(chan error, 1)
	h := wshub.New(nil, &wshub.Options{
		OnDisconnect: func(_ *wshub.Client, err error) { reasons <- err },
		Limits:       wshub.Limits{ReadLimit: 1024},
	})
	ts := serve(t, h)
	p := dial(t, ts)
	p.sendRaw(`{"type":"x","data":"` + strings.Repeat("a", 2000) + `"}`)
	equal(t, "client close status", p.readClose(), websocket.StatusMessageTooBig)
	if err := <-reasons; !errors.Is(err, websocket.ErrMessageTooBig) {
		t.Fatalf("disconnect reason: %v", err)
	}
}

func TestDefaultReadLimit(t *testing.T) {
	t.Parallel()
	h := wshub.New(wshub.HandlerFunc(func(context.Context, *wshub.Client, *wshub.Message) error { return nil }), nil)
	ts := serve(t, h)
	p := dial(t, ts)
	p.mustAck(`{"type":"x","id":"1","data":"%s"}`, strings.Repeat("a", wshub.DefaultReadLimit-100))
	p.sendRaw(`{"type":"x","data":"` + strings.Repeat("a", wshub.DefaultReadLimit) + `"}`)
	equal(t, "close status", p.readClose(), websocket.StatusMessageTooBig)
}

func TestInvalidMessagesClose1007(t *testing.T) {
	t.Parallel()
	reasons := make(chan error, 1)
	h := wshub.New(nil, &wshub.Options{OnDisconnect: func(_ *wshub.Client, err error) { reasons <- err }})
	ts := serve(t, h)
	p := dial(t, ts)
	// A valid message in between resets the count.
	for range wshub.MaxInvalidMessages - 1 {
		equal(t, "type", p.request(`{not json`).Type, "error")
	}
	equal(t, "valid", p.request(`{"type":"leave","room":"a"}`).Type, "error")
	for range wshub.MaxInvalidMessages - 1 {
		equal(t, "type", p.request(`[]`).Type, "error")
	}
	// A binary frame is invalid for the JSON codec; it is the last straw.
	if err := p.conn.Write(p.ctx, websocket.MessageBinary, []byte(`{"type":"join"}`)); err != nil {
		t.Fatal(err)
	}
	m := p.read()
	if !strings.Contains(m.Error, "binary") {
		t.Fatalf("error frame %+v does not name the binary frame", m)
	}
	equal(t, "close status", p.readClose(), websocket.StatusInvalidFramePayloadData)
	if err := <-reasons; !errors.Is(err, wshub.ErrInvalidMessage) {
		t.Fatalf("disconnect reason: %v", err)
	}
}

func TestMaxClients503(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{Limits: wshub.Limits{MaxClients: 2}})
	ts := serve(t, h)
	dial(t, ts)
	p := dial(t, ts)
	_, resp, err := websocket.Dial(testCtx(t), wsURL(ts), nil)
	if err == nil {
		t.Fatal("third client accepted")
	}
	equal(t, "status", resp.StatusCode, http.StatusServiceUnavailable)
	checkRetryAfter(t, resp)
	equal(t, "refused", h.Stats().Refused, 1)
	// A slot frees when a client leaves.
	p.conn.Close(websocket.StatusNormalClosure, "")
	eventually(t, "client gone", func() bool { return h.Stats().Clients == 1 })
	dial(t, ts)
}

// checkRetryAfter fails unless resp, a 503 of the hub, says when to come
// back: 1 or 2 seconds.
func checkRetryAfter(t *testing.T, resp *http.Response) {
	t.Helper()
	switch v := resp.Header.Get("Retry-After"); v {
	case "1", "2":
	default:
		t.Fatalf("Retry-After %q, want 1 or 2 seconds", v)
	}
}

func TestSlowClientKicked(t *testing.T) {
	t.Parallel()
	reasons := make(chan error, 1)
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		OnConnect:    func(c *wshub.Client) { c.Join("feed"); connected <- c },
		OnDisconnect: func(c *wshub.Client, err error) { reasons <- err },
		Limits:       wshub.Limits{SendQueue: 8, PingInterval: -1},
	})
	ts := serve(t, h)
	slow := dial(t, ts) // never reads until kicked
	<-connected
	fast := dial(t, ts)
	fastClient := <-connected
	ctx := testCtx(t)

	// The fast client reads everything it is sent, concurrently.
	var fastGot atomic.Int64
	fastRead := make(chan struct{}, 1)
	fastDone := make(chan error, 1)
	go func() {
		for {
			if _, _, err := fast.conn.Read(ctx); err != nil {
				fastDone <- err
				return
			}
			fastGot.Add(1)
			select {
			case fastRead <- struct{}{}:
			default:
			}
		}
	}()

	// Broadcast at the fast client's pace until the slow client's queue
	// overflows (once the socket buffers are full); bounded in count.
	payload := strings.Repeat("x", 4096)
	sent := 0
	kicked := false
	for i := 0; i < 100_000 && !kicked; i++ {
		if err := h.Room("feed").Broadcast(ctx, &wshub.Message{Data: payload}); err != nil {
			t.Fatalf("broadcast %d: %v", i, err)
		}
		sent++
		for fastGot.Load() < int64(sent) {
			select {
			case <-fastRead:
			case <-ctx.Done():
				t.Fatal("fast client stalled")
			}
		}
		kicked = h.Stats().Kicked > 0
	}
	if !kicked {
		t.Fatalf("slow client not kicked after %d broadcasts", sent)
	}
	s := h.Stats()
	equal(t, "kicked", s.Kicked, 1)
	if s.Dropped == 0 {
		t.Fatal("no dropped messages counted")
	}
	equal(t, "slow close status", slow.readClose(), websocket.StatusPolicyViolation)
	if err := <-reasons; !errors.Is(err, wshub.ErrSendQueueFull) {
		t.Fatalf("disconnect reason: %v", err)
	}

	// The fast client got every broadcast and is still connected.
	eventually(t, "fast client caught up", func() bool { return fastGot.Load() == int64(sent) })
	if err := fastClient.Send(&wshub.Message{Data: "still here"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "fast client got the last one", func() bool { return fastGot.Load() == int64(sent)+1 })
	fast.conn.Close(websocket.StatusNormalClosure, "")
	<-fastDone
}

func TestPingTimeout(t *testing.T) {
	t.Parallel()
	reasons := make(chan error, 1)
	h := wshub.New(nil, &wshub.Options{
		OnDisconnect: func(_ *wshub.Client, err error) { reasons <- err },
		Limits:       wshub.Limits{PingInterval: 50 * time.Millisecond},
	})
	ts := serve(t, h)
	// A coder/websocket client answers pings only while it reads; this one
	// does not read, like a peer that vanished.
	dial(t, ts)
	if err := <-reasons; !errors.Is(err, wshub.ErrPongTimeout) {
		t.Fatalf("disconnect reason: %v", err)
	}
}

func TestPingKeepsLiveClient(t *testing.T) {
	t.Parallel()
	// The interval is the time a pong has to come back: generous, so that a
	// loaded machine does not make a live client look dead.
	h := wshub.New(nil, &wshub.Options{Limits: wshub.Limits{PingInterval: 500 * time.Millisecond}})
	ts := serve(t, h)
	pings := make(chan struct{}, 100)
	ctx := testCtx(t)
	conn, _, err := websocket.Dial(ctx, wsURL(ts), &websocket.DialOptions{
		OnPingReceived: func(context.Context, []byte) bool {
			select {
			case pings <- struct{}{}:
			default:
			}
			return true
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	readErr := make(chan error, 1)
	go func() {
		_, _, err := conn.Read(ctx)
		readErr <- err
	}()
	for range 3 {
		select {
		case <-pings:
		case err := <-readErr:
			t.Fatalf("connection ended after answering pings: %v", err)
		}
	}
	equal(t, "clients", h.Stats().Clients, 1)
	conn.Close(websocket.StatusNormalClosure, "")
	<-readErr
}

func TestShutdownFlushesAndCloses1001(t *testing.T) {
	t.Parallel()
	reasons := make(chan error, 1)
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		OnConnect:    func(c *wshub.Client) { connected <- c },
		OnDisconnect: func(_ *wshub.Client, err error) { reasons <- err },
	})
	ts := serve(t, h)
	p := dial(t, ts)
	c := <-connected
	const n = 50
	for i := range n {
		if err := c.Send(&wshub.Message{Data: i}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- h.Shutdown(testCtx(t)) }()
	for i := range n {
		equal(t, "flushed message", string(p.read().Data), fmt.Sprint(i))
	}
	equal(t, "close status", p.readClose(), websocket.StatusGoingAway)
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if err := <-reasons; !errors.Is(err, wshub.ErrHubClosed) {
		t.Fatalf("disconnect reason: %v", err)
	}

	// After Shutdown: 503 for new clients, ErrHubClosed for broadcasts,
	// and Shutdown and Close again are no-ops.
	_, resp, err := websocket.Dial(testCtx(t), wsURL(ts), nil)
	if err == nil {
		t.Fatal("dial after shutdown succeeded")
	}
	equal(t, "status", resp.StatusCode, http.StatusServiceUnavailable)
	checkRetryAfter(t, resp)
	if err := h.Room("x").Broadcast(testCtx(t), &wshub.Message{}); !errors.Is(err, wshub.ErrHubClosed) {
		t.Fatalf("broadcast after shutdown: %v", err)
	}
	if err := h.Shutdown(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	h.Close()
	h.Close()
}

func TestShutdownDeadlineForcesClose(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		OnConnect: func(c *wshub.Client) { connected <- c },
		Limits:    wshub.Limits{SendQueue: 1 << 20, SendQueueBytes: 1 << 30, PingInterval: -1},
	})
	ts := serve(t, h)
	dial(t, ts) // never reads, so its queue cannot be flushed
	c := <-connected
	payload := strings.Repeat("x", 64<<10)
	n := soak(300, 1000) // 19 or 64 MB: more than socket buffers hold
	for range n {
		if err := c.Send(&wshub.Message{Data: payload}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("shutdown with an ended context: %v", err)
	}
	s := h.Stats()
	equal(t, "clients", s.Clients, 0)
	if s.Dropped == 0 || s.MessagesOut+s.Dropped != uint64(n) {
		t.Fatalf("forced close: %d written, %d counted dropped, of %d", s.MessagesOut, s.Dropped, n)
	}
}

func TestCloseAndShutdownFromHooks(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		stop func(h *wshub.Hub) error
	}{
		{"Shutdown", func(h *wshub.Hub) error { return h.Shutdown(context.Background()) }},
		{"Close", func(h *wshub.Hub) error { return h.Close() }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var h *wshub.Hub
			stopped := make(chan error, 3)
			connected := make(chan struct{}, 2)
			h = wshub.New(wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
				stopped <- tt.stop(h)
				return nil
			}), &wshub.Options{
				OnConnect:    func(*wshub.Client) { connected <- struct{}{} },
				OnDisconnect: func(*wshub.Client, error) { stopped <- tt.stop(h) },
			})
			ts := serve(t, h)
			peers := []*peer{dial(t, ts), dial(t, ts)}
			<-connected
			<-connected
			for _, p := range peers {
				go p.readClose() // answer the close handshake
			}
			peers[0].sendRaw(`{"type":"stop"}`)
			for range 3 { // handler, then both clients' disconnect hooks
				if err := <-stopped; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestUpgradeDuringShutdown: an upgrade that was past the MaxClients and
// closing checks when Shutdown began still gets 503, and Shutdown waits for
// the clients it must flush.
func TestUpgradeDuringShutdown(t *testing.T) {
	t.Parallel()
	inAuth, release := make(chan struct{}, 2), make(chan struct{})
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			if r.URL.Query().Get("late") != "" {
				inAuth <- struct{}{}
				<-release
			}
			return wshub.Identity{}, nil
		},
		OnConnect: func(c *wshub.Client) { connected <- c },
		Limits:    wshub.Limits{PingInterval: -1, SendQueue: 1 << 20, SendQueueBytes: 1 << 30},
	})
	ts := serve(t, h)
	dial(t, ts) // never reads: Shutdown cannot flush it before its deadline
	c := <-connected
	payload := strings.Repeat("x", 64<<10)
	for range soak(300, 1000) { // 19 or 64 MB: more than socket buffers hold
		c.Send(&wshub.Message{Data: payload})
	}
	ctx := testCtx(t)
	statuses := make(chan int, 2)
	for range 2 {
		go func() {
			_, resp, err := websocket.Dial(ctx, wsURL(ts)+"?late=1", nil)
			if err == nil {
				statuses <- 101
				return
			}
			statuses <- resp.StatusCode
		}()
		<-inAuth
	}
	shutdownCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.Shutdown(shutdownCtx) }()
	eventually(t, "shutdown to begin", func() bool {
		return h.Room("x").Broadcast(ctx, &wshub.Message{}) != nil
	})
	close(release)
	for range 2 {
		equal(t, "late upgrade status", <-statuses, http.StatusServiceUnavailable)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while a client still had queued messages", err)
	default:
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("shutdown: %v", err)
	}
}

// TestPeerCloseWhileStreaming: a client that closes while the server is
// writing to it gets the close handshake answered, not a cut connection.
func TestPeerCloseWhileStreaming(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{OnConnect: func(c *wshub.Client) { connected <- c }, Limits: wshub.Limits{SendQueue: 1 << 17, SendQueueBytes: 64 << 20}})
	ts := serve(t, h)
	for i := range 20 {
		p := dial(t, ts)
		c := <-connected
		stop := make(chan struct{})
		streamed := make(chan struct{})
		go func() {
			defer close(streamed)
			for j := 0; j < 100_000; j++ {
				select {
				case <-stop:
					return
				default:
				}
				if c.Send(&wshub.Message{Data: j}) != nil {
					return
				}
			}
		}()
		go func() {
			for {
				if _, _, err := p.conn.Read(p.ctx); err != nil {
					return
				}
			}
		}()
		err := p.conn.Close(websocket.StatusNormalClosure, "bye")
		close(stop)
		<-streamed
		if err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
}

// gatedServer serves h behind a middleware that hands the hub a server-side
// connection whose writes wait while its gate is shut: a socket whose peer
// stopped reading, under the test's control. hijacked (optional) runs in
// Hijack before the connection is handed over.
type gatedServer struct {
	open     chan struct{} // closed while the gate is open
	shut     atomic.Bool
	blocked  chan struct{} // receives when a write starts waiting
	hijacked func()
}

type gatedConn struct {
	net.Conn
	g *gatedServer
}

func (c gatedConn) Write(p []byte) (int, error) {
	if c.g.shut.Load() {
		select {
		case c.g.blocked <- struct{}{}:
		default:
		}
		<-c.g.open
	}
	return c.Conn.Write(p)
}

type gatedWriter struct {
	http.ResponseWriter
	g *gatedServer
}

func (w gatedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.g.hijacked != nil {
		w.g.hijacked()
	}
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	gc := gatedConn{Conn: conn, g: w.g}
	brw.Writer.Reset(gc)
	return gc, brw, nil
}

func serveGated(t testing.TB, h *wshub.Hub, hijacked func()) (*httptest.Server, *gatedServer) {
	g := &gatedServer{open: make(chan struct{}), blocked: make(chan struct{}, 1), hijacked: hijacked}
	mux := http.NewServeMux()
	mux.Handle("/ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(gatedWriter{ResponseWriter: w, g: g}, r)
	}))
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		g.openGate()
		h.Close()
		ts.Close()
	})
	return ts, g
}

func (g *gatedServer) shutGate() { g.shut.Store(true) }

func (g *gatedServer) openGate() {
	if g.shut.CompareAndSwap(true, false) {
		close(g.open)
	}
}

// TestPendingPingKeepsGracefulClose: a keepalive ping waiting behind a
// writer that is stuck on its socket does not turn Shutdown's graceful
// close into a cut connection.
func TestPendingPingKeepsGracefulClose(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		OnConnect: func(c *wshub.Client) { connected <- c },
		Limits:    wshub.Limits{PingInterval: time.Hour, SendQueue: 1 << 12}, // pings only when the test says
	})
	ts, g := serveGated(t, h, nil)
	p := dial(t, ts)
	c := <-connected
	g.shutGate()
	const n = 257
	payload := strings.Repeat("x", 1000)
	for range n {
		if err := c.Send(&wshub.Message{Data: payload}); err != nil {
			t.Fatal(err)
		}
	}
	// The writer is stuck on the socket with its first small batch, which
	// it writes after the frames: a ping then waits for that write.
	<-g.blocked
	wshub.PingNow(c)
	shutdown := make(chan error, 1)
	go func() { shutdown <- h.Shutdown(testCtx(t)) }()
	eventually(t, "shutdown to begin", func() bool {
		return h.Room("probe").Broadcast(testCtx(t), &wshub.Message{}) != nil
	})
	g.openGate()
	got := 0
	for {
		_, _, err := p.conn.Read(p.ctx)
		if err != nil {
			equal(t, fmt.Sprintf("close status after %d of %d messages", got, n), websocket.CloseStatus(err), websocket.StatusGoingAway)
			break
		}
		got++
	}
	equal(t, "messages", got, n)
	if err := <-shutdown; err != nil {
		t.Fatal(err)
	}
}

// TestForcedCloseAccountsForEveryMessage: when Close cuts a client whose
// writer is in the middle of a batch, every queued message is counted
// once, as written (it reached the socket) or as dropped.
func TestForcedCloseAccountsForEveryMessage(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		OnConnect: func(c *wshub.Client) { connected <- c },
		Limits:    wshub.Limits{PingInterval: -1, SendQueue: 1 << 14},
	})
	ts, g := serveGated(t, h, nil)
	p := dial(t, ts)
	c := <-connected
	received := make(chan int, 1)
	go func() {
		got := 0
		for {
			if _, _, err := p.conn.Read(p.ctx); err != nil {
				received <- got
				return
			}
			got++
		}
	}()
	const n = 10_001
	for i := range n {
		if i == n/3 {
			g.shutGate()
		}
		if err := c.Send(&wshub.Message{Data: i}); err != nil {
			t.Fatal(err)
		}
	}
	<-g.blocked // the writer holds a batch it cannot write
	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	eventually(t, "close to begin", func() bool {
		return h.Room("probe").Broadcast(testCtx(t), &wshub.Message{}) != nil
	})
	g.openGate() // the cut connection fails the write
	<-closed
	s := h.Stats()
	equal(t, "written + dropped", s.MessagesOut+s.Dropped, uint64(n))
	if got := <-received; uint64(got) > s.MessagesOut {
		t.Fatalf("peer received %d messages, more than the %d counted as written", got, s.MessagesOut)
	}
}

// TestLateUpgradeIsCut: an upgrade that completes after Close began is cut
// at once, not closed with a handshake that Close would wait for.
func TestLateUpgradeIsCut(t *testing.T) {
	t.Parallel()
	inHijack, release := make(chan struct{}), make(chan struct{})
	h := wshub.New(nil, &wshub.Options{Limits: wshub.Limits{PingInterval: -1}})
	ts, _ := serveGated(t, h, func() {
		close(inHijack)
		<-release
	})
	dialed := make(chan *websocket.Conn, 1)
	go func() {
		conn, _, err := websocket.Dial(testCtx(t), wsURL(ts), nil)
		if err != nil {
			t.Error(err)
		}
		dialed <- conn
	}()
	<-inHijack
	closed := make(chan struct{})
	go func() { h.Close(); close(closed) }()
	eventually(t, "close to begin", func() bool {
		return h.Room("probe").Broadcast(testCtx(t), &wshub.Message{}) != nil
	})
	close(release)
	conn := <-dialed
	if conn == nil {
		return
	}
	defer conn.CloseNow()
	// The peer does not read, so a close handshake could not finish: Close
	// returns only because the connection is cut.
	<-closed
	_, _, err := conn.Read(testCtx(t))
	equal(t, "late client's close status", websocket.CloseStatus(err), -1)
}

func TestInvalidUTF8Closes1007(t *testing.T) {
	t.Parallel()
	reasons := make(chan error, 1)
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		OnDisconnect:  func(_ *wshub.Client, err error) { reasons <- err },
	})
	ts := serve(t, h)
	p := dial(t, ts)
	p.join("r")
	p.sendRaw("{\"type\":\"publish\",\"room\":\"r\",\"data\":\"\xff\xfe\"}")
	equal(t, "close status", p.readClose(), websocket.StatusInvalidFramePayloadData)
	if err := <-reasons; !errors.Is(err, wshub.ErrInvalidMessage) {
		t.Fatalf("disconnect reason: %v", err)
	}
}

func TestMaxRooms(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		OnConnect:     func(c *wshub.Client) { connected <- c },
		Limits:        wshub.Limits{MaxRooms: 2},
	})
	ts := serve(t, h)
	p := dial(t, ts)
	c := <-connected
	p.join("a")
	if err := c.Join("b"); err != nil {
		t.Fatal(err)
	}
	if err := c.Join("b"); err != nil {
		t.Fatalf("joining a room twice: %v", err)
	}
	if err := c.Join("c"); !errors.Is(err, wshub.ErrTooManyRooms) {
		t.Fatalf("server-side join past the cap: %v", err)
	}
	m := p.request(`{"type":"join","room":"c","id":"3"}`)
	equal(t, "type", m.Type, "error")
	equal(t, "id", m.ID, "3")
	equal(t, "room", m.Room, "c")
	if !strings.HasPrefix(m.Error, wshub.ErrTooManyRooms.Error()) {
		t.Fatalf("error %q", m.Error)
	}
	// Leaving frees a slot.
	p.mustAck(`{"type":"leave","room":"a","id":"l"}`)
	p.join("c")
	equal(t, "rooms", strings.Join(c.Rooms(), ","), "b,c")
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	reasons := make(chan error, 1)
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		OnDisconnect:  func(_ *wshub.Client, err error) { reasons <- err },
		Limits:        wshub.Limits{RateLimit: 0.001, RateBurst: 3}, // no token comes back during the test
	})
	ts := serve(t, h)
	p := dial(t, ts)
	for i := range 3 {
		p.mustAck(`{"type":"join","room":"r%d","id":"%d"}`, i, i)
	}
	// Past the burst, each message is refused with its id, and the
	// MaxInvalidMessages-th refusal in a row closes the client.
	for i := range wshub.MaxInvalidMessages {
		m := p.request(`{"type":"join","room":"x","id":"x%d"}`, i)
		equal(t, "type", m.Type, "error")
		equal(t, "id", m.ID, fmt.Sprintf("x%d", i))
		equal(t, "error", m.Error, wshub.ErrRateLimited.Error())
	}
	equal(t, "close status", p.readClose(), websocket.StatusPolicyViolation)
	if err := <-reasons; !errors.Is(err, wshub.ErrRateLimited) {
		t.Fatalf("disconnect reason: %v", err)
	}
	eventually(t, "rooms emptied", func() bool { return h.Stats().Rooms == 0 })
}
