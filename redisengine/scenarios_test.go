package redisengine_test

import (
	"testing"
	"time"

	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// The scenarios of every engine on a bus (internal/enginetest), on Redis.

func TestStreamOneOrderAcrossHubs(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	et.OneOrderAcrossHubs(t, newNodes(t, s.URL(), 3, nil, et.OneOrderPolicies))
}

func TestStreamRecoveryOnAnotherHub(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	et.RecoveryOnAnotherHub(t, newNodes(t, s.URL(), 2, nil, et.RecoveryPolicies))
}

func TestStreamGapClosesMembers(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	px := et.StartProxy(t, s.Addr())
	a := newNodes(t, s.URL(), 1, nil, et.GapPolicies)[0]
	b := newNodes(t, "redis://"+px.Addr(), 1, nil, et.GapPolicies)[0]
	et.GapClosesMembers(t, a, b, px)
}

func TestPubSubRoomSpansHubs(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	nodes := newNodes(t, s.URL(), 4, nil, nil)
	if redisengine.Sharded(engine(nodes[0])) {
		t.Fatal("the engine took a single server for a cluster")
	}
	et.RoomSpansHubs(t, nodes[:3], nodes[3])
}

func TestPresenceAcrossHubs(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	et.PresenceAcrossHubs(t, presenceNodes(t, nil, s.URL(), s.URL(), s.URL()))
}

func TestPresenceHubCutOff(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	px := et.StartProxy(t, s.Addr())
	opts := &redisengine.Options{PresenceTTL: 3 * time.Second}
	et.PresenceCutOff(t, presenceNodes(t, opts, s.URL(), s.URL(), "redis://"+px.Addr()), px, opts.PresenceTTL)
}

func TestPresenceShutdownWithdraws(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	et.PresenceShutdownWithdraws(t, presenceNodes(t, &redisengine.Options{PresenceTTL: time.Hour}, s.URL(), s.URL()))
}

func TestDisconnectUserAcrossHubs(t *testing.T) {
	t.Parallel()
	s := et.StartRedis(t)
	et.DisconnectUserAcrossHubs(t, newNodes(t, s.URL(), 3, nil, nil, et.UserOptions))
}
