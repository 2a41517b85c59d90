package wshub_test

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// metricsHub serves a hub for the figures' tests: clients are named by
// ?id= ("bad" is refused), at most 3 at a time; rooms "h:*" keep history,
// "p:*" have presence, "private" is denied; a room's label is what comes
// before its ':'.
func metricsHub(t *testing.T) (*wshub.Hub, string) {
	t.Helper()
	h := wshub.New(nil, &wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			id := r.URL.Query().Get("id")
			if id == "bad" {
				return wshub.Identity{}, wshub.Reject(http.StatusForbidden, "no")
			}
			return wshub.Identity{ID: id}, nil
		},
		AuthorizeJoin: func(_ *wshub.Client, room string) error {
			if room == "private" {
				return errors.New("private")
			}
			return nil
		},
		Rooms: func(room string) wshub.RoomOptions {
			return wshub.RoomOptions{
				History:  wshub.HistoryPolicy{Messages: map[bool]int{true: 10}[strings.HasPrefix(room, "h:")]},
				Presence: strings.HasPrefix(room, "p:"),
			}
		},
		RoomLabel: func(room string) string { label, _, _ := strings.Cut(room, ":"); return label },
		Limits:    wshub.Limits{MaxClients: 3},
	})
	return h, wsURL(serve(t, h))
}

// TestStatsCount: the figures of Stats say what real clients did and got.
func TestStatsCount(t *testing.T) {
	t.Parallel()
	h, url := metricsHub(t)
	ctx := testCtx(t)

	// Refusals: Authenticate, a foreign Origin, a request that is not a
	// handshake.
	if _, _, err := websocket.Dial(ctx, url+"?id=bad", nil); err == nil {
		t.Fatal("bad was let in")
	}
	hdr := http.Header{"Origin": {"http://elsewhere.example"}}
	if _, _, err := websocket.Dial(ctx, url+"?id=x", &websocket.DialOptions{HTTPHeader: hdr}); err == nil {
		t.Fatal("a foreign origin was let in")
	}
	resp, err := http.Get(strings.Replace(url, "ws:", "http:", 1))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	a := dialURL(t, url+"?id=a")
	b := dialURL(t, url+"?id=b")

	// Two members of a history room; a publishes 3, acked.
	_, ack := a.joinHist("h:1", "")
	b.joinHist("h:1", "")
	for i := range 3 {
		a.sendRaw(fmt.Sprintf(`{"type":"publish","room":"h:1","data":%d,"id":"p%d"}`, i, i))
	}
	for seen := 0; seen < 6; { // a: 3 messages and 3 acks, in any order
		if m := a.readHist(); m.Type == "message" || m.Type == "ack" {
			seen++
		}
	}
	for range 3 {
		if m := b.readHist(); m.Type != "message" {
			t.Fatalf("b got %+v", m)
		}
	}
	// A denied join, and an invalid one.
	if m := a.request(`{"type":"join","room":"private","id":"d"}`); m.Type != "error" {
		t.Fatalf("private: %+v", m)
	}
	if m := a.request(`{"type":"join","room":"","id":"e"}`); m.Type != "error" {
		t.Fatalf("empty room: %+v", m)
	}

	// c recovers after seq 1: 2 replayed; then asks with another epoch:
	// not recovered; then in a room without history: no history.
	c := dialURL(t, url+"?id=c")
	if _, _, err := websocket.Dial(ctx, url+"?id=d", nil); err == nil {
		t.Fatal("a fourth client was let in past MaxClients")
	}
	msgs, cack := c.joinHist("h:1", fmt.Sprintf(`,"epoch":%q,"since":1`, ack.Epoch))
	if len(msgs) != 2 || cack.Recovered == nil || !*cack.Recovered {
		t.Fatalf("recovery: %d messages, ack %+v", len(msgs), cack)
	}
	c.mustAck(`{"type":"leave","room":"h:1","id":"l"}`)
	if _, m := c.joinHist("h:1", `,"epoch":"old","since":1`); m.Recovered == nil || *m.Recovered {
		t.Fatalf("recovery from another epoch: %+v", m)
	}
	if _, m := c.joinHist("n:1", `,"epoch":"old","since":1`); m.Recovered == nil || *m.Recovered {
		t.Fatalf("recovery in a room without history: %+v", m)
	}

	// Presence: a, then b, in p:1; a hears of b in a diff.
	a.joinPres("p:1")
	b.joinPres("p:1")
	for {
		if m := a.readPres(); m.Type == "presence_diff" && strings.Contains(ids(m.Data.Joins), "b:1") {
			break
		}
	}

	s := h.Stats()
	equal(t, "clients", s.Clients, 3)
	equal(t, "members", s.Members, 6) // a: h:1, p:1; b: h:1, p:1; c: h:1, n:1
	equal(t, "accepted", s.Accepted, 3)
	for reason, n := range map[string]uint64{"auth": 1, "origin": 1, "handshake": 1, "limit": 1, "overload": 0, "closing": 0} {
		equal(t, "refusals "+reason, s.Refusals[reason], n)
	}
	equal(t, "refused (503)", s.Refused, 1)
	equal(t, "publishes read", s.In["publish"], 3)
	equal(t, "joins read", s.In["join"], 9)
	equal(t, "joins", s.Joins, 7)
	equal(t, "leaves", s.Leaves, 1)
	equal(t, "joins denied", s.JoinRefusals["denied"], 1)
	equal(t, "joins invalid", s.JoinRefusals["invalid"], 1)
	equal(t, "room messages queued", s.Queued["message"], 6)
	equal(t, "replayed", s.Replayed, 2)
	for outcome, n := range map[string]uint64{"recovered": 1, "not recovered": 1, "no history": 1} {
		equal(t, "recoveries "+outcome, s.Recoveries[outcome], n)
	}
	equal(t, "publish→ack observations", s.PublishAck.Count(), 3)
	equal(t, "engine observations", s.EngineWait.Count(), 3)
	if q := s.PublishAck.Quantile(0.99); math.IsNaN(q) || q <= 0 {
		t.Errorf("p99 publish→ack %v", q)
	}
	if s.PresenceDiffs == 0 || s.PresenceEntries == 0 {
		t.Errorf("presence diffs %d, entries %d", s.PresenceDiffs, s.PresenceEntries)
	}
	if s.FramesOut == 0 || s.BytesOut == 0 || s.QueueDepth.Count() == 0 {
		t.Errorf("frames %d, bytes %d, writes %d", s.FramesOut, s.BytesOut, s.QueueDepth.Count())
	}
	equal(t, "label h published", s.Labels["h"].Published, 3)
	equal(t, "label h delivered", s.Labels["h"].Delivered, 6)
}

// TestStatsCloses: why clients left, by reason and close code.
func TestStatsCloses(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 4)
	left := make(chan struct{}, 4)
	h := wshub.New(nil, &wshub.Options{
		OnConnect:    func(c *wshub.Client) { connected <- c },
		OnDisconnect: func(*wshub.Client, error) { left <- struct{}{} }, // after the close is counted
	})
	ts := serve(t, h)
	ctx := testCtx(t)
	gone := func() {
		t.Helper()
		select {
		case <-left:
		case <-ctx.Done():
			t.Fatal("the client did not leave")
		}
	}

	a := dial(t, ts)
	<-connected
	a.conn.Close(websocket.StatusNormalClosure, "")
	gone()

	b := dial(t, ts)
	(<-connected).Close(4002, "bye") // an application's code: counted as 4000
	equal(t, "b's close", b.readClose(), 4002)
	gone()

	c := dial(t, ts)
	<-connected
	for range 5 {
		c.sendRaw(`not json`)
	}
	equal(t, "c's close", c.readClose(), websocket.StatusInvalidFramePayloadData)
	gone()

	s := h.Stats()
	for reason, n := range map[string]uint64{"normal": 1, "server": 1, "invalid": 1, "lost": 0, "queue full": 0} {
		equal(t, "closes "+reason, s.Closes[reason], n)
	}
	for code, n := range map[int]uint64{1000: 1, 4000: 1, 1007: 1, 1006: 0} {
		equal(t, fmt.Sprint("close code ", code), s.CloseCodes[code], n)
	}
	equal(t, "invalid messages read", s.In["invalid"], 5)
}
