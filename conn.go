package wshub

import (
	"errors"
	"math/bits"
	"os"
	"strings"

	"github.com/coder/websocket"
)

// The connection of a client: its send queue, its writer's turn (taken
// by the hub's write pool, pool.go, or by a goroutine of the client's
// while its socket is full), keepalive pings, and the close. Everything here is the hub's own code: no lock of it is held
// while user code runs.

// enqueue queues an encoded message and starts the writer if it is idle,
// counting it in Stats.Queued as of kind (qReply...), unless kind is
// counted, the caller's to count.
// It reports whether the queue is now congested (see flow.go). A message
// that overflows the queue closes the client.
func (c *Client) enqueue(b []byte, kind int) (congested bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return false, ErrClientClosed
	}
	o := &c.hub.opts
	n, size := len(c.queue)-c.replayed, c.queueBytes-c.replayBytes
	if n >= o.SendQueue || (n > 0 && size+len(b) > o.SendQueueBytes) {
		c.counts.dropped.Add(1)
		c.kickLocked(errSendQueueFull)
		return false, errSendQueueFull
	}
	c.queue = append(c.queue, b)
	c.queueBytes += len(b)
	if kind >= 0 {
		c.hub.m.queued[kind].Add(1)
	}
	c.startWriterLocked()
	return c.congestedLocked(), nil
}

// enqueueReplay queues what a join sends at once (its replay of history,
// the live messages of its read, the presence state), since it must come
// before any live message of the room. It does not count against the
// queue's limits until the writer takes it (a replay is bounded by
// maxHistoryReplay or the room's HistoryPolicy.Messages), so a long replay
// does not get its client closed; it does count as congestion, so the
// client's next message and the room's publishers wait for it.
func (c *Client) enqueueReplay(frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cause != nil {
		return
	}
	for _, b := range frames {
		c.queue = append(c.queue, b)
		c.queueBytes += len(b)
		c.replayBytes += len(b)
	}
	c.replayed += len(frames)
	c.hub.m.queued[qReplay].Add(uint64(len(frames)))
	c.startWriterLocked()
}

// kickLocked closes the client with 1008 for hurting others, dropping its
// queue, and counts it in Stats.Kicked.
func (c *Client) kickLocked(cause error) {
	if c.cause != nil {
		return
	}
	c.hub.m.kicked.Add(1)
	c.closeLocked(websocket.StatusPolicyViolation, strings.TrimPrefix(cause.Error(), "wshub: "), cause, false)
}

// startWriterLocked gives the client's writer's turn to the hub's write
// pool or, where it cannot write without waiting, or to close, to a
// goroutine of its own.
func (c *Client) startWriterLocked() {
	if c.writing {
		return
	}
	c.takeTurnLocked()
	if c.cause != nil || !c.pooled || !c.hub.pool.push(c) {
		go c.writeRun()
	}
}

// spawn runs f on a goroutine that the client's group and Shutdown wait for.
func (c *Client) spawn(f func()) {
	c.hub.hold()
	c.writers.Go(func() {
		defer c.hub.release()
		f()
	})
}

// closeWith starts closing the client with code and reason, recording
// cause as its disconnect reason. With flush, queued messages are written
// first; without, they are dropped. Only the first call has an effect.
func (c *Client) closeWith(code websocket.StatusCode, reason string, cause error, flush bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked(code, reason, cause, flush)
}

func (c *Client) closeLocked(code websocket.StatusCode, reason string, cause error, flush bool) {
	if c.cause != nil {
		return
	}
	c.closeCode, c.closeReason, c.cause, c.flush = code, reason, cause, flush
	c.cancel()
	c.wakeLocked()
	c.wakeReaderLocked() // to see the close
	if !flush {
		c.dropQueueLocked()
	}
	if !c.writing {
		// The writer closes the connection once the queue is empty.
		c.startWriterLocked()
		return
	}
	if !flush {
		// The writer may be stuck on a slow peer: close from a goroutine of
		// its own, which also unblocks the writer.
		c.spawn(c.closeConn)
	}
}

// closeConn runs the close handshake, once.
func (c *Client) closeConn() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		code, reason, cause := c.closeCode, c.closeReason, c.cause
		c.mu.Unlock()
		if errors.Is(cause, ErrSlowClient) {
			c.hub.opts.Logger.Warn("wshub: client kicked", "client", c.id, "reason", cause)
		}
		if code == 0 {
			c.conn.CloseNow() // the connection failed or the peer closed it
			return
		}
		c.readMu.Lock()
		defer c.readMu.Unlock()
		c.conn.Close(code, reason)
	})
}

// abort cuts the connection without a handshake, dropping the queue even
// if a graceful close was flushing it.
func (c *Client) abort(cause error) {
	c.mu.Lock()
	c.closeLocked(websocket.StatusGoingAway, "", cause, false)
	c.flush, c.cut = false, true
	c.dropQueueLocked()
	c.mu.Unlock()
	c.netConn.cut()
}

// dropQueueLocked discards the queued messages, counting them as Dropped.
func (c *Client) dropQueueLocked() {
	c.counts.dropped.Add(uint64(len(c.queue)))
	clear(c.queue)
	c.queue = c.queue[:0]
	c.queueBytes, c.replayed, c.replayBytes = 0, 0, 0
}

// writeLoop writes queued messages until the queue is empty, then exits;
// when the client is closing, it closes the connection instead of exiting.
func (c *Client) writeLoop() {
	if err := c.netConn.flushPending(); err != nil {
		c.writeFailed(err)
		return
	}
	for {
		c.mu.Lock()
		if c.pingDue && c.cause == nil { // between two batches: corkConn writes it whole
			c.pingDue = false
			c.mu.Unlock()
			if _, err := c.netConn.Write(pingFrame); err != nil {
				c.writeFailed(err)
				return
			}
			continue
		}
		if len(c.queue) == 0 || (c.cause != nil && !c.flush) {
			closing := c.cause != nil
			if !closing {
				c.writing = false
			}
			c.mu.Unlock()
			if closing {
				c.closeConn()
			}
			return
		}
		batch := c.takeLocked()
		c.mu.Unlock()
		written, err := c.write(batch, nil)
		c.settle(batch, written)
		if err != nil {
			c.writeFailed(err)
			return
		}
	}
}

// takeLocked takes the queue, as the batch to write, and counts its
// depth.
func (c *Client) takeLocked() [][]byte {
	batch := c.queue
	c.queue, c.spare = c.spare, nil
	c.queueBytes, c.replayed, c.replayBytes = 0, 0, 0
	c.wakeLocked()
	n := len(batch)
	c.counts.depth[min(bits.Len(uint(n-1)), len(depthBounds))].Add(1) // the first bound ≥ n
	c.counts.depthSum.Add(uint64(n))
	return batch
}

// settle counts a batch written up to its first written messages (the
// others are dropped), and keeps it for the next.
func (c *Client) settle(batch [][]byte, written int) {
	c.counts.out.Add(uint64(written))
	c.counts.dropped.Add(uint64(len(batch) - written))
	clear(batch)
	c.mu.Lock()
	if cap(batch) <= 64 {
		c.spare = batch[:0]
	}
	c.mu.Unlock()
}

// writeTurn writes one batch of the queue on a write pool's goroutine,
// without waiting, and passes the writer's turn on: back to the pool if
// more came meanwhile; to a goroutine of the client's own for what may
// wait (the rest of a batch the socket did not take, a ping, a close);
// or ends it.
func (c *Client) writeTurn(io *rawIO) {
	c.mu.Lock()
	if c.pingDue || c.cause != nil {
		c.mu.Unlock()
		go c.writeRun()
		return
	}
	if len(c.queue) == 0 {
		c.endTurnLocked()
		return
	}
	if c.queueBytes > maxBatchBytes {
		// Big messages are written from the queue's own bytes, which other
		// clients share, by a goroutine that may wait: kept whole here,
		// they would be copied for each client.
		c.mu.Unlock()
		go c.writeRun()
		return
	}
	batch := c.takeLocked()
	c.mu.Unlock()
	written, err := c.write(batch, io)
	if err == errPending {
		go c.writeRest(batch)
		return
	}
	c.settle(batch, written)
	if err != nil {
		c.writeFailed(err)
		c.writers.Done()
		c.hub.release()
		return
	}
	c.mu.Lock()
	if len(c.queue) == 0 && !c.pingDue && c.cause == nil {
		c.endTurnLocked()
		return
	}
	c.mu.Unlock()
	if !c.hub.pool.push(c) { // to the back of the pool's queue
		go c.writeRun()
	}
}

// takeTurnLocked takes the client's writer's turn, which the hub's
// Shutdown and the client's cleanup wait for until endTurnLocked or
// writeRun ends it.
func (c *Client) takeTurnLocked() {
	c.writing = true
	c.hub.hold()
	c.writers.Add(1)
}

// endTurnLocked ends the writer's turn of a goroutine that wrote without
// waiting (a pool's, or the keepalive's); it unlocks c.mu.
func (c *Client) endTurnLocked() {
	c.writing = false
	c.mu.Unlock()
	c.writers.Done()
	c.hub.release()
}

// writeRest writes what a write without waiting left, then goes on as the
// client's writer.
func (c *Client) writeRest(batch [][]byte) {
	defer c.writers.Done()
	defer c.hub.release()
	err := c.netConn.uncork()
	c.settle(batch, c.countWritten())
	if err != nil {
		c.writeFailed(err)
		return
	}
	c.writeLoop()
}

// write writes msgs, as batch frames if the codec batches. The frames of
// one call go out together, with as few system calls as corkConn allows:
// usually one, even for a frame bigger than the connection's buffer. It
// returns how many of msgs reached the socket; after an error the others
// were not written.
//
// With io, write does not wait: if the socket does not take the whole
// batch, the rest stays in corkConn, and write returns errPending without
// counting; writeRest finishes it.
func (c *Client) write(msgs [][]byte, io *rawIO) (written int, err error) {
	c.ends = c.ends[:0]
	c.netConn.cork(io != nil)
	defer func() {
		if uerr := c.netConn.uncorkTry(io); err == nil {
			err = uerr
		}
		if err != errPending {
			written = c.countWritten()
		}
	}()
	op := byte(websocket.MessageText)
	if c.codec.Binary() {
		op = byte(websocket.MessageBinary)
	}
	bc, ok := c.codec.(BatchCodec)
	if !ok {
		for _, b := range msgs {
			if err := c.netConn.writeFrame(op, b); err != nil {
				return 0, err
			}
			c.frameWritten(1, len(b))
		}
		return 0, nil
	}
	bufp := c.hub.getBuf()
	defer c.hub.putBuf(bufp)
	for len(msgs) > 0 {
		n := batchLen(msgs)
		*bufp = bc.AppendBatch((*bufp)[:0], msgs[:n])
		if err := c.netConn.writeFrame(op, *bufp); err != nil {
			return 0, err
		}
		c.frameWritten(n, len(*bufp))
		msgs = msgs[n:]
	}
	return 0, nil
}

// countWritten counts the frames of the last write that reached the
// socket, and returns how many messages they held.
func (c *Client) countWritten() (written int) {
	_, flushed := c.netConn.progress()
	var frames, bytes int
	for _, f := range c.ends {
		if f.end <= flushed {
			written += f.msgs
			frames++
			bytes += f.size
		}
	}
	c.counts.frames.Add(uint64(frames))
	c.counts.bytes.Add(uint64(bytes))
	return written
}

// frameEnd is where a frame of msgs messages ends in corkConn's stream.
type frameEnd struct {
	end  int64
	msgs int
	size int // bytes of the frame's payload
}

// frameWritten records that the frame just handed to the connection holds
// n messages, in size bytes.
func (c *Client) frameWritten(n, size int) {
	c.ends = append(c.ends, frameEnd{end: c.netConn.taken.Load(), msgs: n, size: size})
}

// batchLen returns how many of msgs, at least one, go into the next batch
// frame: as many as fit in maxBatchBytes with a separator between them and
// two bytes around them.
func batchLen(msgs [][]byte) int {
	n, size := 1, len(msgs[0])+2
	for n < len(msgs) && size+len(msgs[n])+1 <= maxBatchBytes {
		size += len(msgs[n]) + 1
		n++
	}
	return n
}

// writeFailed cuts the connection after a failed write.
func (c *Client) writeFailed(err error) {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// No write progress for WriteTimeout: the socket is full, so no
		// close frame could reach the peer either.
		err = errWriteTimeout
		c.mu.Lock()
		if c.cause == nil {
			c.hub.m.kicked.Add(1)
		}
		c.mu.Unlock()
	}
	c.abort(err)
}
