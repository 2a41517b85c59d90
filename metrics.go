package wshub

import (
	"errors"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Metrics: what a hub has done, always on. Every figure is an atomic
// counter or a fixed-bucket histogram of atomic counters, updated where
// the hub does the thing; Hub.Stats reads them.

// Stats are a hub's figures: gauges of now, and counters since New. Once a
// hub's clients are gone, every message ever queued for one is in
// MessagesOut or in Dropped. The maps are the caller's: Stats returns new
// ones each time, with every key of the reasons documented, zero or not.
type Stats struct {
	Clients int // connected clients
	Rooms   int // rooms with at least one member
	Members int // room memberships, joins under way included: a client in three rooms counts three

	MessagesIn  uint64 // messages read from clients
	MessagesOut uint64 // queued messages written to a client's socket; a batch frame counts each
	Dropped     uint64 // queued messages not written because their client was closed first
	Kicked      uint64 // clients closed for holding others up: a full send queue or a write timeout
	Refused     uint64 // upgrades answered 503: the hub closing, MaxClients, or overloaded

	Accepted uint64 // upgrades that became clients

	// Refusals counts the upgrades refused, by reason: "auth"
	// (Authenticate's error), "origin" (a cross-origin request not
	// allowed, 403), "handshake" (not a valid WebSocket handshake),
	// "limit" (MaxClients), "overload" (a reconnect storm), "closing".
	Refusals map[string]uint64

	// Closes counts the clients gone, by reason: "normal" (the client
	// closed with 1000 or 1001), "peer error" (the client closed with
	// another code), "lost" (the connection failed without a close),
	// "queue full" and "write timeout" (kicked, as Kicked), "pong
	// timeout", "rate limit", "invalid" (invalid messages), "engine"
	// (1012: its room's history lost messages), "shutdown", "server"
	// (Client.Close, Hub.DisconnectUser), "token expired" (4001: no
	// refresh in time, or no sign-in within 10 s), "signed out" (4003: a
	// first frame without a token the hub accepts).
	Closes map[string]uint64

	// CloseCodes counts the same closes by the status code of the close
	// handshake, whichever side began it; 1006 when there was none.
	CloseCodes map[int]uint64

	Joins  uint64 // rooms joined, by the client's request or Client.Join
	Leaves uint64 // rooms left, disconnects included

	// JoinRefusals counts the joins clients asked for and did not get,
	// by reason: "denied" (AuthorizeJoin), "too many rooms", "invalid"
	// (a room name or history field), "engine" (its history could not be
	// read, or the room not followed).
	JoinRefusals map[string]uint64

	// In counts the messages read, by type: "publish", "join", "leave",
	// "presence", "app" (the Handler's types), "invalid" (undecodable,
	// or refused by the rate limit before being handled).
	In map[string]uint64

	// Queued counts the messages queued for clients, by kind: "message"
	// (room messages and Hub.Broadcast), "replay" (history and
	// recovery, before a join's ack), "reply" (acks and errors),
	// "presence" (states and diffs), "app" (Client.Send).
	Queued map[string]uint64

	BytesOut  uint64 // bytes of frames written to clients' sockets
	FramesOut uint64 // data frames written: MessagesOut / FramesOut is messages per frame

	// PublishAck is the time, in seconds, from reading a client's
	// publish to queueing its ack (or its error): the engine's
	// confirmation, the delivery here and the wait for congested queues.
	PublishAck Histogram

	// EngineWait is the time, in seconds, from handing a room message to
	// the engine to its confirmation, for clients' publishes and
	// Room.Broadcast alike.
	EngineWait Histogram

	// QueueDepth is how many messages a client's writer took from its
	// queue at once.
	QueueDepth Histogram

	// Recoveries counts the joins that asked to recover (epoch and
	// since), by outcome: "recovered", "not recovered", "no history"
	// (a room without history).
	Recoveries map[string]uint64

	Replayed uint64 // messages replayed from history before a join's ack

	PresenceDiffs   uint64 // presence_diff frames queued
	PresenceEntries uint64 // joins and leaves those frames listed

	EngineErrors uint64 // engine calls that failed: publishes, history reads, follows

	// EngineReconnects counts the engine's reconnections to its bus, for
	// an engine that counts them with a method Reconnects() uint64, as
	// natsbroker's do; 0 for the others.
	EngineReconnects uint64

	// Labels counts room messages by the label Options.RoomLabel gives
	// their room (nil without it): published here, and queued for
	// members here.
	Labels map[string]LabelStats
}

// LabelStats are the figures of the rooms of one Options.RoomLabel.
type LabelStats struct {
	Published uint64 // messages handed to the engine by this hub: clients' publishes and Room.Broadcast
	Delivered uint64 // messages queued for members of this hub
}

// A Histogram is a distribution of observations in fixed buckets:
// Counts[i] observations were at most Bounds[i] and above Bounds[i-1];
// the last count is of those above every bound. Sum is their sum.
type Histogram struct {
	Bounds []float64
	Counts []uint64
	Sum    float64
}

// Count returns the number of observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Quantile estimates the q-quantile (0 < q ≤ 1) by linear interpolation
// within its bucket, as Prometheus's histogram_quantile does; the bucket
// above every bound yields the last bound. It returns NaN without
// observations.
func (h Histogram) Quantile(q float64) float64 {
	n := h.Count()
	if n == 0 || len(h.Bounds) == 0 {
		return math.NaN()
	}
	rank := q * float64(n)
	var seen float64
	for i, c := range h.Counts {
		if seen+float64(c) >= rank && c > 0 {
			if i == len(h.Bounds) {
				return h.Bounds[i-1]
			}
			lo := 0.0
			if i > 0 {
				lo = h.Bounds[i-1]
			}
			return lo + (h.Bounds[i]-lo)*(rank-seen)/float64(c)
		}
		seen += float64(c)
	}
	return h.Bounds[len(h.Bounds)-1]
}

// histogram is a Histogram being filled, with atomic counters.
type histogram struct {
	bounds []float64
	counts []atomic.Uint64
	sum    atomic.Uint64 // of observations × sumScale, rounded
}

// sumScale keeps the sum of seconds in integers: nanoseconds.
const sumScale = 1e9

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // the first bound ≥ v
	h.counts[i].Add(1)
	h.sum.Add(uint64(math.Round(v * sumScale)))
}

func (h *histogram) since(t time.Time) { h.observe(time.Since(t).Seconds()) }

func (h *histogram) snapshot() Histogram {
	s := Histogram{Bounds: h.bounds, Counts: make([]uint64, len(h.counts)), Sum: float64(h.sum.Load()) / sumScale}
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
	}
	return s
}

// Bucket bounds: latencies in seconds, from 0.1 ms to 10 s; queue depths
// in messages, up to the default SendQueue.
var (
	latencyBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
	depthBounds   = [...]float64{1, 2, 4, 8, 16, 32, 64, 128, 256}
)

// The keys of Stats' maps: each counter's index is its key's.
var (
	refusalKeys  = [...]string{"auth", "origin", "handshake", "limit", "overload", "closing"}
	closeKeys    = [...]string{"normal", "peer error", "lost", "queue full", "write timeout", "pong timeout", "rate limit", "invalid", "engine", "shutdown", "server", "token expired", "signed out"}
	closeCodes   = [...]int{1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 4001, 4003, 4000}
	joinKeys     = [...]string{"denied", "too many rooms", "invalid", "engine"}
	inKeys       = [...]string{"publish", "join", "leave", "presence", "app", "invalid"}
	queuedKeys   = [...]string{"message", "replay", "reply", "presence", "app"}
	recoveryKeys = [...]string{"recovered", "not recovered", "no history"}
)

// Indexes into the counters of those keys.
const (
	refAuth, refOrigin, refHandshake, refLimit, refOverload, refClosing = 0, 1, 2, 3, 4, 5

	inPublish, inJoin, inLeave, inPresence, inApp, inInvalid = 0, 1, 2, 3, 4, 5

	qMessage, qReplay, qReply, qPresence, qApp = 0, 1, 2, 3, 4

	counted = -1 // the caller of enqueue counts the message in Stats.Queued

	recRecovered, recNotRecovered, recNoHistory = 0, 1, 2

	joinDenied, joinTooMany, joinInvalid, joinEngine = 0, 1, 2, 3
)

// Indexes of closeKeys.
const (
	closeNormal = iota
	closePeerError
	closeLost
	closeQueueFull
	closeWriteTimeout
	closePongTimeout
	closeRateLimit
	closeInvalid
	closeEngine
	closeShutdown
	closeServer
	closeTokenExpired
	closeSignedOut
)

// counters are the counters behind Stats.
type counters struct {
	messagesIn, kicked atomic.Uint64

	// What clients' writers count, spread over shards: each client counts
	// in one, so that writers on different cores do not contend for a
	// cache line.
	writes    [writeShards]writeShard
	nextShard atomic.Uint32

	accepted, joins, leaves                      atomic.Uint64
	members                                      atomic.Int64
	replayed, presDiffs, presEntries, engineErrs atomic.Uint64

	refusals   [len(refusalKeys)]atomic.Uint64
	closes     [len(closeKeys)]atomic.Uint64
	codes      [len(closeCodes)]atomic.Uint64 // another code counts as 4000 and above, see codeSlot
	joinRef    [len(joinKeys)]atomic.Uint64
	in         [len(inKeys)]atomic.Uint64
	queued     [len(queuedKeys)]atomic.Uint64
	recoveries [len(recoveryKeys)]atomic.Uint64

	publishAck, engineWait *histogram

	labels sync.Map // label → *labelCounters, with Options.RoomLabel
}

type labelCounters struct{ published, delivered atomic.Uint64 }

// writeShards is how many shards the writers' counts are spread over.
const writeShards = 16

// writeShard is what the writers of some clients count: messages written
// and dropped, frames and bytes written, and the histogram of their
// batches (depthBounds are the powers of two, so a batch's bucket is its
// bit length). It fills whole cache lines of its own.
type writeShard struct {
	out, dropped, frames, bytes, depthSum atomic.Uint64
	depth                                 [len(depthBounds) + 1]atomic.Uint64
	_                                     [64 - (15*8)%64]byte
}

// shard returns the shard of a new client.
func (m *counters) shard() *writeShard {
	return &m.writes[m.nextShard.Add(1)%writeShards]
}

func newCounters() counters {
	return counters{
		publishAck: newHistogram(latencyBounds),
		engineWait: newHistogram(latencyBounds),
	}
}

// noLabel counts the rooms whose label is "": in no Stats.Labels.
var noLabel labelCounters

// label returns the counters of the rooms labeled l.
func (m *counters) label(l string) *labelCounters {
	if l == "" {
		return &noLabel
	}
	if v, ok := m.labels.Load(l); ok {
		return v.(*labelCounters)
	}
	v, _ := m.labels.LoadOrStore(l, new(labelCounters))
	return v.(*labelCounters)
}

// closed counts a client gone: why, and with which close code (0: none).
func (m *counters) closed(cause error, code websocket.StatusCode) {
	m.closes[closeSlot(cause, &code)].Add(1)
	m.codes[codeSlot(code)].Add(1)
}

// closeSlot classifies a disconnect reason as one of closeKeys, and sets
// *code to the peer's close code when the peer closed, or 1006 for none.
func closeSlot(cause error, code *websocket.StatusCode) int {
	if ce, ok := errors.AsType[websocket.CloseError](cause); ok {
		*code = ce.Code
		if ce.Code == websocket.StatusNormalClosure || ce.Code == websocket.StatusGoingAway {
			return closeNormal
		}
		return closePeerError
	}
	if *code == 0 {
		*code = websocket.StatusAbnormalClosure
	}
	switch {
	case errors.Is(cause, errSendQueueFull):
		return closeQueueFull
	case errors.Is(cause, errWriteTimeout):
		*code = websocket.StatusAbnormalClosure // cut: its socket was full
		return closeWriteTimeout
	case errors.Is(cause, ErrPongTimeout):
		*code = websocket.StatusAbnormalClosure
		return closePongTimeout
	case errors.Is(cause, errRateLimited):
		return closeRateLimit
	case errors.Is(cause, ErrInvalid):
		return closeInvalid
	case errors.Is(cause, ErrEngine):
		return closeEngine
	case errors.Is(cause, ErrHubClosed):
		return closeShutdown
	case errors.Is(cause, ErrClientClosed):
		return closeServer
	case errors.Is(cause, errTokenExpired), errors.Is(cause, errAuthTimeout):
		return closeTokenExpired
	case errors.Is(cause, errUnauthorized), errors.Is(cause, errAuthRequired):
		return closeSignedOut
	}
	*code = websocket.StatusAbnormalClosure
	return closeLost
}

// codeSlot is the index of code in closeCodes; codes not listed count in
// the last slot, 4000 (the application's range but 4001 and 4003, and any
// other).
func codeSlot(code websocket.StatusCode) int {
	for i, c := range closeCodes {
		if int(code) == c {
			return i
		}
	}
	return len(closeCodes) - 1
}

// joinRefused counts a client's join refused with err.
func (m *counters) joinRefused(err error) {
	switch {
	case errors.Is(err, errJoinDenied):
		m.joinRef[joinDenied].Add(1)
	case errors.Is(err, errTooManyRooms):
		m.joinRef[joinTooMany].Add(1)
	case errors.Is(err, ErrEngine):
		m.joinRef[joinEngine].Add(1)
	default:
		m.joinRef[joinInvalid].Add(1)
	}
}

// inSlot is the In key of a message of type typ.
func inSlot(typ string) int {
	switch typ {
	case TypePublish:
		return inPublish
	case TypeJoin:
		return inJoin
	case TypeLeave:
		return inLeave
	case TypePresence:
		return inPresence
	}
	return inApp
}

// Stats returns the hub's figures. It is cheap and safe to call any time.
func (h *Hub) Stats() Stats {
	h.mu.RLock()
	s := Stats{Clients: len(h.clients) + len(h.waiting), Rooms: len(h.rooms)}
	h.mu.RUnlock()
	m := &h.m
	s.Members = int(m.members.Load())
	s.MessagesIn = m.messagesIn.Load()
	s.QueueDepth = Histogram{Bounds: depthBounds[:], Counts: make([]uint64, len(depthBounds)+1)}
	for i := range m.writes {
		w := &m.writes[i]
		s.MessagesOut += w.out.Load()
		s.Dropped += w.dropped.Load()
		s.FramesOut += w.frames.Load()
		s.BytesOut += w.bytes.Load()
		s.QueueDepth.Sum += float64(w.depthSum.Load())
		for j := range w.depth {
			s.QueueDepth.Counts[j] += w.depth[j].Load()
		}
	}
	s.Kicked = m.kicked.Load()
	s.Accepted = m.accepted.Load()
	s.Joins, s.Leaves = m.joins.Load(), m.leaves.Load()
	s.Replayed = m.replayed.Load()
	s.PresenceDiffs, s.PresenceEntries = m.presDiffs.Load(), m.presEntries.Load()
	s.EngineErrors = m.engineErrs.Load()
	if r, ok := h.opts.Engine.(interface{ Reconnects() uint64 }); ok {
		s.EngineReconnects = r.Reconnects()
	}
	s.Refusals = keyed(refusalKeys[:], m.refusals[:])
	s.Refused = s.Refusals["limit"] + s.Refusals["overload"] + s.Refusals["closing"] // the 503s
	s.Closes = keyed(closeKeys[:], m.closes[:])
	s.JoinRefusals = keyed(joinKeys[:], m.joinRef[:])
	s.In = keyed(inKeys[:], m.in[:])
	s.Queued = keyed(queuedKeys[:], m.queued[:])
	s.Recoveries = keyed(recoveryKeys[:], m.recoveries[:])
	s.CloseCodes = make(map[int]uint64, len(closeCodes))
	for i, c := range closeCodes {
		s.CloseCodes[c] = m.codes[i].Load()
	}
	s.PublishAck = m.publishAck.snapshot()
	s.EngineWait = m.engineWait.snapshot()
	if h.opts.RoomLabel != nil {
		s.Labels = make(map[string]LabelStats)
		m.labels.Range(func(k, v any) bool {
			lc := v.(*labelCounters)
			s.Labels[k.(string)] = LabelStats{Published: lc.published.Load(), Delivered: lc.delivered.Load()}
			return true
		})
	}
	return s
}

func keyed(keys []string, counters []atomic.Uint64) map[string]uint64 {
	out := make(map[string]uint64, len(keys))
	for i, k := range keys {
		out[k] = counters[i].Load()
	}
	return out
}

// joined counts the outcome of a join a client asked for: a refusal by
// reason, or the recovery it asked for.
func (m *counters) joined(req, ack *Message, err error) {
	switch {
	case err != nil:
		m.joinRefused(err)
	case req.Epoch == "":
	case ack.Epoch == "":
		m.recoveries[recNoHistory].Add(1)
	case ack.Recovered != nil && *ack.Recovered:
		m.recoveries[recRecovered].Add(1)
	default:
		m.recoveries[recNotRecovered].Add(1)
	}
}

// labelOf returns the counters of room name's label (rm, if not nil, is
// the room, which keeps them), asking Options.RoomLabel once per room.
func (h *Hub) labelOf(rm *room, name string) *labelCounters {
	if rm != nil {
		if lc := rm.label.Load(); lc != nil {
			return lc
		}
	}
	lc := h.m.label(h.opts.RoomLabel(name))
	if rm != nil {
		rm.label.Store(lc)
	}
	return lc
}
