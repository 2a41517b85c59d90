package wshub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"golang.org/x/sync/errgroup"
)

// chaosMsg is the data of a chaos test's room message: publisher P's N-th
// message to that room (P is -1 for the server).
type chaosMsg struct {
	P   int    `json:"p"`
	N   int    `json:"n"`
	Pad string `json:"pad,omitempty"` // makes the server's messages fill stalled sockets
}

// chaosLog is what one client saw: for each room and publisher, the
// sequence numbers received, which must only increase.
type chaosLog struct {
	seen map[string]map[int][]int
	end  error // how the connection ended, if before the end of the test
}

func (l *chaosLog) add(room string, m chaosMsg) error {
	if l.seen[room] == nil {
		l.seen[room] = make(map[int][]int)
	}
	s := l.seen[room][m.P]
	if len(s) > 0 && m.N <= s[len(s)-1] {
		return fmt.Errorf("room %s publisher %d: %d after %d", room, m.P, m.N, s[len(s)-1])
	}
	l.seen[room][m.P] = append(s, m.N)
	return nil
}

// dialCuttable dials a client whose TCP connection the test can reset.
func dialCuttable(ctx context.Context, url string) (*websocket.Conn, *net.TCPConn, error) {
	var tcp *net.TCPConn
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				tcp = c.(*net.TCPConn)
			}
			return c, err
		},
	}}
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc})
	return conn, tcp, err
}

func openFDs(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting file descriptors: %v", err)
	}
	return len(entries)
}

// TestChaos: a few hundred clients join, leave, publish, stall, close and
// reset their connections at random while the server broadcasts. Every
// message a client receives is in publisher order without duplicates;
// clients that read throughout and stay in their rooms miss nothing; and
// afterwards the hub is empty and nothing leaked.
func TestChaos(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd to count file descriptors")
	}
	// The network poller opens its descriptors on first use: count after.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	fdsBefore := openFDs(t)
	var gone reasons
	h := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: allowAll,
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			return wshub.Identity{ID: r.URL.Query().Get("id")}, nil
		},
		OnDisconnect: gone.record,
		// A reader must fall 3 s behind to be closed: on two cores under
		// -race, with the other modules' tests running, the server's
		// unpaced broadcasts can hold a reading client's writer back
		// for a second.
		Limits: wshub.Limits{WriteTimeout: 3 * time.Second, PingInterval: -1},
	})
	ts := serve(t, h)
	ctx := testCtx(t)
	rooms := []string{"a", "b", "c", "d"}
	const stayers = 8 // read throughout, in every room, until the end
	maxOps := soak(20, 60)
	others := soak(40, 240) // join, leave, publish, stall, close and cut at random
	duration := soak(500*time.Millisecond, 4*time.Second)
	deadline := time.Now().Add(duration)

	// Stayers join every room before anything is published.
	stayerLogs := make([]*chaosLog, stayers)
	stayerConns := make([]*websocket.Conn, stayers)
	var readers errgroup.Group
	for i := range stayers {
		conn, _, err := websocket.Dial(ctx, wsURL(ts)+fmt.Sprintf("?id=s%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		p := &peer{t: t, ctx: ctx, conn: conn}
		for _, r := range rooms {
			p.join(r)
		}
		stayerConns[i] = conn
		log := &chaosLog{seen: make(map[string]map[int][]int)}
		stayerLogs[i] = log
		readers.Go(func() error { return readChaos(ctx, conn, log) })
	}

	// published[p][room] is how many messages p published to room, for
	// publishers that ended cleanly (the server read all of them).
	var mu sync.Mutex
	published := make(map[int]map[string]int)
	var g errgroup.Group
	for i := range others {
		g.Go(func() error {
			return chaosClient(ctx, wsURL(ts), i, rooms, maxOps, deadline, func(counts map[string]int) {
				mu.Lock()
				published[i] = counts
				mu.Unlock()
			})
		})
	}
	// The server broadcasts meanwhile; each Broadcast that returns nil must
	// reach every stayer.
	serverSent := make(map[string]int)
	pad := strings.Repeat("x", 2000)
	g.Go(func() error {
		for n := 0; time.Now().Before(deadline) && n < 2000; n++ {
			r := rooms[n%len(rooms)]
			if err := h.Room(r).Broadcast(ctx, &wshub.Message{Data: chaosMsg{P: -1, N: serverSent[r], Pad: pad}}); err != nil {
				return err
			}
			serverSent[r]++
			time.Sleep(time.Millisecond) // a paced server, not a flood
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// A sentinel after everything tells the stayers they have it all.
	for _, r := range rooms {
		if err := h.Room(r).Broadcast(ctx, &wshub.Message{Type: "end"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := readers.Wait(); err != nil {
		t.Fatalf("stayer: %v", err)
	}
	// Clients that the server saw close normally had every publish read by
	// the server. (A client whose close raced the server's writes may be
	// reported with the write's error instead, and is left out.)
	// Stayers, which read throughout, get all of them unless the server
	// closed them, which it must have done with a reason.
	eventually(t, "every other client's OnDisconnect", func() bool { return len(gone.all()) >= others })
	reasons := gone.all()
	cleanCloses := len(published)
	for p := range published {
		if websocket.CloseStatus(reasons[fmt.Sprintf("o%d", p)]) != websocket.StatusNormalClosure {
			delete(published, p)
		}
	}
	complete := 0
	for i, log := range stayerLogs {
		if log.end != nil {
			reason := reasons[fmt.Sprintf("s%d", i)]
			t.Logf("stayer %d closed: %v", i, reason)
			if !errors.Is(reason, wshub.ErrWriteTimeout) && !errors.Is(reason, wshub.ErrSendQueueFull) {
				t.Fatalf("stayer %d lost its connection (%v) with disconnect reason %v", i, log.end, reason)
			}
			continue
		}
		complete++
		for _, r := range rooms {
			if got := len(log.seen[r][-1]); got != serverSent[r] {
				t.Fatalf("stayer %d got %d of the server's %d messages to %s", i, got, serverSent[r], r)
			}
			for p, counts := range published {
				if got := len(log.seen[r][p]); got != counts[r] {
					t.Fatalf("stayer %d got %d of client %d's %d messages to %s", i, got, p, counts[r], r)
				}
			}
		}
	}
	// The server's broadcasts are not paced (server-side sends never
	// wait), so on a machine busy enough a stayer can fall a whole queue
	// behind and be closed; it must then have been told why, as checked
	// above. Most of them keep up.
	if complete < stayers/2 {
		t.Fatalf("only %d of %d stayers kept up", complete, stayers)
	}
	for _, conn := range stayerConns {
		conn.CloseNow()
	}
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	s := h.Stats()
	equal(t, "clients", s.Clients, 0)
	equal(t, "rooms", s.Rooms, 0)
	kicked := 0
	for id, err := range gone.all() {
		switch {
		case err == nil:
			t.Fatalf("client %s closed without a reason", id)
		case errors.Is(err, wshub.ErrWriteTimeout), errors.Is(err, wshub.ErrSendQueueFull):
			kicked++
		case id[0] == 'o' && isStaller(must(strconv.Atoi(id[1:]))):
			t.Fatalf("stalled client %s closed with %v, want a write timeout or a full queue", id, err)
		}
	}
	equal(t, "clients closed for stalling", uint64(kicked), s.Kicked)
	t.Logf("stats %+v; %d of %d stayers complete; %d clients closed cleanly, %d of them seen so by the server",
		s, complete, stayers, cleanCloses, len(published))
	ts.Close()
	eventually(t, "file descriptors released", func() bool { return openFDs(t) <= fdsBefore })
}

// readChaos reads a stayer's messages until an "end" in every room or
// until the connection ends.
func readChaos(ctx context.Context, conn *websocket.Conn, log *chaosLog) error {
	ends := 0
	for ends < 4 {
		_, b, err := conn.Read(ctx)
		if err != nil {
			log.end = err
			return nil
		}
		var m wireMsg
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		switch m.Type {
		case "end":
			ends++
		case "message":
			var cm chaosMsg
			if err := json.Unmarshal(m.Data, &cm); err != nil {
				return err
			}
			if err := log.add(m.Room, cm); err != nil {
				return err
			}
		}
	}
	return nil
}

// isStaller tells which chaos clients stop reading.
func isStaller(i int) bool { return i%30 == 0 }

// chaosClient plays one random client. Whatever it does, what it receives
// must be in order; when it ends with a clean close, it reports how many
// messages it published to each room.
func chaosClient(ctx context.Context, url string, i int, rooms []string, maxOps int, deadline time.Time, clean func(map[string]int)) error {
	conn, tcp, err := dialCuttable(ctx, url+fmt.Sprintf("?id=o%d", i))
	if err != nil {
		return err
	}
	defer conn.CloseNow()
	rng := rand.New(rand.NewPCG(uint64(i), 1))
	if isStaller(i) {
		// It joins a shared room, never reads, and publishes big messages
		// into a room of its own until the hub closes it: its own copies
		// fill its socket and then its queue.
		own := fmt.Sprintf("own%d", i)
		for _, r := range []string{rooms[rng.IntN(len(rooms))], own} {
			conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"join","room":%q}`, r))
		}
		pad := strings.Repeat("s", 8000)
		for n := 0; n < 100_000; n++ {
			data, _ := json.Marshal(chaosMsg{P: i, N: n, Pad: pad})
			if conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, `{"type":"publish","room":%q,"data":%s}`, own, data)) != nil {
				return nil
			}
		}
		return fmt.Errorf("staller %d was never closed", i)
	}
	readDone := make(chan error, 1)
	{
		go func() {
			log := &chaosLog{seen: make(map[string]map[int][]int)}
			for {
				_, b, err := conn.Read(ctx)
				if err != nil {
					readDone <- nil
					return
				}
				var m wireMsg
				if json.Unmarshal(b, &m) != nil || m.Type != "message" {
					continue
				}
				var cm chaosMsg
				if json.Unmarshal(m.Data, &cm) != nil {
					continue
				}
				if err := log.add(m.Room, cm); err != nil {
					readDone <- fmt.Errorf("client %d: %w", i, err)
					return
				}
			}
		}()
	}
	joined := make(map[string]bool)
	counts := make(map[string]int)
	send := func(format string, args ...any) error {
		return conn.Write(ctx, websocket.MessageText, fmt.Appendf(nil, format, args...))
	}
	for op := 0; op < maxOps && time.Now().Before(deadline); op++ {
		r := rooms[rng.IntN(len(rooms))]
		var err error
		switch k := rng.IntN(10); {
		case k < 2 && !joined[r]:
			joined[r], err = true, send(`{"type":"join","room":%q}`, r)
		case k < 3 && joined[r]:
			joined[r], err = false, send(`{"type":"leave","room":%q}`, r)
		case joined[r]:
			data, _ := json.Marshal(chaosMsg{P: i, N: counts[r]})
			counts[r]++
			err = send(`{"type":"publish","room":%q,"data":%s}`, r, data)
		}
		if err != nil {
			return nil // the server closed it (a stalled client, say)
		}
		if rng.IntN(4) == 0 {
			time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		}
	}
	switch rng.IntN(3) {
	case 0:
		tcp.SetLinger(0) // close with a TCP reset
		tcp.Close()
	case 1:
		conn.CloseNow()
	default:
		if conn.Close(websocket.StatusNormalClosure, "") == nil {
			clean(counts)
		}
	}
	if err := <-readDone; err != nil {
		return err
	}
	return nil
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
