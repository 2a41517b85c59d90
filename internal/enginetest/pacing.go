package enginetest

// Pacing: a hub delivers what comes from other hubs at its members' pace.

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// Reader is a client in room r that reads everything until the sentinel
// publisher's message: room messages, and the answers to its publishes.
type Reader struct {
	p     *Peer
	Got   []Payload
	acked map[string]bool // publish id → acknowledged (false: an error frame)
	err   error
	done  chan struct{}

	mu      sync.Mutex
	ended   bool // read returned; err says why
	answers int
	answer  *sync.Cond
}

// StartReader joins a reader to room r of n.
func StartReader(t *testing.T, n *Node) *Reader {
	m := &Reader{p: Dial(t, n), acked: make(map[string]bool), done: make(chan struct{})}
	m.answer = sync.NewCond(&m.mu)
	m.p.Join("r")
	go m.Read()
	return m
}

// Read reads until the connection ends, noting what comes.
func (m *Reader) Read() {
	var err error
	defer func() {
		m.mu.Lock()
		m.err, m.ended = err, true
		m.answer.Broadcast()
		m.mu.Unlock()
		close(m.done)
	}()
	for {
		var w Msg
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
			var d Payload
			if err = json.Unmarshal(w.Data, &d); err != nil {
				return
			}
			if d.Pub == "sentinel" {
				return
			}
			m.Got = append(m.Got, d)
		default:
			err = fmt.Errorf("unexpected %+v", w)
			return
		}
	}
}

// AwaitAnswers waits until n publishes were answered, or the reader
// ended.
func (m *Reader) AwaitAnswers(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for m.answers < n && !m.ended {
		m.answer.Wait()
	}
}

// PublishEvery publishes Payload{Pub: pub, Seq: seq} to r from m every interval
// until stop closes, and returns how many it sent.
func (m *Reader) PublishEvery(pub string, interval time.Duration, stop <-chan struct{}) int {
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

// EndReaders publishes the sentinel on n and waits for every reader to get
// it.
func EndReaders(t *testing.T, n *Node, readers []*Reader) {
	t.Helper()
	if err := Broadcast(Ctx(t), n, "r", "sentinel", 0); err != nil {
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

// CheckAcked fails unless every reader got the same messages in the
// same order, without duplicates, including every acknowledged publish.
func CheckAcked(t *testing.T, members []*Reader, pubs map[string]*Reader) {
	t.Helper()
	want := members[0].Got
	seen := make(map[Payload]bool)
	for _, d := range want {
		if seen[d] {
			t.Fatalf("reader 0 got %+v twice", d)
		}
		seen[d] = true
	}
	for pub, m := range pubs {
		for id, ok := range m.acked {
			seq, _ := strconv.Atoi(id)
			if ok && !seen[Payload{Pub: pub, Seq: seq}] {
				t.Fatalf("acknowledged publish %s %d reached nobody", pub, seq)
			}
		}
	}
	for i, m := range members[1:] {
		if !slices.Equal(m.Got, want) {
			t.Fatalf("reader %d got %d messages, reader 0 %d: not one order", i+1, len(m.Got), len(want))
		}
	}
}

// PacedPolicies are the rooms' history policies that PacedAfterBusHang
// needs.
var PacedPolicies = Policies(map[string]wshub.HistoryPolicy{"r": {Messages: 100000}})

// SmallQueues makes members' queues small (a quarter of a batch of the
// engines' follows), so that a burst the hub did not pace would overflow
// them; a publisher's 32 pipelined publishes still fit.
func SmallQueues(o *wshub.Options) { o.Limits.SendQueue = 64 }

// PacedAfterBusHang: two hubs made with PacedPolicies and SmallQueues,
// both reaching the bus through px, 100 members, a client publishing
// 100/s on each hub; the bus takes nothing for hang (px holds what the
// hubs send), then all of it at once. The catch-up reaches each hub as a
// burst, which the hubs deliver at their members' pace: no reader is
// closed, and every reader gets every acknowledged publish once, in one
// order.
func PacedAfterBusHang(t *testing.T, nodes []*Node, px *Proxy, hang time.Duration) {

	var members []*Reader
	for i := range 100 {
		members = append(members, StartReader(t, nodes[i%2]))
	}
	pubs := map[string]*Reader{"a": members[0], "b": members[1]}
	stop := make(chan struct{})
	sent := make(map[string]int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for pub, m := range pubs {
		wg.Go(func() {
			n := m.PublishEvery(pub, 10*time.Millisecond, stop)
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
		m.AwaitAnswers(sent[pub])
	}
	EndReaders(t, nodes[0], members)
	for i, n := range nodes {
		Equal(t, fmt.Sprintf("hub %d's kicked members", i), n.Hub.Stats().Kicked, 0)
	}
	CheckAcked(t, members, pubs)
	t.Logf("%d messages, %d/%d published", len(members[0].Got), sent["a"], sent["b"])
}

// FloodPacedOnOtherHub: of two hubs made with SmallQueues, one client on
// the first publishes count messages as fast as flow control lets it; the
// members on the second read at a normal pace and none is closed.
func FloodPacedOnOtherHub(t *testing.T, nodes []*Node, count int) {
	var members []*Reader
	for i := range 40 {
		members = append(members, StartReader(t, nodes[i%2]))
	}
	flooder := members[0] // on hub A
	n := count
	for seq := range n {
		flooder.p.Send(`{"type":"publish","room":"r","id":"%d","data":{"pub":"a","seq":%d}}`, seq, seq)
	}
	flooder.AwaitAnswers(n)
	EndReaders(t, nodes[0], members)
	for id, ok := range flooder.acked {
		if !ok {
			t.Fatalf("publish %s refused", id)
		}
	}
	Equal(t, "hub B's kicked members", nodes[1].Hub.Stats().Kicked, 0)
	for i, m := range members {
		CheckSequences(t, fmt.Sprintf("reader %d", i), m.Got, map[string]int{"a": n})
	}
}

// BurstPastBound: of two hubs whose engine holds at most 64 KiB of a
// room's burst (BurstBytes) and whose WriteTimeout is 2 s, a member of
// the second stops reading and holds up the room until WriteTimeout
// closes it, while the first broadcasts 32 MiB: the burst past the bound
// is not lost silently, the second hub's other member is closed with
// 1012. It returns that member's join ack.
func BurstPastBound(t *testing.T, nodes []*Node) Msg {
	stalled := Dial(t, nodes[1])
	stalled.Join("r") // and never reads again
	reader := Dial(t, nodes[1])
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
	big := strings.Repeat("x", 8<<10)
	ctx := Ctx(t)
	for i := range 4096 {
		if err := nodes[0].Hub.Room("r").Broadcast(ctx, &wshub.Message{Data: Payload{Pub: big, Seq: i}}); err != nil {
			t.Fatalf("broadcast %d: %v", i, err)
		}
	}
	nodes[0].Hub.Room("r").Broadcast(ctx, &wshub.Message{Data: Payload{Pub: "after"}}) // the burst's end shows it
	Equal(t, "reader's close code", websocket.CloseStatus(<-closed), websocket.StatusServiceRestart)
	return ack
}
