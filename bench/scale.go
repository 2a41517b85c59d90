package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wshub/wshub"
)

// The scale scenario measures one wshub server holding cfg.scaleN
// connections (19,000 by default: below the 20,000 open files a process
// may have here), against the targets of issue 24. The server is a
// scale-hub child; the clients are spread over cfg.scaleProcs
// scale-clients children (scale_clients.go), so that no process nears
// its open-file limit and the parent holds no connection.
//
// Each setup (bare, chat-like) runs twice, in two layouts, each time with
// a fresh server and fresh clients, so that every client is in exactly
// one room and the memory per connection is that of one membership: all
// in one room, then in rooms of scaleRoomSize (190 of 100). A layout's
// run connects every client (the connect rate, clients retrying a 503 as
// its Retry-After says), measures the server's RSS growth per connection
// after a GC, then, in the one-room layout only, the server's CPU over
// cfg.scaleIdle of idle with keepalive on (the default 30 s pings), and
// then cfg.scaleMessages rounds of fan-out: a round is one server-side
// Room.Broadcast to the room, or one to each room back to back, whose
// payloads carry the round's start (unix ns; the clients are on the same
// machine, so the clocks agree). The next round starts once every client
// got the last one. The clients report each arrival as the time since the
// round started.

const (
	scaleHubChild     = "scale-hub"     // scale-hub bare|chat
	scaleClientsChild = "scale-clients" // commands on stdin (scale_clients.go)

	// scaleRoomSize is the size of the rooms of the many-rooms layout.
	scaleRoomSize = 100
	// scaleFileMargin is what a process needs besides its connections:
	// standard streams, the listener, epoll and the runtime's own.
	scaleFileMargin = 100
	// scaleRoundGap separates the end of a round (every arrival) from the
	// next, so that the server's writers are done with it.
	scaleRoundGap = 100 * time.Millisecond
	// scalePingInterval is wshub's default PingInterval, which the
	// scenario keeps: an idle window shorter than it sees no ping.
	scalePingInterval = 30 * time.Second
)

// The targets of issue 24, printed beside the figures.
const (
	targetRSS    = 10 << 10 // B of RSS per connection
	targetIdle   = 0.04     // cores of idle CPU for 19,000 connections
	targetIdleN  = 19000
	targetFanout = 200.0 // ms until the last of 19,000 got one broadcast
	paperN       = 100000
)

// scaleSetup is one server setup of the scale scenario.
type scaleSetup struct {
	label string
	arg   string // of the scale-hub child
	named bool   // clients connect with ?name=, which Authenticate reads
}

var scaleSetups = []scaleSetup{
	{label: "wshub bare", arg: "bare"},
	{label: "wshub chat-like", arg: "chat", named: true},
}

// scaleRooms returns how many rooms the many-rooms layout of n clients has.
func scaleRooms(n int) int { return max(1, n/scaleRoomSize) }

// scaleRoom names room i of a layout of nRooms rooms.
func scaleRoom(i, nRooms int) string {
	if nRooms == 1 {
		return "all"
	}
	return "s-" + strconv.Itoa(i)
}

// scaleDeadline bounds the whole scenario: 10 minutes at the default
// idle window, plus what a longer one adds (one per setup).
func scaleDeadline(idle time.Duration) time.Duration {
	return 10*time.Minute + 2*max(0, idle-time.Minute)
}

var scaleMetrics = []metric{
	{key: "rate", header: "connections/s"},
	{key: "wall", header: "connect wall s", digits: 1},
	{key: "refused", header: "503s"},
	{key: "rss", header: "RSS B/conn (target ≤ 10,240)"},
	{key: "rssIdle", header: "RSS B/conn after idle"},
	{key: "heap", header: "heap+stack B/conn"},
	{key: "goroutines", header: "goroutines/conn", digits: 2},
	{key: "idle", header: "idle CPU cores (target ≤ 0.04)", digits: 4},
	{key: "allocs", header: "allocs/ping (all the server's, idle)", digits: 2},
	{key: "p50", header: "fan-out p50 ms", digits: 1},
	{key: "p99", header: "fan-out p99 ms", digits: 1},
	{key: "last", header: "fan-out last ms (target ≤ 200)", digits: 1},
	{key: "dps", header: "deliveries/s"},
	{key: "call", header: "Broadcast calls ms", digits: 1},
	{key: "cpu", header: "server CPU µs/delivery", digits: 1},
	{key: "missing", header: "deliveries missing"},
}

func scaleScenario() scenario {
	return scenario{
		id:    "scale",
		title: "Scale: one server, many connections",
		about: func(cfg *config) string {
			rooms := scaleRooms(cfg.scaleN)
			return fmt.Sprintf("One wshub server child holds %s WebSocket connections (wshub.json) of %d client processes, each client in one room, reading only; default options but for the setup, keepalive on (pings every 30 s). "+
				"bare: default options, every join allowed. chat-like: examples/chat's options: History{Messages: 200} and Presence in every room, Authenticate with ID = name (?name=), Info {\"name\"} and Values {\"name\"} (not its OnConnect welcome). "+
				"Each setup runs in two layouts, each with a fresh server and clients: all in room \"all\", and %d rooms of %d. "+
				"connections/s: clients over the wall time from the first dial to the last join's ack, %d dials in flight per client process, a 503 retried after its Retry-After. "+
				"RSS and heap+stack: growth of the server's VmRSS, and HeapInuse+StackInuse, from before the first connection to after the last join, each after runtime.GC twice and debug.FreeOSMemory, per connection. "+
				"idle CPU: the server's utime+stime (/proc/PID/stat) over %v of idle after that, in cores; RSS after idle: the RSS growth again after it (one-room layout only). "+
				"fan-out: %d rounds, each one server-side Room.Broadcast of a 111-byte payload (a 150-byte frame) to the room, or one to each room back to back, the next round once every client got it and %v after; a delivery's time is its arrival minus the round's start; p50, p99 and last (arrival of the last of %s) per round, the median of each over the rounds; deliveries/s is %s over last; Broadcast calls: from the round's start until its last Broadcast returned, median over the rounds; server CPU: the server's utime+stime over all the rounds, keepalive included, per delivery. "+
				"One run per layout (-runs does not apply); the clients share the machine with the server. With -profile, the server's CPU profile covers the idle window (scale-idle-…) and, apart, the rounds.",
				format(float64(cfg.scaleN), 0), cfg.scaleProcs, rooms, scaleRoomSize, scaleDialsInFlight, cfg.scaleIdle, cfg.scaleMessages, scaleRoundGap,
				format(float64(cfg.scaleN), 0), format(float64(cfg.scaleN), 0))
		},
		metrics: scaleMetrics,
		optIn:   true,
		own:     runScale,
	}
}

// newScaleHub returns the server of a scale-hub child of setup arg.
func newScaleHub(arg string) (*wshubServer, error) {
	switch arg {
	case "bare":
		return newWshubServerWith(wshub.Options{}), nil
	case "chat":
		return newWshubServerWith(wshub.Options{
			Rooms: func(string) wshub.RoomOptions {
				return wshub.RoomOptions{History: wshub.HistoryPolicy{Messages: 200}, Presence: true}
			},
			Authenticate: func(r *http.Request) (wshub.Identity, error) {
				name := r.URL.Query().Get("name")
				if name == "" {
					return wshub.Identity{}, wshub.Reject(http.StatusBadRequest, "name is required")
				}
				return wshub.Identity{ID: name, Info: map[string]string{"name": name}, Values: map[string]any{"name": name}}, nil
			},
		}), nil
	}
	return nil, fmt.Errorf("scale-hub %q: want bare or chat", arg)
}

// runScaleHub is a scale-hub child: serveChild's server and commands,
// and one more:
//
//	round R N   broadcast round R to the N rooms of a layout, one after
//	            the other, each payload carrying the round's start;
//	            answer "ok NS", NS the ns until the last Broadcast returned
func runScaleHub(arg string) error {
	srv, err := newScaleHub(arg)
	if err != nil {
		return err
	}
	return serveChildWith(srv, map[string]func(*childState, []string) error{
		"round": func(c *childState, f []string) error { return scaleRound(c, srv, f) },
	})
}

func scaleRound(c *childState, srv *wshubServer, f []string) error {
	if len(f) != 3 {
		return errors.New("usage: round R N")
	}
	round, err1 := strconv.Atoi(f[1])
	n, err2 := strconv.Atoi(f[2])
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t0 := time.Now()
	payload := fmt.Appendf(nil, `{"text":%q,"round":%d,"t0":%d}`, payloadPad, round, t0.UnixNano())
	for i := range n {
		err := srv.hub.Room(scaleRoom(i, n)).Broadcast(ctx, &wshub.Message{Data: json.RawMessage(payload)})
		if err != nil {
			c.errors.Add(1)
		}
	}
	return c.answer(fmt.Sprintf("ok %d", time.Since(t0)))
}

// scaleLayout is one run of one setup: its clients in nRooms rooms.
type scaleLayout struct {
	setup  scaleSetup
	nRooms int
	idle   time.Duration // 0: no idle window
}

func (l scaleLayout) label() string {
	if l.nRooms == 1 {
		return l.setup.label + ", 1 room"
	}
	return fmt.Sprintf("%s, %d rooms of %d", l.setup.label, l.nRooms, scaleRoomSize)
}

// checkScaleConfig checks the scale flags, and that the processes may
// open the files they need: the server all the connections, each client
// process its share.
func checkScaleConfig(cfg *config) error {
	switch {
	case cfg.scaleN < 1 || cfg.scaleProcs < 1 || cfg.scaleMessages < 1:
		return errors.New("-scale-clients, -scale-procs and -scale-messages must be positive")
	case cfg.scaleProcs > cfg.scaleN:
		return errors.New("-scale-procs must not be above -scale-clients")
	case cfg.scaleIdle < 0:
		return errors.New("-scale-idle must not be negative")
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("reading the open-file limit: %w", err)
	}
	if need := uint64(cfg.scaleN + scaleFileMargin); lim.Max < need {
		return fmt.Errorf("the server would need %d open files, but their hard limit is %d (ulimit -Hn): lower -scale-clients or raise the limit", need, lim.Max)
	}
	return nil
}

// runScale runs the scale scenario, within its deadline, and prints its
// table, the targets met or not, and 100,000 connections on paper.
func runScale(ctx context.Context, cfg *config, sc scenario, stdout, log io.Writer) error {
	if err := checkScaleConfig(cfg); err != nil {
		return err
	}
	limit := scaleDeadline(cfg.scaleIdle)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	load0 := loadAverage()
	res := make(map[string]*outcome)
	var rows []string
	base := make(map[string]float64)         // by row: RSS of its server before the first connection
	rounds := make(map[string][]scaleFigure) // by row
	for _, s := range scaleSetups {
		for _, nRooms := range []int{1, scaleRooms(cfg.scaleN)} {
			l := scaleLayout{setup: s, nRooms: nRooms}
			if nRooms == 1 {
				l.idle = cfg.scaleIdle
			}
			o := &outcome{values: make(map[string][]float64)}
			res[l.label()] = o
			rows = append(rows, l.label())
			began := time.Now()
			r, err := runScaleOnce(ctx, cfg, l, log)
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not done within %v, the scenario's deadline (a loaded machine, or -scale-clients too high?): %w", limit, cmpOr(err, ctx.Err()))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				fmt.Fprintf(log, "bench: scale %s: %v\n", l.label(), err)
				o.errs = append(o.errs, err.Error())
				continue
			}
			base[l.label()] = float64(r.before)
			rounds[l.label()] = r.rounds
			o.add(0, r.runResult)
			fmt.Fprintf(log, "bench: scale %s: %s (%v)\n", l.label(), brief(sc, r.runResult), time.Since(began).Round(10*time.Millisecond))
		}
	}
	printTable(stdout, cfg, sc, rows, res, rows[0])
	printScaleTargets(stdout, cfg, rows, res, base)
	printScaleRounds(stdout, rows, rounds)
	fmt.Fprintf(stdout, "Load average (1, 5, 15 min) before: %s; after: %s.\n\n", load0, loadAverage())
	return nil
}

// printScaleTargets says which one-room row meets which target of issue
// 24, and what 100,000 connections would take on one node.
func printScaleTargets(w io.Writer, cfg *config, rows []string, res map[string]*outcome, base map[string]float64) {
	value := func(row, key string) (float64, bool) {
		s := summarize(res[row].values[key])
		return s.median, s.n > 0
	}
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	fmt.Fprintf(w, "Targets (issue 24), one-room rows:\n\n")
	for _, row := range rows {
		if !strings.HasSuffix(row, ", 1 room") {
			continue
		}
		var parts []string
		if v, ok := value(row, "rss"); ok {
			part := fmt.Sprintf("RSS %s B/conn after the joins", format(v, 0))
			if w, ok := value(row, "rssIdle"); ok {
				part += fmt.Sprintf(", %s after idle", format(w, 0))
				v = max(v, w)
			}
			parts = append(parts, fmt.Sprintf("%s, target ≤ %s: %s", part, format(targetRSS, 0), mark(v <= targetRSS)))
		}
		if v, ok := value(row, "idle"); ok {
			// The target is for 19,000 connections; scale it to ours.
			t := targetIdle * float64(cfg.scaleN) / targetIdleN
			parts = append(parts, fmt.Sprintf("idle CPU %s cores, target ≤ %s for %s: %s", format(v, 4), format(t, 4), format(float64(cfg.scaleN), 0), mark(v <= t)))
		}
		if v, ok := value(row, "last"); ok {
			parts = append(parts, fmt.Sprintf("one fan-out to all %s in %s ms (median last arrival), target ≤ %s ms: %s", format(float64(cfg.scaleN), 0), format(v, 1), format(targetFanout, 0), mark(v <= targetFanout)))
		}
		if len(parts) == 0 {
			parts = append(parts, "not measured (see the row's notes)")
		}
		fmt.Fprintf(w, "- %s: %s.\n", strings.TrimSuffix(row, ", 1 room"), strings.Join(parts, "; "))
		// On paper, the connections are idle: past their first pings.
		rss, ok1 := value(row, "rssIdle")
		if !ok1 {
			rss, ok1 = value(row, "rss")
		}
		idle, ok2 := value(row, "idle")
		if b, ok := base[row]; ok1 && ok {
			paper := fmt.Sprintf("  On paper, %s connections on one node: RSS %.2f GiB (%s MiB before the first connection + %s × %s B)",
				format(paperN, 0), (b+rss*paperN)/(1<<30), format(b/(1<<20), 0), format(paperN, 0), format(rss, 0))
			if ok2 {
				paper += fmt.Sprintf(", idle CPU %s cores (%s × %s / %s)", format(idle*paperN/float64(cfg.scaleN), 3), format(idle, 4), format(paperN, 0), format(float64(cfg.scaleN), 0))
			}
			fmt.Fprintln(w, paper+".")
		}
	}
	fmt.Fprintf(w, "\n%s connections on one node also need an open-file limit above them, and, for clients on one machine, several source addresses (%s ephemeral ports each here).",
		format(paperN, 0), ephemeralPorts())
	if cfg.scaleIdle < scalePingInterval {
		fmt.Fprintf(w, " The idle window (%v) is shorter than a ping round (%v): its CPU leaves out the keepalive.", cfg.scaleIdle, scalePingInterval)
	}
	fmt.Fprint(w, "\n\n")
}

// printScaleRounds lists each row's rounds.
func printScaleRounds(w io.Writer, rows []string, rounds map[string][]scaleFigure) {
	fmt.Fprintf(w, "Fan-out per round, p50 / p99 / last arrival, ms:\n\n")
	for _, row := range rows {
		var figs []string
		for _, f := range rounds[row] {
			figs = append(figs, fmt.Sprintf("%s / %s / %s", format(f.p50, 0), format(f.p99, 0), format(f.last, 0)))
		}
		if len(figs) == 0 {
			figs = append(figs, "none")
		}
		fmt.Fprintf(w, "- %s: %s.\n", row, strings.Join(figs, "; "))
	}
	fmt.Fprintln(w)
}

// ephemeralPorts is the size of the local port range, "unknown" where
// there is none to read.
func ephemeralPorts() string {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	f := strings.Fields(string(b))
	if err != nil || len(f) != 2 {
		return "unknown"
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return "unknown"
	}
	return format(float64(hi-lo+1), 0)
}

// scaleRun is the child processes of one run; stop ends them, killing
// them first when the run failed, so that none outlives the bench.
type scaleRun struct {
	server  *remote
	clients []*remote
}

func (r *scaleRun) stop(failed bool) []string {
	var notes []string
	for i, c := range r.clients {
		if failed {
			c.cmd.Process.Kill()
		}
		if err := c.stop(); err != nil && !failed {
			notes = append(notes, fmt.Sprintf("client process %d: %v", i+1, err))
		}
	}
	if r.server != nil {
		if failed {
			r.server.cmd.Process.Kill()
		}
		if err := r.server.stop(); err != nil && !failed {
			notes = append(notes, fmt.Sprintf("server: %v", err))
		}
	}
	return notes
}

// callUntil sends cmd to rm and returns its answer, waiting at most d and
// no longer than ctx allows. An answer starting with "err " is an error.
func callUntil(ctx context.Context, rm *remote, cmd string, d time.Duration) (string, error) {
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	name := strings.Fields(cmd)[0]
	rm.w.WriteString(cmd)
	rm.w.WriteByte('\n')
	if err := rm.w.Flush(); err != nil {
		return "", fmt.Errorf("%s: %w (the process exited?)", name, err)
	}
	line, err := rm.readLineCtx(ctx, d)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if msg, ok := strings.CutPrefix(line, "err "); ok {
		return "", errors.New(msg)
	}
	return line, nil
}

// callAll sends each client process its command, all at once, and waits
// for every answer.
func callAll(ctx context.Context, procs []*remote, cmd func(i int) string, d time.Duration) ([]string, error) {
	answers := make([]string, len(procs))
	errs := make([]error, len(procs))
	done := make(chan int, len(procs))
	for i, p := range procs {
		go func() {
			answers[i], errs[i] = callUntil(ctx, p, cmd(i), d)
			done <- i
		}()
	}
	for range procs {
		<-done
	}
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("client process %d: %w", i+1, err)
		}
	}
	return answers, nil
}

// scaleOutcome is what one run of one layout measured.
type scaleOutcome struct {
	runResult
	before uint64        // the server's RSS before the first connection
	rounds []scaleFigure // per round
}

// scaleFigure is the fan-out of one round, in ms after its start.
type scaleFigure struct{ p50, p99, last float64 }

// runScaleOnce runs one layout of one setup.
func runScaleOnce(ctx context.Context, cfg *config, l scaleLayout, log io.Writer) (out scaleOutcome, err error) {
	run := &scaleRun{}
	defer func() {
		out.notes = append(out.notes, run.stop(err != nil)...)
	}()
	if run.server, err = startRemote(scaleHubChild, l.setup.arg); err != nil {
		return out, err
	}
	for range cfg.scaleProcs {
		p, err := startRemote(scaleClientsChild)
		if err != nil {
			return out, err
		}
		run.clients = append(run.clients, p)
	}
	rm := run.server
	s0, err := rm.stats(true)
	if err != nil {
		return out, fmt.Errorf("server: %w", err)
	}
	out.before = s0.RSS
	wall, refused, err := run.connect(ctx, cfg, l)
	if err != nil {
		return out, err
	}
	n := cfg.scaleN
	fmt.Fprintf(log, "bench: scale %s: %s clients joined in %v (%d 503s)\n", l.label(), format(float64(n), 0), wall.Round(10*time.Millisecond), refused)
	if err := rm.waitMembers(n, time.Minute); err != nil {
		return out, fmt.Errorf("server: %w", err)
	}
	s1, err := settle(rm, 10*time.Second)
	if err != nil {
		return out, fmt.Errorf("server: %w", err)
	}
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	out.values = map[string]float64{
		"rate":       float64(n) / wall.Seconds(),
		"wall":       wall.Seconds(),
		"refused":    float64(refused),
		"rss":        per(s1.RSS, s0.RSS),
		"heap":       per(s1.HeapInuse+s1.StackInuse, s0.HeapInuse+s0.StackInuse),
		"goroutines": float64(s1.Goroutines-s0.Goroutines) / float64(n),
	}
	if l.idle > 0 {
		fmt.Fprintf(log, "bench: scale %s: idle for %v\n", l.label(), l.idle)
		m0, err := rm.stats(false)
		if err != nil {
			return out, fmt.Errorf("server: %w", err)
		}
		prof, err := startProfile(cfg, rm, "scale-idle", strings.NewReplacer(" ", "-", ",", "").Replace(l.label()))
		if err != nil {
			return out, fmt.Errorf("server: %w", err)
		}
		if out.values["idle"], err = idleCPU(ctx, rm, l.idle); err != nil {
			return out, fmt.Errorf("server: %w", err)
		}
		if err := prof.stop(); err != nil {
			return out, fmt.Errorf("server: %w", err)
		}
		m1, err := rm.stats(false)
		if err != nil {
			return out, fmt.Errorf("server: %w", err)
		}
		// Every allocation of the server over the idle window, per ping it
		// sent (n per PingInterval): an upper bound of a ping's cost.
		pings := float64(n) * l.idle.Seconds() / scalePingInterval.Seconds()
		out.values["allocs"] = float64(m1.Mallocs-m0.Mallocs) / pings
		// Past a ping round, each connection also holds what its pings left.
		s2, err := rm.stats(true)
		if err != nil {
			return out, fmt.Errorf("server: %w", err)
		}
		out.values["rssIdle"] = per(s2.RSS, s0.RSS)
	}
	if err := run.fanOut(ctx, cfg, l, &out); err != nil {
		return out, err
	}
	s2, err := rm.stats(false)
	if err != nil {
		return out, fmt.Errorf("server: %w", err)
	}
	out.notes = append(serverNotes(s2, 0, 0), out.notes...)
	return out, nil
}

// connect has the client processes connect the layout's clients, process
// i clients [i×N/P, (i+1)×N/P), and returns the wall time from the first
// dial to the last join's ack and the 503s the clients retried.
func (r *scaleRun) connect(ctx context.Context, cfg *config, l scaleLayout) (time.Duration, int, error) {
	n, procs := cfg.scaleN, cfg.scaleProcs
	t0 := time.Now()
	answers, err := callAll(ctx, r.clients, func(i int) string {
		first := i * n / procs
		return fmt.Sprintf("connect %s %d %d %d %d %t", r.server.addr, l.nRooms, first, (i+1)*n/procs-first, cfg.scaleMessages, l.setup.named)
	}, scaleConnectFor+time.Minute)
	if err != nil {
		return 0, 0, fmt.Errorf("connecting: %w", err)
	}
	wall := time.Since(t0)
	refused := 0
	for _, a := range answers {
		var joined, r int
		if _, err := fmt.Sscanf(a, "ok %d %d", &joined, &r); err != nil {
			return 0, 0, fmt.Errorf("connect answered %q", a)
		}
		refused += r
	}
	return wall, refused, nil
}

// fanOut runs the rounds of the layout, one after the other, and adds
// their figures to out.
func (r *scaleRun) fanOut(ctx context.Context, cfg *config, l scaleLayout, out *scaleOutcome) error {
	rm, k := r.server, cfg.scaleMessages
	prof, err := startProfile(cfg, rm, "scale", strings.NewReplacer(" ", "-", ",", "").Replace(l.label()))
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	cpu0 := procCPU(rm.cmd.Process.Pid)
	var calls []float64
	for round := range k {
		a, err := callUntil(ctx, rm, fmt.Sprintf("round %d %d", round, l.nRooms), time.Minute)
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		var ns int64
		if _, err := fmt.Sscanf(a, "ok %d", &ns); err != nil {
			return fmt.Errorf("round answered %q", a)
		}
		calls = append(calls, float64(ns)/1e6)
		if _, err := callAll(ctx, r.clients, func(int) string { return fmt.Sprintf("wait %d", round) }, time.Minute); err != nil {
			return err
		}
		select {
		case <-time.After(scaleRoundGap):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if cpu1 := procCPU(rm.cmd.Process.Pid); cpu0 > 0 {
		out.values["cpu"] = float64(cpu1-cpu0) / 1e3 / float64(cfg.scaleN*k)
	}
	if err := prof.stop(); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	out.values["call"] = summarize(calls).median
	answers, err := callAll(ctx, r.clients, func(int) string { return "report" }, time.Minute)
	if err != nil {
		return err
	}
	var reps []scaleReport
	for i, a := range answers {
		var rep scaleReport
		if err := json.Unmarshal([]byte(a), &rep); err != nil {
			return fmt.Errorf("client process %d: report: %w", i+1, err)
		}
		reps = append(reps, rep)
	}
	fan := summarizeRounds(reps, k)
	out.values["p50"], out.values["p99"], out.values["last"] = fan.p50, fan.p99, fan.last
	out.values["dps"], out.values["missing"] = fan.rate, float64(fan.missing)
	out.rounds = fan.rounds
	out.notes = append(out.notes, fan.notes...)
	return nil
}

// idleCPU returns the CPU the server used over d, in cores, from
// /proc/PID/stat (procCPU); where there is none, from its getrusage.
func idleCPU(ctx context.Context, rm *remote, d time.Duration) (float64, error) {
	pid := rm.cmd.Process.Pid
	proc := procCPU(pid) > 0 // the server has used some CPU by now
	cpu := func() (int64, error) {
		if proc {
			return procCPU(pid), nil
		}
		st, err := rm.stats(false)
		return st.CPUNanos, err
	}
	c0, err := cpu()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	c1, err := cpu()
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / 1e9 / time.Since(t0).Seconds(), nil
}

// fanout is the fan-out figures of one run: the medians over the rounds.
type fanout struct {
	p50, p99, last float64 // ms after the round's start
	rate           float64 // deliveries/s of a round: its deliveries over last
	rounds         []scaleFigure
	missing        int
	notes          []string // duplicates, lost clients by how they ended, …
}

// summarizeRounds merges the client processes' reports of k rounds.
func summarizeRounds(reps []scaleReport, k int) fanout {
	var f fanout
	var p50s, p99s, lasts, rates []float64
	for r := range k {
		var us []int64
		for _, rep := range reps {
			if r < len(rep.Rounds) {
				us = append(us, rep.Rounds[r]...)
			}
		}
		if len(us) == 0 {
			continue
		}
		slices.Sort(us)
		// The nearest rank: the p99 of 19,000 is the 18,810th arrival.
		at := func(q float64) float64 { return float64(us[max(0, int(math.Ceil(q*float64(len(us))))-1)]) / 1e3 }
		fig := scaleFigure{p50: at(0.5), p99: at(0.99), last: at(1)}
		f.rounds = append(f.rounds, fig)
		last := fig.last
		p50s, p99s, lasts = append(p50s, fig.p50), append(p99s, fig.p99), append(lasts, last)
		rates = append(rates, float64(len(us))/max(last/1e3, 1e-6))
	}
	f.p50, f.p99, f.last = summarize(p50s).median, summarize(p99s).median, summarize(lasts).median
	f.rate = summarize(rates).median
	dups, bad, dialErrs := 0, 0, 0
	why := make(map[string]int)
	for _, rep := range reps {
		f.missing += rep.Missing
		dups += rep.Dups
		bad += rep.Bad
		dialErrs += rep.DialErrors
		for k, v := range rep.Why {
			why[k] += v
		}
	}
	if dups > 0 {
		f.notes = append(f.notes, fmt.Sprintf("%d duplicate deliveries", dups))
	}
	if bad > 0 {
		f.notes = append(f.notes, fmt.Sprintf("%d room messages without a known round", bad))
	}
	if dialErrs > 0 {
		f.notes = append(f.notes, fmt.Sprintf("%d dials failed and were retried", dialErrs))
	}
	for _, reason := range slices.Sorted(maps.Keys(why)) {
		f.notes = append(f.notes, fmt.Sprintf("%d lost: %s", why[reason], reason))
	}
	return f
}
