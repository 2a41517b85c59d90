package main

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
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
