// Command quickstart serves a hub on /ws, where clients may join any room,
// and broadcasts the text of each POST /announce to the room "lobby"; on
// Ctrl-C or SIGTERM it stops gracefully, in the order docs/DEPLOYING.md
// ("Stopping") explains.
//
//	go run ./examples/quickstart
//	go run ./examples/client -name alice   # in another terminal
//	curl -d text=hello localhost:8080/announce
package main

import (
	"context"
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
	hub := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: func(*wshub.Client, string) error { return nil }, // any room; default: deny
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", hub) // or chi, gorilla/mux, any router
	mux.HandleFunc("POST /announce", func(w http.ResponseWriter, r *http.Request) {
		msg := &wshub.Message{Data: r.FormValue("text")}
		if err := hub.Room("lobby").Broadcast(r.Context(), msg); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}

	ln, err := net.Listen("tcp", "localhost:8080")
	if err != nil {
		log.Fatal(err) // e.g. the port is taken
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Print("listening on ws://localhost:8080/ws; Ctrl-C to stop")
	select {
	case err := <-served:
		log.Fatal(err)
	case <-ctx.Done():
		stop() // a second Ctrl-C kills at once
	}

	// A fresh context (ctx is done), and the hub before the HTTP server.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hub.Shutdown(ctx); err != nil { // queued messages are written, clients get 1001
		log.Print(err)
	}
	if err := srv.Shutdown(ctx); err != nil {
		log.Print(err)
	}
}
