package redisengine_test

import (
	"testing"

	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// presenceNodes starts presence hubs (et.PresenceOptions), one per URL in
// urls, each with an engine of opts on it.
func presenceNodes(t testing.TB, opts *redisengine.Options, urls ...string) []*et.Node {
	t.Helper()
	var nodes []*et.Node
	for _, url := range urls {
		e, err := redisengine.Connect(url, opts)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		o := &wshub.Options{Engine: e}
		et.PresenceOptions(o)
		n := et.Serve(t, wshub.New(nil, o))
		n.Engine = e
		nodes = append(nodes, n)
	}
	return nodes
}

// TestPresenceServerRestart: Redis restarts without persistence, losing
// every entry: the hubs write theirs again on reconnecting, and every
// view comes back to every member.
func TestPresenceServerRestart(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	nodes := presenceNodes(t, nil, s.URL(), s.URL())
	alice := et.DialMember(t, nodes[0], "alice")
	bob := et.DialMember(t, nodes[1], "bob")
	alice.Join("p")
	bob.Join("p")
	alice.Until("alice", "bob")
	bob.Until("alice", "bob")
	s.Kill()
	s.Start()
	et.Eventually(t, "the entries written again", func() bool {
		return s.Do("HLEN", engine(nodes[0]).Key("p", "pres")) == ":2"
	})
	// A new member on hub 0 sees bob, whose entry came back.
	carol := et.DialMember(t, nodes[0], "carol")
	carol.Join("p")
	carol.Until("alice", "bob", "carol")
	bob.Until("alice", "bob", "carol")
}

// TestPresenceEngineAPI exercises the PresenceEngine methods directly:
// the current entries come before WatchPresence returns, changes follow
// in order, a hub never sees its own entry, UnwatchPresence stops the
// updates, and Close deletes the hub's entry.
func TestPresenceEngineAPI(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	ctx := et.Ctx(t)
	connect := func() *redisengine.Engine {
		e, err := redisengine.Connect(s.URL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	a, b := connect(), connect()
	if err := a.SetPresence("r", []byte(`[{"id":"x"}]`)); err != nil {
		t.Fatal(err)
	}
	rec := et.NewRecorder(t)
	if err := b.WatchPresence("r", rec.Update); err != nil {
		t.Fatal(err)
	}
	select {
	case u := <-rec.C:
		et.Equal(t, "first update", u, et.Update{Hub: a.HubID(), Members: `[{"id":"x"}]`})
	default:
		t.Fatal("WatchPresence returned before passing the current entry")
	}
	if err := b.SetPresence("r", []byte(`[{"id":"own"}]`)); err != nil {
		t.Fatal(err)
	}
	if err := a.SetPresence("r", []byte(`[{"id":"y"}]`)); err != nil {
		t.Fatal(err)
	}
	et.Equal(t, "change", rec.Next(ctx), et.Update{Hub: a.HubID(), Members: `[{"id":"y"}]`})
	if err := a.SetPresence("r", nil); err != nil {
		t.Fatal(err)
	}
	et.Equal(t, "withdrawal", rec.Next(ctx), et.Update{Hub: a.HubID(), Members: "<nil>"})
	if err := a.SetPresence("r", []byte(`[{"id":"z"}]`)); err != nil {
		t.Fatal(err)
	}
	et.Equal(t, "again", rec.Next(ctx), et.Update{Hub: a.HubID(), Members: `[{"id":"z"}]`})
	a.Close()
	et.Equal(t, "after Close", rec.Next(ctx), et.Update{Hub: a.HubID(), Members: "<nil>"})
	if err := b.UnwatchPresence("r"); err != nil {
		t.Fatal(err)
	}
	rec.Stopped.Store(true)
	c := connect()
	if err := c.SetPresence("r", []byte(`[{"id":"late"}]`)); err != nil {
		t.Fatal(err)
	}
	et.Equal(t, "entries left", s.Do("HLEN", b.Key("r", "pres")), ":2") // b's own and c's
	select {
	case u := <-rec.C:
		t.Fatalf("update after UnwatchPresence: %+v", u)
	default:
	}
	if err := a.SetPresence("r", nil); err == nil {
		t.Fatal("SetPresence after Close succeeded")
	}
}
