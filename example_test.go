package wshub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// Mount a hub on a mux, let clients join any room, and talk to it with a
// WebSocket client speaking the JSON protocol.
func Example() {
	hub := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
	})
	mux := http.NewServeMux()
	mux.Handle("/ws", hub)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	defer hub.Close()

	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		panic(err)
	}
	defer conn.CloseNow()
	for _, req := range []string{
		`{"type":"join","room":"lobby","id":"1"}`,
		`{"type":"publish","room":"lobby","data":"hi","id":"2"}`,
	} {
		conn.Write(ctx, websocket.MessageText, []byte(req))
	}
	for range 3 {
		_, b, _ := conn.Read(ctx)
		var m map[string]any
		json.Unmarshal(b, &m)
		delete(m, "from") // a random client ID
		fmt.Println(m)
	}
	// Output:
	// map[id:1 type:ack]
	// map[data:hi room:lobby type:message]
	// map[id:2 type:ack]
}

// Broadcast from the server, for example from an HTTP handler, to a room
// that clients were put in when they connected.
func ExampleRoom_Broadcast() {
	joined := make(chan struct{})
	hub := wshub.New(nil, &wshub.Options{
		OnConnect: func(c *wshub.Client) {
			c.Join("news")
			close(joined)
		},
	})
	srv := httptest.NewServer(hub)
	defer srv.Close()
	defer hub.Close()

	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		panic(err)
	}
	defer conn.CloseNow()
	<-joined

	err = hub.Room("news").Broadcast(ctx, &wshub.Message{Data: map[string]string{"headline": "wshub ships"}})
	fmt.Println("broadcast error:", err)
	_, b, _ := conn.Read(ctx)
	fmt.Println(string(b))
	// Output:
	// broadcast error: <nil>
	// {"type":"message","room":"news","data":{"headline":"wshub ships"}}
}

// lineCodec is a custom codec: one text line "type room data" per frame.
type lineCodec struct{}

func (lineCodec) Name() string { return "example.line" }
func (lineCodec) Binary() bool { return false }

func (lineCodec) Marshal(v any) ([]byte, error) {
	m, ok := v.(*wshub.Message)
	if !ok {
		return nil, fmt.Errorf("lineCodec: cannot encode %T", v)
	}
	if m.Type == wshub.TypeError {
		return fmt.Appendf(nil, "error %s", m.Error), nil
	}
	return fmt.Appendf(nil, "%s %s %v", m.Type, m.Room, m.Data), nil
}

func (lineCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*wshub.Message)
	if !ok {
		return fmt.Errorf("lineCodec: cannot decode into %T", v)
	}
	f := strings.SplitN(string(data), " ", 3)
	if len(f) < 2 {
		return fmt.Errorf("want: type room [data]")
	}
	*m = wshub.Message{Type: f[0], Room: f[1]}
	if len(f) == 3 {
		m.Data = f[2]
	}
	return nil
}

// A custom codec, chosen by clients that offer its name as subprotocol.
func ExampleCodec() {
	hub := wshub.New(nil, &wshub.Options{
		Codecs:        []wshub.Codec{wshub.JSONCodec{}, lineCodec{}},
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
	})
	srv := httptest.NewServer(hub)
	defer srv.Close()
	defer hub.Close()

	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"),
		&websocket.DialOptions{Subprotocols: []string{"example.line"}})
	if err != nil {
		panic(err)
	}
	defer conn.CloseNow()
	fmt.Println("subprotocol:", conn.Subprotocol())
	conn.Write(ctx, websocket.MessageText, []byte("join lobby"))
	conn.Write(ctx, websocket.MessageText, []byte("publish lobby hello there"))
	conn.Write(ctx, websocket.MessageText, []byte("nonsense"))
	for range 2 {
		_, b, _ := conn.Read(ctx)
		fmt.Println(string(b))
	}
	// Output:
	// subprotocol: example.line
	// message lobby hello there
	// error wshub: invalid message: want: type room [data]
}
