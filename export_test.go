package wshub

import "time"

// PingNow pings c at once, as the hub's keepalive would.
func PingNow(c *Client) { c.ping(newRawIO(nil)) }

// SetAdmitFloor sets how many upgrades per interval h lets in while its
// process is overloaded; call it before h serves.
func SetAdmitFloor(h *Hub, n int) { h.admission.floor = n }

// SetOverloaded makes h read whether its process is overloaded from f,
// instead of from the scheduler's latencies; call it before h serves.
func SetOverloaded(h *Hub, f func() bool) { h.admission.overloaded = f }

// SchedulerOverloaded takes a reading of the scheduler's latencies as the
// hub's admission does: whether their 99th percentile since the last
// reading of a passes the overload bound.
func SchedulerOverloaded(h *Hub) bool {
	h.admission.mu.Lock()
	defer h.admission.mu.Unlock()
	return h.admission.measure()
}

// NewMemoryEngineWithClock is NewMemoryEngine with a clock of the test's.
func NewMemoryEngineWithClock(maxBytes int64, now func() time.Time) Engine {
	e := NewMemoryEngine(maxBytes).(*memEngine)
	e.hist.now = now
	return e
}

// The reasons that the exported errors group, for tests that tell them
// apart.
var (
	ErrSendQueueFull   = errSendQueueFull
	ErrWriteTimeout    = errWriteTimeout
	ErrInvalidMessage  = errInvalidMessage
	ErrInvalidRoom     = errInvalidRoom
	ErrUnknownType     = errUnknownType
	ErrUnsupportedData = errUnsupportedData
	ErrJoinDenied      = errJoinDenied
	ErrPublishDenied   = errPublishDenied
	ErrNotMember       = errNotMember
	ErrTooManyRooms    = errTooManyRooms
	ErrNoPresence      = errNoPresence
	ErrRateLimited     = errRateLimited
	ErrRejected        = errRejected
	ErrTooManyClients  = errTooManyClients
	ErrBroker          = errBroker
	ErrHistory         = errHistory
)

// Limits that are not options.
const (
	DefaultReadLimit   = defaultReadLimit
	DefaultMaxRooms    = defaultMaxRooms
	DefaultHistoryAge  = defaultHistoryAge
	MaxHistoryReplay   = maxHistoryReplay
	MaxInfoBytes       = maxInfoBytes
	MaxInvalidMessages = maxInvalidMessages
	MaxPresenceList    = maxPresenceList
	MaxRoomNameLen     = maxRoomNameLen
	PresenceInterval   = presenceInterval
)

// SetClock makes h read the time from now and set its token timers with
// afterFunc, which returns the timer's Stop; call it before h serves.
func SetClock(h *Hub, now func() time.Time, afterFunc func(time.Duration, func()) func() bool) {
	h.clock = clock{now: now, afterFunc: afterFunc}
}

// Tokens' limits and reasons.
const (
	AuthTimeout = authTimeout
	ExpiryGrace = expiryGrace
)

var (
	ErrTokenExpired   = errTokenExpired
	ErrAuthTimeout    = errAuthTimeout
	ErrAuthRequired   = errAuthRequired
	ErrUnauthorized   = errUnauthorized
	ErrRefreshRefused = errRefreshRefused
	ErrGrantExpired   = errGrantExpired
)
