package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// timeout bounds every wait; generous, since failing is the only way to
// reach it.
const timeout = 15 * time.Second

// TestREADME checks that the README's Quick start is this program, so that
// what a newcomer pastes is what this package compiles and tests.
func TestREADME(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	code, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Quick start\n")
	if !ok {
		t.Fatal("README.md has no Quick start section")
	}
	_, block, ok := strings.Cut(section, "```go\n")
	if !ok {
		t.Fatal("README.md's Quick start has no Go code block")
	}
	block, _, _ = strings.Cut(block, "```\n")
	if block != string(code) {
		t.Errorf("README.md's Quick start differs from examples/quickstart/main.go; copy the file into the README.\n%s", firstDifference(block, string(code)))
	}
}

// TestREADMEErrorFrames checks that the error frames the README shows in
// "Clients over time" are the ones a hub sends.
func TestREADMEErrorFrames(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## Clients over time\n")
	section, _, _ = strings.Cut(section, "\n## ")

	hub := wshub.New(nil, nil) // joins are denied by default
	ctx, conn := serveHub(t, hub)
	for _, frame := range []string{
		`{"type":"join","room":"lobby","id":"1"}`,
		`{"type":"publish","room":"lobby","data":"hi"}`,
	} {
		if err := conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		_, got, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(section, "\n"+string(got)+"\n") {
			t.Errorf("the answer to %s is %s, which README.md's Clients over time does not show", frame, got)
		}
	}
}

// firstDifference describes the first line where a and b differ.
func firstDifference(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n  README:  %s\n  main.go: %s", i+1, x, y)
		}
	}
	return ""
}

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

// serveHub serves hub on a test server, at its root, and dials it; the
// test's cleanup closes all of it.
func serveHub(t *testing.T, hub *wshub.Hub) (context.Context, *websocket.Conn) {
	t.Helper()
	ts := httptest.NewServer(hub)
	t.Cleanup(func() {
		hub.Close()
		ts.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return ctx, conn
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
