package redisengine

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/wshub/wshub"
	"golang.org/x/sync/semaphore"
)

// publisher sends publishes to Redis in the order of the Publish calls:
// one goroutine takes every publish queued so far and writes them as one
// pipeline, and the next pipeline only once Redis answered the last one.
// Alone, a publish costs one round trip; under load, the publishes that
// arrive during a round trip share the next one, as a group commit.
type publisher struct {
	e     *Engine
	space *semaphore.Weighted // bytes of the publishes not yet answered: maxQueued
	mu    sync.Mutex
	q     []*pubOp
	wake  chan struct{} // has a token when q may be non-empty
	done  chan struct{} // closed when the goroutine ended
	stop  bool

	suspect bool // the connection broke: probe before the next batch; the goroutine's
}

// pubOp is one publish: a PUBLISH, of a room's message or of a command,
// or the append script of a room with history.
type pubOp struct {
	room string
	size int64 // of space held
	hist bool
	cmd  bool     // a command, not a room's message
	keys []string // of the script
	args []string // of the script; the channel and payload of a PUBLISH
	res  chan error
	sent bool // taken by the goroutine: guarded by publisher.mu
}

// maxQueued bounds the bytes of the publishes of an engine that wait for
// Redis: past it, Publish waits, within its context, for answers.
const maxQueued = 8 << 20

func (p *publisher) init(e *Engine) {
	p.e = e
	p.space = semaphore.NewWeighted(maxQueued)
	p.wake = make(chan struct{}, 1)
	p.done = make(chan struct{})
	go p.run()
}

// Publish hands msg to Redis and returns at once; the returned wait waits
// for Redis's answer. A room without history gets a PUBLISH (SPUBLISH on
// a cluster) on its channel: wait returns nil once Redis ran it, which
// means that Redis passed the message to the hubs subscribed at that
// moment (see the package documentation, "What acknowledged means"). A
// room with history gets the append script: wait returns nil once Redis
// stored the message in the room's stream, numbered it and announced it.
// Publishes are written in the order of the Publish calls. Publish
// returns at once unless more than 8 MiB of this engine's publishes wait
// for Redis: then it waits for answers, within ctx (if ctx ends, wait
// returns its error and the message went nowhere). If Redis cannot be
// reached, wait returns an error wrapping ErrNotConnected and the message
// went nowhere; if no answer came, one wrapping ErrUnconfirmed. When ctx
// has no deadline, Options.Timeout bounds the wait. wait must be called
// once.
func (e *Engine) Publish(ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) (wait func() error) {
	if e.isClosed() {
		return failed(ErrClosed)
	}
	if e.conn() == nil {
		return failed(classify("publish to "+strconv.Quote(room), errNoConn))
	}
	op := &pubOp{room: room, res: make(chan error, 1), size: min(int64(len(msg)+len(id)+64), maxQueued)}
	if p.Messages > 0 {
		op.hist = true
		op.keys = []string{e.key(room, "meta"), e.key(room, "log"), e.key(room, "id:"+id)}
		op.args = []string{id, string(msg), strconv.Itoa(p.Messages), strconv.FormatInt(maxAge(p).Milliseconds(), 10),
			newEpoch(), e.publishCmd(), e.key(room, "n"), strconv.FormatInt(e.dedupWindow().Milliseconds(), 10)}
	} else {
		op.args = []string{e.key(room, "m"), encodeMessage(id, msg)}
	}
	return e.pubs.queue(ctx, op)
}

// queue hands op to the publisher's goroutine, waiting within ctx while
// more than maxQueued bytes of publishes wait for Redis, and returns the
// wait for its answer (see Publish).
func (p *publisher) queue(ctx context.Context, op *pubOp) (wait func() error) {
	if err := p.space.Acquire(ctx, op.size); err != nil {
		return failed(fmt.Errorf("redisengine: %s: %w", op.what(), err))
	}
	p.mu.Lock()
	if p.stop {
		p.mu.Unlock()
		p.space.Release(op.size)
		return failed(ErrClosed)
	}
	p.q = append(p.q, op)
	p.mu.Unlock()
	signal(p.wake)
	return func() error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, p.e.timeout)
			defer cancel()
		}
		select {
		case err := <-op.res:
			return err
		case <-ctx.Done():
		}
		p.mu.Lock()
		sent := op.sent
		if !sent {
			op.sent = true // the goroutine skips it
		}
		p.mu.Unlock()
		if !sent {
			return fmt.Errorf("redisengine: %s: %w", op.what(), ctx.Err())
		}
		return fmt.Errorf("%w: %s: %w", ErrUnconfirmed, op.what(), ctx.Err())
	}
}

func failed(err error) func() error { return func() error { return err } }

// maxAge is the MaxAge of p, wshub's default of an hour when zero.
func maxAge(p wshub.HistoryPolicy) time.Duration {
	if p.MaxAge <= 0 {
		return time.Hour
	}
	return p.MaxAge
}

// encodeMessage is the pub/sub payload of a room message: the length of
// its id in one byte, the id, then the JSON.
func encodeMessage(id string, msg []byte) string {
	if len(id) > 255 {
		id = id[:255] // the hub's ids are 16 characters
	}
	b := make([]byte, 0, 1+len(id)+len(msg))
	b = append(b, byte(len(id)))
	b = append(b, id...)
	return string(append(b, msg...))
}

// decodeMessage reverses encodeMessage.
func decodeMessage(s string) (id string, msg []byte, ok bool) {
	if len(s) < 1 || len(s) < 1+int(s[0]) {
		return "", nil, false
	}
	n := int(s[0])
	return s[1 : 1+n], []byte(s[1+n:]), true
}

func (p *publisher) run() {
	defer close(p.done)
	for {
		<-p.wake
		p.mu.Lock()
		batch := p.q
		p.q = nil
		stop := p.stop
		n := 0
		for _, op := range batch {
			if op.sent { // its waiter gave up before it was sent
				p.space.Release(op.size)
				continue
			}
			op.sent = true
			batch[n] = op
			n++
		}
		batch = batch[:n]
		p.mu.Unlock()
		if stop {
			for _, op := range batch {
				p.answer(op, ErrClosed)
			}
			return
		}
		if len(batch) > 0 {
			p.send(batch)
		}
	}
}

// send writes batch as pipelines and hands each publish its answer: the
// appends to rooms with history, then the PUBLISHes. Each room is of one
// kind, so its publishes keep their order. Each pipeline has its own
// deadline, Options.Timeout.
//
// rueidis reports a connection that broke while idle on the first
// command sent after, as if that command might have been sent. So after
// such an error the next batch is preceded by a probe (a PUBLISH on the
// engine's control channel): when no connection can be made, the batch
// fails definitely, sent nowhere. An append whose answer was lost is sent
// again once the probe passed, with the same id, which the append script
// stores once; a PUBLISH is not (sent twice, it would be delivered
// twice), and its wait returns ErrUnconfirmed.
func (p *publisher) send(batch []*pubOp) {
	c := p.e.conn()
	if p.suspect {
		if err := p.probe(c); err != nil {
			for _, op := range batch {
				p.answer(op, fmt.Errorf("%w: %s: %w", ErrNotConnected, op.what(), err))
			}
			return
		}
	}
	var appends, pubs []*pubOp
	for _, op := range batch {
		if op.hist {
			appends = append(appends, op)
		} else {
			pubs = append(pubs, op)
		}
	}
	var again []*pubOp // appends whose answer was lost
	for i, r := range p.do(c, appends) {
		if err := r.Error(); err != nil && brokenConn(err) {
			p.suspect = true
			again = append(again, appends[i])
			continue
		}
		p.answer(appends[i], classify(appends[i].what(), r.Error()))
	}
	if len(again) > 0 {
		if err := p.probe(c); err != nil {
			for _, op := range again {
				p.answer(op, unconfirmed(op, err))
			}
		} else {
			for i, r := range p.do(c, again) {
				p.answer(again[i], unconfirmed(again[i], r.Error()))
			}
		}
	}
	for i, r := range p.do(c, pubs) {
		if err := r.Error(); err != nil && brokenConn(err) {
			p.suspect = true
		}
		p.answer(pubs[i], classify(pubs[i].what(), r.Error()))
	}
}

func (op *pubOp) what() string {
	if op.cmd {
		return "command"
	}
	return "publish to " + strconv.Quote(op.room)
}

// unconfirmed is the result of a publish sent again after a lost answer:
// any error leaves it unconfirmed, as the first attempt may have been
// stored.
func unconfirmed(op *pubOp, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s: %w", ErrUnconfirmed, op.what(), err)
}

// answer hands op its result and frees its room in the queue.
func (p *publisher) answer(op *pubOp, err error) {
	op.res <- err
	p.space.Release(op.size)
}

// probe checks that Redis can be reached, making a new connection if the
// last one broke.
func (p *publisher) probe(c rueidis.Client) error {
	ctx, cancel := context.WithTimeout(p.e.ctx, p.e.timeout)
	defer cancel()
	var err error
	for range 2 {
		err = c.Do(ctx, c.B().Publish().Channel(p.e.key("", "ctl")).Message("").Build()).Error()
		if err == nil || isRedisErr(err) {
			p.suspect = false
			return nil
		}
		if !brokenConn(err) {
			break
		}
	}
	return err
}

// do writes ops, all of one kind, as one pipeline within Options.Timeout,
// and returns their answers; after Close, ErrClosed without writing.
func (p *publisher) do(c rueidis.Client, ops []*pubOp) []rueidis.RedisResult {
	if len(ops) == 0 {
		return nil
	}
	if p.e.ctx.Err() != nil {
		res := make([]rueidis.RedisResult, len(ops))
		for i := range res {
			res[i] = rueidis.NewErrorResult(rueidis.ErrClosing)
		}
		return res
	}
	ctx, cancel := context.WithTimeout(p.e.ctx, p.e.timeout)
	defer cancel()
	cmds := make(rueidis.Commands, len(ops))
	for i, op := range ops {
		cmds[i] = p.command(c, op)
	}
	return c.DoMulti(ctx, cmds...)
}

// command builds op's command. An append sends the script itself, not
// its hash: a script missing from Redis (after a restart) must not fail
// one append of a pipeline while the next one, after another hub loaded
// it, is stored, out of order. Redis caches the compiled script by its
// hash, so this costs the bytes of the script.
func (p *publisher) command(c rueidis.Client, op *pubOp) rueidis.Completed {
	switch {
	case !op.hist && p.e.sharded.Load():
		return c.B().Spublish().Channel(op.args[0]).Message(op.args[1]).Build()
	case !op.hist:
		return c.B().Publish().Channel(op.args[0]).Message(op.args[1]).Build()
	}
	return appendScript.command(c, op.keys, op.args, true)
}

// close fails the publishes that wait and ends the goroutine.
func (p *publisher) close() {
	p.mu.Lock()
	p.stop = true
	p.mu.Unlock()
	signal(p.wake)
	<-p.done
}
