package main

import (
	"encoding/json"
	"slices"
)

// Presence checks (PROTOCOL.md §6) apply to a room with presence: the join
// sends the room's state before its ack.

type member struct {
	ID    string          `json:"id"`
	Info  json.RawMessage `json:"info"`
	Conns int             `json:"conns"`
}

type presData struct {
	Members []member `json:"members"`
	Total   *int     `json:"total"`
	Joins   []member `json:"joins"`
	Leaves  []member `json:"leaves"`
}

func presenceData(t *T, m *msg) presData {
	var d presData
	if err := json.Unmarshal(m.Data, &d); err != nil {
		t.Fatalf("presence frame %s: %v", m, err)
	}
	return d
}

// state checks a presence state frame and returns its data.
func state(t *T, m *msg) presData {
	d := presenceData(t, m)
	if d.Members == nil || d.Total == nil {
		t.Fatalf("presence state %s: want data with members and total", m)
	}
	if *d.Total < len(d.Members) {
		t.Fatalf("presence state %s: total below the members listed", m)
	}
	for _, p := range d.Members {
		if p.ID == "" || p.Conns < 1 {
			t.Fatalf("presence state %s: a member without id, or without connections", m)
		}
	}
	return d
}

// presenceJoin joins room r on c and returns the state that came before
// the ack; it skips the check when the room has no presence.
func presenceJoin(t *T, c *conn, r string) presData {
	_, before := c.ack(join(r))
	for _, m := range before {
		if m.Type == "presence" && m.Room == r {
			return state(t, m)
		}
	}
	ans, before := c.request(req{"type": "presence", "room": r})
	if ans.Type == "error" {
		t.Skipf("room %s has no presence: no state came before its join's ack, and a presence request got %s", r, ans)
	}
	for _, m := range before {
		if m.Type == "presence" && m.Room == r {
			t.Fatalf("room %s has presence (a presence request got its state), but its join's ack came before the state", r)
		}
	}
	t.Fatalf("a presence request got %s without a state before it", ans)
	return presData{}
}

// waitDiffs reads presence diffs of r on c, applying them to set, until
// done(set) holds.
func waitDiffs(t *T, c *conn, r string, set map[string]bool, what string, done func() bool) {
	for !done() {
		m, _ := c.until(what, func(m *msg) bool { return m.Type == "presence_diff" && m.Room == r })
		d := presenceData(t, m)
		for _, p := range d.Joins {
			set[p.ID] = true
		}
		for _, p := range d.Leaves {
			delete(set, p.ID)
		}
	}
}

func ids(ms []member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// ownID joins a new room on c and learns c's client ID from the diff of
// its own join.
func ownID(t *T, c *conn, suffix string) (string, string) {
	r := t.room(suffix)
	st := presenceJoin(t, c, r)
	if len(st.Members) > 1 {
		t.Fatalf("the state of a new room lists %v: want at most the client that joined", ids(st.Members))
	}
	var id string
	for id == "" {
		m, _ := c.until("a presence diff with the client's own join", func(m *msg) bool {
			return m.Type == "presence_diff" && m.Room == r
		})
		d := presenceData(t, m)
		if len(d.Joins) > 1 {
			t.Fatalf("the first diff of a room with one member joins %v", ids(d.Joins))
		}
		if len(d.Joins) == 1 {
			id = d.Joins[0].ID
		}
	}
	if len(st.Members) == 1 && st.Members[0].ID != id {
		t.Fatalf("the state listed %q, the diff of the client's own join says %q", st.Members[0].ID, id)
	}
	return r, id
}

func checkPresenceState(t *T) {
	c := t.dial()
	presenceJoin(t, c, t.room(""))
}

func checkPresenceOwnDiff(t *T) {
	c := t.dial()
	ownID(t, c, "")
}

func checkPresenceDiffs(t *T) {
	a, b := t.dial(), t.dial()
	r, aID := ownID(t, a, "")
	st := presenceJoin(t, b, r)
	if !slices.Contains(ids(st.Members), aID) {
		t.Fatalf("a joiner's state lists %v, without %q, who is in the room", ids(st.Members), aID)
	}
	if *st.Total == 1 && len(st.Members) == 1 && st.Members[0].Conns > 1 {
		t.Skipf("both connections are client %q (the state counts %d connections): give them distinct IDs with -id-param or {n} in the URL", aID, st.Members[0].Conns)
	}
	set := map[string]bool{aID: true}
	var bID string
	waitDiffs(t, a, r, set, "a diff with the other client's join", func() bool {
		for id := range set {
			if id != aID {
				bID = id
			}
		}
		return bID != ""
	})
	b.ack(leave(r))
	waitDiffs(t, a, r, set, "a diff with the other client's leave", func() bool { return !set[bID] })

	c := t.dial()
	presenceJoin(t, c, r)
	var cID string
	waitDiffs(t, a, r, set, "a diff with a third client's join", func() bool {
		for id := range set {
			if id != aID {
				cID = id
			}
		}
		return cID != ""
	})
	c.ws.CloseNow() // dropped, without leaving
	waitDiffs(t, a, r, set, "a diff with the dropped client's leave", func() bool { return !set[cID] })
}

func checkPresenceRequest(t *T) {
	a := t.dial()
	r, aID := ownID(t, a, "")
	_, before := a.ack(req{"type": "presence", "room": r})
	var st *msg
	for _, m := range before {
		if m.Type == "presence" && m.Room == r {
			st = m
		}
	}
	if st == nil {
		t.Fatalf("a presence request was acked without a state before the ack")
	}
	if d := state(t, st); !slices.Contains(ids(d.Members), aID) {
		t.Fatalf("the state %s does not list the client itself, %q", st, aID)
	}
}

func checkPresenceNotMember(t *T) {
	a := t.dial()
	r, _ := ownID(t, a, "")
	b := t.dial()
	b.refused(req{"type": "presence", "room": r})
	b.refused(req{"type": "presence", "room": t.room("-empty")})
	a.ack(leave(r))
	a.refused(req{"type": "presence", "room": r})
}

func checkPresenceFrom(t *T) {
	a := t.dial()
	r, aID := ownID(t, a, "")
	_, before := a.ack(publish(r, "who"))
	own := roomMsgs(before, r)
	if len(own) != 1 {
		t.Fatalf("got %d messages of the room before the publish's ack, want its own one", len(own))
	}
	if own[0].From != aID {
		t.Fatalf("the client's message came from %q, but presence says it is %q: from must be the sender's ID", own[0].From, aID)
	}
}
