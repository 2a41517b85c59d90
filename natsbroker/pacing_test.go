package natsbroker_test

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// smallQueues makes members' queues small (a quarter of a pull of the
// log's follow), so that a burst the hub did not pace would overflow them;
// a publisher's 32 pipelined publishes still fit.
func smallQueues(o *wshub.Options) { o.Limits.SendQueue = 64 }

// reader is a client in room r that reads everything until the sentinel
// publisher's message: room messages, and the answers to its publishes.
type reader struct {
	p     *et.Peer
	got   []et.Payload
	acked map[string]bool // publish id → acknowledged (false: an error frame)
	err   error
	done  chan struct{}

	mu      sync.Mutex
	ended   bool // read returned; err says why
	answers int
	answer  *sync.Cond
}

func startReader(t *testing.T, n *node) *reader {
	m := &reader{p: dial(t, n), acked: make(map[string]bool), done: make(chan struct{})}
	m.answer = sync.NewCond(&m.mu)
	m.p.Join("r")
	go m.Read()
	return m
}

// Read reads until the connection ends, noting what comes.
func (m *reader) Read() {
	var err error
	defer func() {
		m.mu.Lock()
		m.err, m.ended = err, true
		m.answer.Broadcast()
		m.mu.Unlock()
		close(m.done)
	}()
	for {
		var w et.Msg
		if w, err = m.p.Next(); err != nil {
			return
		}
		switch w.Type {
		case "ack", "error":
			m.mu.Lock()
			m.acked[w.ID] = w.Type == "ack"
			m.answers++
			m.answer.Broadcast()
			m.mu.Unlock()
		case "message":
			var d et.Payload
			if err = json.Unmarshal(w.Data, &d); err != nil {
				return
			}
			if d.Pub == "sentinel" {
				return
			}
			m.got = append(m.got, d)
		default:
			err = fmt.Errorf("unexpected %+v", w)
			return
		}
	}
}

// awaitAnswers waits until n publishes were answered, or the reader
// ended.
func (m *reader) awaitAnswers(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.answers < n && !m.ended {
		m.answer.Wait()
	}
}

// publishEvery publishes et.Payload{Pub: pub, Seq: seq} to r from m every interval
// until stop closes, and returns how many it sent.
func (m *reader) publishEvery(pub string, interval time.Duration, stop <-chan struct{}) int {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			return seq
		case <-tick.C:
		}
		frame := fmt.Sprintf(`{"type":"publish","room":"r","id":"%d","data":{"pub":%q,"seq":%d}}`, seq, pub, seq)
		if err := m.p.Conn.Write(m.p.Ctx, websocket.MessageText, []byte(frame)); err != nil {
			return seq // the reader reports why
		}
	}
}

// endReaders publishes the sentinel on n and waits for every reader to get
// it.
func endReaders(t *testing.T, n *node, readers []*reader) {
	t.Helper()
	if err := broadcast(et.Ctx(t), n, "r", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	for i, m := range readers {
		select {
		case <-m.done:
		case <-time.After(time.Minute):
			t.Fatalf("reader %d: no sentinel within a minute", i)
		}
		if m.err != nil {
			t.Fatalf("reader %d: %v", i, m.err)
		}
	}
}

// checkAcked fails unless every reader got the same messages in the
// same order, without duplicates, including every acknowledged publish.
func checkAcked(t *testing.T, members []*reader, pubs map[string]*reader) {
	t.Helper()
	want := members[0].got
	seen := make(map[et.Payload]bool)
	for _, d := range want {
		if seen[d] {
			t.Fatalf("reader 0 got %+v twice", d)
		}
		seen[d] = true
	}
	for pub, m := range pubs {
		for id, ok := range m.acked {
			seq, _ := strconv.Atoi(id)
			if ok && !seen[et.Payload{Pub: pub, Seq: seq}] {
				t.Fatalf("acknowledged publish %s %d reached nobody", pub, seq)
			}
		}
	}
	for i, m := range members[1:] {
		if !slices.Equal(m.got, want) {
			t.Fatalf("reader %d got %d messages, reader 0 %d: not one order", i+1, len(m.got), len(want))
		}
	}
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
	hist := et.Policies(map[string]wshub.HistoryPolicy{"r": {Messages: 100000}})
	nodes := startNodes(t, "nats://"+px.Addr(), 2, nil, hist, true, smallQueues)

	var members []*reader
	for i := range 100 {
		members = append(members, startReader(t, nodes[i%2]))
	}
	pubs := map[string]*reader{"a": members[0], "b": members[1]}
	stop := make(chan struct{})
	sent := make(map[string]int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for pub, m := range pubs {
		wg.Go(func() {
			n := m.publishEvery(pub, 10*time.Millisecond, stop)
			mu.Lock()
			sent[pub] = n
			mu.Unlock()
		})
	}
	time.Sleep(time.Second) // traffic before the hang
	px.Hold()
	time.Sleep(hang)
	px.Release()
	time.Sleep(time.Second) // and after
	close(stop)
	wg.Wait()
	for pub, m := range pubs {
		m.awaitAnswers(sent[pub])
	}
	endReaders(t, nodes[0], members)
	for i, n := range nodes {
		et.Equal(t, fmt.Sprintf("hub %d's kicked members", i), n.Hub.Stats().Kicked, 0)
	}
	checkAcked(t, members, pubs)
	t.Logf("%d messages, %d/%d published", len(members[0].got), sent["a"], sent["b"])
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
				hist = et.Policies(map[string]wshub.HistoryPolicy{"r": {Messages: 100000}})
			}
			nodes := startNodes(t, s.ClientURL(), 2, nil, hist, useLog, smallQueues)
			var members []*reader
			for i := range 40 {
				members = append(members, startReader(t, nodes[i%2]))
			}
			flooder := members[0] // on hub A
			n := soak(2000, 10000)
			for seq := range n {
				flooder.p.Send(`{"type":"publish","room":"r","id":"%d","data":{"pub":"a","seq":%d}}`, seq, seq)
			}
			flooder.awaitAnswers(n)
			endReaders(t, nodes[0], members)
			for id, ok := range flooder.acked {
				if !ok {
					t.Fatalf("publish %s refused", id)
				}
			}
			et.Equal(t, "hub B's kicked members", nodes[1].Hub.Stats().Kicked, 0)
			for i, m := range members {
				et.CheckSequences(t, fmt.Sprintf("reader %d", i), m.got, map[string]int{"a": n})
			}
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
			stalled := dial(t, nodes[1])
			stalled.Join("r") // and never reads again
			reader := dial(t, nodes[1])
			_, ack := reader.JoinAck("r", "")
			closed := make(chan error, 1)
			go func() {
				for {
					if _, err := reader.Next(); err != nil {
						closed <- err
						return
					}
				}
			}()
			// 32 MiB from hub A, more than the stalled member's socket and
			// queue take, and far more than BurstBytes.
			big := strings.Repeat("x", 8<<10)
			ctx := et.Ctx(t)
			for i := range 4096 {
				if err := nodes[0].Hub.Room("r").Broadcast(ctx, &wshub.Message{Data: et.Payload{Pub: big, Seq: i}}); err != nil {
					t.Fatalf("broadcast %d: %v", i, err)
				}
			}
			nodes[0].Hub.Room("r").Broadcast(ctx, &wshub.Message{Data: et.Payload{Pub: "after"}}) // the burst's end shows it
			err := <-closed
			et.Equal(t, "reader's close code", websocket.CloseStatus(err), websocket.StatusServiceRestart)
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
	r := startReader(t, nodes[1])
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
	endReaders(t, nodes[0], []*reader{r})
	et.Equal(t, "messages the reader got", len(r.got), n)
	et.Equal(t, "hub B's kicked members", nodes[1].Hub.Stats().Kicked, 1)
}
