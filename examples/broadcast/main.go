// Broadcast mounts a hub on an existing router and lets the server talk:
// POST /broadcast/{room} sends its body as text to everyone in the room.
//
//	go run ./examples/broadcast
//	go run ./examples/client -room news
//	curl -d 'hello' localhost:8080/broadcast/news
//
// It prints these commands, with its address, when it starts.
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/wshub/wshub"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	if err := run(ctx, ln, log.Default()); err != nil {
		log.Fatal(err)
	}
}

// run serves on ln until ctx is done, then shuts down: clients get 1001.
// It logs where to connect and how to broadcast first.
func run(ctx context.Context, ln net.Listener, logger *log.Logger) error {
	hub := wshub.New(nil, &wshub.Options{AuthorizeJoin: func(*wshub.Client, string) error { return nil }})
	srv := &http.Server{Handler: newMux(hub), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	host := hostPort(ln.Addr())
	logger.Printf("listening on http://%s; try it, in two more terminals:", host)
	logger.Printf("  go run ./examples/client -url ws://%s/ws -room news", host)
	logger.Printf("  curl -d hello http://%s/broadcast/news", host)

	select {
	case err := <-served:
		hub.Close()
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hubErr := hub.Shutdown(shutdownCtx) // first: srv.Shutdown does not close WebSockets
	srvErr := srv.Shutdown(shutdownCtx)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		srvErr = errors.Join(srvErr, err)
	}
	return errors.Join(hubErr, srvErr)
}

// hostPort is addr as a client would dial it: localhost for a server that
// listens on every interface.
func hostPort(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

// newMux is the application's router; the hub is one more handler on it.
func newMux(hub *wshub.Hub) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.Handle("/ws", hub)
	mux.HandleFunc("POST /broadcast/{room}", func(w http.ResponseWriter, r *http.Request) {
		text, _ := io.ReadAll(io.LimitReader(r.Body, 4<<10))
		msg := &wshub.Message{Data: map[string]string{"text": string(text)}}
		if err := hub.Room(r.PathValue("room")).Broadcast(r.Context(), msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}
