package redisengine_test

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/redisengine"
)

// startRedisCluster starts a Redis Cluster of three masters on loopback
// (redis-server in cluster mode, joined by redis-cli --cluster create) and
// returns the address of its first node.
func startRedisCluster(t *testing.T) string {
	t.Helper()
	et.NeedRedis(t, "redis-server", "redis-cli")
	var addrs []string
	for range 3 {
		// Redis Cluster's bus listens on the port plus 10000 unless told
		// otherwise, which fails above 55535: give it a free port too.
		n := et.StartRedis(t, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(et.FreePort(t)),
			"--cluster-config-file", "nodes.conf")
		addrs = append(addrs, n.Addr())
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	et.Eventually(t, "the cluster to be ok", func() bool {
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
	if !redisengine.Sharded(engine(nodes[0])) {
		t.Fatal("the engine did not take the server for a cluster")
	}
	ctx := et.Ctx(t)
	for _, room := range rooms {
		a, b := et.Dial(t, nodes[0]), et.Dial(t, nodes[1])
		a.Join(room)
		_, ack := b.JoinAck(room, "")
		for seq := range 3 {
			if err := et.Broadcast(ctx, nodes[seq%2], room, "p", seq); err != nil {
				t.Fatalf("room %s: Room.Broadcast: %v", room, err)
			}
		}
		var got [2][]et.Logged
		for i, p := range []*et.Peer{a, b} {
			for range 3 {
				m := p.Read()
				got[i] = append(got[i], et.Logged{Payload: et.Data(t, m), Seq: m.Seq})
			}
		}
		if hist(room).Messages == 0 {
			// Pub/sub: each publisher's order, not one order.
			for i := range got {
				var ps []et.Payload
				for _, l := range got[i] {
					ps = append(ps, l.Payload)
				}
				slices.SortFunc(ps, func(x, y et.Payload) int { return x.Seq - y.Seq })
				et.CheckSequences(t, fmt.Sprintf("room %s, member %d", room, i), ps, map[string]int{"p": 3})
			}
			continue
		}
		et.CheckOneOrder(t, room, got[:])
		// b leaves having seen the first, and recovers the rest on hub 0.
		b.Conn.CloseNow()
		c := et.Dial(t, nodes[0])
		replay, ack2 := c.JoinAck(room, fmt.Sprintf(`"since":%d,"epoch":%q`, got[1][0].Seq, ack.Epoch))
		if ack2.Recovered == nil || !*ack2.Recovered || len(replay) != 2 {
			t.Fatalf("room %s: recovery on the other hub: %+v, %d replayed", room, ack2, len(replay))
		}
	}
	pn := presenceNodes(t, nil, "redis://"+addr, "redis://"+addr)
	alice, bob := et.DialMember(t, pn[0], "alice"), et.DialMember(t, pn[1], "bob")
	alice.Join("p")
	bob.Join("p")
	alice.Until("alice", "bob")
	bob.Until("alice", "bob")
}
