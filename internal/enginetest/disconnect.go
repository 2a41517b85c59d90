package enginetest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// UserOptions sets what a hub of DisconnectUserAcrossHubs has: every join
// allowed, and clients named by the query: ?id=u1 gives ID "u1".
func UserOptions(o *wshub.Options) {
	o.AuthorizeJoin = AllowJoins
	o.Authenticate = func(r *http.Request) (wshub.Identity, error) {
		return wshub.Identity{ID: r.URL.Query().Get("id")}, nil
	}
}

// DisconnectUserAcrossHubs: on three hubs made with UserOptions, with
// room "lobby" of any policy, user u1 has connections on every hub, two
// on the first, and u2 on the second and third, all in the lobby. The
// second hub's Hub.DisconnectUser of u1 with 4003 closes every connection
// of u1, on every hub, with 4003 and its reason; u2's stay open and get
// the lobby's messages.
func DisconnectUserAcrossHubs(t *testing.T, nodes []*Node) {
	ctx := Ctx(t)
	dial := func(hub int, user string) *Peer {
		t.Helper()
		p := DialURL(t, nodes[hub].URL("?id="+url.QueryEscape(user)))
		p.Join("lobby") // acked: the hub has the client
		return p
	}
	u1 := []*Peer{dial(0, "u1"), dial(0, "u1"), dial(1, "u1"), dial(2, "u1")}
	u2 := []*Peer{dial(1, "u2"), dial(2, "u2")}
	for i, want := range []int{2, 1, 1} {
		Equal(t, fmt.Sprintf("u1's connections on hub %d", i), len(nodes[i].Hub.ClientsOf("u1")), want)
	}

	if err := nodes[1].Hub.DisconnectUser(ctx, "u1", wshub.StatusSignedOut, "banned"); err != nil {
		t.Fatalf("DisconnectUser: %v", err)
	}
	for i, p := range u1 {
		_, b, err := p.Conn.Read(ctx)
		if err == nil {
			t.Fatalf("u1's connection %d: got %s, want a close", i, b)
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != wshub.StatusSignedOut || ce.Reason != "banned" {
			t.Fatalf("u1's connection %d: %v (status %d), want a close with 4003 \"banned\"", i, err, websocket.CloseStatus(err))
		}
	}
	for i, n := range nodes {
		Eventually(t, fmt.Sprintf("hub %d to drop u1's connections", i), func() bool { return len(n.Hub.ClientsOf("u1")) == 0 })
	}

	// u2's connections are open and members: a message from the hub
	// without u2 reaches both.
	if err := Broadcast(ctx, nodes[0], "lobby", "after", 0); err != nil {
		t.Fatalf("Room.Broadcast: %v", err)
	}
	for i, p := range u2 {
		m := p.Read()
		if m.Type != "message" || Data(t, m) != (Payload{Pub: "after"}) {
			t.Fatalf("u2's connection %d: got %+v, want the message", i, m)
		}
	}
	for i, n := range nodes[1:] {
		Equal(t, fmt.Sprintf("u2's connections on hub %d", i+1), len(n.Hub.ClientsOf("u2")), 1)
	}
}

// CloseWaitsForHandle checks an engine's Close against its command
// handler: a Close while a's handler runs (a command from b) returns only
// after it, and Command and HandleCommands then fail with closed.
func CloseWaitsForHandle(t *testing.T, a, b wshub.CommandEngine, closed error) {
	t.Helper()
	ctx := Ctx(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var returned atomic.Bool
	err := a.HandleCommands(func([]byte) {
		close(entered)
		<-release
		returned.Store(true)
	})
	if err != nil {
		t.Fatalf("HandleCommands: %v", err)
	}
	if err := b.Command(ctx, []byte(`{}`)); err != nil {
		t.Fatalf("Command: %v", err)
	}
	<-entered
	done := make(chan struct{})
	go func() {
		a.Close()
		close(done)
	}()
	close(release)
	<-done
	if !returned.Load() {
		t.Fatal("Close returned before handle")
	}
	if err := a.Command(ctx, []byte(`{}`)); !errors.Is(err, closed) {
		t.Fatalf("Command after Close: %v, want %v", err, closed)
	}
	if err := a.HandleCommands(func([]byte) {}); !errors.Is(err, closed) {
		t.Fatalf("HandleCommands after Close: %v, want %v", err, closed)
	}
}

// HandledCommands makes e pass its commands to the returned channel.
func HandledCommands(t *testing.T, e wshub.CommandEngine) <-chan string {
	t.Helper()
	got := make(chan string, 16)
	if err := e.HandleCommands(func(cmd []byte) { got <- string(cmd) }); err != nil {
		t.Fatalf("HandleCommands: %v", err)
	}
	return got
}

// NextCommand returns the next command of got, failing when ctx ends.
func NextCommand(ctx context.Context, t *testing.T, got <-chan string) string {
	t.Helper()
	select {
	case cmd := <-got:
		return cmd
	case <-ctx.Done():
		t.Fatal("no command")
		return ""
	}
}
