package redisengine_test

import (
	"testing"
	"time"

	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// PacedAfterBusHang (internal/enginetest) on Redis Streams: Redis takes
// nothing for 2 seconds, then all of it; the hubs read the streams at
// their members' pace.
func TestStreamPacedAfterBusHang(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	px := et.StartProxy(t, s.Addr())
	nodes := newNodes(t, "redis://"+px.Addr(), 2, nil, et.PacedPolicies, et.SmallQueues)
	et.PacedAfterBusHang(t, nodes, px, 2*time.Second)
}

// FloodPacedOnOtherHub (internal/enginetest), through pub/sub and through
// Streams.
func TestFloodPacedOnOtherHub(t *testing.T) {
	for _, history := range []bool{false, true} {
		t.Run(map[bool]string{false: "pub/sub", true: "streams"}[history], func(t *testing.T) {
			t.Parallel()
			s := et.StartRedis(t)
			var hist func(string) wshub.HistoryPolicy
			if history {
				hist = et.PacedPolicies
			}
			et.FloodPacedOnOtherHub(t, newNodes(t, s.URL(), 2, nil, hist, et.SmallQueues), 2000)
		})
	}
}

// BurstPastBound (internal/enginetest) through pub/sub: the engine drops
// messages past BurstBytes and passes the hub a loss.
func TestPubSubBurstPastBound(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	et.BurstPastBound(t, newNodes(t, s.URL(), 2, &redisengine.Options{BurstBytes: 64 << 10}, nil,
		func(o *wshub.Options) { o.Limits.WriteTimeout = 2 * time.Second }))
}
