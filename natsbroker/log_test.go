package natsbroker_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// The scenarios of every engine on a bus (internal/enginetest), on the
// JetStream room log.
func TestLogOneOrderAcrossHubs(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	et.OneOrderAcrossHubs(t, hubs(newLogNodes(t, s.ClientURL(), 3, nil, et.OneOrderPolicies)))
}

func TestLogRecoveryOnAnotherHub(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	et.RecoveryOnAnotherHub(t, hubs(newLogNodes(t, s.ClientURL(), 2, nil, et.RecoveryPolicies)))
}

// A hub that was cut off from NATS while the log dropped messages it had
// not delivered closes the room's members with 1012, and they recover
// what the log still has.
func TestLogGapClosesMembers(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	px := et.StartProxy(t, s.Addr().String())
	hist := et.Policies(map[string]wshub.HistoryPolicy{"small": {Messages: 5}})
	a := newLogNodes(t, s.ClientURL(), 1, nil, hist)[0]
	b := newLogNodes(t, "nats://"+px.Addr(), 1, nil, hist)[0]
	ctx := et.Ctx(t)

	m := dial(t, b)
	_, ack := m.JoinAck("small", "")
	if err := broadcast(ctx, a, "small", "before", 0); err != nil {
		t.Fatal(err)
	}
	first := m.Read()
	et.Equal(t, "message before the outage", et.Data(t, first).Pub, "before")

	px.Cut()
	et.Eventually(t, "hub B to lose NATS", func() bool { return !b.nc.IsConnected() })
	for seq := range 12 {
		if err := broadcast(ctx, a, "small", "during", seq); err != nil {
			t.Fatal(err)
		}
	}
	px.Open()
	_, _, err := m.Conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member of hub B: %v (status %d), want a close with 1012", err, got)
	}

	// It rejoins with what it had: the log lost messages after it.
	again := dial(t, b)
	replay, ack2 := again.JoinAck("small", fmt.Sprintf(`"since":%d,"epoch":%q,"history":5`, first.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered {
		t.Fatalf("rejoin: recovered %v, want false", ack2.Recovered)
	}
	var ps []et.Payload
	for _, l := range replay {
		ps = append(ps, l.Payload)
	}
	want := []et.Payload{{Pub: "during", Seq: 7}, {Pub: "during", Seq: 8}, {Pub: "during", Seq: 9}, {Pub: "during", Seq: 10}, {Pub: "during", Seq: 11}}
	if !slices.Equal(ps, want) {
		t.Fatalf("history after the gap: %v, want %v", ps, want)
	}
}

// Room.History and Room.Position read the log; a room without history
// goes through core NATS alongside; a join asks for the last messages.
func TestLogHistoryAndPlainRooms(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	hist := et.Policies(map[string]wshub.HistoryPolicy{"h": {Messages: 10}})
	nodes := newLogNodes(t, s.ClientURL(), 2, nil, hist)
	ctx := et.Ctx(t)

	epoch, seq, err := nodes[1].Hub.Room("h").Position(ctx)
	if err != nil || epoch == "" {
		t.Fatalf("Position of an empty room: %q, %d, %v", epoch, seq, err)
	}
	for i := range 12 {
		if err := broadcast(ctx, nodes[0], "h", "h", i); err != nil {
			t.Fatal(err)
		}
	}
	got, err := nodes[1].Hub.Room("h").History(ctx, 5)
	if err != nil {
		t.Fatalf("History: %v", err)
	}
	et.Equal(t, "History length", len(got), 5)
	for i, m := range got {
		var d et.Payload
		if err := json.Unmarshal(m.Data.(json.RawMessage), &d); err != nil {
			t.Fatalf("History data %v: %v", m.Data, err)
		}
		et.Equal(t, "History message", d, et.Payload{Pub: "h", Seq: 7 + i})
		if i > 0 && m.Seq <= got[i-1].Seq {
			t.Fatalf("History seqs %d after %d", m.Seq, got[i-1].Seq)
		}
	}
	epoch2, seq2, err := nodes[1].Hub.Room("h").Position(ctx)
	if err != nil {
		t.Fatalf("Position: %v", err)
	}
	et.Equal(t, "epoch", epoch2, epoch)
	et.Equal(t, "Position's seq", seq2, got[4].Seq)

	p := dial(t, nodes[1])
	replay, ack := p.JoinAck("h", `"history":3`)
	et.Equal(t, "replayed", len(replay), 3)
	et.Equal(t, "last replayed", replay[2].Payload, et.Payload{Pub: "h", Seq: 11})
	et.Equal(t, "ack seq", ack.Seq, seq2)

	// A room without history: core NATS, no seq.
	x, y := dial(t, nodes[0]), dial(t, nodes[1])
	x.Join("plain")
	y.Join("plain")
	et.Equal(t, "core NATS subscriptions of the plain room", s.GlobalAccount().Interest(nodes[0].broker.Subject("plain")), 2)
	if err := broadcast(ctx, nodes[0], "plain", "plain", 0); err != nil {
		t.Fatal(err)
	}
	for _, q := range []*et.Peer{x, y} {
		m := q.Read()
		et.Equal(t, "plain message", et.Data(t, m).Pub, "plain")
		et.Equal(t, "plain message's seq", m.Seq, 0)
	}
}

// The Log's own contract, without a hub.
func TestLogLifecycle(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	ctx := et.Ctx(t)
	p := wshub.HistoryPolicy{Messages: 3}

	if _, err := natsbroker.ConnectLog(s.ClientURL(), &natsbroker.Options{Replicas: 7}); err == nil {
		t.Fatal("7 replicas accepted")
	}
	l, err := natsbroker.ConnectLog(s.ClientURL(), nil)
	if err != nil {
		t.Fatalf("ConnectLog: %v", err)
	}
	et.Equal(t, "reconnect buffer", l.Conn().Opts.ReconnectBufSize, -1)
	et.Equal(t, "log subject", l.LogSubject("lobby", p), "wshub.room.log.3_3600s.bG9iYnk")
	if name := l.LogStream(p); !strings.HasPrefix(name, "wshub_room_") || !strings.HasSuffix(name, "_log_3_3600s") {
		t.Fatalf("stream name %q", name)
	}

	// Read of a room without messages.
	page, err := l.Read(ctx, "r", p, 0, -1)
	if err != nil || len(page.Messages) != 0 || !page.Complete || page.Epoch == "" {
		t.Fatalf("Read of an empty room: %+v, %v", page, err)
	}

	// Publishes called one after another without waiting are stored in
	// that order (Append is Publish, with the seq).
	var waits []func() (uint64, error)
	for i := range 50 {
		room := []string{"r", "other"}[i%2]
		waits = append(waits, natsbroker.Append(l, ctx, room, p, fmt.Sprint("id", i), fmt.Appendf(nil, `{"type":"message","data":%d}`, i)))
	}
	var seqs []uint64
	for i, w := range waits {
		seq, err := w()
		if err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
		if i > 0 && seq <= seqs[i-1] {
			t.Fatalf("append %d stored at %d, after %d", i, seq, seqs[i-1])
		}
		seqs = append(seqs, seq)
	}
	// The same id stores once.
	if seq, err := natsbroker.Append(l, ctx, "r", p, "id48", []byte(`{"type":"message","data":48}`))(); err != nil || seq != seqs[48] {
		t.Fatalf("append again with id48: %d, %v, want %d", seq, err, seqs[48])
	}
	if err := l.Publish(ctx, "r", p, "id48", []byte(`{"type":"message","data":48}`))(); err != nil {
		t.Fatalf("Publish again with id48: %v", err)
	}

	// "r" retains its last 3: seqs[44], seqs[46], seqs[48].
	page, err = l.Read(ctx, "r", p, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	var got []uint64
	for _, m := range page.Messages {
		got = append(got, m.Seq)
	}
	if !slices.Equal(got, []uint64{seqs[44], seqs[46], seqs[48]}) || page.Latest != seqs[48] || page.Complete {
		t.Fatalf("Read all: %v latest %d complete %v, want %v, %d, false", got, page.Latest, page.Complete, seqs[44:49:49], seqs[48])
	}
	for _, tc := range []struct {
		after    uint64
		limit    int
		want     []uint64
		complete bool
	}{
		{seqs[42], -1, []uint64{seqs[44], seqs[46], seqs[48]}, false},
		{seqs[43], -1, []uint64{seqs[44], seqs[46], seqs[48]}, true},
		{seqs[44], 1, []uint64{seqs[48]}, true},
		{seqs[48], -1, nil, true},
		{0, 0, nil, false},
		{^uint64(0), 0, nil, true},
	} {
		page, err := l.Read(ctx, "r", p, tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		var got []uint64
		for _, m := range page.Messages {
			got = append(got, m.Seq)
		}
		if !slices.Equal(got, tc.want) || page.Complete != tc.complete || page.Latest != seqs[48] {
			t.Fatalf("Read(after %d, limit %d): %v complete %v latest %d, want %v %v %d", tc.after, tc.limit, got, page.Complete, page.Latest, tc.want, tc.complete, seqs[48])
		}
	}

	// Follow from the third to last of "r"; a second one is refused.
	type delivery struct {
		seq uint64
		id  string
	}
	deliveries := make(chan delivery, 10)
	var stopped sync.Mutex
	stoppedFlag := false
	deliver := func(e wshub.Entry) {
		stopped.Lock()
		defer stopped.Unlock()
		if stoppedFlag {
			t.Errorf("delivery of %d after Unfollow", e.Seq)
		}
		deliveries <- delivery{e.Seq, e.ID}
	}
	if err := l.Follow("r", p, seqs[44], deliver); err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if err := l.Follow("r", p, 0, deliver); !errors.Is(err, natsbroker.ErrFollowed) {
		t.Fatalf("second Follow: %v, want ErrFollowed", err)
	}
	if err := l.Follow("r", wshub.HistoryPolicy{}, 0, func(wshub.Entry) {}); !errors.Is(err, natsbroker.ErrFollowed) {
		t.Fatalf("Follow without history of a followed room: %v, want ErrFollowed", err)
	}
	if err := l.Follow("plain", wshub.HistoryPolicy{}, 0, func(wshub.Entry) {}); err != nil {
		t.Fatalf("Follow without history: %v", err)
	}
	if err := l.Follow("plain", p, 0, deliver); !errors.Is(err, natsbroker.ErrFollowed) {
		t.Fatalf("Follow of a room followed on core NATS: %v, want ErrFollowed", err)
	}
	next := func() delivery {
		select {
		case d := <-deliveries:
			return d
		case <-ctx.Done():
			t.Fatal("no delivery")
		}
		return delivery{}
	}
	et.Equal(t, "first delivery", next(), delivery{seqs[46], "id46"})
	et.Equal(t, "second delivery", next(), delivery{seqs[48], "id48"})
	seq, err := natsbroker.Append(l, ctx, "r", p, "live", []byte(`{"type":"message"}`))()
	if err != nil {
		t.Fatal(err)
	}
	et.Equal(t, "live delivery", next(), delivery{seq, "live"})

	stream, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	consumers := func() int {
		st, err := stream.Stream(ctx, l.LogStream(p))
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		return info.State.Consumers
	}
	et.Equal(t, "consumers while following", consumers(), 1)
	et.Equal(t, "Unfollow", l.Unfollow("r"), nil)
	stopped.Lock()
	stoppedFlag = true
	stopped.Unlock()
	et.Eventually(t, "the follow's consumer to go", func() bool { return consumers() == 0 })
	if err := l.Publish(ctx, "r", p, "after", []byte(`{"type":"message"}`))(); err != nil {
		t.Fatal(err)
	}
	stopped.Lock()
	stoppedFlag = false
	stopped.Unlock()
	if err := l.Follow("r", p, seq, deliver); err != nil {
		t.Fatalf("Follow again: %v", err)
	}
	et.Equal(t, "delivery after following again", next().id, "after")

	et.Equal(t, "Close", l.Close(), nil)
	if !l.Conn().IsClosed() {
		t.Fatal("Close left ConnectLog's connection open")
	}
	if err := l.Publish(ctx, "r", p, "closed", []byte(`{}`))(); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
	if _, err := l.Read(ctx, "r", p, 0, -1); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Read after Close: %v, want ErrClosed", err)
	}
	if err := l.Follow("x", p, 0, deliver); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("Follow after Close: %v, want ErrClosed", err)
	}

	// Without a connection, a publish fails at once and stores nothing.
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	l2, err := natsbroker.NewLog(nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if err := l2.Publish(ctx, "r", p, "down", []byte(`{}`))(); !errors.Is(err, natsbroker.ErrNotConnected) {
		t.Fatalf("Publish on a closed connection: %v, want ErrNotConnected", err)
	}
	et.Equal(t, "Close of NewLog's", l2.Close(), nil)
}

// RestartMidTraffic (internal/enginetest) on the room log: the NATS
// server goes away and comes back on the same port with the same store.
func TestLogNATSRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startJetStream(t, server.RANDOM_PORT, dir)
	port := natsPort(s)
	px := et.StartProxy(t, s.Addr().String())
	nodes := newLogNodes(t, s.ClientURL(), 2, nil, et.RestartPolicies)
	nodes = append(nodes, newLogNodes(t, "nats://"+px.Addr(), 1, nil, et.RestartPolicies)...)
	et.RestartMidTraffic(t, hubs(nodes), px, et.Restart{
		Stop: func() {
			s.Shutdown()
			s.WaitForShutdown()
		},
		Start:       func() { startJetStream(t, port, dir) },
		Connected:   func(i int) bool { return nodes[i].nc.IsConnected() },
		Unconfirmed: natsbroker.ErrUnconfirmed,
	})
}

// HistoryLostOnRestart (internal/enginetest) on the room log with memory
// storage: a restart of NATS loses the streams.
func TestLogMemoryStorageRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := startJetStream(t, server.RANDOM_PORT, dir)
	port := natsPort(s)
	nodes := newLogNodes(t, s.ClientURL(), 2, &natsbroker.Options{MemoryStorage: true}, et.LostPolicies)
	et.HistoryLostOnRestart(t, hubs(nodes), func() {
		s.Shutdown()
		s.WaitForShutdown()
		startJetStream(t, port, dir)
	})
}
