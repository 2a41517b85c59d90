package redisengine_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wshub/wshub"
	"github.com/wshub/wshub/redisengine"
)

// startRedisCluster starts a Redis Cluster of three masters on loopback
// (redis-server in cluster mode, joined by redis-cli --cluster create) and
// returns the address of its first node.
func startRedisCluster(t *testing.T) string {
	t.Helper()
	first := startRedis(t, false) // skips or fails as startRedis does
	first.kill()
	var addrs []string
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		dir := t.TempDir()
		cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
			"--save", "", "--appendonly", "no", "--protected-mode", "no", "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"), "--logfile", filepath.Join(dir, "redis.log"))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		s := &redisServer{t: t, port: port}
		eventually(t, fmt.Sprintf("cluster node %d to answer", i), s.ping)
		addrs = append(addrs, s.addr())
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		if os.Getenv("WSHUB_REQUIRE_REDIS") == "1" {
			t.Fatal("redis-cli not found, and WSHUB_REQUIRE_REDIS=1")
		}
		t.Skip("redis-cli not found: it comes with Debian's redis-server (redis-tools)")
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	eventually(t, "the cluster to be ok", func() bool {
		for _, a := range addrs {
			host, port, _ := strings.Cut(a, ":")
			out, err := exec.Command("redis-cli", "-h", host, "-p", port, "cluster", "info").Output()
			if err != nil || !strings.Contains(string(out), "cluster_state:ok") {
				return false
			}
		}
		return true
	})
	return addrs[0]
}

// On a Redis Cluster the engine uses sharded pub/sub and keeps each
// room's keys in one slot: rooms with and without history, spread over
// the cluster's nodes by their names, work across two hubs, in one order,
// with recovery on the other hub; and presence crosses hubs.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	addr := startRedisCluster(t)
	rooms := []string{"a", "b", "c", "d", "e", "f"} // in several slots
	hist := func(room string) wshub.HistoryPolicy {
		if strings.Contains("ace", room) {
			return wshub.HistoryPolicy{Messages: 100}
		}
		return wshub.HistoryPolicy{}
	}
	nodes := newNodes(t, "redis://"+addr, 2, nil, hist)
	if !redisengine.Sharded(nodes[0].eng) {
		t.Fatal("the engine did not take the server for a cluster")
	}
	ctx := testCtx(t)
	for _, room := range rooms {
		a, b := dial(t, nodes[0]), dial(t, nodes[1])
		a.join(room)
		_, ack := b.joinAck(room, "")
		for seq := range 3 {
			if err := broadcast(ctx, nodes[seq%2], room, "p", seq); err != nil {
				t.Fatalf("room %s: Room.Broadcast: %v", room, err)
			}
		}
		var got [2][]logged
		for i, p := range []*peer{a, b} {
			for range 3 {
				m := p.read()
				got[i] = append(got[i], logged{data(t, m), m.Seq})
			}
		}
		if hist(room).Messages == 0 {
			// Pub/sub: each publisher's order, not one order.
			for i := range got {
				var ps []payload
				for _, l := range got[i] {
					ps = append(ps, l.payload)
				}
				slices.SortFunc(ps, func(x, y payload) int { return x.Seq - y.Seq })
				checkSequences(t, fmt.Sprintf("room %s, member %d", room, i), ps, map[string]int{"p": 3})
			}
			continue
		}
		checkOneOrder(t, room, got[:])
		// b leaves having seen the first, and recovers the rest on hub 0.
		b.conn.CloseNow()
		c := dial(t, nodes[0])
		replay, ack2 := c.joinAck(room, fmt.Sprintf(`"since":%d,"epoch":%q`, got[1][0].seq, ack.Epoch))
		if ack2.Recovered == nil || !*ack2.Recovered || len(replay) != 2 {
			t.Fatalf("room %s: recovery on the other hub: %+v, %d replayed", room, ack2, len(replay))
		}
	}
	pn := []*presNode{presenceNode(t, "redis://"+addr, nil), presenceNode(t, "redis://"+addr, nil)}
	alice, bob := dialMember(t, pn[0], "alice"), dialMember(t, pn[1], "bob")
	alice.join("p")
	bob.join("p")
	alice.until("alice", "bob")
	bob.until("alice", "bob")
}
