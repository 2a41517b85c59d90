package wshubtest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/wshubtest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestKit(t *testing.T) {
	s := wshubtest.NewServer(t, nil, &wshub.Options{AuthorizeJoin: func(*wshub.Client, string) error { return nil }})
	alice, bob := s.Dial(t, "?name=alice"), s.Dial(t, "?name=bob")
	alice.Join("lobby")
	bob.Join("lobby")
	alice.Publish("lobby", map[string]string{"text": "hi"})
	bob.ExpectData("lobby", map[string]string{"text": "hi"})
	bob.ExpectNothing(20 * time.Millisecond)
	if ans := bob.Request(&wshub.Message{Type: wshub.TypePublish, Room: "elsewhere"}); ans.Type != wshub.TypeError {
		t.Fatalf("got %+v", ans)
	}
	bob.Leave("lobby")
	for c := range s.Hub.Room("lobby").Clients() {
		c.Close(websocket.StatusPolicyViolation, "bye")
	}
	alice.ExpectClose(websocket.StatusPolicyViolation)
}

// TestKitFailures: the assertions fail the test when what they expect does
// not come, with a message saying what came instead.
func TestKitFailures(t *testing.T) {
	s := wshubtest.NewServer(t, nil, &wshub.Options{AuthorizeJoin: func(*wshub.Client, string) error { return nil }})
	for name, f := range map[string]func(ft *fakeT, c *wshubtest.Client){
		"expect without a message":     func(ft *fakeT, c *wshubtest.Client) { c.Expect(wshub.TypeMessage) },
		"expect another type":          func(ft *fakeT, c *wshubtest.Client) { c.Send(&wshub.Message{Type: "x"}); c.Expect(wshub.TypeMessage) },
		"expect nothing, get an error": func(ft *fakeT, c *wshubtest.Client) { c.Send(&wshub.Message{Type: "x"}); c.ExpectNothing(time.Second) },
		"join refused":                 func(ft *fakeT, c *wshubtest.Client) { c.Join("") },
	} {
		ft := &fakeT{TB: t}
		c := s.Dial(ft, "")
		c.Timeout = 200 * time.Millisecond
		done := make(chan struct{})
		go func() {
			defer close(done)
			defer func() { recover() }()
			f(ft, c)
		}()
		<-done
		if ft.failed == "" {
			t.Errorf("%s: did not fail", name)
		} else {
			t.Logf("%s: %s", name, ft.failed)
		}
	}
}

// fakeT records a failure instead of failing the test.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = fmt.Sprintf(format, args...)
	panic("fatal")
}
