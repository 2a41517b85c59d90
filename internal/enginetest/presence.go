package enginetest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/wshub/wshub"
)

// PresenceOptions sets what a presence hub of the tests has: every room
// with presence, every join allowed, and clients named by the query:
// ?id=alice gives ID "alice" and Info {"name":"alice"}.
func PresenceOptions(o *wshub.Options) {
	o.AuthorizeJoin = AllowJoins
	o.Rooms = func(string) wshub.RoomOptions { return wshub.RoomOptions{Presence: true} }
	o.Authenticate = func(r *http.Request) (wshub.Identity, error) {
		id := r.URL.Query().Get("id")
		return wshub.Identity{ID: id, Info: map[string]string{"name": id}}, nil
	}
}

// Member is a client of a presence room, with its view of the room's
// members: the state, then each diff applied as set operations by ID.
type Member struct {
	*Peer
	ID   string
	View map[string]bool
}

// DialMember connects a client named id (?id=id) to n.
func DialMember(t testing.TB, n *Node, id string) *Member {
	t.Helper()
	return &Member{Peer: DialURL(t, n.URL("?id="+url.QueryEscape(id))), ID: id, View: make(map[string]bool)}
}

// presenceData is the data of a presence state or diff.
type presenceData struct {
	Members []wshub.Presence `json:"members"`
	Joins   []wshub.Presence `json:"joins"`
	Leaves  []wshub.Presence `json:"leaves"`
}

// Apply reads one frame and applies it to the view; it reports whether
// it was the ack of a join.
func (m *Member) Apply() bool {
	m.T.Helper()
	f := m.Read()
	var d presenceData
	if f.Type == "presence" || f.Type == "presence_diff" {
		if err := json.Unmarshal(f.Data, &d); err != nil {
			m.T.Fatalf("%s: decode %s: %v", m.ID, f.Data, err)
		}
	}
	switch f.Type {
	case "presence":
		clear(m.View)
		for _, p := range d.Members {
			m.View[p.ID] = true
		}
	case "presence_diff":
		for _, p := range d.Joins {
			m.View[p.ID] = true
		}
		for _, p := range d.Leaves {
			delete(m.View, p.ID)
		}
	case "ack":
		return f.ID == "join"
	default:
		m.T.Fatalf("%s: got %+v, want presence frames", m.ID, f)
	}
	return false
}

// Join joins room and applies the state it gets first.
func (m *Member) Join(room string) {
	m.T.Helper()
	m.Send(`{"type":"join","room":%s,"id":"join"}`, JSONString(room))
	for !m.Apply() {
	}
}

// Until applies frames until the view is exactly ids.
func (m *Member) Until(ids ...string) {
	m.T.Helper()
	want := strings.Join(slices.Sorted(slices.Values(ids)), " ")
	for m.Sees() != want {
		m.Apply()
	}
}

// Sees returns the view, its IDs sorted and joined by spaces.
func (m *Member) Sees() string {
	return strings.Join(slices.Sorted(maps.Keys(m.View)), " ")
}

// PresenceOf lists a hub's Room.Presence as "id:conns ...".
func PresenceOf(n *Node, room string) string {
	var out []string
	for _, p := range n.Hub.Room(room).Presence() {
		out = append(out, fmt.Sprintf("%s:%d", p.ID, p.Conns))
	}
	return strings.Join(out, " ")
}

// Update is one call of a WatchPresence update.
type Update struct{ Hub, Members string }

// Recorder records the updates of a watch, in order, and fails the test
// if one comes after stopped is set.
type Recorder struct {
	t       testing.TB
	C       chan Update
	busy    atomic.Int32 // calls under way: more than one at a time is an error
	Stopped atomic.Bool  // set after UnwatchPresence: an update then is an error
}

// NewRecorder returns an empty Recorder.
func NewRecorder(t testing.TB) *Recorder { return &Recorder{t: t, C: make(chan Update, 100)} }

// Update is the update function of a watch.
func (r *Recorder) Update(hub string, members []byte) {
	if r.busy.Add(1) != 1 {
		r.t.Errorf("concurrent updates")
	}
	defer r.busy.Add(-1)
	if r.Stopped.Load() {
		r.t.Errorf("update after UnwatchPresence: %s %s", hub, members)
	}
	u := Update{Hub: hub, Members: "<nil>"}
	if members != nil {
		u.Members = string(members)
	}
	r.C <- u
}

// Next returns the next update, failing when none comes within the test's
// context.
func (r *Recorder) Next(ctx context.Context) Update {
	r.t.Helper()
	select {
	case u := <-r.C:
		return u
	case <-ctx.Done():
		r.t.Fatal("no update")
		return Update{}
	}
}
