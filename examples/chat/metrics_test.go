package main

import (
	"bufio"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// scrapeMetrics fetches /metrics and returns each sample's value by its
// name and labels as printed: `wshub_clients`, `x_total{reason="auth"}`.
func scrapeMetrics(t *testing.T, s *server) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetrics: with -metrics, /metrics says what clients did to the chat
// server: a refused upgrade, publishes, a recovery, a kick; and carries
// the Go runtime's figures too.
func TestMetrics(t *testing.T) {
	t.Parallel()
	s := startServerWith(t, "127.0.0.1:0", debugPages{metrics: true})

	// No name: refused by the chat's Authenticate.
	resp, err := http.Get("http://" + s.addr + "/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	alice := dial(t, s, "alice")
	alice.welcome("alice")
	epoch := alice.join("lobby")
	for i := range 3 {
		alice.send(fmt.Sprintf(`{"type":"publish","room":"lobby","data":{"text":"hi %d"},"id":"p%d"}`, i, i))
	}
	for acks := 0; acks < 3; { // stored once acked
		f, err := alice.read()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(f, `"type":"ack"`) {
			acks++
		}
	}
	bob := dial(t, s, "bob")
	bob.welcome("bob")
	bob.send(fmt.Sprintf(`{"type":"join","room":"lobby","epoch":%q,"since":1,"id":"r"}`, epoch))
	for { // the two messages after seq 1, then the ack: recovered
		f, err := bob.read()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(f, `"id":"r"`) {
			if !strings.Contains(f, `"recovered":true`) {
				t.Fatalf("bob's recovery: %s", f)
			}
			break
		}
	}
	kickSlow(t, s, "slowpoke", "slow")
	// Its close is counted once its connection is gone, before the hub's
	// OnDisconnect logs it.
	s.log.waitFor(t, "msg=disconnect", "name=slowpoke")

	before := s.hub.Stats()
	m := scrapeMetrics(t, s)
	st := s.hub.Stats()
	// Writers count what they wrote once the write returns: between the
	// hub's figures before and after the scrape.
	if got := m[`wshub_messages_sent_total`]; got < float64(before.MessagesOut) || got > float64(st.MessagesOut) {
		t.Errorf("wshub_messages_sent_total = %v, not within the hub's %d and %d", got, before.MessagesOut, st.MessagesOut)
	}
	for name, want := range map[string]float64{
		`wshub_connections_refused_total{reason="auth"}`:      1,
		`wshub_messages_received_total{type="publish"}`:       3,
		`wshub_recoveries_total{outcome="recovered"}`:         1,
		`wshub_clients_kicked_total`:                          1,
		`wshub_connections_closed_total{reason="queue full"}`: 1,
		`wshub_clients`:                                       float64(st.Clients),
		`wshub_connections_accepted_total`:                    3,
		`wshub_label_messages_published_total{label="lobby"}`: 0, // not exposed: the chat sets no RoomLabel
	} {
		got, ok := m[name]
		if strings.HasPrefix(name, "wshub_label_") {
			if ok {
				t.Errorf("%s is exposed without Options.RoomLabel", name)
			}
			continue
		}
		if !ok || got != want {
			t.Errorf("%s = %v (exposed: %v), want %v", name, got, ok, want)
		}
	}
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("no go_goroutines: the Go runtime's figures are missing")
	}
}
