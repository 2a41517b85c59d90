package natsbroker

import (
	"container/list"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/wshub/wshub"
)

// Settings of the room log's streams and of its appends.
const (
	// defaultHistoryAge is the MaxAge of a HistoryPolicy that leaves it
	// zero, as wshub has it: an hour.
	defaultHistoryAge = time.Hour

	// dupWindow is how long JetStream remembers message IDs, so that an
	// append retried within it stores its message once. It is capped by
	// the stream's MaxAge.
	dupWindow = 2 * time.Minute

	// Waits between the attempts of an append that JetStream did not
	// answer (no stream yet, right after a server restart), and between
	// the failed attempts of a follow to get going again.
	retryMin = 50 * time.Millisecond
	retryMax = 2 * time.Second
)

// Log is a wshub.Engine on NATS JetStream: the rooms with a history
// policy go through a log that every hub shares, the others through core
// NATS exactly as with a Broker, whose methods it has; it is a
// wshub.PresenceEngine and a wshub.CommandEngine as a Broker is. See
// the package documentation, "Room log (JetStream)". Its methods are
// safe for concurrent use.
type Log struct {
	*Broker
	js       jetstream.JetStream
	storage  jetstream.StorageType
	replicas int

	smu     sync.Mutex
	streams map[wshub.HistoryPolicy]*logStream // by policy, MaxAge filled in; guarded by smu

	wmu     sync.Mutex // serializes the writes of appends
	pending list.List  // *appendOp written and not answered, in the order of their appends

	snaps snapshotLog // reads of a room's history share a snapshot
}

var _ wshub.PresenceEngine = (*Log)(nil)

// NewLog returns a Log on nc, which stays the caller's: Close does not
// close it. nc's server must have JetStream enabled. opts may be nil for
// the defaults; as for New, nc should be made with
// nats.ReconnectBufSize(-1). NewLog does not use the network: each stream
// is created when a room of its policy is first used.
func NewLog(nc *nats.Conn, opts *Options) (*Log, error) {
	b, err := New(nc, opts)
	if err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		return nil, fmt.Errorf("natsbroker: %d replicas, want 1 to 5", o.Replicas)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(b.timeout))
	if err != nil {
		return nil, fmt.Errorf("natsbroker: jetstream: %w", err)
	}
	b.follows = make(map[string]*follow)
	l := &Log{
		Broker:   b,
		js:       js,
		storage:  jetstream.FileStorage,
		replicas: o.Replicas,
		streams:  make(map[wshub.HistoryPolicy]*logStream),
	}
	if o.MemoryStorage {
		l.storage = jetstream.MemoryStorage
	}
	return l, nil
}

// logStream is the stream of one history policy.
type logStream struct {
	name    string
	subject string // its rooms' subjects are this plus the room token
	cfg     jetstream.StreamConfig

	sem    chan struct{} // held while creating the stream
	mu     sync.Mutex
	handle jetstream.Stream // nil until created, or once found gone
	epoch  string           // of handle
}

// stream returns the stream of policy p, without using the network.
func (l *Log) stream(p wshub.HistoryPolicy) *logStream {
	age := p.MaxAge
	if age <= 0 {
		age = defaultHistoryAge
	}
	key := wshub.HistoryPolicy{Messages: p.Messages, MaxAge: age}
	l.smu.Lock()
	defer l.smu.Unlock()
	if s := l.streams[key]; s != nil {
		return s
	}
	ageTok := strconv.FormatInt(int64(age/time.Second), 10) + "s"
	if age%time.Second != 0 {
		ageTok = strconv.FormatInt(int64(age), 10) + "ns"
	}
	token := strconv.Itoa(p.Messages) + "_" + ageTok
	prefix := strings.TrimSuffix(l.prefix, ".")
	s := &logStream{
		name:    streamName(prefix, token),
		subject: l.prefix + "log." + token + ".",
		sem:     make(chan struct{}, 1),
	}
	s.cfg = jetstream.StreamConfig{
		Name:              s.name,
		Description:       "wshub room log of " + prefix,
		Subjects:          []string{s.subject + "*"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: int64(p.Messages),
		MaxAge:            age,
		Duplicates:        min(dupWindow, age),
		Storage:           l.storage,
		Replicas:          l.replicas,
		AllowDirect:       true,
	}
	l.streams[key] = s
	return s
}

// streamName returns the name of the stream of the policy token under
// prefix: prefixName, "log" and the token.
func streamName(prefix, token string) string {
	return prefixName(prefix) + "_log_" + token
}

// prefixName returns the start of the names of the streams and buckets of
// prefix: the prefix with the characters that names do not allow
// replaced by "_", and a hash of the exact prefix, so that prefixes that
// read alike do not share streams.
func prefixName(prefix string) string {
	clean := []byte(prefix)
	for i, c := range clean {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			clean[i] = '_'
		}
	}
	if len(clean) > 64 {
		clean = clean[:64]
	}
	h := fnv.New32a()
	h.Write([]byte(prefix))
	return fmt.Sprintf("%s_%08x", clean, h.Sum32())
}

// epochOf names an incarnation of stream name: the stream's creation time,
// which changes only when the stream is created again, and a hash of the
// name, since a room's policy, and so its stream, may change.
func epochOf(name string, created time.Time) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	return fmt.Sprintf("%08x-%s", h.Sum32(), strconv.FormatInt(created.UnixNano(), 36))
}

// ensure returns the stream's handle, creating or updating the stream on
// the server the first time and after invalidate.
func (s *logStream) ensure(ctx context.Context, l *Log) (jetstream.Stream, error) {
	if h, _ := s.current(); h != nil {
		return h, nil
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.sem }()
	if h, _ := s.current(); h != nil {
		return h, nil
	}
	if !l.nc.IsConnected() {
		return nil, fmt.Errorf("%w (%v)", ErrNotConnected, l.nc.Status())
	}
	h, err := l.js.CreateOrUpdateStream(ctx, s.cfg)
	if err != nil {
		return nil, l.connErr(fmt.Errorf("natsbroker: stream %s: %w", s.name, err))
	}
	s.mu.Lock()
	s.handle, s.epoch = h, epochOf(s.name, h.CachedInfo().Created)
	s.mu.Unlock()
	return h, nil
}

func (s *logStream) current() (jetstream.Stream, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handle, s.epoch
}

// invalidate forgets handle h, found gone, so that the next ensure creates
// the stream again.
func (s *logStream) invalidate(h jetstream.Stream) {
	s.mu.Lock()
	if s.handle == h {
		s.handle, s.epoch = nil, ""
	}
	s.mu.Unlock()
}

// roomSubject returns the subject of room in stream s.
func (s *logStream) roomSubject(room string) string {
	return s.subject + base64.RawURLEncoding.EncodeToString([]byte(room))
}

// LogSubject returns the subject of room in the log, for rooms of policy
// p: the prefix, "log", a token of the policy, and the room's token as in
// Subject, e.g. "wshub.room.log.100_3600s.bG9iYnk" for room "lobby" with
// HistoryPolicy{Messages: 100}. LogStream returns its stream's name.
func (l *Log) LogSubject(room string, p wshub.HistoryPolicy) string {
	return l.stream(p).roomSubject(room)
}

// LogStream returns the name of the JetStream stream that keeps the rooms
// of policy p, e.g. "wshub_room_1b2c3d4e_log_100_3600s".
func (l *Log) LogStream(p wshub.HistoryPolicy) string { return l.stream(p).name }

// boundCtx bounds ctx by the timeout when it has no deadline.
func (l *Log) boundCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, l.timeout)
}

func checkPolicy(p wshub.HistoryPolicy) error {
	if p.Messages <= 0 {
		return fmt.Errorf("natsbroker: history policy keeps %d messages: the room has no log", p.Messages)
	}
	return nil
}

// Publish hands msg to the room's log if p keeps history, with id as its
// JetStream message ID (the Nats-Msg-Id header), and returns at once; the
// returned wait waits for JetStream's acknowledgement. Publishes do not
// wait for each other: each is published asynchronously, in the order of
// the Publish calls on this Log, and the stream stores them in that
// order. A room without history goes through core NATS, as with
// Broker.Publish.
//
// If the connection is not up when Publish is called, or the message
// could not be written on it, wait returns an error wrapping
// ErrNotConnected: the message is stored nowhere. An error from JetStream
// for the first attempt (a stream that cannot be created, or none
// answering) is as definite. Once an attempt has been written, wait waits
// for its acknowledgement; when none comes (the connection broke, or
// Options.Timeout passed) the message is sent again with the same ID,
// which JetStream stores at most once, until an acknowledgement comes or
// ctx ends, and wait then returns an error wrapping ErrUnconfirmed (see
// it). After a reconnection the messages that await their
// acknowledgement are sent again in their first order, before any
// published later, so that the order holds. When ctx has no deadline,
// Options.Timeout bounds the publish. wait must be called once.
func (l *Log) Publish(ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) (wait func() error) {
	if p.Messages <= 0 {
		return l.Broker.Publish(ctx, room, p, id, msg)
	}
	w := l.appendLog(ctx, room, p, id, msg)
	return func() error {
		_, err := w()
		return err
	}
}

// appendLog is Publish to a history room; its wait also returns msg's
// seq, its sequence in the stream of the room's policy.
func (l *Log) appendLog(ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) (wait func() (uint64, error)) {
	fail := func(err error) func() (uint64, error) { return func() (uint64, error) { return 0, err } }
	if err := checkPolicy(p); err != nil {
		return fail(err)
	}
	if l.isClosed() {
		return fail(ErrClosed)
	}
	if !l.nc.IsConnected() {
		return fail(fmt.Errorf("%w (%v)", ErrNotConnected, l.nc.Status()))
	}
	ctx, cancel := l.boundCtx(ctx)
	s := l.stream(p)
	h, err := s.ensure(ctx, l)
	if err != nil {
		cancel()
		return fail(err)
	}
	m := &nats.Msg{Subject: s.roomSubject(room), Data: msg, Header: nats.Header{}}
	m.Header.Set(jetstream.MsgIDHeader, id)
	m.Header.Set(jetstream.ExpectedStreamHeader, s.name)
	op := &appendOp{l: l, s: s, h: h, room: room, m: m}

	l.wmu.Lock()
	if !l.resendLocked() {
		l.wmu.Unlock()
		cancel()
		return fail(fmt.Errorf("%w: append to %q: earlier appends wait to be sent again", ErrNotConnected, room))
	}
	op.conn = connID(l.nc)
	op.f, err = l.js.PublishMsgAsync(m, jetstream.WithRetryAttempts(0))
	if err != nil {
		l.wmu.Unlock()
		cancel()
		return fail(l.connErr(fmt.Errorf("natsbroker: append to %q: %w", room, err)))
	}
	op.elem = l.pending.PushBack(op)
	l.wmu.Unlock()
	return func() (uint64, error) {
		defer cancel()
		return op.wait(ctx)
	}
}

// appendOp is an append waiting for its acknowledgement.
type appendOp struct {
	l    *Log
	s    *logStream
	h    jetstream.Stream
	room string
	m    *nats.Msg

	// Guarded by Log.wmu.
	f     jetstream.PubAckFuture // the attempt in flight; nil when none
	conn  uint64                 // connID from before f was written
	elem  *list.Element          // in Log.pending
	maybe bool                   // an attempt may have been stored
}

// resendLocked sends again, in their order, the appends in flight that
// were written on an earlier connection or have no attempt in flight, and
// reports whether it sent all of them. l.wmu is held.
func (l *Log) resendLocked() bool {
	cur := connID(l.nc)
	for e := l.pending.Front(); e != nil; e = e.Next() {
		op := e.Value.(*appendOp)
		if op.f != nil && op.conn == cur {
			continue
		}
		f, err := l.js.PublishMsgAsync(op.m, jetstream.WithRetryAttempts(0))
		if err != nil {
			return false
		}
		// An earlier attempt was written and not answered, or was
		// answered with a failure after one that may have been stored.
		op.f, op.conn, op.maybe = f, cur, true
	}
	return true
}

// wait waits for the append's acknowledgement, sending it again as
// needed; see Publish.
func (op *appendOp) wait(ctx context.Context) (uint64, error) {
	l := op.l
	defer func() {
		l.wmu.Lock()
		l.pending.Remove(op.elem)
		l.wmu.Unlock()
	}()
	backoff := retryMin
	for {
		l.wmu.Lock()
		if op.f == nil && l.nc.IsConnected() {
			l.resendLocked()
		}
		f := op.f
		l.wmu.Unlock()
		if f == nil {
			// Not sent again yet: the connection is down, or went down
			// again while sending.
			if err := l.waitConnected(ctx); err != nil {
				return 0, unconfirmed(op.room, err)
			}
			if err := l.pause(ctx, &backoff); err != nil {
				return 0, unconfirmed(op.room, err)
			}
			continue
		}
		var err error
		select {
		case ack := <-f.Ok():
			return ack.Sequence, nil
		case err = <-f.Err():
		case <-ctx.Done():
			return 0, unconfirmed(op.room, ctx.Err())
		case <-l.done:
			return 0, unconfirmed(op.room, ErrClosed)
		}
		l.wmu.Lock()
		current := op.f == f
		if current {
			op.f = nil
		}
		maybe := op.maybe
		l.wmu.Unlock()
		if !current {
			continue // sent again meanwhile
		}
		var apiErr *jetstream.APIError
		switch {
		case errors.Is(err, jetstream.ErrNoStreamResponse):
			// No stream took this attempt: it stored nothing. The stream
			// may be gone (a restart of memory storage) or not loaded yet
			// (a server that is starting).
			op.s.invalidate(op.h)
			if !maybe {
				return 0, fmt.Errorf("natsbroker: append to %q: %w", op.room, err)
			}
			if err := l.pause(ctx, &backoff); err != nil {
				return 0, unconfirmed(op.room, err)
			}
			if op.h, err = op.s.ensure(ctx, l); err != nil && ctx.Err() != nil {
				return 0, unconfirmed(op.room, err)
			}
		case errors.As(err, &apiErr):
			// JetStream refused this attempt.
			if maybe {
				return 0, unconfirmed(op.room, err)
			}
			return 0, fmt.Errorf("natsbroker: append to %q: %w", op.room, err)
		default:
			// Disconnected or timed out: the attempt may have been stored.
			l.wmu.Lock()
			op.maybe = true
			l.wmu.Unlock()
			if err := l.waitConnected(ctx); err != nil {
				return 0, unconfirmed(op.room, err)
			}
		}
	}
}

func unconfirmed(room string, err error) error {
	return fmt.Errorf("%w: append to %q: %w", ErrUnconfirmed, room, err)
}

// pause waits for *wait, doubled for the next time up to retryMax, within
// ctx and until Close.
func (l *Log) pause(ctx context.Context, wait *time.Duration) error {
	t := time.NewTimer(*wait)
	defer t.Stop()
	*wait = min(2**wait, retryMax)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-l.done:
		return ErrClosed
	}
}

// waitConnected returns once the connection is up, or with ctx's error,
// ErrClosed after Close, or ErrNotConnected once the connection is closed.
func (l *Log) waitConnected(ctx context.Context) error {
	if l.nc.IsConnected() {
		return nil
	}
	ch := l.nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer l.nc.RemoveStatusListener(ch)
	for !l.nc.IsConnected() {
		if l.nc.IsClosed() {
			return fmt.Errorf("%w: %w", ErrNotConnected, nats.ErrConnectionClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-l.done:
			return ErrClosed
		}
	}
	return nil
}

// errStreamGone means that the stream was not found: deleted, or lost
// with a restart of memory storage.
var errStreamGone = errors.New("natsbroker: log stream not found")

// Read returns the room's retained messages with a seq above after, oldest
// first, the newest limit of them when there are more (all with a negative
// limit, none with zero), and where the room's log stands; see
// wshub.LogPage. A room without history is read as with Broker.Read. Complete is derived from the stream's state, since
// JetStream drops messages oldest first (MaxAge stream-wide below its
// first sequence, MaxMsgsPerSubject a room's oldest): with n retained
// messages of the room, the oldest being oldest, it is after+1 >= the
// stream's first sequence when n < p.Messages, and after+1 >= oldest
// otherwise. It is conservative, it may report a loss when messages of
// other rooms fill the gap, and does not account for messages that an
// operator deleted or purged.
//
// A read takes two round trips: a direct get of the room's messages (one
// batch of at most p.Messages, read in one step by the server) or, with a
// zero limit, of its last message, and the stream's info. With Replicas
// above 1 it also asks the stream's leader for the room's last message,
// and reads again until the replica that answers has it. When ctx has no
// deadline, Options.Timeout bounds the read. Reads of one room that
// overlap share one read of its messages, and their pages share the
// messages: read them, do not modify them.
func (l *Log) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	if p.Messages <= 0 {
		return l.Broker.Read(ctx, room, p, after, limit)
	}
	if l.isClosed() {
		return wshub.LogPage{}, ErrClosed
	}
	if !l.nc.IsConnected() {
		return wshub.LogPage{}, fmt.Errorf("%w (%v)", ErrNotConnected, l.nc.Status())
	}
	ctx, cancel := l.boundCtx(ctx)
	defer cancel()
	s := l.stream(p)
	subj := s.roomSubject(room)
	gone := 0
	for {
		h, err := s.ensure(ctx, l)
		if err != nil {
			return wshub.LogPage{}, err
		}
		page, again, err := l.read(ctx, s, h, subj, p, after, limit)
		switch {
		case errors.Is(err, errStreamGone) && gone < 3:
			gone++
			s.invalidate(h)
		case err != nil:
			return wshub.LogPage{}, l.connErr(fmt.Errorf("natsbroker: read %q: %w", room, err))
		case !again:
			return page, nil
		}
		if err := ctx.Err(); err != nil {
			return wshub.LogPage{}, err
		}
	}
}

// read is one attempt of Read. again asks for another: the room got its
// first messages while it read, or a replica lagged.
func (l *Log) read(ctx context.Context, s *logStream, h jetstream.Stream, subj string, p wshub.HistoryPolicy, after uint64, limit int) (page wshub.LogPage, again bool, err error) {
	var leader uint64 // the room's last seq on the leader, with replicas
	if l.replicas > 1 && limit != 0 && after != math.MaxUint64 {
		if leader, err = l.leaderLast(ctx, s, subj); err != nil {
			return page, false, err
		}
	}
	// A snapshot of the room: all its messages (read in one step), or its
	// last one.
	// The stream's state is read after the snapshot: its first sequence
	// can only have grown since, which errs on the side of incomplete.
	full := limit != 0 && after != math.MaxUint64
	var msgs []wshub.Entry
	var oldest, latest uint64
	var info *jetstream.StreamInfo
	if full {
		// Shared with the reads of the room that come meanwhile
		// (snapshot.go).
		sn, serr := l.snapshot(ctx, s, h, subj, p)
		if errors.Is(serr, jetstream.ErrStreamNotFound) {
			return page, false, errStreamGone
		} else if serr != nil {
			return page, false, serr
		}
		msgs, info = sn.msgs, sn.info
		if len(msgs) > 0 {
			oldest, latest = msgs[0].Seq, msgs[len(msgs)-1].Seq
		}
		if latest < leader {
			return page, true, nil // a replica that lags
		}
	} else {
		if latest, err = l.lastSeq(ctx, s, subj); err != nil {
			return page, false, err
		}
		info, err = h.Info(ctx, jetstream.WithSubjectFilter(subj))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return page, false, errStreamGone
		} else if err != nil {
			return page, false, err
		}
	}
	st := info.State
	count := st.Subjects[subj]
	page.Epoch = epochOf(s.name, info.Created)
	switch {
	case latest == 0:
		// The room had no messages. The stream's last sequence is below
		// any it will get only if it still has none.
		if count > 0 {
			return page, true, nil
		}
		latest = st.LastSeq
		page.Complete = after >= latest || after+1 >= st.FirstSeq
	case after >= latest:
		page.Complete = true
	case full:
		page.Complete = after+1 >= oldest || len(msgs) < p.Messages && after+1 >= st.FirstSeq
	case count < uint64(p.Messages):
		page.Complete = after+1 >= st.FirstSeq
	default:
		if oldest, err = l.firstSeq(ctx, s, subj); err != nil {
			return page, false, err
		}
		page.Complete = oldest == 0 || after+1 >= oldest
	}
	page.Latest = latest
	i := 0
	for i < len(msgs) && msgs[i].Seq <= after {
		i++
	}
	msgs = msgs[i:]
	if limit >= 0 && len(msgs) > limit {
		msgs = msgs[len(msgs)-limit:]
	}
	if len(msgs) > 0 {
		page.Messages = msgs[:len(msgs):len(msgs)] // shared with the snapshot's other reads; an append copies
	}
	return page, false, nil
}

// complete reports whether the stream still holds every message of the
// room subj above after (the rule of Read), and the stream's epoch.
func (l *Log) complete(ctx context.Context, s *logStream, h jetstream.Stream, subj string, p wshub.HistoryPolicy, after uint64) (bool, string, error) {
	info, err := h.Info(ctx, jetstream.WithSubjectFilter(subj))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return false, "", errStreamGone
	} else if err != nil {
		return false, "", err
	}
	st, epoch := info.State, epochOf(s.name, info.Created)
	if count := st.Subjects[subj]; count < uint64(p.Messages) {
		return after >= st.LastSeq || after+1 >= st.FirstSeq, epoch, nil
	}
	oldest, err := l.firstSeq(ctx, s, subj)
	if err != nil {
		return false, "", err
	}
	return oldest == 0 || after >= oldest-1, epoch, nil
}

// The JetStream API subjects used directly.
const (
	apiDirectGet = "$JS.API.DIRECT.GET."
	apiMsgGet    = "$JS.API.STREAM.MSG.GET."
	apiNext      = "$JS.API.CONSUMER.MSG.NEXT."
	apiDelete    = "$JS.API.CONSUMER.DELETE."
)

// directBatch returns the messages of subj, oldest first: at most max in
// one batch, which the server reads in one step, and more batches if the
// server cut it short by size.
func (l *Log) directBatch(ctx context.Context, s *logStream, subj string, max int) ([]wshub.Entry, error) {
	inbox := l.nc.NewInbox()
	sub, err := l.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	var out []wshub.Entry
	seq := uint64(1)
	for {
		req := fmt.Appendf(nil, `{"seq":%d,"next_by_subj":%q,"batch":%d}`, seq, subj, max+1)
		if err := l.nc.PublishRequest(apiDirectGet+s.name, inbox, req); err != nil {
			return nil, err
		}
		got := 0
		for {
			m, err := sub.NextMsgWithContext(ctx)
			if err != nil {
				return nil, err
			}
			switch status := m.Header.Get("Status"); status {
			case "":
				n, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
				if err != nil {
					return nil, fmt.Errorf("direct get: sequence %q: %w", m.Header.Get(jetstream.SequenceHeader), err)
				}
				out = append(out, wshub.Entry{Seq: n, JSON: m.Data})
				seq = n + 1
				got++
				continue
			case "204": // end of the batch
				pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
				if pending == 0 || got > max {
					return out, nil
				}
			case "404": // nothing (more)
				return out, nil
			case "503":
				return nil, errStreamGone
			default:
				return nil, fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
			}
			break // cut short by size: read on
		}
	}
}

// directGet returns the seq of the message that a direct get of stream s
// with request body req (or, with a nil body, of the last message of
// subject subj) finds, or 0 if none.
func (l *Log) directGet(ctx context.Context, s *logStream, subj string, req []byte) (uint64, error) {
	subject := apiDirectGet + s.name
	if req == nil {
		subject += "." + subj
	}
	m, err := l.nc.RequestWithContext(ctx, subject, req)
	if errors.Is(err, nats.ErrNoResponders) {
		return 0, errStreamGone
	} else if err != nil {
		return 0, err
	}
	switch status := m.Header.Get("Status"); status {
	case "":
		return strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
	case "404":
		return 0, nil
	default:
		return 0, fmt.Errorf("direct get: status %s %s", status, m.Header.Get("Description"))
	}
}

// lastSeq returns the seq of the last message of subj, or 0 if it has
// none; from the leader with replicas.
func (l *Log) lastSeq(ctx context.Context, s *logStream, subj string) (uint64, error) {
	if l.replicas > 1 {
		return l.leaderLast(ctx, s, subj)
	}
	return l.directGet(ctx, s, subj, nil)
}

// firstSeq returns the seq of the oldest message of subj, or 0 if it has
// none.
func (l *Log) firstSeq(ctx context.Context, s *logStream, subj string) (uint64, error) {
	return l.directGet(ctx, s, subj, fmt.Appendf(nil, `{"seq":1,"next_by_subj":%q}`, subj))
}

// leaderLast asks the stream's leader for the seq of the last message of
// subj, 0 if none.
func (l *Log) leaderLast(ctx context.Context, s *logStream, subj string) (uint64, error) {
	m, err := l.nc.RequestWithContext(ctx, apiMsgGet+s.name, fmt.Appendf(nil, `{"last_by_subj":%q}`, subj))
	if err != nil {
		return 0, err
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return 0, err
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		return 0, errStreamGone
	case resp.Error != nil && resp.Error.Code == 404:
		return 0, nil
	case resp.Error != nil:
		return 0, resp.Error
	case resp.Message == nil:
		return 0, errors.New("natsbroker: empty message get response")
	}
	return resp.Message.Seq, nil
}

// Follow starts passing the messages of room's log with a seq above after
// to deliver, in the log's order, one at a time on a goroutine of its
// own, as wshub.Entry values with their seq and the ID they were
// published with, if p keeps history; a room without history is followed
// on core NATS, as with Broker.Follow. It returns at once: the goroutine
// reads the log through an ephemeral JetStream consumer, and makes a new
// one, from the last message it passed, when the connection comes back
// after an outage or the consumer fails. When it finds then that the log
// no longer holds messages after that one (per the rule of Read), it
// calls deliver once with an Entry whose JSON is nil. Unfollow and Close
// stop it and return once its goroutine has ended, so deliver is not
// called afterwards. It returns ErrFollowed if the room is already
// followed, ErrClosed after Close.
func (l *Log) Follow(room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) error {
	if p.Messages <= 0 {
		return l.Broker.Follow(room, p, after, deliver)
	}
	s := l.stream(p)
	f := newFollow(l, s, room, p, after, deliver)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.followableLocked(room); err != nil {
		return err
	}
	l.follows[room] = f
	go f.run()
	return nil
}
