package wshub_test

import (
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// TestOverloadedHubRefusesWithRetryAfter: while the process's goroutines
// wait for a CPU (here, spinning goroutines hold every one), the hub lets
// a few upgrades in per interval and answers the rest 503 with a
// Retry-After; once the CPU is free again, it takes every upgrade. It does
// not run in parallel: it overloads the whole process.
func TestOverloadedHubRefusesWithRetryAfter(t *testing.T) {
	h := wshub.New(nil, nil)
	wshub.SetAdmitFloor(h, 1)
	ts := serve(t, h)

	var stop atomic.Bool
	var spinners sync.WaitGroup
	for range 8 * runtime.GOMAXPROCS(0) {
		spinners.Go(func() {
			for !stop.Load() {
			}
		})
	}
	stopSpinning := sync.OnceFunc(func() {
		stop.Store(true)
		spinners.Wait()
	})
	defer stopSpinning()

	// Waves of dials until the hub refuses some: the first dial takes the
	// hub's first reading of the latencies, which says nothing yet.
	dial(t, ts)
	var refused, accepted atomic.Int64
	var retryAfter sync.Map
	for wave := 0; refused.Load() == 0 && wave < 20; wave++ {
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
	}
	stopSpinning()
	t.Logf("overloaded: %d accepted, %d refused", accepted.Load(), refused.Load())
	if refused.Load() == 0 || accepted.Load() == 0 {
		t.Fatalf("overloaded: %d accepted, %d refused: want some of each", accepted.Load(), refused.Load())
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

	// The CPU is free: every upgrade comes in.
	for range 20 {
		dial(t, ts)
	}
}
