package wshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"golang.org/x/sync/errgroup"
)

// histMsg is a frame as a history client decodes it.
type histMsg struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Room      string          `json:"room"`
	Data      json.RawMessage `json:"data"`
	Error     string          `json:"error"`
	Seq       uint64          `json:"seq"`
	Epoch     string          `json:"epoch"`
	Recovered *bool           `json:"recovered"`
}

func readHist(ctx context.Context, conn *websocket.Conn) (histMsg, error) {
	_, b, err := conn.Read(ctx)
	if err != nil {
		return histMsg{}, err
	}
	var m histMsg
	err = json.Unmarshal(b, &m)
	return m, err
}

func (p *peer) readHist() histMsg {
	p.t.Helper()
	m, err := readHist(p.ctx, p.conn)
	if err != nil {
		p.t.Fatalf("read: %v", err)
	}
	return m
}

// joinHist sends a join with the given extra fields and returns the room
// messages replayed before the ack, and the ack.
func (p *peer) joinHist(room, extra string) ([]histMsg, histMsg) {
	p.t.Helper()
	p.sendRaw(fmt.Sprintf(`{"type":"join","room":%q,"id":"j"%s}`, room, extra))
	var msgs []histMsg
	for {
		m := p.readHist()
		switch m.Type {
		case "ack":
			return msgs, m
		case "message":
			msgs = append(msgs, m)
		default:
			p.t.Fatalf("join %s: got %+v", extra, m)
		}
	}
}

func keep(n int) func(string) wshub.RoomOptions {
	return func(room string) wshub.RoomOptions {
		if strings.HasPrefix(room, "nohist") {
			return wshub.RoomOptions{}
		}
		return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: n}}
	}
}

func seqs(msgs []histMsg) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

func TestHistoryOnJoin(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(100)})
	ts := serve(t, h)
	ctx := testCtx(t)
	room := h.Room("lobby")
	for i := range 120 {
		if err := room.Broadcast(ctx, &wshub.Message{Data: i}); err != nil {
			t.Fatal(err)
		}
	}
	p := dial(t, ts)
	msgs, ack := p.joinHist("lobby", `,"history":50`)
	equal(t, "replayed", len(msgs), 50)
	equal(t, "first replayed seq", msgs[0].Seq, uint64(71))
	equal(t, "first replayed data", string(msgs[0].Data), "70")
	equal(t, "last replayed seq", msgs[49].Seq, uint64(120))
	equal(t, "ack seq", ack.Seq, uint64(120))
	equal(t, "ack room", ack.Room, "lobby")
	if ack.Epoch == "" || ack.Recovered != nil {
		t.Fatalf("ack %+v", ack)
	}
	epoch, seq, err := room.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "position", fmt.Sprint(epoch, seq), fmt.Sprint(ack.Epoch, 120))

	// Live messages follow with the next seq, a client publish included.
	m := p.request(`{"type":"publish","room":"lobby","data":"live"}`)
	equal(t, "live data", string(m.Data), `"live"`)
	equal(t, "live seq", m.Seq, uint64(121))

	// The server caps a request, and can read the history itself.
	q := dial(t, ts)
	msgs, _ = q.joinHist("lobby", `,"history":1000000`)
	equal(t, "capped replay", len(msgs), wshub.MaxHistoryReplay)
	hist, err := room.History(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "History", len(hist), 3)
	equal(t, "History last seq", hist[2].Seq, uint64(121))
	equal(t, "History last from", hist[2].From != "", true)

	// A room without history: no seq, no replay, a plain ack.
	r := dial(t, ts)
	msgs, ack = r.joinHist("nohist", `,"history":50`)
	equal(t, "replayed without history", len(msgs), 0)
	equal(t, "plain ack", fmt.Sprintf("%+v", ack), fmt.Sprintf("%+v", histMsg{Type: "ack", ID: "j"}))
	m = r.request(`{"type":"publish","room":"nohist","data":1,"id":"p"}`)
	equal(t, "no seq", m.Type+fmt.Sprint(m.Seq), "message0")
}

// TestHistorySeamWithConcurrentPublishers: joining with history while
// others publish gives one gapless run of seqs: the replay, then live.
func TestHistorySeamWithConcurrentPublishers(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(1000)})
	ts := serve(t, h)
	ctx := testCtx(t)
	const publishers, each = 3, 400
	var pubs []*peer
	for range publishers {
		p := dial(t, ts)
		p.join("r")
		pubs = append(pubs, p)
		go func() { // publishers read their copies, as clients must
			for {
				if _, _, err := p.conn.Read(ctx); err != nil {
					return
				}
			}
		}()
	}
	total := uint64(publishers * each)
	var g errgroup.Group
	for _, p := range pubs {
		g.Go(func() error {
			for i := range each {
				msg := fmt.Appendf(nil, `{"type":"publish","room":"r","data":%d}`, i)
				if err := p.conn.Write(ctx, websocket.MessageText, msg); err != nil {
					return err
				}
			}
			return nil
		})
	}
	// Joiners arrive while the publishers publish.
	for j := range 10 {
		g.Go(func() error {
			conn, _, err := websocket.Dial(ctx, wsURL(ts), nil)
			if err != nil {
				return err
			}
			defer conn.CloseNow()
			msg := fmt.Appendf(nil, `{"type":"join","room":"r","history":%d,"id":"j"}`, 10+j)
			if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
				return err
			}
			// One gapless run of seqs: the replay, then live messages (which
			// may come before the ack, with seqs past the ack's).
			var first, last uint64
			for last < total {
				m, err := readHist(ctx, conn)
				if err != nil {
					return err
				}
				switch {
				case m.Type == "ack":
					if first != 0 && m.Seq+1 < first {
						return fmt.Errorf("joiner %d: ack seq %d, but the first message was %d", j, m.Seq, first)
					}
					continue
				case m.Type != "message":
					return fmt.Errorf("joiner %d: %+v", j, m)
				case last != 0 && m.Seq != last+1:
					return fmt.Errorf("joiner %d: seq %d after %d", j, m.Seq, last)
				}
				if first == 0 {
					first = m.Seq
				}
				last = m.Seq
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestHistoryRecovery(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(100)})
	ts := serve(t, h)
	ctx := testCtx(t)
	room := h.Room("r")
	p := dial(t, ts)
	_, ack := p.joinHist("r", "")
	epoch := ack.Epoch
	equal(t, "empty room seq", ack.Seq, uint64(0))
	for i := range 5 {
		room.Broadcast(ctx, &wshub.Message{Data: i})
	}
	for range 5 {
		p.readHist()
	}
	p.conn.CloseNow() // saw up to 5
	for i := 5; i < 9; i++ {
		room.Broadcast(ctx, &wshub.Message{Data: i})
	}

	// It missed 6..9: exactly those are replayed, then live.
	q := dial(t, ts)
	msgs, ack := q.joinHist("r", fmt.Sprintf(`,"epoch":%q,"since":5`, epoch))
	equal(t, "replayed seqs", fmt.Sprint(seqs(msgs)), "[6 7 8 9]")
	equal(t, "recovered", ack.Recovered != nil && *ack.Recovered, true)
	equal(t, "ack position", fmt.Sprint(ack.Epoch, ack.Seq), fmt.Sprint(epoch, 9))
	room.Broadcast(ctx, &wshub.Message{Data: "live"})
	equal(t, "live after recovery", q.readHist().Seq, uint64(10))

	// Nothing missed: recovered, nothing replayed.
	r := dial(t, ts)
	msgs, ack = r.joinHist("r", fmt.Sprintf(`,"epoch":%q,"since":10`, epoch))
	equal(t, "nothing to replay", len(msgs), 0)
	equal(t, "recovered", *ack.Recovered, true)

	// Another epoch: not recovered, told where the room stands; with a
	// history request as well, the recent messages instead.
	s := dial(t, ts)
	msgs, ack = s.joinHist("r", `,"epoch":"old","since":3,"history":2`)
	equal(t, "recovered", *ack.Recovered, false)
	equal(t, "ack position", fmt.Sprint(ack.Epoch, ack.Seq), fmt.Sprint(epoch, 10))
	equal(t, "recent instead", fmt.Sprint(seqs(msgs)), "[9 10]")

	// A room without history cannot recover.
	msgs, ack = s.joinHist("nohist", `,"epoch":"x","since":3`)
	equal(t, "no history", len(msgs)+int(ack.Seq), 0)
	equal(t, "recovered", *ack.Recovered, false)
}

func TestHistoryEvictionChangesEpoch(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	var clock sync.Mutex
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		Rooms: func(room string) wshub.RoomOptions {
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 10, MaxAge: time.Minute}}
		},
		// Room for 15 messages of 100 bytes, with their overhead, and two
		// rooms' logs.
		Engine: wshub.NewMemoryEngineWithClock(15*(100+64)+2*256, func() time.Time {
			clock.Lock()
			defer clock.Unlock()
			return now
		}),
	})
	ts := serve(t, h)
	ctx := testCtx(t)
	pad := strings.Repeat("x", 100-len(`{"type":"message","room":"a","data":""}`))
	broadcast := func(room string, n int) {
		for range n {
			if err := h.Room(room).Broadcast(ctx, &wshub.Message{Data: pad}); err != nil {
				t.Fatal(err)
			}
		}
	}
	epochA, _, _ := h.Room("a").Position(ctx)
	broadcast("a", 5)
	p := dial(t, ts)
	msgs, ack := p.joinHist("a", fmt.Sprintf(`,"epoch":%q,"since":2`, epochA))
	equal(t, "recovered before eviction", *ack.Recovered && len(msgs) == 3, true)
	p.conn.CloseNow()

	// The count bound: only the last 10 are kept.
	broadcast("a", 10)
	msgs, ack = dial(t, ts).joinHist("a", fmt.Sprintf(`,"epoch":%q,"since":2`, epochA))
	equal(t, "too old", *ack.Recovered, false)
	equal(t, "same epoch", ack.Epoch, epochA)
	equal(t, "replay", len(msgs), 0)

	// The byte cap: room b's traffic evicts a, the room written least
	// recently, whose next history is a new epoch.
	broadcast("b", 10)
	broadcast("b", 10)
	msgs, ack = dial(t, ts).joinHist("a", fmt.Sprintf(`,"epoch":%q,"since":15`, epochA))
	equal(t, "recovered after eviction", *ack.Recovered, false)
	equal(t, "replay after eviction", len(msgs), 0)
	if ack.Epoch == epochA || ack.Seq != 0 {
		t.Fatalf("after eviction: epoch %q seq %d, want a new epoch at 0", ack.Epoch, ack.Seq)
	}

	// Expiry: past MaxAge a room's history is gone, and its epoch too.
	epochB, seqB, _ := h.Room("b").Position(ctx)
	clock.Lock()
	now = now.Add(2 * time.Minute)
	clock.Unlock()
	_, ack = dial(t, ts).joinHist("b", fmt.Sprintf(`,"epoch":%q,"since":%d`, epochB, seqB))
	equal(t, "recovered after expiry", *ack.Recovered, false)
	if ack.Epoch == epochB {
		t.Fatal("expired history kept its epoch")
	}
}

func TestHistoryBadInput(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(10)})
	ts := serve(t, h)
	h.Room("r").Broadcast(testCtx(t), &wshub.Message{Data: 1})
	epoch, _, _ := h.Room("r").Position(testCtx(t))
	p := dial(t, ts)
	for _, extra := range []string{
		`,"history":-1`,
		`,"history":"5"`,
		`,"history":1e40`,
		`,"since":-1,"epoch":"e"`,
		`,"since":"4","epoch":"e"`,
		`,"since":1e30,"epoch":"e"`,
		`,"since":4`,
		`,"epoch":5,"since":4`,
		`,"epoch":"` + strings.Repeat("e", 200) + `","since":1`,
		fmt.Sprintf(`,"epoch":%q,"since":2`, epoch), // past the latest seq
	} {
		m := p.request(`{"type":"join","room":"r","id":"bad"%s}`, extra)
		equal(t, extra+": type", m.Type, "error")
		equal(t, extra+": id", m.ID, "bad")
		if !strings.HasPrefix(m.Error, wshub.ErrInvalidMessage.Error()) {
			t.Fatalf("%s: error %q", extra, m.Error)
		}
		// Nothing else changed: still not in the room.
		p.mustAck(`{"type":"join","room":"other","id":"ok"}`)
		equal(t, "members", h.Room("r").Len(), 0)
		p.mustAck(`{"type":"leave","room":"other","id":"ok"}`)
	}
}

// TestHistoryReconnectProperty: clients that keep dropping their
// connection (closing it or cutting it) and rejoining with since, while
// others publish, end up with every seq exactly once, or were told at a
// reconnect that they could not recover.
func TestHistoryReconnectProperty(t *testing.T) {
	t.Parallel()
	for _, retained := range []int{1000, 100} { // all of it; less than a slow client misses
		t.Run(fmt.Sprint(retained), func(t *testing.T) {
			t.Parallel()
			testReconnects(t, retained)
		})
	}
}

func testReconnects(t *testing.T, retained int) {
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(retained)})
	ts := serve(t, h)
	ctx := testCtx(t)
	const publishers, each, clients = 3, 300, 6
	var published atomic.Int64
	var g errgroup.Group
	for i := range publishers {
		g.Go(func() error {
			conn, _, err := websocket.Dial(ctx, wsURL(ts), nil)
			if err != nil {
				return err
			}
			defer conn.Close(websocket.StatusNormalClosure, "")
			p := &peer{t: t, ctx: ctx, conn: conn}
			p.sendRaw(`{"type":"join","room":"r"}`)
			go func() {
				for {
					if _, _, err := conn.Read(ctx); err != nil {
						return
					}
				}
			}()
			for n := range each {
				msg := fmt.Appendf(nil, `{"type":"publish","room":"r","data":[%d,%d]}`, i, n)
				if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
					return err
				}
				published.Add(1)
			}
			return nil
		})
	}
	results := make([]string, clients)
	var reconnects atomic.Int64
	for c := range clients {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			got := make(map[uint64]bool)
			var epoch string
			var since uint64
			told := false
			for round := 0; ; round++ {
				conn, tcp, err := dialCuttable(ctx, wsURL(ts))
				if err != nil {
					return err
				}
				join := `{"type":"join","room":"r","id":"j"}`
				if epoch != "" {
					join = fmt.Sprintf(`{"type":"join","room":"r","id":"j","epoch":%q,"since":%d}`, epoch, since)
				}
				if err := conn.Write(ctx, websocket.MessageText, []byte(join)); err != nil {
					return err
				}
				// Read a random number of frames, then drop the connection.
				// Live messages may come before the ack (their seq is past
				// the ack's): they are checked once it has come.
				var early []uint64
				acked := false
				take := func(seq uint64) error {
					if got[seq] {
						return fmt.Errorf("client %d: seq %d twice", c, seq)
					}
					if seq != since+1 {
						return fmt.Errorf("client %d: seq %d after %d", c, seq, since)
					}
					got[seq], since = true, seq
					return nil
				}
				for k := rng.IntN(300); k > 0 || round >= 8; k-- { // later rounds read to the end
					m, err := readHist(ctx, conn)
					if err != nil {
						return fmt.Errorf("client %d: round %d, since %d, acked %v, early %v: %w", c, round, since, acked, early, err)
					}
					switch {
					case m.Type == "ack":
						acked = true
						switch {
						case epoch == "":
							epoch, since = m.Epoch, m.Seq
							for s := uint64(1); s <= m.Seq; s++ {
								got[s] = true // published before its first join
							}
						case m.Recovered == nil:
							return fmt.Errorf("client %d: recovery ack without recovered: %+v", c, m)
						case !*m.Recovered:
							told, since = true, m.Seq // it knows it missed what it missed
						}
						for _, seq := range early {
							if err := take(seq); err != nil {
								return err
							}
						}
						early = nil
					case m.Type == "message" && !acked:
						early = append(early, m.Seq)
					case m.Type == "message":
						if err := take(m.Seq); err != nil {
							return err
						}
					}
					if since == publishers*each {
						conn.Close(websocket.StatusNormalClosure, "")
						results[c] = fmt.Sprintf("complete=%v told=%v", len(got) == publishers*each, told)
						reconnects.Add(int64(round))
						return nil
					}
				}
				if rng.IntN(2) == 0 {
					tcp.SetLinger(0)
					tcp.Close()
				} else {
					conn.Close(websocket.StatusNormalClosure, "")
				}
				conn.CloseNow()
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for c, r := range results {
		ok := r == "complete=true told=false" || r == "complete=false told=true" || r == "complete=true told=true"
		if !ok || retained >= publishers*each && r != "complete=true told=false" {
			t.Fatalf("client %d, %d retained: %s", c, retained, r)
		}
	}
	t.Logf("%d published, %d reconnects; clients: %v", published.Load(), reconnects.Load(), results)
}

// FuzzJoinHistory sends joins with arbitrary history fields. Each is
// answered with an ack or an error frame, and the hub keeps serving.
func FuzzJoinHistory(f *testing.F) {
	for _, s := range []string{
		`"history":50`, `"epoch":"e","since":3`, `"history":-1`, `"since":1e99`,
		`"epoch":null`, `"since":0,"epoch":""`, `"history":{}`, `"recovered":true`,
	} {
		f.Add(s)
	}
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Rooms: keep(20)})
	ts := serve(f, h)
	for i := range 30 {
		h.Room("r").Broadcast(context.Background(), &wshub.Message{Data: i})
	}
	f.Fuzz(func(t *testing.T, fields string) {
		p := dial(t, ts)
		defer p.conn.CloseNow()
		p.sendRaw(`{"type":"join","room":"r","id":"f",` + fields + `}`)
		p.sendRaw(`{"type":"leave","room":"never-joined","id":"probe"}`)
		answered := false
		for {
			_, b, err := p.conn.Read(p.ctx)
			if err != nil {
				switch websocket.CloseStatus(err) {
				case websocket.StatusInvalidFramePayloadData, websocket.StatusMessageTooBig:
					return
				}
				t.Fatalf("fields %q: connection ended: %v", fields, err)
			}
			var m histMsg
			if json.Unmarshal(b, &m) != nil {
				t.Fatalf("fields %q: undecodable answer %s", fields, b)
			}
			if m.ID == "probe" {
				break
			}
			if m.ID == "f" || m.Type == "error" {
				answered = true
			}
		}
		if !answered {
			t.Fatalf("fields %q: no answer", fields)
		}
	})
}

// TestHistoryWithEngine: with the in-memory store, each hub numbers the
// room's messages, other hubs' included, in the order it delivers them;
// when the room's last local member leaves, the hub stops receiving the
// room and its history of it ends: the next one has a new epoch.
func TestHistoryWithBroker(t *testing.T) {
	t.Parallel()
	bus := newMemBus()
	var hubs []*wshub.Hub
	var peers []*peer
	for range 2 {
		h := wshub.New(nil, &wshub.Options{Engine: newMemBroker(bus), AuthorizeJoin: allowAll, Rooms: keep(100)})
		hubs = append(hubs, h)
		peers = append(peers, dial(t, serve(t, h)))
	}
	_, ackA := peers[0].joinHist("r", "")
	peers[1].joinHist("r", "")
	m := peers[1].request(`{"type":"publish","room":"r","data":"from b","id":"p"}`)
	equal(t, "seq on b", m.Seq, uint64(1))
	m = peers[0].read()
	equal(t, "on a", string(m.Data)+fmt.Sprint(m.Seq), `"from b"1`)
	hist, err := hubs[0].Room("r").History(testCtx(t), 10)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "a keeps b's message", len(hist), 1)

	peers[0].mustAck(`{"type":"leave","room":"r","id":"l"}`)
	_, ack := peers[0].joinHist("r", fmt.Sprintf(`,"epoch":%q,"since":1`, ackA.Epoch))
	equal(t, "recovered after the hub stopped receiving the room", *ack.Recovered, false)
	if ack.Epoch == ackA.Epoch {
		t.Fatal("the hub's history of the room kept its epoch across a gap")
	}
}

// TestHistoryRestartSeenByMembers: when the store starts a room's history
// anew while clients are in the room, the next message carries the new
// epoch, so that they do not take its seq for an old one.
func TestHistoryRestartSeenByMembers(t *testing.T) {
	t.Parallel()
	now := time.Unix(1e9, 0)
	var clock sync.Mutex
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		Rooms: func(string) wshub.RoomOptions {
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 10, MaxAge: time.Minute}}
		},
		Engine: wshub.NewMemoryEngineWithClock(0, func() time.Time {
			clock.Lock()
			defer clock.Unlock()
			return now
		}),
	})
	ts := serve(t, h)
	ctx := testCtx(t)
	p := dial(t, ts)
	_, ack := p.joinHist("r", "")
	h.Room("r").Broadcast(ctx, &wshub.Message{Data: 1})
	m := p.readHist()
	equal(t, "first message", fmt.Sprintf("%d %q", m.Seq, m.Epoch), `1 ""`)
	clock.Lock()
	now = now.Add(2 * time.Minute) // the history expires
	clock.Unlock()
	h.Room("r").Broadcast(ctx, &wshub.Message{Data: 2})
	m = p.readHist()
	equal(t, "seq in the new history", m.Seq, uint64(1))
	if m.Epoch == "" || m.Epoch == ack.Epoch {
		t.Fatalf("message after the restart: epoch %q, want a new one (was %q)", m.Epoch, ack.Epoch)
	}
	h.Room("r").Broadcast(ctx, &wshub.Message{Data: 3})
	m = p.readHist()
	equal(t, "then plain messages", fmt.Sprintf("%d %q", m.Seq, m.Epoch), `2 ""`)
}

// TestHistoryPolicyDoesNotReleaseShutdown: Options.History runs on
// goroutines that Shutdown does not wait for (Room.Position here); while it
// runs, Shutdown still waits for the hub's clients.
func TestHistoryPolicyDoesNotReleaseShutdown(t *testing.T) {
	t.Parallel()
	inPolicy, release := make(chan struct{}, 2), make(chan struct{})
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		OnConnect: func(c *wshub.Client) { connected <- c },
		Rooms: func(room string) wshub.RoomOptions {
			if room == "block" {
				inPolicy <- struct{}{}
				<-release
			}
			return wshub.RoomOptions{}
		},
		Limits: wshub.Limits{PingInterval: -1},
	})
	ts := serve(t, h)
	dial(t, ts) // never reads: its close handshake cannot finish
	<-connected
	done := make(chan struct{}, 2)
	for range 2 {
		go func() {
			h.Room("block").Position(context.Background())
			done <- struct{}{}
		}()
		<-inPolicy
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 200*time.Millisecond)
	defer cancel()
	h.Shutdown(ctx) // returns when the client is gone, or cuts it at ctx's end
	equal(t, "clients when Shutdown returned", h.Stats().Clients, 0)
	close(release)
	<-done
	<-done
}
