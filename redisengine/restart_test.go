package redisengine_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// RestartMidTraffic (internal/enginetest) on Redis with its append-only
// file on: killed with SIGKILL, what Redis wrote to the file survives.
func TestRedisRestartAOF(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t, "--appendonly", "yes")
	px := et.StartProxy(t, s.Addr())
	nodes := newNodes(t, s.URL(), 2, nil, et.RestartPolicies)
	nodes = append(nodes, newNodes(t, "redis://"+px.Addr(), 1, nil, et.RestartPolicies)...)
	et.RestartMidTraffic(t, nodes, px, et.Restart{Stop: s.Kill, Start: s.Start, Unconfirmed: redisengine.ErrUnconfirmed})
}

// HistoryLostOnRestart (internal/enginetest) on Redis without
// persistence: a restart loses the rooms' streams.
func TestRedisRestartNoPersistence(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	et.HistoryLostOnRestart(t, newNodes(t, s.URL(), 2, nil, et.LostPolicies), func() {
		s.Kill()
		s.Start()
	})
}

// A FLUSHALL loses the room's history while the hubs run: the members are
// closed with 1012, and a rejoin is told that it could not recover. A
// history that expired while idle (MaxAge) starts a new epoch that the
// members learn from its first message, without a close.
func TestHistoryLostOrExpired(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	hist := et.Policies(map[string]wshub.HistoryPolicy{"f": {Messages: 10}, "x": {Messages: 10, MaxAge: 300 * time.Millisecond}})
	nodes := newNodes(t, s.URL(), 2, nil, hist)
	ctx := et.Ctx(t)

	p := et.Dial(t, nodes[1])
	_, ack := p.JoinAck("f", "")
	if err := et.Broadcast(ctx, nodes[0], "f", "before", 0); err != nil {
		t.Fatal(err)
	}
	before := p.Read()
	et.Equal(t, "message before the flush", et.Data(t, before).Pub, "before")
	et.Equal(t, "FLUSHALL", s.Do("FLUSHALL"), "+OK")
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
	et.Eventually(t, "the history to expire", func() bool { return s.Do("EXISTS", engine(nodes[0]).Key("x", "meta")) == ":0" })
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

// Redis comes back with older data (here a snapshot taken before the last
// appends; likewise an append-only file fsynced a second ago, or a replica
// that lagged): the hubs see the history go back, end its epoch, and close
// the members with 1012; a rejoin is told it could not recover, and the
// room goes on under a new epoch, its old seqs never given to new
// messages.
func TestHistoryWentBack(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	nodes := newNodes(t, s.URL(), 2, nil, et.LostPolicies)
	ctx := et.Ctx(t)
	p := et.Dial(t, nodes[1])
	_, ack := p.JoinAck("m", "")
	var last et.Msg
	for i := range 5 {
		if i == 3 {
			et.Equal(t, "SAVE", s.Do("SAVE"), "+OK") // the snapshot keeps 3 messages
		}
		if err := et.Broadcast(ctx, nodes[0], "m", "before", i); err != nil {
			t.Fatal(err)
		}
		last = p.Read()
	}
	s.Kill()
	s.Start()
	_, _, err := p.Conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member: %v (status %d), want a close with 1012", err, got)
	}
	et.Eventually(t, "hub 1 to drop the closed member", func() bool { return nodes[1].Hub.Room("m").Len() == 0 })
	q := et.Dial(t, nodes[1])
	_, ack2 := q.JoinAck("m", fmt.Sprintf(`"since":%d,"epoch":%q`, last.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered || ack2.Epoch == ack.Epoch {
		t.Fatalf("rejoin: %+v, want recovered false and a new epoch", ack2)
	}
	if err := et.Broadcast(ctx, nodes[0], "m", "after", 0); err != nil {
		t.Fatal(err)
	}
	m := q.Read()
	if et.Data(t, m).Pub != "after" || m.Epoch != "" && m.Epoch != ack2.Epoch {
		t.Fatalf("message after: %+v, want it in epoch %q", m, ack2.Epoch)
	}
}
