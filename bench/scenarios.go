package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// config holds the sizes and durations of a whole bench run.
type config struct {
	quick      bool
	runs       int
	warmup     time.Duration
	duration   time.Duration
	window     int
	fanout     []int
	latencyN   int
	latencyHz  int // deliveries per second, in total
	roomsN     int
	roomSize   int
	idleN      int
	churnConc  int
	profileDir string

	// latencyRates are the publishes per second of the latency scenarios
	// (-latency-rates), each to latencyN clients; nil for one at latencyHz.
	latencyRates []int
	// tables are the tables printed so far, for -charts.
	tables []table

	floodN        []int         // readers of each flood scenario
	floodMessages int           // messages of one flood
	floodFor      time.Duration // bound of the publishing
	floodDrain    time.Duration // bound of the wait for the readers
	floodQuiet    time.Duration // the wait ends after this long without a delivery

	trace bool // with profileDir, the cluster scenario's children write execution traces too

	clusterN      int    // clients of the cluster scenario, over all hubs
	clusterHz     int    // publishes per second of its latency phase
	clusterSetups string // comma-separated keys of its rows; "" for all
	clusterServer bool   // its publishers call Room.Broadcast in the hubs instead of being clients
	clusterSync   bool   // with clusterServer, they call Room.Broadcast, one message at a time
	redisBin      string // the redis-server of its Redis rows, looked up in PATH
	redisVersion  string // of redisBin, once the scenario found it

	stormN int // clients of the storm scenario on the restarted hub

	scaleN        int           // connections of the scale scenario's server
	scaleProcs    int           // client processes they are spread over
	scaleIdle     time.Duration // its idle window
	scaleMessages int           // its rounds of fan-out, per layout

	presenceN    int           // steady members of the presence scenario's room
	presenceRate int           // its joins per second, and as many leaves
	presenceFor  time.Duration // its measured window
}

// metric is one column of a scenario's table.
type metric struct {
	key    string
	header string
	ratio  bool // print the ratio to the baseline next to it
	digits int  // decimals
	sum    bool // print the total over the runs, not the median
}

// runResult is the outcome of one run of one contender.
type runResult struct {
	values map[string]float64
	notes  []string
}

// scenario is one table of the report.
type scenario struct {
	id      string
	title   string
	about   func(cfg *config) string
	metrics []metric
	run     func(ctx context.Context, cfg *config, c contender, rm *remote) (runResult, error)

	// optIn keeps the scenario out of the default selection: it runs only
	// when -scenario names it exactly.
	optIn bool
	// own, when set, runs the scenario instead of run: it has rows of its
	// own instead of the contenders, and prints its table.
	own func(ctx context.Context, cfg *config, sc scenario, stdout, log io.Writer) error
	// short names the scenario among its like in a chart: "N = 100",
	// "500 publishes/s".
	short string
}

// rowHeader is the header of the table's first column.
func (sc scenario) rowHeader() string {
	if sc.own != nil {
		return "setup"
	}
	return "contender"
}

func scenarios(cfg *config) []scenario {
	var list []scenario
	for _, n := range cfg.fanout {
		list = append(list, scenario{
			id:    fmt.Sprintf("fanout-%d", n),
			title: fmt.Sprintf("Fan-out, N = %d clients in one room", n),
			about: func(cfg *config) string {
				return fmt.Sprintf("Server-side publishes of ~100-byte JSON payloads to one room of %d clients, closed loop: at most %d messages outstanding against the slowest client. Measured for %v after a %v warm-up.", n, cfg.window, cfg.duration, cfg.warmup)
			},
			metrics: throughputMetrics,
			run: func(ctx context.Context, cfg *config, c contender, rm *remote) (runResult, error) {
				return runThroughput(ctx, cfg, c, rm, fmt.Sprintf("fanout-%d", n), n, 1)
			},
			short: fmt.Sprintf("N = %s", format(float64(n), 0)),
		})
	}
	list = append(list, latencyScenarios(cfg)...)
	list = append(list,
		scenario{
			id:    "rooms",
			title: fmt.Sprintf("Many rooms, %d clients in %d rooms of %d", cfg.roomsN, cfg.roomsN/cfg.roomSize, cfg.roomSize),
			about: func(cfg *config) string {
				return fmt.Sprintf("Server-side publishes to rooms picked in random order, each room kept at most %d messages ahead of its slowest member. Measured for %v after a %v warm-up.", cfg.window, cfg.duration, cfg.warmup)
			},
			metrics: throughputMetrics,
			run: func(ctx context.Context, cfg *config, c contender, rm *remote) (runResult, error) {
				return runThroughput(ctx, cfg, c, rm, "rooms", cfg.roomsN, cfg.roomsN/cfg.roomSize)
			},
		},
		scenario{
			id:    "idle",
			title: fmt.Sprintf("Idle memory, %d connected clients", cfg.idleN),
			about: func(cfg *config) string {
				return fmt.Sprintf("%d clients connect and join one of %d rooms, then stay idle. Server child process, after two runtime.GC: (HeapInuse+StackInuse) after minus before, divided by the clients; likewise goroutines and RSS.", cfg.idleN, max(1, cfg.idleN/100))
			},
			metrics: []metric{
				{key: "bytes", header: "heap+stack B/conn", ratio: true},
				{key: "heap", header: "heap B/conn"},
				{key: "stack", header: "stack B/conn"},
				{key: "goroutines", header: "goroutines/conn", ratio: true, digits: 2},
				{key: "rss", header: "RSS B/conn"},
			},
			run: runIdle,
		},
		scenario{
			id:    "churn",
			title: "Churn",
			about: func(cfg *config) string {
				return fmt.Sprintf("%d concurrent loops, each in a room of its own: connect, join, publish one message from the client and receive it, leave, close handshake. Measured for %v after a %v warm-up; server goroutines after a GC before the measured churn and once it is over (waiting up to 5 s for them to exit).", cfg.churnConc, cfg.duration, cfg.warmup)
			},
			metrics: []metric{
				{key: "rate", header: "connections/s", ratio: true},
				{key: "cpu", header: "server CPU µs/connection", ratio: true},
				{key: "before", header: "goroutines before"},
				{key: "after", header: "goroutines after"},
			},
			run: runChurn,
		},
	)
	for _, n := range cfg.floodN {
		list = append(list, scenario{
			id:    fmt.Sprintf("flood-%d", n),
			title: fmt.Sprintf("Flood, one client publishing into a room of N = %d readers", n),
			about: func(cfg *config) string {
				return fmt.Sprintf("One more member of the room publishes %s ~100-byte messages from the client side, with no window, as fast as its connection takes them (writing for at most %v); the %d readers read as fast as loopback allows. Then the bench waits for the readers, at most %v and no more than %v after the last delivery. deliveries/s counts the readers' messages from the first publish to the last delivery; delivered %% is of sent × %d; published/s is the publisher's write rate (the publisher reads its own echoes, not counted). Closing readers or dropping messages here is each contender's policy for a room whose input outruns its output, reported, not an error of the run.", format(float64(cfg.floodMessages), 0), cfg.floodFor, n, cfg.floodDrain, cfg.floodQuiet, n)
			},
			metrics: floodMetrics,
			run: func(ctx context.Context, cfg *config, c contender, rm *remote) (runResult, error) {
				return runFlood(ctx, cfg, c, rm, n)
			},
		})
	}
	return append(list, clusterScenario(), presenceScenario(), stormScenario(), scaleScenario())
}

// latencyScenarios returns the latency scenario, paced at cfg.latencyHz
// deliveries/s, or with -latency-rates one per rate, "latency-RATE".
func latencyScenarios(cfg *config) []scenario {
	rates := cfg.latencyRates
	if len(rates) == 0 {
		rates = []int{cfg.latencyHz / cfg.latencyN}
	}
	var list []scenario
	for _, rate := range rates {
		id, title := fmt.Sprintf("latency-%d", rate), fmt.Sprintf("Latency at %s publishes/s", format(float64(rate), 0))
		if len(cfg.latencyRates) == 0 {
			id, title = "latency", "Latency at a paced rate"
		}
		hz := rate * cfg.latencyN
		list = append(list, scenario{
			id:    id,
			title: title,
			about: func(cfg *config) string {
				return fmt.Sprintf("%d clients in one room; server-side publishes paced at %d deliveries/s in total (%d messages/s), each payload stamped with the server's clock at publish; latency is receive time minus that stamp, in µs, over %v after a %v warm-up.", cfg.latencyN, hz, rate, cfg.duration, cfg.warmup)
			},
			metrics: []metric{
				{key: "p50", header: "p50 µs", ratio: true},
				{key: "p99", header: "p99 µs", ratio: true},
				{key: "rate", header: "deliveries/s"},
				{key: "cpu", header: "server CPU µs/delivery", ratio: true, digits: 2},
			},
			run: func(ctx context.Context, cfg *config, c contender, rm *remote) (runResult, error) {
				return runLatency(ctx, cfg, c, rm, id, hz)
			},
			short: format(float64(rate), 0) + " publishes/s",
		})
	}
	return list
}

var throughputMetrics = []metric{
	{key: "rate", header: "deliveries/s", ratio: true},
	{key: "cpu", header: "server CPU µs/delivery", ratio: true, digits: 2},
	{key: "batch", header: "messages/frame", digits: 1},
}

// publisher keeps every room at most window messages ahead of the slowest
// of its members, so that no contender's send queue overflows. It hands
// the publishes to its outlets, spread evenly in turn; the window is the
// room's, however many outlets share it.
type publisher struct {
	outlets []outlet
	next    int       // the outlet that the next publish goes to first
	remotes []*remote // of the outlets, once each, to flush
	rooms   [][]*client
	sent    []int64
	window  int64
	order   []int
	rng     *rand.Rand
}

// An outlet is where a publisher's publishes go: a child's command loop
// (id < 0) or one of its publisher goroutines, or, when pc is set, a
// WebSocket client that publishes them (cluster scenario).
type outlet struct {
	rm *remote
	id int
	pc *pubClient
}

// newPublisher returns a publisher whose publishes rm makes one after the
// other, on its command loop.
func newPublisher(rm *remote, clients []*client, nRooms, window int) *publisher {
	p := &publisher{
		rooms:  make([][]*client, nRooms),
		sent:   make([]int64, nRooms),
		window: int64(window),
		order:  make([]int, nRooms),
		rng:    rand.New(rand.NewPCG(1, 2)),
	}
	p.use([]outlet{{rm: rm, id: -1}})
	for _, c := range clients {
		p.rooms[c.room] = append(p.rooms[c.room], c)
	}
	for i := range p.order {
		p.order[i] = i
	}
	return p
}

// use makes the publisher's next publishes go to outlets.
func (p *publisher) use(outlets []outlet) {
	p.outlets, p.next, p.remotes = outlets, 0, nil
	for _, o := range outlets {
		if o.rm != nil && !slices.Contains(p.remotes, o.rm) {
			p.remotes = append(p.remotes, o.rm)
		}
	}
}

// publish asks the outlets for n publishes to room r, n/len(outlets) each
// and the rest to the next ones in turn, and counts them as sent.
func (p *publisher) publish(r int, n int64) {
	k := int64(len(p.outlets))
	each, rest := n/k, n%k
	for i := range k {
		o := p.outlets[(int64(p.next)+i)%k]
		switch m := each + b2i(i < rest); {
		case m > 0 && o.pc != nil:
			o.pc.publish(m)
		case m > 0:
			o.rm.publish(roomName(r), int(m), o.id)
		}
	}
	p.next = int((int64(p.next) + rest) % k)
	p.sent[r] += n
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// flush sends the buffered publish commands.
func (p *publisher) flush() error {
	for _, rm := range p.remotes {
		if err := rm.flush(); err != nil {
			return err
		}
	}
	return nil
}

// minReceived is the count of the slowest live member of room r.
func (p *publisher) minReceived(r int) int64 {
	m := int64(math.MaxInt64)
	for _, c := range p.rooms[r] {
		if c.lost.Load() {
			continue
		}
		m = min(m, c.received.Load())
	}
	if m == math.MaxInt64 {
		return p.sent[r]
	}
	return m
}

// run publishes for d.
func (p *publisher) run(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		p.rng.Shuffle(len(p.order), func(i, j int) { p.order[i], p.order[j] = p.order[j], p.order[i] })
		published := false
		for _, r := range p.order {
			budget := p.window - (p.sent[r] - p.minReceived(r))
			if budget <= 0 {
				continue
			}
			p.publish(r, budget)
			published = true
		}
		if !published {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err := p.flush(); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// drain waits up to d for every live client to receive what was sent to
// its room and returns how many deliveries are missing.
func (p *publisher) drain(d time.Duration) int64 {
	deadline := time.Now().Add(d)
	for {
		var missing int64
		for r, members := range p.rooms {
			for _, c := range members {
				if !c.lost.Load() {
					missing += max(0, p.sent[r]-c.received.Load())
				}
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			return missing
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// profiler takes a CPU and a heap profile of the server child during the
// measured part of the first run of each scenario, when asked to.
type profiler struct {
	rm     *remote
	base   string
	traced bool // an execution trace runs too (cluster scenario)
}

func startProfile(cfg *config, rm *remote, scenarioID, name string) (*profiler, error) {
	if cfg.profileDir == "" {
		return nil, nil
	}
	p := &profiler{rm: rm, base: filepath.Join(cfg.profileDir, scenarioID+"-"+name)}
	_, err := rm.call("cpuprof " + p.base + ".cpu.pprof")
	return p, err
}

func (p *profiler) stop() error {
	if p == nil {
		return nil
	}
	if _, err := p.rm.call("cpustop"); err != nil {
		return err
	}
	_, err := p.rm.call("heapprof " + p.base + ".heap.pprof")
	return err
}

// serverNotes reports what makes a run doubtful.
func serverNotes(st serverStats, lost int, missing int64) []string {
	var notes []string
	if lost > 0 {
		notes = append(notes, fmt.Sprintf("%d clients lost", lost))
	}
	if st.Kicked > 0 {
		notes = append(notes, fmt.Sprintf("%d kicked/dropped", st.Kicked))
	}
	if missing > 0 {
		notes = append(notes, fmt.Sprintf("%d deliveries missing", missing))
	}
	if st.Errors > 0 {
		notes = append(notes, fmt.Sprintf("%d publish errors", st.Errors))
	}
	return notes
}

func runThroughput(ctx context.Context, cfg *config, c contender, rm *remote, id string, n, nRooms int) (runResult, error) {
	clients, err := connectAll(ctx, rm.addr, c.proto, n, func(i int) int { return i % nRooms })
	if err != nil {
		return runResult{}, err
	}
	defer closeAll(clients)
	// 30 s, or 6 ms a client past 5,000 (60 s at 10,000, as idle waits).
	if err := rm.waitMembers(n, max(30*time.Second, time.Duration(n)*6*time.Millisecond)); err != nil {
		return runResult{}, err
	}
	start(clients)
	pub := newPublisher(rm, clients, nRooms, cfg.window)
	if err := pub.run(ctx, cfg.warmup); err != nil {
		return runResult{}, err
	}
	prof, err := startProfile(cfg, rm, id, c.name)
	if err != nil {
		return runResult{}, err
	}
	s0, err := rm.stats(false)
	if err != nil {
		return runResult{}, err
	}
	// The server's CPU time is read in /proc at t0 and t1, beside the
	// deliveries: stats answers only once the child got through the
	// publishes queued before it, up to a window of them, which at
	// 10,000 clients is 640,000 deliveries, seconds past t1.
	d0, f0, t0 := totalReceived(clients), totalFrames(clients), time.Now()
	c0, procOK := rm.cpu()
	if err := pub.run(ctx, cfg.duration); err != nil {
		return runResult{}, err
	}
	d1, f1, t1 := totalReceived(clients), totalFrames(clients), time.Now()
	c1, ok := rm.cpu()
	s1, err := rm.stats(false)
	if err != nil {
		return runResult{}, err
	}
	cpu := s1.CPUNanos - s0.CPUNanos
	if procOK && ok {
		cpu = c1 - c0
	}
	if err := prof.stop(); err != nil {
		return runResult{}, err
	}
	// Up to a window of messages to every client may still be on its
	// way: give the slowest server 20 µs a delivery (12.8 s at 10,000
	// clients), and at least 5 s.
	missing := pub.drain(max(5*time.Second, time.Duration(n*cfg.window)*20*time.Microsecond))
	delivered := float64(d1 - d0)
	return runResult{
		values: map[string]float64{
			"rate":  delivered / t1.Sub(t0).Seconds(),
			"cpu":   float64(cpu) / 1e3 / max(delivered, 1),
			"batch": delivered / max(float64(f1-f0), 1),
		},
		notes: serverNotes(s1, countLost(clients), missing),
	}, nil
}

// runLatency runs latency scenario id, paced at hz deliveries/s in all.
func runLatency(ctx context.Context, cfg *config, c contender, rm *remote, id string, hz int) (runResult, error) {
	n := cfg.latencyN
	clients, err := connectAll(ctx, rm.addr, c.proto, n, func(int) int { return 0 })
	if err != nil {
		return runResult{}, err
	}
	defer closeAll(clients)
	if err := rm.waitMembers(n, 30*time.Second); err != nil {
		return runResult{}, err
	}
	var recording atomic.Bool
	for _, cl := range clients {
		cl.hist, cl.recording = new(histogram), &recording
	}
	start(clients)
	pub := newPublisher(rm, clients, 1, cfg.window)
	msgRate := float64(hz) / float64(n)
	if _, err := pace(ctx, pub, msgRate, cfg.warmup); err != nil {
		return runResult{}, err
	}
	prof, err := startProfile(cfg, rm, id, c.name)
	if err != nil {
		return runResult{}, err
	}
	recording.Store(true)
	s0, err := rm.stats(false)
	if err != nil {
		return runResult{}, err
	}
	d0, t0 := totalReceived(clients), time.Now()
	late, err := pace(ctx, pub, msgRate, cfg.duration)
	if err != nil {
		return runResult{}, err
	}
	d1, t1 := totalReceived(clients), time.Now()
	recording.Store(false)
	s1, err := rm.stats(false)
	if err != nil {
		return runResult{}, err
	}
	if err := prof.stop(); err != nil {
		return runResult{}, err
	}
	missing := pub.drain(5 * time.Second)
	notes := serverNotes(s1, countLost(clients), missing)
	if late > 0 {
		notes = append(notes, fmt.Sprintf("window full %d times: rate not sustained", late))
	}
	closeAll(clients) // the histograms are complete once the read loops ended
	var h histogram
	for _, cl := range clients {
		h.merge(cl.hist)
	}
	delivered := float64(d1 - d0)
	return runResult{
		values: map[string]float64{
			"p50":  float64(h.quantile(0.50)),
			"p99":  float64(h.quantile(0.99)),
			"rate": delivered / t1.Sub(t0).Seconds(),
			"cpu":  float64(s1.CPUNanos-s0.CPUNanos) / 1e3 / max(delivered, 1),
		},
		notes: notes,
	}, nil
}

// pace publishes to room 0 at rate messages per second for d, and returns
// how many times the window was full when a message was due.
func pace(ctx context.Context, p *publisher, rate float64, d time.Duration) (int, error) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	begin, base := time.Now(), p.sent[0]
	full := 0
	for ctx.Err() == nil {
		now := <-tick.C
		elapsed := now.Sub(begin)
		if elapsed >= d {
			break
		}
		due := base + int64(elapsed.Seconds()*rate) - p.sent[0]
		if due <= 0 {
			continue
		}
		if room := p.window - (p.sent[0] - p.minReceived(0)); room < due {
			full++
			due = max(0, room)
		}
		if due == 0 {
			continue
		}
		p.publish(0, due)
		if err := p.flush(); err != nil {
			return full, err
		}
	}
	return full, ctx.Err()
}

func runIdle(ctx context.Context, cfg *config, c contender, rm *remote) (runResult, error) {
	n := cfg.idleN
	nRooms := max(1, n/100)
	before, err := rm.stats(true)
	if err != nil {
		return runResult{}, err
	}
	clients, err := connectAll(ctx, rm.addr, c.proto, n, func(i int) int { return i % nRooms })
	if err != nil {
		return runResult{}, err
	}
	defer closeAll(clients)
	if err := rm.waitMembers(n, 60*time.Second); err != nil {
		return runResult{}, err
	}
	start(clients)
	after, err := settle(rm, 5*time.Second)
	if err != nil {
		return runResult{}, err
	}
	if cfg.profileDir != "" {
		if _, err := rm.call("heapprof " + filepath.Join(cfg.profileDir, "idle-"+c.name+".heap.pprof")); err != nil {
			return runResult{}, err
		}
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	return runResult{
		values: map[string]float64{
			"bytes":      per(after.HeapInuse+after.StackInuse, before.HeapInuse+before.StackInuse),
			"heap":       per(after.HeapInuse, before.HeapInuse),
			"stack":      per(after.StackInuse, before.StackInuse),
			"goroutines": float64(after.Goroutines-before.Goroutines) / float64(n),
			"rss":        per(after.RSS, before.RSS),
		},
		notes: serverNotes(after, countLost(clients), 0),
	}, nil
}

// settle waits until the server's goroutine count is the same in two GC'd
// samples 200 ms apart (goroutines that wrote join answers have exited),
// at most d, and returns the last sample.
func settle(rm *remote, d time.Duration) (serverStats, error) {
	deadline := time.Now().Add(d)
	prev, err := rm.stats(true)
	for err == nil && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		var cur serverStats
		cur, err = rm.stats(true)
		if err == nil && cur.Goroutines == prev.Goroutines {
			return cur, nil
		}
		prev = cur
	}
	return prev, err
}

func runChurn(ctx context.Context, cfg *config, c contender, rm *remote) (runResult, error) {
	if _, _, err := churn(ctx, cfg, c, rm, cfg.warmup); err != nil {
		return runResult{}, err
	}
	before, err := settle(rm, 5*time.Second)
	if err != nil {
		return runResult{}, err
	}
	prof, err := startProfile(cfg, rm, "churn", c.name)
	if err != nil {
		return runResult{}, err
	}
	t0 := time.Now()
	cycles, failed, err := churn(ctx, cfg, c, rm, cfg.duration)
	if err != nil {
		return runResult{}, err
	}
	elapsed := time.Since(t0)
	if err := prof.stop(); err != nil {
		return runResult{}, err
	}
	s1, err := rm.stats(false)
	if err != nil {
		return runResult{}, err
	}
	after := s1
	deadline := time.Now().Add(5 * time.Second)
	for after.Goroutines > before.Goroutines && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if after, err = rm.stats(true); err != nil {
			return runResult{}, err
		}
	}
	var notes []string
	if failed > 0 {
		notes = append(notes, fmt.Sprintf("%d cycles failed", failed))
	}
	if after.Goroutines > before.Goroutines {
		notes = append(notes, "goroutines grew")
	}
	return runResult{
		values: map[string]float64{
			"rate":   float64(cycles) / elapsed.Seconds(),
			"cpu":    float64(s1.CPUNanos-before.CPUNanos) / 1e3 / max(float64(cycles), 1),
			"before": float64(before.Goroutines),
			"after":  float64(after.Goroutines),
		},
		notes: notes,
	}, nil
}

// churn runs cfg.churnConc loops of connect-join-receive-leave-close for
// d and returns the completed and the failed cycles. It fails only when
// every cycle failed.
func churn(ctx context.Context, cfg *config, c contender, rm *remote, d time.Duration) (int, int, error) {
	deadline := time.Now().Add(d)
	var (
		wg           sync.WaitGroup
		done, failed atomic.Int64
		firstErr     atomic.Pointer[error]
	)
	for w := range cfg.churnConc {
		wg.Go(func() {
			room := fmt.Sprintf("churn-%d", w)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := cycle(ctx, rm.addr, c.proto, room); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if done.Load() == 0 && failed.Load() > 0 {
		return 0, int(failed.Load()), fmt.Errorf("churn: every cycle failed: %w", *firstErr.Load())
	}
	return int(done.Load()), int(failed.Load()), nil
}

// cycle connects, joins room, publishes one message, waits for it, leaves
// and closes with a close handshake.
func cycle(ctx context.Context, addr string, p protocol, room string) error {
	conn, err := dial(ctx, addr, p, room)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.WriteMessage(websocket.TextMessage, p.publishFrame(room, newPayload())); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(setupTimeout))
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			return fmt.Errorf("waiting for the message: %w", err)
		}
		if containsAll(data, []string{string(tsKey)}) {
			break
		}
	}
	if err := p.leave(conn, room); err != nil {
		return err
	}
	closeMsg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if err := conn.WriteControl(websocket.CloseMessage, closeMsg, time.Now().Add(time.Second)); err != nil {
		return err
	}
	// Read up to the server's close frame.
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, _, err := conn.ReadMessage(); err != nil {
			if websocket.IsCloseError(err, websocket.CloseNormalClosure, websocket.CloseNoStatusReceived) {
				return nil
			}
			return fmt.Errorf("closing: %w", err)
		}
	}
}
