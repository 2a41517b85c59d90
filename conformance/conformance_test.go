package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/wshub/wshub"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds each check in the tests: generous, for a busy
// machine under -race.
const testTimeout = time.Minute

// referenceHub serves a hub configured as the suite expects of a full
// server: any room may be joined, and every room keeps history and has
// presence. Clients are named by the query parameter "id"; tune changes
// the options, when not nil.
func referenceHub(t *testing.T, tune func(*wshub.Options)) (*wshub.Hub, string) {
	t.Helper()
	opts := &wshub.Options{
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		Rooms: func(string) wshub.RoomOptions {
			return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 100}, Presence: true}
		},
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			id := r.URL.Query().Get("id")
			return wshub.Identity{ID: id, Info: map[string]string{"name": id}}, nil
		},
	}
	if tune != nil {
		tune(opts)
	}
	h := wshub.New(nil, opts)
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

// testToken is the token the reference hubs with tokens accept.
const testToken = "good"

// checkToken accepts testToken, for a sign-in that expires in a minute:
// every connection gets an auth frame with a ttl, and no check lasts long
// enough to see it expire. The identity has no ID: a first frame's
// sign-in gets a new one, a refresh keeps the client's.
func checkToken(_ *wshub.Client, token string) (wshub.Identity, error) {
	if token != testToken {
		return wshub.Identity{}, errors.New("not the test's token")
	}
	return wshub.Identity{Expires: time.Now().Add(time.Minute)}, nil
}

// tokenChecks are the checks of PROTOCOL.md §11.
var tokenChecks = []string{"auth-required-4003", "auth-refused-4003", "auth-first-frame", "auth-refresh", "auth-frame-not-fatal"}

// TestReferenceServer: against the reference server, every check that
// applies passes, the shutdown one included (but for knownCoreBugs).
// Signed in from the upgrade request without tokens, the token checks
// skip, but auth-frame-not-fatal (an auth frame gets an error); with
// tokens over the connection, auth-refresh applies too; with the first
// frame's sign-in, every connection of the suite signs in, and all the
// token checks apply but auth-frame-not-fatal (a first frame must sign
// in there).
func TestReferenceServer(t *testing.T) {
	skip := func(names ...string) map[string]Status {
		want := make(map[string]Status)
		for _, n := range names {
			want[n] = Skip
		}
		return want
	}
	firstFrame := func(o *wshub.Options) {
		o.Authenticate = nil
		o.AuthenticateToken = checkToken
	}
	for _, tc := range []struct {
		name  string
		tune  func(*wshub.Options)
		token string
		run   string            // the checks to run; empty: all
		want  map[string]Status // of the checks that do not pass
	}{
		{"upgrade", nil, "", "", skip(tokenChecks[:4]...)},
		{"upgrade, a token but no tokens taken", nil, testToken, "", skip(tokenChecks[:4]...)},
		{"upgrade and refresh", func(o *wshub.Options) {
			auth := o.Authenticate
			o.Authenticate = func(r *http.Request) (wshub.Identity, error) {
				id, err := auth(r)
				id.Expires = time.Now().Add(time.Minute)
				return id, err
			}
			o.AuthenticateToken = checkToken
		}, testToken, "", skip(tokenChecks[:3]...)},
		{"first frame", firstFrame, testToken, "", skip("auth-frame-not-fatal")},
		// Without -token, the token checks skip, and the others fail:
		// their connections are closed with 4003.
		{"first frame, no token given", firstFrame, "", "^(auth-.*|join-ack)$", func() map[string]Status {
			want := skip(tokenChecks...)
			want["join-ack"] = Fail
			return want
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, url := referenceHub(t, tc.tune)
			var out strings.Builder
			cfg := Config{
				URL:     url,
				IDParam: "id",
				Prefix:  "conformance-",
				Timeout: testTimeout,
				Token:   tc.token,
				Out:     &out,
				Shutdown: func(ctx context.Context) error {
					return h.Shutdown(ctx)
				},
			}
			if tc.run != "" {
				cfg.Run = regexp.MustCompile(tc.run)
			}
			sum, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if tc.run == "" && len(sum.Results) != len(checks()) {
				t.Fatalf("ran %d checks of %d", len(sum.Results), len(checks()))
			}
			for _, r := range sum.Results {
				if bug, ok := knownCoreBugs[r.Name]; ok && r.Status == Fail {
					t.Logf("%s fails, a known bug of the reference server: %s (%s)", r.Name, bug, r.Reason)
					continue
				}
				want, ok := tc.want[r.Name]
				if !ok {
					want = Pass
				}
				if r.Status != want {
					t.Errorf("%s %s: %s, want %s", r.Status, r.Name, r.Reason, want)
				}
			}
			if t.Failed() {
				logResults(t, &out)
			}
		})
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

// TestTTL: the ttl of an auth frame or an ack is an integer ≥ 1, or
// absent; other frames' ttl is not the protocol's.
func TestTTL(t *testing.T) {
	for _, tc := range []struct {
		frame string
		ttl   int64
		ok    bool
	}{
		{`{"type":"auth","ttl":300000}`, 300000, true},
		{`{"type":"auth"}`, 0, true},
		{`{"type":"ack","id":"1","ttl":1}`, 1, true},
		{`{"type":"auth","ttl":0}`, 0, false},
		{`{"type":"auth","ttl":-5}`, 0, false},
		{`{"type":"auth","ttl":1.5}`, 0, false},
		{`{"type":"auth","ttl":1e3}`, 0, false},
		{`{"type":"auth","ttl":"5"}`, 0, false},
		{`{"type":"auth","ttl":null}`, 0, false},
		{`{"type":"ack","id":"1","ttl":99999999999999999999}`, 0, false},
		{`{"type":"app-notice","ttl":"soon"}`, 0, true},
	} {
		m, err := decode([]byte(tc.frame))
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.frame, err)
		case !tc.ok && err == nil:
			t.Errorf("%s: decoded, want an error", tc.frame)
		case tc.ok && m.ttl != tc.ttl:
			t.Errorf("%s: ttl %d, want %d", tc.frame, m.ttl, tc.ttl)
		}
	}
}

// TestDescribeReqHidesToken: the suite's output, which may end up in
// logs, shows no token.
func TestDescribeReqHidesToken(t *testing.T) {
	r := req{"type": "refresh", "token": "secret-token"}
	if got := describeReq(r); strings.Contains(got, "secret-token") || !strings.Contains(got, `"type":"refresh"`) {
		t.Errorf("describeReq = %s", got)
	}
	if r["token"] != "secret-token" {
		t.Errorf("describeReq changed the request: %v", r)
	}
}
