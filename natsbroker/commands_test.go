package natsbroker_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wshub/wshub"
	et "github.com/wshub/wshub/internal/enginetest"
	"github.com/wshub/wshub/natsbroker"
)

// The scenario of every engine on a bus (internal/enginetest), on Brokers
// and on Logs.
func TestDisconnectUserAcrossHubs(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	et.DisconnectUserAcrossHubs(t, hubs(startNodes(t, s.ClientURL(), 3, nil, nil, false, et.UserOptions)))
}

func TestLogDisconnectUserAcrossHubs(t *testing.T) {
	t.Parallel()
	s := startJetStream(t, server.RANDOM_PORT, t.TempDir())
	hist := et.Policies(map[string]wshub.HistoryPolicy{"lobby": {Messages: 100}})
	et.DisconnectUserAcrossHubs(t, hubs(startNodes(t, s.ClientURL(), 3, nil, hist, true, et.UserOptions)))
}

// A command reaches every broker, the sender's included, whether or not
// the sender confirms its publishes; HandleCommands is called once.
func TestCommandReachesEveryBroker(t *testing.T) {
	t.Parallel()
	ctx := et.Ctx(t)
	s := startNATS(t, server.RANDOM_PORT)
	a := connect(t, s.ClientURL(), nil)
	b := connect(t, s.ClientURL(), &natsbroker.Options{NoConfirm: true})
	gotA, gotB := et.HandledCommands(t, a), et.HandledCommands(t, b)
	if err := a.HandleCommands(func([]byte) {}); err == nil {
		t.Fatal("a second HandleCommands succeeded")
	}
	for i, from := range []*natsbroker.Broker{a, b} {
		cmd := fmt.Sprintf(`{"n":%d}`, i)
		if err := from.Command(ctx, []byte(cmd)); err != nil {
			t.Fatalf("Command: %v", err)
		}
		et.Equal(t, "command on a", et.NextCommand(ctx, t, gotA), cmd)
		et.Equal(t, "command on b", et.NextCommand(ctx, t, gotB), cmd)
	}
}

// No room has the subject of commands: a room's token of three
// characters is the encoding of two bytes.
func TestCommandSubjectIsNoRoom(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	b := connect(t, s.ClientURL(), nil)
	subj := natsbroker.CommandSubject(b)
	for i := range 1 << 16 {
		if room := string([]byte{byte(i >> 8), byte(i)}); b.Subject(room) == subj {
			t.Fatalf("room %q has the subject of commands %q", room, subj)
		}
	}
	for _, room := range []string{"", "cmd", "q", "lobby"} {
		if b.Subject(room) == subj {
			t.Fatalf("room %q has the subject of commands %q", room, subj)
		}
	}
}

// Close waits for a command that handle is carrying out; afterwards
// Command and HandleCommands return ErrClosed.
func TestCloseWaitsForHandle(t *testing.T) {
	t.Parallel()
	s := startNATS(t, server.RANDOM_PORT)
	a := connect(t, s.ClientURL(), nil)
	b := connect(t, s.ClientURL(), nil)
	et.CloseWaitsForHandle(t, a, b, natsbroker.ErrClosed)
}

// Before the connection is up, Command fails with ErrNotConnected and
// HandleCommands subscribes once it is: the commands published then
// arrive.
func TestCommandsBeforeConnecting(t *testing.T) {
	t.Parallel()
	ctx := et.Ctx(t)
	port := freePort(t)
	b := connect(t, fmt.Sprintf("nats://127.0.0.1:%d", port), &natsbroker.Options{RetryOnFailedConnect: true})
	if err := b.Command(ctx, []byte(`{}`)); !errors.Is(err, natsbroker.ErrNotConnected) {
		t.Fatalf("Command before connecting: %v, want ErrNotConnected", err)
	}
	got := et.HandledCommands(t, b)

	s := startNATS(t, port)
	et.Eventually(t, "the subscription to commands", func() bool {
		return s.GlobalAccount().Interest(natsbroker.CommandSubject(b)) == 1
	})
	other := connect(t, s.ClientURL(), nil)
	if err := other.Command(ctx, []byte(`{"late":true}`)); err != nil {
		t.Fatalf("Command: %v", err)
	}
	et.Equal(t, "command", et.NextCommand(ctx, t, got), `{"late":true}`)
}
