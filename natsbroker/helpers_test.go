package natsbroker_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startNATS runs an embedded NATS server on 127.0.0.1 and the given port
// (server.RANDOM_PORT for any), shut down at cleanup.
func startNATS(t testing.TB, port int) *server.Server {
	t.Helper()
	return startServer(t, port, "")
}

// startJetStream runs an embedded NATS server with JetStream, keeping its
// streams in storeDir (t.TempDir(), or the directory of a server it
// replaces), shut down at cleanup.
func startJetStream(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	return startServer(t, port, storeDir)
}

// startServer runs a server, with JetStream in storeDir unless it is "".
func startServer(t testing.TB, port int, storeDir string) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      port,
		NoLog:     true,
		NoSigs:    true,
		JetStream: storeDir != "",
		StoreDir:  storeDir,
	})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func natsPort(s *server.Server) int { return s.Addr().(*net.TCPAddr).Port }

// node is one hub of a cluster with its broker.
type node struct {
	*et.Node
	broker *natsbroker.Broker
	log    *natsbroker.Log // with newLogNodes; broker is then log.Broker
	nc     *nats.Conn
}

// newNodes starts n hubs on their own test servers and NATS connections
// to url, each with a Broker, and no room with history. The connections
// retry quickly so restart tests stay short.
func newNodes(t testing.TB, url string, n int, opts *natsbroker.Options) []*node {
	t.Helper()
	return startNodes(t, url, n, opts, nil, false)
}

// newHistoryNodes starts n hubs as newNodes does, each with a Broker, and
// with history as the history policies of their Options.Rooms.
func newHistoryNodes(t testing.TB, url string, n int, opts *natsbroker.Options, history func(string) wshub.HistoryPolicy) []*node {
	t.Helper()
	return startNodes(t, url, n, opts, history, false)
}

// newLogNodes starts n hubs as newNodes does, each with a Log, and with
// history as the history policies of their Options.Rooms.
func newLogNodes(t testing.TB, url string, n int, opts *natsbroker.Options, history func(string) wshub.HistoryPolicy) []*node {
	t.Helper()
	if history == nil {
		history = func(string) wshub.HistoryPolicy { return wshub.HistoryPolicy{} }
	}
	return startNodes(t, url, n, opts, history, true)
}

// startNodes starts the hubs of newNodes, newHistoryNodes (a Broker, with
// history) or newLogNodes (useLog: a Log).
// tune, if any, changes the hubs' Options.
func startNodes(t testing.TB, url string, n int, opts *natsbroker.Options, history func(string) wshub.HistoryPolicy, useLog bool, tune ...func(*wshub.Options)) []*node {
	t.Helper()
	nodes := make([]*node, n)
	for i := range nodes {
		nc, err := nats.Connect(url,
			nats.Name(fmt.Sprintf("node%d", i)),
			nats.ReconnectBufSize(-1),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(10*time.Millisecond),
			nats.ReconnectJitter(0, 0),
			// The restart test breaks connections on purpose.
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		)
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		nd := &node{nc: nc}
		var br wshub.Engine
		if useLog {
			if nd.log, err = natsbroker.NewLog(nc, opts); err != nil {
				t.Fatalf("NewLog: %v", err)
			}
			nd.broker, br = nd.log.Broker, nd.log
		} else {
			if nd.broker, err = natsbroker.New(nc, opts); err != nil {
				t.Fatalf("New: %v", err)
			}
			br = nd.broker
		}
		hopts := &wshub.Options{Engine: br, Rooms: et.RoomsOf(history), AuthorizeJoin: et.AllowJoins}
		for _, f := range tune {
			f(hopts)
		}
		t.Cleanup(nc.Close) // after the hub's
		nd.Node = et.Serve(t, wshub.New(nil, hopts))
		nd.Engine = br
		nodes[i] = nd
	}
	return nodes
}

// hubs returns the kit's nodes of nodes, for the scenarios.
func hubs(nodes []*node) []*et.Node {
	out := make([]*et.Node, len(nodes))
	for i, n := range nodes {
		out[i] = n.Node
	}
	return out
}

func dial(t testing.TB, n *node) *et.Peer {
	t.Helper()
	return et.Dial(t, n.Node)
}

// publish publishes msg to room, a room without history, through b, and
// waits for the confirmation.
func publish(ctx context.Context, b *natsbroker.Broker, room string, msg []byte) error {
	return b.Publish(ctx, room, wshub.HistoryPolicy{}, "", msg)()
}

// broadcast sends et.Payload{Pub: pub, Seq: seq} to room from the server side of n.
func broadcast(ctx context.Context, n *node, room, pub string, seq int) error {
	return et.Broadcast(ctx, n.Node, room, pub, seq)
}
