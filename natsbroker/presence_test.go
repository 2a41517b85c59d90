package natsbroker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// presNode is a hub whose rooms all have presence, and whose clients are
// named by the query: ?id=alice gives ID "alice" and Info {"name":"alice"}.
type presNode struct {
	*et.Node
	broker *natsbroker.Broker
	nc     *nats.Conn
}

// presenceNode starts a presence hub on a NATS connection to url, with a
// Broker, or with a Log when log is set.
func presenceNode(t testing.TB, url string, opts *natsbroker.Options, log bool) *presNode {
	t.Helper()
	nc, err := nats.Connect(url,
		nats.ReconnectBufSize(-1),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(10*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
	)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	n := &presNode{nc: nc}
	var br wshub.Engine
	if log {
		l, err := natsbroker.NewLog(nc, opts)
		if err != nil {
			t.Fatalf("NewLog: %v", err)
		}
		n.broker, br = l.Broker, l
	} else {
		if n.broker, err = natsbroker.New(nc, opts); err != nil {
			t.Fatalf("New: %v", err)
		}
		br = n.broker
	}
	o := &wshub.Options{Engine: br}
	et.PresenceOptions(o)
	t.Cleanup(nc.Close) // after the hub's
	n.Node = et.Serve(t, wshub.New(nil, o))
	n.Engine = br
	return n
}

// presHubs returns the kit's nodes of nodes, for the scenarios.
func presHubs(nodes ...*presNode) []*et.Node {
	out := make([]*et.Node, len(nodes))
	for i, n := range nodes {
		out[i] = n.Node
	}
	return out
}

// The presence scenarios of every engine on a bus (internal/enginetest),
// on Brokers and a Log.
func TestPresenceAcrossHubs(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	et.PresenceAcrossHubs(t, presHubs(
		presenceNode(t, s.ClientURL(), nil, false),
		presenceNode(t, s.ClientURL(), nil, false),
		presenceNode(t, s.ClientURL(), nil, true),
	))
}

func TestPresenceHubLosesNATS(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	px := et.StartProxy(t, s.Addr().String())
	opts := &natsbroker.Options{PresenceTTL: 3 * time.Second}
	et.PresenceCutOff(t, presHubs(
		presenceNode(t, s.ClientURL(), opts, false),
		presenceNode(t, s.ClientURL(), opts, true),
		presenceNode(t, "nats://"+px.Addr(), opts, false),
	), px, opts.PresenceTTL)
}

func TestPresenceShutdownWithdraws(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	opts := &natsbroker.Options{PresenceTTL: time.Hour}
	et.PresenceShutdownWithdraws(t, presHubs(
		presenceNode(t, s.ClientURL(), opts, false),
		presenceNode(t, s.ClientURL(), opts, true),
	))
}

// TestPresenceBrokerAPI exercises the PresenceEngine methods directly:
// the current entries come before WatchPresence returns, changes follow
// in order, a hub never sees its own entry, UnwatchPresence stops the
// updates, and Close deletes the hub's keys.
func TestPresenceBrokerAPI(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	ctx := et.Ctx(t)
	brokers := make([]*natsbroker.Broker, 3)
	for i := range brokers {
		b, err := natsbroker.Connect(s.ClientURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		brokers[i] = b
	}
	b0, b1, b2 := brokers[0], brokers[1], brokers[2]
	if b0.PresenceID() == b1.PresenceID() || len(b0.PresenceID()) != 16 {
		t.Fatalf("presence IDs %q and %q", b0.PresenceID(), b1.PresenceID())
	}
	if err := b1.SetPresence("r", []byte(`[{"id":"x","conns":1}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	if err := b2.SetPresence("r", []byte(`[{"id":"y","conns":1}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	if err := b0.SetPresence("r", []byte(`[{"id":"self","conns":1}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}

	rec := et.NewRecorder(t)
	if err := b0.WatchPresence("r", rec.Update); err != nil {
		t.Fatalf("WatchPresence: %v", err)
	}
	if len(rec.C) != 2 {
		t.Fatalf("%d updates before WatchPresence returned, want the 2 current entries", len(rec.C))
	}
	got := map[string]string{}
	for range 2 {
		u := rec.Next(ctx)
		got[u.Hub] = u.Members
	}
	et.Equal(t, "b1's entry", got[b1.PresenceID()], `[{"id":"x","conns":1}]`)
	et.Equal(t, "b2's entry", got[b2.PresenceID()], `[{"id":"y","conns":1}]`)
	if err := b0.WatchPresence("r", rec.Update); err == nil {
		t.Fatal("second WatchPresence of a room: no error")
	}

	if err := b1.SetPresence("r", []byte(`[{"id":"x","conns":2}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	et.Equal(t, "change", rec.Next(ctx), et.Update{Hub: b1.PresenceID(), Members: `[{"id":"x","conns":2}]`})
	if err := b1.SetPresence("r", nil); err != nil {
		t.Fatalf("SetPresence nil: %v", err)
	}
	et.Equal(t, "withdrawal", rec.Next(ctx), et.Update{Hub: b1.PresenceID(), Members: "<nil>"})
	if err := b1.SetPresence("other", []byte(`[{"id":"z","conns":1}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	// Another room's entry is no update; Close deletes b2's key.
	if err := b2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	et.Equal(t, "b2 closed", rec.Next(ctx), et.Update{Hub: b2.PresenceID(), Members: "<nil>"})
	if err := b2.SetPresence("r", []byte(`[]`)); !errors.Is(err, natsbroker.ErrClosed) {
		t.Fatalf("SetPresence after Close: %v, want ErrClosed", err)
	}

	js, err := jetstream.New(b0.Conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, b0.PresenceBucket())
	if err != nil {
		t.Fatalf("bucket %s: %v", b0.PresenceBucket(), err)
	}
	if _, err := kv.Get(ctx, b2.PresenceKey("r")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("b2's key after Close: %v, want ErrKeyNotFound", err)
	}
	if e, err := kv.Get(ctx, b1.PresenceKey("other")); err != nil || string(e.Value()) != `[{"id":"z","conns":1}]` {
		t.Fatalf("b1's key of another room: %v", err)
	}

	if err := b0.UnwatchPresence("r"); err != nil {
		t.Fatalf("UnwatchPresence: %v", err)
	}
	rec.Stopped.Store(true)
	if err := b1.SetPresence("r", []byte(`[{"id":"x","conns":3}]`)); err != nil {
		t.Fatalf("SetPresence: %v", err)
	}
	// A new watch sees that change; the old one must not have.
	rec2 := et.NewRecorder(t)
	if err := b0.WatchPresence("r", rec2.Update); err != nil {
		t.Fatalf("WatchPresence again: %v", err)
	}
	et.Equal(t, "after watching again", rec2.Next(ctx), et.Update{Hub: b1.PresenceID(), Members: `[{"id":"x","conns":3}]`})
	if len(rec.C) != 0 {
		t.Fatalf("%d updates after UnwatchPresence", len(rec.C))
	}
}

// TestPresenceOptions: PresenceTTL and Replicas out of range fail New.
func TestPresenceOptions(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, o := range []natsbroker.Options{{PresenceTTL: time.Millisecond}, {Replicas: -1}} {
		if _, err := natsbroker.New(nc, &o); err == nil {
			t.Errorf("New with %+v: no error", o)
		}
	}
	// Without JetStream a Broker works, and presence fails.
	b, err := natsbroker.New(nc, &natsbroker.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.WatchPresence("r", func(string, []byte) {}); err == nil {
		t.Error("WatchPresence without JetStream: no error")
	}
	if err := b.SetPresence("r", []byte(`[{"id":"x","conns":1}]`)); err == nil {
		t.Error("SetPresence without JetStream: no error")
	}
}

// TestPresenceServerRestart: the NATS server restarts with memory
// storage, losing the bucket. The hubs create it again, write their
// entries again at once (the TTL is an hour: no refresh would), and
// follow the room on the new bucket: a member who joins afterwards is
// seen on the other hub.
func TestPresenceServerRestart(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	port := natsPort(s)
	opts := &natsbroker.Options{MemoryStorage: true, PresenceTTL: time.Hour}
	nodes := []*presNode{
		presenceNode(t, s.ClientURL(), opts, false),
		presenceNode(t, s.ClientURL(), opts, true),
	}
	alice := et.DialMember(t, nodes[0].Node, "alice")
	bob := et.DialMember(t, nodes[1].Node, "bob")
	alice.Join("p")
	bob.Join("p")
	alice.Until("alice", "bob")
	bob.Until("alice", "bob")

	s.Shutdown()
	s.WaitForShutdown()
	s = startJetStream(t, port, t.TempDir())

	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := et.Ctx(t)
	for _, n := range nodes {
		et.Eventually(t, "the hub's entry in the new bucket", func() bool {
			kv, err := js.KeyValue(ctx, n.broker.PresenceBucket())
			if err != nil {
				return false
			}
			_, err = kv.Get(ctx, n.broker.PresenceKey("p"))
			return err == nil
		})
	}
	carol := et.DialMember(t, nodes[1].Node, "carol")
	carol.Join("p")
	alice.Until("alice", "bob", "carol")
	carol.Until("alice", "bob", "carol")
}
