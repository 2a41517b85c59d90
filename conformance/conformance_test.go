package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wshub/wshub"
)

// testTimeout bounds each check in the tests: generous, for a busy
// machine under -race.
const testTimeout = time.Minute

// referenceHub serves a hub configured as the suite expects of a full
// server: any room may be joined, and every room keeps history and has
// presence. Clients are named by the query parameter "id".
func referenceHub(t *testing.T) (*wshub.Hub, string) {
	t.Helper()
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		Rooms: func(string) wshub.RoomOptions {
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}, Presence: true}
		},
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			id := r.URL.Query().Get("id")
			return wshub.Identity{ID: id, Info: map[string]string{"name": id}}, nil
		},
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", h)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		h.Close()
		ts.Close()
	})
	return h, "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
}

func logResults(t *testing.T, out *strings.Builder) {
	t.Helper()
	t.Logf("suite output:\n%s", out.String())
}

// knownCoreBugs are checks that the reference server fails today, with the
// bug; fixing one makes its check pass, and then it goes from this list.
var knownCoreBugs = map[string]string{}

// TestReferenceServer: against the reference server, every check passes,
// the shutdown one included (but for knownCoreBugs).
func TestReferenceServer(t *testing.T) {
	h, url := referenceHub(t)
	var out strings.Builder
	sum, err := Run(context.Background(), Config{
		URL:     url,
		IDParam: "id",
		Prefix:  "conformance-",
		Timeout: testTimeout,
		Out:     &out,
		Shutdown: func(ctx context.Context) error {
			return h.Shutdown(ctx)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Results) != len(checks()) {
		t.Fatalf("ran %d checks of %d", len(sum.Results), len(checks()))
	}
	for _, r := range sum.Results {
		if bug, ok := knownCoreBugs[r.Name]; ok && r.Status == Fail {
			t.Logf("%s fails, a known bug of the reference server: %s (%s)", r.Name, bug, r.Reason)
			continue
		}
		if r.Status != Pass {
			t.Errorf("%s %s: %s", r.Status, r.Name, r.Reason)
		}
	}
	if t.Failed() {
		logResults(t, &out)
	}
}

func TestDialURL(t *testing.T) {
	for _, tc := range []struct{ url, param, want string }{
		{"ws://h/ws?name=x", "", "ws://h/ws?name=x"},
		{"ws://h/ws?name=x", "name", "ws://h/ws?name=cf0123ab-7"},
		{"ws://h/ws?user={n}&room=a", "", "ws://h/ws?user=cf0123ab-7&room=a"},
		{"ws://h/ws", "id", "ws://h/ws?id=cf0123ab-7"},
	} {
		got, err := dialURL(&Config{URL: tc.url, IDParam: tc.param}, "0123ab89cdef", 7)
		if err != nil || got != tc.want {
			t.Errorf("dialURL(%q, %q) = %q, %v; want %q", tc.url, tc.param, got, err, tc.want)
		}
	}
}
