package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// timeout bounds every wait; generous, since failing is the only way to
// reach it.
const timeout = 15 * time.Second

// TestRun runs the program as a user does: with its port taken it says so
// and exits 1; otherwise a client joins the lobby, gets a POST /announce,
// and Ctrl-C closes it with 1001 before the program exits 0.
func TestRun(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("sends SIGINT")
	}
	bin := filepath.Join(t.TempDir(), "quickstart")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// The program listens on localhost:8080, as the README says. Holding
	// the port first both checks the failed listen and makes sure the rest
	// talks to this program, not to something else on the port.
	taken, err := net.Listen("tcp", "localhost:8080")
	if err != nil {
		t.Skipf("localhost:8080 is in use, the quick start needs it: %v", err)
	}
	out, err := exec.Command(bin).CombinedOutput()
	taken.Close()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "listen tcp") || !strings.Contains(string(out), ":8080") {
		t.Fatalf("with the port taken: exit status %d, output %q; want 1 and the listen error", code, out)
	}

	cmd := exec.Command(bin)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		exited <- cmd.Wait() // after the pipe is read to its end, as Wait requires
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	waitLine(t, lines, "listening on ws://localhost:8080/ws")

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://localhost:8080/ws", nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"join","room":"lobby","id":"1"}`)); err != nil {
		t.Fatal(err)
	}
	expectFrame(t, ctx, conn, `{"type":"ack","id":"1"}`)

	resp, err := http.PostForm("http://localhost:8080/announce", url.Values{"text": {"hello"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /announce: %s", resp.Status)
	}
	expectFrame(t, ctx, conn, `{"type":"message","room":"lobby","data":"hello"}`)

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_, _, err = conn.Read(ctx)
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("after Ctrl-C the client got %v (status %d), want status 1001", err, got)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("after Ctrl-C: %v, want exit status 0", err)
		}
		exited <- err // for the cleanup
	case <-time.After(timeout):
		t.Fatal("the program did not exit after Ctrl-C")
	}
	for line := range lines { // closed before exited was sent
		t.Errorf("the program logged during shutdown: %s", line)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// waitLine waits for a line of output that contains want.
func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("the program ended before printing %q", want)
			}
			if strings.Contains(line, want) {
				return
			}
		case <-deadline:
			t.Fatalf("the program did not print %q", want)
		}
	}
}

func expectFrame(t *testing.T, ctx context.Context, conn *websocket.Conn, want string) {
	t.Helper()
	_, got, err := conn.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}
