package wshub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"golang.org/x/sync/errgroup"
)

// memLogStore is a working in-process room log shared by hubs: one
// sequence over all rooms (so a room's seqs have gaps, as in JetStream),
// retention per room by count, and de-duplication by append id. The
// natsbroker module tests the same contract against JetStream.
type memLogStore struct {
	mu      sync.Mutex
	changed *sync.Cond
	last    uint64
	rooms   map[string][]logEntry // retained, oldest first
	ids     map[string]uint64
	dropped map[string]uint64 // the newest seq retention dropped, by room
	refuse  error             // Append fails with it when set
	started int               // appends made
	gate    int               // an append's wait returns once this many were made
}

type logEntry struct {
	seq uint64
	id  string
	msg []byte
}

func newMemLogStore() *memLogStore {
	s := &memLogStore{rooms: make(map[string][]logEntry), ids: make(map[string]uint64), dropped: make(map[string]uint64)}
	s.changed = sync.NewCond(&s.mu)
	return s
}

// memLog is one hub's Engine on a memLogStore for the rooms with history,
// as natsbroker's JetStream log; the others go through a memBus.
type memLog struct {
	*memBroker
	s       *memLogStore
	mu      sync.Mutex
	follows map[string]*follower
	held    bool // deliveries wait while set (a hub whose follow lags)
}

type follower struct {
	stop, done chan struct{}
	lost       bool
}

func newMemLog(s *memLogStore, bus *memBus) *memLog {
	return &memLog{memBroker: newMemBroker(bus), s: s, follows: make(map[string]*follower)}
}

func (l *memLog) Publish(ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) func() error {
	if p.Messages <= 0 {
		return l.memBroker.Publish(ctx, room, p, id, msg)
	}
	s := l.s
	_, err := s.append(room, p, id, msg)
	s.mu.Lock()
	s.started++
	s.changed.Broadcast()
	s.mu.Unlock()
	return func() error {
		s.mu.Lock()
		for s.started < s.gate {
			s.changed.Wait()
		}
		s.mu.Unlock()
		return err
	}
}

func (s *memLogStore) append(room string, p wshub.HistoryPolicy, id string, msg []byte) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refuse != nil {
		return 0, s.refuse
	}
	if seq, ok := s.ids[id]; ok {
		return seq, nil
	}
	s.last++
	s.ids[id] = s.last
	es := append(s.rooms[room], logEntry{s.last, id, slices.Clone(msg)})
	if over := len(es) - p.Messages; over > 0 {
		s.dropped[room] = es[over-1].seq
		es = es[over:]
	}
	s.rooms[room] = es
	s.changed.Broadcast()
	return s.last, nil
}

func (l *memLog) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	if p.Messages <= 0 {
		return l.memBroker.Read(ctx, room, p, after, limit)
	}
	s := l.s
	s.mu.Lock()
	defer s.mu.Unlock()
	es := s.rooms[room]
	page := wshub.LogPage{Epoch: "mem", Latest: s.last}
	if len(es) > 0 {
		page.Latest = es[len(es)-1].seq
	}
	// Only the count bound drops messages: complete when the oldest
	// retained one is at most after, or nothing was ever dropped.
	page.Complete = len(es) < p.Messages || es[0].seq <= after+1
	for _, e := range es {
		if e.seq > after {
			page.Messages = append(page.Messages, wshub.Entry{Seq: e.seq, JSON: e.msg})
		}
	}
	if limit >= 0 && len(page.Messages) > limit {
		page.Messages = page.Messages[len(page.Messages)-limit:]
	}
	return page, nil
}

func (l *memLog) Follow(room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) error {
	if p.Messages <= 0 {
		return l.memBroker.Follow(room, p, after, deliver)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.follows[room] != nil {
		return errors.New("already followed")
	}
	f := &follower{stop: make(chan struct{}), done: make(chan struct{})}
	l.follows[room] = f
	go l.follow(room, after, f, deliver)
	return nil
}

func (l *memLog) follow(room string, after uint64, f *follower, deliver func(wshub.Entry)) {
	defer close(f.done)
	s := l.s
	for {
		s.mu.Lock()
		var next *logEntry
		lost := false
		for {
			select {
			case <-f.stop:
				s.mu.Unlock()
				return
			default:
			}
			l.mu.Lock()
			held := l.held
			lost, f.lost = f.lost, false
			l.mu.Unlock()
			if d := s.dropped[room]; d > after {
				lost, after = true, d // retention dropped what it had not passed
			}
			if lost {
				break
			}
			if !held {
				for i, e := range s.rooms[room] {
					if e.seq > after {
						next = &s.rooms[room][i]
						break
					}
				}
			}
			if next != nil {
				break
			}
			s.changed.Wait()
		}
		var e logEntry
		if next != nil {
			e = *next
		}
		s.mu.Unlock()
		if lost {
			deliver(wshub.Entry{})
			continue
		}
		deliver(wshub.Entry{Seq: e.seq, ID: e.id, JSON: e.msg})
		after = e.seq
	}
}

// hold stops or resumes this hub's deliveries.
func (l *memLog) hold(on bool) {
	l.mu.Lock()
	l.held = on
	l.mu.Unlock()
	l.s.mu.Lock()
	l.s.changed.Broadcast()
	l.s.mu.Unlock()
}

// lose makes the room's follow report lost messages.
func (l *memLog) lose(room string) {
	l.mu.Lock()
	if f := l.follows[room]; f != nil {
		f.lost = true
	}
	l.mu.Unlock()
	l.s.mu.Lock()
	l.s.changed.Broadcast()
	l.s.mu.Unlock()
}

func (l *memLog) Unfollow(room string) error {
	l.mu.Lock()
	f := l.follows[room]
	delete(l.follows, room)
	l.mu.Unlock()
	if f == nil {
		return l.memBroker.Unfollow(room)
	}
	close(f.stop)
	l.s.mu.Lock()
	l.s.changed.Broadcast()
	l.s.mu.Unlock()
	<-f.done
	return nil
}

func (l *memLog) followed(room string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.follows[room] != nil
}

// logHubs starts n hubs sharing one log, each with a test server.
func logHubs(t *testing.T, n int, opts wshub.Options) (*memLogStore, []*memLog, []*wshub.Hub, []*httptest.Server) {
	t.Helper()
	s := newMemLogStore()
	bus := newMemBus()
	var logs []*memLog
	var hubs []*wshub.Hub
	var servers []*httptest.Server
	for range n {
		l := newMemLog(s, bus)
		o := opts
		o.Engine = l
		if o.AuthorizeJoin == nil {
			o.AuthorizeJoin = allowAll
		}
		if o.Rooms == nil {
			o.Rooms = keep(100)
		}
		h := wshub.New(nil, &o)
		logs, hubs, servers = append(logs, l), append(hubs, h), append(servers, serve(t, h))
	}
	return s, logs, hubs, servers
}

// broadcastData broadcasts a message with data d on hub h.
func broadcastData(t *testing.T, h *wshub.Hub, room, d string) {
	t.Helper()
	if err := h.Room(room).Broadcast(testCtx(t), &wshub.Message{Data: d}); err != nil {
		t.Fatalf("broadcast %s: %v", d, err)
	}
}

// readData reads room messages until one with data want; it returns the
// data of the messages before it and fails on anything else.
func (p *peer) expectData(want ...string) []histMsg {
	p.t.Helper()
	var got []histMsg
	for _, w := range want {
		m := p.readHist()
		if m.Type != "message" || string(m.Data) != fmt.Sprintf("%q", w) {
			p.t.Fatalf("got %+v, want message %q (after %d of %v)", m, w, len(got), want)
		}
		got = append(got, m)
	}
	return got
}

// TestLogOneOrderAcrossHubs: publishers on three hubs, two members on
// each: every member receives one order, with increasing seqs, and each
// publisher its own message before its ack.
func TestLogOneOrderAcrossHubs(t *testing.T) {
	t.Parallel()
	// Publishers are not paced by the other hubs' follows, so the room
	// keeps all of it: a follow may lag that far.
	_, _, _, servers := logHubs(t, 3, wshub.Options{Rooms: keep(1000)})
	const each = 40
	var peers []*peer
	for _, ts := range servers {
		for range 2 {
			p := dial(t, ts)
			p.join("r")
			peers = append(peers, p)
		}
	}
	orders := make([][]string, len(peers))
	var g errgroup.Group
	for i, p := range peers {
		pub := i%2 == 0 // one publisher per hub
		g.Go(func() error {
			if pub {
				for n := range each {
					f := fmt.Sprintf(`{"type":"publish","room":"r","id":"%d-%d","data":"%d-%d"}`, i, n, i, n)
					if err := p.conn.Write(p.ctx, websocket.MessageText, []byte(f)); err != nil {
						return err
					}
				}
			}
			var last uint64
			seen := make(map[string]bool)
			acks := 0
			for len(orders[i]) < 3*each || pub && acks < each {
				m, err := readHist(p.ctx, p.conn)
				if err != nil {
					return fmt.Errorf("peer %d: %w", i, err)
				}
				switch m.Type {
				case "message":
					if m.Seq <= last {
						return fmt.Errorf("peer %d: seq %d after %d", i, m.Seq, last)
					}
					last = m.Seq
					var d string
					if err := json.Unmarshal(m.Data, &d); err != nil {
						return err
					}
					seen[d] = true
					orders[i] = append(orders[i], d)
				case "ack":
					if !seen[m.ID] {
						return fmt.Errorf("peer %d: ack %s before its message", i, m.ID)
					}
					acks++
				default:
					return fmt.Errorf("peer %d: got %+v", i, m)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	for i := range orders {
		if !slices.Equal(orders[i], orders[0]) {
			t.Fatalf("peer %d saw another order than peer 0:\n%v\n%v", i, orders[i], orders[0])
		}
	}
}

// TestLogRecoveryAcrossHubs: a client that leaves one hub recovers on
// another with since and epoch, although its room's seqs have gaps.
func TestLogRecoveryAcrossHubs(t *testing.T) {
	t.Parallel()
	_, _, hubs, servers := logHubs(t, 2, wshub.Options{Rooms: keep(5)})
	a := dial(t, servers[0])
	_, ack := a.joinHist("r", "")
	other := dial(t, servers[1])
	other.join("other") // messages of another room make gaps in r's seqs
	for i := range 3 {
		broadcastData(t, hubs[1], "r", fmt.Sprint("m", i))
		broadcastData(t, hubs[1], "other", "x")
	}
	got := a.expectData("m0", "m1", "m2")
	if got[0].Seq <= ack.Seq || got[1].Seq <= got[0].Seq+1 {
		t.Fatalf("seqs %v after the ack's %d: want increasing with gaps", seqs(got), ack.Seq)
	}
	a.conn.Close(websocket.StatusNormalClosure, "")
	for i := 3; i < 7; i++ {
		broadcastData(t, hubs[1], "r", fmt.Sprint("m", i))
		broadcastData(t, hubs[0], "other", "x")
	}
	b := dial(t, servers[1])
	replay, ack := b.joinHist("r", fmt.Sprintf(`,"epoch":%q,"since":%d`, ack.Epoch, got[2].Seq))
	if ack.Recovered == nil || !*ack.Recovered {
		t.Fatalf("ack %+v, want recovered", ack)
	}
	var data []string
	for _, m := range replay {
		data = append(data, string(m.Data))
	}
	equal(t, "replayed", strings.Join(data, " "), `"m3" "m4" "m5" "m6"`)

	// More than the room keeps: recovered false, and nothing replayed.
	for i := 7; i < 14; i++ {
		// From b's hub, which waits for its own delivery of each: its
		// follow never lags by more than the room keeps.
		broadcastData(t, hubs[1], "r", fmt.Sprint("m", i))
	}
	b.expectData("m7", "m8", "m9", "m10", "m11", "m12", "m13")
	c := dial(t, servers[0])
	replay, ack = c.joinHist("r", fmt.Sprintf(`,"epoch":%q,"since":%d`, ack.Epoch, replay[3].Seq))
	if ack.Recovered == nil || *ack.Recovered || len(replay) != 0 {
		t.Fatalf("ack %+v after %d messages, want recovered false and none", ack, len(replay))
	}
}

// TestLogFollowBehind: a hub whose follow lags delivers what the log
// holds past its cursor live, once, to members that joined or recovered
// meanwhile.
func TestLogFollowBehind(t *testing.T) {
	t.Parallel()
	_, logs, hubs, servers := logHubs(t, 2, wshub.Options{})
	x := dial(t, servers[0])
	_, first := x.joinHist("r", "")
	logs[0].hold(true)
	for i := range 3 {
		broadcastData(t, hubs[1], "r", fmt.Sprint("m", i))
	}
	stored, err := hubs[1].Room("r").History(testCtx(t), 10)
	if err != nil || len(stored) != 3 {
		t.Fatalf("history: %v, %v", stored, err)
	}
	y := dial(t, servers[0])
	replay, ack := y.joinHist("r", `,"history":10`)
	if len(replay) != 0 || ack.Seq != first.Seq {
		t.Fatalf("replay %v, ack %+v: want nothing past the cursor %d", seqs(replay), ack, first.Seq)
	}
	// z had m0 and m1 on the other hub.
	z := dial(t, servers[0])
	replay, ack = z.joinHist("r", fmt.Sprintf(`,"epoch":%q,"since":%d`, first.Epoch, stored[1].Seq))
	if len(replay) != 0 || ack.Recovered == nil || !*ack.Recovered {
		t.Fatalf("replay %v, ack %+v: want recovered, nothing yet", seqs(replay), ack)
	}
	logs[0].hold(false)
	broadcastData(t, hubs[1], "r", "end")
	x.expectData("m0", "m1", "m2", "end")
	y.expectData("m0", "m1", "m2", "end")
	z.expectData("m2", "end")
}

// TestLogExceptAndFailure: except leaves out the publishing hub's
// clients only; a failed append is reported and delivered nowhere.
func TestLogExceptAndFailure(t *testing.T) {
	t.Parallel()
	store, _, hubs, servers := logHubs(t, 2, wshub.Options{})
	p, q, w := dial(t, servers[0]), dial(t, servers[0]), dial(t, servers[1])
	for _, c := range []*peer{p, q, w} {
		c.join("r")
	}
	var skip *wshub.Client
	for c := range hubs[0].Room("r").Clients() {
		skip = c // one of p and q
	}
	if err := hubs[0].Room("r").Broadcast(testCtx(t), &wshub.Message{Data: "not to one"}, skip); err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	store.refuse = errors.New("log unavailable")
	store.mu.Unlock()
	if err := hubs[1].Room("r").Broadcast(testCtx(t), &wshub.Message{Data: "refused"}); !errors.Is(err, wshub.ErrBroker) {
		t.Fatalf("broadcast with the log refusing: %v, want ErrBroker", err)
	}
	w.expectData("not to one")
	if m := w.request(`{"type":"publish","room":"r","id":"x","data":"refused"}`); m.Type != "error" || m.ID != "x" {
		t.Fatalf("publish with the log refusing: got %+v, want an error", m)
	}
	store.mu.Lock()
	store.refuse = nil
	store.mu.Unlock()
	broadcastData(t, hubs[1], "r", "end")
	skipped := 0
	for _, c := range []*peer{p, q} {
		if m := c.readHist(); string(m.Data) == `"end"` {
			skipped++
		} else {
			equal(t, "message", string(m.Data), `"not to one"`)
			c.expectData("end")
		}
	}
	equal(t, "clients left out", skipped, 1)
}

// TestLogLostClosesMembers: when a hub's follow finds that the log lost
// messages its members have not had, they are closed with 1012, to
// recover; the other hubs' members stay.
func TestLogLostClosesMembers(t *testing.T) {
	t.Parallel()
	_, logs, hubs, servers := logHubs(t, 2, wshub.Options{})
	a, b := dial(t, servers[0]), dial(t, servers[1])
	a.join("r")
	b.join("r")
	b.join("nohist-live")
	if !logs[0].followed("r") || logs[0].followed("nohist-live") || logs[1].followed("nohist-live") {
		t.Fatal("history rooms are followed, live rooms subscribed")
	}
	logs[0].lose("r")
	equal(t, "close code", a.readClose(), websocket.StatusServiceRestart)
	broadcastData(t, hubs[1], "nohist-live", "live")
	broadcastData(t, hubs[0], "r", "still")
	b.expectData("live", "still")
	eventually(t, "unfollowed after the last member", func() bool { return !logs[0].followed("r") })
	// A client that joins again gets what follows.
	a = dial(t, servers[0])
	a.join("r")
	broadcastData(t, hubs[1], "r", "after")
	a.expectData("after")
}

// TestLogPipelinesPublishes: a client's publishes are in flight together
// (no append's wait returns before all ten were made), and it gets the
// answers in order: each ack after its message, then the answers to later
// requests, an error and a join's ack.
func TestLogPipelinesPublishes(t *testing.T) {
	t.Parallel()
	store, _, _, servers := logHubs(t, 1, wshub.Options{})
	p := dial(t, servers[0])
	p.join("r")
	store.mu.Lock()
	store.gate = store.started + 10
	store.mu.Unlock()
	for i := range 10 {
		p.sendRaw(fmt.Sprintf(`{"type":"publish","room":"r","id":"%d","data":"%d"}`, i, i))
	}
	p.sendRaw(`{"type":"publish","room":"not-joined","id":"10","data":"10"}`)
	p.sendRaw(`{"type":"join","room":"other","id":"join"}`)
	var got []string
	for len(got) < 22 {
		m := p.readHist()
		switch m.Type {
		case "message":
			got = append(got, "m"+strings.Trim(string(m.Data), `"`))
		case "ack", "error":
			got = append(got, m.Type[:1]+m.ID)
		}
	}
	// Messages may come before the acks of earlier publishes; acks and
	// errors come in order, each ack after its message.
	var answers []string
	seen := make(map[string]bool)
	for _, g := range got {
		if g[0] == 'm' {
			seen[g[1:]] = true
			continue
		}
		if g[0] == 'a' && g != "ajoin" && !seen[g[1:]] {
			t.Fatalf("ack %s before its message: %v", g, got)
		}
		answers = append(answers, g)
	}
	equal(t, "answers", strings.Join(answers, " "), "a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 e10 ajoin")
}

// TestLogConcurrentBroadcasts: broadcasts from several server goroutines
// keep their appends in flight together (no append is stored before ten
// were made), and each returns once stored and delivered here.
func TestLogConcurrentBroadcasts(t *testing.T) {
	t.Parallel()
	store, _, hubs, servers := logHubs(t, 1, wshub.Options{})
	p := dial(t, servers[0])
	p.join("r")
	store.mu.Lock()
	store.gate = store.started + 10
	store.mu.Unlock()
	ctx := testCtx(t)
	var g errgroup.Group
	for i := range 10 {
		g.Go(func() error { return hubs[0].Room("r").Broadcast(ctx, &wshub.Message{Data: fmt.Sprint(i)}) })
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	seen := make(map[string]bool)
	var last uint64
	for range 10 {
		m := p.readHist()
		if m.Seq <= last {
			t.Fatalf("seq %d after %d", m.Seq, last)
		}
		last = m.Seq
		seen[string(m.Data)] = true
	}
	equal(t, "distinct messages", len(seen), 10)
}
