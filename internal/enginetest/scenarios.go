package enginetest

// The scenarios that every engine on a bus must pass, each on hubs that
// the engine's own test makes (Serve) with the options each names.

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// OneOrderPolicies are the rooms' history policies that OneOrderAcrossHubs
// needs.
var OneOrderPolicies = Policies(map[string]wshub.HistoryPolicy{"a": {Messages: 1000}, "b": {Messages: 500, MaxAge: time.Minute}})

// OneOrderAcrossHubs: three hubs, made with OneOrderPolicies, with two
// history rooms with members on every hub, and
// publishers on every hub (clients and Room.Broadcast): every member of a
// room gets the same messages in the same order, with increasing seqs, and
// every acknowledged publish once.
func OneOrderAcrossHubs(t *testing.T, nodes []*Node) {
	rooms := []string{"a", "b"}
	ctx := Ctx(t)
	const perPub = 20

	type reader struct {
		p    *Peer
		room string
		got  []Logged
		err  error
	}
	var members []*reader
	for _, n := range nodes {
		for _, room := range rooms {
			for range 2 {
				p := Dial(t, n)
				p.Join(room)
				members = append(members, &reader{p: p, room: room})
			}
		}
	}
	acks := make(chan string, len(members)*perPub)
	var readers sync.WaitGroup
	for _, m := range members {
		readers.Go(func() { m.got, m.err = m.p.CollectLog("sentinel", acks) })
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
				pub.Send(`{"type":"publish","room":%q,"id":"%s-%d","data":{"pub":%q,"seq":%d}}`, room, client, seq, client, seq)
			}
			clientPubs += perPub
			pubs.Go(func() {
				if err := BroadcastSeqs(ctx, n, room, srv, perPub); err != nil {
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
		if err := Broadcast(ctx, nodes[0], room, "sentinel", 0); err != nil {
			t.Fatalf("sentinel: %v", err)
		}
	}
	readers.Wait()
	byRoom := map[string][][]Logged{}
	for i, m := range members {
		if m.err != nil {
			t.Fatalf("member %d: %v", i, m.err)
		}
		var ps []Payload
		for _, l := range m.got {
			ps = append(ps, l.Payload)
		}
		CheckSequences(t, fmt.Sprintf("member %d (room %s)", i, m.room), ps, want[m.room])
		byRoom[m.room] = append(byRoom[m.room], m.got)
	}
	for room, lists := range byRoom {
		CheckOneOrder(t, room, lists)
	}
}

// RecoveryPolicies are the rooms' history policies that
// RecoveryOnAnotherHub needs.
var RecoveryPolicies = Policies(map[string]wshub.HistoryPolicy{"big": {Messages: 100}, "small": {Messages: 5}})

// RecoveryOnAnotherHub: on two hubs made with RecoveryPolicies, a client
// that leaves one hub recovers on another what it missed, once
// each, when the log still has it, and is told it could not otherwise.
func RecoveryOnAnotherHub(t *testing.T, nodes []*Node) {
	ctx := Ctx(t)

	for _, tc := range []struct {
		room      string
		missed    int
		recovered bool
	}{{"big", 20, true}, {"small", 8, false}} {
		a := Dial(t, nodes[0])
		_, ack := a.JoinAck(tc.room, "")
		epoch := ack.Epoch
		if epoch == "" {
			t.Fatalf("%s: join ack without an epoch: %+v", tc.room, ack)
		}
		for seq := range 3 {
			if err := Broadcast(ctx, nodes[1], tc.room, "seen", seq); err != nil {
				t.Fatal(err)
			}
		}
		var since uint64
		for range 3 {
			m := a.Read()
			Equal(t, tc.room+": seen message", Data(t, m).Pub, "seen")
			since = m.Seq
		}
		a.Conn.Close(websocket.StatusNormalClosure, "")

		for seq := range tc.missed {
			if err := Broadcast(ctx, nodes[0], tc.room, "missed", seq); err != nil {
				t.Fatal(err)
			}
		}
		b := Dial(t, nodes[1])
		replay, ack := b.JoinAck(tc.room, fmt.Sprintf(`"since":%d,"epoch":%q`, since, epoch))
		if ack.Recovered == nil || *ack.Recovered != tc.recovered {
			t.Fatalf("%s: recovered %v, want %v (ack %+v)", tc.room, ack.Recovered, tc.recovered, ack)
		}
		Equal(t, tc.room+": epoch after recovery", ack.Epoch, epoch)
		if !tc.recovered {
			Equal(t, tc.room+": messages replayed without recovery", len(replay), 0)
			continue
		}
		var ps []Payload
		for i, l := range replay {
			ps = append(ps, l.Payload)
			if l.Seq <= since || i > 0 && l.Seq <= replay[i-1].Seq {
				t.Fatalf("%s: replayed seq %d after %d (since %d)", tc.room, l.Seq, replay[max(i-1, 0)].Seq, since)
			}
		}
		CheckSequences(t, tc.room+": replay", ps, map[string]int{"missed": tc.missed})
		// Live messages follow, none twice.
		if err := Broadcast(ctx, nodes[0], tc.room, "live", 0); err != nil {
			t.Fatal(err)
		}
		m := b.Read()
		Equal(t, tc.room+": live message", Data(t, m).Pub, "live")
		if m.Seq <= replay[len(replay)-1].Seq {
			t.Fatalf("%s: live seq %d not after the replay's %d", tc.room, m.Seq, replay[len(replay)-1].Seq)
		}
	}
}

// GapPolicies are the rooms' history policies that GapClosesMembers needs.
var GapPolicies = Policies(map[string]wshub.HistoryPolicy{"small": {Messages: 5}})

// GapClosesMembers: of two hubs made with GapPolicies, b reaches the bus
// through px. A hub that was cut off from the bus while the history
// dropped messages it had not delivered closes the room's members with
// 1012, and they recover what the history still has.
func GapClosesMembers(t *testing.T, a, b *Node, px *Proxy) {
	ctx := Ctx(t)

	m := Dial(t, b)
	_, ack := m.JoinAck("small", "")
	if err := Broadcast(ctx, a, "small", "before", 0); err != nil {
		t.Fatal(err)
	}
	first := m.Read()
	Equal(t, "message before the outage", Data(t, first).Pub, "before")

	px.Cut()
	for seq := range 12 {
		if err := Broadcast(ctx, a, "small", "during", seq); err != nil {
			t.Fatal(err)
		}
	}
	px.Open()
	_, _, err := m.Conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member of hub B: %v (status %d), want a close with 1012", err, got)
	}

	// It rejoins with what it had: the log lost messages after it.
	again := Dial(t, b)
	replay, ack2 := again.JoinAck("small", fmt.Sprintf(`"since":%d,"epoch":%q,"history":5`, first.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered {
		t.Fatalf("rejoin: recovered %v, want false", ack2.Recovered)
	}
	var ps []Payload
	for _, l := range replay {
		ps = append(ps, l.Payload)
	}
	want := []Payload{{"during", 7}, {"during", 8}, {"during", 9}, {"during", 10}, {"during", 11}}
	if !slices.Equal(ps, want) {
		t.Fatalf("history after the gap: %v, want %v", ps, want)
	}
}

// RoomSpansHubs: a room without history spans three hubs (nodes; last, a
// fourth, only publishes the sentinel), two members and
// two publishers (a client and Room.Broadcast) on each; every member gets
// every publisher's messages once, in each publisher's order.
func RoomSpansHubs(t *testing.T, nodes []*Node, last *Node) {
	ctx := Ctx(t)
	const perPub = 25

	var members []*Peer
	for _, n := range nodes {
		for range 2 {
			p := Dial(t, n)
			p.Join("lobby")
			members = append(members, p)
		}
	}
	type result struct {
		got []Payload
		err error
	}
	results := make([]result, len(members))
	acks := make(chan string, len(members))
	var readers sync.WaitGroup
	for i, p := range members {
		readers.Go(func() {
			got, err := p.Collect("sentinel", acks)
			results[i] = result{got, err}
		})
	}
	want := make(map[string]int)
	var pubs sync.WaitGroup
	errs := make(chan error, len(nodes))
	for i, n := range nodes {
		client, srv := fmt.Sprintf("client%d", i), fmt.Sprintf("server%d", i)
		want[client], want[srv] = perPub, perPub
		pub := members[2*i]
		for seq := range perPub {
			id := ""
			if seq == perPub-1 {
				id = client
			}
			pub.Send(`{"type":"publish","room":"lobby","id":%q,"data":{"pub":%q,"seq":%d}}`, id, client, seq)
		}
		pubs.Go(func() {
			if err := BroadcastSeqs(ctx, n, "lobby", srv, perPub); err != nil {
				errs <- err
			}
		})
	}
	pubs.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Room.Broadcast: %v", err)
	}
	// An ack means the bus took the message, passing it to every
	// hub subscribed: the sentinel, published after, comes after it.
	for range nodes {
		select {
		case <-acks:
		case <-ctx.Done():
			t.Fatal("publishers not acknowledged")
		}
	}
	if err := Broadcast(ctx, last, "lobby", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	readers.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("member %d: %v", i, r.err)
		}
		CheckSequences(t, fmt.Sprintf("member %d (hub %d)", i, i/2), r.got, want)
	}
}

// PresenceAcrossHubs: three hubs with members in one room: every
// member's view converges to the room's members on all hubs, every hub's
// Room.Presence lists them with their connections over all hubs (dave
// has one on two hubs), and members that leave leave every view.
func PresenceAcrossHubs(t *testing.T, nodes []*Node) {
	members := []*Member{
		DialMember(t, nodes[0], "alice"),
		DialMember(t, nodes[1], "bob"),
		DialMember(t, nodes[2], "carol"),
		DialMember(t, nodes[0], "dave"),
		DialMember(t, nodes[1], "dave"),
	}
	for _, m := range members {
		m.Join("p")
	}
	for _, m := range members {
		m.Until("alice", "bob", "carol", "dave")
	}
	for i, n := range nodes {
		Eventually(t, fmt.Sprintf("hub %d's Room.Presence", i), func() bool {
			return PresenceOf(n, "p") == "alice:1 bob:1 carol:1 dave:2"
		})
	}
	members[2].Conn.Close(websocket.StatusNormalClosure, "") // carol
	members[3].Conn.CloseNow()                               // one of dave's two
	for _, m := range []*Member{members[0], members[1], members[4]} {
		m.Until("alice", "bob", "dave")
	}
	for i, n := range nodes[:2] {
		Eventually(t, fmt.Sprintf("hub %d's Room.Presence after carol left", i), func() bool {
			return PresenceOf(n, "p") == "alice:1 bob:1 dave:1"
		})
	}
}

// PresenceCutOff: of three hubs made with PresenceOptions and a PresenceTTL
// of ttl, the third reaches the bus through px. A hub whose connection to
// the bus is cut (it goes
// through a proxy, which cuts it; the hub itself runs on) has its members
// withdrawn from the other hubs' views once its entries expire, within
// the TTL, and back once it reconnects; meanwhile, cut off for longer than
// the TTL, its own members see the others withdrawn, and back.
func PresenceCutOff(t *testing.T, nodes []*Node, px *Proxy, ttl time.Duration) {
	alice := DialMember(t, nodes[0], "alice")
	bob := DialMember(t, nodes[1], "bob")
	carol := DialMember(t, nodes[2], "carol")
	for _, m := range []*Member{alice, bob, carol} {
		m.Join("p")
	}
	for _, m := range []*Member{alice, bob, carol} {
		m.Until("alice", "bob", "carol")
	}

	px.Cut() // hub 2 vanishes from the bus, abruptly
	cut := time.Now()
	alice.Until("alice", "bob")
	bob.Until("alice", "bob")
	t.Logf("carol left the other hubs' views %v after the cut (TTL %v)", time.Since(cut).Round(time.Millisecond), ttl)
	Equal(t, "hub 0's Room.Presence", PresenceOf(nodes[0], "p"), "alice:1 bob:1")
	carol.Until("carol")

	px.Open() // it reconnects, writes its entries again and reads the others'
	alice.Until("alice", "bob", "carol")
	bob.Until("alice", "bob", "carol")
	carol.Until("alice", "bob", "carol")
}

// PresenceShutdownWithdraws: a hub that shuts down deletes its
// entries, so its members leave the other hubs' views at once: with a
// TTL of an hour, expiry cannot explain it.
func PresenceShutdownWithdraws(t *testing.T, nodes []*Node) {
	alice := DialMember(t, nodes[0], "alice")
	bob := DialMember(t, nodes[1], "bob")
	alice.Join("p")
	bob.Join("p")
	alice.Until("alice", "bob")
	bob.Until("alice", "bob")
	read := make(chan struct{}) // bob answers the close handshake
	go func() {
		defer close(read)
		for {
			if _, _, err := bob.Conn.Read(bob.Ctx); err != nil {
				return
			}
		}
	}()
	if err := nodes[1].Hub.Shutdown(Ctx(t)); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-read
	alice.Until("alice")
	Equal(t, "hub 0's Room.Presence", PresenceOf(nodes[0], "p"), "alice:1")
}

// A Restart is what RestartMidTraffic needs of the bus.
type Restart struct {
	Stop  func() // stops the bus abruptly, keeping its store
	Start func() // starts it again, on the same address with the same store

	// Connected, if not nil, reports whether hub i is connected to the bus
	// again; the scenario waits for it before publishing after the restart.
	Connected func(i int) bool

	// Unconfirmed is the engine's error for a publish that may or may not
	// have been stored.
	Unconfirmed error
}

// RestartPolicies are the rooms' history policies that RestartMidTraffic
// needs.
var RestartPolicies = Policies(map[string]wshub.HistoryPolicy{"r": {Messages: 10000}})

// RestartMidTraffic: three hubs made with RestartPolicies, the third
// reaching the bus through px, publish to a history room with members
// on every hub while the bus is stopped abruptly and started again with
// its store; the third comes back later than the others. Every
// acknowledged publish reaches every member once, in one order, the
// room keeps its epoch; a publish that failed definitely reaches none;
// an unconfirmed one all or none.
func RestartMidTraffic(t *testing.T, nodes []*Node, px *Proxy, r Restart) {
	ctx := Ctx(t)

	type member struct {
		got []Logged
		err error
	}
	members := make([]*member, 2*len(nodes))
	var readers sync.WaitGroup
	for i := range members {
		p := Dial(t, nodes[i/2])
		p.Join("r")
		m := &member{}
		members[i] = m
		readers.Go(func() { m.got, m.err = p.CollectLog("sentinel", nil) })
	}
	epoch, _, err := nodes[0].Hub.Room("r").Position(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// Every hub publishes until it saw failures while the bus was down, then
	// some more once it is back.
	type outcome struct {
		ok, failed, unconfirmed map[int]bool
	}
	outcomes := make([]outcome, len(nodes))
	var down sync.WaitGroup
	down.Add(len(nodes))
	restarted := make(chan struct{})
	var pubs sync.WaitGroup
	var started sync.WaitGroup
	started.Add(len(nodes))
	for i, n := range nodes {
		o := outcome{map[int]bool{}, map[int]bool{}, map[int]bool{}}
		outcomes[i] = o
		pub := fmt.Sprintf("pub%d", i)
		pubs.Go(func() {
			seq, failures := 0, 0
			publish := func() {
				err := Broadcast(ctx, n, "r", pub, seq)
				switch {
				case err == nil:
					o.ok[seq] = true
				case errors.Is(err, r.Unconfirmed):
					o.unconfirmed[seq] = true
				case errors.Is(err, wshub.ErrEngine):
					o.failed[seq] = true
					failures++
				default:
					t.Errorf("%s: Room.Broadcast %d: %v", pub, seq, err)
				}
				seq++
			}
			for seq < 5 {
				publish()
			}
			started.Done()
			for failures < 3 && seq < 100000 {
				publish()
			}
			down.Done()
			<-restarted
			if r.Connected != nil {
				Eventually(t, pub+"'s hub to reconnect", func() bool { return r.Connected(i) })
			}
			for range 10 {
				publish()
			}
		})
	}
	started.Wait()
	r.Stop()
	px.Cut()
	down.Wait()

	r.Start()
	close(restarted)
	if r.Connected != nil {
		Eventually(t, "hubs 0 and 1 to reconnect", func() bool { return r.Connected(0) && r.Connected(1) })
	}
	if err := Broadcast(ctx, nodes[0], "r", "while-2-away", 0); err != nil {
		t.Fatalf("publish while hub 2 is away: %v", err)
	}
	px.Open()
	pubs.Wait()
	if t.Failed() {
		return
	}
	epoch2, _, err := nodes[1].Hub.Room("r").Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	Equal(t, "epoch after the restart", epoch2, epoch)
	if err := Broadcast(ctx, nodes[0], "r", "sentinel", 0); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	readers.Wait()

	var lists [][]Logged
	for i, m := range members {
		if m.err != nil {
			t.Fatalf("member %d: %v", i, m.err)
		}
		lists = append(lists, m.got)
	}
	CheckOneOrder(t, "r", lists)
	got := lists[0]
	count := map[Payload]int{}
	last := map[string]int{}
	for _, l := range got {
		count[l.Payload]++
		if prev, ok := last[l.Pub]; ok && l.Payload.Seq <= prev {
			t.Fatalf("%s's %d after its %d", l.Pub, l.Payload.Seq, prev)
		}
		last[l.Pub] = l.Payload.Seq
	}
	Equal(t, "the message published while hub 2 was away", count[Payload{Pub: "while-2-away", Seq: 0}], 1)
	var nOK, nFailed, nUnconfirmed, nUnconfirmedDelivered int
	for i, o := range outcomes {
		pub := fmt.Sprintf("pub%d", i)
		for seq := range o.ok {
			if c := count[Payload{Pub: pub, Seq: seq}]; c != 1 {
				t.Fatalf("acknowledged %s %d delivered %d times", pub, seq, c)
			}
		}
		for seq := range o.failed {
			if c := count[Payload{Pub: pub, Seq: seq}]; c != 0 {
				t.Fatalf("failed %s %d delivered %d times", pub, seq, c)
			}
		}
		for seq := range o.unconfirmed {
			if c := count[Payload{Pub: pub, Seq: seq}]; c > 1 {
				t.Fatalf("unconfirmed %s %d delivered %d times", pub, seq, c)
			} else if c == 1 {
				nUnconfirmedDelivered++
			}
		}
		nOK += len(o.ok)
		nFailed += len(o.failed)
		nUnconfirmed += len(o.unconfirmed)
	}
	t.Logf("%d acknowledged, %d failed, %d unconfirmed (%d of them delivered)", nOK, nFailed, nUnconfirmed, nUnconfirmedDelivered)
}

// LostPolicies are the rooms' history policies that HistoryLostOnRestart
// needs.
var LostPolicies = Policies(map[string]wshub.HistoryPolicy{"m": {Messages: 50}})

// HistoryLostOnRestart: on two hubs made with LostPolicies, restart
// restarts the bus losing its store (memory storage, no persistence).
// The hubs close the members of the history room with 1012, the room
// gets a new epoch, a rejoin is told it could not recover, and the room
// works again.
func HistoryLostOnRestart(t *testing.T, nodes []*Node, restart func()) {
	ctx := Ctx(t)

	p := Dial(t, nodes[1])
	_, ack := p.JoinAck("m", "")
	if err := Broadcast(ctx, nodes[0], "m", "before", 0); err != nil {
		t.Fatal(err)
	}
	Equal(t, "message before the restart", Data(t, p.Read()).Pub, "before")

	restart()
	_, _, err := p.Conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusServiceRestart {
		t.Fatalf("member: %v (status %d), want a close with 1012", err, got)
	}
	var epoch string
	Eventually(t, "the room's new epoch", func() bool {
		epoch, _, err = nodes[0].Hub.Room("m").Position(ctx)
		return err == nil && epoch != ack.Epoch
	})

	// Wait for the hub to drop the closed member, so that the rejoin below
	// finds the room as a client reconnecting later would.
	Eventually(t, "hub 1 to drop the closed member", func() bool { return nodes[1].Hub.Room("m").Len() == 0 })
	q := Dial(t, nodes[1])
	_, ack2 := q.JoinAck("m", fmt.Sprintf(`"since":%d,"epoch":%q`, ack.Seq, ack.Epoch))
	if ack2.Recovered == nil || *ack2.Recovered || ack2.Epoch != epoch {
		t.Fatalf("rejoin after the restart: %+v, want recovered false and epoch %q", ack2, epoch)
	}
	Eventually(t, "appends to work again", func() bool { return Broadcast(ctx, nodes[0], "m", "after", 0) == nil })
	Equal(t, "message after the restart", Data(t, q.Read()).Pub, "after")
}
