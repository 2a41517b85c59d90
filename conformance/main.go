// Command conformance checks, black-box, that a server speaks the wshub
// protocol (docs/PROTOCOL.md, version 1): each check exercises MUSTs of
// the specification over real WebSocket connections.
//
//	go run ./conformance -url 'ws://127.0.0.1:8080/ws?name=x'
//
// It prints one line per check, "PASS name", "FAIL name: why" or
// "SKIP name: reason" (a check that cannot apply to this server, never a
// pass), then a summary line, and exits with status 1 if a check failed.
//
// Every connection dials -url. A check that needs several clients opens
// several connections; to make them distinct clients of a server that
// names clients from the URL, give -id-param (the query parameter the
// suite sets to a value unique to each connection) or put {n} in the URL
// (replaced the same way).
//
// Every room the suite uses is new: its name is -prefix, a random run ID,
// and the check's name (at most 128 bytes in all), so the suite can run
// against a live server without touching real rooms. The server must let
// clients join any room whose name starts with the prefix. The history
// checks need those rooms to keep history, and the presence checks need
// them to have presence; otherwise those checks SKIP. The shutdown check,
// last, runs -shutdown-cmd (with sh -c), which must make the server shut
// down gracefully; without it the check SKIPs. The read-limit check
// expects the default limit, 32 KiB, unless -read-limit says otherwise.
//
// The token checks (PROTOCOL.md §11) need a token the server accepts,
// -token (any number of times during the run), and one it refuses,
// -bad-token (default "wshub-conformance-invalid-token"); without -token
// those that need it SKIP. The suite learns once, from a probe connection
// whose first frame is a join, whether the server requires sign-in with
// the first frame (it closes that connection with 4003). If it does,
// every connection of every check signs in with -token first, and the
// sign-in checks apply; if not, they SKIP, and auth-frame-not-fatal
// checks that an "auth" frame, even sent first, is answered with an ack
// or an error, never with a close. In every check, the ttl of an auth
// frame or of an ack must be an integer ≥ 1, and frames of types the
// suite does not know are ignored.
//
// -run and -skip select checks by name (regular expressions), -timeout
// bounds each check (10 s). Every check uses connections of its own and
// closes them when it ends.
//
// The suite is tested against the reference server (wshub.Hub with
// history and presence, signing clients in from the upgrade request, with
// tokens over the connection or with the first frame), which passes every
// check that applies, and against a small deliberately broken server,
// whose faults fail the checks of the rules they break.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"time"
)

func main() {
	var cfg Config
	flag.StringVar(&cfg.URL, "url", "", "WebSocket URL of the server (ws:// or wss://); {n} is replaced by a value unique to each connection")
	flag.StringVar(&cfg.IDParam, "id-param", "", "query parameter set to a value unique to each connection (for servers that name clients from the query)")
	flag.StringVar(&cfg.Prefix, "prefix", "conformance-", "start of every room name the suite uses")
	flag.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "bound of each check")
	flag.IntVar(&cfg.ReadLimit, "read-limit", 32<<10, "the server's read limit, in bytes, for the read-limit check")
	flag.StringVar(&cfg.Token, "token", "", "a token the server accepts (first-frame sign-in, refresh), for the token checks")
	flag.StringVar(&cfg.BadToken, "bad-token", defaultBadToken, "a token the server refuses, for the token checks")
	run := flag.String("run", "", "run only the checks whose names match this regular expression")
	skip := flag.String("skip", "", "leave out the checks whose names match this regular expression (reported as SKIP)")
	shutdownCmd := flag.String("shutdown-cmd", "", "shell command that shuts the server down gracefully, for the shutdown check (last)")
	flag.Parse()
	if cfg.URL == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: conformance -url ws://host:port/path [flags]")
		flag.PrintDefaults()
		os.Exit(2)
	}
	for _, f := range []struct {
		name, expr string
		re         **regexp.Regexp
	}{{"run", *run, &cfg.Run}, {"skip", *skip, &cfg.Skip}} {
		if f.expr == "" {
			continue
		}
		re, err := regexp.Compile(f.expr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "conformance: -%s: %v\n", f.name, err)
			os.Exit(2)
		}
		*f.re = re
	}
	if *shutdownCmd != "" {
		cfg.Shutdown = func(ctx context.Context) error {
			cmd := exec.CommandContext(ctx, "sh", "-c", *shutdownCmd)
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			return cmd.Run()
		}
	}
	cfg.Out = os.Stdout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	sum, err := Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(2)
	}
	if sum.Failed > 0 {
		os.Exit(1)
	}
}
