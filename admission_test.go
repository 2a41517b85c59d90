package wshub_test

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// TestOverloadedHubRefusesWithRetryAfter: while the process is
// overloaded (here, the test says so: the scheduler's own readings are
// TestSchedulerLatenciesSeeOverload's), the hub lets a few upgrades in per
// interval and answers the rest 503 with a Retry-After; once it is no
// longer, it takes every upgrade.
func TestOverloadedHubRefusesWithRetryAfter(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, nil)
	wshub.SetAdmitFloor(h, 1)
	var overloaded atomic.Bool
	overloaded.Store(true)
	wshub.SetOverloaded(h, overloaded.Load)
	ts := serve(t, h)

	var refused, accepted atomic.Int64
	var retryAfter sync.Map
	var dials sync.WaitGroup
	for range 100 {
		dials.Go(func() {
			conn, resp, err := websocket.Dial(testCtx(t), wsURL(ts), nil)
			if err == nil {
				accepted.Add(1)
				conn.CloseNow()
				return
			}
			if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
				refused.Add(1)
				retryAfter.Store(resp.Header.Get("Retry-After"), true)
			}
		})
	}
	dials.Wait()
	t.Logf("overloaded: %d accepted, %d refused", accepted.Load(), refused.Load())
	if refused.Load() == 0 || accepted.Load() == 0 || accepted.Load()+refused.Load() != 100 {
		t.Fatalf("overloaded: %d accepted, %d refused of 100: want some of each, and nothing else", accepted.Load(), refused.Load())
	}
	retryAfter.Range(func(v, _ any) bool {
		switch v {
		case "1", "2":
		default:
			t.Errorf("Retry-After %q, want 1 or 2 seconds", v)
		}
		return true
	})
	equal(t, "Stats.Refused", h.Stats().Refused, uint64(refused.Load()))
	equal(t, "Stats.Refusals overload", h.Stats().Refusals["overload"], uint64(refused.Load()))

	// No longer overloaded: every upgrade comes in.
	overloaded.Store(false)
	for range 20 {
		dial(t, ts)
	}
}

// TestSchedulerLatenciesSeeOverload: the reading the hub's admission takes
// says overloaded while goroutines wait for a CPU (spinning goroutines,
// eight per CPU, hold every one) and not once they are gone. It does not
// run in parallel: it overloads the whole process.
func TestSchedulerLatenciesSeeOverload(t *testing.T) {
	h := wshub.New(nil, nil)
	defer h.Close()
	wshub.SchedulerOverloaded(h) // the first reading is the baseline

	var stop atomic.Bool
	var spinners sync.WaitGroup
	for range 8 * runtime.GOMAXPROCS(0) {
		spinners.Go(func() {
			for !stop.Load() {
			}
		})
	}
	seen := false
	for range 20 { // readings a tenth of a second apart, at most two seconds
		time.Sleep(100 * time.Millisecond) // an interval for the spinners to wait in
		if wshub.SchedulerOverloaded(h) {
			seen = true
			break
		}
	}
	stop.Store(true)
	spinners.Wait()
	if !seen {
		t.Fatal("20 readings under eight spinning goroutines per CPU, none overloaded")
	}
}
