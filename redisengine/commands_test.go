package redisengine_test

import (
	"errors"
	"fmt"
	"testing"

	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// On a Redis Cluster, commands go through sharded pub/sub too.
func TestRedisClusterDisconnectUserAcrossHubs(t *testing.T) {
	t.Parallel()
	addr := startRedisCluster(t)
	nodes := newNodes(t, "redis://"+addr, 3, nil, nil, et.UserOptions)
	if !redisengine.Sharded(engine(nodes[0])) {
		t.Fatal("the engine did not take the server for a cluster")
	}
	et.DisconnectUserAcrossHubs(t, nodes)
}

// connect returns an engine on url, closed at cleanup.
func connect(t *testing.T, url string, opts *redisengine.Options) *redisengine.Engine {
	t.Helper()
	e, err := redisengine.Connect(url, opts)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// A command reaches every engine, the sender's included, in order with
// the sender's publishes; HandleCommands is called once.
func TestCommandReachesEveryEngine(t *testing.T) {
	t.Parallel()
	ctx := et.Ctx(t)
	s := et.StartRedis(t)
	a, b := connect(t, s.URL(), nil), connect(t, s.URL(), nil)
	gotA, gotB := et.HandledCommands(t, a), et.HandledCommands(t, b)
	if err := a.HandleCommands(func([]byte) {}); err == nil {
		t.Fatal("a second HandleCommands succeeded")
	}
	for i, from := range []*redisengine.Engine{a, b} {
		cmd := fmt.Sprintf(`{"n":%d}`, i)
		if err := from.Command(ctx, []byte(cmd)); err != nil {
			t.Fatalf("Command: %v", err)
		}
		et.Equal(t, "command on a", et.NextCommand(ctx, t, gotA), cmd)
		et.Equal(t, "command on b", et.NextCommand(ctx, t, gotB), cmd)
	}
}

// Close waits for a command that handle is carrying out; afterwards
// Command and HandleCommands return ErrClosed.
func TestCloseWaitsForHandle(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	a, b := connect(t, s.URL(), nil), connect(t, s.URL(), nil)
	et.CloseWaitsForHandle(t, a, b, redisengine.ErrClosed)
}

// While Redis is down, Command fails with ErrNotConnected, before the
// first connection as after; HandleCommands subscribes once Redis is up,
// and the commands published then arrive.
func TestCommandsWhileUnreachable(t *testing.T) {
	t.Parallel()
	ctx := et.Ctx(t)
	s := et.StartRedis(t)
	s.Kill()
	e := connect(t, s.URL(), &redisengine.Options{RetryOnFailedConnect: true})
	if err := e.Command(ctx, []byte(`{}`)); !errors.Is(err, redisengine.ErrNotConnected) {
		t.Fatalf("Command before connecting: %v, want ErrNotConnected", err)
	}
	got := et.HandledCommands(t, e)

	s.Start()
	ch := e.Key("", "cmd")
	et.Eventually(t, "the subscription to commands", func() bool { return s.Subscribers(ch) == 1 })
	other := connect(t, s.URL(), nil)
	if err := other.Command(ctx, []byte(`{"late":true}`)); err != nil {
		t.Fatalf("Command: %v", err)
	}
	et.Equal(t, "command", et.NextCommand(ctx, t, got), `{"late":true}`)

	s.Kill()
	if err := other.Command(ctx, []byte(`{}`)); !errors.Is(err, redisengine.ErrNotConnected) && !errors.Is(err, redisengine.ErrUnconfirmed) {
		t.Fatalf("Command with Redis down: %v, want ErrNotConnected or ErrUnconfirmed", err)
	}
}
