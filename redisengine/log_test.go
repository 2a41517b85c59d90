package redisengine_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// logged is a room message as a member got it, with its seq.
type logged struct {
	payload
	seq uint64
}

// collectLog reads room messages until one from publisher sentinel and
// returns the ones before it, with their seqs; acks go to acks by ID.
func (p *peer) collectLog(sentinel string, acks chan<- string) ([]logged, error) {
	var got []logged
	for range 100000 {
		m, err := p.next()
		if err != nil {
			return got, err
		}
		switch m.Type {
		case "ack":
			if acks == nil {
				return got, fmt.Errorf("unexpected %+v", m)
			}
			acks <- m.ID
			continue
		case "message":
		default:
			return got, fmt.Errorf("got %+v, want a room message", m)
		}
		var d payload
		if err := json.Unmarshal(m.Data, &d); err != nil {
			return got, fmt.Errorf("decode %s: %w", m.Data, err)
		}
		if d.Pub == sentinel {
			return got, nil
		}
		got = append(got, logged{d, m.Seq})
	}
	return got, errors.New("no sentinel after 100000 messages")
}

// joinAck joins room with the extra join fields in extra (JSON members,
// or ""), and returns the replayed messages and the ack.
func (p *peer) joinAck(room, extra string) ([]logged, wireMsg) {
	p.t.Helper()
	if extra != "" {
		extra = "," + extra
	}
	p.send(`{"type":"join","room":%s,"id":"join"%s}`, jsonString(room), extra)
	var got []logged
	for {
		m := p.read()
		switch {
		case m.Type == "ack" && m.ID == "join":
			return got, m
		case m.Type == "message":
			got = append(got, logged{data(p.t, m), m.Seq})
		default:
			p.t.Fatalf("join %q: got %+v", room, m)
		}
	}
}

// checkOneOrder fails unless every member's messages are the same, in the
// same order, with increasing seqs.
func checkOneOrder(t *testing.T, room string, lists [][]logged) {
	t.Helper()
	for i, l := range lists {
		for j := 1; j < len(l); j++ {
			if l[j].seq <= l[j-1].seq {
				t.Fatalf("room %s, member %d: seq %d after %d", room, i, l[j].seq, l[j-1].seq)
			}
		}
		if !slices.Equal(l, lists[0]) {
			t.Fatalf("room %s: member %d got another order than member 0:\n%v\n%v", room, i, l, lists[0])
		}
	}
}

// Three hubs with an engine, two history rooms with members on every hub, and
// publishers on every hub (clients and Room.Broadcast): every member of a
// room gets the same messages in the same order, with increasing seqs, and
// every acknowledged publish once.
func TestStreamOneOrderAcrossHubs(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	rooms := []string{"a", "b"}
	hist := policies(map[string]wshub.HistoryPolicy{"a": {Messages: 1000}, "b": {Messages: 500, MaxAge: time.Minute}})
	nodes := newNodes(t, s.url(), 3, nil, hist)
	ctx := testCtx(t)
	const perPub = 20

	type member struct {
		p    *peer
		room string
		got  []logged
		err  error
	}
	var members []*member
	for _, n := range nodes {
		for _, room := range rooms {
			for range 2 {
				p := dial(t, n)
				p.join(room)
				members = append(members, &member{p: p, room: room})
			}
		}
	}
	acks := make(chan string, len(members)*perPub)
	var readers sync.WaitGroup
	for _, m := range members {
		readers.Go(func() { m.got, m.err = m.p.collectLog("sentinel", acks) })
	}

	want := map[string]map[string]int{"a": {}, "b": {}}
	var pubs sync.WaitGroup
	errs := make(chan error, len(nodes)*len(rooms))
	clientPubs := 0
	for i, n := range nodes {
		for j, room := range rooms {
			client, srv := fmt.Sprintf("client%d", i), fmt.Sprintf("server%d", i)
			want[room][client], want[room][srv] = perPub, perPub
			pub := members[i*2*len(rooms)+2*j].p
			for seq := range perPub {
				pub.send(`{"type":"publish","room":%q,"id":"%s-%d","data":{"pub":%q,"seq":%d}}`, room, client, seq, client, seq)
			}
			clientPubs += perPub
			pubs.Go(func() {
				if err := broadcastSeqs(ctx, n, room, srv, perPub); err != nil {
					errs <- err
				}
			})
		}
	}
	pubs.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Room.Broadcast: %v", err)
	}
	for range clientPubs {
		select {
		case <-acks:
		case <-ctx.Done():
			t.Fatal("client publishes not acknowledged")
		}
	}
	// Everything acknowledged is in the logs, before the sentinels.
	for _, room := range rooms {
		if err := broadcast(ctx, nodes[0], room, "sentinel", 0); err != nil {
			t.Fatalf("sentinel: %v", err)
		}
	}
	readers.Wait()
	byRoom := map[string][][]logged{}
	for i, m := range members {
		if m.err != nil {
			t.Fatalf("member %d: %v", i, m.err)
		}
		var ps []payload
		for _, l := range m.got {
			ps = append(ps, l.payload)
		}
		checkSequences(t, fmt.Sprintf("member %d (room %s)", i, m.room), ps, want[m.room])
		byRoom[m.room] = append(byRoom[m.room], m.got)
	}
	for room, lists := range byRoom {
		checkOneOrder(t, room, lists)
	}
}

// A client that leaves one hub recovers on another what it missed, once
// each, when the log still has it, and is told it could not otherwise.
func TestStreamRecoveryOnAnotherHub(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	hist := policies(map[string]wshub.HistoryPolicy{"big": {Messages: 100}, "small": {Messages: 5}})
	nodes := newNodes(t, s.url(), 2, nil, hist)
	ctx := testCtx(t)

	for _, tc := range []struct {
		room      string
		missed    int
		recovered bool
	}{{"big", 20, true}, {"small", 8, false}} {
		a := dial(t, nodes[0])
		_, ack := a.joinAck(tc.room, "")
		epoch := ack.Epoch
		if epoch == "" {
			t.Fatalf("%s: join ack without an epoch: %+v", tc.room, ack)
		}
		for seq := range 3 {
			if err := broadcast(ctx, nodes[1], tc.room, "seen", seq); err != nil {
				t.Fatal(err)
			}
		}
		var since uint64
		for range 3 {
			m := a.read()
			equal(t, tc.room+": seen message", data(t, m).Pub, "seen")
			since = m.Seq
		}
		a.conn.Close(websocket.StatusNormalClosure, "")

		for seq := range tc.missed {
			if err := broadcast(ctx, nodes[0], tc.room, "missed", seq); err != nil {
				t.Fatal(err)
			}
		}
		b := dial(t, nodes[1])
		replay, ack := b.joinAck(tc.room, fmt.Sprintf(`"since":%d,"epoch":%q`, since, epoch))
		if ack.Recovered == nil || *ack.Recovered != tc.recovered {
			t.Fatalf("%s: recovered %v, want %v (ack %+v)", tc.room, ack.Recovered, tc.recovered, ack)
		}
		equal(t, tc.room+": epoch after recovery", ack.Epoch, epoch)
		if !tc.recovered {
			equal(t, tc.room+": messages replayed without recovery", len(replay), 0)
			continue
		}
		var ps []payload
		for i, l := range replay {
			ps = append(ps, l.payload)
			if l.seq <= since || i > 0 && l.seq <= replay[i-1].seq {
				t.Fatalf("%s: replayed seq %d after %d (since %d)", tc.room, l.seq, replay[max(i-1, 0)].seq, since)
			}
		}
		checkSequences(t, tc.room+": replay", ps, map[string]int{"missed": tc.missed})
		// Live messages follow, none twice.
		if err := broadcast(ctx, nodes[0], tc.room, "live", 0); err != nil {
			t.Fatal(err)
		}
		m := b.read()
		equal(t, tc.room+": live message", data(t, m).Pub, "live")
		if m.Seq <= replay[len(replay)-1].seq {
			t.Fatalf("%s: live seq %d not after the replay's %d", tc.room, m.Seq, replay[len(replay)-1].seq)
		}
	}
}

// A hub that was cut off from Redis while the log dropped messages it had
// not delivered closes the room's members with 1012, and they recover
// what the log still has.
func TestStreamGapClosesMembers(t *testing.T) {
	t.Parallel()
	s := startRedis(t, false)
	px := startProxy(t, s.addr())
	hist := policies(map[string]wshub.HistoryPolicy{"small": {Messages: 5}})
	a := newNodes(t, s.url(), 1, nil, hist)[0]
	b := newNodes(t, px.url(), 1, nil, hist)[0]
	ctx := testCtx(t)

	m := dial(t, b)
	_, ack := m.joinAck("small", "")
	if err := broadcast(ctx, a, "small", "before", 0); err != nil {
		t.Fatal(err)
	}
	first := m.read()
	equal(t, "message before the outage", data(t, first).Pub, "before")

	px.cut()
	for seq := range 12 {
		if err := broadcast(ctx, a, "small", "during", seq); err != nil {
			t.Fatal(err)
		}
	}
	px.open()
	_, _, err := m.conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member of hub B: %v (status %d), want a close with 1012", err, got)
	}

	// It rejoins with what it had: the log lost messages after it.
	again := dial(t, b)
	replay, ack2 := again.joinAck("small", fmt.Sprintf(`"since":%d,"epoch":%q,"history":5`, first.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered {
		t.Fatalf("rejoin: recovered %v, want false", ack2.Recovered)
	}
	var ps []payload
	for _, l := range replay {
		ps = append(ps, l.payload)
	}
	want := []payload{{"during", 7}, {"during", 8}, {"during", 9}, {"during", 10}, {"during", 11}}
	if !slices.Equal(ps, want) {
		t.Fatalf("history after the gap: %v, want %v", ps, want)
	}
}
