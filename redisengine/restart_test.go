package redisengine_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
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
	px := startProxy(t, s.addr())
	hist := policies(map[string]wshub.HistoryPolicy{"r": {Messages: 10000}})
	nodes := newNodes(t, s.url(), 2, nil, hist)
	nodes = append(nodes, newNodes(t, px.url(), 1, nil, hist)...) // comes back later
	ctx := testCtx(t)

	type member struct {
		got []logged
		err error
	}
	members := make([]*member, 2*len(nodes))
	var readers sync.WaitGroup
	for i := range members {
		p := dial(t, nodes[i/2])
		p.join("r")
		m := &member{}
		members[i] = m
		readers.Go(func() { m.got, m.err = p.collectLog("sentinel", nil) })
	}
	epoch, _, err := nodes[0].hub.Room("r").Position(ctx)
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
				err := broadcast(ctx, n, "r", pub, seq)
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
	px.cut()
	down.Wait()

	s.start()
	close(restarted)
	if err := broadcast(ctx, nodes[0], "r", "while-2-away", 0); err != nil {
		t.Fatalf("publish while hub 2 is away: %v", err)
	}
	px.open()
	pubs.Wait()
	if t.Failed() {
		return
	}
	epoch2, _, err := nodes[1].hub.Room("r").Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "epoch after the restart (append-only file)", epoch2, epoch)
	if err := broadcast(ctx, nodes[0], "r", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	readers.Wait()

	var lists [][]logged
	for i, m := range members {
		if m.err != nil {
			t.Fatalf("member %d: %v", i, m.err)
		}
		lists = append(lists, m.got)
	}
	checkOneOrder(t, "r", lists)
	got := lists[0]
	count := map[payload]int{}
	last := map[string]int{}
	for _, l := range got {
		count[l.payload]++
		if prev, ok := last[l.Pub]; ok && l.Seq <= prev {
			t.Fatalf("%s's %d after its %d", l.Pub, l.Seq, prev)
		}
		last[l.Pub] = l.Seq
	}
	equal(t, "the message published while hub 2 was away", count[payload{"while-2-away", 0}], 1)
	var nOK, nFailed, nUnconfirmed, nUnconfirmedDelivered int
	for i, o := range outcomes {
		pub := fmt.Sprintf("pub%d", i)
		for seq := range o.ok {
			if c := count[payload{pub, seq}]; c != 1 {
				t.Fatalf("acknowledged %s %d delivered %d times", pub, seq, c)
			}
		}
		for seq := range o.failed {
			if c := count[payload{pub, seq}]; c != 0 {
				t.Fatalf("failed %s %d delivered %d times", pub, seq, c)
			}
		}
		for seq := range o.unconfirmed {
			if c := count[payload{pub, seq}]; c > 1 {
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
	hist := policies(map[string]wshub.HistoryPolicy{"m": {Messages: 50}})
	nodes := newNodes(t, s.url(), 2, nil, hist)
	ctx := testCtx(t)

	p := dial(t, nodes[1])
	_, ack := p.joinAck("m", "")
	if err := broadcast(ctx, nodes[0], "m", "before", 0); err != nil {
		t.Fatal(err)
	}
	equal(t, "message before the restart", data(t, p.read()).Pub, "before")

	s.kill()
	s.start()
	_, _, err := p.conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member: %v (status %d), want a close with 1012", err, got)
	}
	var epoch string
	eventually(t, "the room's new epoch", func() bool {
		epoch, _, err = nodes[0].hub.Room("m").Position(ctx)
		return err == nil && epoch != ack.Epoch
	})

	// A join while the closed member is still in the room would join the
	// old room, whose cursor refers to the lost stream, and miss the new
	// stream's messages up to that seq (the core keeps the cursor after
	// a loss, an Entry without JSON): wait for the hub to drop the room.
	eventually(t, "hub 1 to drop the closed member", func() bool { return nodes[1].hub.Room("m").Len() == 0 })
	q := dial(t, nodes[1])
	_, ack2 := q.joinAck("m", fmt.Sprintf(`"since":%d,"epoch":%q`, ack.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered || ack2.Epoch != epoch {
		t.Fatalf("rejoin after the restart: %+v, want recovered false and epoch %q", ack2, epoch)
	}
	eventually(t, "appends to work again", func() bool { return broadcast(ctx, nodes[0], "m", "after", 0) == nil })
	equal(t, "message after the restart", data(t, q.read()).Pub, "after")
}

// A FLUSHALL loses the room's history while the hubs run: the members are
// closed with 1012, and a rejoin is told that it could not recover. A
// history that expired while idle (MaxAge) starts a new epoch that the
// members learn from its first message, without a close.
func TestHistoryLostOrExpired(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	hist := policies(map[string]wshub.HistoryPolicy{"f": {Messages: 10}, "x": {Messages: 10, MaxAge: 300 * time.Millisecond}})
	nodes := newNodes(t, s.url(), 2, nil, hist)
	ctx := testCtx(t)

	p := dial(t, nodes[1])
	_, ack := p.joinAck("f", "")
	if err := broadcast(ctx, nodes[0], "f", "before", 0); err != nil {
		t.Fatal(err)
	}
	before := p.read()
	equal(t, "message before the flush", data(t, before).Pub, "before")
	equal(t, "FLUSHALL", s.do("FLUSHALL"), "+OK")
	if err := broadcast(ctx, nodes[0], "f", "after", 0); err != nil {
		t.Fatal(err)
	}
	_, _, err := p.conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member after FLUSHALL: %v (status %d), want a close with 1012", err, got)
	}
	eventually(t, "hub 1 to drop the closed member", func() bool { return nodes[1].hub.Room("f").Len() == 0 })
	q := dial(t, nodes[1])
	_, ack2 := q.joinAck("f", fmt.Sprintf(`"since":%d,"epoch":%q`, before.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered || ack2.Epoch == ack.Epoch {
		t.Fatalf("rejoin after FLUSHALL: %+v, want recovered false and a new epoch", ack2)
	}

	x := dial(t, nodes[1])
	_, xack := x.joinAck("x", "")
	if err := broadcast(ctx, nodes[0], "x", "first", 0); err != nil {
		t.Fatal(err)
	}
	equal(t, "first message", data(t, x.read()).Pub, "first")
	eventually(t, "the history to expire", func() bool { return s.do("EXISTS", nodes[0].eng.Key("x", "meta")) == ":0" })
	time.Sleep(300 * time.Millisecond) // MaxAge since the last message passed, on the hub's clock too
	if err := broadcast(ctx, nodes[0], "x", "anew", 0); err != nil {
		t.Fatal(err)
	}
	m := x.read()
	equal(t, "message of the new history", data(t, m).Pub, "anew")
	if m.Epoch == "" || m.Epoch == xack.Epoch || m.Seq != 1 {
		t.Fatalf("message of the new history: epoch %q seq %d, want a new epoch (not %q) and seq 1", m.Epoch, m.Seq, xack.Epoch)
	}
}
