package natsbroker_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// The NATS server goes away in the middle of traffic and comes back on
// the same port. Each publish attempted meanwhile, by a client or by
// Room.Broadcast, either fails visibly or is delivered everywhere; nats.go
// reconnects, re-creates the subscriptions, and traffic resumes.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	port := natsPort(s)
	nodes := newNodes(t, s.ClientURL(), 3, nil)
	last := newNodes(t, s.ClientURL(), 1, nil)[0] // publishes the sentinel, see TestRoomSpansHubs
	ctx := et.Ctx(t)
	subject, subject2 := nodes[0].broker.Subject("r"), nodes[0].broker.Subject("late")

	readers := make([]*et.Peer, len(nodes))
	for i, n := range nodes {
		readers[i] = dial(t, n)
		readers[i].Join("r")
	}
	pub := dial(t, nodes[1]) // a client publisher, also a member
	pub.Join("r")

	if err := broadcast(ctx, nodes[0], "r", "before", 0); err != nil {
		t.Fatalf("broadcast before the outage: %v", err)
	}
	type result struct {
		got []et.Payload
		err error
	}
	results := make([]result, len(readers))
	var reading sync.WaitGroup
	for i, r := range readers {
		reading.Go(func() {
			got, err := r.Collect("sentinel", nil)
			results[i] = result{got, err}
		})
	}

	// Room.Broadcast runs into the shutdown. A call that raced with it may
	// be lost even though the server confirmed it (the server may go before
	// it writes the message to the other hubs: at most once), so only the
	// calls made once the server is down are checked: each fails or is
	// delivered.
	const maxAttempts, wantFailures = 5000, 5
	var okServer []int // succeeded while the server was down
	var raced, serverErr error
	var down atomic.Bool
	started := make(chan struct{})
	var publishing sync.WaitGroup
	publishing.Go(func() {
		failures := 0
		for seq := 0; seq < maxAttempts && failures < wantFailures; seq++ {
			wasDown := down.Load()
			err := broadcast(ctx, nodes[0], "r", "down-server", seq)
			switch {
			case err != nil && !errors.Is(err, wshub.ErrEngine):
				serverErr = err
				return
			case err != nil && wasDown:
				failures++
			case err == nil && wasDown:
				okServer = append(okServer, seq)
			case err != nil:
				raced = err
			}
			if seq == 0 {
				close(started)
			}
		}
	})
	<-started
	s.Shutdown()
	s.WaitForShutdown()
	down.Store(true)
	publishing.Wait()
	if serverErr != nil {
		t.Fatalf("Room.Broadcast during the outage: %v, want ErrEngine", serverErr)
	}
	t.Logf("a Room.Broadcast racing the shutdown failed with: %v", raced)
	if err := broadcast(ctx, nodes[0], "r", "down-server", maxAttempts); !errors.Is(err, natsbroker.ErrNotConnected) {
		t.Fatalf("Room.Broadcast while NATS is down: %v, want ErrNotConnected", err)
	}

	// A client publishes while the server is down.
	const clientAttempts = 5
	var okClient []int
	for seq := range clientAttempts {
		if pubDuringOutage(t, pub, seq) {
			okClient = append(okClient, seq)
		}
	}
	// A client joins a new room while NATS is down: the join succeeds at
	// once, and the room works once NATS is back.
	late := dial(t, nodes[2])
	late.Join("late")

	t.Logf("while NATS was down: %d server publishes succeeded, %d failed; %d of %d client publishes succeeded",
		len(okServer), wantFailures, len(okClient), clientAttempts)

	if n := nodes[0].Hub.Stats().EngineErrors; n < wantFailures {
		t.Errorf("hub 0's Stats.EngineErrors = %d after %d failed broadcasts", n, wantFailures)
	}
	s2 := startNATS(t, port)
	for i, n := range nodes {
		et.Eventually(t, fmt.Sprintf("hub %d to reconnect", i), n.nc.IsConnected)
		if r := n.Hub.Stats().EngineReconnects; r < 1 {
			t.Errorf("hub %d's Stats.EngineReconnects = %d after a reconnection", i, r)
		}
	}
	// nats.go re-sends the subscriptions on reconnect; the new server has
	// one per hub.
	et.Eventually(t, "subscriptions on the new server", func() bool {
		return s2.GlobalAccount().Interest(subject) == len(nodes) && s2.GlobalAccount().Interest(subject2) == 1
	})

	et.Equal(t, "subscriptions of the room joined during the outage", s2.GlobalAccount().Interest(subject2), 1)
	if err := broadcast(ctx, nodes[0], "late", "late", 0); err != nil {
		t.Fatalf("broadcast to the room joined during the outage: %v", err)
	}
	et.Equal(t, "message in the room joined during the outage", et.Data(t, late.Read()).Pub, "late")

	want := map[string]int{"before": 1, "after": 3}
	for seq := range want["after"] {
		if err := broadcast(ctx, nodes[2], "r", "after", seq); err != nil {
			t.Fatalf("broadcast after the restart: %v", err)
		}
	}
	et.Eventually(t, "the sentinel's hub to reconnect", last.nc.IsConnected)
	if err := broadcast(ctx, last, "r", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	reading.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("reader %d: %v", i, r.err)
		}
		got := r.got
		// A publish that returned nil during the outage was delivered:
		// keep those, and check them and the rest as sequences.
		delivered := map[string]map[int]bool{"down-server": {}, "down-client": {}}
		var rest []et.Payload
		for _, d := range got {
			if m, ok := delivered[d.Pub]; ok {
				m[d.Seq] = true
				continue
			}
			rest = append(rest, d)
		}
		for _, seq := range okServer {
			if !delivered["down-server"][seq] {
				t.Fatalf("reader %d: Room.Broadcast %d succeeded during the outage but was not delivered", i, seq)
			}
		}
		for _, seq := range okClient {
			if !delivered["down-client"][seq] {
				t.Fatalf("reader %d: client publish %d was acknowledged during the outage but not delivered", i, seq)
			}
		}
		et.CheckSequences(t, fmt.Sprintf("reader %d", i), rest, want)
	}
}

// pubDuringOutage publishes seq from p and reports whether the hub
// acknowledged it; an error frame must be an engine error.
func pubDuringOutage(t *testing.T, p *et.Peer, seq int) bool {
	t.Helper()
	id := fmt.Sprint(seq)
	p.Send(`{"type":"publish","room":"r","id":%q,"data":{"pub":"down-client","seq":%d}}`, id, seq)
	for range 100 {
		m := p.Read()
		switch {
		case m.Type == "ack" && m.ID == id:
			return true
		case m.Type == "error" && m.ID == id:
			if !strings.Contains(m.Error, et.ErrEngineText) {
				t.Fatalf("publish %d: error %q, want %q", seq, m.Error, et.ErrEngineText)
			}
			return false
		case m.Type == "message":
			// its own publish, or one from before the outage
		default:
			t.Fatalf("publish %d: got %+v", seq, m)
		}
	}
	t.Fatalf("publish %d: no answer", seq)
	return false
}
