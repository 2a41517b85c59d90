package redisengine_test

import (
	"testing"

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
