package wshub_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// TestIdleReadersPark checks that idle clients hold no goroutine (on
// Linux, where the hub's poller watches their sockets), that they wake
// for what they send, answer pings while parked, and that Shutdown closes
// them.
func TestIdleReadersPark(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("readers park on Linux only")
	}
	const n = 200
	// The peers read only when the test does, so they would not answer
	// pings: TestParkedReadersTakePongs checks those.
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Limits: wshub.Limits{PingInterval: -1}})
	ts := serve(t, h)
	ctx := testCtx(t)
	before := runtime.NumGoroutine()
	peers := make([]*peer, n)
	for i := range peers {
		peers[i] = dial(t, ts)
		peers[i].join("lobby")
	}
	// The clients' own read goroutines (coder's, in this process) are
	// not the hub's: each peer reads only when the test does. So n more
	// goroutines would mean the hub's readers did not park.
	eventually(t, "the readers parked", func() bool { return runtime.NumGoroutine()-before < n/4 })

	// Woken by what they send: every peer publishes, and every peer gets
	// every message once, in one order.
	for i, p := range peers {
		p.sendRaw(fmt.Sprintf(`{"type":"publish","room":"lobby","data":%d}`, i))
	}
	var order []string
	for j, p := range peers {
		seen := make(map[string]bool)
		for i := range n {
			m := p.read()
			if m.Type != "message" || seen[string(m.Data)] {
				t.Fatalf("peer %d: got %+v, twice or not a message", j, m)
			}
			seen[string(m.Data)] = true
			if j == 0 {
				order = append(order, string(m.Data))
			} else if string(m.Data) != order[i] {
				t.Fatalf("peer %d: message %d is %s, peer 0's is %s", j, i, m.Data, order[i])
			}
		}
	}
	eventually(t, "the readers parked again", func() bool { return runtime.NumGoroutine()-before < n/4 })

	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		equal(t, "close code", p.readClose(), websocket.StatusGoingAway)
	}
}

// TestParkedReadersTakePongs checks that parked readers see the pongs
// that answer the hub's pings: clients that answer (coder answers pings
// while it reads) outlive many ping intervals, and one that stops
// answering is closed.
func TestParkedReadersTakePongs(t *testing.T) {
	reasons := make(chan error, 10)
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		Limits:        wshub.Limits{PingInterval: 500 * time.Millisecond}, // generous, for a loaded machine
		OnDisconnect:  func(c *wshub.Client, err error) { reasons <- err },
	})
	ts := serve(t, h)
	ctx := testCtx(t)
	reading := make(chan error, 3)
	for range 3 {
		p := dial(t, ts)
		go func() {
			_, _, err := p.conn.Read(ctx)
			reading <- err
		}()
	}
	silent := dial(t, ts) // reads nothing, so answers no ping
	if err := <-reasons; !errors.Is(err, wshub.ErrPongTimeout) {
		t.Fatalf("the silent client's disconnect: %v, want a pong timeout", err)
	}
	silent.conn.CloseNow()
	deadline := time.Now().Add(3 * time.Second) // 6 ping intervals
	for time.Now().Before(deadline) {
		select {
		case err := <-reading:
			t.Fatalf("a client answering pings was closed: %v", err)
		case err := <-reasons:
			t.Fatalf("a client answering pings was closed: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	equal(t, "clients", h.Stats().Clients, 3)
	h.Close()
	for range 3 {
		<-reading
	}
}

// rawClient is a WebSocket client that writes frames byte by byte, to
// check the hub's parsing of what it reads.
type rawClient struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, url string) *rawClient {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(strings.TrimSuffix(url, "/ws"), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", base64.StdEncoding.EncodeToString(key))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	return &rawClient{t: t, conn: conn, br: br}
}

// frame returns a masked client frame.
func frame(opcode byte, payload []byte) []byte {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n < 1<<16:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	default:
		b = append(b, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	mask := []byte{1, 2, 3, 4}
	b = append(b, mask...)
	for i, x := range payload {
		b = append(b, x^mask[i%4])
	}
	return b
}

// readFrame reads a server frame (unmasked, unfragmented, short).
func (r *rawClient) readFrame() (opcode byte, payload []byte) {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(time.Minute))
	var h [2]byte
	if _, err := r.br.Read(h[:1]); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.br.Read(h[1:]); err != nil {
		r.t.Fatal(err)
	}
	n := int(h[1] & 0x7f)
	if n == 126 {
		var l [2]byte
		if _, err := r.br.Read(l[:1]); err != nil {
			r.t.Fatal(err)
		}
		if _, err := r.br.Read(l[1:]); err != nil {
			r.t.Fatal(err)
		}
		n = int(l[0])<<8 | int(l[1])
	}
	payload = make([]byte, n)
	for got := 0; got < n; {
		k, err := r.br.Read(payload[got:])
		if err != nil {
			r.t.Fatal(err)
		}
		got += k
	}
	return h[0] & 0x0f, payload
}

// TestPongsTakenOffTheStream sends frames cut at every byte, with pongs
// (empty, with a payload, and with the longest header a control frame
// may have) between and inside the bursts of data frames: the hub sees
// the data frames whole and in order, answers each, and counts the pongs
// as answers to its pings.
func TestPongsTakenOffTheStream(t *testing.T) {
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		Limits:        wshub.Limits{PingInterval: 500 * time.Millisecond}, // generous, for a loaded machine
	})
	ts := serve(t, h)
	r := dialRaw(t, ts.URL)
	pong := frame(0xA, nil)
	pongData := frame(0xA, []byte("keepalive"))
	var stream []byte
	const n = 20
	for i := range n {
		stream = append(stream, pong...)
		m := fmt.Sprintf(`{"type":"join","room":"r%d","id":"%d"}`, i, i)
		if i%5 == 4 {
			m = fmt.Sprintf(`{"type":"join","room":"r%d","id":"%d","pad":%q}`, i, i, strings.Repeat("x", 300))
		}
		stream = append(stream, frame(0x1, []byte(m))...)
		stream = append(stream, pongData...)
	}
	// Byte by byte for the first half, in odd chunks for the rest; pings
	// come meanwhile, answered by the pongs the stream carries.
	half := len(stream) / 2
	for i := range half {
		if _, err := r.conn.Write(stream[i : i+1]); err != nil {
			t.Fatal(err)
		}
	}
	for i := half; i < len(stream); i += 7 {
		if _, err := r.conn.Write(stream[i:min(i+7, len(stream))]); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; {
		op, payload := r.readFrame()
		switch op {
		case 0x9: // a ping: answer it, or the hub closes the connection
			if _, err := r.conn.Write(pong); err != nil {
				t.Fatal(err)
			}
		case 0x1:
			var m struct{ Type, ID string }
			if err := json.Unmarshal(payload, &m); err != nil || m.Type != "ack" || m.ID != fmt.Sprint(i) {
				t.Fatalf("got %s (%v), want the ack of join %d", payload, err, i)
			}
			i++
		default:
			t.Fatalf("got a frame of opcode %d: %q", op, payload)
		}
	}
	// A client that answers pings outlives many of them.
	done := time.Now().Add(3 * time.Second)
	for time.Now().Before(done) {
		if op, payload := r.readFrame(); op != 0x9 {
			t.Fatalf("got a frame of opcode %d: %q, want pings", op, payload)
		}
		if _, err := r.conn.Write(pongData); err != nil {
			t.Fatal(err)
		}
	}
	equal(t, "clients", h.Stats().Clients, 1)
}

// TestIdlePingsAllocateNothing checks that keeping idle clients alive
// allocates nothing: the hub's keepalive writes the pings, its poller
// takes the pongs while the readers stay parked. The peers here answer
// each ping with a pong and allocate nothing either, so what the process
// allocates over hundreds of pings is the hub's.
func TestIdlePingsAllocateNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("readers park on Linux only")
	}
	const n = 100
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Limits: wshub.Limits{PingInterval: 200 * time.Millisecond}})
	ts := serve(t, h)
	ctx := testCtx(t)
	const warm, end = 2 * n, 7 * n // pings: after a round or two, then 5 more
	var pings atomic.Int64
	warmed, ended := make(chan struct{}), make(chan struct{})
	pong := frame(0xA, nil)
	for range n {
		r := dialRaw(t, ts.URL)
		go func() {
			h := make([]byte, 2)
			for {
				if _, err := io.ReadFull(r.br, h); err != nil {
					return // closed at the test's end
				}
				if h[0] != 0x89 || h[1] != 0 {
					t.Errorf("got a frame %x, want an empty ping", h)
					return
				}
				if _, err := r.conn.Write(pong); err != nil {
					return
				}
				switch pings.Add(1) {
				case warm:
					close(warmed)
				case end:
					close(ended)
				}
			}
		}()
	}
	var m0, m1 runtime.MemStats
	select {
	case <-warmed:
	case <-ctx.Done():
		t.Fatal("no pings")
	}
	runtime.ReadMemStats(&m0)
	p0 := pings.Load()
	select {
	case <-ended:
	case <-ctx.Done():
		t.Fatal("pings stopped")
	}
	runtime.ReadMemStats(&m1)
	p1 := pings.Load()
	allocs, answered := m1.Mallocs-m0.Mallocs, p1-p0
	t.Logf("%d allocations over %d pings answered", allocs, answered)
	if allocs*20 > uint64(answered) {
		t.Fatalf("%d allocations over %d pings, want none (at most one in 20 pings, for the runtime's own)", allocs, answered)
	}
	equal(t, "clients", h.Stats().Clients, n)
}

// TestStuckReadersDelayNobodyElse checks that the hub's write pool never
// waits for a socket: more clients than the pool has goroutines stop
// reading while big messages go to their room, until their sockets are
// full, and a client that reads still gets every message.
func TestStuckReadersDelayNobodyElse(t *testing.T) {
	stuck, msgs := runtime.GOMAXPROCS(0)+2, 200 // more than the pool's goroutines
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		Limits:        wshub.Limits{SendQueue: 1 << 12, SendQueueBytes: 1 << 30, WriteTimeout: 5 * time.Minute, PingInterval: -1},
	})
	ts := serve(t, h)
	for range stuck {
		dial(t, ts).join("r") // and reads no more
	}
	p := dial(t, ts)
	p.join("r")
	big := strings.Repeat("x", 30<<10) // 6 MB to each client in all: more than loopback sockets hold
	for i := range msgs {
		if err := h.Room("r").Broadcast(p.ctx, &wshub.Message{Data: json.RawMessage(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, big))}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range msgs {
		m := p.read()
		var d struct{ I int }
		if err := json.Unmarshal(m.Data, &d); err != nil || d.I != i {
			t.Fatalf("message %d: got %.40s (%v)", i, m.Data, err)
		}
	}
	if st := h.Stats(); st.Kicked != 0 {
		t.Fatalf("%d clients kicked, want none", st.Kicked)
	}
}
