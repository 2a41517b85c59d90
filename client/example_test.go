package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
	"github.com/wshub/wshub/client"
)

// A client joins a room, publishes, and reads its own message back.
func Example() {
	hub := wshub.New(nil, &wshub.Options{
		AuthorizeJoin: func(*wshub.Client, string) error { return nil }, // default: deny
	})
	srv := httptest.NewServer(hub)
	defer srv.Close()
	defer hub.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") // ws://127.0.0.1:port
	c, err := client.Dial(ctx, url, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join(ctx, "lobby", nil); err != nil {
		log.Fatal(err)
	}
	if err := c.Publish(ctx, "lobby", map[string]string{"text": "hi"}); err != nil {
		log.Fatal(err)
	}
	m := <-c.Messages()
	fmt.Printf("[%s] %s\n", m.Room, m.Data)
	// Output: [lobby] {"text":"hi"}
}

// Frames other than room messages, here the members of a room with
// presence, reach Options.OnFrame.
func Example_presence() {
	hub := wshub.New(nil, &wshub.Options{
		Authenticate: func(r *http.Request) (wshub.Identity, error) {
			return wshub.Identity{ID: r.URL.Query().Get("name")}, nil
		},
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
		Rooms:         func(string) wshub.RoomOptions { return wshub.RoomOptions{Presence: true} },
	})
	srv := httptest.NewServer(hub)
	defer srv.Close()
	defer hub.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	frames := make(chan *wshub.Message, 16)
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "?name=alice"
	c, err := client.Dial(ctx, url, &client.Options{OnFrame: func(m *wshub.Message) { frames <- m }})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join(ctx, "lobby", nil); err != nil {
		log.Fatal(err)
	}
	state := <-frames // the room's members, sent before the join's ack
	var members struct {
		Members []struct{ ID string }
		Total   int
	}
	if err := json.Unmarshal(state.Data.(json.RawMessage), &members); err != nil {
		log.Fatal(err)
	}
	fmt.Println(state.Type, members.Total, members.Members[0].ID)
	// Output: presence 1 alice
}

// A client signs in with a token as the first frame of each connection
// (a browser cannot set headers, and a token in a URL ends up in logs);
// the hub's AuthenticateToken names it. The client refreshes the sign-in
// before it expires, with a new token each time. A token the hub refuses
// signs the client out.
func Example_token() {
	hub := wshub.New(nil, &wshub.Options{
		// With Authenticate nil, every client signs in with its first frame.
		AuthenticateToken: func(_ *wshub.Client, token string) (wshub.Identity, error) {
			user, ok := strings.CutPrefix(token, "valid:") // check a real token's signature
			if !ok {
				return wshub.Identity{}, errors.New("bad token")
			}
			return wshub.Identity{ID: user, Expires: time.Now().Add(time.Hour)}, nil
		},
		AuthorizeJoin: func(*wshub.Client, string) error { return nil },
	})
	srv := httptest.NewServer(hub)
	defer srv.Close()
	defer hub.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	c, err := client.Dial(ctx, url, &client.Options{
		// Called for every connection and every refresh: get a new token
		// from the identity provider.
		Token: func(ctx context.Context) (string, error) { return "valid:alice", nil },
		OnEvent: func(e client.Event) {
			if errors.Is(e.Err, client.ErrNotRenewed) {
				log.Print(e.Err) // the hub closes with 4001 at the expiry: the client reconnects
			}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Join(ctx, "lobby", nil); err != nil {
		log.Fatal(err)
	}
	if err := c.Publish(ctx, "lobby", "hi"); err != nil {
		log.Fatal(err)
	}
	m := <-c.Messages()
	fmt.Printf("%s from %s\n", m.Data, m.From)

	_, err = client.Dial(ctx, url, &client.Options{
		Token: func(ctx context.Context) (string, error) { return "forged:mallory", nil },
	})
	fmt.Println(errors.Is(err, client.ErrSignedOut), websocket.CloseStatus(err))
	// Output:
	// "hi" from alice
	// true StatusCode(4003)
}
