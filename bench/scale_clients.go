package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// A scale-clients child holds one share of the scale scenario's clients:
// gorilla/websocket connections, each with one goroutine that joins one
// room and then only reads, answering pings. It obeys commands, one a
// line, on stdin, and answers each with a line on stdout:
//
//	connect ADDR ROOMS FIRST N K NAMED
//	          connect clients FIRST to FIRST+N-1 of a layout of ROOMS
//	          rooms (client I in room I mod ROOMS), each counting K
//	          rounds, with ?name=c-I if NAMED is true, at most
//	          scaleDialsInFlight dials and joins at a time; answer
//	          "ok JOINED REFUSED" (REFUSED: 503s retried) once every
//	          one joined, or "err WHY" if one could not
//	wait R    wait until every client still connected got round R, at
//	          most scaleRoundWait; answer "ok GOT"
//	report    answer its scaleReport as JSON
//
// It exits when stdin ends; the kernel closes the connections.

const (
	// scaleDialsInFlight bounds the dials and joins of one client process
	// in flight, a client waiting out a 503 included.
	scaleDialsInFlight = 64
	// scaleDialAttempts bounds a client's dials: a 503 or a failed dial is
	// retried, after the Retry-After or a growing wait.
	scaleDialAttempts = 30
	// scaleConnectFor bounds a connect command.
	scaleConnectFor = 5 * time.Minute
	// scaleJoinWait bounds the wait for a join's ack.
	scaleJoinWait = 30 * time.Second
	// scaleRoundWait bounds a wait command.
	scaleRoundWait = 20 * time.Second
)

// scaleReport is what a client process reports of the rounds.
type scaleReport struct {
	// Rounds holds, per round, each arrival in µs after the round's start.
	Rounds     [][]int64      `json:"rounds"`
	Missing    int            `json:"missing"` // rounds not received, summed over the clients
	Dups       int            `json:"dups"`
	Bad        int            `json:"bad"`           // room messages without a round, or past K
	Why        map[string]int `json:"why,omitempty"` // lost connections by how they ended
	DialErrors int            `json:"dial_errors"`   // failed dials retried, 503s aside
}

// scaleClients is the state of a scale-clients child.
type scaleClients struct {
	rounds int
	conns  []*scaleConn
	got    []atomic.Int64 // clients that got each round

	refused, dialErrs, dups, bad, lost atomic.Int64

	wpool sync.Pool // write buffers, used only by the joins

	mu  sync.Mutex
	why map[string]int
}

// scaleConn is one client's record: its read loop writes it.
type scaleConn struct {
	arrivals []atomic.Int64 // per round, 1 + µs after its start; 0: not yet
	lost     atomic.Bool
}

// runScaleClients is the scale-clients child, reading commands from in
// and answering on out.
func runScaleClients(in io.Reader, out io.Writer) error {
	w := bufio.NewWriter(out)
	// startRemote waits for an address line; a client process serves none.
	fmt.Fprintln(w, "addr -")
	if err := w.Flush(); err != nil {
		return err
	}
	s := &scaleClients{why: make(map[string]int)}
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		ans, err := s.do(f)
		if err != nil {
			ans = "err " + strings.ReplaceAll(err.Error(), "\n", " ")
		}
		w.WriteString(ans)
		w.WriteByte('\n')
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}

func (s *scaleClients) do(f []string) (string, error) {
	ints := func(fields []string) ([]int, error) {
		var v []int
		for _, x := range fields {
			n, err := strconv.Atoi(x)
			if err != nil {
				return nil, err
			}
			v = append(v, n)
		}
		return v, nil
	}
	switch {
	case f[0] == "connect" && len(f) == 7:
		v, err := ints(f[2:6])
		if err != nil {
			return "", err
		}
		named, err := strconv.ParseBool(f[6])
		if err != nil {
			return "", err
		}
		return s.connect(f[1], v[0], v[1], v[2], v[3], named)
	case f[0] == "wait" && len(f) == 2:
		r, err := strconv.Atoi(f[1])
		if err != nil {
			return "", err
		}
		return s.wait(r)
	case f[0] == "report":
		b, err := json.Marshal(s.report())
		return string(b), err
	}
	return "", fmt.Errorf("unknown command %q", strings.Join(f, " "))
}

// connect connects and joins the clients of the connect command.
func (s *scaleClients) connect(addr string, nRooms, first, n, k int, named bool) (string, error) {
	if s.conns != nil {
		return "", errors.New("connected already")
	}
	if nRooms < 1 || n < 1 || k < 1 {
		return "", errors.New("ROOMS, N and K must be positive")
	}
	s.rounds, s.got = k, make([]atomic.Int64, k)
	ctx, cancel := context.WithTimeout(context.Background(), scaleConnectFor)
	defer cancel()
	sem := make(chan struct{}, scaleDialsInFlight)
	joined := make(chan error, n)
	started := 0
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		g := first + i
		url := "ws://" + addr + "/ws"
		if named {
			url += "?name=c-" + strconv.Itoa(g)
		}
		c := &scaleConn{arrivals: make([]atomic.Int64, k)}
		s.conns = append(s.conns, c)
		started++
		// It reads until the process exits.
		go c.run(ctx, s, url, scaleRoom(g%nRooms, nRooms), func(err error) {
			<-sem
			joined <- err
		})
	}
	var ferr error
	for range started {
		ferr = cmpOr(ferr, <-joined)
	}
	if err := cmpOr(ferr, ctx.Err()); err != nil {
		return "", err
	}
	return fmt.Sprintf("ok %d %d", started, s.refused.Load()), nil
}

// run dials, joins room, calls joined, and reads until the connection
// ends. ctx bounds the dials.
func (c *scaleConn) run(ctx context.Context, s *scaleClients, url, room string, joined func(error)) {
	conn, err := s.dial(ctx, url)
	if err != nil {
		joined(err)
		return
	}
	defer conn.Close()
	if err := scaleJoin(conn, room); err != nil {
		joined(fmt.Errorf("join %s: %w", room, err))
		return
	}
	joined(nil)
	err = c.read(conn, s)
	c.lost.Store(true)
	s.lost.Add(1)
	s.mu.Lock()
	s.why[closeReason(err)]++
	s.mu.Unlock()
}

// dial connects to url, retrying a 503 after its Retry-After (plus up to
// a quarter more, as the client libraries do) and a failed dial after
// 100 ms more each time, up to 2 s; an upgrade refused otherwise is an
// error at once.
func (s *scaleClients) dial(ctx context.Context, url string) (*websocket.Conn, error) {
	d := dialer
	d.Subprotocols = wshubProtocol{}.subprotocols()
	d.WriteBufferPool = &s.wpool
	for attempt := 1; ; attempt++ {
		conn, resp, err := d.DialContext(ctx, url, nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err == nil {
			return conn, nil
		}
		wait := min(time.Duration(attempt)*100*time.Millisecond, 2*time.Second)
		switch {
		case resp != nil && resp.StatusCode == http.StatusServiceUnavailable:
			s.refused.Add(1)
			if sec, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && sec > 0 {
				ra := time.Duration(sec) * time.Second
				wait = ra + rand.N(ra/4)
			}
		case resp != nil:
			return nil, fmt.Errorf("dial: %s: %w", resp.Status, err)
		default:
			s.dialErrs.Add(1)
		}
		if attempt == scaleDialAttempts {
			return nil, fmt.Errorf("dial: %d attempts, the last: %w", attempt, err)
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, fmt.Errorf("dial: %w", ctx.Err())
		}
	}
}

// scaleJoin joins room on conn and waits for the ack, reading past what
// comes before it (a presence room's state and diffs).
func scaleJoin(conn *websocket.Conn, room string) error {
	if err := conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"join","room":%q,"id":"j"}`, room)); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(scaleJoinWait))
	defer conn.SetReadDeadline(time.Time{})
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return err
		}
		switch {
		case bytes.HasPrefix(data, []byte(`{"type":"error"`)):
			return fmt.Errorf("server answered %s", data)
		case bytes.HasPrefix(data, []byte(`{"type":"ack"`)) && bytes.Contains(data, []byte(`"id":"j"`)):
			return nil
		}
	}
}

var (
	scaleRoundKey = []byte(`"round":`)
	scaleT0Key    = []byte(`"t0":`)
)

// scaleMessageType marks a room message, within the first scaleHead
// bytes of its frame: after the "seq" of a room with history.
var scaleMessageType = []byte(`"type":"message"`)

// scaleHead is how much of a frame read reads to know a room message:
// {"seq":N,"type":"message" for any uint64 N.
const scaleHead = 48

// read reads frames until the connection fails, recording the arrival
// of each round; it reads no more of other frames (presence diffs) than
// it takes to know them.
func (c *scaleConn) read(conn *websocket.Conn, s *scaleClients) error {
	var head [scaleHead]byte
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			return err
		}
		_, err = io.ReadFull(r, head[:])
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			// Shorter than a round's message (its payload alone is
			// longer), or the connection's end, which NextReader returns.
			continue
		case err != nil:
			return err
		case !bytes.Contains(head[:], scaleMessageType):
			if _, err := io.Copy(io.Discard, r); err != nil {
				return err
			}
			continue
		}
		buf := presFrameBufs.Get().(*bytes.Buffer)
		buf.Reset()
		buf.Write(head[:])
		_, err = buf.ReadFrom(r)
		if err == nil {
			c.record(s, buf.Bytes(), time.Now().UnixNano())
		}
		presFrameBufs.Put(buf)
		if err != nil {
			return err
		}
	}
}

// record notes the arrival at now (unix ns) of a room message.
func (c *scaleConn) record(s *scaleClients, msg []byte, now int64) {
	round, ok1 := intAfter(msg, scaleRoundKey)
	t0, ok2 := intAfter(msg, scaleT0Key)
	if !ok1 || !ok2 || round < 0 || round >= int64(len(c.arrivals)) {
		s.bad.Add(1)
		return
	}
	if c.arrivals[round].CompareAndSwap(0, 1+max(0, now-t0)/1000) {
		s.got[round].Add(1)
		return
	}
	s.dups.Add(1)
}

// intAfter parses the decimal number after key in b.
func intAfter(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 || i+len(key) >= len(b) {
		return 0, false
	}
	rest := b[i+len(key):]
	if rest[0] < '0' || rest[0] > '9' {
		return 0, false
	}
	return parseInt(rest), true
}

// wait waits until every client still connected got round r, at most
// scaleRoundWait, polling.
func (s *scaleClients) wait(r int) (string, error) {
	if r < 0 || r >= s.rounds {
		return "", fmt.Errorf("no round %d", r)
	}
	deadline := time.Now().Add(scaleRoundWait)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		got := s.got[r].Load()
		if got == int64(len(s.conns)) || s.lost.Load() > 0 && s.liveGot(r) || time.Now().After(deadline) {
			return fmt.Sprintf("ok %d", got), nil
		}
		<-tick.C
	}
}

// liveGot reports whether every client still connected got round r.
func (s *scaleClients) liveGot(r int) bool {
	for _, c := range s.conns {
		if !c.lost.Load() && c.arrivals[r].Load() == 0 {
			return false
		}
	}
	return true
}

func (s *scaleClients) report() scaleReport {
	rep := scaleReport{
		Rounds:     make([][]int64, s.rounds),
		Dups:       int(s.dups.Load()),
		Bad:        int(s.bad.Load()),
		DialErrors: int(s.dialErrs.Load()),
	}
	for _, c := range s.conns {
		for r := range s.rounds {
			if v := c.arrivals[r].Load(); v > 0 {
				rep.Rounds[r] = append(rep.Rounds[r], v-1)
			} else {
				rep.Missing++
			}
		}
	}
	s.mu.Lock()
	if len(s.why) > 0 {
		rep.Why = make(map[string]int, len(s.why))
		for k, v := range s.why {
			rep.Why[k] = v
		}
	}
	s.mu.Unlock()
	return rep
}
