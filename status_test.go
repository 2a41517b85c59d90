package wshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/wshub/wshub"
)

// statusJSON is what the status page reads from ?json.
type statusJSON struct {
	Time        int64             `json:"time"`
	Clients     int               `json:"clients"`
	Rooms       int               `json:"rooms"`
	Members     int               `json:"members"`
	MessagesIn  uint64            `json:"messagesIn"`
	MessagesOut uint64            `json:"messagesOut"`
	Kicked      uint64            `json:"kicked"`
	Dropped     uint64            `json:"dropped"`
	Refusals    map[string]uint64 `json:"refusals"`
	PublishAck  struct {
		Bounds []float64 `json:"bounds"`
		Counts []uint64  `json:"counts"`
	} `json:"publishAck"`
	Busiest []struct {
		Name      string `json:"name"`
		Members   int    `json:"members"`
		Delivered uint64 `json:"delivered"`
	} `json:"busiest"`
}

// statusServer serves h at /ws and its status page at /debug/wshub.
func statusServer(t *testing.T, h *wshub.Hub) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	mux.Handle("/debug/wshub", h.StatusHandler())
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		ts.Close()
	})
	return ts
}

// get fetches url and returns the response, its body read.
func get(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testCtx(t), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp, string(body)
}

// TestStatusJSON: the status page's snapshot says what real clients did,
// and ranks the rooms by the messages queued for their members.
func TestStatusJSON(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll})
	ts := statusServer(t, h)

	// a and b in "busy", where a publishes 5; c in r0…r11, where the
	// server broadcasts i messages to ri.
	a, b, c := dial(t, ts), dial(t, ts), dial(t, ts)
	a.join("busy")
	b.join("busy")
	const published = 5
	for i := range published {
		a.sendRaw(fmt.Sprintf(`{"type":"publish","room":"busy","data":%d,"id":"p%d"}`, i, i))
	}
	for range 2 * published { // its messages and their acks
		if m := a.read(); m.Type != "message" && m.Type != "ack" {
			t.Fatalf("a got %+v", m)
		}
	}
	for range published {
		if m := b.read(); m.Type != "message" {
			t.Fatalf("b got %+v", m)
		}
	}
	const rooms = 12
	broadcast := 0
	for i := range rooms {
		c.join(fmt.Sprintf("r%d", i))
	}
	for i := range rooms {
		for range i {
			if err := h.Room(fmt.Sprintf("r%d", i)).Broadcast(context.Background(), &wshub.Message{Data: i}); err != nil {
				t.Fatal(err)
			}
			broadcast++
		}
	}
	for range broadcast {
		if m := c.read(); m.Type != "message" {
			t.Fatalf("c got %+v", m)
		}
	}

	joins := 2 + rooms
	wantOut := uint64(joins + published + 2*published + broadcast) // acks, and messages
	// The snapshot catches up with what the clients read: a message is
	// counted once written, and in its room once queued for every member.
	// busy (10 queued) ties with r10 and comes first by name; r0…r2 are
	// past the ten busiest.
	want := []string{"r11:1:11", "busy:2:10", "r10:1:10", "r9:1:9", "r8:1:8", "r7:1:7", "r6:1:6", "r5:1:5", "r4:1:4", "r3:1:3"}
	var s statusJSON
	var busiest []string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		resp, body := get(t, http.MethodGet, ts.URL+"/debug/wshub?json")
		equal(t, "status", resp.StatusCode, http.StatusOK)
		equal(t, "content type", resp.Header.Get("Content-Type"), "application/json")
		s = statusJSON{}
		if err := json.Unmarshal([]byte(body), &s); err != nil {
			t.Fatalf("decode %s: %v", body, err)
		}
		busiest = busiest[:0]
		for _, r := range s.Busiest {
			busiest = append(busiest, fmt.Sprintf("%s:%d:%d", r.Name, r.Members, r.Delivered))
		}
		if s.MessagesOut == wantOut && slices.Equal(busiest, want) {
			break
		}
		if s.MessagesOut > wantOut || time.Now().After(deadline) {
			t.Fatalf("messages out %d, want %d; busiest rooms:\ngot  %q\nwant %q", s.MessagesOut, wantOut, busiest, want)
		}
	}
	if s.Time == 0 {
		t.Error("no time")
	}
	equal(t, "clients", s.Clients, 3)
	equal(t, "rooms", s.Rooms, 1+rooms)
	equal(t, "members", s.Members, 2+rooms)
	equal(t, "messages in", s.MessagesIn, uint64(joins+published))
	equal(t, "kicked", s.Kicked, 0)
	equal(t, "dropped", s.Dropped, 0)
	equal(t, "auth refusals", s.Refusals["auth"], 0)
	equal(t, "publish→ack observations", observations(s.PublishAck.Counts), published)
	equal(t, "publish→ack buckets", len(s.PublishAck.Counts), len(s.PublishAck.Bounds)+1)
}

// observations is the number a histogram's counts add up to.
func observations(counts []uint64) int {
	n := 0
	for _, c := range counts {
		n += int(c)
	}
	return n
}

// TestStatusPage: the page is HTML that loads nothing from elsewhere and
// writes no data as HTML; other methods than GET and HEAD are refused.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	ts := statusServer(t, wshub.New(nil, nil))
	url := ts.URL + "/debug/wshub"

	resp, page := get(t, http.MethodGet, url)
	equal(t, "status", resp.StatusCode, http.StatusOK)
	equal(t, "content type", resp.Header.Get("Content-Type"), "text/html; charset=utf-8")
	equal(t, "cache", resp.Header.Get("Cache-Control"), "no-store")
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'; connect-src 'self';") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	for _, bad := range []string{"http://", "https://", "//cdn", "innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	if !strings.Contains(page, `fetch("?json"`) || !strings.Contains(page, "<svg") {
		t.Errorf("the page neither polls ?json nor draws:\n%.300s", page)
	}

	resp, body := get(t, http.MethodHead, url)
	equal(t, "HEAD status", resp.StatusCode, http.StatusOK)
	equal(t, "HEAD body", body, "")

	resp, _ = get(t, http.MethodPost, url+"?json")
	equal(t, "POST status", resp.StatusCode, http.StatusMethodNotAllowed)
	equal(t, "Allow", resp.Header.Get("Allow"), "GET, HEAD")
}
