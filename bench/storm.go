package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/natsbroker"
)

// The storm scenario measures what a hub restart does to its clients:
// stormN clients in stormRooms history rooms on hub A rejoin with since
// after A is stopped (SIGTERM: a graceful Shutdown; or SIGKILL) and
// started again on the same port, while a client publishes 100 messages
// a second, one room after another. Two rows: the JetStream room log (a
// hub B with 100 more members, where the publisher is, so that the log
// goes on while A is down) and the in-memory history (A alone, the
// publisher on A, reconnecting too; A's history is gone with it, so its
// clients cannot recover: they are told so).
//
// Clients reconnect as the client libraries do: after 100 ms doubling to
// 5 s, each wait drawn at random between half and all of it, and after a
// 503 at least what its Retry-After says, plus up to a quarter more. Each checks that
// it gets every message of its room once, in order, across the restart
// (the publisher numbers the messages of each room), unless its rejoin
// was told recovered:false.
//
// Figures: the time from the restart (the new process listening) until
// the last client recovered; the live deliveries' latency (publish to
// receipt, p50 and p99) of A's members already back and of B's members,
// during the storm (from the stop until the last client is back); 503s;
// connections per client; and the checks.

const (
	stormHubChild = "storm-hub" // storm-hub SPEC
	stormRooms    = 10
	stormRate     = 100 // publishes per second
)

// stormSpec is the JSON argument of a storm-hub child.
type stormSpec struct {
	NATS string `json:"nats"` // "" for the in-memory history
	Addr string `json:"addr"`
}

// runStormHub is a storm-hub child: a hub whose rooms keep history,
// listening on spec.Addr, shutting down gracefully on SIGTERM.
func runStormHub(arg string) error {
	var sp stormSpec
	if err := json.Unmarshal([]byte(arg), &sp); err != nil {
		return err
	}
	var engine wshub.Engine
	if sp.NATS != "" {
		lg, err := natsbroker.ConnectLog(sp.NATS, nil)
		if err != nil {
			return err
		}
		engine = lg
	}
	srv := newWshubServer(keepHistory, engine)
	var ln net.Listener
	var err error
	for range 100 { // the old process may still hold the port
		if ln, err = net.Listen("tcp", sp.Addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return err
	}
	hs := serveWS(srv, ln)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	go func() {
		<-term
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		hs.Shutdown(ctx) // stops accepting; the hub is not an HTTP handler that runs on
		srv.hub.Shutdown(ctx)
		os.Exit(0)
	}()
	return serveOn(srv, ln.Addr().String())
}

// stormSetup is one row of the storm table.
type stormSetup struct {
	label string
	log   bool
	kill  bool // SIGKILL instead of SIGTERM
}

var stormSetups = []stormSetup{
	{label: "room log, SIGTERM", log: true},
	{label: "room log, SIGKILL", log: true, kill: true},
	{label: "in-memory history, SIGTERM"},
}

var stormMetrics = []metric{
	{key: "back", header: "last back after restart (s)", digits: 2},
	{key: "stopback", header: "last back after stop (s)", digits: 2},
	{key: "p50a", header: "A live p50 (ms)", digits: 1},
	{key: "p99a", header: "A live p99 (ms)", digits: 1},
	{key: "prea", header: "A p99 before (ms)", digits: 1},
	{key: "p50b", header: "B live p50 (ms)", digits: 1},
	{key: "p99b", header: "B live p99 (ms)", digits: 1},
	{key: "preb", header: "B p99 before (ms)", digits: 1},
	{key: "recovered", header: "recovered:true"},
	{key: "notrecovered", header: "recovered:false"},
	{key: "refused", header: "503s", sum: true},
	{key: "conns", header: "max connections per client"},
	{key: "bad", header: "gaps+dups+reorders", sum: true},
	{key: "closedB", header: "B members closed", sum: true},
}

func stormScenario() scenario {
	return scenario{
		id:    "storm",
		title: "Reconnect storm",
		about: func(cfg *config) string {
			return fmt.Sprintf("%d clients in %d history rooms on hub A rejoin with since after A stops and starts again on the same port, while a client publishes %d/s; clients back off from 100 ms (doubling, drawn between half and all) or as a 503's Retry-After says. With the room log, hub B has 100 more members and the publisher.", cfg.stormN, stormRooms, stormRate)
		},
		metrics: stormMetrics,
		optIn:   true,
		own:     runStorm,
	}
}

func runStorm(ctx context.Context, cfg *config, sc scenario, stdout, log io.Writer) error {
	res := make(map[string]*outcome)
	var rows []string
	for _, s := range stormSetups {
		rows = append(rows, s.label)
		o := &outcome{values: make(map[string][]float64)}
		res[s.label] = o
		for run := range cfg.runs {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r, err := runStormOnce(ctx, cfg, s)
			if err != nil {
				fmt.Fprintf(log, "bench: storm %s run %d: %v\n", s.label, run+1, err)
				o.errs = append(o.errs, fmt.Sprintf("run %d: %v", run+1, err))
				continue
			}
			o.add(run, r)
			fmt.Fprintf(log, "bench: storm %s run %d: %s\n", s.label, run+1, brief(sc, r))
		}
	}
	load0 := loadAverage()
	printTable(stdout, cfg, sc, rows, res, stormSetups[0].label)
	fmt.Fprintf(stdout, "Load average (1, 5, 15 min) at the end: %s.\n\n", load0)
	return nil
}

// stormClient is one member of the scenario.
type stormClient struct {
	addr  string
	room  string
	hubA  bool
	st    *stormRun
	conns atomic.Int64

	// Owned by its goroutine.
	epoch string
	seq   uint64 // of the last message
	next  int    // the publisher's number expected next in its room; -1 before the first
}

// stormRun is the state of one run, shared by its clients.
type stormRun struct {
	stopped   atomic.Int64 // unix ns of the stop; 0 before
	restarted atomic.Int64 // unix ns of the restart
	phase     atomic.Int32 // 1: recording latencies before the stop, 2: during the storm

	mu           sync.Mutex
	histA, histB histogram // during the storm
	preA, preB   histogram // before the stop
	back         int       // A's clients rejoined after the stop
	lastBack     int64
	recovered    int
	notRecovered int
	refused      int
	bad          int
	closedB      int
	badNotes     []string
	joined       chan struct{} // a client joined
}

type stormFrame struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	Seq       uint64 `json:"seq"`
	Epoch     string `json:"epoch"`
	Recovered *bool  `json:"recovered"`
	Error     string `json:"error"`
	Data      struct {
		N  int   `json:"n"`
		TS int64 `json:"ts"`
	} `json:"data"`
}

// run connects, joins and reads, reconnecting, until ctx ends.
func (c *stormClient) run(ctx context.Context) {
	c.next = -1
	backoff := 100 * time.Millisecond
	first := true
	for ctx.Err() == nil {
		conn, err := c.connect(ctx, &backoff)
		if err != nil {
			return
		}
		if !c.hubA && !first {
			c.st.mu.Lock()
			c.st.closedB++
			c.st.mu.Unlock()
		}
		c.read(ctx, conn, first)
		first = false
		conn.Close()
	}
}

// connect dials until it gets a connection, backing off.
func (c *stormClient) connect(ctx context.Context, backoff *time.Duration) (*websocket.Conn, error) {
	for {
		d := dialer
		d.Subprotocols = []string{"wshub.json"}
		conn, resp, err := d.DialContext(ctx, "ws://"+c.addr+"/ws", nil)
		if err == nil {
			*backoff = 100 * time.Millisecond
			c.conns.Add(1)
			return conn, nil
		}
		wait := *backoff
		wait = wait/2 + rand.N(wait/2+1)
		*backoff = min(2**backoff, 5*time.Second)
		if resp != nil {
			if resp.StatusCode == http.StatusServiceUnavailable {
				c.st.mu.Lock()
				c.st.refused++
				c.st.mu.Unlock()
			}
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				ra := time.Duration(s) * time.Second
				wait = max(wait, ra+rand.N(ra/4)) // as the Go client
			}
			resp.Body.Close()
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// read joins c's room on conn, with since after the first time, and
// reads until the connection ends.
func (c *stormClient) read(ctx context.Context, conn *websocket.Conn, first bool) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	join := fmt.Sprintf(`{"type":"join","room":%q,"id":"j"}`, c.room)
	if !first {
		join = fmt.Sprintf(`{"type":"join","room":%q,"id":"j","epoch":%q,"since":%d}`, c.room, c.epoch, c.seq)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte(join)); err != nil {
		return
	}
	// What comes before the ack (a replay, live messages) is checked once
	// the ack says whether the client recovered.
	acked := false
	var early []stormFrame
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			return
		}
		f, ok := parseStormMessage(b)
		if !ok {
			if err := json.Unmarshal(b, &f); err != nil {
				c.bad(fmt.Sprintf("undecodable %s", b))
				continue
			}
		}
		switch f.Type {
		case "ack":
			acked = true
			if first {
				c.epoch, c.seq = f.Epoch, f.Seq
			}
			if !c.joined(first, f.Recovered) {
				c.next = -1 // a new start: anything goes next
				c.epoch = f.Epoch
			}
			for _, e := range early {
				c.take(e, false)
			}
			early = nil
		case "error":
			c.bad("error frame: " + f.Error)
		case "message":
			if !acked {
				early = append(early, f)
				continue
			}
			c.take(f, true)
		}
	}
}

// take checks a room message, and records its latency if live.
func (c *stormClient) take(f stormFrame, live bool) {
	if f.Epoch != "" {
		c.epoch = f.Epoch
	}
	c.seq = f.Seq
	if c.next >= 0 && f.Data.N != c.next {
		c.bad(fmt.Sprintf("%s: got %d, want %d", c.room, f.Data.N, c.next))
	}
	c.next = f.Data.N + 1
	if phase := c.st.phase.Load(); live && phase > 0 {
		lat := (time.Now().UnixNano() - f.Data.TS) / 1000
		st := c.st
		st.mu.Lock()
		switch {
		case phase == 1 && c.hubA:
			st.preA.record(lat)
		case phase == 1:
			st.preB.record(lat)
		case c.hubA:
			st.histA.record(lat)
		default:
			st.histB.record(lat)
		}
		st.mu.Unlock()
	}
}

func (c *stormClient) bad(note string) {
	c.st.mu.Lock()
	defer c.st.mu.Unlock()
	c.st.bad++
	if len(c.st.badNotes) < 5 {
		c.st.badNotes = append(c.st.badNotes, note)
	}
}

// joined counts a join's ack, and returns whether the client recovered
// (the first join: whether it went on from nothing).
func (c *stormClient) joined(first bool, recovered *bool) bool {
	st := c.st
	st.mu.Lock()
	defer st.mu.Unlock()
	if first {
		st.joined <- struct{}{}
		return true
	}
	ok := recovered != nil && *recovered
	if ok {
		st.recovered++
	} else {
		st.notRecovered++
	}
	if c.hubA && st.stopped.Load() != 0 {
		st.back++
		st.lastBack = time.Now().UnixNano()
	}
	return ok
}

func runStormOnce(ctx context.Context, cfg *config, s stormSetup) (runResult, error) {
	var res runResult
	dir, err := os.MkdirTemp("", "wshub-storm-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	var natsURL string
	var children []*remote
	defer func() {
		for _, c := range children {
			c.cmd.Process.Kill()
			c.stop()
		}
	}()
	if s.log {
		ns, err := startRemote(natsChild, dir)
		if err != nil {
			return res, err
		}
		children = append(children, ns)
		natsURL = "nats://" + ns.addr
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	addrA := ln.Addr().String()
	ln.Close()
	spec := func(addr string) string {
		b, _ := json.Marshal(stormSpec{NATS: natsURL, Addr: addr})
		return string(b)
	}
	hubA, err := startRemote(stormHubChild, spec(addrA))
	if err != nil {
		return res, err
	}
	children = append(children, hubA)
	pubAddr := addrA
	var hubB *remote
	if s.log {
		if hubB, err = startRemote(stormHubChild, spec("127.0.0.1:0")); err != nil {
			return res, err
		}
		children = append(children, hubB)
		pubAddr = hubB.addr
	}

	st := &stormRun{joined: make(chan struct{}, 1024)}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	var clients []*stormClient
	add := func(addr string, i int, hubA bool) {
		c := &stormClient{addr: addr, room: fmt.Sprintf("storm%d", i%stormRooms), hubA: hubA, st: st}
		clients = append(clients, c)
		wg.Go(func() { c.run(cctx) })
	}
	total := cfg.stormN
	if s.log {
		total += 100
	}
	// At most 64 first joins in flight; every one within a minute.
	sem := make(chan struct{}, 64)
	setup, cancelSetup := context.WithTimeout(cctx, time.Minute)
	defer cancelSetup()
	wg.Go(func() {
		for range total {
			select {
			case <-st.joined:
				<-sem
			case <-setup.Done():
				return
			}
		}
	})
	take := func() error {
		select {
		case sem <- struct{}{}:
			return nil
		case <-setup.Done():
			return errors.New("the clients did not all join within a minute")
		}
	}
	for i := range cfg.stormN {
		if err := take(); err != nil {
			return res, err
		}
		add(addrA, i, true)
	}
	if s.log {
		for i := range 100 {
			if err := take(); err != nil {
				return res, err
			}
			add(hubB.addr, i, false)
		}
	}
	for range 64 { // every join acknowledged
		if err := take(); err != nil {
			return res, err
		}
	}

	// The publisher: a client of its own, reconnecting like the others.
	var pubDone sync.WaitGroup
	pubDone.Go(func() { stormPublish(cctx, pubAddr) })
	defer pubDone.Wait()
	defer cancel()

	time.Sleep(time.Second) // traffic before the stop
	st.phase.Store(1)
	label := strings.NewReplacer(" ", "", ",", "-").Replace(s.label)
	if cfg.profileDir != "" {
		if _, err := hubA.call("cpuprof " + filepath.Join(cfg.profileDir, "storm-"+label+"-before.cpu.pprof")); err != nil {
			return res, err
		}
	}
	time.Sleep(2 * time.Second)
	if cfg.profileDir != "" {
		if _, err := hubA.call("cpustop"); err != nil {
			return res, err
		}
	}
	st.phase.Store(2)
	st.stopped.Store(time.Now().UnixNano())
	if s.kill {
		hubA.cmd.Process.Kill()
	} else {
		hubA.cmd.Process.Signal(syscall.SIGTERM)
	}
	hubA.cmd.Wait()
	hubA2, err := startRemote(stormHubChild, spec(addrA))
	if err != nil {
		return res, err
	}
	children = append(children, hubA2)
	st.restarted.Store(time.Now().UnixNano())
	var profile string
	if cfg.profileDir != "" {
		profile = filepath.Join(cfg.profileDir, "storm-"+label+".cpu.pprof")
		if _, err := hubA2.call("cpuprof " + profile); err != nil {
			return res, err
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st.mu.Lock()
		back := st.back
		st.mu.Unlock()
		if back == cfg.stormN {
			break
		}
		if time.Now().After(deadline) {
			res.notes = append(res.notes, fmt.Sprintf("only %d of %d clients back after 60 s", back, cfg.stormN))
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.phase.Store(0)
	if profile != "" {
		if _, err := hubA2.call("cpustop"); err != nil {
			return res, err
		}
	}
	time.Sleep(500 * time.Millisecond) // the last deliveries, checked
	cancel()

	st.mu.Lock()
	defer st.mu.Unlock()
	maxConns := int64(0)
	for _, c := range clients {
		maxConns = max(maxConns, c.conns.Load())
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	res.values = map[string]float64{
		"back":         float64(st.lastBack-st.restarted.Load()) / 1e9,
		"stopback":     float64(st.lastBack-st.stopped.Load()) / 1e9,
		"p50a":         ms(st.histA.quantile(0.5)),
		"p99a":         ms(st.histA.quantile(0.99)),
		"p50b":         ms(st.histB.quantile(0.5)),
		"p99b":         ms(st.histB.quantile(0.99)),
		"prea":         ms(st.preA.quantile(0.99)),
		"preb":         ms(st.preB.quantile(0.99)),
		"recovered":    float64(st.recovered),
		"notrecovered": float64(st.notRecovered),
		"refused":      float64(st.refused),
		"conns":        float64(maxConns),
		"bad":          float64(st.bad),
		"closedB":      float64(st.closedB),
	}
	if !s.log {
		delete(res.values, "p50b")
		delete(res.values, "p99b")
		delete(res.values, "preb")
		delete(res.values, "closedB")
	}
	res.notes = append(res.notes, st.badNotes...)
	return res, nil
}

// stormPublish publishes stormRate messages a second to the rooms in
// turn, numbering each room's, from a client at addr that reconnects.
func stormPublish(ctx context.Context, addr string) {
	next := make([]int, stormRooms)
	tick := time.NewTicker(time.Second / stormRate)
	defer tick.Stop()
	backoff := 100 * time.Millisecond
	i := 0
	for ctx.Err() == nil {
		c := &stormClient{addr: addr, st: &stormRun{}}
		conn, err := c.connect(ctx, &backoff)
		if err != nil {
			return
		}
		for r := range stormRooms {
			if conn.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"join","room":"storm%d"}`, r)) != nil {
				break
			}
		}
		go func() { // what it is sent, and the end of the connection
			for {
				if _, _, err := conn.ReadMessage(); err != nil {
					return
				}
			}
		}()
		for ctx.Err() == nil {
			<-tick.C
			r := i % stormRooms
			msg := fmt.Sprintf(`{"type":"publish","room":"storm%d","id":"%d","data":{"n":%d,"ts":%d}}`, r, i, next[r], time.Now().UnixNano())
			if err := conn.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
				break // not published: the next connection publishes the same number
			}
			next[r]++
			i++
		}
		conn.Close()
	}
}

var (
	messagePrefix = []byte(`{"type":"message",`)
	seqKey        = []byte(`"seq":`)
	epochKey      = []byte(`"epoch":"`)
	nKey          = []byte(`"n":`)
	stormTSKey    = []byte(`"ts":`)
)

// parseStormMessage reads a room message of the scenario without
// encoding/json, which would cost the clients more CPU than the hub
// spends on them; ok is false for any other frame.
func parseStormMessage(b []byte) (f stormFrame, ok bool) {
	if !bytes.HasPrefix(b, messagePrefix) {
		return f, false
	}
	f.Type = "message"
	num := func(key []byte) (int64, bool) {
		i := bytes.Index(b, key)
		if i < 0 {
			return 0, false
		}
		j := i + len(key)
		k := j
		for k < len(b) && b[k] >= '0' && b[k] <= '9' {
			k++
		}
		v, err := strconv.ParseInt(string(b[j:k]), 10, 64)
		return v, err == nil
	}
	seq, ok1 := num(seqKey)
	n, ok2 := num(nKey)
	ts, ok3 := num(stormTSKey)
	if !ok1 || !ok2 || !ok3 {
		return f, false
	}
	f.Seq, f.Data.N, f.Data.TS = uint64(seq), int(n), ts
	if i := bytes.Index(b, epochKey); i >= 0 {
		rest := b[i+len(epochKey):]
		if j := bytes.IndexByte(rest, '"'); j >= 0 {
			f.Epoch = string(rest[:j])
		}
	}
	return f, true
}
