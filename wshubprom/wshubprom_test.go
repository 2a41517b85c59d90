package wshubprom_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/client"
	"github.com/wshub/wshub/wshubprom"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// scrape fetches url and parses the text exposition format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return families
}

// value returns the value of the metric name with the given label pairs
// ("reason", "normal"), failing if it is not exposed.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for i := 0; i < len(labels); i += 2 {
			found := false
			for _, lp := range m.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s%v", name, labels)
	return 0
}

// TestScrape: a real hub, real clients publishing in two rooms, scraped
// through promhttp while they do and once they are done: the figures are
// those of Stats and of what the clients saw.
func TestScrape(t *testing.T) {
	left := make(chan struct{}, 16)
	hub := wshub.New(nil, &wshub.Options{
		OnDisconnect:  func(*wshub.Client, error) { left <- struct{}{} }, // after the close is counted
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		Rooms: func(room string) wshub.RoomOptions {
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}}
		},
		RoomLabel: func(room string) string { label, _, _ := strings.Cut(room, ":"); return label },
	})
	reg := prometheus.NewRegistry()
	reg.MustRegister(wshubprom.NewCollector(hub, prometheus.Labels{"hub": "a"}))
	mux := http.NewServeMux()
	mux.Handle("/ws", hub)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer hub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const clients, publishes = 4, 50
	rooms := []string{"chat:1", "chat:2"}
	conns := make([]*client.Conn, clients)
	for i := range conns {
		c, err := client.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", &client.Options{NoReconnect: true})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Join(ctx, rooms[i%2], nil); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	var wg sync.WaitGroup
	received := make([]int, clients)
	for i, c := range conns {
		wg.Go(func() { // each client publishes, and reads what its room gets
			for range publishes {
				if err := c.Publish(ctx, rooms[i%2], "x"); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			for range publishes * clients / 2 {
				select {
				case <-c.Messages():
					received[i]++
				case <-ctx.Done():
					return
				}
			}
		})
	}
	for range 5 { // scrapes under traffic
		scrape(t, srv.URL+"/metrics")
	}
	wg.Wait()

	// The writers count what they wrote once the write returns, which may
	// be after the client read it: those figures are checked between the
	// hub's before and after the scrape.
	before := hub.Stats()
	fams := scrape(t, srv.URL+"/metrics")
	s := hub.Stats()
	var got int
	for _, n := range received {
		got += n
	}
	want := publishes * clients * clients / 2 // each room: 2 clients, each gets both's publishes
	if got != want {
		t.Fatalf("the clients got %d messages, want %d", got, want)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"wshub_clients", nil, clients},
		{"wshub_rooms", nil, 2},
		{"wshub_room_members", nil, clients},
		{"wshub_connections_accepted_total", nil, clients},
		{"wshub_messages_received_total", []string{"type", "publish"}, publishes * clients},
		{"wshub_messages_queued_total", []string{"kind", "message"}, float64(want)},
		{"wshub_messages_queued_total", []string{"kind", "reply"}, publishes*clients + clients}, // acks of publishes and joins
		{"wshub_publish_ack_duration_seconds", nil, publishes * clients},
		{"wshub_engine_wait_duration_seconds", nil, publishes * clients},
		{"wshub_label_messages_published_total", []string{"label", "chat"}, publishes * clients},
		{"wshub_label_messages_delivered_total", []string{"label", "chat"}, float64(want)},
		{"wshub_joins_total", nil, clients},
		{"wshub_clients_kicked_total", nil, 0},
		{"wshub_messages_dropped_total", nil, 0},
		{"wshub_connections_closed_total", []string{"reason", "normal"}, 0},
	} {
		if got := value(t, fams, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	for _, c := range []struct {
		name          string
		before, after uint64
	}{
		{"wshub_messages_sent_total", before.MessagesOut, s.MessagesOut},
		{"wshub_sent_frames_total", before.FramesOut, s.FramesOut},
		{"wshub_sent_bytes_total", before.BytesOut, s.BytesOut},
	} {
		if got := value(t, fams, c.name); got < float64(c.before) || got > float64(c.after) {
			t.Errorf("%s = %v, not within the hub's %d and %d", c.name, got, c.before, c.after)
		}
	}
	for _, f := range fams {
		for _, m := range f.Metric {
			if !hasLabel(m, "hub", "a") {
				t.Fatalf("%s has no hub label", f.GetName())
			}
		}
	}

	// The clients leave normally: the closes are counted.
	for _, c := range conns {
		c.Close()
	}
	for range clients {
		select {
		case <-left:
		case <-ctx.Done():
			t.Fatal("the clients did not leave")
		}
	}
	fams = scrape(t, srv.URL+"/metrics")
	equal(t, value(t, fams, "wshub_connections_closed_total", "reason", "normal"), clients)
	// Every message queued reached a socket, and the writers, all gone,
	// counted it: the room messages the clients counted, the acks of
	// their publishes and of their joins.
	equal(t, value(t, fams, "wshub_messages_sent_total"), float64(want+publishes*clients+clients))
	equal(t, value(t, fams, "wshub_messages_dropped_total"), 0)
	equal(t, value(t, fams, "wshub_connections_closed_by_code_total", "code", "1000"), clients)
}

func hasLabel(m *dto.Metric, name, value string) bool {
	for _, lp := range m.Label {
		if lp.GetName() == name && lp.GetValue() == value {
			return true
		}
	}
	return false
}

func equal(t *testing.T, got, want float64) {
	t.Helper()
	if got != want {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestLint: the metrics follow the Prometheus naming conventions, as
// promlint checks them.
func TestLint(t *testing.T) {
	hub := wshub.New(nil, nil)
	defer hub.Close()
	problems, err := testutil.CollectAndLint(wshubprom.NewCollector(hub, nil))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if n := testutil.CollectAndCount(wshubprom.NewCollector(hub, nil)); n < 25 {
		t.Fatalf("%d metrics collected", n)
	}
}
