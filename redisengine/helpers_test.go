package redisengine_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// rueidis.NewClient, failing to reach a server, leaves behind a
	// goroutine of its cluster probe that sleeps a moment and ends: not
	// the engine's, and not kept.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1"))
}

// redisServer is a redis-server process of a test, on 127.0.0.1.
type redisServer struct {
	t    testing.TB
	port int
	dir  string
	aof  bool
	cmd  *exec.Cmd
}

// startRedis starts redis-server on a free loopback port with its files
// in a temporary directory, with the append-only file on or off and no
// snapshots; the test's cleanup kills it. Without redis-server the test
// skips, unless WSHUB_REQUIRE_REDIS=1 (as .ci/run sets), when it fails.
func startRedis(t testing.TB, aof bool) *redisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("WSHUB_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-server not found, and WSHUB_REQUIRE_REDIS=1")
		}
		t.Skip("redis-server not found: install Debian's redis-server package to run the Redis tests")
	}
	s := &redisServer{t: t, port: freePort(t), dir: t.TempDir(), aof: aof}
	s.start()
	t.Cleanup(s.kill)
	return s
}

// freePort returns a loopback port that nothing listened on a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }
func (s *redisServer) url() string  { return "redis://" + s.addr() }

// start runs the server on its port and waits until it answers.
func (s *redisServer) start() {
	s.t.Helper()
	aof := "no"
	if s.aof {
		aof = "yes"
	}
	s.cmd = exec.Command("redis-server",
		"--bind", "127.0.0.1", "--port", strconv.Itoa(s.port), "--dir", s.dir,
		"--save", "", "--appendonly", aof, "--protected-mode", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"))
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("redis-server: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s.ping() {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on port %d not ready after 20s:\n%s", s.port, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ping reports whether the server answers PING (and has loaded its data).
func (s *redisServer) ping() bool {
	c, err := net.DialTimeout("tcp", s.addr(), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// kill ends the server at once, as a crash does (SIGKILL).
func (s *redisServer) kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// do runs one command on the server, for what a test does behind the
// hubs' backs (FLUSHALL, DEBUG SLEEP), and returns its first reply line.
func (s *redisServer) do(args ...string) string {
	s.t.Helper()
	c, err := net.DialTimeout("tcp", s.addr(), 5*time.Second)
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	defer c.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write([]byte(b.String())); err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	return strings.TrimSpace(line)
}

// subscribers returns how many clients of the server subscribe to
// channel ch (PUBSUB NUMSUB).
func (s *redisServer) subscribers(ch string) int {
	s.t.Helper()
	c, err := net.DialTimeout("tcp", s.addr(), 5*time.Second)
	if err != nil {
		s.t.Fatalf("redis: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	fmt.Fprintf(c, "*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n$%d\r\n%s\r\n", len(ch), ch)
	r := bufio.NewReader(c)
	var last string
	for range 4 { // *2, $len, the channel, :count
		if last, err = r.ReadString('\n'); err != nil {
			s.t.Fatalf("redis: %v", err)
		}
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(last, ":")))
	if err != nil {
		s.t.Fatalf("PUBSUB NUMSUB %s: %q", ch, last)
	}
	return n
}

// newNodes starts n hubs on their own test servers, each with an engine
// on url, with the history policies of history (nil: none), every join
// allowed; tune, if any, changes the hubs' Options.
func newNodes(t testing.TB, url string, n int, opts *redisengine.Options, history func(string) wshub.HistoryPolicy, tune ...func(*wshub.Options)) []*et.Node {
	t.Helper()
	nodes := make([]*et.Node, n)
	for i := range nodes {
		e, err := redisengine.Connect(url, opts)
		if err != nil {
			t.Fatalf("Connect: %v", err)
		}
		hopts := &wshub.Options{Engine: e, AuthorizeJoin: et.AllowJoins, Rooms: et.RoomsOf(history)}
		for _, f := range tune {
			f(hopts)
		}
		nodes[i] = et.Serve(t, wshub.New(nil, hopts))
		nodes[i].Engine = e
	}
	return nodes
}

// engine returns the engine of a node of newNodes.
func engine(n *et.Node) *redisengine.Engine { return n.Engine.(*redisengine.Engine) }
