// Client is a terminal chat client for examples/chat.
//
//	go run ./examples/client -url ws://localhost:8080/ws -name alice -room lobby
//
// Lines typed are published to the current room; messages of every joined
// room are printed as "[lobby] alice: hi". Commands:
//
//	/join ROOM    join ROOM and make it the current room
//	/leave ROOM   leave ROOM
//	/quit         close the connection and exit (as do EOF and Ctrl-C)
//
// It imports nothing from wshub on purpose: it shows everything a client in
// any language has to do, which is to dial a WebSocket and exchange the JSON
// objects of wshub's protocol.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// dialTimeout bounds connecting, so an unreachable server is reported
// instead of hanging.
const dialTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// message is one protocol message, in either direction.
type message struct {
	Type  string          `json:"type"`
	ID    string          `json:"id,omitempty"`
	Room  string          `json:"room,omitempty"`
	From  string          `json:"from,omitempty"`
	Data  json.RawMessage `json:"data,omitempty"`
	Error string          `json:"error,omitempty"`
}

// chatData is the data of a chat message: the client sends only text, the
// server adds the sender's name.
type chatData struct {
	Name string `json:"name,omitempty"`
	Text string `json:"text"`
}

// run is the whole client: it parses args, connects, and relays between the
// connection and stdin/stdout until the user quits (exit status 0), ctx is
// done (0), the connection fails or the server closes it (1), or the
// arguments are wrong (2).
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("client", flag.ContinueOnError)
	flags.SetOutput(stderr)
	rawURL := flags.String("url", "ws://localhost:8080/ws", "WebSocket URL of the chat server")
	name := flags.String("name", "guest", "nickname")
	room := flags.String("room", "lobby", "room to join first")
	if err := flags.Parse(args); err != nil {
		return 2
	}

	conn, err := dial(ctx, *rawURL, *name)
	if err != nil {
		fmt.Fprintf(stderr, "client: cannot connect to %s: %v\n", *rawURL, err)
		return 1
	}
	defer conn.CloseNow()
	fmt.Fprintf(stdout, "* connected to %s as %s\n", *rawURL, *name)

	// The reader owns stdout from here on and reports on done why the
	// connection ended. It does not read with ctx: canceling a read cuts the
	// connection at once, while Ctrl-C should first say goodbye with status
	// 1000. It ends when the connection closes, which run always does.
	done := make(chan error, 1)
	go func() { done <- printMessages(conn, stdout) }()

	// Reading stdin blocks in a way nothing can interrupt, so this goroutine
	// is the one that run does not wait for: it ends at the next line or
	// EOF, or with the process.
	lines := make(chan string)
	stopLines := make(chan struct{})
	defer close(stopLines)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-stopLines:
				return
			}
		}
	}()

	c := &session{conn: conn, stderr: stderr}
	if err := c.join(ctx, *room); err != nil {
		return c.fail(err, done)
	}
	for {
		select {
		case <-ctx.Done():
			return c.quit(done)
		case err := <-done:
			return c.disconnected(err)
		case line, ok := <-lines:
			if !ok {
				return c.quit(done)
			}
			quit, err := c.command(ctx, line)
			if err != nil {
				return c.fail(err, done)
			}
			if quit {
				return c.quit(done)
			}
		}
	}
}

// dial connects to rawURL with name as the query parameter the server reads
// the nickname from.
func dial(ctx context.Context, rawURL, name string) (*websocket.Conn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("name", name)
	u.RawQuery = q.Encode()

	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, u.String(), nil)
	if err != nil && resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
		// The server refused the upgrade (bad name, full, shutting down):
		// its reason is in the body, which is more useful than the status.
		body, _ := io.ReadAll(resp.Body)
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return conn, err
}

// session is the sending side of a connection and the current room.
type session struct {
	conn   *websocket.Conn
	stderr io.Writer
	room   string // where typed lines go; empty after leaving it
}

// command handles one line of input. It reports whether the user quit, and
// an error only if the connection failed.
func (c *session) command(ctx context.Context, line string) (quit bool, err error) {
	line = strings.TrimSpace(line)
	cmd, arg, _ := strings.Cut(line, " ")
	arg = strings.TrimSpace(arg)
	switch {
	case line == "":
		return false, nil
	case cmd == "/quit":
		return true, nil
	case cmd == "/join" && arg != "":
		return false, c.join(ctx, arg)
	case cmd == "/leave" && arg != "":
		if arg == c.room {
			c.room = ""
		}
		// Like the join, the ID makes the server's answer say what it is
		// about, so no table of pending requests is needed.
		return false, c.send(ctx, message{Type: "leave", Room: arg, ID: "leave:" + arg})
	case strings.HasPrefix(line, "/"):
		fmt.Fprintln(c.stderr, "commands: /join ROOM, /leave ROOM, /quit")
		return false, nil
	case c.room == "":
		fmt.Fprintln(c.stderr, "not in a room: /join ROOM first")
		return false, nil
	}
	data, _ := json.Marshal(chatData{Text: line})
	return false, c.send(ctx, message{Type: "publish", Room: c.room, Data: data})
}

func (c *session) join(ctx context.Context, room string) error {
	c.room = room
	return c.send(ctx, message{Type: "join", Room: room, ID: "join:" + room})
}

func (c *session) send(ctx context.Context, m message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return c.conn.Write(ctx, websocket.MessageText, b)
}

// quit closes the connection normally (status 1000) and waits for the
// reader, which sees the server's answering close frame.
func (c *session) quit(done <-chan error) int {
	c.conn.Close(websocket.StatusNormalClosure, "bye")
	<-done
	return 0
}

// fail reports a failed write and ends the session.
func (c *session) fail(err error, done <-chan error) int {
	c.conn.CloseNow()
	if readErr := <-done; websocket.CloseStatus(readErr) != -1 {
		return c.disconnected(readErr) // the close frame says more than the write error
	}
	fmt.Fprintf(c.stderr, "client: %v\n", err)
	return 1
}

// disconnected reports a connection ended by the server or the network.
func (c *session) disconnected(err error) int {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		fmt.Fprintf(c.stderr, "client: server closed the connection: %d %s\n", int(ce.Code), closeReason(ce))
	} else {
		fmt.Fprintf(c.stderr, "client: connection lost: %v\n", err)
	}
	return 1
}

func closeReason(ce websocket.CloseError) string {
	if ce.Reason != "" {
		return ce.Reason
	}
	return strings.TrimPrefix(ce.Code.String(), "Status")
}

// printMessages prints what the server sends until the connection ends,
// and returns the error that ended it.
func printMessages(conn *websocket.Conn, stdout io.Writer) error {
	for {
		_, b, err := conn.Read(context.Background())
		if err != nil {
			return err
		}
		var m message
		if err := json.Unmarshal(b, &m); err != nil {
			fmt.Fprintf(stdout, "? %s\n", b)
			continue
		}
		if line := format(m, b); line != "" {
			fmt.Fprintln(stdout, line)
		}
	}
}

// format renders one message for the terminal, or returns "" for one not
// worth showing; raw is the frame, shown for types this client does not know.
func format(m message, raw []byte) string {
	switch m.Type {
	case "message":
		var d chatData
		if json.Unmarshal(m.Data, &d) != nil || d.Text == "" {
			d.Text = string(m.Data) // not a chat message: show the data as is
		}
		if d.Name == "" {
			d.Name = "(server)"
		}
		if m.Room == "" {
			return fmt.Sprintf("%s: %s", d.Name, d.Text)
		}
		return fmt.Sprintf("[%s] %s: %s", m.Room, d.Name, d.Text)
	case "ack":
		what, room, _ := strings.Cut(m.ID, ":")
		switch what {
		case "join":
			return "* joined " + room
		case "leave":
			return "* left " + room
		}
		return "* ok " + m.ID
	case "error":
		if m.Room != "" {
			return fmt.Sprintf("! [%s] %s", m.Room, m.Error)
		}
		return "! " + m.Error
	case "welcome":
		return "" // examples/chat's greeting; the client knows who it is
	}
	return string(raw)
}
