package wshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// observer is a member that builds its view of a presence room from the
// state and the diffs, as PROTOCOL.md §6 says a client does.
type observer struct {
	mu     sync.Mutex
	view   map[string]bool
	diffs  int       // diff frames read
	joined time.Time // before its join was sent
	err    error
}

func (o *observer) run(conn *websocket.Conn, ctx context.Context) {
	for {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return
		}
		var m presMsg
		if err := json.Unmarshal(b, &m); err != nil {
			o.fail(fmt.Errorf("decode %s: %w", b, err))
			return
		}
		o.mu.Lock()
		switch m.Type {
		case "presence":
			if m.Data.Total != len(m.Data.Members) {
				o.err = fmt.Errorf("state lists %d of %d", len(m.Data.Members), m.Data.Total)
			}
			o.view = make(map[string]bool)
			for _, p := range m.Data.Members {
				o.view[p.ID] = true
			}
		case "presence_diff":
			o.diffs++
			if o.view == nil {
				o.err = fmt.Errorf("a diff before the state: %s", b)
			}
			for _, p := range m.Data.Joins {
				o.view[p.ID] = true
			}
			for _, p := range m.Data.Leaves {
				delete(o.view, p.ID)
			}
		case "ack":
		default:
			o.err = fmt.Errorf("unexpected frame %s", b)
		}
		o.mu.Unlock()
	}
}

func (o *observer) fail(err error) {
	o.mu.Lock()
	o.err = err
	o.mu.Unlock()
}

// TestPresenceNeverDrifts is a property test: whatever the interleaving
// of joins, leaves, drops and reconnects, every member's view (the state
// plus the diffs) equals the room's membership once the room is quiet,
// and no member gets more than one diff per interval. 20 IDs come and go
// on 60 connections while observers join at random moments, many of them
// within an interval in which an ID came and went.
func TestPresenceNeverDrifts(t *testing.T) {
	for run := range soak(2, 10) {
		t.Run(fmt.Sprint(run), func(t *testing.T) { presenceDrift(t) })
	}
}

func presenceDrift(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>7))
	h, ts := presenceHub(t, wshub.Options{})
	ctx := testCtx(t)
	const room = "pdrift"
	join := fmt.Sprintf(`{"type":"join","room":%q}`, room)
	leave := fmt.Sprintf(`{"type":"leave","room":%q}`, room)

	// A slot is a connection of ID u<slot%20>; nil while disconnected.
	var readers sync.WaitGroup
	t.Cleanup(readers.Wait)
	connect := func(id string) *websocket.Conn {
		conn, _, err := websocket.Dial(ctx, wsURL(ts)+"?id="+id, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", id, err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		return conn
	}
	send := func(conn *websocket.Conn, s string) {
		if err := conn.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	slots := make([]*websocket.Conn, 60)
	discard := func(c *websocket.Conn) {
		readers.Go(func() {
			for {
				if _, _, err := c.Read(ctx); err != nil {
					return
				}
			}
		})
	}
	for i := range slots {
		slots[i] = connect(fmt.Sprintf("u%02d", i%20))
		discard(slots[i])
	}

	var obs []*observer
	addObserver := func() {
		o := &observer{joined: time.Now()}
		conn := connect(fmt.Sprintf("obs%d", len(obs)))
		obs = append(obs, o)
		readers.Go(func() { o.run(conn, ctx) })
		send(conn, join)
	}

	for op := range soak(300, 600) {
		if op%40 == 13 {
			addObserver()
		}
		i := rng.IntN(len(slots))
		c := slots[i]
		switch r := rng.IntN(10); {
		case c == nil: // reconnect
			c = connect(fmt.Sprintf("u%02d", i%20))
			slots[i] = c
			discard(c)
			send(c, join)
		case r < 5:
			send(c, join) // joining twice is an error frame: no change
		case r < 8:
			send(c, leave)
		case r < 9:
			c.CloseNow() // a drop
			slots[i] = nil
		default:
			c.Close(websocket.StatusNormalClosure, "")
			slots[i] = nil
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond) // spread the ops over intervals
		}
	}
	addObserver()

	// Quiet: every view must come to equal the room's membership, and
	// stay there (a drift never corrects itself).
	truth := func() []string {
		var ids []string
		for _, p := range h.Room(room).Presence() {
			ids = append(ids, p.ID)
		}
		return ids
	}
	agree := func() (bool, string) {
		want := truth()
		for i, o := range obs {
			o.mu.Lock()
			got, err := slices.Sorted(maps.Keys(o.view)), o.err
			o.mu.Unlock()
			if err != nil {
				t.Fatalf("observer %d: %v", i, err)
			}
			if !slices.Equal(got, want) {
				return false, fmt.Sprintf("observer %d sees %v, the room has %v", i, got, want)
			}
		}
		return true, ""
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, why := agree()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no agreement 30 s after the last change: %s", why)
		}
		time.Sleep(20 * time.Millisecond)
	}
	end := time.Now()
	for i, o := range obs {
		o.mu.Lock()
		limit := int(end.Sub(o.joined)/(100*time.Millisecond)) + 1
		if o.diffs > limit {
			t.Errorf("observer %d got %d diffs in %v: more than one per interval", i, o.diffs, end.Sub(o.joined))
		}
		o.mu.Unlock()
	}
}
