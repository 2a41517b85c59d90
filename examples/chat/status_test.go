package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/examples/internal/browser"
)

// startStatusServer is startServer with the -status flag: the hub's status
// page at /debug/wshub.
func startStatusServer(t *testing.T) *server {
	t.Helper()
	return startServerWith(t, "127.0.0.1:0", debugPages{status: true})
}

// chatConn is a WebSocket client of the chat server speaking its protocol
// by hand, one request at a time.
type chatConn struct {
	t       *testing.T
	conn    *websocket.Conn
	replies chan reply // acks and errors, passed on by the reader
	ids     int
}

// reply is an ack or an error frame.
type reply struct {
	Type  string `json:"type"`
	ID    string `json:"id"`
	Error string `json:"error"`
}

// dialChat connects a client named name, whose reader goroutine reads
// everything the server sends it until the test ends.
func dialChat(t *testing.T, s *server, name string) *chatConn {
	t.Helper()
	c, stop := newChatConn(t, dialName(t, s, name))
	t.Cleanup(stop)
	return c
}

// newChatConn starts the reader of conn, which runs until stop.
func newChatConn(t *testing.T, conn *websocket.Conn) (c *chatConn, stop func()) {
	c = &chatConn{t: t, conn: conn, replies: make(chan reply, 1)}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			_, b, err := conn.Read(context.Background())
			if err != nil {
				return
			}
			var r reply
			if json.Unmarshal(b, &r) == nil && (r.Type == "ack" || r.Type == "error") {
				select {
				case c.replies <- r:
				case <-quit:
					return
				}
			}
		}
	}()
	return c, func() {
		close(quit)
		conn.CloseNow()
		<-done
	}
}

func dialName(t *testing.T, s *server, name string) *websocket.Conn {
	t.Helper()
	conn, err := dialAs(s, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	return conn
}

func dialAs(s *server, name string) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, s.wsURL()+"?name="+url.QueryEscape(name), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: dial: %w", name, err)
	}
	return conn, nil
}

// request sends a message of type typ to room (with data, if not empty)
// and waits for its ack.
func (c *chatConn) request(typ, room, data string) error {
	c.ids++
	id := strconv.Itoa(c.ids)
	frame := fmt.Sprintf(`{"type":%q,"room":%q,"id":%q}`, typ, room, id)
	if data != "" {
		frame = fmt.Sprintf(`{"type":%q,"room":%q,"id":%q,"data":%s}`, typ, room, id, data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		return fmt.Errorf("%s: %w", frame, err)
	}
	select {
	case r := <-c.replies:
		if r.Type != "ack" || r.ID != id {
			return fmt.Errorf("%s: got %+v, want its ack", frame, r)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s: no ack", frame)
	}
}

func (c *chatConn) join(room string) {
	c.t.Helper()
	if err := c.request("join", room, ""); err != nil {
		c.t.Fatal(err)
	}
}

func (c *chatConn) say(room, text string) error {
	data, _ := json.Marshal(chatMessage{Text: text})
	return c.request("publish", room, string(data))
}

// stall connects a client that joins room and then reads no more: the
// server's messages pile up in its socket, then in its queue.
func stall(t *testing.T, s *server, name, room string) {
	t.Helper()
	conn := dialName(t, s, name)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, []byte(fmt.Sprintf(`{"type":"join","room":%q,"id":"join"}`, room))); err != nil {
		t.Fatal(err)
	}
	for { // the welcome, presence: up to the join's ack
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("%s: joining %s: %v", name, room, err)
		}
		var r reply
		if json.Unmarshal(b, &r) == nil && r.ID == "join" {
			if r.Type != "ack" {
				t.Fatalf("%s: joining %s: %+v", name, room, r)
			}
			return
		}
	}
}

// kickSlow connects a client that joins room and stops reading, then
// floods the room from the server until the hub kicks it.
func kickSlow(t *testing.T, s *server, name, room string) {
	t.Helper()
	stall(t, s, name, room)
	flood := strings.Repeat("x", 16<<10)
	deadline := time.Now().Add(timeout)
	for kicked := s.hub.Stats().Kicked; s.hub.Stats().Kicked == kicked; {
		if time.Now().After(deadline) {
			t.Fatalf("%s was not kicked: %+v", name, s.hub.Stats())
		}
		if err := s.hub.Room(room).Broadcast(context.Background(), &wshub.Message{Data: chatMessage{Name: "flood", Text: flood}}); err != nil {
			t.Fatal(err)
		}
	}
}

// waitStatus waits until the JavaScript expression js holds on the
// status page.
func (tb *tab) waitStatus(what, js string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
		defer cancel()
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		tb.t.Fatalf("status page: %s: %v\npage:\n%s", what, err, text)
	}
}

// figure is the number the status page shows in the element of id
// (commas and words removed), or -1 for none.
func figure(id string) string {
	return fmt.Sprintf(`((t) => /[0-9]/.test(t) ? Number(t.replace(/[^0-9.]/g, "")) : -1)(document.getElementById(%q).textContent)`, id)
}

// TestStatusPage opens the status page (-status) in Chromium and watches
// it follow the hub: clients, messages out, the busiest rooms, and a kick
// of a client that stopped reading while the server flooded its room.
// With WSHUB_SCREENSHOT=1 it runs two minutes of traffic first, and
// writes docs/status.png.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	ctx := browser.Start(t)
	s := startStatusServer(t)

	tabCtx, closeTab := chromedp.NewContext(ctx)
	t.Cleanup(closeTab)
	if err := chromedp.Do(tabCtx); err != nil { // no deadline: see newTab
		t.Fatalf("opening a tab: %v", err)
	}
	tb := &tab{t: t, name: "status", ctx: tabCtx, close: closeTab}
	tb.watchConsole()
	tb.do("open the status page",
		chromedp.EmulateViewport(1200, 800),
		chromedp.Navigate("http://"+s.addr+"/debug/wshub"),
	)
	tb.waitStatus("live, with no clients", `document.body.dataset.state === "live" && `+figure("clients")+` === 0`)

	var traffic *traffic
	if os.Getenv("WSHUB_SCREENSHOT") == "1" {
		traffic = startTraffic(t, s)
	}

	alice, bob := dialChat(t, s, "alice"), dialChat(t, s, "bob")
	alice.join("lobby")
	bob.join("lobby")
	for i := range 3 {
		if err := alice.say("lobby", fmt.Sprintf("hello %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	out := s.hub.Stats().MessagesOut // at least: the rest is being written
	tb.waitStatus("alice and bob", figure("clients")+` >= 2`)
	tb.waitStatus(fmt.Sprintf("messages out ≥ %d", out), figure("out-total")+fmt.Sprintf(` >= %d`, out))
	tb.waitStatus("lobby, busiest", `[...document.querySelectorAll("#busiest tbody tr")].some(tr =>
		tr.cells[0].textContent === "lobby" && Number(tr.cells[1].textContent) >= 2 && Number(tr.cells[2].textContent.replace(/,/g, "")) >= 6)`)
	tb.waitStatus("a chart of messages", `/M[^M]*L/.test(document.querySelector("#chart-messages path.line.out").getAttribute("d"))`)

	// A client that stops reading while the server floods its room: its
	// queue overflows, and the hub kicks it.
	kickSlow(t, s, "slowpoke", "slow")
	tb.waitStatus("a kick", figure("kicked")+` === 1 && document.getElementById("kicked-tile").classList.contains("warn")`)
	equal(t, "kicked", s.hub.Stats().Kicked, 1)

	if traffic != nil {
		traffic.wait(t)
		height, err := strconv.ParseInt(tb.eval(`String(Math.ceil(document.querySelector("main").getBoundingClientRect().bottom))`), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		tb.do("fit the page", chromedp.EmulateViewport(1200, height))
		png, err := chromedp.Run(tb.ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "status.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Room names are the users': shown as text, never as markup.
	const odd = `<img src=x onerror="document.title='owned'"> & <b>bold</b>`
	dialChat(t, s, "mallory").join(odd)
	tb.waitStatus("the odd room, as text", fmt.Sprintf(`[...document.querySelectorAll("#busiest tbody td.name")].some(td => td.textContent === %q)
		&& !document.querySelector("#busiest img, #busiest b")`, odd))

	if errs := tb.consoleErrors(); len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// traffic is chat traffic for the screenshot: clients arriving in a few
// rooms and talking in waves, some leaving.
type traffic struct {
	wg   sync.WaitGroup
	stop chan struct{}
	errs chan error
	done <-chan time.Time // when the charts show nothing but this traffic
}

func startTraffic(t *testing.T, s *server) *traffic {
	t.Helper()
	rooms := []string{"lobby", "support", "random", "golang", "release-train", "ops-alerts", "design"}
	names := []string{"ada", "grace", "linus", "ken", "rob", "barbara", "dennis", "margaret", "edsger", "radia",
		"frances", "john", "anita", "guido", "yukihiro", "bjarne", "alan", "katherine", "niklaus", "leslie"}
	tr := &traffic{stop: make(chan struct{}), errs: make(chan error, len(names)), done: time.After(130 * time.Second)}
	t.Cleanup(func() {
		close(tr.stop)
		tr.wg.Wait()
	})
	start := time.Now()
	for i, name := range names {
		mine := []string{rooms[i%len(rooms)]} // and one of the first three, the busiest
		if extra := rooms[i*i%3]; extra != mine[0] {
			mine = append(mine, extra)
		}
		arrive := time.Duration(i) * 5 * time.Second
		leave := time.Duration(math.MaxInt64)
		if i%4 == 1 {
			leave = arrive + 70*time.Second
		}
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			if err := tr.talk(s, name, mine, start, arrive, leave, float64(i)); err != nil {
				tr.errs <- err
			}
		}()
	}
	return tr
}

// talk connects name at arrive (since start), joins rooms and publishes
// in waves of about a minute until leave or the end of the traffic.
func (tr *traffic) talk(s *server, name string, rooms []string, start time.Time, arrive, leave time.Duration, phase float64) error {
	select {
	case <-tr.stop:
		return nil
	case <-time.After(time.Until(start.Add(arrive))):
	}
	conn, err := dialAs(s, name)
	if err != nil {
		return err
	}
	c, stop := newChatConn(nil, conn)
	defer stop()
	for _, room := range rooms {
		if err := c.request("join", room, ""); err != nil {
			return err
		}
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-tr.stop:
			return nil
		case <-tick.C:
		}
		since := time.Since(start)
		if since > leave {
			return conn.Close(websocket.StatusGoingAway, "")
		}
		wave := 0.5 + 0.5*math.Sin(since.Seconds()/9+phase)
		if float64(n%20)/20 >= wave*0.4 {
			continue
		}
		if err := c.say(rooms[n%len(rooms)], fmt.Sprintf("message %d from %s", n, name)); err != nil {
			return err
		}
	}
}

// wait waits until the charts show nothing but the traffic, and checks
// that every client's messages were acked.
func (tr *traffic) wait(t *testing.T) {
	t.Helper()
	select {
	case <-tr.done:
	case err := <-tr.errs:
		t.Fatal(err)
	}
	select {
	case err := <-tr.errs:
		t.Fatal(err)
	default:
	}
}
