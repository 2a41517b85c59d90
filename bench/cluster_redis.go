package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The Redis rows of the cluster scenario run their hubs on redisengine
// against a redis-server child of the bench: not the bench binary, the
// redis-server found in PATH (or -redis-server), started for each run of
// a setup on a free 127.0.0.1 port, with no persistence, its files in a
// temporary directory removed afterwards. Without the binary the Redis
// rows are not run and say why; the other rows run as before.

// redisBin is the default of -redis-server.
const redisBin = "redis-server"

// How long the bench waits for redis-server to answer, and for it to exit
// once told to; how many ports it tries.
const (
	redisReady    = 10 * time.Second
	redisStopWait = 5 * time.Second
	redisAttempts = 3
)

// redisServer is a redis-server child process of the cluster scenario.
type redisServer struct {
	cmd  *exec.Cmd
	dir  string // its working directory, removed by stop
	addr string // 127.0.0.1:PORT
	out  *tail  // its output, for errors

	exited  chan struct{} // closed once cmd.Wait returned
	waitErr error         // cmd.Wait's; read after exited is closed

	stopOnce sync.Once
	stopErr  error
}

// lookRedis returns the path of the redis-server binary bin, or an error
// that says the Redis rows cannot run.
func lookRedis(bin string) (string, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("not run: %s not found (install Redis 7, e.g. Debian's redis-server package, or name the binary with -redis-server)", bin)
	}
	return path, nil
}

// errRedisExited says that redis-server exited as it started: the port
// it was given may have been taken meanwhile.
var errRedisExited = errors.New("redis-server exited at start")

// startRedis starts the redis-server at path on a free loopback port and
// waits until it answers PING. It tries another port if the server
// exited at start (the port it picked was taken meanwhile).
func startRedis(path string) (*redisServer, error) {
	var err error
	for i := range redisAttempts {
		var rs *redisServer
		if rs, err = startRedisOnce(path); err == nil {
			return rs, nil
		}
		if !errors.Is(err, errRedisExited) {
			return nil, err
		}
		if i > 0 {
			err = fmt.Errorf("%w (attempt %d of %d)", err, i+1, redisAttempts)
		}
	}
	return nil, err
}

func startRedisOnce(path string) (*redisServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir, err := os.MkdirTemp("", "wshub-bench-redis-")
	if err != nil {
		return nil, err
	}
	rs := &redisServer{dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), out: &tail{max: 4096}, exited: make(chan struct{})}
	rs.cmd = exec.Command(path,
		"--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--save", "", "--appendonly", "no", "--protected-mode", "no",
		"--daemonize", "no", "--loglevel", "warning", "--logfile", "")
	rs.cmd.Stdout, rs.cmd.Stderr = rs.out, rs.out
	dieWithParent(rs.cmd)
	if err := rs.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("redis-server: %w", err)
	}
	go func() {
		rs.waitErr = rs.cmd.Wait()
		close(rs.exited)
	}()
	deadline := time.Now().Add(redisReady)
	for !redisPing(rs.addr) {
		select {
		case <-rs.exited:
			rs.stop()
			return nil, fmt.Errorf("%w, on %s (%v): %s", errRedisExited, rs.addr, rs.waitErr, rs.out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			rs.stop()
			return nil, fmt.Errorf("redis-server on %s not ready after %v: %s", rs.addr, redisReady, rs.out)
		}
	}
	return rs, nil
}

// redisPing reports whether the server at addr answers PING (and has
// loaded its data).
func redisPing(addr string) bool {
	s, err := redisDo(addr, "PING", time.Second)
	return err == nil && s == "PONG"
}

// redisDo sends the inline command cmd (words without quotes) to the
// server at addr on a connection of its own, within d, and returns the
// reply, a simple or a bulk string.
func redisDo(addr, cmd string, d time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 || n > 1<<20 {
			return "", fmt.Errorf("redis %s: reply %q", cmd, line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return "", err
		}
		return string(b[:n]), nil
	}
	return "", fmt.Errorf("redis %s: reply %q", cmd, line)
}

// url is the server's URL for redisengine.Connect.
func (rs *redisServer) url() string { return "redis://" + rs.addr }

// cpu returns the CPU time the server used so far, user and system, in
// ns, from /proc/PID/stat (to 10 ms; 0 where there is none).
func (rs *redisServer) cpu() int64 {
	return procCPU(rs.cmd.Process.Pid)
}

// clockTicks is USER_HZ, the unit of the times of /proc/PID/stat: 100 on
// every Linux the bench runs on.
const clockTicks = 100

// procCPU returns the user and system CPU time of process pid in ns,
// from /proc/PID/stat; 0 where there is none.
func procCPU(pid int) int64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// The command name, in parentheses, may hold spaces: the fields
	// counted are after it, from the state (field 3); utime and stime are
	// fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return (utime + stime) * (int64(time.Second) / clockTicks)
}

// stop tells the server to exit (SIGTERM: with nothing to save it exits
// at once), kills it if it has not within a few seconds, and removes its
// directory. It returns an error unless the server exited with status 0;
// calling it again returns the same.
func (rs *redisServer) stop() error {
	rs.stopOnce.Do(func() {
		var err error
		select {
		case <-rs.exited:
		default:
			rs.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-rs.exited:
			case <-time.After(redisStopWait):
				rs.cmd.Process.Kill()
				<-rs.exited
				err = fmt.Errorf("killed: it did not exit within %v of SIGTERM", redisStopWait)
			}
		}
		if err == nil && rs.waitErr != nil {
			err = fmt.Errorf("%w: %s", rs.waitErr, rs.out)
		}
		rs.stopErr = errors.Join(err, os.RemoveAll(rs.dir))
	})
	return rs.stopErr
}

// tail keeps the last max bytes written to it, for a child's output.
type tail struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.b))
	if s == "" {
		return "no output"
	}
	return strconv.Quote(s)
}

// redisVersion returns the version the redis-server at path reports
// ("7.0.15"), or "unknown version".
func redisVersion(path string) string {
	cmd := exec.Command(path, "--version")
	var out tail
	out.max = 1024
	cmd.Stdout = &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		return "unknown version"
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	for f := range strings.FieldsSeq(string(out.b)) {
		if v, ok := strings.CutPrefix(f, "v="); ok {
			return v
		}
	}
	return "unknown version"
}

// redisAbout describes the Redis child for the scenario's text.
func redisAbout(cfg *config) string {
	v := cfg.redisVersion
	if v == "" {
		v = "not run"
	}
	return fmt.Sprintf("Redis (%s %s, no persistence, files in a temporary directory; redisengine: a room without history on pub/sub, one with history on a Stream written by a Lua script)", filepath.Base(cfg.redisBin), v)
}
