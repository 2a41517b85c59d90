package wshub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"golang.org/x/sync/errgroup"
)

// reason records each client's disconnect reason by ID.
type reasons struct {
	mu sync.Mutex
	m  map[string]error
}

func (r *reasons) record(c *wshub.Client, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]error)
	}
	r.m[c.ID()] = err
}

func (r *reasons) all() map[string]error {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]error, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}

// readRoom reads n room messages whose data are 0..n-1 (or arrays that
// start with it) in order, ignoring other frames, and returns an error for
// anything else.
func readRoom(ctx context.Context, conn *websocket.Conn, n int) error {
	next := 0
	for next < n {
		_, b, err := conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("after %d of %d messages: %w", next, n, err)
		}
		var m wireMsg
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		if m.Type != "message" {
			continue
		}
		var seq []json.RawMessage
		if json.Unmarshal(m.Data, &seq) == nil && len(seq) > 0 {
			m.Data = seq[0]
		}
		if string(m.Data) != fmt.Sprint(next) {
			return fmt.Errorf("message %d: got data %s", next, m.Data)
		}
		next++
	}
	return nil
}

// TestFloodDoesNotKickReaders: one client publishing 20,000 messages as
// fast as it can into a room of four readers closes nobody; every reader,
// and the publisher, gets all of them in order. Ten rounds in the soak,
// one of 5,000 otherwise.
func TestFloodDoesNotKickReaders(t *testing.T) {
	t.Parallel()
	var gone reasons
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		OnDisconnect:  gone.record,
	})
	ts := serve(t, h)
	const readers = 4
	n := soak(5_000, 20_000)
	for round := range soak(1, 10) {
		room := fmt.Sprintf("flood%d", round)
		var peers []*peer
		for range readers + 1 {
			p := dial(t, ts)
			p.join(room)
			peers = append(peers, p)
		}
		ctx := testCtxFor(t, 5*time.Minute)
		var g errgroup.Group
		for _, p := range peers {
			g.Go(func() error { return readRoom(ctx, p.conn, n) })
		}
		g.Go(func() error {
			for i := range n {
				msg := fmt.Appendf(nil, `{"type":"publish","room":%q,"data":%d}`, room, i)
				if err := peers[0].conn.Write(ctx, websocket.MessageText, msg); err != nil {
					return fmt.Errorf("publish %d: %w", i, err)
				}
			}
			return nil
		})
		if err := g.Wait(); err != nil {
			t.Fatalf("round %d: %v (disconnects: %v)", round, err, gone.all())
		}
		for _, p := range peers {
			p.conn.Close(websocket.StatusNormalClosure, "")
		}
		equal(t, "kicked", h.Stats().Kicked, 0)
	}
}

// TestPipelinedJoinsAreAllAnswered: a client that pipelines 20,000 joins
// while reading gets an answer to each, paced by its own queue: acks up to
// MaxRooms, then errors, and is never closed for the replies it caused.
func TestPipelinedJoinsAreAllAnswered(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll})
	ts := serve(t, h)
	p := dial(t, ts)
	n := soak(5_000, 20_000)
	ctx := testCtxFor(t, 5*time.Minute)
	var g errgroup.Group
	g.Go(func() error {
		for i := range n {
			msg := fmt.Appendf(nil, `{"type":"join","room":"r%d","id":"%d"}`, i, i)
			if err := p.conn.Write(ctx, websocket.MessageText, msg); err != nil {
				return err
			}
		}
		return nil
	})
	acks, tooMany := 0, 0
	for i := range n {
		m := p.read()
		equal(t, "answer id", m.ID, fmt.Sprint(i))
		switch {
		case m.Type == "ack":
			acks++
		case m.Type == "error" && strings.HasPrefix(m.Error, wshub.ErrTooManyRooms.Error()):
			tooMany++
		default:
			t.Fatalf("answer %d: %+v", i, m)
		}
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	equal(t, "acks", acks, wshub.DefaultMaxRooms)
	equal(t, "too many rooms", tooMany, n-wshub.DefaultMaxRooms)
	equal(t, "kicked", h.Stats().Kicked, 0)
}

// TestStalledMemberClosedAlone: a member that stops reading while a client
// floods its room is closed with ErrWriteTimeout; the publisher and the
// member that reads are not held up for good and get every message.
func TestStalledMemberClosedAlone(t *testing.T) {
	t.Parallel()
	var gone reasons
	closed := make(chan string, 3)
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		OnDisconnect: func(c *wshub.Client, err error) {
			gone.record(c, err)
			closed <- c.ID()
		},
		// WriteTimeout: long enough that a member which reads, on a busy
		// machine under -race, is never taken for a stalled one.
		Limits: wshub.Limits{WriteTimeout: 2 * time.Second, PingInterval: -1},
	})
	ts := serve(t, h)
	ctx := testCtxFor(t, 5*time.Minute)
	// The stalled member's receive buffer is small, so that what fills
	// the socket is mostly the server's send buffer.
	conn, tcp, err := dialCuttable(ctx, wsURL(ts))
	if err != nil {
		t.Fatal(err)
	}
	tcp.SetReadBuffer(16 << 10)
	t.Cleanup(func() { conn.CloseNow() })
	stalled := &peer{t: t, ctx: ctx, conn: conn}
	publisher, reader := dial(t, ts), dial(t, ts)
	for _, p := range []*peer{publisher, reader, stalled} {
		p.join("r")
	}
	// Enough to fill the stalled member's socket buffers a few times over.
	n := soak(1_000, 2_000)
	payload := strings.Repeat("x", 8000)
	var g errgroup.Group
	for _, p := range []*peer{publisher, reader} {
		g.Go(func() error { return readRoom(ctx, p.conn, n) })
	}
	g.Go(func() error {
		for i := range n {
			msg := fmt.Appendf(nil, `{"type":"publish","room":"r","data":[%d,%q]}`, i, payload)
			if err := publisher.conn.Write(ctx, websocket.MessageText, msg); err != nil {
				return err
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatalf("%v (disconnects: %v)", err, gone.all())
	}
	select {
	case <-closed:
	case <-ctx.Done():
		t.Fatal("the stalled member was not closed")
	}
	rs := gone.all()
	equal(t, "clients closed", len(rs), 1)
	for _, err := range rs {
		if !errors.Is(err, wshub.ErrWriteTimeout) {
			t.Fatalf("stalled member's reason: %v", err)
		}
	}
	equal(t, "kicked", h.Stats().Kicked, 1)
	equal(t, "members left", h.Room("r").Len(), 2)
}
