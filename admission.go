package wshub

import (
	"context"
	"math/rand/v2"
	"net/http"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"
)

// Admission. A hub that takes upgrades faster than its process can serve
// them hurts the clients it has: in a reconnect storm (a restart, a
// deploy, a network that came back) thousands of handshakes and joins
// compete for the CPU with the deliveries to the members already there.
// So the hub watches how long the process's runnable goroutines wait for
// a CPU (the Go scheduler's latencies, from runtime/metrics), read when an
// upgrade comes at least admitInterval after the last reading: they cover
// the time since. While their 99th percentile passes overloadLatency, it
// lets admitFloor upgrades through per interval, so that it never refuses
// everyone; the others wait for a later interval's share, at most
// admitWait, and are then answered 503 with a Retry-After of 1 or 2
// seconds, drawn at random so that the retries spread out. An upgrade
// that waits holds its place against MaxClients, and Shutdown waits for
// it (at most an interval or two: it gives up when the hub closes).

const (
	admitInterval   = 50 * time.Millisecond
	overloadLatency = 20 * time.Millisecond
	admitFloor      = 96
	admitWait       = 2 * time.Second
)

// admission decides whether an upgrade comes in now.
type admission struct {
	floor      int         // admitFloor, or less in a test
	overloaded func() bool // measure, or a test's

	mu       sync.Mutex
	read     time.Time        // when the latencies were last read
	prev     []uint64         // their counts then
	sample   []metrics.Sample // the scheduler's latencies
	over     bool             // the last interval passed overloadLatency
	admitted int              // upgrades let through in this interval while over
}

const schedLatencies = "/sched/latencies:seconds"

// admit reports whether an upgrade may come in: at once, or after
// waiting at most admitWait for a later interval's share. It gives up
// when ctx ends (the client went) or closing reports true. Waiters wake
// at random in the next interval, not all at its start.
func (a *admission) admit(ctx context.Context, closing func() bool) bool {
	deadline := time.Now().Add(admitWait)
	var timer *time.Timer
	for {
		now := time.Now()
		wait, ok := a.try(now)
		if ok {
			return true
		}
		wait += rand.N(admitInterval)
		if closing() || now.Add(wait).After(deadline) {
			return false
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return false
		}
	}
}

// try reports whether an upgrade may come in at now, or how long until
// the next interval.
func (a *admission) try(now time.Time) (time.Duration, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.read) >= admitInterval {
		if a.overloaded != nil {
			a.over = a.overloaded()
		} else {
			a.over = a.measure()
		}
		a.read, a.admitted = now, 0
	}
	if !a.over {
		return 0, true
	}
	a.admitted++
	return a.read.Add(admitInterval).Sub(now), a.admitted <= a.floor
}

// measure reads the scheduler's latencies and reports whether their 99th
// percentile since the last reading passes overloadLatency.
func (a *admission) measure() bool {
	if a.sample == nil {
		a.sample = []metrics.Sample{{Name: schedLatencies}}
	}
	metrics.Read(a.sample)
	if a.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return false // not in this runtime
	}
	h := a.sample[0].Value.Float64Histogram()
	prev := a.prev
	a.prev = append(a.prev[:0:0], h.Counts...)
	if len(prev) != len(h.Counts) {
		return false
	}
	var total uint64
	for i, c := range h.Counts {
		total += c - prev[i]
	}
	if total == 0 {
		return false
	}
	// The bucket holding the 99th percentile starts past overloadLatency.
	rank, seen := total-total/100, uint64(0)
	for i, c := range h.Counts {
		if seen += c - prev[i]; seen >= rank {
			return h.Buckets[i] >= overloadLatency.Seconds()
		}
	}
	return false
}

// refuse answers an upgrade 503 with a Retry-After of 1 or 2 seconds,
// and counts it by its reason: ErrHubClosed, errTooManyClients or
// errOverloaded.
func (h *Hub) refuse(w http.ResponseWriter, err error) {
	switch err {
	case ErrHubClosed:
		h.m.refusals[refClosing].Add(1)
	case errTooManyClients:
		h.m.refusals[refLimit].Add(1)
	default:
		h.m.refusals[refOverload].Add(1)
	}
	w.Header().Set("Retry-After", strconv.Itoa(1+rand.IntN(2)))
	http.Error(w, err.Error(), http.StatusServiceUnavailable)
}
