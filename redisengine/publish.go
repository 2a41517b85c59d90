package redisengine

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
	"github.com/wshub/wshub"
)

// publisher sends publishes to Redis in the order of the Publish calls:
// one goroutine takes every publish queued so far and writes them as one
// pipeline, and the next pipeline only once Redis answered the last one.
// Alone, a publish costs one round trip; under load, the publishes that
// arrive during a round trip share the next one, as a group commit.
type publisher struct {
	e    *Engine
	mu   sync.Mutex
	q    []*pubOp
	wake chan struct{} // has a token when q may be non-empty
	done chan struct{} // closed when the goroutine ended
	stop bool

	suspect bool // the connection broke: probe before the next batch; the goroutine's
}

// pubOp is one publish: a PUBLISH, or the append script of a room with
// history.
type pubOp struct {
	room string
	hist bool
	keys []string // of the script
	args []string // of the script; the channel and payload of a PUBLISH
	res  chan error
	sent bool // taken by the goroutine: guarded by publisher.mu
}

func (p *publisher) init(e *Engine) {
	p.e = e
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
// Publishes are written in the order of the Publish calls. If Redis
// cannot be reached, wait returns an error wrapping ErrNotConnected and
// the message went nowhere; if no answer came, one wrapping
// ErrUnconfirmed. When ctx has no deadline, Options.Timeout bounds the
// wait. wait must be called once.
func (e *Engine) Publish(ctx context.Context, room string, p wshub.HistoryPolicy, id string, msg []byte) (wait func() error) {
	if e.isClosed() {
		return failed(ErrClosed)
	}
	if e.conn() == nil {
		return failed(fmt.Errorf("%w: publish to %q: no connection yet", ErrNotConnected, room))
	}
	op := &pubOp{room: room, res: make(chan error, 1)}
	if p.Messages > 0 {
		op.hist = true
		op.keys = []string{e.key(room, "meta"), e.key(room, "log"), e.key(room, "id:"+id)}
		op.args = []string{id, string(msg), strconv.Itoa(p.Messages), strconv.FormatInt(maxAge(p).Milliseconds(), 10),
			newEpoch(), e.publishCmd(), e.key(room, "n"), strconv.FormatInt(e.dedupWindow().Milliseconds(), 10)}
	} else {
		op.args = []string{e.key(room, "m"), encodeMessage(id, msg)}
	}
	e.pubs.mu.Lock()
	if e.pubs.stop {
		e.pubs.mu.Unlock()
		return failed(ErrClosed)
	}
	e.pubs.q = append(e.pubs.q, op)
	e.pubs.mu.Unlock()
	select {
	case e.pubs.wake <- struct{}{}:
	default:
	}
	return func() error {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, e.timeout)
			defer cancel()
		}
		select {
		case err := <-op.res:
			return err
		case <-ctx.Done():
		}
		e.pubs.mu.Lock()
		sent := op.sent
		if !sent {
			op.sent = true // the goroutine skips it
		}
		e.pubs.mu.Unlock()
		if !sent {
			return fmt.Errorf("redisengine: publish to %q: %w", room, ctx.Err())
		}
		return fmt.Errorf("%w: publish to %q: %w", ErrUnconfirmed, room, ctx.Err())
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
			if !op.sent {
				op.sent = true
				batch[n] = op
				n++
			}
		}
		batch = batch[:n]
		p.mu.Unlock()
		if stop {
			for _, op := range batch {
				op.res <- ErrClosed
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
// kind, so its publishes keep their order.
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
	ctx, cancel := context.WithTimeout(p.e.ctx, p.e.timeout)
	defer cancel()
	if p.suspect {
		if err := p.probe(ctx, c); err != nil {
			for _, op := range batch {
				op.res <- fmt.Errorf("%w: publish to %q: %w", ErrNotConnected, op.room, err)
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
	for i, r := range p.do(ctx, c, appends) {
		if err := r.Error(); err != nil && brokenConn(err) {
			p.suspect = true
			again = append(again, appends[i])
			continue
		}
		appends[i].answer(r.Error(), false)
	}
	if len(again) > 0 {
		if err := p.probe(ctx, c); err != nil {
			for _, op := range again {
				op.answer(err, true)
			}
		} else {
			for i, r := range p.do(ctx, c, again) {
				again[i].answer(r.Error(), true)
			}
		}
	}
	for i, r := range p.do(ctx, c, pubs) {
		if err := r.Error(); err != nil && brokenConn(err) {
			p.suspect = true
		}
		pubs[i].answer(r.Error(), false)
	}
}

// answer hands the publish its result: err classified, or, when an
// earlier attempt may have been stored (maybe), ErrUnconfirmed for any
// error.
func (op *pubOp) answer(err error, maybe bool) {
	what := "publish to " + strconv.Quote(op.room)
	if maybe && err != nil {
		op.res <- fmt.Errorf("%w: %s: %w", ErrUnconfirmed, what, err)
		return
	}
	op.res <- classify(what, err)
}

// probe checks that Redis can be reached, making a new connection if the
// last one broke.
func (p *publisher) probe(ctx context.Context, c rueidis.Client) error {
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

// do writes ops, all of one kind, as one pipeline, and returns their
// answers. An append that Redis refused because its script was not
// loaded (after a restart) ran nowhere: it is sent again with the
// script.
func (p *publisher) do(ctx context.Context, c rueidis.Client, ops []*pubOp) []rueidis.RedisResult {
	if len(ops) == 0 {
		return nil
	}
	cmds := make(rueidis.Commands, len(ops))
	for i, op := range ops {
		cmds[i] = p.command(c, op, false)
	}
	res := c.DoMulti(ctx, cmds...)
	var again []int
	for i, r := range res {
		if err, ok := rueidis.IsRedisErr(r.Error()); ok && err.IsNoScript() {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		return res
	}
	cmds = cmds[:0]
	for _, i := range again {
		cmds = append(cmds, p.command(c, ops[i], true))
	}
	for j, r := range c.DoMulti(ctx, cmds...) {
		res[again[j]] = r
	}
	return res
}

// command builds op's command; full sends the script itself rather than
// its hash.
func (p *publisher) command(c rueidis.Client, op *pubOp, full bool) rueidis.Completed {
	switch {
	case !op.hist && p.e.sharded.Load():
		return c.B().Spublish().Channel(op.args[0]).Message(op.args[1]).Build()
	case !op.hist:
		return c.B().Publish().Channel(op.args[0]).Message(op.args[1]).Build()
	}
	return appendScript.command(c, op.keys, op.args, full)
}

// close fails the publishes that wait and ends the goroutine.
func (p *publisher) close() {
	p.mu.Lock()
	p.stop = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	<-p.done
}
