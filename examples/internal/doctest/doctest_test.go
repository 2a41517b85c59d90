// Package doctest checks the code of README.md and docs/ as a reader uses
// it: every Go block compiles, the install steps and the Quick start run,
// the browser page runs in Chromium against a real hub and shows a
// message, and the frames shown are the ones a hub sends.
package doctest

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/scanner"
	"go/token"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/examples/internal/browser"
	"github.com/wshub/wshub/wshubjs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// timeout bounds every wait; generous, since failing is the only way to
// reach it, and builds run on a busy machine.
const timeout = 3 * time.Minute

// root is the repository's root.
const root = "../../.."

// docs are the documents whose code blocks a reader pastes.
func docs(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{filepath.Join(root, "README.md"), filepath.Join(root, "BENCHMARKS.md")}, files...)
}

// block is a fenced code block of a document.
type block struct {
	file string
	line int // of the opening fence
	lang string
	code string
}

func (b block) String() string { return fmt.Sprintf("%s:%d", filepath.Base(b.file), b.line) }

var fence = regexp.MustCompile("^```([a-z]*)$")

// blocks returns the code blocks of file in language lang.
func blocks(t *testing.T, file, lang string) []block {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []block
	var cur *block
	for i, line := range strings.Split(string(src), "\n") {
		switch {
		case cur == nil:
			if m := fence.FindStringSubmatch(line); m != nil {
				cur = &block{file: file, line: i + 1, lang: m[1]}
			}
		case line == "```":
			if cur.lang == lang {
				out = append(out, *cur)
			}
			cur = nil
		default:
			cur.code += line + "\n"
		}
	}
	return out
}

// section returns the part of a document under the heading head, up to
// the next heading of the same level.
func section(t *testing.T, file, head string) string {
	t.Helper()
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	level := head[:strings.IndexByte(head, ' ')+1]
	_, s, ok := strings.Cut(string(src), "\n"+head+"\n")
	if !ok {
		t.Fatalf("%s has no %q", file, head)
	}
	s, _, _ = strings.Cut(s, "\n"+level)
	return s
}

// packages are the imports a Go block may use without writing them: the
// path of each package name.
var packages = map[string]string{
	"context":     "context",
	"errors":      "errors",
	"fmt":         "fmt",
	"http":        "net/http",
	"json":        "encoding/json",
	"log":         "log",
	"os":          "os",
	"signal":      "os/signal",
	"slog":        "log/slog",
	"strings":     "strings",
	"syscall":     "syscall",
	"time":        "time",
	"wshub":       "github.com/wshub/wshub",
	"client":      "github.com/wshub/wshub/client",
	"wshubjs":     "github.com/wshub/wshub/wshubjs",
	"natsbroker":  "github.com/wshub/wshub/natsbroker",
	"redisengine": "github.com/wshub/wshub/redisengine",
	"wshubprom":   "github.com/wshub/wshub/wshubprom",
	"prometheus":  "github.com/prometheus/client_golang/prometheus",
	"collectors":  "github.com/prometheus/client_golang/prometheus/collectors",
	"promhttp":    "github.com/prometheus/client_golang/prometheus/promhttp",
}

// prelude declares what the fragments of the documents take as given.
const prelude = `
var (
	ctx     context.Context
	hub     *wshub.Hub
	mux     *http.ServeMux
	handler wshub.Handler
)
`

// program turns a Go block into a main package: a complete file as it
// is; declarations with a package clause and their imports; statements
// inside a function, with the prelude, and with every variable they
// declare used.
func program(b block) (string, error) {
	if strings.HasPrefix(b.code, "package ") {
		return b.code, nil
	}
	used := map[string]bool{}
	var s scanner.Scanner
	fset := token.NewFileSet()
	s.Init(fset.AddFile("", -1, len(b.code)), []byte(b.code), nil, 0)
	prev := ""
	for {
		_, tok, lit := s.Scan()
		if tok == token.EOF {
			break
		}
		if tok == token.PERIOD && packages[prev] != "" {
			used[prev] = true
		}
		prev = ""
		if tok == token.IDENT {
			prev = lit
		}
	}
	imports := func(more ...string) string {
		for _, n := range more {
			used[n] = true
		}
		var paths []string
		for n := range used {
			paths = append(paths, fmt.Sprintf("%q", packages[n]))
		}
		slices.Sort(paths)
		return "package main\n\nimport (\n\t" + strings.Join(paths, "\n\t") + "\n)\n\n"
	}
	// Declarations: a file but for its package clause and imports.
	if _, err := parser.ParseFile(token.NewFileSet(), "", "package p\n"+b.code, 0); err == nil {
		return imports() + b.code + "\nfunc main() {}\n", nil
	}
	body := "package p\nfunc f() {\n" + b.code + "\n}\n"
	f, err := parser.ParseFile(token.NewFileSet(), "", body, 0)
	if err != nil {
		return "", fmt.Errorf("neither declarations nor statements: %w", err)
	}
	var declared []string
	for _, st := range f.Decls[0].(*ast.FuncDecl).Body.List {
		if as, ok := st.(*ast.AssignStmt); ok && as.Tok == token.DEFINE {
			for _, l := range as.Lhs {
				if id, ok := l.(*ast.Ident); ok && id.Name != "_" {
					declared = append(declared, "\t_ = "+id.Name+"\n")
				}
			}
		}
	}
	return imports("context", "http", "wshub") + prelude + "\nfunc main() {\n" + b.code + strings.Join(declared, "") + "}\n", nil
}

// goEnv is the environment of the go commands the tests run: outside the
// workspace, as in a user's own module.
func goEnv(dir string) []string {
	return append(os.Environ(), "GOWORK=off", "PWD="+dir)
}

// run runs a command in dir and returns its output, failing the test if it
// fails.
func run(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = goEnv(dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s in %s: %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// TestGoBlocks: every Go block of the documents compiles and passes vet,
// each as a program of its own in a module that requires wshub,
// natsbroker, redisengine and wshubprom as a user's would.
func TestGoBlocks(t *testing.T) {
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	gomod := fmt.Sprintf(`module example.com/doctest

go 1.26.0

require (
	github.com/wshub/wshub v0.0.0-00010101000000-000000000000
	github.com/wshub/wshub/natsbroker v0.0.0-00010101000000-000000000000
	github.com/wshub/wshub/redisengine v0.0.0-00010101000000-000000000000
	github.com/wshub/wshub/wshubprom v0.0.0-00010101000000-000000000000
)

replace github.com/wshub/wshub => %s

replace github.com/wshub/wshub/natsbroker => %s

replace github.com/wshub/wshub/redisengine => %s

replace github.com/wshub/wshub/wshubprom => %s
`, abs, filepath.Join(abs, "natsbroker"), filepath.Join(abs, "redisengine"), filepath.Join(abs, "wshubprom"))
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(gomod), 0o644); err != nil {
		t.Fatal(err)
	}
	// The checksums of natsbroker's and redisengine's dependencies, which
	// examples/cluster requires too, and of wshubprom's.
	var sums []byte
	for _, mod := range []string{filepath.Join("examples", "cluster"), "wshubprom"} {
		b, err := os.ReadFile(filepath.Join(abs, mod, "go.sum"))
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, b...)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.sum"), sums, 0o644); err != nil {
		t.Fatal(err)
	}
	where := map[string]block{}
	for _, doc := range docs(t) {
		for _, b := range blocks(t, doc, "go") {
			src, err := program(b)
			if err != nil {
				t.Errorf("%v: %v", b, err)
				continue
			}
			pkg := fmt.Sprintf("b%02d", len(where))
			where[pkg] = b
			if err := os.Mkdir(filepath.Join(dir, pkg), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, pkg, "main.go"), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(where) < 8 {
		t.Fatalf("found %d Go blocks in %v; the documents have more", len(where), docs(t))
	}
	run(t, dir, "go", "mod", "tidy")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "vet", "./...")
	cmd.Dir = dir
	cmd.Env = goEnv(dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		// Name the block of each error: "b03/main.go:7:2: ..." is README.md:120.
		msg := string(out)
		for pkg, b := range where {
			msg = strings.ReplaceAll(msg, pkg+"/main.go", b.String()+" (as "+pkg+"/main.go)")
		}
		t.Fatalf("go vet: %v\n%s", err, msg)
	}
}

// copyCore copies the core module of the repository (what a user's
// replace directive leads to) into dir: every file outside the modules of
// the examples, the benchmarks and natsbroker, and outside .git.
func copyCore(t *testing.T, dir string) {
	t.Helper()
	copyDir(t, root, dir)
}

// copyDir copies the files of the module at from into to, without the
// directories of other modules, hidden ones, and files over 1 MiB (test
// binaries and the like).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir // another module
			}
			return os.MkdirAll(filepath.Join(to, rel), 0o755)
		}
		info, err := d.Info()
		if err != nil || !info.Mode().IsRegular() || info.Size() > 1<<20 || rel == "go.work" || rel == "go.work.sum" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestInstallAndQuickStart follows README.md's Install with its Quick
// start as main.go, in a copy of the clone, then runs the program (on a
// free port instead of 8080, which another program may hold) and talks
// to it as its paragraph says: a client named by ?name= joins the lobby,
// sees its own message from its name, and the server's time.
func TestInstallAndQuickStart(t *testing.T) {
	readme := filepath.Join(root, "README.md")
	install := blocks(t, readme, "sh")
	install = slices.DeleteFunc(install, func(b block) bool { return !strings.Contains(b.code, "go mod init") })
	if len(install) != 1 {
		t.Fatalf("README.md has %d sh blocks with go mod init, want 1", len(install))
	}
	before, after, ok := strings.Cut(install[0].code, "# save the Quick start below as main.go, then:\n")
	if !ok || after != "go mod tidy && go run .\n" {
		t.Fatalf("%v: the install steps no longer end with saving main.go, then %q; update this test:\n%s",
			install[0], "go mod tidy && go run .", install[0].code)
	}
	var quick []block
	for _, b := range blocks(t, readme, "go") {
		if strings.HasPrefix(b.code, "package main") {
			quick = append(quick, b)
		}
	}
	if len(quick) != 1 || !strings.Contains(quick[0].code, `"localhost:8080"`) {
		t.Fatalf("README.md has %d complete programs, want the Quick start, listening on localhost:8080", len(quick))
	}
	if n := strings.Count(quick[0].code, "\n"); n > 30 {
		t.Errorf("the Quick start is %d lines", n)
	}

	top := t.TempDir()
	clone := filepath.Join(top, "wshub")
	copyCore(t, clone)
	run(t, clone, "bash", "-euo", "pipefail", "-c", before)
	app := filepath.Join(top, "myapp")
	addr := freeAddr(t)
	src := strings.Replace(quick[0].code, `"localhost:8080"`, fmt.Sprintf("%q", addr), 1)
	if err := os.WriteFile(filepath.Join(app, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, app, "bash", "-euo", "pipefail", "-c", "go mod tidy && go build -o app .")

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(app, "app"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	conn := dialWhenUp(t, ctx, "ws://"+addr+"/ws?name=alice")
	defer conn.CloseNow()
	send(t, ctx, conn, `{"type":"join","room":"lobby","id":"1"}`)
	send(t, ctx, conn, `{"type":"publish","room":"lobby","data":{"text":"hi"},"id":"2"}`)
	var acks, own, ticks int
	for acks < 2 || own < 1 || ticks < 1 {
		var m wshub.Message
		_, b, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v (acks %d, own %d, ticks %d)", err, acks, own, ticks)
		}
		if err := (wshub.JSONCodec{}).Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		switch {
		case m.Type == wshub.TypeAck:
			acks++
		case m.Type == wshub.TypeMessage && m.From == "alice" && string(raw(m)) == `{"text":"hi"}`:
			own++
		case m.Type == wshub.TypeMessage && m.From == "" && m.Room == "lobby":
			if _, err := time.Parse(`"15:04:05"`, string(raw(m))); err != nil {
				t.Fatalf("the server's message %s is not the time", b)
			}
			ticks++
		default:
			t.Fatalf("unexpected frame %s", b)
		}
	}
}

// raw is the data of a message as it came.
func raw(m wshub.Message) json.RawMessage {
	b, _ := m.Data.(json.RawMessage)
	return b
}

// TestCopyExample follows docs/DEPLOYING.md's steps to start a service
// from examples/chat, in a copy of the clone, and builds the result.
func TestCopyExample(t *testing.T) {
	doc := filepath.Join(root, "docs", "DEPLOYING.md")
	steps := blocks(t, doc, "sh")
	steps = slices.DeleteFunc(steps, func(b block) bool { return !strings.Contains(b.code, "cp -r examples/chat") })
	if len(steps) != 1 {
		t.Fatalf("docs/DEPLOYING.md has %d sh blocks that copy examples/chat, want 1", len(steps))
	}
	script, ok := strings.CutSuffix(steps[0].code, "go mod tidy && go run .\n")
	if !ok {
		t.Fatalf("%v no longer ends with %q; update this test:\n%s", steps[0], "go mod tidy && go run .", steps[0].code)
	}
	top := t.TempDir()
	clone := filepath.Join(top, "wshub")
	copyCore(t, clone)
	copyDir(t, filepath.Join(root, "examples", "chat"), filepath.Join(clone, "examples", "chat"))
	copyDir(t, filepath.Join(root, "wshubprom"), filepath.Join(clone, "wshubprom"))
	run(t, clone, "bash", "-euo", "pipefail", "-c", script+"go mod tidy && go vet . && go build -o app .\n")
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// dialWhenUp dials url until the program behind it listens.
func dialWhenUp(t *testing.T, ctx context.Context, url string) *websocket.Conn {
	t.Helper()
	for {
		conn, _, err := websocket.Dial(ctx, url, nil)
		if err == nil {
			return conn
		}
		select {
		case <-ctx.Done():
			t.Fatalf("dial %s: %v", url, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func send(t *testing.T, ctx context.Context, conn *websocket.Conn, frame string) {
	t.Helper()
	if err := conn.Write(ctx, websocket.MessageText, []byte(frame)); err != nil {
		t.Fatal(err)
	}
}

// quickHub is a hub with the Quick start's options: clients named by
// ?name=, any room.
func quickHub(t *testing.T) *wshub.Hub {
	hub := wshub.New(nil, &wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			return wshub.Identity{ID: r.URL.Query().Get("name")}, nil
		},
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
	})
	t.Cleanup(func() { hub.Close() })
	return hub
}

// TestBrowserPage: the complete page of docs/CLIENTS.md, served as it
// says with wshub.js, runs in Chromium: it shows its own message, then
// one the server broadcasts, and says it is online.
func TestBrowserPage(t *testing.T) {
	pages := blocks(t, filepath.Join(root, "docs", "CLIENTS.md"), "html")
	if len(pages) != 1 {
		t.Fatalf("docs/CLIENTS.md has %d html blocks, want the page", len(pages))
	}
	hub := quickHub(t)
	mux := http.NewServeMux()
	mux.Handle("/ws", hub)
	mux.Handle("/wshub/", http.StripPrefix("/wshub/", wshubjs.Handler()))
	// Chromium asks for one; a 404 would be an error in the console.
	mux.HandleFunc("GET /favicon.ico", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, pages[0].code)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tab := browser.Start(t)
	ctx, cancel := context.WithTimeout(tab, timeout)
	defer cancel()
	var mu sync.Mutex
	var problems []string // errors and exceptions in the page's console
	watch, stopWatch := context.WithCancel(tab)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for m, err := range chromedp.Console(watch) {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, m.String())
				mu.Unlock()
			}
		}
	}()
	defer func() {
		stopWatch()
		<-watched
	}()
	consoleErrors := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(problems)
	}
	shows := func(text string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.getElementById("log").textContent.includes(%q)`, text),
			chromedp.WithPollingTimeout(timeout))
	}
	err := chromedp.Do(ctx,
		chromedp.Navigate(srv.URL),
		shows(`[lobby] alice: {"text":"hi"}`),
		chromedp.Poll[chromedp.Void](`document.getElementById("status").textContent === "online"`, chromedp.WithPollingTimeout(timeout)),
	)
	if err != nil {
		t.Fatalf("the page: %v; console errors: %v", err, consoleErrors())
	}
	if err := hub.Room("lobby").Broadcast(ctx, &wshub.Message{Data: "from the server"}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, shows(`[lobby] server: "from the server"`)); err != nil {
		t.Fatalf("the server's message: %v; console errors: %v", err, consoleErrors())
	}
	if p := consoleErrors(); len(p) > 0 {
		t.Fatalf("errors in the page's console: %v", p)
	}
}

// TestErrorFrames: the error frames docs/CLIENTS.md shows are the ones a
// hub with the default AuthorizeJoin sends.
func TestErrorFrames(t *testing.T) {
	shown := section(t, filepath.Join(root, "docs", "CLIENTS.md"), "## What every client does")
	hub := wshub.New(nil, nil) // joins are denied by default
	t.Cleanup(func() { hub.Close() })
	srv := httptest.NewServer(hub)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	for _, frame := range []string{
		`{"type":"join","room":"lobby","id":"1"}`,
		`{"type":"publish","room":"lobby","data":"hi"}`,
	} {
		send(t, ctx, conn, frame)
		_, got, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(shown, "\n"+string(got)+"\n") {
			t.Errorf("the answer to %s is %s, which docs/CLIENTS.md does not show", frame, got)
		}
	}
}

// TestREADMELength: the README stays short enough to read in ten minutes;
// what does not fit goes to docs/.
func TestREADMELength(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > 200 {
		t.Fatalf("README.md has %d lines, more than 200: move the details to docs/", n)
	}
}
