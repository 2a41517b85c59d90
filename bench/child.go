package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"runtime/trace"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// childFlag is the hidden first argument that makes the bench binary the
// server child process of one contender.
const childFlag = "-serve-child"

// serverStats is what the child reports about itself.
type serverStats struct {
	CPUNanos   int64  `json:"cpu_ns"` // user + system CPU time of the process
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
	Members    int    `json:"members"`
	Kicked     uint64 `json:"kicked"`
	Errors     uint64 `json:"errors"`  // failed server-side publishes
	Writes     uint64 `json:"writes"`  // write system calls of the process (syscw of /proc/self/io)
	Mallocs    uint64 `json:"mallocs"` // heap objects allocated so far (runtime.MemStats)
}

// isChild reports whether args (os.Args) make this process a child.
func isChild(args []string) bool { return len(args) >= 3 && args[1] == childFlag }

// runChild runs the child that args (after childFlag) name: the NATS
// server of the cluster scenario (natsChild), one of its hubs
// (clusterHubChild), the server of the presence scenario
// (presenceHubChild), the server or a client process of the scale
// scenario (scaleHubChild, scaleClientsChild) or the server of a
// contender.
func runChild(args []string) error {
	raiseFileLimit()
	switch args[0] {
	case natsChild:
		if len(args) != 2 {
			return errors.New("usage: " + natsChild + " STORE-DIR")
		}
		return runNATS(args[1])
	case clusterHubChild:
		if len(args) != 2 {
			return errors.New("usage: " + clusterHubChild + " SPEC")
		}
		srv, err := newClusterHub(args[1])
		if err != nil {
			return err
		}
		return serveChild(srv)
	case stormHubChild:
		if len(args) != 2 {
			return errors.New("usage: " + stormHubChild + " SPEC")
		}
		return runStormHub(args[1])
	case scaleHubChild:
		if len(args) != 2 {
			return errors.New("usage: " + scaleHubChild + " bare|chat")
		}
		return runScaleHub(args[1])
	case scaleClientsChild:
		if len(args) != 1 {
			return errors.New("usage: " + scaleClientsChild)
		}
		return runScaleClients(os.Stdin, os.Stdout)
	case presenceHubChild:
		if len(args) != 2 {
			return errors.New("usage: " + presenceHubChild + " on|off")
		}
		srv, err := newPresenceHub(args[1])
		if err != nil {
			return err
		}
		return serveChild(srv)
	}
	if len(args) != 1 {
		return errors.New("usage: CONTENDER")
	}
	c, err := findContender(args[0])
	if err != nil {
		return err
	}
	srv, err := c.server()
	if err != nil {
		return err
	}
	return serveChild(srv)
}

// serveChild serves srv on a loopback port and obeys commands, one a
// line, on stdin; it writes the address and then one line per answered
// command on stdout. It returns when stdin ends or says "quit".
//
//	p ROOM N      publish N fresh payloads to ROOM, one after the other (no answer)
//	p ROOM N ID   the same on publisher ID's goroutine, which publishes
//	              what it is asked in order, concurrently with other IDs
//	              (a windowedServer's keeps several in flight)
//	stats         answer serverStats as JSON
//	gc            run the GC twice, then answer as stats
//	cpuprof FILE  start a CPU profile into FILE; answer "ok"
//	cpustop       stop it; answer "ok"
//	heapprof FILE write a heap profile after a GC; answer "ok"
//	trace FILE    start an execution trace into FILE; answer "ok"
//	tracestop     stop it; answer "ok"
func serveChild(srv server) error { return serveChildWith(srv, nil) }

// serveChildWith is serveChild with more commands, by name: each is
// called with the command's fields and answers through c.answer.
func serveChildWith(srv server, more map[string]func(c *childState, f []string) error) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	serveWS(srv, ln)
	// Exit without a graceful shutdown: the parent cuts its clients.
	return serveOnWith(srv, ln.Addr().String(), more)
}

// serveWS serves srv at /ws on ln, in the background.
func serveWS(srv server, ln net.Listener) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	return hs
}

// serveOn writes addr, then obeys the commands of serveChild for srv,
// which serves on addr.
func serveOn(srv server, addr string) error { return serveOnWith(srv, addr, nil) }

// serveOnWith is serveOn with the more commands of serveChildWith.
func serveOnWith(srv server, addr string, more map[string]func(c *childState, f []string) error) error {
	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "addr %s\n", addr)
	out.Flush()
	ch := &childState{srv: srv, out: out, more: more}
	return ch.serve(os.Stdin)
}

// childState is a child's side of the commands. srv is nil in the NATS
// child, which answers only the process-wide commands.
type childState struct {
	srv       server
	out       *bufio.Writer
	cpuFile   *os.File
	traceFile *os.File
	errors    atomic.Uint64
	pubs      map[int]chan publishJob // by publisher ID
	more      map[string]func(c *childState, f []string) error
}

// publishJob asks a publisher goroutine for n publishes to room.
type publishJob struct {
	room string
	n    int
}

// publisherQueue bounds the jobs queued for one publisher goroutine; the
// parent's window keeps far fewer outstanding.
const publisherQueue = 4096

func (c *childState) serve(in io.Reader) error {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if f[0] == "quit" {
			return nil
		}
		if err := c.do(f); err != nil {
			return fmt.Errorf("command %q: %w", sc.Text(), err)
		}
	}
	return sc.Err()
}

func (c *childState) do(f []string) error {
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	if cmd := c.more[f[0]]; cmd != nil {
		return cmd(c, f)
	}
	switch f[0] {
	case "p":
		if c.srv == nil {
			return errors.New("no server to publish with")
		}
		n, err := strconv.Atoi(arg(2))
		if err != nil {
			return err
		}
		if arg(3) == "" {
			c.publish(f[1], n)
			return nil
		}
		id, err := strconv.Atoi(arg(3))
		if err != nil {
			return err
		}
		q := c.pubs[id]
		if q == nil {
			if c.pubs == nil {
				c.pubs = make(map[int]chan publishJob)
			}
			q = make(chan publishJob, publisherQueue)
			c.pubs[id] = q
			// It ends with the process.
			go c.publisher(q)
		}
		q <- publishJob{f[1], n}
		return nil
	case "stats":
		return c.answerStats()
	case "gc":
		runtime.GC()
		runtime.GC()
		debug.FreeOSMemory()
		return c.answerStats()
	case "cpuprof":
		file, err := os.Create(arg(1))
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(file); err != nil {
			file.Close()
			return err
		}
		c.cpuFile = file
		return c.answer("ok")
	case "cpustop":
		pprof.StopCPUProfile()
		if c.cpuFile != nil {
			c.cpuFile.Close()
			c.cpuFile = nil
		}
		return c.answer("ok")
	case "trace":
		file, err := os.Create(arg(1))
		if err != nil {
			return err
		}
		if err := trace.Start(file); err != nil {
			file.Close()
			return err
		}
		c.traceFile = file
		return c.answer("ok")
	case "tracestop":
		trace.Stop()
		if c.traceFile != nil {
			c.traceFile.Close()
			c.traceFile = nil
		}
		return c.answer("ok")
	case "heapprof":
		runtime.GC()
		file, err := os.Create(arg(1))
		if err != nil {
			return err
		}
		err = errors.Join(pprof.Lookup("heap").WriteTo(file, 0), file.Close())
		if err != nil {
			return err
		}
		return c.answer("ok")
	}
	return errors.New("unknown command")
}

// publish makes n server-side publishes of fresh payloads to room.
func (c *childState) publish(room string, n int) {
	for range n {
		if err := c.srv.publish(room, newPayload()); err != nil {
			c.errors.Add(1)
		}
	}
}

// publisher publishes the jobs of q in order. With a windowedServer whose
// window is above 1, it keeps at most that many publishes in flight,
// calling their waits in order, and calls every wait before it waits for
// another job (a wait is what delivers to the hub's own members).
func (c *childState) publisher(q <-chan publishJob) {
	ws, ok := c.srv.(windowedServer)
	if !ok || ws.publishWindow() <= 1 {
		for j := range q {
			c.publish(j.room, j.n)
		}
		return
	}
	window := ws.publishWindow()
	var waits []func() error // in flight, oldest first
	settle := func() {
		if err := waits[0](); err != nil {
			c.errors.Add(1)
		}
		waits[0] = nil
		waits = waits[1:]
	}
	for {
		var j publishJob
		if len(waits) == 0 {
			j = <-q
		} else {
			select {
			case j = <-q:
			default:
				settle()
				continue
			}
		}
		for range j.n {
			if len(waits) >= window {
				settle()
			}
			waits = append(waits, ws.startPublish(j.room, newPayload()))
		}
	}
}

func (c *childState) answer(s string) error {
	c.out.WriteString(s)
	c.out.WriteByte('\n')
	return c.out.Flush()
}

func (c *childState) answerStats() error {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	st := serverStats{
		CPUNanos:   cpuTime(),
		HeapInuse:  ms.HeapInuse,
		StackInuse: ms.StackInuse,
		RSS:        rss(),
		Goroutines: runtime.NumGoroutine(),
		Errors:     c.errors.Load(),
		Writes:     writeCalls(),
		Mallocs:    ms.Mallocs,
	}
	if c.srv != nil {
		st.Members, st.Kicked = c.srv.members(), c.srv.kicked()
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return c.answer(string(b))
}

func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// writeCalls reads the count of write system calls of the process from
// /proc; 0 where there is none.
func writeCalls() uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "syscw:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// rss reads the resident set size from /proc; 0 where there is none.
func rss() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// raiseFileLimit raises the soft limit of open files to the hard limit:
// the idle scenario holds 10,000 connections in each process.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}
