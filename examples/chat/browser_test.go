package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// browserNames are the Chromium executables the browser test looks for.
var browserNames = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"}

// findBrowser returns the path of a Chromium. Without one the test skips,
// unless WSHUB_REQUIRE_BROWSER=1 (set by CI), where it fails.
func findBrowser(t *testing.T) string {
	t.Helper()
	for _, name := range browserNames {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("no Chromium found in PATH (looked for %v); install one, e.g. apt-get install chromium", browserNames)
	if os.Getenv("WSHUB_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "; WSHUB_REQUIRE_BROWSER=1 requires the browser test to run")
	}
	t.Skip(msg)
	return ""
}

// startBrowser starts a headless Chromium for the test and returns the
// context of its first tab.
func startBrowser(t *testing.T) context.Context {
	t.Helper()
	exe := findBrowser(t)
	profile := t.TempDir()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // containers and CI runners often lack the sandbox's privileges
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(profile),
		// Without these, Chromium keeps trying to reach Google's services
		// and stalls on a machine without Internet access.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Background tabs must keep their timers: the page reconnects on one.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.WindowSize(1000, 640),
	)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		chromedp.Cancel(ctx) // closes the browser and waits for it
		cancel()
		cancelAlloc()
		removeProfile(t, profile)
	})
	// The first Run starts the browser; it must not have a deadline.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", exe, err)
	}
	return ctx
}

// removeProfile removes Chromium's profile before t.TempDir's own cleanup:
// Chromium's helper processes may still write to it for a moment after the
// browser is gone, which makes a single RemoveAll fail.
func removeProfile(t *testing.T, dir string) {
	deadline := time.Now().Add(timeout)
	for {
		err := os.RemoveAll(dir)
		if err == nil || time.Now().After(deadline) {
			if err != nil {
				t.Logf("removing browser profile: %v", err)
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tab is one browser tab with the chat page open.
type tab struct {
	t    *testing.T
	name string
	ctx  context.Context
}

// openTab opens the chat page in a new tab of the browser and signs in.
func openTab(t *testing.T, browser context.Context, url, name string, width, height int64) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	// The first Run opens the tab, which then lives as long as that Run's
	// context: so no deadline here either.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	tb := &tab{t: t, name: name, ctx: ctx}
	tb.do("open page",
		chromedp.EmulateViewport(width, height),
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SetValue(chromedp.ID("name"), name),
		chromedp.Click(chromedp.CSS("#login-form button")),
	)
	tb.waitJoined("lobby")
	return tb
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
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.state + " | " + document.getElementById("status").textContent + " | " + document.getElementById("rooms").outerHTML + " | " + document.getElementById("log").innerText`))
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
// message and returns the sender's name and the message's classes.
func (tb *tab) lastMessage(text string) (name, class string) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, timeout)
	defer cancel()
	// Poll the DOM in the page itself: it is only a read.
	js := fmt.Sprintf(`(() => {
		const li = document.querySelector("#log .messages li.msg:last-child");
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
	browser := startBrowser(t)
	s := startServer(t)
	url := "http://" + s.addr + "/"

	alice := openTab(t, browser, url, "alice", 1000, 640)
	bob := openTab(t, browser, url, "bob", 390, 720) // a phone

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
	alice.lastMessage("Yes, 10 minutes ago. Rooms over WebSocket, no polling.")
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
	bob.say("See you there")
	alice.do("back to #lobby", chromedp.Click(chromedp.CSS(`#rooms li[data-room="lobby"] .room-name`)))
	alice.lastMessage("See you there")

	dir := t.TempDir()
	alice.screenshot(filepath.Join(dir, "chat-desktop.png"))
	bob.screenshot(filepath.Join(dir, "chat-phone.png"))
	if dst := os.Getenv("WSHUB_SCREENSHOT"); dst != "" {
		copyFile(t, filepath.Join(dir, "chat-desktop.png"), dst)
		copyFile(t, filepath.Join(dir, "chat-phone.png"), phonePath(dst))
	}

	// Restart the server on the same address: the pages see 1001, back off
	// and reconnect, and rejoin their rooms.
	s.shutdown(t)
	for _, tb := range []*tab{alice, bob} {
		tb.do("wait for offline", chromedp.WaitVisible(chromedp.CSS(`body[data-state="offline"]`)))
	}
	startServerAt(t, s.addr)
	alice.waitJoined("lobby")
	bob.waitJoined("lobby")
	alice.say("Back online")
	bob.lastMessage("Back online")
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
