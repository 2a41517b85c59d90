package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/nats-io/nats-server/v2/server"
	et "github.com/wshub/wshub/internal/enginetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(mainRun{m})
}

// mainRun runs the tests, then removes the binaries they built.
type mainRun struct{ m *testing.M }

func (r mainRun) Run() int {
	defer bins.remove()
	return r.m.Run()
}

// timeout bounds each test; generous, since failing is the only way to
// reach it, and the machine may be busy.
const timeout = time.Minute

// cluster is run in the background: two nodes, and an embedded NATS
// unless they use Redis.
type cluster struct {
	urls    []string // the nodes' pages
	stop    context.CancelFunc
	done    chan error // run's result
	stopped bool       // done was received
}

// startCluster runs two nodes on loopback ports, as cfg says (its Addrs
// are set here; with neither RedisURL nor NATSURL, an embedded NATS), and
// waits until they are ready.
func startCluster(ctx context.Context, t *testing.T, cfg config) *cluster {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	c := &cluster{stop: stop, done: make(chan error, 1)}
	urlc := make(chan []string, 1)
	cfg.Addrs = []string{"127.0.0.1:0", "127.0.0.1:0"}
	go func() {
		c.done <- run(runCtx, cfg, slog.New(slog.DiscardHandler), func(urls []string) { urlc <- urls })
	}()
	// A test that failed before its shutdown still stops the nodes, after
	// its clients' cleanups closed them, so that no goroutine is left.
	t.Cleanup(func() {
		if !c.stopped {
			c.stop()
			<-c.done
		}
	})
	select {
	case c.urls = <-urlc:
	case err := <-c.done:
		c.stopped = true
		stop()
		t.Fatalf("run: %v", err)
	case <-ctx.Done():
		stop()
		t.Fatal("nodes not ready")
	}
	return c
}

// shutdown stops the nodes, as Ctrl-C does, and checks that they stopped
// cleanly. Clients that answer the close handshake, as browsers do, let
// the hubs shut down at once: conns read until closed meanwhile.
func (c *cluster) shutdown(ctx context.Context, t *testing.T, conns ...*websocket.Conn) {
	t.Helper()
	var readers sync.WaitGroup
	for _, conn := range conns {
		readers.Go(func() {
			for {
				if _, _, err := conn.Read(ctx); err != nil {
					return
				}
			}
		})
	}
	c.stop()
	select {
	case err := <-c.done:
		c.stopped = true
		if err != nil {
			t.Errorf("run after stop: %v", err)
		}
	case <-ctx.Done():
		t.Error("nodes did not stop")
	}
	readers.Wait()
}

// A message sent by a client of node A reaches a client of node B.
func TestMessageCrossesNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := startCluster(ctx, t, config{NATSPort: server.RANDOM_PORT})
	urls := c.urls
	checkPage(t, urls[1], "Node B", "through NATS")

	a, b := dial(ctx, t, urls[0]), dial(ctx, t, urls[1])
	join(ctx, t, a)
	join(ctx, t, b)
	write(ctx, t, a, `{"type":"publish","room":"lobby","data":{"node":"A","name":"ann","text":"hello from A"}}`)
	m := read(ctx, t, b)
	if m.Type != "message" || m.Room != "lobby" || m.Data.Text != "hello from A" || m.Data.Node != "A" {
		t.Fatalf("node B's client got %+v, want A's message", m)
	}

	if m.Seq != 0 {
		t.Errorf("a message with a seq, in a room without history: %+v", m)
	}
	c.shutdown(ctx, t, a, b)
}

// With -log, rooms go through the JetStream room log: while clients of
// both nodes publish at once, every client, on either node, gets all their
// messages in one order, with increasing seqs.
func TestLogOneOrder(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where JetStream's store goes
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := startCluster(ctx, t, config{Log: true, NATSPort: server.RANDOM_PORT})
	clients, _ := oneOrder(ctx, t, c)
	c.shutdown(ctx, t, clients...)
	if left, err := os.ReadDir(tmp); err != nil || len(left) > 0 {
		t.Errorf("JetStream's store not removed: %v %v", left, err)
	}
}

// With -redis, rooms go through one Redis Stream each: while clients of
// both nodes publish at once, every client, on either node, gets all their
// messages in one order, with increasing seqs. A page opened later, on
// either node, joins the room, which has messages by then, and gets the
// next one.
func TestRedisOneOrder(t *testing.T) {
	redisURL := et.StartRedis(t).URL()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := startCluster(ctx, t, config{RedisURL: redisURL})
	checkPage(t, c.urls[1], "Node B", "through Redis")
	clients, order := oneOrder(ctx, t, c)
	last, _, _ := strings.Cut(order[len(order)-1], " ")
	lastSeq, err := strconv.ParseUint(last, 10, 64)
	if err != nil {
		t.Fatalf("last message %q: %v", order[len(order)-1], err)
	}

	// The page joins without asking for history.
	lateA, lateB := dial(ctx, t, c.urls[0]), dial(ctx, t, c.urls[1])
	join(ctx, t, lateA)
	join(ctx, t, lateB)
	clients = append(clients, lateA, lateB)
	write(ctx, t, clients[0], `{"type":"publish","room":"lobby","data":{"node":"A","text":"late"}}`)
	for i, conn := range clients {
		m := read(ctx, t, conn)
		if m.Type != "message" || m.Data.Text != "late" || m.Seq <= lastSeq {
			t.Fatalf("client %d got %+v, want the message \"late\" with a seq above %d", i, m, lastSeq)
		}
	}
	c.shutdown(ctx, t, clients...)
}

// oneOrder has a publisher and a reader on each node of c join "lobby",
// the publishers publish at once, and checks that every client gets all
// the messages in one order, with increasing seqs. It returns the clients
// and the order, each message as "<seq> <text>".
func oneOrder(ctx context.Context, t *testing.T, c *cluster) ([]*websocket.Conn, []string) {
	t.Helper()
	const each = 50 // messages per publisher
	pubA, readA := dial(ctx, t, c.urls[0]), dial(ctx, t, c.urls[0])
	pubB, readB := dial(ctx, t, c.urls[1]), dial(ctx, t, c.urls[1])
	clients := []*websocket.Conn{pubA, readA, pubB, readB}
	for _, conn := range clients {
		join(ctx, t, conn)
	}

	// Every client reads, the publishers too, as a page does.
	got := make([][]string, len(clients))
	errs := make([]error, len(clients)+2)
	var wg sync.WaitGroup
	for i, conn := range clients {
		wg.Go(func() { got[i], errs[i] = readMessages(ctx, conn, 2*each) })
	}
	for i, p := range []struct {
		conn *websocket.Conn
		node string
	}{{pubA, "A"}, {pubB, "B"}} {
		wg.Go(func() {
			for k := range each {
				msg := fmt.Sprintf(`{"type":"publish","room":"lobby","data":{"node":%q,"text":"%s%d"}}`, p.node, p.node, k)
				if err := p.conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
					errs[len(clients)+i] = fmt.Errorf("publisher %s: %w", p.node, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	names := []string{"A's publisher", "A's reader", "B's publisher", "B's reader"}
	for i := range clients {
		if !slices.Equal(got[i], got[0]) {
			t.Errorf("%s and %s got different orders:\n%q\n%q", names[0], names[i], got[0], got[i])
		}
	}
	// Each publisher's messages are in the order it sent them, and the two
	// are interleaved in some order: the log's.
	for _, node := range []string{"A", "B"} {
		var texts []string
		for _, m := range got[0] {
			if _, text, _ := strings.Cut(m, " "); strings.HasPrefix(text, node) {
				texts = append(texts, text)
			}
		}
		for k, text := range texts {
			if want := fmt.Sprintf("%s%d", node, k); text != want {
				t.Fatalf("%s's messages out of order: %q", node, texts)
			}
		}
	}
	return clients, got[0]
}

// readMessages reads n room messages, each as "<seq> <text>", and checks
// that their seqs increase.
func readMessages(ctx context.Context, c *websocket.Conn, n int) ([]string, error) {
	var out []string
	var last uint64
	for len(out) < n {
		_, b, err := c.Read(ctx)
		if err != nil {
			return out, fmt.Errorf("after %d messages: %w", len(out), err)
		}
		var m chatMsg
		if err := json.Unmarshal(b, &m); err != nil {
			return out, fmt.Errorf("decode %s: %w", b, err)
		}
		if m.Type != "message" {
			return out, fmt.Errorf("got %s, want a message", b)
		}
		if m.Seq <= last {
			return out, fmt.Errorf("seq %d after %d: %s", m.Seq, last, b)
		}
		last = m.Seq
		out = append(out, fmt.Sprintf("%d %s", m.Seq, m.Data.Text))
	}
	return out, nil
}

type chatMsg struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Room string `json:"room"`
	Seq  uint64 `json:"seq"`
	Err  string `json:"error"`
	Data struct {
		Node, Text string
	} `json:"data"`
}

func dial(ctx context.Context, t *testing.T, pageURL string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(pageURL, "http")+"ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

func write(ctx context.Context, t *testing.T, c *websocket.Conn, s string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(s)); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func read(ctx context.Context, t *testing.T, c *websocket.Conn) chatMsg {
	t.Helper()
	_, b, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m chatMsg
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return m
}

// join joins "lobby" as the page does and waits for the ack.
func join(ctx context.Context, t *testing.T, c *websocket.Conn) {
	t.Helper()
	write(ctx, t, c, `{"type":"join","room":"lobby","id":"join"}`)
	if m := read(ctx, t, c); m.Type != "ack" || m.ID != "join" {
		t.Fatalf("join: got %+v", m)
	}
}

// checkPage gets the page at url and checks that it has each of want.
func checkPage(t *testing.T, url string, want ...string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("page: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, w := range want {
		if !strings.Contains(string(body), w) {
			t.Fatalf("the page at %s does not say %q:\n%s", url, w, body)
		}
	}
}

// bins are the binaries of the cluster and of the conformance suite, built
// once for the tests that run them as processes; TestMain removes them.
var bins binaries

type binaries struct {
	once                 sync.Once
	dir                  string
	cluster, conformance string // paths
	err                  error
}

// build builds the binaries, once, with -race if the tests have it, and
// returns their paths.
func (b *binaries) build(t *testing.T) (cluster, conformance string) {
	t.Helper()
	b.once.Do(func() {
		b.dir, b.err = os.MkdirTemp("", "wshub-cluster-test-")
		if b.err != nil {
			return
		}
		args := []string{"build"}
		if raceEnabled() {
			args = append(args, "-race")
		}
		b.cluster, b.conformance = filepath.Join(b.dir, "cluster"), filepath.Join(b.dir, "conformance")
		for _, c := range []struct{ out, pkg string }{
			{b.cluster, "."}, // this package, examples/cluster
			{b.conformance, "github.com/wshub/wshub/conformance"},
		} {
			// go test puts its own go first on PATH.
			if out, err := exec.Command("go", append(args, "-o", c.out, c.pkg)...).CombinedOutput(); err != nil {
				b.err = fmt.Errorf("go build %s: %v\n%s", c.pkg, err, out)
				return
			}
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.cluster, b.conformance
}

func (b *binaries) remove() {
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// raceEnabled tells whether the tests were built with -race.
func raceEnabled() bool {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range info.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// The conformance suite (the core's conformance command) passes against
// node A of the cluster on Redis, run as its own process, as with go run
// ./examples/cluster -redis URL.
func TestConformanceRedis(t *testing.T) {
	redisURL := et.StartRedis(t).URL()
	runConformance(t, nil, "-redis", redisURL)
}

// And on NATS, with -log: the same checks pass.
func TestConformanceNATSLog(t *testing.T) {
	tmp := t.TempDir()
	runConformance(t, []string{"TMPDIR=" + tmp}, "-log") // where JetStream's store goes
	if left, err := os.ReadDir(tmp); err != nil || len(left) > 0 {
		t.Errorf("JetStream's store not removed: %v %v", left, err)
	}
}

// noPresence are the checks that skip by themselves against the cluster:
// its rooms have no presence (the suite tells by their joins), in either
// mode, and its hubs take no tokens. Every other check must pass.
var noPresence = regexp.MustCompile(`^(presence-|auth-(required-4003|refused-4003|first-frame|refresh)$)`)

// runConformance runs the cluster as a process, with its nodes on loopback
// ports, extra args and extra environment variables env, and the
// conformance suite against node A, as .ci/run does against
// examples/chat. No check is left out with -skip: every client gets an ID
// of its own (the cluster names none from the URL, so no -id-param), and
// the shutdown check sends the process SIGTERM, as Ctrl-C does, which must
// close node A's clients with 1001 and stop the process cleanly.
func runConformance(t *testing.T, env []string, args ...string) {
	clusterBin, conformanceBin := bins.build(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	logPath := filepath.Join(t.TempDir(), "cluster.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	clusterLog := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	cmd := exec.CommandContext(ctx, clusterBin, append([]string{"-a", "127.0.0.1:0", "-b", "127.0.0.1:0"}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-exited
		}
	}()

	// The node's address, once it is ready.
	ready := regexp.MustCompile(`msg="node ready: open it in a browser" node=A url=http://(\S+)/`)
	var addr string
	for {
		if m := ready.FindStringSubmatch(clusterLog()); m != nil {
			addr = m[1]
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("the cluster exited before it was ready: %v; its log:\n%s", err, clusterLog())
		case <-ctx.Done():
			t.Fatalf("the cluster is not ready; its log:\n%s", clusterLog())
		case <-time.After(20 * time.Millisecond):
		}
	}

	conf := exec.CommandContext(ctx, conformanceBin,
		"-url", "ws://"+addr+"/ws",
		"-timeout", "30s",
		"-shutdown-cmd", fmt.Sprintf("kill -TERM %d", cmd.Process.Pid))
	out, err := conf.CombinedOutput()
	if err != nil {
		t.Fatalf("conformance %s: %v\n%s\nthe cluster's log:\n%s", strings.Join(conf.Args[1:], " "), err, out, clusterLog())
	}
	// Exit status 0 allows skips: only the presence checks may skip.
	passed := 0
	for line := range strings.Lines(string(out)) {
		status, rest, _ := strings.Cut(line, " ")
		name, _, _ := strings.Cut(strings.TrimSpace(rest), ":")
		switch {
		case status == "PASS":
			passed++
		case status == "SKIP" && !noPresence.MatchString(name):
			t.Errorf("conformance: %s", strings.TrimSpace(line))
		}
	}
	if passed == 0 {
		t.Error("conformance: no check passed")
	}
	if t.Failed() {
		t.Fatalf("conformance output:\n%s", out)
	}

	// The shutdown check stopped the cluster.
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Fatalf("the cluster after SIGTERM: %v; its log:\n%s", err, clusterLog())
		}
	case <-ctx.Done():
		t.Fatalf("the cluster did not stop after SIGTERM; its log:\n%s", clusterLog())
	}
	if log := clusterLog(); !strings.Contains(log, "level=INFO msg=stopped") || strings.Contains(log, "level=ERROR") {
		t.Errorf("the cluster did not stop cleanly; its log:\n%s", log)
	}
}
