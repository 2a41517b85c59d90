// Broadcast mounts a hub on an existing router and lets the server talk:
// POST /broadcast/{room} sends its body as text to everyone in the room.
//
//	go run ./examples/broadcast
//	go run ./examples/client -room news
//	curl -d 'hello' localhost:8080/broadcast/news
package main

import (
	"flag"
	"io"
	"log"
	"net/http"

	"github.com/wshub/wshub"
)

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	flag.Parse()
	hub := wshub.New(nil, &wshub.Options{AuthorizeJoin: func(*wshub.Client, string) error { return nil }})
	log.Fatal(http.ListenAndServe(*addr, newMux(hub)))
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
