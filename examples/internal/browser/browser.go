// Package browser starts a headless Chromium for the examples' tests,
// through chromedp.
package browser

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// names are the Chromium executables Find looks for.
var names = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"}

// Find returns the path of a Chromium. Without one the test skips, unless
// WSHUB_REQUIRE_BROWSER=1 (set by CI), where it fails.
func Find(t testing.TB) string {
	t.Helper()
	for _, name := range names {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	msg := fmt.Sprintf("no Chromium found in PATH (looked for %v); install one, e.g. apt-get install chromium", names)
	if os.Getenv("WSHUB_REQUIRE_BROWSER") == "1" {
		t.Fatal(msg + "; WSHUB_REQUIRE_BROWSER=1 requires the browser test to run")
	}
	t.Skip(msg)
	return ""
}

// Start starts a headless Chromium for the test and returns the context of
// its first tab. The browser is closed when the test ends.
func Start(t testing.TB) context.Context {
	t.Helper()
	exe := Find(t)
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
		// Background tabs must keep their timers: pages reconnect on one.
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
func removeProfile(t testing.TB, dir string) {
	deadline := time.Now().Add(time.Minute)
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
