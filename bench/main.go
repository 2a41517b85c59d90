// Command bench measures wshub against the hubs Go services would pick
// instead: a minimal hub on coder/websocket (the baseline of every ratio),
// melody, a gorilla/websocket chat-style hub (one message per frame, and
// gorilla-batch, which joins the queued messages with newlines as gorilla's
// chat example does) and centrifuge. Each contender's server runs in a
// child process (the bench binary re-executed) on a loopback port, so
// that its CPU time and memory are its own; the parent runs the shared
// WebSocket clients and prints one Markdown table per scenario on
// stdout, progress on stderr.
//
//	go run ./bench                      # every scenario, every contender
//	go run ./bench -quick               # a smoke run, under a minute on 2 cores
//	go run ./bench -scenario flood -contender coder,wshub
//	go run ./bench -scenario fanout-1000 -contender coder,wshub-batch
//	go run ./bench -scenario fanout-10000 -contender coder,gorilla-batch,wshub-batch   # 10,000 clients in one room
//	go run ./bench -scenario fanout -fanout-sizes 100,1000,10000   # one fan-out table per size
//	go run ./bench -scenario fanout-1000 -contender wshub,wshub-history
//	go run ./bench -scenario fanout-1000 -contender wshub-batch -runs 1 -profile /tmp/prof
//	go run ./bench -charts docs/bench   # also draw SVG charts of the tables into docs/bench
//	go run ./bench -scenario latency -latency-rates 50,200   # latency at 50 and at 200 publishes/s
//	go run ./bench -scenario cluster    # many hubs over NATS and Redis, each hub a child process
//	go run ./bench -scenario cluster -cluster-broadcast   # its publishers call Room.Broadcast in the hubs, not clients
//	go run ./bench -scenario presence   # a 10,000-member presence room under churn, presence on and off
//	go run ./bench -scenario storm      # 5,000 clients rejoin a restarted hub, on the room log and in memory
//	go run ./bench -scenario scale      # 19,000 connections on one server: connect rate, RSS, idle CPU, fan-out
//
// wshub-history, wshub with every room keeping its last 1,000 messages,
// runs only when -contender names it; the cluster, presence, storm and
// scale scenarios (cluster.go, presence.go, storm.go, scale.go) only when
// -scenario names them, and -contender does not apply to them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if isChild(os.Args) {
		if err := runChild(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench server:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "smoke run: 1 run each, short windows, 1,000 idle clients (under a minute on 2 cores)")
	runs := fs.Int("runs", 0, "runs per figure (default 3, quick 1)")
	duration := fs.Duration("duration", 0, "measured time of each run (default 2s, quick 600ms)")
	warmup := fs.Duration("warmup", 0, "warm-up before each measurement (default 500ms, quick 200ms)")
	idle := fs.Int("idle-clients", 0, "clients of the idle-memory scenario (default 10000, quick 1000)")
	window := fs.Int("window", 64, "messages a room may be ahead of its slowest client")
	floodMsgs := fs.Int("flood-messages", 0, "messages the flood publisher sends (default 20000, quick 2000)")
	only := fs.String("scenario", "", "comma-separated scenarios or prefixes: fanout-100, fanout-1000 (fanout-N for each size of -fanout-sizes; naming fanout-N adds N to them, e.g. fanout-10000), latency, rooms, idle, churn, flood-4, flood-100 (default all); and the opt-in cluster, presence, storm and scale, named in full")
	fanoutSizes := fs.String("fanout-sizes", "100,1000", "comma-separated room sizes of the fan-out scenarios, one table fanout-N each; up to the open-file limit less 100 (the parent holds the N clients, the server child their N connections)")
	who := fs.String("contender", "", "comma-separated contenders: "+strings.Join(contenderNames(false), ", ")+" (default all but the opt-in "+strings.Join(contenderNames(true), ", ")+")")
	profile := fs.String("profile", "", "write CPU and heap profiles of each server child into this directory")
	trace := fs.Bool("trace", false, "with -profile, the cluster scenario's children also write execution traces (go tool trace -pprof=sched FILE)")
	clusterN := fs.Int("cluster-clients", 1000, "clients of the cluster scenario, over all hubs")
	clusterHz := fs.Int("cluster-rate", 200, "publishes per second of the cluster scenario's latency phase")
	clusterServer := fs.Bool("cluster-broadcast", false, "the cluster scenario's publishers are goroutines in the hubs calling Room.Broadcast, at most -window calls in flight each, not WebSocket clients")
	clusterSync := fs.Bool("cluster-broadcast-sync", false, "with -cluster-broadcast, the publisher goroutines call Room.Broadcast, one message at a time")
	presenceN := fs.Int("presence-members", 10000, "steady members of the presence scenario's room")
	stormN := fs.Int("storm-clients", 5000, "clients of the storm scenario on the restarted hub")
	scaleN := fs.Int("scale-clients", 19000, "connections of the scale scenario's server (it needs as many open files, and some more)")
	scaleProcs := fs.Int("scale-procs", 4, "client processes of the scale scenario, which share its connections")
	scaleIdle := fs.Duration("scale-idle", time.Minute, "idle window of the scale scenario, in which it takes the server's CPU; at least 30s covers a ping round")
	scaleMessages := fs.Int("scale-messages", 20, "rounds of fan-out of the scale scenario, in each layout")
	presenceRate := fs.Int("presence-rate", 1000, "joins per second, and as many leaves, of the presence scenario")
	presenceFor := fs.Duration("presence-for", 10*time.Second, "measured time of each run of the presence scenario")
	charts := fs.String("charts", "", "write SVG charts of the printed tables into this directory: fanout.svg, latency.svg, idle.svg, cluster.svg, those whose scenarios ran")
	latencyRates := fs.String("latency-rates", "", "comma-separated publishes per second of the latency scenario, each to its 100 clients, one table each (latency-RATE); default one table at 500")
	clusterSetups := fs.String("cluster-setups", "", "comma-separated rows of the cluster scenario: "+strings.Join(clusterSetupKeys(), ", ")+" (default all)")
	redisServer := fs.String("redis-server", redisBin, "the redis-server binary of the cluster scenario's Redis rows, a path or a name looked up in PATH (without it those rows are not run)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raiseFileLimit()
	cfg := &config{
		quick: *quick, runs: 3, warmup: 500 * time.Millisecond, duration: 2 * time.Second,
		window: *window, latencyN: 100, latencyHz: 50000,
		roomsN: 1000, roomSize: 10, idleN: 10000, churnConc: 8, profileDir: *profile,
		floodN: []int{4, 100}, floodMessages: 20000, floodFor: 10 * time.Second,
		floodDrain: 10 * time.Second, floodQuiet: time.Second,
		trace: *trace, clusterN: *clusterN, clusterHz: *clusterHz, clusterSetups: *clusterSetups, clusterServer: *clusterServer,
		clusterSync: *clusterSync, redisBin: *redisServer,
		presenceN: *presenceN, presenceRate: *presenceRate, presenceFor: *presenceFor,
		stormN: *stormN,
		scaleN: *scaleN, scaleProcs: *scaleProcs, scaleIdle: *scaleIdle, scaleMessages: *scaleMessages,
	}
	if cfg.clusterN < 1 || cfg.clusterHz < 1 {
		return errors.New("-cluster-clients and -cluster-rate must be positive")
	}
	fanout, err := fanoutSizesOf(*fanoutSizes, *only)
	if err != nil {
		return err
	}
	cfg.fanout = fanout
	if *latencyRates != "" {
		for r := range strings.SplitSeq(*latencyRates, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(r))
			if err != nil || n < 1 {
				return fmt.Errorf("-latency-rates: %q is not a positive number of publishes per second", r)
			}
			cfg.latencyRates = append(cfg.latencyRates, n)
		}
	}
	if *quick {
		cfg.runs, cfg.warmup, cfg.duration, cfg.idleN = 1, 200*time.Millisecond, 600*time.Millisecond, 1000
		cfg.floodMessages, cfg.floodFor, cfg.floodDrain, cfg.floodQuiet = 2000, 2*time.Second, 3*time.Second, 500*time.Millisecond
	}
	if *runs > 0 {
		cfg.runs = *runs
	}
	if *duration > 0 {
		cfg.duration = *duration
	}
	if *warmup > 0 {
		cfg.warmup = *warmup
	}
	if *idle > 0 {
		cfg.idleN = *idle
	}
	if *floodMsgs > 0 {
		cfg.floodMessages = *floodMsgs
	}
	for _, dir := range []string{cfg.profileDir, *charts} {
		if dir != "" {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
	}
	list, err := selectContenders(*who)
	if err != nil {
		return err
	}
	scs, err := selectScenarios(scenarios(cfg), *only)
	if err != nil {
		return err
	}
	// Every run is bounded; this bounds the whole in case one hangs. An
	// interrupt ends the run, and the deferred stops end the children.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()

	began := time.Now()
	fmt.Fprintf(stdout, "<!-- go run ./bench %s -->\n", strings.Join(args, " "))
	fmt.Fprintf(stdout, "Go %s, %s/%s, %d CPUs (%s). %d run(s) per figure; cells are median [min–max]; × is the ratio of medians to %s.\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel(), cfg.runs, baselineOf(scs))
	var names []string
	for _, c := range list {
		names = append(names, c.name)
	}
	for _, sc := range scs {
		if sc.own != nil {
			if err := sc.own(ctx, cfg, sc, stdout, stderr); err != nil {
				return fmt.Errorf("%s: %w", sc.id, err)
			}
			continue
		}
		res := runScenario(ctx, cfg, sc, list, stderr)
		printTable(stdout, cfg, sc, names, res, baseline)
	}
	if *charts != "" {
		paths, err := writeCharts(*charts, cfg.tables, chartMeta{
			command: strings.TrimSpace("go run ./bench " + strings.Join(args, " ")),
			machine: fmt.Sprintf("%d cores (%s), %s/%s, %s", runtime.NumCPU(), cpuModel(), runtime.GOOS, runtime.GOARCH, runtime.Version()),
			date:    time.Now().Format("2006-01-02"),
			runs:    cfg.runs,
		})
		for _, p := range paths {
			fmt.Fprintf(stderr, "bench: wrote %s\n", p)
		}
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "bench: done in %v\n", time.Since(began).Round(time.Second))
	return nil
}

// baselineOf names the baseline of the ratios of scs.
func baselineOf(scs []scenario) string {
	own, other := false, false
	for _, sc := range scs {
		if sc.own != nil {
			own = true
		} else {
			other = true
		}
	}
	switch {
	case own && other:
		return baseline + " (in the cluster and presence tables, to their first row)"
	case own:
		return "the first row"
	}
	return baseline
}

// cpuModel is the CPU model named by /proc/cpuinfo, or "unknown CPU".
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// contenderNames lists the contenders run by default, or the opt-in ones.
func contenderNames(optIn bool) []string {
	var names []string
	for _, c := range contenders() {
		if c.optIn == optIn {
			names = append(names, c.name)
		}
	}
	return names
}

func selectContenders(spec string) ([]contender, error) {
	if spec == "" {
		var list []contender
		for _, c := range contenders() {
			if !c.optIn {
				list = append(list, c)
			}
		}
		return list, nil
	}
	var list []contender
	for name := range strings.SplitSeq(spec, ",") {
		c, err := findContender(strings.TrimSpace(name))
		if err != nil {
			return nil, err
		}
		list = append(list, c)
	}
	return list, nil
}

func selectScenarios(all []scenario, spec string) ([]scenario, error) {
	if spec == "" {
		return slices.DeleteFunc(slices.Clone(all), func(s scenario) bool { return s.optIn }), nil
	}
	var list []scenario
	for want := range strings.SplitSeq(spec, ",") {
		want = strings.TrimSpace(want)
		exact := slices.ContainsFunc(all, func(s scenario) bool { return s.id == want })
		found := false
		for _, sc := range all {
			match := sc.id == want || !exact && !sc.optIn && strings.HasPrefix(sc.id, want)
			if match && !slices.ContainsFunc(list, func(s scenario) bool { return s.id == sc.id }) {
				list = append(list, sc)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown scenario %q", want)
		}
	}
	return list, nil
}

// fanoutSizesOf returns the room sizes of the fan-out scenarios: those of
// spec (-fanout-sizes), and N for every entry fanout-N of scenarios
// (-scenario) that spec lacks, so that naming a fan-out table is enough
// to run it; in ascending order, each once. A size must leave
// fanoutFileMargin open files to its process: the parent holds the N
// clients, the server child their N connections.
func fanoutSizesOf(spec, scenarios string) ([]int, error) {
	var sizes []int
	for f := range strings.SplitSeq(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-fanout-sizes: %q is not a positive number of clients", f)
		}
		sizes = append(sizes, n)
	}
	for want := range strings.SplitSeq(scenarios, ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(want), "fanout-"); ok {
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				sizes = append(sizes, n)
			}
		}
	}
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
		if n := sizes[len(sizes)-1]; uint64(n+fanoutFileMargin) > lim.Max {
			return nil, fmt.Errorf("fanout-%d needs %d open files in the parent and as many in the server child, but their hard limit is %d (ulimit -Hn): lower the size or raise the limit", n, n+fanoutFileMargin, lim.Max)
		}
	}
	return sizes, nil
}

// fanoutFileMargin is what a fan-out process needs besides its
// connections: the listener, pipes, the binary, the runtime's own.
const fanoutFileMargin = 100

// outcome gathers the runs of one contender in one scenario.
type outcome struct {
	values map[string][]float64
	notes  []string
	errs   []string
}

// add records the result of run (counted from 0).
func (o *outcome) add(run int, r runResult) {
	for k, v := range r.values {
		o.values[k] = append(o.values[k], v)
	}
	for _, n := range r.notes {
		o.notes = append(o.notes, fmt.Sprintf("run %d: %s", run+1, n))
	}
}

// runScenario runs sc cfg.runs times for every contender, interleaving
// the contenders so that a noisy moment does not hit only one of them.
func runScenario(ctx context.Context, cfg *config, sc scenario, list []contender, log io.Writer) map[string]*outcome {
	res := make(map[string]*outcome)
	for _, c := range list {
		res[c.name] = &outcome{values: make(map[string][]float64)}
	}
	for run := range cfg.runs {
		for _, c := range list {
			o := res[c.name]
			began := time.Now()
			r, err := runOnce(ctx, cfg, sc, c)
			if err != nil {
				fmt.Fprintf(log, "bench: %s %s run %d: %v\n", sc.id, c.name, run+1, err)
				o.errs = append(o.errs, err.Error())
				continue
			}
			o.add(run, r)
			fmt.Fprintf(log, "bench: %s %s run %d: %s (%v)\n", sc.id, c.name, run+1, brief(sc, r), time.Since(began).Round(10*time.Millisecond))
		}
	}
	return res
}

func runOnce(ctx context.Context, cfg *config, sc scenario, c contender) (runResult, error) {
	rm, err := startRemote(c.name)
	if err != nil {
		return runResult{}, err
	}
	defer rm.stop()
	return sc.run(ctx, cfg, c, rm)
}

func brief(sc scenario, r runResult) string {
	var parts []string
	for _, m := range sc.metrics {
		parts = append(parts, m.header+" "+format(r.values[m.key], m.digits))
	}
	parts = append(parts, r.notes...)
	return strings.Join(parts, ", ")
}
