package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wshub/wshub"
)

// The presence scenario measures what presence costs a big room under
// churn: cfg.presenceN steady members in one room, reading, while a
// separate pool of connections joins and leaves the room at
// cfg.presenceRate joins and as many leaves per second. Its two rows are
// the same wshub server with presence on for the room and off; each run
// starts a fresh child for each, the rows interleaved run by run.
//
// The pool has cfg.presenceRate connections, connected (without joining)
// before the measurement; the pacer gives them the events in turn, so
// each one alternates join and leave, staying in the room, and out of it,
// for half a second: longer than presenceInterval, so that a join
// and its leave are not coalesced away within one diff.

// presenceInterval is how often, at most, a hub sends a presence room's
// diff: wshub coalesces a room's changes over 100 ms.
const presenceInterval = 100 * time.Millisecond

// presenceHubChild is the child of the scenario: presence-hub on|off.
const presenceHubChild = "presence-hub"

// presenceRoom is the room of the scenario.
const presenceRoom = "presence"

// newPresenceHub returns the server of a presence-hub child: wshub with
// default options but for Authenticate, which takes the client's ID from
// the "id" query parameter and shows it as its name ({"name": ID}), and,
// with on, presence in every room.
func newPresenceHub(arg string) (server, error) {
	if arg != "on" && arg != "off" {
		return nil, fmt.Errorf("presence-hub %q: want on or off", arg)
	}
	opts := wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			id := r.URL.Query().Get("id")
			if id == "" {
				return wshub.Identity{}, errors.New("no id")
			}
			return wshub.Identity{ID: id, Info: map[string]string{"name": id}}, nil
		},
	}
	if arg == "on" {
		opts.Rooms = func(string) wshub.RoomOptions { return wshub.RoomOptions{Presence: true} }
	}
	return newWshubServerWith(opts), nil
}

// presenceSetup is one row of the presence table.
type presenceSetup struct {
	label string
	arg   string // of the child
}

// presenceSetups lists the rows, the baseline first.
var presenceSetups = []presenceSetup{
	{label: "presence off", arg: "off"},
	{label: "presence on", arg: "on"},
}

var presenceMetrics = []metric{
	{key: "rate", header: "events/s"},
	{key: "cpu", header: "server CPU µs/event", ratio: true, digits: 1},
	{key: "busy", header: "server CPU %"},
	{key: "frames", header: "frames/member/s", digits: 2},
	{key: "perEvent", header: "frames/member/event", digits: 4},
	{key: "entries", header: "entries/frame", digits: 0},
	{key: "kb", header: "KB/member/s", digits: 1},
	{key: "p50", header: "ack p50 µs"},
	{key: "p99", header: "ack p99 µs"},
	{key: "clients", header: "bench clients CPU %"},
}

func presenceScenario() scenario {
	return scenario{
		id:    "presence",
		title: "Presence: a big room under churn",
		optIn: true,
		about: func(cfg *config) string {
			return fmt.Sprintf("%s members (distinct client IDs, Info {\"name\": ID}) in one room, reading; a pool of %s more connections joins and leaves the room (join, stay %v, leave, stay out as long; the connections stay open), paced at %s joins and %s leaves per second in all, measured for %v after a %v warm-up. "+
				"One wshub server child per row and run, the same but for the rooms' presence in Options.Rooms (on: every room; off: none); rows interleaved run by run. "+
				"events/s counts the joins and leaves acked in the window; server CPU is the child's getrusage over the window, per event, and in %% of one core; frames, entries (joins and leaves listed) and payload bytes are what each steady member received in the window (presence_diff frames; the pool's own frames not counted), averaged over the members; ack is from a join or leave sent to its ack; bench clients CPU is the parent's, which holds every connection. "+
				"× is the ratio of medians to %s.",
				format(float64(cfg.presenceN), 0), format(float64(presencePool(cfg)), 0), presenceHold(cfg), format(float64(cfg.presenceRate), 0), format(float64(cfg.presenceRate), 0),
				cfg.presenceFor, cfg.warmup, presenceSetups[0].label)
		},
		metrics: presenceMetrics,
		own:     runPresence,
	}
}

// presencePool is how many connections join and leave.
func presencePool(cfg *config) int { return max(2, cfg.presenceRate) }

// presenceHold is how long a pool connection stays in, or out of, the room.
func presenceHold(cfg *config) time.Duration {
	return time.Duration(float64(presencePool(cfg)) / float64(2*cfg.presenceRate) * float64(time.Second))
}

// runPresence runs the presence scenario: cfg.runs runs of every row,
// interleaved, and prints its table.
func runPresence(ctx context.Context, cfg *config, sc scenario, stdout, log io.Writer) error {
	if cfg.presenceN < 1 || cfg.presenceRate < 1 || cfg.presenceFor <= 0 {
		return errors.New("-presence-members, -presence-rate and -presence-for must be positive")
	}
	load0 := loadAverage()
	res := make(map[string]*outcome)
	var rows []string
	for _, s := range presenceSetups {
		res[s.label] = &outcome{values: make(map[string][]float64)}
		rows = append(rows, s.label)
	}
	for run := range cfg.runs {
		order := presenceSetups
		if run%2 == 1 { // alternate which row goes first
			order = []presenceSetup{presenceSetups[1], presenceSetups[0]}
		}
		for _, s := range order {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			o := res[s.label]
			began := time.Now()
			r, err := runPresenceOnce(ctx, cfg, s, run == 0, log)
			if err != nil {
				fmt.Fprintf(log, "bench: presence %s run %d: %v\n", s.arg, run+1, err)
				o.errs = append(o.errs, fmt.Sprintf("run %d: %v", run+1, err))
				continue
			}
			o.add(run, r)
			fmt.Fprintf(log, "bench: presence %s run %d: %s (%v)\n", s.arg, run+1, brief(sc, r), time.Since(began).Round(10*time.Millisecond))
		}
	}
	printTable(stdout, cfg, sc, rows, res, presenceSetups[0].label)
	fmt.Fprintf(stdout, "Load average (1, 5, 15 min) before: %s; after: %s.\n\n", load0, loadAverage())
	return nil
}

// member is a steady member of the room: its read loop counts what it
// gets.
type member struct {
	conn    *websocket.Conn
	frames  atomic.Int64 // presence_diff frames
	entries atomic.Int64 // joins and leaves they listed
	bytes   atomic.Int64 // their payload bytes
	other   atomic.Int64 // other frames
	lost    atomic.Bool
	closing atomic.Bool
	done    chan struct{}
}

// churner is a connection of the pool; only the pacer writes on it.
type churner struct {
	conn    *websocket.Conn
	in      bool // the pacer sent a join, not yet a leave
	lost    atomic.Bool
	closing atomic.Bool
	done    chan struct{}
}

// presFrameBufs holds read buffers, so that thousands of idle read loops do
// not each keep one.
var presFrameBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

var (
	presDiffType = []byte(`"type":"presence_diff"`)
	presAckType  = []byte(`"type":"ack"`)
	presErrType  = []byte(`"type":"error"`)
	presIDKey    = []byte(`"id":`)
)

// presReadFrames reads conn's frames until a read fails, and calls f with
// each. The frame is only valid during the call.
func presReadFrames(conn *websocket.Conn, f func([]byte)) {
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			return
		}
		buf := presFrameBufs.Get().(*bytes.Buffer)
		buf.Reset()
		_, err = buf.ReadFrom(r)
		if err == nil {
			f(buf.Bytes())
		}
		presFrameBufs.Put(buf)
		if err != nil {
			return
		}
	}
}

func (m *member) readLoop() {
	defer close(m.done)
	presReadFrames(m.conn, func(data []byte) {
		if !bytes.Contains(data, presDiffType) {
			m.other.Add(1)
			return
		}
		m.frames.Add(1)
		m.entries.Add(int64(bytes.Count(data, presIDKey)))
		m.bytes.Add(int64(len(data)))
	})
	if !m.closing.Load() {
		m.lost.Store(true)
	}
}

// acks counts the pool's acks and errors, and records the time from a
// request to its ack while recording is set.
type acks struct {
	acked, errors atomic.Int64
	recording     atomic.Bool
	mu            sync.Mutex
	hist          histogram
}

func (ch *churner) readLoop(a *acks) {
	defer close(ch.done)
	presReadFrames(ch.conn, func(data []byte) {
		switch {
		case bytes.Contains(data, presAckType):
			a.acked.Add(1)
			if !a.recording.Load() {
				return
			}
			// The request's id is the unix ns it was sent at.
			i := bytes.Index(data, []byte(`"id":"`))
			if i < 0 {
				return
			}
			sent := parseInt(data[i+len(`"id":"`):])
			a.mu.Lock()
			a.hist.record((time.Now().UnixNano() - sent) / 1000)
			a.mu.Unlock()
		case bytes.Contains(data, presErrType):
			a.errors.Add(1)
		}
	})
	if !ch.closing.Load() {
		ch.lost.Store(true)
	}
}

// presenceDial connects to addr as client id, offering wshub.json.
func presenceDial(ctx context.Context, addr, id string) (*websocket.Conn, error) {
	d := dialer
	d.Subprotocols = wshubProtocol{}.subprotocols()
	conn, resp, err := d.DialContext(ctx, "ws://"+addr+"/ws?id="+id, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", id, err)
	}
	return conn, nil
}

// presenceTrial is one run of one row.
type presenceTrial struct {
	cfg      *config
	rm       *remote
	members  []*member
	pool     []*churner
	acks     acks
	next     int   // the pool connection of the next event
	failed   int64 // events not sent: the write failed
	late     bool  // the pacer fell behind
	writeErr error
}

// connect connects the steady members, each starting to read once it
// joined (the room's diffs flow as the others join), then the pool, at
// most 64 dials at a time; on an error the caller closes what connected.
func (t *presenceTrial) connect(ctx context.Context) error {
	n, p := t.cfg.presenceN, presencePool(t.cfg)
	t.members = make([]*member, n)
	t.pool = make([]*churner, p)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		ferr error
	)
	sem := make(chan struct{}, 64)
	for i := range n + p {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var err error
			if i < n {
				err = t.connectMember(ctx, i)
			} else {
				err = t.connectChurner(ctx, i-n)
			}
			if err != nil {
				mu.Lock()
				ferr = cmpOr(ferr, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return cmpOr(ferr, ctx.Err())
}

func (t *presenceTrial) connectMember(ctx context.Context, i int) error {
	conn, err := presenceDial(ctx, t.rm.addr, fmt.Sprintf("m-%d", i))
	if err != nil {
		return err
	}
	if err := (wshubProtocol{}).join(conn, presenceRoom); err != nil {
		conn.Close()
		return fmt.Errorf("join m-%d: %w", i, err)
	}
	m := &member{conn: conn, done: make(chan struct{})}
	t.members[i] = m
	go m.readLoop()
	return nil
}

func (t *presenceTrial) connectChurner(ctx context.Context, i int) error {
	conn, err := presenceDial(ctx, t.rm.addr, fmt.Sprintf("c-%d", i))
	if err != nil {
		return err
	}
	ch := &churner{conn: conn, done: make(chan struct{})}
	t.pool[i] = ch
	go ch.readLoop(&t.acks)
	return nil
}

// close cuts every connection and waits, a few seconds at most, for the
// read loops to end.
func (t *presenceTrial) close() {
	var dones []chan struct{}
	for _, m := range t.members {
		if m != nil {
			m.closing.Store(true)
			m.conn.Close()
			dones = append(dones, m.done)
		}
	}
	for _, ch := range t.pool {
		if ch != nil {
			ch.closing.Store(true)
			ch.conn.Close()
			dones = append(dones, ch.done)
		}
	}
	deadline := time.After(5 * time.Second)
	for _, d := range dones {
		select {
		case <-d:
		case <-deadline:
			return
		}
	}
}

// pace sends the pool's joins and leaves, 2 × cfg.presenceRate a second
// in turn over the pool, for d; it returns how many it sent.
func (t *presenceTrial) pace(ctx context.Context, d time.Duration) int64 {
	rate := 2 * float64(t.cfg.presenceRate)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	begin := time.Now()
	var sent int64
	for ctx.Err() == nil {
		now := <-tick.C
		elapsed := now.Sub(begin)
		if elapsed >= d {
			break
		}
		due := int64(elapsed.Seconds()*rate) - sent
		if due > int64(rate/10) {
			t.late = true // more than 100 ms behind
		}
		for range due {
			t.event()
			sent++
		}
	}
	return sent
}

// event sends the next pool connection's join, or its leave.
func (t *presenceTrial) event() {
	ch := t.pool[t.next]
	t.next = (t.next + 1) % len(t.pool)
	typ := "join"
	if ch.in {
		typ = "leave"
	}
	frame := fmt.Appendf(nil, `{"type":%q,"room":%q,"id":"%d"}`, typ, presenceRoom, time.Now().UnixNano())
	ch.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ch.conn.WriteMessage(websocket.TextMessage, frame); err != nil {
		t.failed++
		t.writeErr = cmpOr(t.writeErr, err)
		return
	}
	ch.in = !ch.in
}

// steady sums the members' counters.
func (t *presenceTrial) steady() (frames, entries, bytes int64) {
	for _, m := range t.members {
		frames += m.frames.Load()
		entries += m.entries.Load()
		bytes += m.bytes.Load()
	}
	return
}

func runPresenceOnce(ctx context.Context, cfg *config, s presenceSetup, profile bool, log io.Writer) (runResult, error) {
	rm, err := startRemote(presenceHubChild, s.arg)
	if err != nil {
		return runResult{}, err
	}
	defer rm.stop()
	t := &presenceTrial{cfg: cfg, rm: rm}
	defer t.close()
	began := time.Now()
	if err := t.connect(ctx); err != nil {
		return runResult{}, err
	}
	if err := rm.waitMembers(cfg.presenceN, 60*time.Second); err != nil {
		return runResult{}, err
	}
	fmt.Fprintf(log, "bench: presence %s: %d members and %d in the pool connected in %v\n", s.arg, cfg.presenceN, len(t.pool), time.Since(began).Round(10*time.Millisecond))
	// Let the diffs of the members' own joins go out.
	time.Sleep(3 * presenceInterval)
	t.pace(ctx, cfg.warmup)
	var prof *profiler
	if profile {
		if prof, err = startProfile(cfg, rm, "presence", s.arg); err != nil {
			return runResult{}, err
		}
	}
	t.acks.recording.Store(true)
	s0, err := rm.stats(false)
	if err != nil {
		return runResult{}, err
	}
	f0, e0, b0 := t.steady()
	a0, c0, t0 := t.acks.acked.Load(), cpuTime(), time.Now()
	sent := t.pace(ctx, cfg.presenceFor)
	f1, e1, b1 := t.steady()
	a1, c1, t1 := t.acks.acked.Load(), cpuTime(), time.Now()
	s1, err := rm.stats(false)
	t.acks.recording.Store(false)
	if err != nil {
		return runResult{}, err
	}
	if err := prof.stop(); err != nil {
		return runResult{}, err
	}
	if ctx.Err() != nil {
		return runResult{}, ctx.Err()
	}
	secs := t1.Sub(t0).Seconds()
	acked := float64(a1 - a0)
	n := float64(cfg.presenceN)
	t.acks.mu.Lock()
	p50, p99 := t.acks.hist.quantile(0.50), t.acks.hist.quantile(0.99)
	t.acks.mu.Unlock()
	values := map[string]float64{
		"rate":     acked / secs,
		"cpu":      float64(s1.CPUNanos-s0.CPUNanos) / 1e3 / max(acked, 1),
		"busy":     100 * float64(s1.CPUNanos-s0.CPUNanos) / 1e9 / secs,
		"frames":   float64(f1-f0) / n / secs,
		"perEvent": float64(f1-f0) / n / max(acked, 1),
		"entries":  float64(e1-e0) / max(float64(f1-f0), 1),
		"kb":       float64(b1-b0) / 1e3 / n / secs,
		"p50":      float64(p50),
		"p99":      float64(p99),
		"clients":  100 * float64(c1-c0) / 1e9 / secs,
	}
	lost := 0
	for _, m := range t.members {
		if m.lost.Load() {
			lost++
		}
	}
	for _, ch := range t.pool {
		if ch.lost.Load() {
			lost++
		}
	}
	notes := serverNotes(s1, lost, 0)
	if t.failed > 0 {
		notes = append(notes, fmt.Sprintf("%d events not sent: %v", t.failed, t.writeErr))
	}
	if e := t.acks.errors.Load(); e > 0 {
		notes = append(notes, fmt.Sprintf("%d error answers", e))
	}
	if t.late {
		notes = append(notes, "the pacer fell behind")
	}
	if acked < 0.95*float64(sent) {
		notes = append(notes, fmt.Sprintf("%s of %s events acked in the window: rate not sustained", format(acked, 0), format(float64(sent), 0)))
	}
	return runResult{values: values, notes: notes}, nil
}
