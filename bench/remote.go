package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// remote is the parent's handle on a server child process. One goroutine
// uses it at a time.
type remote struct {
	cmd  *exec.Cmd
	in   io.WriteCloser
	w    *bufio.Writer
	r    *bufio.Reader
	addr string

	stopOnce sync.Once
	exitErr  error // how the child ended; set by stop
}

// startRemote re-executes the bench binary as the child that args name
// (see runChild), the server of a contender for one argument, and waits
// for its address.
func startRemote(args ...string) (*remote, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	name := args[0]
	cmd := exec.Command(exe, append([]string{childFlag}, args...)...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	rm := &remote{cmd: cmd, in: in, w: bufio.NewWriter(in), r: bufio.NewReader(out)}
	line, err := rm.readLine(30 * time.Second)
	if err != nil {
		rm.stop()
		return nil, fmt.Errorf("server %s: %w", name, err)
	}
	addr, ok := strings.CutPrefix(line, "addr ")
	if !ok {
		rm.stop()
		return nil, fmt.Errorf("server %s said %q", name, line)
	}
	rm.addr = addr
	return rm, nil
}

// readLine reads one line of the child's output, waiting at most d.
func (rm *remote) readLine(d time.Duration) (string, error) {
	return rm.readLineCtx(context.Background(), d)
}

// readLineCtx is readLine that also gives up when ctx ends.
func (rm *remote) readLineCtx(ctx context.Context, d time.Duration) (string, error) {
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		s, err := rm.r.ReadString('\n')
		ch <- result{strings.TrimSpace(s), err}
	}()
	select {
	case res := <-ch:
		return res.s, res.err
	case <-time.After(d):
		// The reading goroutine ends when stop kills the child.
		return "", errors.New("no answer from the child process")
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// publish asks for n server-side publishes to room, on the command loop
// of the child for id < 0, else on the child's publisher id; it does not
// wait.
func (rm *remote) publish(room string, n, id int) {
	if id < 0 {
		fmt.Fprintf(rm.w, "p %s %d\n", room, n)
		return
	}
	fmt.Fprintf(rm.w, "p %s %d %d\n", room, n, id)
}

// flush sends the buffered publish commands.
func (rm *remote) flush() error { return rm.w.Flush() }

// call sends a command and returns its answer.
func (rm *remote) call(cmd string) (string, error) {
	rm.w.WriteString(cmd)
	rm.w.WriteByte('\n')
	if err := rm.w.Flush(); err != nil {
		return "", err
	}
	return rm.readLine(60 * time.Second)
}

func (rm *remote) stats(gc bool) (serverStats, error) {
	cmd := "stats"
	if gc {
		cmd = "gc"
	}
	var st serverStats
	line, err := rm.call(cmd)
	if err != nil {
		return st, err
	}
	err = json.Unmarshal([]byte(line), &st)
	return st, err
}

// cpu returns the CPU time, user + system in ns, that the child has used
// so far, which the parent reads in /proc/PID/stat at once (procCPU, to
// the clock tick): unlike stats, it does not wait for the commands queued
// before it, publishes that a child may take seconds to get through when
// its room is large (each waits for room in the members' queues, or for
// the command loop's turn among their writers). ok is false where there
// is no /proc.
func (rm *remote) cpu() (ns int64, ok bool) {
	ns = procCPU(rm.cmd.Process.Pid)
	return ns, ns > 0
}

// waitMembers polls the server until it counts want room memberships.
func (rm *remote) waitMembers(want int, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		st, err := rm.stats(false)
		if err != nil {
			return err
		}
		if st.Members == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server has %d of %d members", st.Members, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop ends the child: it exits when its stdin closes; it is killed if it
// has not after a few seconds. It returns an error unless the child
// exited with status 0 on its own; calling it again returns the same.
func (rm *remote) stop() error {
	rm.stopOnce.Do(func() {
		rm.in.Close()
		done := make(chan error, 1)
		go func() { done <- rm.cmd.Wait() }()
		select {
		case rm.exitErr = <-done:
		case <-time.After(5 * time.Second):
			rm.cmd.Process.Kill()
			<-done
			rm.exitErr = errors.New("killed: it did not exit within 5s of its stdin closing")
		}
	})
	return rm.exitErr
}
