package wshub

import (
	"bufio"
	"bytes"
	"io"
	"testing"
)

type chunkReader struct{ chunks [][]byte }

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.chunks[0])
	r.chunks[0] = r.chunks[0][n:]
	if len(r.chunks[0]) == 0 {
		r.chunks = r.chunks[1:]
	}
	return n, nil
}

func mframe(op byte, payload []byte) []byte {
	b := []byte{0x80 | op}
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	default:
		b = append(b, 0x80|126, byte(n>>8), byte(n))
	}
	b = append(b, 1, 2, 3, 4)
	return append(b, payload...)
}

// TestPongFilterSplits feeds a stream of data frames and pongs to a
// pongFilter cut at every chunk size, read through buffers of many sizes:
// what comes out is the data frames, whole.
func TestPongFilterSplits(t *testing.T) {
	var stream, want []byte
	for i := range 20 {
		stream = append(stream, mframe(0xA, nil)...)
		d := mframe(0x1, bytes.Repeat([]byte{byte('a' + i)}, 10+i*20))
		stream = append(stream, d...)
		want = append(want, d...)
		stream = append(stream, mframe(0xA, []byte("keepalive"))...)
	}
	for chunk := 1; chunk < 40; chunk++ {
		for bufSize := 1; bufSize < 300; bufSize += 13 {
			var chunks [][]byte
			for i := 0; i < len(stream); i += chunk {
				chunks = append(chunks, append([]byte(nil), stream[i:min(i+chunk, len(stream))]...))
			}
			f := &pongFilter{src: &chunkReader{chunks}}
			var got []byte
			buf := make([]byte, bufSize)
			for {
				n, err := f.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("chunk %d buf %d: got %d bytes, want %d", chunk, bufSize, len(got), len(want))
			}
		}
	}
}

// TestPongFilterProbes reads frames as a woken reader does: a probe
// (Peek in probing mode, until it finds more than pongs), then one frame;
// and with the first bytes of the stream read before the filter (skim),
// as coder reads what a client sent with its upgrade request.
func TestPongFilterProbes(t *testing.T) {
	var stream [][]byte
	for i := range 30 {
		stream = append(stream, mframe(0xA, nil))
		d := mframe(0x1, bytes.Repeat([]byte{byte('a' + i)}, 30+i))
		stream = append(stream, d)
		stream = append(stream, mframe(0xA, []byte("keepalive")))
	}
	all := bytes.Join(stream, nil)
	for chunk := 1; chunk < 60; chunk++ {
		early := chunk % 17 // bytes read before the filter
		var chunks [][]byte
		for i := early; i < len(all); i += chunk {
			chunks = append(chunks, append([]byte(nil), all[i:min(i+chunk, len(all))]...))
		}
		f := &pongFilter{src: &chunkReader{chunks}}
		f.skim(all[:early])
		br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(all[:early]), f), 1024)
		// Frames that begin in what was read before the filter pass
		// whole, pongs too.
		var want [][]byte
		off := 0
		for _, fr := range stream {
			if off < early || fr[0] != 0x8A {
				want = append(want, fr)
			}
			off += len(fr)
		}
		for i, want := range want {
			for {
				f.probing = true
				_, err := br.Peek(1)
				f.probing = false
				if err == nil {
					break
				}
				if err != errNothing {
					t.Fatalf("chunk %d frame %d: %v", chunk, i, err)
				}
			}
			var h [2]byte
			io.ReadFull(br, h[:])
			size := headerSize(h[1])
			rest := make([]byte, size-2)
			io.ReadFull(br, rest)
			_, payload, _ := frameHeader(append(h[:], rest...))
			p := make([]byte, payload)
			if _, err := io.ReadFull(br, p); err != nil {
				t.Fatal(err)
			}
			got := append(append(h[:], rest...), p...)
			if !bytes.Equal(got, want) {
				t.Fatalf("chunk %d frame %d: got %q want %q", chunk, i, got, want)
			}
		}
	}
}

// TestPingSlotsSpread checks that the keepalive spreads clients over its
// slots, so that pings go out a slot at a time, and that taking clients
// out keeps each slot's index right.
func TestPingSlotsSpread(t *testing.T) {
	h := New(nil, &Options{})
	defer h.Close()
	const n = 100 * pingSlots
	cs := make([]*Client, n)
	for i := range cs {
		cs[i] = &Client{cause: ErrClientClosed} // the sweep passes them by
		h.keep.add(h, cs[i])
	}
	if len(h.keep.slots) != pingSlots {
		t.Fatalf("%d slots for the default interval, want %d", len(h.keep.slots), pingSlots)
	}
	check := func(want int) {
		t.Helper()
		total := 0
		for i := range h.keep.slots {
			s := &h.keep.slots[i]
			s.mu.Lock()
			k := len(s.clients)
			for j, c := range s.clients {
				if c.slot != s || int(c.slotAt) != j {
					t.Fatalf("slot %d: client %d says slot %p at %d", i, j, c.slot, c.slotAt)
				}
			}
			s.mu.Unlock()
			// 100 on average, binomial: 5 standard deviations either side.
			if lo, hi := want/pingSlots-5*10, want/pingSlots+5*10; k < lo || k > hi {
				t.Errorf("slot %d has %d clients, want %d to %d", i, k, lo, hi)
			}
			total += k
		}
		if total != want {
			t.Fatalf("%d clients in the slots, want %d", total, want)
		}
	}
	check(n)
	for i := 0; i < n; i += 2 {
		h.keep.remove(cs[i])
		h.keep.remove(cs[i]) // again: nothing
	}
	check(n / 2)
}
