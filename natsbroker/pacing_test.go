package natsbroker_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// soak returns full when the long soaks run (WSHUB_SOAK=1, as .ci/run
// sets), else short.
func soak[T any](short, full T) T {
	if os.Getenv("WSHUB_SOAK") != "" {
		return full
	}
	return short
}

// TestLogPacedAfterBusHang: two hubs on the room log, 100 members, a
// client publishing 100/s on each hub; NATS takes nothing for a while (a
// SIGSTOP, here a proxy that holds what the hubs send), then all of it at
// once. The log's catch-up reaches each hub as a burst, which the hubs
// deliver at their members' pace: no reader is closed, and every reader
// gets every acknowledged publish once, in one order.
func TestLogPacedAfterBusHang(t *testing.T) {
	for run := range soak(1, 10) {
		t.Run(fmt.Sprint(run), func(t *testing.T) { logBusHang(t, soak(2*time.Second, 7*time.Second)) })
	}
}

func logBusHang(t *testing.T, hang time.Duration) {
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	px := et.StartProxy(t, s.Addr().String())
	nodes := startNodes(t, "nats://"+px.Addr(), 2, nil, et.PacedPolicies, true, et.SmallQueues)
	et.PacedAfterBusHang(t, hubs(nodes), px, hang)
}

// TestFloodPacedOnOtherHub: one client on hub A publishes as fast as flow
// control lets it; the members on hub B read at a normal pace and none is
// closed, on core NATS as on the room log.
func TestFloodPacedOnOtherHub(t *testing.T) {
	for _, useLog := range []bool{false, true} {
		t.Run(map[bool]string{false: "core", true: "log"}[useLog], func(t *testing.T) {
			s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
			var hist func(string) wshub.HistoryPolicy
			if useLog {
				hist = et.PacedPolicies
			}
			nodes := startNodes(t, s.ClientURL(), 2, nil, hist, useLog, et.SmallQueues)
			et.FloodPacedOnOtherHub(t, hubs(nodes), soak(2000, 10000))
		})
	}
}

// TestCoreBurstPastBound: on core NATS, a burst from another hub past
// Options.BurstBytes, held while a stalled member holds up the room until
// WriteTimeout closes it, is not lost silently: NATS drops messages for
// the hub, and the hub closes the room's other members with 1012; in a
// room with history, they learn on rejoining that they could not recover.
func TestCoreBurstPastBound(t *testing.T) {
	for _, history := range []bool{false, true} {
		t.Run(map[bool]string{false: "no history", true: "history"}[history], func(t *testing.T) {
			s := startNATS(t, server.RANDOM_PORT)
			var hist func(string) wshub.HistoryPolicy
			if history {
				hist = et.Policies(map[string]wshub.HistoryPolicy{"r": {Messages: 10}})
			}
			nodes := startNodes(t, s.ClientURL(), 2, &natsbroker.Options{BurstBytes: 64 << 10}, hist, false,
				func(o *wshub.Options) { o.Limits.WriteTimeout = 2 * time.Second })
			ack := et.BurstPastBound(t, hubs(nodes))
			if !history {
				return
			}
			// The burst's tail may still be dropped: a rejoin may then be
			// closed with 1012 again, and rejoins again, as a client does.
			for attempt := 0; ; attempt++ {
				again := dial(t, nodes[1])
				again.Send(`{"type":"join","room":"r","id":"join","epoch":%q,"since":%d}`, ack.Epoch, ack.Seq)
				m, err := again.Next()
				for err == nil && m.Type == "message" {
					m, err = again.Next()
				}
				if code := websocket.CloseStatus(err); code == websocket.StatusServiceRestart && attempt < 10 {
					continue
				}
				if err != nil || m.Type != "ack" || m.Recovered == nil || *m.Recovered {
					t.Fatalf("rejoin after the loss: %+v, %v; want an ack with recovered:false", m, err)
				}
				break
			}
		})
	}
}

// TestStalledMemberDoesNotHoldRoom: a member that stops reading holds up
// the deliveries from other hubs for a second at most, however long
// WriteTimeout: then it is on its own, its queue overflows and it is
// closed alone, while the room's other members get everything.
func TestStalledMemberDoesNotHoldRoom(t *testing.T) {
	s := startNATS(t, server.RANDOM_PORT)
	nodes := startNodes(t, s.ClientURL(), 2, &natsbroker.Options{BurstBytes: 256 << 20}, nil, false,
		func(o *wshub.Options) { o.Limits.WriteTimeout = time.Hour })
	stalled := dial(t, nodes[1])
	stalled.Join("r") // and never reads again
	r := et.StartReader(t, nodes[1].Node)
	// 16 MiB from hub A: more than the stalled member's socket and queue
	// take.
	big := strings.Repeat("x", 8<<10)
	ctx := et.Ctx(t)
	const n = 2048
	for i := range n {
		if err := nodes[0].Hub.Room("r").Broadcast(ctx, &wshub.Message{Data: et.Payload{Pub: big, Seq: i}}); err != nil {
			t.Fatalf("broadcast %d: %v", i, err)
		}
	}
	et.EndReaders(t, nodes[0].Node, []*et.Reader{r})
	et.Equal(t, "messages the reader got", len(r.Got), n)
	et.Equal(t, "hub B's kicked members", nodes[1].Hub.Stats().Kicked, 1)
}
