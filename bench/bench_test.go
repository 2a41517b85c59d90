package main

import (
	"context"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cws "github.com/coder/websocket"
	"github.com/gorilla/websocket"
)

// serveInProcess serves contender c on a loopback port for the test.
func serveInProcess(t *testing.T, c contender) (server, string) {
	t.Helper()
	srv, err := c.server()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() {
		hs.Close()
		srv.close()
	})
	return srv, ln.Addr().String()
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestContenders checks, for every contender, that each client counts
// every message of a server-side publish once, batched or not, and that a
// churn cycle completes.
func TestContenders(t *testing.T) {
	for _, c := range contenders() {
		t.Run(c.name, func(t *testing.T) {
			srv, addr := serveInProcess(t, c)
			ctx := context.Background()
			clients, err := connectAll(ctx, addr, c.proto, 4, func(i int) int { return i % 2 })
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll(clients)
			waitUntil(t, "members", func() bool { return srv.members() == 4 })
			start(clients)
			const n = 20
			for range n {
				if err := srv.publish(roomName(0), newPayload()); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, "deliveries", func() bool { return totalReceived(clients) == 2*n })
			for _, cl := range clients {
				want := int64(0)
				if cl.room == 0 {
					want = n
				}
				if got := cl.received.Load(); got != want {
					t.Errorf("client of room %d received %d, want %d", cl.room, got, want)
				}
			}
			if err := cycle(ctx, addr, c.proto, "churn-test"); err != nil {
				t.Errorf("churn cycle: %v", err)
			}
			if k := srv.kicked(); k != 0 {
				t.Errorf("kicked %d", k)
			}
		})
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	for v := range int64(10000) {
		h.record(v)
	}
	for _, tc := range []struct {
		q    float64
		want int64
	}{{0.5, 5000}, {0.99, 9900}, {0, 0}} {
		got := h.quantile(tc.q)
		if d := got - tc.want; d > tc.want/50+1 || -d > tc.want/50+1 {
			t.Errorf("quantile(%v) = %d, want about %d", tc.q, got, tc.want)
		}
	}
	for _, v := range []int64{0, 127, 128, 1000, 1 << 40} {
		if lo := lowest(bucketOf(v)); lo > v || v-lo > v/60 {
			t.Errorf("value %d in bucket starting at %d", v, lo)
		}
	}
}

// TestHistoryContender checks that the wshub-history row numbers and keeps
// its room's messages, and the wshub row does not.
func TestHistoryContender(t *testing.T) {
	for name, want := range map[string]uint64{"wshub": 0, "wshub-history": 5} {
		t.Run(name, func(t *testing.T) {
			c, err := findContender(name)
			if err != nil {
				t.Fatal(err)
			}
			srv, addr := serveInProcess(t, c)
			clients, err := connectAll(context.Background(), addr, c.proto, 1, func(int) int { return 0 })
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll(clients)
			waitUntil(t, "members", func() bool { return srv.members() == 1 })
			start(clients)
			for range 5 {
				if err := srv.publish(roomName(0), newPayload()); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, "deliveries", func() bool { return totalReceived(clients) == 5 })
			_, seq, err := srv.(*wshubServer).hub.Room(roomName(0)).Position(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if seq != want {
				t.Errorf("latest seq %d, want %d", seq, want)
			}
		})
	}
}

// TestSelectContenders checks that the opt-in rows stay out of the
// default selection and run when named.
func TestSelectContenders(t *testing.T) {
	names := func(list []contender) []string {
		var s []string
		for _, c := range list {
			s = append(s, c.name)
		}
		return s
	}
	all, err := selectContenders("")
	if err != nil {
		t.Fatal(err)
	}
	if got := names(all); slices.Contains(got, "wshub-history") || !slices.Contains(got, "wshub") {
		t.Errorf("default selection %v, want wshub and not wshub-history", got)
	}
	some, err := selectContenders("wshub, wshub-history")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(some), []string{"wshub", "wshub-history"}; !slices.Equal(got, want) {
		t.Errorf("selection %v, want %v", got, want)
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		v      float64
		digits int
		want   string
	}{{1234567, 0, "1,234,567"}, {999, 0, "999"}, {12.345, 2, "12.35"}, {-1000, 0, "-1,000"}} {
		if got := format(tc.v, tc.digits); got != tc.want {
			t.Errorf("format(%v, %d) = %q, want %q", tc.v, tc.digits, got, tc.want)
		}
	}
}

// testFloodPlan is a flood below every contender's queue (256 messages),
// so every reader must get every message. Its time bounds only stop a hang.
var testFloodPlan = floodPlan{messages: 100, publishFor: 10 * time.Second, drainFor: 10 * time.Second, quiet: 5 * time.Second}

// TestFlood checks, for every contender, that a flood within the queues
// reaches every reader and is counted as such.
func TestFlood(t *testing.T) {
	for _, c := range contenders() {
		t.Run(c.name, func(t *testing.T) {
			srv, addr := serveInProcess(t, c)
			const n = 4
			clients, err := connectAll(context.Background(), addr, c.proto, n+1, func(int) int { return 0 })
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll(clients)
			waitUntil(t, "members", func() bool { return srv.members() == n+1 })
			res := flood(context.Background(), c.proto, roomName(0), clients[n], clients[:n], testFloodPlan)
			want := floodResult{sent: 100, delivered: n * 100, expected: n * 100, reasons: map[string]int{}}
			if got := outcomeOf(res); !reflect.DeepEqual(got, want) {
				t.Errorf("flood: got %+v, want %+v", got, want)
			}
			if res.deliverTime <= 0 || res.publishTime <= 0 {
				t.Errorf("flood times: publish %v, deliver %v", res.publishTime, res.deliverTime)
			}
		})
	}
}

// outcomeOf is res without its times.
func outcomeOf(res floodResult) floodResult {
	res.publishTime, res.deliverTime = 0, 0
	return res
}

// TestFloodReportsClosedReaders floods a server that forwards 10 messages
// and then closes every reader with 1008: the flood must report the
// closes and the missing deliveries, not fail.
func TestFloodReportsClosedReaders(t *testing.T) {
	h := &closingHub{forward: 10}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() {
		hs.Close()
		h.closers.Wait()
	})
	const n = 4
	p := queryProtocol{}
	clients, err := connectAll(context.Background(), ln.Addr().String(), p, n+1, func(int) int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(clients)
	waitUntil(t, "members", func() bool { return h.len() == n+1 })
	plan := testFloodPlan
	plan.messages = 50
	res := flood(context.Background(), p, roomName(0), clients[n], clients[:n], plan)
	want := floodResult{sent: 50, delivered: n * 10, expected: n * 50, readersClosed: n, reasons: map[string]int{"1008 full": n}}
	if got := outcomeOf(res); !reflect.DeepEqual(got, want) {
		t.Errorf("flood: got %+v, want %+v", got, want)
	}
	notes := strings.Join(floodNotes(res, plan), "; ")
	for _, s := range []string{"40 of 200 delivered", "4 readers closed: 1008 full"} {
		if !strings.Contains(notes, s) {
			t.Errorf("notes %q lack %q", notes, s)
		}
	}
}

// closingHub echoes the frames of any client to every client, up to
// forward frames; at the next one it closes every client but the sender
// with 1008 "full" and then only reads.
type closingHub struct {
	forward int
	closers sync.WaitGroup

	mu    sync.Mutex
	conns []*cws.Conn
	seen  int
}

func (h *closingHub) len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

func (h *closingHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, err := cws.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	h.mu.Lock()
	h.conns = append(h.conns, conn)
	h.mu.Unlock()
	ctx := r.Context()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		h.mu.Lock()
		h.seen++
		seen, conns := h.seen, slices.Clone(h.conns)
		h.mu.Unlock()
		for _, c := range conns {
			switch {
			case seen <= h.forward:
				c.Write(ctx, cws.MessageText, data)
			case seen == h.forward+1 && c != conn:
				// Close waits for the peer's close frame; the sender
				// keeps reading meanwhile.
				h.closers.Go(func() { c.Close(cws.StatusPolicyViolation, "full") })
			}
		}
	}
}

func TestCloseReason(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&websocket.CloseError{Code: 1008, Text: "send queue full"}, "1008 send queue full"},
		{&websocket.CloseError{Code: 3008}, "3008"},
		{&websocket.CloseError{Code: websocket.CloseAbnormalClosure, Text: "unexpected EOF"}, "cut without a close frame"},
		{&websocket.CloseError{Code: websocket.CloseNoStatusReceived}, "close frame without a status"},
		{&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, "cut: connection reset by peer"},
	} {
		if got := closeReason(tc.err); got != tc.want {
			t.Errorf("closeReason(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
