package enginetest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// NeedRedis skips the test when one of the commands (redis-server, by
// default) is not on PATH, unless WSHUB_REQUIRE_REDIS=1 (as .ci/run
// sets), when it fails.
func NeedRedis(t testing.TB, commands ...string) {
	t.Helper()
	if len(commands) == 0 {
		commands = []string{"redis-server"}
	}
	for _, c := range commands {
		if _, err := exec.LookPath(c); err != nil {
			if os.Getenv("WSHUB_REQUIRE_REDIS") == "1" {
				t.Fatalf("%s not found, and WSHUB_REQUIRE_REDIS=1", c)
			}
			t.Skipf("%s not found: install Debian's redis-server package to run the Redis tests", c)
		}
	}
}

// RedisServer is a redis-server process of a test, on 127.0.0.1.
type RedisServer struct {
	t      testing.TB
	Port   int
	dir    string
	args   []string
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd ended
}

// StartRedis starts redis-server (see NeedRedis) on a free loopback port
// with its files in a temporary directory, no snapshots, and the extra
// arguments args (such as "--appendonly", "yes"), and waits until it
// answers; the test's cleanup kills it. When it exits before answering
// (another process took the port meanwhile), another port is tried, three
// in all.
func StartRedis(t testing.TB, args ...string) *RedisServer {
	t.Helper()
	NeedRedis(t)
	s := &RedisServer{t: t, dir: t.TempDir(), args: args}
	t.Cleanup(s.Kill)
	for attempt := 1; ; attempt++ {
		s.Port = FreePort(t)
		err := s.run()
		if err == nil {
			return s
		}
		if !errors.Is(err, errExited) || attempt == 3 {
			t.Fatal(err)
		}
		t.Log(err)
	}
}

var errExited = errors.New("redis-server exited")

// Start starts the server again, after Kill, on its port with its files.
func (s *RedisServer) Start() {
	s.t.Helper()
	if err := s.run(); err != nil {
		s.t.Fatal(err)
	}
}

// run starts the server and waits, at most 20 seconds, until it answers
// PING (and has loaded its data).
func (s *RedisServer) run() error {
	log := filepath.Join(s.dir, "redis.log")
	s.cmd = exec.Command("redis-server", append([]string{
		"--bind", "127.0.0.1", "--port", strconv.Itoa(s.Port), "--dir", s.dir,
		"--save", "", "--protected-mode", "no", "--logfile", log,
	}, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	s.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		cmd.Wait()
		close(exited)
	}(s.cmd, s.exited)
	deadline := time.Now().Add(20 * time.Second)
	for !s.Ping() {
		out, _ := os.ReadFile(log)
		select {
		case <-s.exited:
			s.cmd = nil
			return fmt.Errorf("%w on port %d:\n%s", errExited, s.Port, out)
		default:
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("redis-server on port %d not ready after 20s:\n%s", s.Port, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Kill ends the server at once, as a crash does (SIGKILL).
func (s *RedisServer) Kill() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		<-s.exited
		s.cmd = nil
	}
}

// Addr returns the server's address, host:port.
func (s *RedisServer) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// URL returns the server's redis:// URL.
func (s *RedisServer) URL() string { return "redis://" + s.Addr() }

// Ping reports whether the server answers PING.
func (s *RedisServer) Ping() bool {
	lines, err := s.command(1, time.Second, "PING")
	return err == nil && lines[0] == "+PONG"
}

// Do runs one command on the server, for what a test does behind the
// hubs' backs (SAVE, FLUSHALL), and returns its reply's first line.
func (s *RedisServer) Do(args ...string) string {
	s.t.Helper()
	lines, err := s.command(1, time.Minute, args...)
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	return lines[0]
}

// Subscribers returns how many clients of the server subscribe to
// channel ch (PUBSUB NUMSUB).
func (s *RedisServer) Subscribers(ch string) int {
	s.t.Helper()
	lines, err := s.command(4, time.Minute, "PUBSUB", "NUMSUB", ch) // *2, $len, the channel, :count
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(lines[3], ":"))
	if err != nil {
		s.t.Fatalf("PUBSUB NUMSUB %s: %q", ch, lines[3])
	}
	return n
}

// command sends a command on a connection of its own and returns the
// first n lines of the reply, within d.
func (s *RedisServer) command(n int, d time.Duration, args ...string) ([]string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), d)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	lines := make([]string, n)
	for i := range lines {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		lines[i] = strings.TrimSpace(line)
	}
	return lines, nil
}

// FreePort returns a loopback port that nothing listened on a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
