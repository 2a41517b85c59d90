// Command cluster shows a wshub room spanning two hubs. It runs, in one
// process, an embedded NATS server on 127.0.0.1 and two hubs joined by
// natsbroker, each serving the same small chat page:
//
//	go run ./examples/cluster
//
// The first run compiles the embedded NATS server, which can take a minute
// or more and prints nothing meanwhile; later runs start in seconds.
//
// Open http://localhost:8081 and http://localhost:8082 in two windows:
// each page is served by its own hub, and a message sent on one appears
// on the other, tagged with the node it was sent from. Ctrl-C shuts down
// gracefully.
//
// With an external NATS server instead of the embedded one, and one hub
// per process as it would be on separate machines:
//
//	nats-server -a 127.0.0.1 -p 4222   # or: docker run -p 4222:4222 nats
//	go run ./examples/cluster -nats nats://127.0.0.1:4222 -a localhost:8081 -b ''
//	go run ./examples/cluster -nats nats://127.0.0.1:4222 -a localhost:8082 -b ''
//
// The hubs listen on localhost only; on separate machines, give them an
// address others can reach, such as -a :8081 for every interface.
//
// By default the room goes through core NATS: each sender's messages keep
// their order, but two people typing at once may see their messages in a
// different order on each node. With -log, rooms go through natsbroker's
// room log, in NATS JetStream: every node shows one conversation in one
// order (each message has its seq, shown on the page), and a message is
// acknowledged once stored. The embedded NATS server then runs JetStream,
// with its store in a temporary directory removed on exit; an external one
// needs JetStream enabled (nats-server -js):
//
//	go run ./examples/cluster -log
//
// With -redis, the nodes use Redis instead of NATS, through redisengine,
// and no NATS server is started. As with -log, rooms keep history: each
// room goes through one Redis Stream, so every node shows one conversation
// in one order, with seqs. It needs a running Redis server (for instance
// redis-server --port 6379):
//
//	go run ./examples/cluster -redis redis://127.0.0.1:6379
//
// Flags:
//
//	-a ADDR         listen address of node A (default localhost:8081; empty: no node A)
//	-b ADDR         listen address of node B (default localhost:8082; empty: no node B)
//	-log            rooms go through a JetStream room log, with history: one order on every node
//	-nats URL       NATS server to use; empty starts an embedded one
//	-nats-port N    port of the embedded NATS server (default -1: any free port)
//	-redis URL      Redis server to use instead of NATS (redis://host:port or host:port),
//	                with history as with -log; -log, -nats and -nats-port are then unused
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/natsbroker"
	"github.com/wshub/wshub/redisengine"
)

//go:embed page.html
var pageHTML string

var page = template.Must(template.New("page").Parse(pageHTML))

// config is what the flags set.
type config struct {
	Addrs    []string // one hub per address
	Names    []string // of the hubs, "A" and "B"; by index when empty
	Log      bool     // rooms go through a JetStream room log
	NATSURL  string   // empty: start an embedded NATS server
	NATSPort int      // the embedded server's port; server.RANDOM_PORT for any
	RedisURL string   // when set, the nodes use Redis, with history, instead of NATS
}

// logHistory is what each room keeps in the room log, with -log or -redis:
// its last 100 messages, for an hour (wshub's default age).
var logHistory = wshub.HistoryPolicy{Messages: 100}

func main() {
	var cfg config
	a := flag.String("a", "localhost:8081", "listen address of node A (empty: no node A)")
	b := flag.String("b", "localhost:8082", "listen address of node B (empty: no node B)")
	flag.BoolVar(&cfg.Log, "log", false, "rooms go through a JetStream room log: one order on every node (NATS needs JetStream)")
	flag.StringVar(&cfg.NATSURL, "nats", "", "NATS server URL; empty starts an embedded server on 127.0.0.1")
	flag.IntVar(&cfg.NATSPort, "nats-port", server.RANDOM_PORT, "port of the embedded NATS server (-1: any free port)")
	flag.StringVar(&cfg.RedisURL, "redis", "", "Redis server URL (redis://host:port or host:port): the nodes use Redis, with history, instead of NATS")
	flag.Parse()
	for i, addr := range []string{*a, *b} {
		if addr != "" {
			cfg.Addrs = append(cfg.Addrs, addr)
			cfg.Names = append(cfg.Names, nodeName(i))
		}
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, cfg, logger, func(urls []string) {
		for i, u := range urls {
			logger.Info("node ready: open it in a browser", "node", cfg.name(i), "url", u)
		}
	})
	if err != nil {
		logger.Error("cluster", "err", err)
		os.Exit(1)
	}
	logger.Info("stopped")
}

func nodeName(i int) string { return string(rune('A' + i)) }

// name returns the name of node i: from Names, or by its index.
func (c config) name(i int) string {
	if i < len(c.Names) {
		return c.Names[i]
	}
	return nodeName(i)
}

// run serves one hub per address until ctx is done, then shuts everything
// down gracefully. ready gets the page URL of each node once all listen.
func run(ctx context.Context, cfg config, logger *slog.Logger, ready func(urls []string)) error {
	if len(cfg.Addrs) == 0 {
		return errors.New("no node to run: -a and -b are both empty")
	}
	ec := engineConfig{natsURL: cfg.NATSURL, log: cfg.Log, redisURL: cfg.RedisURL}
	if ec.redisURL != "" {
		logger.Info("engine: Redis", "url", redacted(ec.redisURL))
	} else if ec.natsURL == "" {
		var store string // JetStream's, for the room log
		if cfg.Log {
			dir, err := os.MkdirTemp("", "wshub-cluster-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(dir) // after the server's shutdown, deferred below
			store = dir
		}
		ns, err := startNATS(cfg.NATSPort, store)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		ec.natsURL = ns.ClientURL()
		logger.Info("embedded NATS server", "url", ec.natsURL, "jetstream", cfg.Log)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var nodes []*node
	defer func() {
		for _, n := range nodes {
			n.shutdown(logger)
		}
	}()
	for i, addr := range cfg.Addrs {
		n, err := startNode(cfg.name(i), addr, ec, logger)
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	errc := make(chan error, len(nodes))
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = pageURL(n.ln.Addr())
		wg.Go(func() {
			if err := n.srv.Serve(n.ln); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("node %s: %w", n.name, err)
				cancel()
			}
		})
	}
	ready(urls)
	<-ctx.Done()
	// Shut the nodes down, together, before waiting for Serve to return.
	for _, n := range nodes {
		wg.Go(func() { n.shutdown(logger) })
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// redacted returns a Redis URL without its password, if it has one.
func redacted(redisURL string) string {
	if u, err := url.Parse(redisURL); err == nil && u.User != nil {
		return u.Redacted()
	}
	return redisURL
}

// pageURL is the URL of the page served on addr, with localhost for an
// unspecified host such as that of ":8081".
func pageURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// startNATS starts an embedded NATS server on 127.0.0.1, with JetStream
// storing in store unless store is empty.
func startNATS(port int, store string) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true,
		JetStream: store != "", StoreDir: store})
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("nats server: not ready after 10s")
	}
	return ns, nil
}

// node is one hub with its HTTP server.
type node struct {
	name string
	hub  *wshub.Hub
	srv  *http.Server
	ln   net.Listener
	once sync.Once
}

// engineConfig says which engine a node connects to.
type engineConfig struct {
	natsURL  string
	log      bool   // NATS with a room log
	redisURL string // when set, Redis instead of NATS
}

// name is what the page says messages cross through.
func (ec engineConfig) name() string {
	if ec.redisURL != "" {
		return "Redis"
	}
	return "NATS"
}

// pageData is what the page shows: the node's name, and what its messages
// cross through.
type pageData struct{ Node, Via string }

// startNode starts a hub on an engine of its own: with Redis, redisengine,
// through which every room goes, with logHistory, as one Redis Stream;
// with NATS and a log, a room log, through which every room goes, with
// logHistory; else core NATS.
func startNode(name, addr string, ec engineConfig, logger *slog.Logger) (*node, error) {
	opts := &wshub.Options{
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		Logger:        logger.With("node", name),
	}
	withHistory := func(string) wshub.RoomOptions { return wshub.RoomOptions{History: logHistory} }
	var err error
	switch {
	case ec.redisURL != "":
		// The hub reads and writes the rooms' histories in their streams.
		opts.Engine, err = redisengine.Connect(ec.redisURL, nil)
		opts.Rooms = withHistory
	case ec.log:
		// The hub reads and writes the rooms' histories in the log.
		opts.Engine, err = natsbroker.ConnectLog(ec.natsURL, nil)
		opts.Rooms = withHistory
	default:
		opts.Engine, err = natsbroker.Connect(ec.natsURL, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	hub := wshub.New(nil, opts)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		hub.Close() // closes the engine and its connection
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", hub)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, pageData{Node: name, Via: ec.name()}); err != nil {
			logger.Warn("page", "err", err)
		}
	})
	// Timeouts for plain HTTP (see examples/chat): net/http clears them on
	// the connections the hub takes over.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	return &node{name: name, hub: hub, srv: srv, ln: ln}, nil
}

// shutdown closes the node's WebSocket clients gracefully, then its HTTP
// server; the hub closes its engine, which closes its NATS or Redis
// connection.
// Calling it again does nothing.
func (n *node) shutdown(logger *slog.Logger) {
	n.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.hub.Shutdown(ctx); err != nil {
			logger.Warn("hub shutdown", "node", n.name, "err", err)
		}
		if err := n.srv.Shutdown(ctx); err != nil {
			logger.Warn("http shutdown", "node", n.name, "err", err)
		}
		n.ln.Close() // in case Serve never ran
	})
}
