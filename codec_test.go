package wshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

func TestCodecNegotiation(t *testing.T) {
	t.Parallel()
	got := make(chan string, 8)
	h := wshub.New(nil, &wshub.Options{
		Codecs:    []wshub.Codec{wshub.JSONCodec{}, wshub.JSONBatchCodec{}, wshub.RawCodec{}},
		OnConnect: func(c *wshub.Client) { got <- c.Codec().Name() },
	})
	ts := serve(t, h)
	for _, tt := range []struct {
		offer []string
		want  string // codec name
		proto string // negotiated subprotocol
	}{
		{nil, "wshub.json", ""},
		{[]string{"mqtt"}, "wshub.json", ""},
		{[]string{"wshub.raw"}, "wshub.raw", "wshub.raw"},
		{[]string{"mqtt", "wshub.json-batch"}, "wshub.json-batch", "wshub.json-batch"},
		{[]string{"wshub.json"}, "wshub.json", "wshub.json"},
	} {
		p := dial(t, ts, tt.offer...)
		equal(t, fmt.Sprint(tt.offer), <-got, tt.want)
		equal(t, fmt.Sprint(tt.offer)+" subprotocol", p.conn.Subprotocol(), tt.proto)
	}
}

func TestBatchCodecFramesAreArrays(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 2)
	h := wshub.New(nil, &wshub.Options{OnConnect: func(c *wshub.Client) {
		c.Join("r")
		connected <- c
	},
		Limits: wshub.Limits{SendQueue: 4096},
	})
	ts := serve(t, h)
	batch := dial(t, ts, "wshub.json-batch")
	<-connected
	plain := dial(t, ts)
	<-connected

	const n = 2000
	ctx := testCtx(t)
	for i := range n {
		if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: i}); err != nil {
			t.Fatal(err)
		}
	}
	// The plain client gets exactly one message per frame, in order.
	for i := range n {
		equal(t, "plain", string(plain.read().Data), fmt.Sprint(i))
	}
	// The batching client gets arrays of messages, all of them, in order.
	next, frames := 0, 0
	for next < n {
		_, b, err := batch.conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		frames++
		var msgs []wireMsg
		if err := json.Unmarshal(b, &msgs); err != nil {
			t.Fatalf("batch frame %s: %v", b, err)
		}
		if len(msgs) == 0 {
			t.Fatal("empty batch")
		}
		for _, m := range msgs {
			equal(t, "batched", string(m.Data), fmt.Sprint(next))
			equal(t, "room", m.Room, "r")
			next++
		}
	}
	t.Logf("%d messages in %d batch frames", n, frames)
	// A batching client still sends single messages and gets answers.
	batch.sendRaw(`{"type":"leave","room":"r","id":"1"}`)
	_, b, err := batch.conn.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "ack", string(b), `[{"type":"ack","id":"1"}]`)
}

func TestRawCodec(t *testing.T) {
	t.Parallel()
	h := wshub.New(wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
		b := m.Data.([]byte)
		return c.Send(&wshub.Message{Data: append([]byte("echo:"), b...)})
	}), &wshub.Options{Codecs: []wshub.Codec{wshub.RawCodec{}}})
	ts := serve(t, h)
	p := dial(t, ts, "wshub.raw")
	if err := p.conn.Write(p.ctx, websocket.MessageBinary, []byte{0, 1, 2}); err != nil {
		t.Fatal(err)
	}
	typ, b, err := p.conn.Read(p.ctx)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "type", typ, websocket.MessageBinary)
	equal(t, "payload", string(b), "echo:\x00\x01\x02")
	if err := h.Broadcast(p.ctx, &wshub.Message{Data: 42}); err == nil {
		t.Fatal("raw codec encoded an int")
	}
}

// countingCodec wraps JSON and counts Marshal calls.
type countingCodec struct {
	wshub.JSONCodec
	name string
	mu   sync.Mutex
	n    int
}

func (c *countingCodec) Name() string { return c.name }

func (c *countingCodec) Marshal(v any) ([]byte, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.JSONCodec.Marshal(v)
}

func TestBroadcastEncodesOncePerCodec(t *testing.T) {
	t.Parallel()
	a, b := &countingCodec{name: "a"}, &countingCodec{name: "b"}
	connected := make(chan struct{}, 10)
	h := wshub.New(nil, &wshub.Options{
		Codecs:    []wshub.Codec{a, b},
		OnConnect: func(c *wshub.Client) { c.Join("r"); connected <- struct{}{} },
	})
	ts := serve(t, h)
	var peers []*peer
	for i := range 10 {
		peers = append(peers, dial(t, ts, []string{"a", "b"}[i%2]))
		<-connected
	}
	if err := h.Room("r").Broadcast(testCtx(t), &wshub.Message{Data: "x"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range peers {
		equal(t, "data", string(p.read().Data), `"x"`)
	}
	equal(t, "codec a encodings", a.n, 1)
	equal(t, "codec b encodings", b.n, 1)
}

func FuzzJSONCodec(f *testing.F) {
	for _, s := range []string{
		`{"type":"join","room":"lobby","id":"1"}`,
		`{"type":"publish","room":"lobby","data":{"a":[1,2,null]},"id":"3"}`,
		`{"type":"x","data":null}`, `{}`, `[]`, `null`, `{"type":1}`, "{\"type\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c wshub.JSONCodec
		var m wshub.Message
		if err := c.Unmarshal(data, &m); err != nil {
			return
		}
		if m.Type == "" {
			t.Fatal("decoded a message without a type")
		}
		b, err := c.Marshal(&m)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", m, err)
		}
		var again wshub.Message
		if err := c.Unmarshal(b, &again); err != nil {
			t.Fatalf("decode re-encoded %s: %v", b, err)
		}
		if again.Type != m.Type || again.ID != m.ID || again.Room != m.Room {
			t.Fatalf("round trip changed %+v into %+v", m, again)
		}
	})
}

// TestLargeMessagesInBursts checks frames bigger than the connection's
// buffer and than a batch, mixed with small ones, arrive intact and in
// order for plain and batching clients.
func TestLargeMessagesInBursts(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 2)
	h := wshub.New(nil, &wshub.Options{OnConnect: func(c *wshub.Client) { connected <- c }})
	ts := serve(t, h)
	sizes := []int{10, 2000, 100_000, 5, 40_000, 33_000, 1}
	for _, proto := range []string{"wshub.json", "wshub.json-batch"} {
		p := dial(t, ts, proto)
		p.conn.SetReadLimit(1 << 20)
		c := <-connected
		for _, n := range sizes {
			if err := c.Send(&wshub.Message{Data: strings.Repeat("x", n)}); err != nil {
				t.Fatal(err)
			}
		}
		var got []int
		for len(got) < len(sizes) {
			_, b, err := p.conn.Read(p.ctx)
			if err != nil {
				t.Fatal(err)
			}
			var msgs []wireMsg
			if proto == "wshub.json" {
				msgs = make([]wireMsg, 1)
				err = json.Unmarshal(b, &msgs[0])
			} else {
				err = json.Unmarshal(b, &msgs)
			}
			if err != nil {
				t.Fatalf("%s: frame of %d bytes: %v", proto, len(b), err)
			}
			for _, m := range msgs {
				var s string
				json.Unmarshal(m.Data, &s)
				if strings.Trim(s, "x") != "" {
					t.Fatalf("%s: corrupted payload", proto)
				}
				got = append(got, len(s))
			}
		}
		equal(t, proto+" sizes", fmt.Sprint(got), fmt.Sprint(sizes))
	}
}

func TestRawMemberGetsJSONPublish(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{
		Codecs:    []wshub.Codec{wshub.JSONCodec{}, wshub.RawCodec{}},
		OnConnect: func(c *wshub.Client) { c.Join("mixed") },
	})
	ts := serve(t, h)
	raw := dial(t, ts, "wshub.raw")
	js := dial(t, ts)
	eventually(t, "both joined", func() bool { return h.Room("mixed").Len() == 2 })
	m := js.request(`{"type":"publish","room":"mixed","data":{"a":1},"id":"p"}`)
	equal(t, "json member", string(m.Data), `{"a":1}`)
	equal(t, "ack", js.read().Type, "ack")
	_, b, err := raw.conn.Read(raw.ctx)
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "raw payload", string(b), `{"a":1}`)
}

// TestBatchFramesFitReadLimit: batch frames stay within 32 KiB, brackets
// included, so a client with the usual 32 KiB read limit reads them all.
func TestBatchFramesFitReadLimit(t *testing.T) {
	t.Parallel()
	connected := make(chan *wshub.Client, 1)
	h := wshub.New(nil, &wshub.Options{
		OnConnect: func(c *wshub.Client) { connected <- c },
		Limits:    wshub.Limits{SendQueue: 1 << 12, SendQueueBytes: 1 << 30, PingInterval: -1},
	})
	ts := serve(t, h)
	p := dial(t, ts, "wshub.json-batch")
	p.ctx = testCtxFor(t, 5*time.Minute) // 11 MB under -race on a busy machine
	p.conn.SetReadLimit(32 << 10)
	c := <-connected
	// Three encoded messages and their two commas make exactly 32 KiB: with
	// the brackets, one byte too many for a batch of three.
	empty, _ := json.Marshal(&wshub.Message{Type: "message", Data: ""})
	payload := strings.Repeat("x", (32<<10-2)/3-len(empty))
	const n = 1000 // 11 MB, more than loopback buffers hold: the queue backs up, so batches form
	for range n {
		if err := c.Send(&wshub.Message{Data: payload}); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	for got < n {
		_, b, err := p.conn.Read(p.ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", got, err)
		}
		var batch []json.RawMessage
		if err := json.Unmarshal(b, &batch); err != nil {
			t.Fatal(err)
		}
		got += len(batch)
	}
}

// TestRawBroadcastOfEmptyData: an empty payload is a message too.
func TestRawBroadcastOfEmptyData(t *testing.T) {
	t.Parallel()
	h := wshub.New(nil, &wshub.Options{
		Codecs:    []wshub.Codec{wshub.RawCodec{}},
		OnConnect: func(c *wshub.Client) { c.Join("r") },
	})
	ts := serve(t, h)
	p := dial(t, ts, "wshub.raw")
	eventually(t, "joined", func() bool { return h.Room("r").Len() == 1 })
	ctx := testCtx(t)
	for _, data := range []any{[]byte{}, "", []byte("end")} {
		if err := h.Room("r").Broadcast(ctx, &wshub.Message{Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"", "", "end"} {
		typ, b, err := p.conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "frame type", typ, websocket.MessageBinary)
		equal(t, "payload", string(b), want)
	}
}
