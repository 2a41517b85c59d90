// Chat is a multi-room chat server: a single embedded web page at / and a
// wshub hub at /ws.
//
//	go run ./examples/chat -addr localhost:8080
//
// Open http://localhost:8080 in two browser tabs, or talk to it from a
// terminal with examples/client. The server trusts no one with names: a
// client picks its nickname once, in the /ws?name= query parameter, and the
// server stamps it on everything that client says. The name is the
// client's ID too: two tabs of one name are one user.
//
// Every room tells its members who is in it (wshub's presence): the page
// lists the current room's members and says who joins and leaves, and the
// terminal client has /who.
//
// Every room keeps its last 200 messages for an hour, in memory. The page
// shows a room's last 50 when it opens it, and after a reconnect it gets
// exactly what it missed; when the server cannot replay that (it
// restarted, or more than 200 messages went by), the page says that some
// messages may be missing. The terminal client does the same.
//
// With -status, /debug/wshub serves the hub's status page (wshub's
// Hub.StatusHandler); with -metrics, /metrics serves the hub's figures to
// Prometheus (module wshubprom), with the Go runtime's and the process's.
// Both are operational data, not for the public.
//
// # Login mode
//
// With -login, names come from signed, expiring tokens instead of ?name=:
// a demo of the token mechanics of docs/PROTOCOL.md §11, without
// passwords (a name is all it takes to sign in, as without -login).
//
//	CHAT_TOKEN_KEY=$(openssl rand -base64 32) go run ./examples/chat -login -token-ttl 1m
//
// The endpoints:
//
//	POST /login   form field or JSON "name" (the rules of ?name=): sets an
//	              HttpOnly, SameSite=Strict session cookie holding a signed
//	              session token (a JWT, 24 h); 204, or 400 with the reason
//	GET /token    with the session cookie: {"token": "<JWT>", "expires":
//	              <Unix ms>, "name": "alice"}, an access token for the hub
//	              that lasts -token-ttl (default 5m; never past the
//	              session); 401 without a good session
//	POST /logout  deletes the cookie and closes every connection of the
//	              name, on every hub, with 4003 "signed out"; 204
//
// The hub takes no ?name=: a connection signs in with an access token as
// its first frame (a token never travels in a URL, which logs keep), and
// sends a fresh one before it expires; one that does not is closed with
// 4001, one without a good token with 4003. Tokens are HS256 JWTs whose
// key is CHAT_TOKEN_KEY (at least 32 bytes), so that several servers
// take each other's tokens, or else a random key of the process. A token
// is accepted up to 5 s past its expiry, an allowance for the clocks of
// those servers; the hub adds 5 s of its own before it closes the
// connection. The POST endpoints refuse other sites' requests
// (http.CrossOriginProtection).
//
// The page signs in with a form, takes its tokens from /token, and shows
// "signed out", with the form again, when the server closes it with 4003;
// its Sign out button calls /logout. examples/client does the same with
// -login NAME. Sign-out keeps no state on the server: tokens handed out
// before stay good until they expire (-token-ttl at most), and a copied
// session cookie until its 24 h are over; a real application keeps its
// sessions on the server and checks them at /token.
package main

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/wshubjs"
	"github.com/wshub/wshub/wshubprom"
)

// page holds the chat page, plain HTML, CSS and JavaScript with no build
// step, and its icon. The page imports wshub.js, the browser client of
// package wshubjs, which the server serves next to it.
//
//go:embed index.html favicon.svg
var page embed.FS

// shutdownTimeout bounds how long Ctrl-C waits for clients to be told
// goodbye before connections are cut.
const shutdownTimeout = 5 * time.Second

// debugPages are the pages for operators that flags add.
type debugPages struct {
	status  bool // -status: the hub's status page at /debug/wshub
	metrics bool // -metrics: Prometheus metrics at /metrics
}

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	var debug debugPages
	flag.BoolVar(&debug.status, "status", false, "serve the hub's status page at /debug/wshub; it shows operational data (clients, room names, traffic): do not expose it publicly")
	flag.BoolVar(&debug.metrics, "metrics", false, "serve Prometheus metrics at /metrics: operational data, do not expose it publicly")
	loginMode := flag.Bool("login", false, "sign in at POST /login and connect with expiring tokens from GET /token (key: $CHAT_TOKEN_KEY), instead of ?name=")
	tokenTTL := flag.Duration("token-ttl", 5*time.Minute, "with -login, how long an access token lasts (at least 1s)")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var lg *login
	if *loginMode {
		var key []byte
		var err error
		if *tokenTTL < time.Second {
			err = fmt.Errorf("-token-ttl %v is less than 1s, a token's precision", *tokenTTL)
		} else {
			key, err = tokenKey(logger)
		}
		if err != nil {
			logger.Error("login mode", "err", err)
			os.Exit(2)
		}
		lg = newLogin(key, *tokenTTL, logger)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		logger.Error("listen", "err", err)
		os.Exit(1)
	}
	logger.Info("chat server listening", "url", "http://"+ln.Addr().String())
	if err := serve(ctx, ln, newHub(logger, lg), logger, debug, lg); err != nil {
		logger.Error("serve", "err", err)
		os.Exit(1)
	}
}

// serve runs the chat server, with hub, on ln until ctx is done, then
// shuts it down gracefully: clients are closed with status 1001 (going
// away), which tells the page to reconnect, and the HTTP server stops. It
// returns nil after a clean shutdown, or the error that stopped the server.
// debug adds the operator's pages it asks for; lg, if not nil, the login
// mode's endpoints (hub must be newHub's with the same lg).
func serve(ctx context.Context, ln net.Listener, hub *wshub.Hub, logger *slog.Logger, debug debugPages, lg *login) error {
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", indexPage(lg != nil))
	if lg != nil {
		csrf := http.NewCrossOriginProtection()
		mux.Handle("POST /login", csrf.Handler(http.HandlerFunc(lg.handleLogin)))
		mux.HandleFunc("GET /token", lg.handleToken)
		mux.Handle("POST /logout", csrf.Handler(lg.handleLogout(hub)))
	}
	// The page's client, and its types for editors.
	mux.Handle("GET /wshub.js", wshubjs.Handler())
	mux.Handle("GET /wshub.d.ts", wshubjs.Handler())
	icon := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		http.ServeFileFS(w, r, page, "favicon.svg")
	}
	mux.HandleFunc("GET /favicon.svg", icon) // the page links it
	mux.HandleFunc("GET /favicon.ico", icon) // for what asks without reading the page
	mux.Handle("/ws", hub)
	if debug.status {
		mux.Handle("GET /debug/wshub", hub.StatusHandler())
	}
	if debug.metrics {
		reg := prometheus.NewRegistry()
		reg.MustRegister(wshubprom.NewCollector(hub, nil), collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}

	// The timeouts are for plain HTTP: net/http clears a connection's
	// deadlines when the hub takes it over for a WebSocket, and the hub's
	// pings watch it from then on. ReadHeaderTimeout stops a client that
	// sends its headers slowly from holding a connection (slowloris);
	// IdleTimeout closes keep-alive connections nobody uses, which would
	// otherwise stay open for ever.
	var unused unusedConns
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ConnState:         unused.track,
	}
	srv.RegisterOnShutdown(unused.close)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	select {
	case err := <-served:
		hub.Close()
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// The hub goes first: http.Server.Shutdown does not track upgraded
	// (hijacked) connections, so it would neither wait for nor close them.
	hubErr := hub.Shutdown(shutdownCtx)
	srvErr := srv.Shutdown(shutdownCtx)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		srvErr = errors.Join(srvErr, err)
	}
	return errors.Join(hubErr, srvErr)
}

// loginMark is the page's mark of its mode, which the login mode changes:
// so the page knows it at once, without asking the server.
const loginMark = `<html lang="en" data-mode="name">`

// indexPage serves the chat page, in the login mode with login.
func indexPage(login bool) http.Handler {
	if !login {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeFileFS(w, r, page, "index.html")
		})
	}
	b, err := page.ReadFile("index.html")
	if err != nil || bytes.Count(b, []byte(loginMark)) != 1 {
		panic("index.html lacks its mark " + loginMark) // the embedded page is the program's own
	}
	b = bytes.Replace(b, []byte(loginMark), []byte(`<html lang="en" data-mode="login">`), 1)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(b))
	})
}

// unusedConns are the connections that have not sent a request yet.
// Browsers open one or two ahead of need, and http.Server.Shutdown waits
// for them until they are 5 seconds old, as long as shutdownTimeout: so a
// page loaded just before Ctrl-C made the shutdown fail. Shutdown calls
// close once its listeners are closed; a browser sends its request again
// on a new connection if it was about to use one of these.
type unusedConns struct {
	mu    sync.Mutex
	conns map[net.Conn]bool
}

func (u *unusedConns) track(c net.Conn, state http.ConnState) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if state != http.StateNew {
		delete(u.conns, c)
		return
	}
	if u.conns == nil {
		u.conns = make(map[net.Conn]bool)
	}
	u.conns[c] = true
}

func (u *unusedConns) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for c := range u.conns {
		c.Close()
	}
}
