package main

import (
	"fmt"
	"strings"
)

// History checks (PROTOCOL.md §5) apply to a room whose history the server
// keeps: the join's ack tells, by carrying the room's epoch.

// historyRoom joins a new room on c and skips the check unless it keeps
// history. It returns the room and the join's ack.
func historyRoom(t *T, c *conn, suffix string) (string, *msg) {
	r := t.room(suffix)
	ack, _ := c.ack(join(r))
	if ack.Epoch == "" {
		t.Skipf("room %s keeps no history: its join's ack has no epoch", r)
	}
	return r, ack
}

func checkHistoryJoinAck(t *T) {
	c := t.dial()
	r := t.room("")
	ack, _ := c.ack(join(r))
	_, before := c.ack(publish(r, "seq?"))
	own := roomMsgs(before, r)
	if ack.Epoch == "" {
		if len(own) == 1 && own[0].Seq > 0 {
			t.Fatalf("the room's messages carry seq (%s), but the join's ack has no epoch: %s", own[0], ack)
		}
		t.Skipf("room %s keeps no history: its join's ack has no epoch", r)
	}
	if ack.Room != r {
		t.Fatalf("the join's ack names room %q, want %q: %s", ack.Room, r, ack)
	}
	if len(ack.Epoch) > 128 {
		t.Fatalf("epoch of %d bytes, at most 128", len(ack.Epoch))
	}
	if len(own) != 1 || own[0].Seq <= ack.Seq {
		t.Fatalf("after a join acked with seq %d, the room's next message is %s: want a seq above it", ack.Seq, own)
	}
	// A second member's join reports the latest seq.
	d := t.dial()
	ack2, _ := d.ack(join(r))
	if ack2.Epoch != ack.Epoch || ack2.Seq != own[0].Seq {
		t.Fatalf("after message %s, a join's ack is %s: want epoch %q and seq %d", own[0], ack2, ack.Epoch, own[0].Seq)
	}
}

// publishN publishes n messages from c to r, one at a time, and returns
// c's own copy of each, which must come before its ack and carry a seq
// above the previous one.
func publishN(c *conn, r string, n int, tag string, last uint64) []*msg {
	var out []*msg
	for i := range n {
		_, before := c.ack(publish(r, fmt.Sprintf("%s %d", tag, i)))
		own := roomMsgs(before, r)
		if len(own) != 1 {
			c.t.Fatalf("%s got %d messages of the room before its publish's ack, want its own one", c.name, len(own))
		}
		if own[0].Seq <= last {
			c.t.Fatalf("message %s comes after seq %d: seqs must increase", own[0], last)
		}
		last = own[0].Seq
		out = append(out, own[0])
	}
	return out
}

func checkHistorySeq(t *T) {
	a, b := t.dial(), t.dial()
	r, ack := historyRoom(t, a, "")
	b.ack(join(r))
	sent := publishN(a, r, 5, "seq", ack.Seq)
	for _, want := range sent {
		m, _ := b.until("the other member's copy", isMessage(r))
		if m.Seq != want.Seq || m.key() != want.key() {
			t.Fatalf("the other member got %s where the sender got %s: one order, one seq", m, want)
		}
	}
}

// sameMessages fails unless got are the messages want, in order, with
// their seqs.
func sameMessages(t *T, what string, got, want []*msg) {
	show := func(ms []*msg) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.String())
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	if len(got) != len(want) {
		t.Fatalf("%s: got %d messages %s, want %d %s", what, len(got), show(got), len(want), show(want))
	}
	for i := range got {
		if got[i].Seq != want[i].Seq || got[i].key() != want[i].key() {
			t.Fatalf("%s: message %d is %s, want %s", what, i+1, got[i], want[i])
		}
	}
}

func checkHistoryReplay(t *T) {
	a := t.dial()
	r, ack := historyRoom(t, a, "")
	sent := publishN(a, r, 5, "replay", ack.Seq)
	last := sent[len(sent)-1]

	c := t.dial()
	j := join(r)
	j["history"] = 3
	ack, before := c.ack(j)
	sameMessages(t, "join with history 3, before the ack", roomMsgs(before, r), sent[2:])
	if ack.Epoch == "" || ack.Seq != last.Seq {
		t.Fatalf("join with history: ack %s, want the room's latest seq %d", ack, last.Seq)
	}

	// More than the room has: all of it (or, with a cap, the newest ones).
	d := t.dial()
	j = join(r)
	j["history"] = 50
	_, before = d.ack(j)
	got := roomMsgs(before, r)
	if len(got) == 0 || len(got) > len(sent) {
		t.Fatalf("join with history 50 in a room of %d messages replayed %d", len(sent), len(got))
	}
	sameMessages(t, "join with history 50, before the ack", got, sent[len(sent)-len(got):])

	// Live messages follow the replay, once.
	next := publishN(a, r, 1, "live", last.Seq)
	for _, p := range []*conn{c, d} {
		m, _ := p.until("the live message after the replay", isMessage(r))
		sameMessages(t, "after the replay", []*msg{m}, next)
	}
}

func checkHistoryRecovery(t *T) {
	a, b := t.dial(), t.dial()
	r, ack := historyRoom(t, a, "")
	b.ack(join(r))
	seen := publishN(a, r, 2, "before", ack.Seq)
	for range seen {
		b.until("a message", isMessage(r))
	}
	b.ws.CloseNow() // b goes away having seen seen[1]
	missed := publishN(a, r, 3, "missed", seen[1].Seq)

	b2 := t.dial()
	j := join(r)
	j["epoch"], j["since"] = ack.Epoch, seen[1].Seq
	ack2, before := b2.ack(j)
	sameMessages(t, "recovery, before the ack", roomMsgs(before, r), missed)
	if ack2.Recovered == nil || !*ack2.Recovered {
		t.Fatalf("a recovery of every missed message: ack %s, want recovered:true", ack2)
	}
	if ack2.Seq != missed[len(missed)-1].Seq || ack2.Epoch != ack.Epoch {
		t.Fatalf("recovery ack %s: want epoch %q, seq %d", ack2, ack.Epoch, missed[len(missed)-1].Seq)
	}
	// Then live ones, exactly once.
	live := publishN(a, r, 1, "live", ack2.Seq)
	m, _ := b2.until("the live message after the recovery", isMessage(r))
	sameMessages(t, "after the recovery", []*msg{m}, live)

	// Nothing missed: recovered, nothing replayed.
	c := t.dial()
	j = join(r)
	j["epoch"], j["since"] = ack.Epoch, live[0].Seq
	ack3, before := c.ack(j)
	if got := roomMsgs(before, r); len(got) > 0 {
		t.Fatalf("a recovery from the latest seq replayed %s", got[0])
	}
	if ack3.Recovered == nil || !*ack3.Recovered {
		t.Fatalf("a recovery from the latest seq: ack %s, want recovered:true", ack3)
	}
}

func checkHistoryUnknownEpoch(t *T) {
	a := t.dial()
	r, ack := historyRoom(t, a, "")
	publishN(a, r, 3, "old", ack.Seq)
	c := t.dial()
	j := join(r)
	j["epoch"], j["since"] = "conformance-unknown-"+t.s.runID, 1
	ack2, before := c.ack(j)
	if got := roomMsgs(before, r); len(got) > 0 {
		t.Fatalf("a recovery with an unknown epoch replayed %s", got[0])
	}
	if ack2.Recovered == nil || *ack2.Recovered {
		t.Fatalf("a recovery with an unknown epoch: ack %s, want recovered:false", ack2)
	}
}

func checkHistoryFallback(t *T) {
	a := t.dial()
	r, ack := historyRoom(t, a, "")
	sent := publishN(a, r, 4, "old", ack.Seq)
	c := t.dial()
	j := join(r)
	j["epoch"], j["since"], j["history"] = "conformance-unknown-"+t.s.runID, 1, 2
	ack2, before := c.ack(j)
	if ack2.Recovered == nil || *ack2.Recovered {
		t.Fatalf("a recovery with an unknown epoch: ack %s, want recovered:false", ack2)
	}
	sameMessages(t, "a failed recovery with history 2, before the ack", roomMsgs(before, r), sent[2:])
}

func checkHistoryBadFields(t *T) {
	a := t.dial()
	r, ack := historyRoom(t, a, "")
	sent := publishN(a, r, 2, "m", ack.Seq)
	latest := sent[1].Seq
	c := t.dial()
	for _, extra := range []string{
		`"history":-1`,
		`"history":"5"`,
		`"history":2.5`,
		`"since":-1,"epoch":"e"`,
		`"since":"1","epoch":"e"`,
		`"since":1.5,"epoch":"e"`,
		`"since":1`,
		`"epoch":5,"since":1`,
		`"epoch":"` + strings.Repeat("e", 129) + `","since":1`,
		fmt.Sprintf(`"epoch":%q,"since":%d`, ack.Epoch, latest+1), // past the room's latest seq
	} {
		raw := fmt.Sprintf(`{"type":"join","room":%q,"id":"bad",%s}`, r, extra)
		c.sendRaw([]byte(raw))
		m, _ := c.answer("bad", raw)
		if m.Type != "error" {
			t.Fatalf("join with %s: got %s, want an error frame", extra, m)
		}
		// The join did not happen (and this valid request ends any run of
		// undecodable messages).
		if m := c.refused(publish(r, "not joined")); m.Type != "error" {
			t.Fatalf("after a refused join with %s, a publish got %s", extra, m)
		}
	}
}
