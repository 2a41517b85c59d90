package wshub

import "time"

// PingNow starts a keepalive ping of c at once, as its timer would.
func PingNow(c *Client) { c.ping() }

// NewMemoryHistoryWithClock is NewMemoryHistory with a clock of the
// test's.
func NewMemoryHistoryWithClock(maxBytes int64, now func() time.Time) HistoryStore {
	s := NewMemoryHistory(maxBytes).(*memoryHistory)
	s.now = now
	return s
}
