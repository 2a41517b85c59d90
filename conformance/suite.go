package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Config says which server to check, and how.
type Config struct {
	// URL is the WebSocket URL every connection dials. "{n}" in it is
	// replaced by a value unique to the connection.
	URL string

	// IDParam, when set, is a query parameter that every connection sets
	// to a value unique to it (for servers that name clients from the
	// query, so that the suite's connections are distinct clients).
	IDParam string

	// Prefix starts every room name the suite uses; a random run ID
	// follows it, so runs do not share rooms.
	Prefix string

	// Timeout bounds each check.
	Timeout time.Duration

	// ReadLimit is the server's read limit the read-limit check expects.
	ReadLimit int

	// Run, when set, selects the checks to run by name; Skip, when set,
	// leaves out those it matches (they are reported as skipped).
	Run, Skip *regexp.Regexp

	// Token is a token the server accepts, for the checks of tokens
	// (PROTOCOL.md §11): as the first frame's sign-in, on a server that
	// requires one (then every connection signs in with it), and in a
	// refresh, as many times as the suite sends it. Empty skips the
	// checks that need it.
	Token string

	// BadToken is a token the server refuses; empty means
	// defaultBadToken.
	BadToken string

	// Shutdown stops the server gracefully, for the shutdown check, which
	// runs last; nil skips that check.
	Shutdown func(ctx context.Context) error

	// Out receives one line per check and a summary line.
	Out io.Writer
}

// Status is the outcome of a check.
type Status string

const (
	Pass Status = "PASS"
	Fail Status = "FAIL"
	Skip Status = "SKIP"
)

// Result is the outcome of one check.
type Result struct {
	Name   string
	Status Status
	Reason string
}

// Summary is the outcome of a run.
type Summary struct {
	Results                 []Result
	Passed, Failed, Skipped int
}

// check is one check of the suite.
type check struct {
	name string
	run  func(t *T)
}

// defaultBadToken is the token the suite expects a server to refuse when
// Config.BadToken is empty.
const defaultBadToken = "wshub-conformance-invalid-token"

// suite is the state of one run.
type suite struct {
	cfg   *Config
	runID string

	mu    sync.Mutex
	conns int
	// authKnown says whether authFirst, learned once per run by a probe
	// (T.firstFrame), says if the server requires sign-in with the first
	// frame.
	authKnown, authFirst bool
}

func (s *suite) nextConn() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns++
	return s.conns
}

// maxPrefix leaves room in a 128-byte room name for the run ID and the
// checks' suffixes.
const maxPrefix = 64

// Run runs the selected checks one after the other and reports them.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.ReadLimit <= 0 {
		cfg.ReadLimit = 32 << 10
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	if cfg.BadToken == "" {
		cfg.BadToken = defaultBadToken
	}
	if cfg.Token != "" && cfg.Token == cfg.BadToken {
		return Summary{}, errors.New("the bad token is the token the server accepts")
	}
	if len(cfg.Prefix) > maxPrefix {
		return Summary{}, fmt.Errorf("room prefix longer than %d bytes", maxPrefix)
	}
	if !strings.HasPrefix(cfg.URL, "ws://") && !strings.HasPrefix(cfg.URL, "wss://") {
		return Summary{}, fmt.Errorf("URL %q: want ws:// or wss://", cfg.URL)
	}
	var b [8]byte
	rand.Read(b[:])
	s := &suite{cfg: &cfg, runID: hex.EncodeToString(b[:])}

	var sum Summary
	for _, c := range checks() {
		if cfg.Run != nil && !cfg.Run.MatchString(c.name) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		r := Result{Name: c.name, Status: Skip, Reason: "left out by -skip"}
		if cfg.Skip == nil || !cfg.Skip.MatchString(c.name) {
			r = s.runCheck(ctx, c)
		}
		sum.Results = append(sum.Results, r)
		switch r.Status {
		case Pass:
			sum.Passed++
			fmt.Fprintf(cfg.Out, "PASS %s\n", r.Name)
		case Fail:
			sum.Failed++
			fmt.Fprintf(cfg.Out, "FAIL %s: %s\n", r.Name, r.Reason)
		case Skip:
			sum.Skipped++
			fmt.Fprintf(cfg.Out, "SKIP %s: %s\n", r.Name, r.Reason)
		}
	}
	fmt.Fprintf(cfg.Out, "%d checks: %d passed, %d failed, %d skipped\n",
		len(sum.Results), sum.Passed, sum.Failed, sum.Skipped)
	return sum, nil
}

// T is what a check gets: its context, bounded by the check's timeout,
// and ways to open connections and to fail or skip.
type T struct {
	ctx   context.Context
	s     *suite
	name  string
	conns []*conn

	status Status
	reason string
}

// Fatalf fails the check and ends it; it must be called on the check's
// goroutine.
func (t *T) Fatalf(format string, args ...any) {
	t.status, t.reason = Fail, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Skipf says the check cannot apply, and ends it.
func (t *T) Skipf(format string, args ...any) {
	t.status, t.reason = Skip, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// room returns a room name unique to the run and the check.
func (t *T) room(suffix string) string {
	return t.s.cfg.Prefix + t.s.runID + "-" + t.name + suffix
}

func (s *suite) runCheck(ctx context.Context, c check) Result {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	t := &T{ctx: ctx, s: s, name: c.name}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if p := recover(); p != nil {
				t.status, t.reason = Fail, fmt.Sprintf("panic: %v", p)
			}
		}()
		c.run(t)
		if t.status == "" {
			t.status = Pass
		}
	}()
	<-done // every wait of a check ends with its context
	for _, c := range t.conns {
		c.ws.CloseNow()
		<-c.done
	}
	return Result{Name: c.name, Status: t.status, Reason: t.reason}
}
