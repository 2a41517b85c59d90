package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
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

// TestCount checks that the client counts the messages of a frame by
// their "ts" keys: one message, the newline-joined frame of gorilla's
// chat example (gorilla-batch) and centrifuge's merged replies, a
// wshub.json-batch array, and frames without a payload.
func TestCount(t *testing.T) {
	one := newPayload()
	joined := bytes.Join([][]byte{newPayload(), newPayload(), newPayload()}, []byte("\n"))
	array := []byte("[" + string(one) + "," + string(one) + "]")
	for _, tc := range []struct {
		name   string
		data   []byte
		want   int64
		frames int64
	}{
		{"one message", one, 1, 1},
		{"newline-joined", joined, 3, 1},
		{"json-batch array", array, 2, 1},
		{"ack", []byte(`{"type":"ack","id":"j"}`), 0, 0},
	} {
		var c client
		c.count(tc.data)
		if got, frames := c.received.Load(), c.frames.Load(); got != tc.want || frames != tc.frames {
			t.Errorf("%s: counted %d messages in %d frames, want %d in %d", tc.name, got, frames, tc.want, tc.frames)
		}
	}
}

// TestGorillaBatch checks that the gorilla-batch writePump writes the
// messages queued for a client as one frame, newline-separated, as
// gorilla's chat example does, and the gorilla one a frame per message:
// the send channel is filled before the writePump starts.
func TestGorillaBatch(t *testing.T) {
	msgs := [][]byte{newPayload(), newPayload(), newPayload(), newPayload(), newPayload()}
	for name, want := range map[string][][]byte{
		"gorilla":       msgs,
		"gorilla-batch": {bytes.Join(msgs, []byte("\n"))},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := findContender(name)
			if err != nil {
				t.Fatal(err)
			}
			srv, err := c.server()
			if err != nil {
				t.Fatal(err)
			}
			h := srv.(*gorillaHub)
			defer h.close()
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, err := h.upgrader.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				cl := &gorillaClient{hub: h, conn: conn, send: make(chan []byte, len(msgs))}
				for _, m := range msgs {
					cl.send <- m
				}
				close(cl.send) // the writePump then sends a close frame
				cl.writePump()
			}))
			defer hs.Close()
			conn, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			var got [][]byte
			for {
				_, data, err := conn.ReadMessage()
				if err != nil {
					if !websocket.IsCloseError(err, websocket.CloseNoStatusReceived) {
						t.Errorf("read: %v", err)
					}
					break
				}
				got = append(got, data)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("frames %q, want %q", got, want)
			}
			var cl client
			for _, f := range got {
				cl.count(f)
			}
			if cl.received.Load() != int64(len(msgs)) {
				t.Errorf("client counted %d messages, want %d", cl.received.Load(), len(msgs))
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

// TestFanoutSizes checks -fanout-sizes and that naming fanout-N in
// -scenario is enough to run that table, alone.
func TestFanoutSizes(t *testing.T) {
	for _, tc := range []struct {
		sizes, scenario string
		want            []int
		tables          []string // the scenarios that -scenario selects
	}{
		{"100,1000", "", []int{100, 1000}, []string{"fanout-100", "fanout-1000"}},
		{"100,1000", "fanout", []int{100, 1000}, []string{"fanout-100", "fanout-1000"}},
		{"100,1000", "fanout-10000", []int{100, 1000, 10000}, []string{"fanout-10000"}},
		{"10000", "fanout-10000", []int{10000}, []string{"fanout-10000"}},
		{"10000, 100,1000,100", "fanout", []int{100, 1000, 10000}, []string{"fanout-100", "fanout-1000", "fanout-10000"}},
		{"100,1000,10000", "fanout-1000", []int{100, 1000, 10000}, []string{"fanout-1000"}},
		{"100,1000", "fanout-100,fanout-500, latency", []int{100, 500, 1000}, []string{"fanout-100", "fanout-500", "latency"}},
	} {
		got, err := fanoutSizesOf(tc.sizes, tc.scenario)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("-fanout-sizes %q -scenario %q: %v, %v; want %v", tc.sizes, tc.scenario, got, err, tc.want)
			continue
		}
		if tc.scenario == "" {
			continue
		}
		cfg := testConfig(nil)
		cfg.fanout = got
		scs, err := selectScenarios(scenarios(cfg), tc.scenario)
		if err != nil {
			t.Errorf("-scenario %q: %v", tc.scenario, err)
			continue
		}
		var ids []string
		for _, sc := range scs {
			ids = append(ids, sc.id)
		}
		if !slices.Equal(ids, tc.tables) {
			t.Errorf("-fanout-sizes %q -scenario %q selects %v, want %v", tc.sizes, tc.scenario, ids, tc.tables)
		}
	}
	for _, bad := range []string{"", "100,x", "0", "-5", "100,1000000"} {
		if got, err := fanoutSizesOf(bad, ""); err == nil {
			t.Errorf("-fanout-sizes %q: %v, want an error", bad, got)
		}
	}
	if _, err := fanoutSizesOf("100", "fanout-1000000"); err == nil {
		t.Error("-scenario fanout-1000000: no error about the open files")
	}
}

// TestRemoteCPU checks the CPU time that the parent reads in /proc
// against getrusage, on this process: the same to a few clock ticks.
func TestRemoteCPU(t *testing.T) {
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	rm := &remote{cmd: &exec.Cmd{Process: p}}
	before, ok := rm.cpu()
	if !ok {
		t.Skip("no /proc")
	}
	r0 := cpuTime()
	x := 0
	for deadline := time.Now().Add(100 * time.Millisecond); time.Now().Before(deadline); {
		x++ // spin
	}
	after, _ := rm.cpu()
	r1 := cpuTime()
	got, want := time.Duration(after-before), time.Duration(r1-r0)
	if d := got - want; d > 30*time.Millisecond || d < -30*time.Millisecond || x == 0 {
		t.Errorf("/proc says %v of CPU, getrusage %v", got, want)
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
