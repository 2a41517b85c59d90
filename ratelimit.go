package wshub

import "time"

// rateLimit is a token bucket of Options.RateLimit tokens per second, up
// to Options.RateBurst; a message takes one. It belongs to a client's read
// goroutine, so it needs no lock, and costs nothing when RateLimit is 0.
type rateLimit struct {
	tokens float64
	last   time.Time
}

// allow reports whether a message read now is within the limit.
func (r *rateLimit) allow(o *options) bool {
	if o.RateLimit <= 0 {
		return true
	}
	now := time.Now()
	if r.last.IsZero() {
		r.tokens = float64(o.RateBurst)
	} else {
		r.tokens = min(float64(o.RateBurst), r.tokens+now.Sub(r.last).Seconds()*o.RateLimit)
	}
	r.last = now
	if r.tokens < 1 {
		return false
	}
	r.tokens--
	return true
}
