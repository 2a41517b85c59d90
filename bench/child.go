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
	"strconv"
	"strings"
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
	Errors     uint64 `json:"errors"` // failed server-side publishes
}

// runChild serves contender name on a loopback port and obeys commands,
// one a line, on stdin; it writes the address and then one line per
// answered command on stdout. It returns when stdin ends or says "quit".
//
//	p ROOM N      publish N fresh payloads to ROOM (no answer)
//	stats         answer serverStats as JSON
//	gc            run the GC twice, then answer as stats
//	cpuprof FILE  start a CPU profile into FILE; answer "ok"
//	cpustop       stop it; answer "ok"
//	heapprof FILE write a heap profile after a GC; answer "ok"
func runChild(name string) error {
	raiseFileLimit()
	c, err := findContender(name)
	if err != nil {
		return err
	}
	srv, err := c.server()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)

	out := bufio.NewWriter(os.Stdout)
	fmt.Fprintf(out, "addr %s\n", ln.Addr())
	out.Flush()

	ch := &childState{srv: srv, out: out}
	err = ch.serve(os.Stdin)
	// Exit without a graceful shutdown: the parent cuts its clients.
	return err
}

type childState struct {
	srv     server
	out     *bufio.Writer
	cpuFile *os.File
	errors  uint64
}

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
	switch f[0] {
	case "p":
		n, err := strconv.Atoi(arg(2))
		if err != nil {
			return err
		}
		for range n {
			if err := c.srv.publish(f[1], newPayload()); err != nil {
				c.errors++
			}
		}
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
		Members:    c.srv.members(),
		Kicked:     c.srv.kicked(),
		Errors:     c.errors,
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
