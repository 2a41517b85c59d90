package wshub

import (
	"bytes"
	"crypto/sha256"
	_ "embed" // the status page
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"time"
)

// The status page: a live view of a hub's figures for an operator, one
// HTML file with its CSS and JavaScript inline (no build step, nothing
// fetched from elsewhere), which polls a JSON snapshot of Stats once a
// second and keeps the last two minutes in the browser. The hub keeps no
// history for it: an open page costs one Stats call, and one pass over the
// room table, a second.

//go:embed status.html
var statusPage []byte

// busiestRooms is how many rooms the status page lists.
const busiestRooms = 10

// StatusHandler returns an http.Handler serving the hub's status page, for
// an operator's browser: clients, rooms, messages per second in and out,
// publish→ack latency (p99 and p50, of each second in the chart, of the
// last 10 s in the figure), the hub's kicks, refused upgrades and dropped
// messages, charts of the last two minutes, and the ten rooms that queued
// the most messages for their members here. The page updates itself every
// second. Mount it on any path, e.g.
// mux.Handle("/debug/wshub", hub.StatusHandler()).
//
// A GET of the path serves the page; a GET with the query "?json" serves
// what the page polls, a JSON snapshot of Stats and of the busiest rooms
// (names, members, messages queued since the room was created). That JSON
// is the page's: its fields may change. Monitor with Hub.Stats instead.
// Other methods get 405. A snapshot waits for no client: it holds the
// hub's read lock for one pass over its rooms, then each of the ten
// rooms' locks in turn, to count their members.
//
// The page shows room names and counts of what users do: do not expose it
// publicly. Mount it behind your authentication or on an internal port.
// It is served with a Content-Security-Policy that lets it load nothing
// and talk to nothing but its own origin, and it writes room names as
// text, never as HTML.
func (h *Hub) StatusHandler() http.Handler {
	csp := "default-src 'none'; connect-src 'self'; img-src data:" +
		"; script-src " + inlineHash(statusPage, "script") +
		"; style-src " + inlineHash(statusPage, "style") +
		"; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		hdr := w.Header()
		hdr.Set("Cache-Control", "no-store")
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "no-referrer")
		if r.URL.Query().Has("json") {
			hdr.Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(h.status()) // a write error is the client gone
			return
		}
		hdr.Set("Content-Type", "text/html; charset=utf-8")
		hdr.Set("Content-Security-Policy", csp)
		w.Write(statusPage)
	})
}

// inlineHash returns the CSP source of the first inline <tag> element of
// page: its hash, which allows that element and nothing else.
func inlineHash(page []byte, tag string) string {
	_, body, _ := bytes.Cut(page, []byte("<"+tag+">"))
	body, _, _ = bytes.Cut(body, []byte("</"+tag+">"))
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// statusSnapshot is the status page's JSON: the figures of Stats it shows.
type statusSnapshot struct {
	Time        int64             `json:"time"` // Unix milliseconds
	Clients     int               `json:"clients"`
	Rooms       int               `json:"rooms"`
	Members     int               `json:"members"`
	Accepted    uint64            `json:"accepted"`
	MessagesIn  uint64            `json:"messagesIn"`
	MessagesOut uint64            `json:"messagesOut"`
	Dropped     uint64            `json:"dropped"`
	Kicked      uint64            `json:"kicked"`
	Refused     uint64            `json:"refused"`
	Refusals    map[string]uint64 `json:"refusals"`
	Closes      map[string]uint64 `json:"closes"`
	PublishAck  statusHistogram   `json:"publishAck"`
	Busiest     []statusRoom      `json:"busiest"`
}

// statusHistogram is a Histogram as the page reads it: it takes the
// difference of two to get a second's quantiles.
type statusHistogram struct {
	Bounds []float64 `json:"bounds"` // seconds
	Counts []uint64  `json:"counts"` // one more than Bounds: the last is above them all
}

// statusRoom is a room of the busiest.
type statusRoom struct {
	Name      string `json:"name"`
	Members   int    `json:"members"`
	Delivered uint64 `json:"delivered"`
}

func (h *Hub) status() statusSnapshot {
	s := h.Stats()
	return statusSnapshot{
		Time:    time.Now().UnixMilli(),
		Clients: s.Clients, Rooms: s.Rooms, Members: s.Members, Accepted: s.Accepted,
		MessagesIn: s.MessagesIn, MessagesOut: s.MessagesOut,
		Dropped: s.Dropped, Kicked: s.Kicked, Refused: s.Refused,
		Refusals:   s.Refusals,
		Closes:     s.Closes,
		PublishAck: statusHistogram{Bounds: s.PublishAck.Bounds, Counts: s.PublishAck.Counts},
		Busiest:    h.busiest(busiestRooms),
	}
}

// busiest returns the n rooms that queued the most messages for their
// members here, busiest first (then by name). It ranks them by their
// atomic counters under the hub's read lock, and takes only those n
// rooms' locks, one at a time and after it, to count their members.
func (h *Hub) busiest(n int) []statusRoom {
	type ranked struct {
		rm        *room
		delivered uint64
	}
	busier := func(a, b ranked) bool {
		return a.delivered > b.delivered || a.delivered == b.delivered && a.rm.name < b.rm.name
	}
	top := make([]ranked, 0, n+1)
	h.mu.RLock()
	for _, rm := range h.rooms {
		r := ranked{rm, rm.delivered.Load()}
		if len(top) == n && !busier(r, top[n-1]) {
			continue
		}
		i, _ := slices.BinarySearchFunc(top, r, func(e, r ranked) int {
			if busier(e, r) {
				return -1
			}
			return 1
		})
		top = slices.Insert(top, i, r)
		if len(top) > n {
			top = top[:n]
		}
	}
	h.mu.RUnlock()

	out := make([]statusRoom, 0, len(top))
	for _, r := range top {
		r.rm.mu.Lock()
		members, dead := len(r.rm.members), r.rm.dead
		r.rm.mu.Unlock()
		if !dead {
			out = append(out, statusRoom{Name: r.rm.name, Members: members, Delivered: r.delivered})
		}
	}
	return out
}
