package redisengine

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/wshub/wshub"
)

// keep keeps a subscription to channel ch until ctx ends, subscribing
// again whenever the connection broke (after a jittered wait). onMsg
// gets each message and onUp each confirmation of the subscription,
// first true the first time; both run on rueidis's reading goroutine and
// must not block. tried, if not nil, is called once, after the first
// attempt: with nil once the subscription is confirmed, or with why it
// failed. A room's channel is sharded on a cluster (SSUBSCRIBE); the
// engine's control channel is not.
func keep(ctx context.Context, e *Engine, ch string, room bool, onMsg func(string), onUp func(first bool), tried func(error)) {
	var once sync.Once
	report := func(err error) {
		if tried != nil {
			once.Do(func() { tried(err) })
		}
	}
	defer report(ErrClosed)
	if e.conn() == nil {
		report(readErr("subscribe "+ch, errNoConn))
	}
	c := e.waitConn(ctx)
	if c == nil {
		return
	}
	sharded := room && e.sharded.Load()
	first := true
	hook := func(s rueidis.PubSubSubscription) {
		if s.Kind != "subscribe" && s.Kind != "ssubscribe" {
			return
		}
		onUp(first)
		first = false
		report(nil)
	}
	// When ctx ends, Receive returns without unsubscribing on the
	// connection, which rueidis shares: unsubscribe there.
	unsub := func(err error, cc rueidis.CommandClient) error {
		if ctx.Err() != nil {
			uctx, cancel := context.WithTimeout(context.Background(), e.timeout)
			defer cancel()
			if sharded {
				cc.Do(uctx, cc.B().Sunsubscribe().Channel(ch).Build())
			} else {
				cc.Do(uctx, cc.B().Unsubscribe().Channel(ch).Build())
			}
		}
		return err
	}
	rctx := rueidis.WithOnReceiveReturnHook(rueidis.WithOnSubscriptionHook(ctx, hook), unsub)
	fn := func(m rueidis.PubSubMessage) { onMsg(m.Message) }
	wait := retryMin
	for ctx.Err() == nil {
		var cmd rueidis.Completed
		if sharded {
			cmd = c.B().Ssubscribe().Channel(ch).Build()
		} else {
			cmd = c.B().Subscribe().Channel(ch).Build()
		}
		start := time.Now()
		err := c.Receive(rctx, cmd, fn)
		if ctx.Err() != nil {
			return
		}
		report(readErr("subscribe "+ch, err))
		if time.Since(start) > retryMax {
			wait = retryMin // it was up for a while: a new outage
		}
		if !sleep(ctx, jitter(&wait)) {
			return
		}
	}
}

// task is the background work of a room, a follow or a presence watch:
// its goroutines, the context that ends them, and a wake-up.
type task struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // a token when there is something to do
}

func (t *task) init(parent context.Context) {
	t.ctx, t.cancel = context.WithCancel(parent)
	t.wake = make(chan struct{}, 1)
}

// stop ends the task and waits for its goroutines.
func (t *task) stop() {
	t.cancel()
	t.wg.Wait()
}

func (t *task) kick() { signal(t.wake) }

// subscribe keeps a subscription to room channel ch on one of t's
// goroutines (see keep), and returns once Redis confirmed it or a first
// attempt failed, within Options.Timeout.
func (t *task) subscribe(e *Engine, ch string, onMsg func(string), onUp func(first bool)) {
	tried := make(chan error, 1)
	t.wg.Go(func() { keep(t.ctx, e, ch, true, onMsg, onUp, func(err error) { tried <- err }) })
	timer := time.NewTimer(e.timeout)
	defer timer.Stop()
	select {
	case <-tried:
	case <-timer.C:
	}
}

// signal puts a token in ch unless it has one.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// follow is a room that the hub follows.
type follow struct {
	task
	e       *Engine
	room    string
	p       wshub.HistoryPolicy
	deliver func(wshub.Entry)

	// A room without history: the messages received and not yet passed.
	mu     sync.Mutex
	queue  []wshub.Entry
	queued int  // bytes of queue's messages
	lost   bool // messages were dropped since the last loss passed

	// A room with history.
	last    uint64            // the seq of the last message passed; the follow's goroutine's
	epoch   string            // of last; "" before the first read
	noted   map[string]uint64 // the highest seq announced, per epoch; guarded by mu
	resumed bool              // subscribed again since the last read; guarded by mu
	lostAt  bool              // a loss was passed and no message since
	passed  time.Time         // when the last message was passed, or the follow began
}

// loss passes the hub a loss, an Entry without JSON, unless it passed
// one since the last message.
func (f *follow) loss() {
	if !f.lostAt {
		f.lostAt = true
		f.deliver(wshub.Entry{})
	}
}

// Follow starts passing room's messages to deliver, from every hub, one
// at a time: a room without history as the room's channel receives them,
// a room with history in the order of its stream, from the seq after
// after on, going on across reconnections (see the package
// documentation). It returns once Redis confirmed the subscription, or
// once a first attempt failed (Redis is down: the engine subscribes when
// it is back), within Options.Timeout. It returns ErrFollowed for a room
// already followed and ErrClosed after Close.
func (e *Engine) Follow(room string, p wshub.HistoryPolicy, after uint64, deliver func(wshub.Entry)) error {
	f := &follow{e: e, room: room, p: p, deliver: deliver, last: after, passed: time.Now()}
	f.init(e.ctx)
	e.mu.Lock()
	switch {
	case e.closed:
		e.mu.Unlock()
		f.cancel()
		return ErrClosed
	case e.follows[room] != nil:
		e.mu.Unlock()
		f.cancel()
		return fmt.Errorf("%w: %q", ErrFollowed, room)
	}
	e.follows[room] = f
	e.mu.Unlock()

	ch, onMsg := e.key(room, "m"), f.received
	if p.Messages > 0 {
		ch, onMsg = e.key(room, "n"), f.announced
		f.noted = make(map[string]uint64)
	}
	f.wg.Go(f.run)
	f.subscribe(e, ch, onMsg, f.subscribed)
	return nil
}

// Unfollow stops the deliveries of room, waiting for one under way and
// for Redis to drop the subscription, at most Options.Timeout.
func (e *Engine) Unfollow(room string) error {
	e.mu.Lock()
	f := e.follows[room]
	delete(e.follows, room)
	e.mu.Unlock()
	if f != nil {
		f.stop()
	}
	return nil
}

// subscribed runs on each confirmation of the subscription: a room with
// history is read again, since what was announced while the subscription
// was down was missed.
func (f *follow) subscribed(first bool) {
	if !first {
		f.mu.Lock()
		f.resumed = true
		f.mu.Unlock()
	}
	f.kick()
}

// received queues a message of a room without history, or, past the
// bound, drops it and notes a loss.
func (f *follow) received(s string) {
	id, msg, ok := decodeMessage(s)
	if !ok {
		return
	}
	f.mu.Lock()
	switch {
	case f.queued+len(msg) > f.e.burst:
		if !f.lost {
			f.lost = true
			f.queue = append(f.queue, wshub.Entry{}) // a loss
		}
	default:
		f.lost = false
		f.queue = append(f.queue, wshub.Entry{ID: id, JSON: msg})
		f.queued += len(msg)
	}
	f.mu.Unlock()
	f.kick()
}

// announced notes an append to a room with history: "<epoch> <seq>".
func (f *follow) announced(s string) {
	epoch, seq, ok := strings.Cut(s, " ")
	n, err := strconv.ParseUint(seq, 10, 64)
	if !ok || err != nil {
		return
	}
	f.mu.Lock()
	if n > f.noted[epoch] {
		f.noted[epoch] = n
	}
	f.mu.Unlock()
	f.kick()
}

func (f *follow) run() {
	wait := retryMin
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-f.wake:
		}
		if f.p.Messages == 0 {
			f.pass()
			continue
		}
		if f.readLog() {
			wait = retryMin
		} else if sleep(f.ctx, jitter(&wait)) {
			f.kick() // Redis did not answer: read again
		}
	}
}

// pass passes the queued messages of a room without history.
func (f *follow) pass() {
	f.mu.Lock()
	q := f.queue
	f.queue, f.queued = nil, 0
	f.mu.Unlock()
	for _, en := range q {
		if f.ctx.Err() != nil {
			return
		}
		f.deliver(en)
	}
}

// followBatch is how many messages a follow reads at once.
const followBatch = 256

// readLog passes the messages of a room with history after the last one
// passed, in the order of the stream, a batch at a time, at the pace
// deliver returns. When the history is gone, or started anew under
// another epoch, it passes a loss first unless the old one expired: the
// room was idle for MaxAge since the last message passed, the
// subscription stayed up and no append was announced that it did not
// read; when the stream no longer has the messages after the last one
// passed (cut to Messages, or expired), it passes a loss and goes on
// from what it has. It reports false when Redis did not answer.
func (f *follow) readLog() bool {
	f.mu.Lock()
	resumed := f.resumed
	f.resumed = false
	f.mu.Unlock()
	pg, err := f.e.read(f.ctx, f.room, f.p, f.last, followBatch, "", "f")
	if err != nil {
		f.mu.Lock()
		f.resumed = f.resumed || resumed
		f.mu.Unlock()
		return false
	}
	if f.epoch != "" && pg.epoch != f.epoch {
		// The history is gone (Redis lost it, or it expired while idle),
		// or started anew.
		f.mu.Lock()
		missed := resumed || f.noted[f.epoch] > f.last || time.Since(f.passed) < maxAge(f.p)
		delete(f.noted, f.epoch)
		f.mu.Unlock()
		if missed {
			f.loss()
		}
		f.epoch, f.last = pg.epoch, 0
		if pg.epoch != "" {
			f.kick()
		}
		return true
	}
	if pg.epoch == "" {
		return true // no history: the next append starts one and announces it
	}
	if pg.latest < f.last {
		// The history went back: Redis lost messages that this hub
		// passed, and would number new ones with their seqs. End that
		// epoch for every hub, and start over in the next.
		if err := f.e.restart(f.ctx, f.room, f.p, pg.epoch, f.last); err != nil {
			return false
		}
		f.loss()
		f.epoch, f.last = "", 0
		f.kick()
		return true
	}
	f.epoch = pg.epoch
	if first := pg.firstSeq(); first > f.last+1 || first == 0 && pg.latest > f.last {
		// The stream no longer has messages after the last one passed
		// (cut to Messages, expired or evicted) that this hub did not
		// pass: its members missed them.
		f.loss()
		if pg.scanned == 0 {
			f.last = pg.latest
		}
	}
	for _, en := range pg.msgs {
		if f.ctx.Err() != nil {
			return true
		}
		en.Epoch = pg.epoch
		f.deliver(en)
		f.last, f.lostAt, f.passed = en.Seq, false, time.Now()
	}
	f.last = max(f.last, pg.scanned)
	if pg.latest > f.last {
		f.kick() // more to read
	}
	return true
}

// restart runs restartScript for room.
func (e *Engine) restart(ctx context.Context, room string, p wshub.HistoryPolicy, epoch string, seen uint64) error {
	err := e.runScript(ctx, restartScript, []string{e.key(room, "meta"), e.key(room, "log")}, []string{
		epoch, strconv.FormatUint(seen, 10), newEpoch(), strconv.FormatInt(maxAge(p).Milliseconds(), 10),
	}).Error()
	return readErr("restart the history of "+strconv.Quote(room), err)
}

// page is what readScript returns.
type page struct {
	epoch   string
	latest  uint64
	scanned uint64 // the seq of the last message scanned, in mode "f"
	msgs    []wshub.Entry
}

func (p page) firstSeq() uint64 {
	if len(p.msgs) == 0 {
		return 0
	}
	return p.msgs[0].Seq
}

// read runs readScript for room; start is the epoch to start a history
// with if it has none ("" to start none).
func (e *Engine) read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int, start, mode string) (page, error) {
	vals, err := e.runScript(ctx, readScript, []string{e.key(room, "meta"), e.key(room, "log")}, []string{
		strconv.FormatUint(after, 10), strconv.Itoa(limit), strconv.FormatInt(maxAge(p).Milliseconds(), 10), start, mode,
	}).ToArray()
	if err != nil {
		return page{}, readErr("read "+strconv.Quote(room), err)
	}
	if len(vals) < 3 || (len(vals)-3)%3 != 0 {
		return page{}, fmt.Errorf("redisengine: read %q: %d values in the answer", room, len(vals))
	}
	var pg page
	pg.epoch, _ = vals[0].ToString()
	latest, err := vals[1].AsInt64() // a string, or 0 without history
	if err != nil || latest < 0 {
		return page{}, fmt.Errorf("redisengine: read %q: last seq: %v", room, err)
	}
	pg.latest = uint64(latest)
	scanned, _ := vals[2].ToString()
	pg.scanned = streamSeq(scanned)
	for i := 3; i < len(vals); i += 3 {
		sid, _ := vals[i].ToString()
		id, _ := vals[i+1].ToString()
		msg, _ := vals[i+2].ToString()
		pg.msgs = append(pg.msgs, wshub.Entry{Seq: streamSeq(sid), ID: id, JSON: []byte(msg)})
	}
	return pg, nil
}

// streamSeq returns the seq of stream ID "<seq>-0", 0 for anything else.
func streamSeq(id string) uint64 {
	s, _, _ := strings.Cut(id, "-")
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// Read returns the room's retained messages with a seq above after,
// oldest first, at most limit (the newest; all if negative), and where
// its history stands; a room without history gets one, with a new
// epoch, so that the hubs agree on it from the first join. It waits for
// Redis, within ctx and at most Options.Timeout, and returns an error
// wrapping ErrNotConnected when Redis cannot be reached, ErrClosed after
// Close.
func (e *Engine) Read(ctx context.Context, room string, p wshub.HistoryPolicy, after uint64, limit int) (wshub.LogPage, error) {
	if e.isClosed() {
		return wshub.LogPage{}, ErrClosed
	}
	if p.Messages <= 0 {
		return wshub.LogPage{}, fmt.Errorf("redisengine: read %q: the room keeps no history", room)
	}
	pg, err := e.read(ctx, room, p, after, limit, newEpoch(), "r")
	if err != nil {
		return wshub.LogPage{}, err
	}
	msgs := pg.msgs
	if limit >= 0 { // read newest first
		slices.Reverse(msgs)
	}
	for i := range msgs {
		msgs[i].ID = ""
	}
	// Seqs have no gaps: complete when the messages start right after
	// after.
	complete := after >= pg.latest || len(msgs) > 0 && msgs[0].Seq == after+1
	return wshub.LogPage{Messages: msgs, Epoch: pg.epoch, Latest: pg.latest, Complete: complete}, nil
}
