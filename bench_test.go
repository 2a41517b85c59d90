package wshub_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"syscall"
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

// BenchmarkHistoryFanout is BenchmarkBroadcast at 1,000 plain clients in
// a room without and with history (the last 1,000 messages kept).
func BenchmarkHistoryFanout(b *testing.B) {
	for _, keep := range []int{0, 1000} {
		name := "history=off"
		if keep > 0 {
			name = "history=on"
		}
		b.Run(name, func(b *testing.B) {
			benchBroadcastWith(b, "wshub.json", 1000, func(string) wshub.RoomOptions {
				return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: keep}}
			})
		})
	}
}

// BenchmarkHistoryMemory measures the in-memory store's heap per retained
// message and per room, filling 10,000 rooms with 100 messages of a
// typical chat line each. One op fills all of them in a new store.
func BenchmarkHistoryMemory(b *testing.B) {
	const rooms, perRoom = 10_000, 100
	msg := []byte(`{"type":"message","room":"room-1234","from":"0123456789abcdef","data":{"name":"alice","text":"a chat line of about sixty bytes, as people type"}}`)
	policy := wshub.HistoryPolicy{Messages: perRoom}
	names := make([]string, rooms)
	for i := range names {
		names[i] = fmt.Sprintf("room-%04d", i)
	}
	ctx := context.Background()
	var perMsg, perRoomBytes float64
	for b.Loop() {
		before := heapInUse()
		store := wshub.NewMemoryEngine(1 << 40)
		for _, name := range names {
			if _, err := store.Read(ctx, name, policy, 0, 0); err != nil {
				b.Fatal(err)
			}
		}
		empty := heapInUse()
		for range perRoom {
			for _, name := range names {
				// The hub hands the store a message it encoded for it.
				if err := store.Publish(ctx, name, policy, "", append([]byte(nil), msg...))(); err != nil {
					b.Fatal(err)
				}
			}
		}
		full := heapInUse()
		perRoomBytes = float64(empty-before) / rooms
		perMsg = float64(full-empty) / (rooms * perRoom)
		runtime.KeepAlive(store)
	}
	b.ReportMetric(perMsg, "B/retained-msg")
	b.ReportMetric(perMsg-float64(len(msg)), "B-overhead/msg")
	b.ReportMetric(perRoomBytes, "B/empty-room")
}

func heapInUse() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

func benchBroadcast(b *testing.B, proto string, n int) {
	benchBroadcastWith(b, proto, n, nil)
}

func benchBroadcastWith(b *testing.B, proto string, n int, rooms func(string) wshub.RoomOptions) {
	joined := make(chan struct{}, n)
	h := wshub.New(nil, &wshub.Options{
		Rooms:     rooms,
		OnConnect: func(c *wshub.Client) { c.Join("r"); joined <- struct{}{} },
		Limits:    wshub.Limits{PingInterval: -1},
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
	cpu0 := cpuTime()
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
	// CPU time, of the hub and its clients alike, depends less than
	// seconds on what else the machine runs.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N*n), "cpu-ns/delivery")
}

// cpuTime returns the CPU time this process has used, in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
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
	h := wshub.New(nil, &wshub.Options{AuthorizeJoin: allowAll, Limits: wshub.Limits{PingInterval: -1}})
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
