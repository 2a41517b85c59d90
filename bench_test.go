package wshub_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// BenchmarkBroadcast measures a room broadcast delivered to every member
// over loopback, with plain and batching clients. One op is one broadcast;
// the publisher stays at most a window ahead of the slowest client, so no
// queue overflows.
func BenchmarkBroadcast(b *testing.B) {
	for _, proto := range []string{"wshub.json", "wshub.json-batch"} {
		for _, n := range []int{10, 100} {
			b.Run(fmt.Sprintf("%s/clients=%d", proto, n), func(b *testing.B) {
				benchBroadcast(b, proto, n)
			})
		}
	}
}

func benchBroadcast(b *testing.B, proto string, n int) {
	joined := make(chan struct{}, n)
	h := wshub.New(nil, &wshub.Options{
		PingInterval: -1,
		OnConnect:    func(c *wshub.Client) { c.Join("r"); joined <- struct{}{} },
	})
	ts := serve(b, h)
	ctx := testCtx(b)
	for range n {
		p := dial(b, ts, proto)
		<-joined
		go discard(p.conn)
	}
	room := h.Room("r")
	msg := &wshub.Message{Data: map[string]string{"text": "a message of about a hundred bytes, like a chat line"}}
	const window = 64
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := room.Broadcast(ctx, msg); err != nil {
			b.Fatal(err)
		}
		if i%window == window-1 {
			// Wait until every message was written out.
			for h.Stats().MessagesOut < uint64((i+1)*n) {
				if ctx.Err() != nil {
					b.Fatal("clients stalled")
				}
			}
		}
	}
	for h.Stats().MessagesOut < uint64(b.N*n) && ctx.Err() == nil {
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
}

// discard reads frames until the connection closes. Its context has no
// deadline so that the client side allocates as little as possible.
func discard(conn *websocket.Conn) {
	for {
		_, r, err := conn.Reader(context.Background())
		if err != nil {
			return
		}
		io.Copy(io.Discard, r)
	}
}

func BenchmarkJSONCodec(b *testing.B) {
	var c wshub.JSONCodec
	m := &wshub.Message{Type: "message", Room: "lobby", From: "0123456789abcdef", Data: map[string]string{"name": "alice", "text": "hello"}}
	frame, _ := c.Marshal(m)
	b.Run("Marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Marshal(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var out wshub.Message
			if err := c.Unmarshal(frame, &out); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("AppendBatch", func(b *testing.B) {
		msgs := [][]byte{frame, frame, frame, frame, frame, frame, frame, frame}
		buf := make([]byte, 0, 4096)
		b.ReportAllocs()
		for b.Loop() {
			buf = wshub.JSONBatchCodec{}.AppendBatch(buf[:0], msgs)
		}
	})
}

// BenchmarkDispatch measures inbound publishes from one client to a room
// of ten, through the read path.
func BenchmarkDispatch(b *testing.B) {
	h := wshub.New(nil, &wshub.Options{PingInterval: -1, AuthorizeJoin: allowAll})
	ts := serve(b, h)
	p := dial(b, ts)
	p.join("r")
	go discard(p.conn)
	frame := []byte(`{"type":"publish","room":"r","data":{"text":"hello"}}`)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := p.conn.Write(ctx, websocket.MessageText, frame); err != nil {
			b.Fatal(err)
		}
		if i%64 == 63 {
			for h.Stats().MessagesOut < uint64(i+1)+1 && p.ctx.Err() == nil {
			}
		}
	}
}
