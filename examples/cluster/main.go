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
// Flags:
//
//	-a ADDR         listen address of node A (default localhost:8081; empty: no node A)
//	-b ADDR         listen address of node B (default localhost:8082; empty: no node B)
//	-nats URL       NATS server to use; empty starts an embedded one
//	-nats-port N    port of the embedded NATS server (default -1: any free port)
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
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/natsbroker"
)

//go:embed page.html
var pageHTML string

var page = template.Must(template.New("page").Parse(pageHTML))

// config is what the flags set.
type config struct {
	Addrs    []string // one hub per address
	NATSURL  string   // empty: start an embedded NATS server
	NATSPort int      // the embedded server's port; server.RANDOM_PORT for any
}

func main() {
	var cfg config
	a := flag.String("a", "localhost:8081", "listen address of node A (empty: no node A)")
	b := flag.String("b", "localhost:8082", "listen address of node B (empty: no node B)")
	flag.StringVar(&cfg.NATSURL, "nats", "", "NATS server URL; empty starts an embedded server on 127.0.0.1")
	flag.IntVar(&cfg.NATSPort, "nats-port", server.RANDOM_PORT, "port of the embedded NATS server (-1: any free port)")
	flag.Parse()
	for _, addr := range []string{*a, *b} {
		if addr != "" {
			cfg.Addrs = append(cfg.Addrs, addr)
		}
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, cfg, logger, func(urls []string) {
		for i, u := range urls {
			logger.Info("node ready: open it in a browser", "node", nodeName(i), "url", u)
		}
	})
	if err != nil {
		logger.Error("cluster", "err", err)
		os.Exit(1)
	}
	logger.Info("stopped")
}

func nodeName(i int) string { return string(rune('A' + i)) }

// run serves one hub per address until ctx is done, then shuts everything
// down gracefully. ready gets the page URL of each node once all listen.
func run(ctx context.Context, cfg config, logger *slog.Logger, ready func(urls []string)) error {
	if len(cfg.Addrs) == 0 {
		return errors.New("no node to run: -a and -b are both empty")
	}
	natsURL := cfg.NATSURL
	if natsURL == "" {
		ns, err := startNATS(cfg.NATSPort)
		if err != nil {
			return err
		}
		defer func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		}()
		natsURL = ns.ClientURL()
		logger.Info("embedded NATS server", "url", natsURL)
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
		n, err := startNode(nodeName(i), addr, natsURL, logger)
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

// startNATS starts an embedded NATS server on 127.0.0.1.
func startNATS(port int) (*server.Server, error) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, NoLog: true, NoSigs: true})
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

func startNode(name, addr, natsURL string, logger *slog.Logger) (*node, error) {
	b, err := natsbroker.Connect(natsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	hub := wshub.New(nil, &wshub.Options{
		Broker:        b,
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		Logger:        logger.With("node", name),
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		hub.Close() // closes the broker and its connection
		return nil, fmt.Errorf("node %s: %w", name, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", hub)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := page.Execute(w, name); err != nil {
			logger.Warn("page", "err", err)
		}
	})
	// Timeouts for plain HTTP (see examples/chat): net/http clears them on
	// the connections the hub takes over.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	return &node{name: name, hub: hub, srv: srv, ln: ln}, nil
}

// shutdown closes the node's WebSocket clients gracefully, then its HTTP
// server; the hub closes its broker, which closes its NATS connection.
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
