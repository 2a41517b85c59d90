package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/coder/websocket"
	"github.com/wshub/wshub/examples/internal/browser"
)

// tab is one browser tab with the chat page open.
type tab struct {
	t     *testing.T
	name  string
	ctx   context.Context
	close context.CancelFunc // closes the tab

	mu       sync.Mutex
	problems []string // errors in the console
}

// newTab opens the chat page in a new tab of the browser, which asks for a
// name.
func newTab(t *testing.T, browser context.Context, url, name string, width, height int64) *tab {
	t.Helper()
	return openPage(t, browser, url, name, width, height, chromedp.WaitVisible(chromedp.ID("name")))
}

// openPage opens the chat page in a new tab of the browser, and waits
// until ready.
func openPage(t *testing.T, browser context.Context, url, name string, width, height int64, ready chromedp.Action[chromedp.Void]) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	// The first Run opens the tab, which then lives as long as that Run's
	// context: so no deadline here either.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	tb := &tab{t: t, name: name, ctx: ctx, close: cancel}
	tb.watchConsole()
	tb.do("open page",
		chromedp.EmulateViewport(width, height),
		chromedp.Navigate(url),
		ready,
	)
	return tb
}

// openTab opens the chat page in a new tab of the browser and signs in.
func openTab(t *testing.T, browser context.Context, url, name string, width, height int64) *tab {
	t.Helper()
	tb := newTab(t, browser, url, name, width, height)
	tb.signIn()
	tb.waitJoined("lobby")
	return tb
}

// signIn types the tab's name as a user does, after checking that the page
// neither offers the name of another tab (typing would add to it) nor shows
// itself offline before it ever tried to connect.
func (tb *tab) signIn() {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[
		document.getElementById("name").value,
		document.body.dataset.state,
		getComputedStyle(document.getElementById("status")).visibility,
	]`))
	if err != nil {
		tb.t.Fatalf("%s: reading the sign-in page: %v", tb.name, err)
	}
	if want := []string{"", "signed-out", "hidden"}; !slices.Equal(got, want) {
		tb.t.Errorf("%s: before signing in, [name field, state, status visibility] = %q, want %q", tb.name, got, want)
	}
	tb.do("sign in",
		chromedp.SendKeys(chromedp.ID("name"), tb.name),
		chromedp.Click(chromedp.CSS("#login-form button")),
	)
	tb.do("wait for the name", chromedp.WaitVisible(chromedp.CSS(`body:not([data-state="signed-out"])`)))
	who := tb.eval(`document.getElementById("who").textContent`)
	equal(tb.t, tb.name+": name shown", who, tb.name)
}

// watchConsole records the errors the page writes to the console, such as
// a resource that failed to load, until the test ends.
func (tb *tab) watchConsole() {
	ctx, cancel := context.WithCancel(tb.ctx)
	messages := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				tb.mu.Lock()
				tb.problems = append(tb.problems, m.String()+" "+m.URL)
				tb.mu.Unlock()
			}
		}
	}()
	tb.t.Cleanup(func() {
		cancel()
		<-done
	})
}

// consoleErrors returns the errors the console got so far.
func (tb *tab) consoleErrors() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return slices.Clone(tb.problems)
}

// eval evaluates a JavaScript expression that returns a string.
func (tb *tab) eval(js string) string {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		tb.t.Fatalf("%s: %s: %v", tb.name, js, err)
	}
	return s
}

// do runs steps, failing the test on error or after timeout.
func (tb *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatalf("%s: %s: %v\npage: %s", tb.name, what, err, tb.describe())
	}
}

// describe returns what the page shows, to explain a failure.
func (tb *tab) describe() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 5*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.state + " | " + document.getElementById("status").textContent + " | " + document.getElementById("rooms").outerHTML + " | " + document.querySelector(".members").innerText + " | " + document.getElementById("log").innerText`))
	if err != nil {
		return err.Error()
	}
	return s
}

// waitJoined waits until the page is online and has joined room.
func (tb *tab) waitJoined(room string) {
	tb.t.Helper()
	tb.do("wait for #"+room,
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="online"]`)),
		chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#rooms li[data-room=%q][data-joined]`, room))),
	)
}

// say types text into the message box and presses Enter.
func (tb *tab) say(text string) {
	tb.t.Helper()
	tb.do("say "+text,
		chromedp.WaitEnabled(chromedp.ID("text")),
		chromedp.SendKeys(chromedp.ID("text"), text+kb.Enter),
	)
}

// lastMessage waits until the current room shows text as its newest
// message and returns the sender's name and the message's classes. A line
// such as "bob joined" may come after it.
func (tb *tab) lastMessage(text string) (name, class string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	// Poll the DOM in the page itself: it is only a read.
	js := fmt.Sprintf(`(() => {
		const li = [...document.querySelectorAll("#log .messages li.msg")].at(-1);
		if (!li || li.querySelector(".text").textContent !== %q) return null;
		return {name: li.querySelector(".name").textContent, class: li.className};
	})()`, text)
	got, err := chromedp.Run(ctx, chromedp.Poll[struct{ Name, Class string }](js))
	if err != nil {
		tb.t.Fatalf("%s: no message %q: %v", tb.name, text, err)
	}
	return got.Name, got.Class
}

func (tb *tab) screenshot(path string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
}

// TestBrowser opens the page in two tabs of a real browser: one types, the
// other shows the message with the sender's name; then the server restarts
// and both pages reconnect on their own.
func TestBrowser(t *testing.T) {
	t.Parallel()
	browser := browser.Start(t)
	s := startServer(t)
	url := "http://" + s.addr + "/"

	alice := openTab(t, browser, url, "alice", 1000, 640)
	bob := openTab(t, browser, url, "bob", 390, 844) // a phone, and the second tab

	alice.say("Hi bob! Did the deploy go out?")
	name, class := bob.lastMessage("Hi bob! Did the deploy go out?")
	equal(t, "sender", name, "alice")
	if got, _ := alice.lastMessage("Hi bob! Did the deploy go out?"); got != "alice" {
		t.Errorf("alice's own message shown as from %q", got)
	}
	if class != "msg" {
		t.Errorf("bob sees alice's message with classes %q, want just msg", class)
	}
	bob.say("Yes, 10 minutes ago. Rooms over WebSocket, no polling.")
	name, _ = alice.lastMessage("Yes, 10 minutes ago. Rooms over WebSocket, no polling.")
	equal(t, "sender", name, "bob")
	bob.say("Join #random for the memes")
	alice.lastMessage("Join #random for the memes")
	alice.say("Nice, thanks!")
	bob.lastMessage("Nice, thanks!")

	// A second room: joining switches to it; the lobby keeps working.
	alice.do("join #random",
		chromedp.SetValue(chromedp.ID("join-room"), "random"),
		chromedp.Click(chromedp.CSS("#join-form button")),
	)
	alice.waitJoined("random")
	alice.say("Anyone here?")
	alice.lastMessage("Anyone here?")
	bob.say("See you there")
	alice.do("back to #lobby", chromedp.Click(chromedp.CSS(`#rooms li[data-room="lobby"] .room-name`)))
	alice.lastMessage("See you there")
	lobby := "Hi bob! Did the deploy go out?|Yes, 10 minutes ago. Rooms over WebSocket, no polling.|Join #random for the memes|Nice, thanks!|See you there"
	equal(t, "alice's messages", alice.messages(), lobby)

	dir := t.TempDir()
	alice.screenshot(filepath.Join(dir, "chat-desktop.png"))
	bob.screenshot(filepath.Join(dir, "chat-phone.png"))
	if dst := os.Getenv("WSHUB_SCREENSHOT"); dst != "" {
		copyFile(t, filepath.Join(dir, "chat-desktop.png"), dst)
		copyFile(t, filepath.Join(dir, "chat-phone.png"), phonePath(dst))
	}

	for _, tb := range []*tab{alice, bob} {
		if errs := tb.consoleErrors(); len(errs) > 0 {
			t.Errorf("%s: console errors: %q", tb.name, errs)
		}
	}

	// Restart the server on the same address: the pages see 1001, back off
	// and reconnect, and rejoin their rooms.
	s.shutdown(t)
	for _, tb := range []*tab{alice, bob} {
		tb.do("wait for offline", chromedp.WaitVisible(chromedp.CSS(`body[data-state="offline"]`)))
	}
	startServerAt(t, s.addr)
	alice.waitJoined("lobby")
	alice.waitJoined("random")
	bob.waitJoined("lobby")
	// Each page got the room's members afresh: each other, once.
	alice.waitMembers("alice|bob")
	bob.waitMembers("alice|bob")
	// The new server has a new, empty history: the pages cannot know what
	// was said between the shutdown and the restart, and say so, in every
	// room.
	for _, tb := range []*tab{alice, bob} {
		tb.do("wait for the notice", chromedp.WaitVisible(chromedp.CSS(`#log .notice.missing`)))
		equal(t, tb.name+": notice", tb.eval(`document.querySelector("#log .notice.missing").textContent`), missingNotice)
	}
	alice.say("Back online")
	bob.lastMessage("Back online")
	alice.lastMessage("Back online")
	// Every message is shown once, the notice before the new one.
	equal(t, "alice's messages after the restart", alice.messages(), lobby+"|Back online")
	equal(t, "alice's lines after the restart", alice.lines(), strings.ReplaceAll(lobby, "|", "\n")+"\n"+missingNotice+"\nBack online")
	alice.do("to #random", chromedp.Click(chromedp.CSS(`#rooms li[data-room="random"] .room-name`)))
	alice.do("wait for the notice in #random", chromedp.WaitVisible(chromedp.CSS(`#log .notice.missing`)))
	equal(t, "alice's messages in #random", alice.messages(), "Anyone here?")
	alice.say("Still here")
	alice.lastMessage("Still here")
	equal(t, "alice's messages in #random", alice.messages(), "Anyone here?|Still here")
}

// lines returns the texts of the current room's messages and notices,
// one a line, but for those of presence, which may come in any order.
func (tb *tab) lines() string {
	tb.t.Helper()
	return tb.eval(`[...document.querySelectorAll("#log .messages li:not(.presence)")].map(e => e.classList.contains("msg") ? e.querySelector(".text").textContent : e.textContent).join("\n")`)
}

// missingNotice is what the page shows in a room whose missed messages
// the server could not replay.
const missingNotice = "Some messages may be missing here: the server could not replay what was sent while this page was offline."

// TestBrowserHistory: a page shows a room's recent messages when it opens
// it, on a reload too; and a page whose connection was cut while another
// published shows what it missed, once, after it reconnects on its own.
func TestBrowserHistory(t *testing.T) {
	t.Parallel()
	browser := browser.Start(t)
	s := startServer(t)
	p := startProxy(t, s.addr)

	alice := openTab(t, browser, "http://"+s.addr+"/", "alice", 1000, 640)
	for _, text := range []string{"one", "two", "three"} {
		alice.say(text)
		alice.lastMessage(text)
	}
	alice.do("reload", chromedp.Reload())
	alice.waitJoined("lobby")
	equal(t, "alice's messages after a reload", alice.messages(), "one|two|three")
	equal(t, "alice's own messages after a reload", alice.eval(`String(document.querySelectorAll("#log .messages li.msg.mine").length)`), "3")

	// bob's tab talks to the server through the proxy, which can cut it off.
	bob := openTab(t, browser, "http://"+p.addr()+"/", "bob", 1000, 640)
	equal(t, "bob's messages", bob.messages(), "one|two|three")

	p.cut()
	bob.do("wait for offline", chromedp.WaitVisible(chromedp.CSS(`body[data-state="offline"]`)))
	alice.say("while bob was away")
	alice.lastMessage("while bob was away")
	p.restore()
	bob.waitJoined("lobby")
	bob.lastMessage("while bob was away")
	alice.say("after")
	bob.lastMessage("after")
	equal(t, "bob's messages after reconnecting", bob.messages(), "one|two|three|while bob was away|after")
	equal(t, "bob's seqs", bob.eval(`[...document.querySelectorAll("#log .messages li.msg")].map(e => e.dataset.seq).join("|")`), "1|2|3|4|5")
	equal(t, "bob's notices", bob.eval(`String(document.querySelectorAll("#log .notice").length)`), "0")

	// A reload shows the last 50 messages, not more.
	dave := dial(t, s, "dave")
	dave.welcome("dave")
	dave.join("lobby")
	var last50 []string
	for i := 1; i <= 51; i++ {
		text := fmt.Sprint("n", i)
		dave.send(fmt.Sprintf(`{"type":"publish","room":"lobby","data":{"text":%q}}`, text))
		if i > 1 {
			last50 = append(last50, text)
		}
	}
	alice.lastMessage("n51")
	alice.do("reload", chromedp.Reload())
	alice.waitJoined("lobby")
	equal(t, "alice's messages after a reload", alice.messages(), strings.Join(last50, "|"))

	// While the network was out, the browser logged each failed attempt
	// to reconnect; nothing else is allowed.
	for _, tb := range []*tab{alice, bob} {
		errs := slices.DeleteFunc(tb.consoleErrors(), func(e string) bool {
			return tb == bob && strings.Contains(e, "WebSocket connection to 'ws://"+p.addr()+"/ws?name=bob' failed")
		})
		if len(errs) > 0 {
			t.Errorf("%s: console errors: %q", tb.name, errs)
		}
	}
}

// TestBrowserRecovers: the server closes a page's connection with 1012
// (as a hub does when its room log lost messages), then with 1001 (going
// away), keeping its history; while the page is offline, another user
// speaks. The page reconnects on its own, is back in its rooms, shows
// what it missed once and says nothing is missing.
func TestBrowserRecovers(t *testing.T) {
	t.Parallel()
	browser := browser.Start(t)
	s := startServer(t)
	p := startProxy(t, s.addr)

	// bob's tab goes through the proxy, which can keep it from reconnecting.
	bob := openTab(t, browser, "http://"+p.addr()+"/", "bob", 1000, 640)
	bob.do("join #random",
		chromedp.SetValue(chromedp.ID("join-room"), "random"),
		chromedp.Click(chromedp.CSS("#join-form button")),
	)
	bob.waitJoined("random")
	bob.do("back to #lobby", chromedp.Click(chromedp.CSS(`#rooms li[data-room="lobby"] .room-name`)))
	alice := dial(t, s, "alice")
	alice.welcome("alice")
	alice.join("lobby")
	alice.join("random")
	alice.send(`{"type":"publish","room":"lobby","data":{"text":"one"}}`)
	bob.lastMessage("one")

	want := "one"
	for i, code := range []websocket.StatusCode{websocket.StatusServiceRestart, websocket.StatusGoingAway} {
		p.hold()
		n := 0
		for c := range s.hub.Room("lobby").Clients() {
			if c.ID() == "bob" {
				c.Close(code, "")
				n++
			}
		}
		equal(t, "bob's connections", n, 1)
		bob.do("wait for offline", chromedp.WaitVisible(chromedp.CSS(`body[data-state="offline"]`)))
		missed := fmt.Sprintf("missed %d", i+1)
		// Acked: in the rooms' history before bob can be back.
		for _, room := range []string{"lobby", "random"} {
			alice.send(fmt.Sprintf(`{"type":"publish","room":%q,"data":{"text":%q},"id":"p"}`, room, missed))
			if _, err := alice.next(func(f string) bool { return jsonEqual(f, `{"type":"ack","id":"p"}`) }); err != nil {
				t.Fatalf("alice's publish: %v", err)
			}
		}
		p.restore()
		bob.waitJoined("lobby")
		bob.waitJoined("random")
		bob.lastMessage(missed)
		want += "|" + missed
		equal(t, fmt.Sprintf("bob's messages after %d", code), bob.messages(), want)
	}
	equal(t, "bob's seqs", bob.eval(`[...document.querySelectorAll("#log .messages li.msg")].map(e => e.dataset.seq).join("|")`), "1|2|3")
	bob.say("back")
	bob.lastMessage("back")
	equal(t, "bob's lines", bob.lines(), "one\nmissed 1\nmissed 2\nback")
	// The messages missed in the other room are unread there.
	equal(t, "unread in #random", bob.eval(`document.querySelector('#rooms li[data-room="random"] .unread').textContent`), "2")
	bob.do("to #random", chromedp.Click(chromedp.CSS(`#rooms li[data-room="random"] .room-name`)))
	equal(t, "bob's lines in #random", bob.lines(), "missed 1\nmissed 2")

	// Each failed attempt to reconnect is logged by the browser; nothing else is allowed.
	errs := slices.DeleteFunc(bob.consoleErrors(), func(e string) bool {
		return strings.Contains(e, "WebSocket connection to 'ws://"+p.addr()+"/ws?name=bob' failed")
	})
	if len(errs) > 0 {
		t.Errorf("console errors: %q", errs)
	}
}

// messages returns the texts of the current room's messages, joined by |.
func (tb *tab) messages() string {
	tb.t.Helper()
	return tb.eval(`[...document.querySelectorAll("#log .messages li.msg .text")].map(e => e.textContent).join("|")`)
}

// TestBrowserPage checks the page's details: its icon, the rooms strip of
// a phone with more rooms than fit, and a message over the length limit.
func TestBrowserPage(t *testing.T) {
	t.Parallel()
	browser := browser.Start(t)
	s := startServer(t)
	url := "http://" + s.addr + "/"

	t.Run("icon", func(t *testing.T) {
		tb := openTab(t, browser, url, "alice", 1000, 640)
		ctx, cancel := context.WithTimeout(tb.ctx, timeout)
		defer cancel()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](
			`fetch(document.querySelector('link[rel="icon"]').href).then(r => r.status + " " + r.headers.get("Content-Type"))`,
			chromedp.EvalAwaitPromise))
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "icon", got, "200 image/svg+xml")
		if errs := tb.consoleErrors(); len(errs) > 0 {
			t.Errorf("console errors: %q", errs)
		}
	})

	t.Run("phone rooms", func(t *testing.T) {
		tb := openTab(t, browser, url, "carol", 390, 844)
		for i := 1; i <= 12; i++ {
			room := fmt.Sprintf("room-%02d", i)
			tb.do("join #"+room,
				chromedp.SetValue(chromedp.ID("join-room"), room),
				chromedp.Click(chromedp.CSS("#join-form button")),
			)
			tb.waitJoined(room)
			tb.waitCurrentInView(room)
		}
		if tb.eval(`String(document.getElementById("rooms").scrollWidth > document.getElementById("rooms").clientWidth)`) != "true" {
			t.Fatal("the rooms fit in the strip: the test proves nothing")
		}
		// Leaving the current room goes back to the first one, which is
		// scrolled out of view by now.
		tb.do("leave #room-12", chromedp.Click(chromedp.CSS(`#rooms li[data-room="room-12"] .leave`)))
		tb.waitCurrentInView("lobby")
		equal(t, "title", tb.eval(`document.getElementById("room-title").textContent`), "lobby")
	})

	t.Run("closed by the server", func(t *testing.T) {
		// Five undecodable messages in a row get this page closed with
		// 1007: a close about the client, which the page must not retry
		// on its own, unlike 1001.
		tb := openTab(t, browser, url, "erin", 1000, 640)
		tb.eval(`(() => { for (let i = 0; i < 5; i++) chat.hub.send("not JSON"); return ""; })()`)
		tb.do("wait for the close",
			chromedp.WaitVisible(chromedp.ID("reconnect")),
			chromedp.WaitVisible(chromedp.CSS(`body[data-state="offline"]`)),
		)
		equal(t, "status", tb.eval(`document.getElementById("status").textContent`), "Disconnected")
		if got := tb.eval(`document.querySelector("#log .notice.error:last-child").textContent`); !strings.HasPrefix(got, "The server closed the connection: 1007") {
			t.Errorf("notice: %q", got)
		}
		tb.do("reconnect", chromedp.Click(chromedp.ID("reconnect")))
		tb.waitJoined("lobby")
		tb.do("button gone", chromedp.WaitNotVisible(chromedp.ID("reconnect")))
	})

	t.Run("rename", func(t *testing.T) {
		// A new name is a new connection, on which the page joins its rooms
		// again, recovering what it has: each message stays shown once.
		tb := openTab(t, browser, url, "frank", 1000, 640)
		tb.do("join #names", // the other subtests expect an empty lobby
			chromedp.SetValue(chromedp.ID("join-room"), "names"),
			chromedp.Click(chromedp.CSS("#join-form button")),
		)
		tb.waitJoined("names")
		tb.say("as frank")
		tb.lastMessage("as frank")
		tb.do("rename",
			chromedp.Click(chromedp.ID("rename")),
			chromedp.WaitVisible(chromedp.ID("name")),
			chromedp.SendKeys(chromedp.ID("name"), "grace"),
			chromedp.Click(chromedp.CSS("#login-form button")),
			chromedp.WaitNotVisible(chromedp.ID("login")),
		)
		equal(t, "name shown", tb.eval(`document.getElementById("who").textContent`), "grace")
		tb.waitMembers("grace")
		tb.waitJoined("lobby")
		tb.waitJoined("names")
		tb.say("as grace")
		name, class := tb.lastMessage("as grace")
		equal(t, "sender", name, "grace")
		equal(t, "classes", class, "msg mine")
		equal(t, "messages", tb.messages(), "as frank|as grace")
		equal(t, "notices", tb.eval(`String(document.querySelectorAll("#log .notice:not(.presence)").length)`), "0")
	})

	t.Run("long paste", func(t *testing.T) {
		tb := openTab(t, browser, url, "dave", 1000, 640)
		long := strings.Repeat("0123456789", 250) // 2,500 characters
		tb.do("paste", chromedp.Focus(chromedp.ID("text")))
		ctx, cancel := context.WithTimeout(tb.ctx, timeout)
		defer cancel()
		if _, err := chromedp.Call(ctx, input.InsertText, input.InsertTextParams{Text: long}); err != nil {
			t.Fatal(err)
		}
		got, err := chromedp.Run(ctx, chromedp.Evaluate[struct {
			Length   int
			Hint     string
			Shown    bool
			Disabled bool
		}](`({
			length: document.getElementById("text").value.length,
			hint: document.getElementById("too-long").textContent,
			shown: !document.getElementById("too-long").hidden,
			disabled: document.getElementById("send").disabled,
		})`))
		if err != nil {
			t.Fatal(err)
		}
		equal(t, "length kept", got.Length, len(long))
		equal(t, "hint shown", got.Shown, true)
		equal(t, "hint", got.Hint, "Too long to send: 2,500 characters, the limit is 2,000.")
		equal(t, "Send disabled", got.Disabled, true)

		tb.do("press Enter", chromedp.SendKeys(chromedp.ID("text"), kb.Enter))
		// Select it all and type over it, as a user does.
		tb.eval(`document.getElementById("text").select() ?? ""`)
		tb.do("shorten it",
			chromedp.SendKeys(chromedp.ID("text"), "short"),
			chromedp.WaitNotVisible(chromedp.ID("too-long")),
			chromedp.SendKeys(chromedp.ID("text"), kb.Enter),
		)
		tb.lastMessage("short")
		// Messages arrive in order: had the long one been sent, it would
		// be there before this one.
		equal(t, "messages", tb.eval(`[...document.querySelectorAll("#log .messages li.msg .text")].map(e => e.textContent).join("|")`), "short")
	})
}

// waitCurrentInView waits until room is the current room and its entry in
// the rooms list is entirely in view.
func (tb *tab) waitCurrentInView(room string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	js := fmt.Sprintf(`(() => {
		const ul = document.getElementById("rooms");
		const li = ul.querySelector("li.current");
		if (!li || li.dataset.room !== %q) return false;
		const u = ul.getBoundingClientRect(), r = li.getBoundingClientRect();
		return r.left >= u.left - 1 && r.right <= u.right + 1 && r.top >= u.top - 1 && r.bottom <= u.bottom + 1 &&
			u.left >= 0 && u.right <= innerWidth + 1;
	})()`, room)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js)); err != nil {
		tb.t.Fatalf("%s: #%s is not the current room in view: %v\nrooms strip: %s", tb.name, room, err, tb.eval(`(() => {
			const ul = document.getElementById("rooms"), u = ul.getBoundingClientRect();
			const li = ul.querySelector("li.current"), r = li ? li.getBoundingClientRect() : null;
			return "strip " + u.left + ".." + u.right + ", current " + (li ? li.dataset.room + " " + r.left + ".." + r.right : "none");
		})()`))
	}
}

// phonePath names the phone screenshot after the desktop one: chat.png
// becomes chat-phone.png.
func phonePath(path string) string {
	ext := filepath.Ext(path)
	return path[:len(path)-len(ext)] + "-phone" + ext
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err == nil {
		err = os.WriteFile(dst, b, 0o644)
	}
	if err != nil {
		t.Errorf("copying screenshot: %v", errors.Unwrap(err))
	}
}

// waitMembers waits until the page lists want, names joined by |, as the
// current room's members, and counts as many.
func (tb *tab) waitMembers(want string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	js := fmt.Sprintf(`(() => {
		const names = [...document.querySelectorAll("#member-list li .member-name")].map(e => e.textContent).join("|");
		return names === %q && document.getElementById("member-count").textContent === %q;
	})()`, want, fmt.Sprint(len(strings.Split(want, "|"))))
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js)); err != nil {
		tb.t.Fatalf("%s: members are not %s: %v\npage: %s", tb.name, want, err, tb.describe())
	}
}

// waitNotices waits until the current room's lines about who joined and
// left are want, joined by |.
func (tb *tab) waitNotices(want string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	js := fmt.Sprintf(`[...document.querySelectorAll("#log .notice.presence")].map(e => e.textContent).join("|") === %q`, want)
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js)); err != nil {
		tb.t.Fatalf("%s: join and leave lines are not %q: %v\npage: %s", tb.name, want, err, tb.describe())
	}
}

// TestBrowserPresence: the page lists the members of the current room.
// Two tabs of different users see each other, and a line when the other
// joins; closing a tab takes its user off the list, with a line; two tabs
// of one name are one member. Nobody gets a line about themselves or
// about those who were there before them.
func TestBrowserPresence(t *testing.T) {
	t.Parallel()
	browser := browser.Start(t)
	s := startServer(t)
	url := "http://" + s.addr + "/"

	alice := openTab(t, browser, url, "alice", 1000, 640)
	alice.waitMembers("alice")
	equal(t, "alice's own entry", alice.eval(`document.querySelector("#member-list li.self").dataset.id`), "alice")
	bob := openTab(t, browser, url, "bob", 1000, 640)
	bob.waitMembers("alice|bob")
	alice.waitMembers("alice|bob")
	alice.waitNotices("bob joined")

	carol := openTab(t, browser, url, "carol", 1000, 640)
	carol2 := openTab(t, browser, url, "carol", 390, 844) // her phone, say
	for _, tb := range []*tab{alice, bob, carol, carol2} {
		tb.waitMembers("alice|bob|carol")
	}
	// bob's own join came as a diff before carol's, and said nothing.
	bob.waitNotices("carol joined")
	alice.waitNotices("bob joined|carol joined")

	// One of carol's tabs goes: she is still there. The server has taken
	// it into account once the room's state says she has one connection.
	carol2.close()
	watcher := dial(t, s, "watcher")
	watcher.welcome("watcher")
	watcher.join("lobby")
	watcher.waitConns("lobby", "carol", 1)

	// bob's tab goes: he left. Had carol's closed tab made a line, it
	// would come before this one.
	bob.close()
	alice.waitMembers("alice|carol|watcher")
	alice.waitNotices("bob joined|carol joined|watcher joined|bob left")
	carol.waitNotices("watcher joined|bob left")
	for _, tb := range []*tab{alice, carol} {
		if errs := tb.consoleErrors(); len(errs) > 0 {
			t.Errorf("%s: console errors: %q", tb.name, errs)
		}
	}
}

// waitSignedOut waits until the page says it is signed out, asking for a
// name again.
func (tb *tab) waitSignedOut() {
	tb.t.Helper()
	tb.do("wait for signed out",
		chromedp.WaitVisible(chromedp.ID("login-note")),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.WaitVisible(chromedp.CSS(`body[data-state="signed-out"]`)),
	)
	equal(tb.t, tb.name+": note", tb.eval(`document.getElementById("login-note").textContent`), "Signed out.")
}

// pageErrors returns the errors in tb's console but for the 401 of GET
// /token, how the page of the login mode learns it is not signed in.
func (tb *tab) pageErrors() []string {
	return slices.DeleteFunc(tb.consoleErrors(), func(e string) bool {
		return strings.Contains(e, "status of 401") && strings.HasSuffix(e, "/token")
	})
}

// TestBrowserLogin: the page of a chat server with -login asks for a name,
// signs in at /login and connects with tokens from /token, which last 2 s:
// it refreshes them while it chats, over one connection. Another tab of
// the browser shares its session. Sign out in one tab closes every
// connection of the name, in the other tab and in a terminal too, with
// 4003: both pages say "Signed out." and ask for a name again; signing
// in again, as another name, takes the page back to its rooms, with its
// messages once.
func TestBrowserLogin(t *testing.T) {
	t.Parallel()
	browser := browser.Start(t)
	const ttl = 2 * time.Second
	s, _ := startLoginServer(t, ttl)
	url := "http://" + s.addr + "/"

	alice := openTab(t, browser, url, "alice", 1000, 640)
	equal(t, "buttons", alice.eval(`[...document.querySelectorAll(".me button")].filter(b => !b.hidden).map(b => b.textContent).join("|")`), "Sign out")
	bob := startClient(t, "-url", s.wsURL(), "-login", "bob", "-room", "lobby")
	bob.expect("* connected to " + s.wsURL() + " as bob")
	bob.expect("* joined lobby")
	alice.waitMembers("alice|bob")
	aliceConn := s.hub.ClientsOf("alice")
	equal(t, "alice's connections", len(aliceConn), 1)

	var said []string
	chatPastExpiry(t, s, "alice", ttl, func(text string) {
		alice.say(text)
		alice.lastMessage(text)
		bob.expect("[lobby] alice: " + text)
		said = append(said, text)
	})
	if now := s.hub.ClientsOf("alice"); len(now) != 1 || now[0] != aliceConn[0] {
		t.Fatalf("alice's connections: %v, want the first one only", now)
	}

	// The browser is signed in: a new tab connects at once, as alice.
	alice2 := openPage(t, browser, url, "alice", 1000, 640, chromedp.WaitVisible(chromedp.CSS(`body[data-state="online"]`)))
	alice2.waitJoined("lobby")
	equal(t, "second tab's name", alice2.eval(`document.getElementById("who").textContent`), "alice")
	equal(t, "second tab's messages", alice2.messages(), strings.Join(said, "|"))
	aliceCLI := startClient(t, "-url", s.wsURL(), "-login", "alice", "-room", "lobby")
	aliceCLI.expect("* connected to " + s.wsURL() + " as alice")
	aliceCLI.expect("* joined lobby")

	alice.do("sign out", chromedp.Click(chromedp.ID("signout")))
	alice.waitSignedOut()
	alice2.waitSignedOut()
	// The server's 4003 stopped the second tab's client, not the page.
	equal(t, "second tab's client", alice2.eval(`chat.hub.state`), "signedout")
	equal(t, "terminal's exit status", aliceCLI.wait(), 1)
	equal(t, "terminal's stderr", aliceCLI.stderr.String(), "client: signed out: 4003 signed out\n")
	bob.expectPresence("* alice left lobby")

	alice2.name = "carol"
	alice2.signIn()
	alice2.waitJoined("lobby")
	alice2.say("carol here")
	bob.expect("[lobby] carol: carol here")
	alice2.lastMessage("carol here")
	equal(t, "messages after signing in again", alice2.messages(), strings.Join(append(said, "carol here"), "|"))
	// The first tab stays signed out until its own form signs it in.
	equal(t, "first tab", alice.eval(`document.body.dataset.state`), "signed-out")

	for _, tb := range []*tab{alice, alice2} {
		if errs := tb.pageErrors(); len(errs) > 0 {
			t.Errorf("%s: console errors: %q", tb.name, errs)
		}
	}
}
