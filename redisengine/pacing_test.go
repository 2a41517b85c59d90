package redisengine_test

import (
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// PacedAfterBusHang (internal/enginetest) on Redis Streams: Redis takes
// nothing for 2 seconds, then all of it; the hubs read the streams at
// their members' pace.
func TestStreamPacedAfterBusHang(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	px := et.StartProxy(t, s.addr())
	nodes := newNodes(t, "redis://"+px.Addr(), 2, nil, et.PacedPolicies, et.SmallQueues)
	et.PacedAfterBusHang(t, nodes, px, 2*time.Second)
}

// FloodPacedOnOtherHub (internal/enginetest), through pub/sub and through
// Streams.
func TestFloodPacedOnOtherHub(t *testing.T) {
	for _, history := range []bool{false, true} {
		t.Run(map[bool]string{false: "pub/sub", true: "streams"}[history], func(t *testing.T) {
			t.Parallel()
			s := startRedis(t, false)
			var hist func(string) wshub.HistoryPolicy
			if history {
				hist = et.PacedPolicies
			}
			et.FloodPacedOnOtherHub(t, newNodes(t, s.url(), 2, nil, hist, et.SmallQueues), 2000)
		})
	}
}

// TestPubSubBurstPastBound: through pub/sub, a burst from another hub past
// Options.BurstBytes, held while a stalled member holds up the room until
// WriteTimeout closes it, is not lost silently: the engine drops messages
// for the hub and passes it a loss, and the hub closes the room's other
// members with 1012.
func TestPubSubBurstPastBound(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	nodes := newNodes(t, s.url(), 2, &redisengine.Options{BurstBytes: 64 << 10}, nil,
		func(o *wshub.Options) { o.Limits.WriteTimeout = 2 * time.Second })
	stalled := et.Dial(t, nodes[1])
	stalled.Join("r") // and never reads again
	reader := et.Dial(t, nodes[1])
	reader.Join("r")
	closed := make(chan error, 1)
	go func() {
		for {
			if _, err := reader.Next(); err != nil {
				closed <- err
				return
			}
		}
	}()
	// 32 MiB from hub A, more than the stalled member's socket and queue
	// take, and far more than BurstBytes.
	big := strings.Repeat("x", 8<<10)
	ctx := et.Ctx(t)
	for i := range 4096 {
		if err := nodes[0].Hub.Room("r").Broadcast(ctx, &wshub.Message{Data: et.Payload{Pub: big, Seq: i}}); err != nil {
			t.Fatalf("broadcast %d: %v", i, err)
		}
	}
	et.Equal(t, "reader's close code", websocket.CloseStatus(<-closed), websocket.StatusServiceRestart)
}
