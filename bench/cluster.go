package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/natsbroker"
	"github.com/wshub/wshub/redisengine"
)

// The cluster scenario measures rooms that span hubs: every hub in a child
// process of its own, the broker in another (NATS: the bench binary
// re-executed as an embedded nats-server with JetStream; Redis: a
// redis-server, cluster_redis.go), all on 127.0.0.1, the clients in the
// parent, spread evenly over the hubs, all in one room. Each setup
// (clusterSetups) is measured against one hub without a broker in the
// same run: throughput with 1 and with 10 publishers spread over the hubs,
// in the closed loop of the fan-out scenarios (the room never more than
// the window ahead of its slowest member, whichever publisher sent), then
// latency at a paced rate. The publishers are members of the room, WebSocket
// clients publishing without waiting for each ack (pubClient), or with
// -cluster-broadcast goroutines of the hubs, each with at most the window
// of Room.Broadcast calls in flight, each on a goroutine of its own
// (Room.Broadcast, one message at a time, with -cluster-broadcast-sync).

// Children of the cluster scenario, by their first argument after
// childFlag.
const (
	natsChild       = "nats"        // nats STORE-DIR
	clusterHubChild = "cluster-hub" // cluster-hub SPEC (a hubSpec in JSON)
)

// Brokers of a hub of the cluster scenario.
const (
	brokerNone      = ""
	brokerConfirm   = "confirm"   // natsbroker.Connect, default options
	brokerNoConfirm = "noconfirm" // natsbroker.Options{NoConfirm: true}
	brokerLog       = "log"       // natsbroker.ConnectLog: history rooms through the JetStream room log
	brokerRedis     = "redis"     // redisengine.Connect: pub/sub, or a Stream per room with history
)

// hubSpec is what a hub child of the cluster scenario serves with.
type hubSpec struct {
	Broker  string `json:"broker,omitempty"`
	NATS    string `json:"nats,omitempty"`    // the NATS URL, for a NATS broker
	Redis   string `json:"redis,omitempty"`   // the Redis URL, for brokerRedis
	History bool   `json:"history,omitempty"` // rooms keep historyMessages
	// Window is how many Room.Broadcast calls each publisher goroutine keeps
	// in flight; at most 1, it calls Room.Broadcast one at a time.
	Window int `json:"window,omitempty"`
}

// newClusterHub returns the wshub server of a hub child; spec is a
// hubSpec in JSON.
func newClusterHub(spec string) (server, error) {
	var sp hubSpec
	if err := json.Unmarshal([]byte(spec), &sp); err != nil {
		return nil, fmt.Errorf("hub spec: %w", err)
	}
	var rooms func(string) wshub.RoomOptions
	if sp.History {
		rooms = keepHistory
	}
	var engine wshub.Engine
	switch sp.Broker {
	case brokerNone:
	case brokerConfirm, brokerNoConfirm:
		b, err := natsbroker.Connect(sp.NATS, &natsbroker.Options{NoConfirm: sp.Broker == brokerNoConfirm})
		if err != nil {
			return nil, err
		}
		engine = b
	case brokerLog:
		if !sp.History {
			return nil, errors.New("the log broker needs history rooms")
		}
		lg, err := natsbroker.ConnectLog(sp.NATS, nil)
		if err != nil {
			return nil, err
		}
		engine = lg
	case brokerRedis:
		e, err := redisengine.Connect(sp.Redis, nil)
		if err != nil {
			return nil, err
		}
		engine = e
	default:
		return nil, fmt.Errorf("unknown broker %q", sp.Broker)
	}
	srv := newWshubServer(rooms, engine)
	srv.window = sp.Window
	return srv, nil
}

// runNATS serves NATS with JetStream, storing in storeDir, on a random
// loopback port, writes its address and obeys the process-wide commands
// of serveChild until stdin ends.
func runNATS(storeDir string) error {
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host:      "127.0.0.1",
		Port:      natsserver.RANDOM_PORT,
		NoLog:     true,
		NoSigs:    true,
		JetStream: true,
		StoreDir:  storeDir,
	})
	if err != nil {
		return err
	}
	ns.Start()
	defer func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	}()
	if !ns.ReadyForConnections(10 * time.Second) {
		return errors.New("nats server not ready after 10s")
	}
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "addr %s\n", ns.Addr())
	out.Flush()
	ch := &childState{out: out}
	return ch.serve(os.Stdin)
}

// clusterSetup is one row of the cluster table.
type clusterSetup struct {
	key     string // names it in -cluster-setups
	label   string
	hubs    int
	broker  string
	history bool
}

// clusterSetups lists the rows, the baseline first.
var clusterSetups = []clusterSetup{
	{key: "one", label: "(a) 1 hub, no broker", hubs: 1},
	{key: "confirm", label: "(b) 2 hubs, core NATS, confirm", hubs: 2, broker: brokerConfirm},
	{key: "noconfirm", label: "(c) 2 hubs, core NATS, NoConfirm", hubs: 2, broker: brokerNoConfirm},
	{key: "log", label: "(d) 2 hubs, JetStream log, history", hubs: 2, broker: brokerLog, history: true},
	{key: "one-history", label: "(e) 1 hub, history, no broker", hubs: 1, history: true},
	{key: "redis-pubsub", label: "(f) 2 hubs, Redis pub/sub", hubs: 2, broker: brokerRedis},
	{key: "redis-streams", label: "(g) 2 hubs, Redis Streams, history", hubs: 2, broker: brokerRedis, history: true},
}

// clusterLikeForLike pairs the keys of the setups with history on a
// broker with their like-for-like baseline, one hub with history; the
// scenario prints their ratios to it under the table.
var clusterLikeForLike = [][2]string{{"log", "one-history"}, {"redis-streams", "one-history"}}

// clusterBaseline is the key of the setup every ratio is taken against.
const clusterBaseline = "one"

// labelOf returns the label of the setup called key.
func labelOf(key string) string {
	for _, s := range clusterSetups {
		if s.key == key {
			return s.label
		}
	}
	return ""
}

// clusterSetupKeys lists the setups' keys.
func clusterSetupKeys() []string {
	var keys []string
	for _, s := range clusterSetups {
		keys = append(keys, s.key)
	}
	return keys
}

func selectClusterSetups(spec string) ([]clusterSetup, error) {
	if spec == "" {
		return clusterSetups, nil
	}
	var list []clusterSetup
	for key := range strings.SplitSeq(spec, ",") {
		key = strings.TrimSpace(key)
		found := false
		for _, s := range clusterSetups {
			if s.key == key {
				list = append(list, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("unknown cluster setup %q (have %s)", key, strings.Join(clusterSetupKeys(), ", "))
		}
	}
	return list, nil
}

// clusterPublishers are the publisher counts of the throughput columns;
// latencyPublishers share the paced publishes of the latency columns.
var clusterPublishers = []int{1, 10}

const latencyPublishers = 10

var clusterMetrics = []metric{
	{key: "rate1", header: "deliveries/s, 1 publisher", ratio: true},
	{key: "rate10", header: "deliveries/s, 10 publishers", ratio: true},
	{key: "p50", header: "p50 µs"},
	{key: "p99", header: "p99 µs", ratio: true},
	{key: "cpu1", header: "server CPU µs/delivery, 1 pub.", digits: 2},
	{key: "cpu10", header: "10 pub.", digits: 2},
	{key: "broker10", header: "broker % of it, 10 pub."},
	{key: "writes1", header: "deliveries/write(2), 1 pub.", digits: 1},
	{key: "writes10", header: "10 pub.", digits: 1},
	{key: "clients10", header: "clients CPU µs/delivery, 10 pub.", digits: 2},
	{key: "missing", header: "deliveries missing", sum: true},
	{key: "unacked", header: "acks missing", sum: true},
}

// publisherKind says what the cluster scenario's publishers are.
func publisherKind(cfg *config) string {
	if cfg.clusterServer && cfg.clusterSync {
		return "server-side publishers (-cluster-broadcast -cluster-broadcast-sync): goroutines calling Room.Broadcast in the hubs, one message at a time, spread over them in turn"
	}
	if cfg.clusterServer {
		return fmt.Sprintf("server-side publishers (-cluster-broadcast): goroutines in the hubs, spread over them in turn, each with at most %d Room.Broadcast calls outstanding, each on a goroutine of its own, waiting for them in order", cfg.window)
	}
	return fmt.Sprintf("client publishers: WebSocket clients, members of the room (%d of its clients, connected to the hubs in turn), each writing publish frames with ids without waiting for their acks, at most %d unanswered, reading their connection all along", latencyPublishers, cfg.window)
}

func clusterScenario() scenario {
	return scenario{
		id:    "cluster",
		title: "Many hubs: one room over several hub processes",
		optIn: true,
		about: func(cfg *config) string {
			return fmt.Sprintf("%s clients in one room, spread evenly over the hubs; every hub is a child process, the broker another: NATS (nats-server %s embedded, JetStream on, store in a temporary directory) or %s, all on 127.0.0.1; the clients are in the bench process. "+
				"Publishers: %s. "+
				"Throughput: publishes of ~100-byte payloads by 1, then 10 publishers, the room at most %d messages ahead of its slowest client whichever publisher sent; measured for %v after a %v warm-up each. "+
				"Latency: the 10 publishers in turn, paced at %d publishes/s in all, receive time minus the publisher's stamp (taken as it writes the frame, or before Room.Broadcast), over %v after a %v warm-up. "+
				"Server CPU is the CPU time of every hub and broker process over the measured window, per delivery; broker %% is the NATS or Redis process's part of it; deliveries/write(2) divides the deliveries by the hubs' write system calls (syscw of /proc/PID/io), so it shows how many messages a socket write carries; clients CPU is the bench process's. "+
				"deliveries missing is the total, over all runs and phases, of messages a client had not received 5 s after its phase (each client must get every message once; one more than sent is a note); acks missing, of client publishes not acked by the end of the run (an error frame or an ack out of order is a note). "+
				"× is the ratio of medians to %s.",
				format(float64(cfg.clusterN), 0), natsserver.VERSION, redisAbout(cfg), publisherKind(cfg), cfg.window, cfg.duration, cfg.warmup, cfg.clusterHz, cfg.duration, cfg.warmup, clusterSetups[0].label)
		},
		metrics: clusterMetrics,
		own:     runCluster,
	}
}

// runCluster runs the cluster scenario: cfg.runs runs of every setup,
// interleaved, and prints its table.
func runCluster(ctx context.Context, cfg *config, sc scenario, stdout, log io.Writer) error {
	setups, err := selectClusterSetups(cfg.clusterSetups)
	if err != nil {
		return err
	}
	load0 := loadAverage()
	res := make(map[string]*outcome)
	var rows []string
	for _, s := range setups {
		res[s.label] = &outcome{values: make(map[string][]float64)}
		rows = append(rows, s.label)
	}
	// Without redis-server the Redis rows say so and the others run.
	var redisPath string
	var redisErr error
	if slices.ContainsFunc(setups, func(s clusterSetup) bool { return s.broker == brokerRedis }) {
		if redisPath, redisErr = lookRedis(cfg.redisBin); redisErr != nil {
			fmt.Fprintf(log, "bench: cluster: the Redis rows are %v\n", redisErr)
		} else {
			cfg.redisVersion = redisVersion(redisPath)
		}
	}
	for _, s := range setups {
		if s.broker == brokerRedis && redisErr != nil {
			res[s.label].errs = append(res[s.label].errs, redisErr.Error())
		}
	}
	for run := range cfg.runs {
		for _, s := range setups {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if s.broker == brokerRedis && redisErr != nil {
				continue
			}
			o := res[s.label]
			began := time.Now()
			r, err := runClusterOnce(ctx, cfg, s, redisPath, run == 0)
			if err != nil {
				fmt.Fprintf(log, "bench: cluster %s run %d: %v\n", s.key, run+1, err)
				o.errs = append(o.errs, fmt.Sprintf("run %d: %v", run+1, err))
				continue
			}
			o.add(run, r)
			fmt.Fprintf(log, "bench: cluster %s run %d: %s (%v)\n", s.key, run+1, brief(sc, r), time.Since(began).Round(10*time.Millisecond))
		}
	}
	base := ""
	for _, s := range setups {
		if s.key == clusterBaseline {
			base = s.label
		}
	}
	printTable(stdout, cfg, sc, rows, res, base)
	for _, pair := range clusterLikeForLike {
		setup, like := res[labelOf(pair[0])], res[labelOf(pair[1])]
		if setup == nil || like == nil || len(setup.values) == 0 {
			continue
		}
		var parts []string
		for _, m := range sc.metrics {
			if m.ratio {
				parts = append(parts, m.header+" "+ratio(summarize(setup.values[m.key]), like, m.key)+"×")
			}
		}
		fmt.Fprintf(stdout, "%s against its like-for-like baseline %s: %s.\n\n", labelOf(pair[0]), labelOf(pair[1]), strings.Join(parts, ", "))
	}
	fmt.Fprintf(stdout, "Load average (1, 5, 15 min) before: %s; after: %s.\n\n", load0, loadAverage())
	return nil
}

// loadAverage returns the first three fields of /proc/loadavg, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// cluster is the child processes of one run of one setup.
type cluster struct {
	nats  *remote      // nil without a NATS broker
	store string       // NATS's store directory
	redis *redisServer // nil without Redis
	hubs  []*remote
}

// startCluster starts the broker, if s has one (Redis from redisPath),
// and s's hubs, whose publisher goroutines keep window publishes in
// flight. On an error it stops what it started.
func startCluster(s clusterSetup, window int, redisPath string) (*cluster, error) {
	cl := &cluster{}
	spec := hubSpec{Broker: s.broker, History: s.history, Window: window}
	switch s.broker {
	case brokerNone:
	case brokerRedis:
		rs, err := startRedis(redisPath)
		if err != nil {
			return nil, err
		}
		cl.redis = rs
		spec.Redis = rs.url()
	default:
		dir, err := os.MkdirTemp("", "wshub-bench-nats-")
		if err != nil {
			return nil, err
		}
		cl.store = dir
		if cl.nats, err = startRemote(natsChild, dir); err != nil {
			cl.stop()
			return nil, err
		}
		spec.NATS = "nats://" + cl.nats.addr
	}
	b, err := json.Marshal(spec)
	if err != nil {
		cl.stop()
		return nil, err
	}
	for range s.hubs {
		rm, err := startRemote(clusterHubChild, string(b))
		if err != nil {
			cl.stop()
			return nil, err
		}
		cl.hubs = append(cl.hubs, rm)
	}
	return cl, nil
}

// stop ends every child, the hubs first, and removes the broker's files.
// It returns how the children that did not exit cleanly ended (a child
// built with -race exits with status 66 after a data race).
func (cl *cluster) stop() error {
	var errs []error
	rms, names := cl.children()
	for i, rm := range rms {
		if err := rm.stop(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", names[i], err))
		}
	}
	if cl.store != "" {
		errs = append(errs, os.RemoveAll(cl.store))
	}
	if cl.redis != nil {
		if err := cl.redis.stop(); err != nil {
			errs = append(errs, fmt.Errorf("redis-server: %w", err))
		}
	}
	return errors.Join(errs...)
}

// children lists the hubs, then NATS if there is one, with their names:
// the children that are the bench binary (not redis-server).
func (cl *cluster) children() ([]*remote, []string) {
	var rms []*remote
	var names []string
	for i, rm := range cl.hubs {
		rms = append(rms, rm)
		names = append(names, fmt.Sprintf("hub%d", i))
	}
	if cl.nats != nil {
		rms = append(rms, cl.nats)
		names = append(names, "nats")
	}
	return rms, names
}

// cpuSample is the CPU time of the children and of this process.
type cpuSample struct {
	hubs, broker, self int64 // ns
	writes             int64 // write system calls of the hubs
	errors, kicked     uint64
}

func (cl *cluster) sample() (cpuSample, error) {
	s := cpuSample{self: cpuTime()}
	for _, rm := range cl.hubs {
		st, err := rm.stats(false)
		if err != nil {
			return s, err
		}
		s.hubs += st.CPUNanos
		s.writes += int64(st.Writes)
		s.errors += st.Errors
		s.kicked += st.Kicked
	}
	if cl.nats != nil {
		st, err := cl.nats.stats(false)
		if err != nil {
			return s, err
		}
		s.broker = st.CPUNanos
	}
	if cl.redis != nil {
		s.broker = cl.redis.cpu()
	}
	return s, nil
}

// trial is one run of one setup.
type trial struct {
	cfg     *config
	setup   clusterSetup
	cl      *cluster
	clients []*client
	pubs    []*pubClient // the publishing clients, unless cfg.clusterServer
	pub     *publisher
	profile bool // take profiles of the measured windows
	missing int64
	notes   []string
}

func runClusterOnce(ctx context.Context, cfg *config, s clusterSetup, redisPath string, profile bool) (runResult, error) {
	window := cfg.window
	if cfg.clusterSync {
		window = 1
	}
	cl, err := startCluster(s, window, redisPath)
	if err != nil {
		return runResult{}, err
	}
	defer cl.stop() // at once if the run returns early; a no-op after the stop below
	t := &trial{cfg: cfg, setup: s, cl: cl, profile: profile && cfg.profileDir != ""}
	defer t.close()
	if err := t.connect(ctx); err != nil {
		return runResult{}, err
	}
	values := make(map[string]float64)
	for _, n := range clusterPublishers {
		delivered, used, err := t.throughput(ctx, fmt.Sprintf("%dpub", n), t.outlets(n))
		if err != nil {
			return runResult{}, err
		}
		d := max(float64(delivered), 1)
		values[fmt.Sprintf("rate%d", n)] = float64(delivered) / used.seconds
		values[fmt.Sprintf("cpu%d", n)] = float64(used.hubs+used.broker) / 1e3 / d
		if cl.nats != nil || cl.redis != nil {
			values[fmt.Sprintf("broker%d", n)] = 100 * float64(used.broker) / max(float64(used.hubs+used.broker), 1)
		}
		values[fmt.Sprintf("writes%d", n)] = d / max(float64(used.writes), 1)
		values[fmt.Sprintf("clients%d", n)] = float64(used.self) / 1e3 / d
	}
	p50, p99, err := t.latency(ctx, t.outlets(latencyPublishers))
	if err != nil {
		return runResult{}, err
	}
	values["p50"], values["p99"] = float64(p50), float64(p99)
	end, err := cl.sample()
	if err != nil {
		return runResult{}, err
	}
	var extra int64
	for _, c := range t.clients {
		extra += max(0, c.received.Load()-t.pub.sent[c.room])
	}
	values["missing"] = float64(t.missing)
	tally := tallyPubs(t.pubs)
	values["unacked"] = float64(tally.handed - tally.acked)
	notes := serverNotes(serverStats{Kicked: end.kicked, Errors: end.errors + uint64(tally.errored)}, countLost(t.clients), t.missing)
	if extra > 0 {
		notes = append(notes, fmt.Sprintf("%d deliveries more than sent", extra))
	}
	if tally.disorder > 0 {
		notes = append(notes, fmt.Sprintf("%d acks out of order", tally.disorder))
	}
	if tally.first != "" {
		notes = append(notes, "a publishing client: "+tally.first)
	}
	if err := cl.stop(); err != nil {
		notes = append(notes, "child processes: "+err.Error())
	}
	return runResult{values: values, notes: append(notes, t.notes...)}, nil
}

// outlets returns n publishers spread over the hubs in turn: the first n
// publishing clients, or n publisher goroutines of the hubs.
func (t *trial) outlets(n int) []outlet {
	outlets := make([]outlet, n)
	for i := range outlets {
		if t.pubs != nil {
			outlets[i] = outlet{pc: t.pubs[i]}
		} else {
			outlets[i] = outlet{rm: t.cl.hubs[i%len(t.cl.hubs)], id: i}
		}
	}
	return outlets
}

// close stops the publishing clients and closes every client, waiting
// (boundedly) for their goroutines; it may be called again.
func (t *trial) close() {
	for _, pc := range t.pubs {
		select {
		case <-pc.stop:
		default:
			close(pc.stop)
		}
	}
	closeAll(t.clients) // unblocks a publisher's write on a full socket
	for _, pc := range t.pubs {
		pc.stopPub()
	}
}

// connect connects cfg.clusterN clients to room 0, client i to hub i mod
// the hubs, and starts their read loops, ready to record latencies. Unless
// the publishers are server-side, it makes latencyPublishers of them, over
// the hubs in turn, publishers too.
func (t *trial) connect(ctx context.Context) error {
	hubs := t.cl.hubs
	var byHub [][]*client
	for h, rm := range hubs {
		n := t.cfg.clusterN / len(hubs)
		if h < t.cfg.clusterN%len(hubs) {
			n++
		}
		clients, err := connectAll(ctx, rm.addr, wshubProtocol{}, n, func(int) int { return 0 })
		t.clients = append(t.clients, clients...)
		byHub = append(byHub, clients)
		if err != nil {
			return fmt.Errorf("hub%d: %w", h, err)
		}
		if err := rm.waitMembers(n, 30*time.Second); err != nil {
			return fmt.Errorf("hub%d: %w", h, err)
		}
	}
	recording := new(atomic.Bool)
	for _, c := range t.clients {
		c.hist, c.recording = new(histogram), recording
	}
	var readers []*client
	if !t.cfg.clusterServer {
		for i := range latencyPublishers {
			h, k := i%len(hubs), i/len(hubs)
			if k >= len(byHub[h]) {
				return fmt.Errorf("%d publishing clients need at least %d clients on each hub", latencyPublishers, (latencyPublishers+len(hubs)-1)/len(hubs))
			}
			t.pubs = append(t.pubs, newPubClient(byHub[h][k], roomName(0), t.cfg.window))
		}
	}
	for _, c := range t.clients {
		if c.onFrame == nil {
			readers = append(readers, c)
		}
	}
	start(readers)
	for _, pc := range t.pubs {
		pc.startPub()
	}
	t.pub = newPublisher(hubs[0], t.clients, 1, t.cfg.window)
	return nil
}

// profiles starts a CPU profile, and with cfg.trace an execution trace,
// of every child when the trial takes them, and resets Redis's command
// statistics; stop them with stopProfiles, then call redisStats.
func (t *trial) profiles(phase string) ([]*profiler, error) {
	if !t.profile {
		return nil, nil
	}
	if t.cl.redis != nil {
		if _, err := redisDo(t.cl.redis.addr, "CONFIG RESETSTAT", 10*time.Second); err != nil {
			return nil, fmt.Errorf("redis-server: %w", err)
		}
	}
	rms, names := t.cl.children()
	var ps []*profiler
	for i, rm := range rms {
		p, err := startProfile(t.cfg, rm, "cluster-"+t.setup.key+"-"+phase, names[i])
		if err == nil && t.cfg.trace {
			p.traced = true
			_, err = rm.call("trace " + p.base + ".trace")
		}
		if err != nil {
			stopProfiles(ps)
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// redisStats writes Redis's command statistics since profiles (INFO
// commandstats: calls and µs per command and script) into the profile
// directory, when the trial takes profiles and has Redis, whose CPU no
// Go profile shows.
func (t *trial) redisStats(phase string) error {
	if !t.profile || t.cl.redis == nil {
		return nil
	}
	info, err := redisDo(t.cl.redis.addr, "INFO commandstats", 10*time.Second)
	if err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	return os.WriteFile(filepath.Join(t.cfg.profileDir, "cluster-"+t.setup.key+"-"+phase+"-redis.commandstats.txt"), []byte(info), 0o644)
}

func stopProfiles(ps []*profiler) error {
	var errs []error
	for _, p := range ps {
		if p.traced {
			_, err := p.rm.call("tracestop")
			errs = append(errs, err)
		}
		errs = append(errs, p.stop())
	}
	return errors.Join(errs...)
}

// usage is what a measured window used.
type usage struct {
	seconds            float64
	hubs, broker, self int64 // CPU ns
	writes             int64
}

// throughput publishes through outlets in the closed loop, and returns
// the deliveries over the measured window and what it used.
func (t *trial) throughput(ctx context.Context, phase string, outlets []outlet) (int64, usage, error) {
	t.pub.use(outlets)
	if err := t.pub.run(ctx, t.cfg.warmup); err != nil {
		return 0, usage{}, err
	}
	ps, err := t.profiles(phase)
	if err != nil {
		return 0, usage{}, err
	}
	s0, err := t.cl.sample()
	if err != nil {
		return 0, usage{}, err
	}
	d0, t0 := totalReceived(t.clients), time.Now()
	if err := t.pub.run(ctx, t.cfg.duration); err != nil {
		return 0, usage{}, err
	}
	d1, t1 := totalReceived(t.clients), time.Now()
	s1, err := t.cl.sample()
	if err != nil {
		return 0, usage{}, err
	}
	if err := errors.Join(stopProfiles(ps), t.redisStats(phase)); err != nil {
		return 0, usage{}, err
	}
	t.drain(phase)
	return d1 - d0, usage{
		seconds: t1.Sub(t0).Seconds(),
		hubs:    s1.hubs - s0.hubs,
		broker:  s1.broker - s0.broker,
		self:    s1.self - s0.self,
		writes:  s1.writes - s0.writes,
	}, nil
}

// drain waits for the clients to get what was sent, and the publishing
// clients their acks, and counts what they did not.
func (t *trial) drain(phase string) {
	deadline := time.Now().Add(5 * time.Second)
	if m := t.pub.drain(5 * time.Second); m > 0 {
		t.missing += m
		t.notes = append(t.notes, fmt.Sprintf("%s: %d deliveries missing", phase, m))
	}
	if tally := waitAnswered(t.pubs, deadline); tally.acked+tally.errored < tally.handed {
		t.notes = append(t.notes, fmt.Sprintf("%s: %d publishes unanswered after 5 s", phase, tally.handed-tally.acked-tally.errored))
	}
}

// latency paces the publishes of outlets, one after the other in turn,
// at cfg.clusterHz in all and returns the p50 and p99 latency in µs.
func (t *trial) latency(ctx context.Context, outlets []outlet) (int64, int64, error) {
	t.pub.use(outlets)
	rate := float64(t.cfg.clusterHz)
	if _, err := pace(ctx, t.pub, rate, t.cfg.warmup); err != nil {
		return 0, 0, err
	}
	ps, err := t.profiles("latency")
	if err != nil {
		return 0, 0, err
	}
	recording := t.clients[0].recording
	recording.Store(true)
	late, err := pace(ctx, t.pub, rate, t.cfg.duration)
	recording.Store(false)
	if err != nil {
		return 0, 0, err
	}
	if err := errors.Join(stopProfiles(ps), t.redisStats("latency")); err != nil {
		return 0, 0, err
	}
	t.drain("latency")
	if late > 0 {
		t.notes = append(t.notes, fmt.Sprintf("latency: window full %d times, rate not sustained", late))
	}
	t.close() // the histograms are complete once the read loops ended
	var h histogram
	for _, c := range t.clients {
		h.merge(c.hist)
	}
	return h.quantile(0.50), h.quantile(0.99), nil
}
