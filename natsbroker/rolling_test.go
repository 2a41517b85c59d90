package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/client"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// rollingHub is one place of a rolling deploy: a load balancer's address
// whose hub is replaced by a new one.
type rollingHub struct {
	hub atomic.Pointer[wshub.Hub]
	url string
}

func newLogHub(t *testing.T, url string) *wshub.Hub {
	t.Helper()
	nc, err := nats.Connect(url, nats.ReconnectBufSize(-1), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := natsbroker.NewLog(nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := wshub.New(nil, &wshub.Options{
		Engine:        lg,
		Rooms:         et.RoomsOf(et.Policies(map[string]wshub.HistoryPolicy{"r": {Messages: 100000}})),
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
	})
	t.Cleanup(func() {
		h.Close()
		nc.Close()
	})
	return h
}

func newRollingHub(t *testing.T, url string) *rollingHub {
	r := &rollingHub{}
	r.hub.Store(newLogHub(t, url))
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { r.hub.Load().ServeHTTP(w, req) }))
	t.Cleanup(ts.Close)
	r.url = "ws" + strings.TrimPrefix(ts.URL, "http")
	return r
}

// roller is a client of a rolling deploy: it reads room r, counting its
// reconnections, and may publish.
type roller struct {
	c          *client.Conn
	got        []et.Payload
	reconnects atomic.Int64
	lost       atomic.Int64 // rejoins that could not recover
	err        error
	done       chan struct{}
}

func startRoller(t *testing.T, url string) *roller {
	t.Helper()
	ctx := et.Ctx(t)
	r := &roller{done: make(chan struct{})}
	var err error
	r.c, err = client.Dial(ctx, url, &client.Options{
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnEvent: func(e client.Event) {
			switch {
			case e.State == client.Rejoining && e.Room == "": // not a room's rejoin
				r.reconnects.Add(1)
			case e.Room != "" && !e.Recovered:
				r.lost.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.c.Close() })
	if _, err := r.c.Join(ctx, "r", nil); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(r.done)
		for m := range r.c.Messages() {
			if m.Type != wshub.TypeMessage {
				continue
			}
			var d et.Payload
			b, _ := m.Data.(json.RawMessage)
			if err := json.Unmarshal(b, &d); err != nil {
				r.err = err
				return
			}
			if d.Pub == "sentinel" {
				return
			}
			r.got = append(r.got, d)
		}
		r.err = fmt.Errorf("connection ended: %v", r.c.Err())
	}()
	return r
}

// publishFor publishes et.Payload{Pub: pub, Seq: seq} every interval until stop
// closes, and returns the seqs acknowledged.
func (r *roller) publishFor(ctx context.Context, pub string, interval time.Duration, stop <-chan struct{}) map[int]bool {
	acked := make(map[int]bool)
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			wg.Wait()
			return acked
		case <-tick.C:
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if r.c.Publish(pctx, "r", et.Payload{Pub: pub, Seq: seq}) == nil {
				mu.Lock()
				acked[seq] = true
				mu.Unlock()
			}
		})
	}
}

// TestLogRollingRestart: one of two hubs on the room log is replaced
// under 2 × 100 publishes a second, as a rolling deploy does: new
// connections go to the new hub, then the old one shuts down (its clients
// get 1001 and reconnect to the new one, rejoining with since). No
// acknowledged publish is lost, every member gets the same messages in
// one order, and no client reconnects more than once.
func TestLogRollingRestart(t *testing.T) {
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	a := newRollingHub(t, s.ClientURL())
	b := newRollingHub(t, s.ClientURL())
	var rollers []*roller
	for i := range 20 {
		url := a.url
		if i%2 == 1 {
			url = b.url
		}
		rollers = append(rollers, startRoller(t, url))
	}
	ctx := et.Ctx(t)
	stop := make(chan struct{})
	acked := make(map[string]map[int]bool)
	var mu sync.Mutex
	var pubs sync.WaitGroup
	for i, pub := range []string{"a", "b"} { // a publisher on each hub
		pubs.Go(func() {
			got := rollers[i].publishFor(ctx, pub, 10*time.Millisecond, stop)
			mu.Lock()
			acked[pub] = got
			mu.Unlock()
		})
	}
	time.Sleep(time.Second) // traffic before the deploy

	old := a.hub.Load()
	a.hub.Store(newLogHub(t, s.ClientURL())) // the new hub takes new connections
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	if err := old.Shutdown(sctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	cancel()
	time.Sleep(time.Second) // and after
	close(stop)
	pubs.Wait()

	if err := b.hub.Load().Room("r").Broadcast(ctx, &wshub.Message{Data: et.Payload{Pub: "sentinel"}}); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	for i, r := range rollers {
		select {
		case <-r.done:
		case <-ctx.Done():
			t.Fatalf("client %d: no sentinel", i)
		}
		if r.err != nil {
			t.Fatalf("client %d: %v", i, r.err)
		}
		want := int64(0)
		if i%2 == 0 {
			want = 1 // on the hub replaced
		}
		et.Equal(t, fmt.Sprintf("client %d's reconnections", i), r.reconnects.Load(), want)
		et.Equal(t, fmt.Sprintf("client %d's rejoins not recovered", i), r.lost.Load(), 0)
	}
	seen := make(map[et.Payload]bool)
	for _, d := range rollers[0].got {
		if seen[d] {
			t.Fatalf("%+v delivered twice", d)
		}
		seen[d] = true
	}
	for pub, seqs := range acked {
		for seq := range seqs {
			if !seen[et.Payload{Pub: pub, Seq: seq}] {
				t.Fatalf("acknowledged publish %s %d lost", pub, seq)
			}
		}
	}
	for i, r := range rollers[1:] {
		if !slices.Equal(r.got, rollers[0].got) {
			t.Fatalf("client %d got %d messages, client 0 %d: not one order", i+1, len(r.got), len(rollers[0].got))
		}
	}
	t.Logf("%d messages; acknowledged: a %d, b %d", len(rollers[0].got), len(acked["a"]), len(acked["b"]))
}
