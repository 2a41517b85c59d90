package redisengine_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// Redis, with its append-only file on, is killed (SIGKILL) in the middle
// of traffic and restarted on the same port with the same files; one hub
// comes back later than the others, through a proxy. Every
// acknowledged publish reaches every member once, in one order; one that
// failed definitely reaches none; an unconfirmed one all or none.
func TestRedisRestartAOF(t *testing.T) {
	t.Parallel()
	s := startRedis(t, true)
	px := et.StartProxy(t, s.addr())
	hist := et.Policies(map[string]wshub.HistoryPolicy{"r": {Messages: 10000}})
	nodes := newNodes(t, s.url(), 2, nil, hist)
	nodes = append(nodes, newNodes(t, "redis://"+px.Addr(), 1, nil, hist)...) // comes back later
	ctx := et.Ctx(t)

	type member struct {
		got []et.Logged
		err error
	}
	members := make([]*member, 2*len(nodes))
	var readers sync.WaitGroup
	for i := range members {
		p := et.Dial(t, nodes[i/2])
		p.Join("r")
		m := &member{}
		members[i] = m
		readers.Go(func() { m.got, m.err = p.CollectLog("sentinel", nil) })
	}
	epoch, _, err := nodes[0].Hub.Room("r").Position(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Every hub publishes until it saw failures while Redis was down, then
	// some more once it is back.
	type outcome struct {
		ok, failed, unconfirmed map[int]bool
	}
	outcomes := make([]outcome, len(nodes))
	var down sync.WaitGroup
	down.Add(len(nodes))
	restarted := make(chan struct{})
	var pubs sync.WaitGroup
	var started sync.WaitGroup
	started.Add(len(nodes))
	for i, n := range nodes {
		o := outcome{map[int]bool{}, map[int]bool{}, map[int]bool{}}
		outcomes[i] = o
		pub := fmt.Sprintf("pub%d", i)
		pubs.Go(func() {
			seq, failures := 0, 0
			publish := func() {
				err := et.Broadcast(ctx, n, "r", pub, seq)
				switch {
				case err == nil:
					o.ok[seq] = true
				case errors.Is(err, redisengine.ErrUnconfirmed):
					o.unconfirmed[seq] = true
				case errors.Is(err, wshub.ErrEngine):
					o.failed[seq] = true
					failures++
				default:
					t.Errorf("%s: Room.Broadcast %d: %v", pub, seq, err)
				}
				seq++
			}
			for seq < 5 {
				publish()
			}
			started.Done()
			for failures < 3 && seq < 100000 {
				publish()
			}
			down.Done()
			<-restarted
			for range 10 {
				publish()
			}
		})
	}
	started.Wait()
	s.kill() // SIGKILL: what Redis wrote to its append-only file survives
	px.Cut()
	down.Wait()

	s.start()
	close(restarted)
	if err := et.Broadcast(ctx, nodes[0], "r", "while-2-away", 0); err != nil {
		t.Fatalf("publish while hub 2 is away: %v", err)
	}
	px.Open()
	pubs.Wait()
	if t.Failed() {
		return
	}
	epoch2, _, err := nodes[1].Hub.Room("r").Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	et.Equal(t, "epoch after the restart (append-only file)", epoch2, epoch)
	if err := et.Broadcast(ctx, nodes[0], "r", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	readers.Wait()

	var lists [][]et.Logged
	for i, m := range members {
		if m.err != nil {
			t.Fatalf("member %d: %v", i, m.err)
		}
		lists = append(lists, m.got)
	}
	et.CheckOneOrder(t, "r", lists)
	got := lists[0]
	count := map[et.Payload]int{}
	last := map[string]int{}
	for _, l := range got {
		count[l.Payload]++
		if prev, ok := last[l.Pub]; ok && l.Payload.Seq <= prev {
			t.Fatalf("%s's %d after its %d", l.Pub, l.Payload.Seq, prev)
		}
		last[l.Pub] = l.Payload.Seq
	}
	et.Equal(t, "the message published while hub 2 was away", count[et.Payload{Pub: "while-2-away", Seq: 0}], 1)
	var nOK, nFailed, nUnconfirmed, nUnconfirmedDelivered int
	for i, o := range outcomes {
		pub := fmt.Sprintf("pub%d", i)
		for seq := range o.ok {
			if c := count[et.Payload{Pub: pub, Seq: seq}]; c != 1 {
				t.Fatalf("acknowledged %s %d delivered %d times", pub, seq, c)
			}
		}
		for seq := range o.failed {
			if c := count[et.Payload{Pub: pub, Seq: seq}]; c != 0 {
				t.Fatalf("failed %s %d delivered %d times", pub, seq, c)
			}
		}
		for seq := range o.unconfirmed {
			if c := count[et.Payload{Pub: pub, Seq: seq}]; c > 1 {
				t.Fatalf("unconfirmed %s %d delivered %d times", pub, seq, c)
			} else if c == 1 {
				nUnconfirmedDelivered++
			}
		}
		nOK += len(o.ok)
		nFailed += len(o.failed)
		nUnconfirmed += len(o.unconfirmed)
	}
	t.Logf("%d acknowledged, %d failed, %d unconfirmed (%d of them delivered)", nOK, nFailed, nUnconfirmed, nUnconfirmedDelivered)
}

// Without persistence a restart of Redis loses the rooms' streams: hubs
// close the members of history rooms with 1012, the room gets a new
// epoch, a rejoin is told it could not recover, and the room works
// again.
func TestRedisRestartNoPersistence(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	hist := et.Policies(map[string]wshub.HistoryPolicy{"m": {Messages: 50}})
	nodes := newNodes(t, s.url(), 2, nil, hist)
	ctx := et.Ctx(t)

	p := et.Dial(t, nodes[1])
	_, ack := p.JoinAck("m", "")
	if err := et.Broadcast(ctx, nodes[0], "m", "before", 0); err != nil {
		t.Fatal(err)
	}
	et.Equal(t, "message before the restart", et.Data(t, p.Read()).Pub, "before")

	s.kill()
	s.start()
	_, _, err := p.Conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member: %v (status %d), want a close with 1012", err, got)
	}
	var epoch string
	et.Eventually(t, "the room's new epoch", func() bool {
		epoch, _, err = nodes[0].Hub.Room("m").Position(ctx)
		return err == nil && epoch != ack.Epoch
	})

	// A join while the closed member is still in the room would join the
	// old room, whose cursor refers to the lost stream, and miss the new
	// stream's messages up to that seq (the core keeps the cursor after
	// a loss, an Entry without JSON): wait for the hub to drop the room.
	et.Eventually(t, "hub 1 to drop the closed member", func() bool { return nodes[1].Hub.Room("m").Len() == 0 })
	q := et.Dial(t, nodes[1])
	_, ack2 := q.JoinAck("m", fmt.Sprintf(`"since":%d,"epoch":%q`, ack.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered || ack2.Epoch != epoch {
		t.Fatalf("rejoin after the restart: %+v, want recovered false and epoch %q", ack2, epoch)
	}
	et.Eventually(t, "appends to work again", func() bool { return et.Broadcast(ctx, nodes[0], "m", "after", 0) == nil })
	et.Equal(t, "message after the restart", et.Data(t, q.Read()).Pub, "after")
}

// A FLUSHALL loses the room's history while the hubs run: the members are
// closed with 1012, and a rejoin is told that it could not recover. A
// history that expired while idle (MaxAge) starts a new epoch that the
// members learn from its first message, without a close.
func TestHistoryLostOrExpired(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	hist := et.Policies(map[string]wshub.HistoryPolicy{"f": {Messages: 10}, "x": {Messages: 10, MaxAge: 300 * time.Millisecond}})
	nodes := newNodes(t, s.url(), 2, nil, hist)
	ctx := et.Ctx(t)

	p := et.Dial(t, nodes[1])
	_, ack := p.JoinAck("f", "")
	if err := et.Broadcast(ctx, nodes[0], "f", "before", 0); err != nil {
		t.Fatal(err)
	}
	before := p.Read()
	et.Equal(t, "message before the flush", et.Data(t, before).Pub, "before")
	et.Equal(t, "FLUSHALL", s.do("FLUSHALL"), "+OK")
	if err := et.Broadcast(ctx, nodes[0], "f", "after", 0); err != nil {
		t.Fatal(err)
	}
	_, _, err := p.Conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member after FLUSHALL: %v (status %d), want a close with 1012", err, got)
	}
	et.Eventually(t, "hub 1 to drop the closed member", func() bool { return nodes[1].Hub.Room("f").Len() == 0 })
	q := et.Dial(t, nodes[1])
	_, ack2 := q.JoinAck("f", fmt.Sprintf(`"since":%d,"epoch":%q`, before.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered || ack2.Epoch == ack.Epoch {
		t.Fatalf("rejoin after FLUSHALL: %+v, want recovered false and a new epoch", ack2)
	}

	x := et.Dial(t, nodes[1])
	_, xack := x.JoinAck("x", "")
	if err := et.Broadcast(ctx, nodes[0], "x", "first", 0); err != nil {
		t.Fatal(err)
	}
	et.Equal(t, "first message", et.Data(t, x.Read()).Pub, "first")
	et.Eventually(t, "the history to expire", func() bool { return s.do("EXISTS", engine(nodes[0]).Key("x", "meta")) == ":0" })
	time.Sleep(300 * time.Millisecond) // MaxAge since the last message passed, on the hub's clock too
	if err := et.Broadcast(ctx, nodes[0], "x", "anew", 0); err != nil {
		t.Fatal(err)
	}
	m := x.Read()
	et.Equal(t, "message of the new history", et.Data(t, m).Pub, "anew")
	if m.Epoch == "" || m.Epoch == xack.Epoch || m.Seq != 1 {
		t.Fatalf("message of the new history: epoch %q seq %d, want a new epoch (not %q) and seq 1", m.Epoch, m.Seq, xack.Epoch)
	}
}
