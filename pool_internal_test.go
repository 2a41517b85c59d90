package wshub

import (
	"net"
	"runtime"
	"testing"
)

// TestPoolWritesNeverWait checks the write pool's batches on a real
// loopback connection whose peer never reads: the frames of a batch, past
// maxBatchBytes, reach the socket only at uncorkTry, which writes what the
// socket takes and, once it is full, returns errPending instead of
// waiting.
func TestPoolWritesNeverWait(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("writes without waiting are Linux's")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	srv := <-accepted
	if srv == nil {
		t.Fatal("no connection accepted")
	}
	defer srv.Close()
	h := New(nil, nil)
	defer h.Close()
	cc := &corkConn{Conn: srv, hub: h}
	_, cc.raw = sysFD(srv)
	io := newRawIO(nil)
	payload := make([]byte, 30<<10)
	for round := 0; ; round++ {
		if round == 1000 { // 1.2 GB: loopback sockets hold a few MB
			t.Fatal("the socket never filled")
		}
		_, before := cc.progress()
		cc.cork(true)
		for range 40 { // 1.2 MB, 37 times maxBatchBytes
			if err := cc.writeFrame(0x2, payload); err != nil {
				t.Fatal(err)
			}
		}
		if _, written := cc.progress(); written != before {
			t.Fatalf("round %d: %d bytes written before uncorkTry", round, written-before)
		}
		err := cc.uncorkTry(io)
		if err == errPending {
			taken, written := cc.progress()
			t.Logf("round %d: the socket is full, %d of %d bytes written", round, written, taken)
			return
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
