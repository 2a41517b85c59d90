package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// Limits on what people type. The page enforces them too, but only the
// server's checks count.
const (
	maxNameLen = 32   // runes
	maxTextLen = 2000 // runes
)

// historyMessages is how many of its last messages every room keeps, for
// an hour (wshub's default age): enough for the page to show the last 50
// when it opens a room, and to replay what it missed while offline for a
// while. Past them, or after a restart, the page is told it missed some.
const historyMessages = 200

// errEmptyText refuses a publish without text.
var errEmptyText = errors.New("empty message")

// chatMessage is the data of a chat message on the wire. Clients publish
// {"text": "hi"}; the hub delivers {"name": "alice", "text": "hi"}.
type chatMessage struct {
	Name string `json:"name"`
	Text string `json:"text"`
}

// welcome is sent to each client when it connects, so that the page knows
// its own messages (by their "from" ID) and itself among a room's members.
type welcome struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// memberInfo is what the members of a room see of each other (the "info"
// of wshub's presence frames): {"name": "alice"}.
type memberInfo struct {
	Name string `json:"name"`
}

// newHub returns the chat hub: anyone may join any room, every message
// carries the name its sender connected with, every room keeps its last
// historyMessages messages, in memory (a restart forgets them), and every
// room tells its members who is in it (presence). Names come from the
// ?name= of the upgrade request, or with lg (the login mode) from the
// token of the connection's first frame.
func newHub(logger *slog.Logger, lg *login) *wshub.Hub {
	opts := &wshub.Options{
		Rooms: func(string) wshub.RoomOptions {
			return wshub.RoomOptions{
				History:  wshub.HistoryPolicy{Messages: historyMessages},
				Presence: true,
			}
		},
		Authenticate: authenticate,
		// Rooms are open: any name the library accepts may be joined, as long
		// as it prints safely.
		AuthorizeJoin:    authorizeJoin,
		AuthorizePublish: stampName,
		OnConnect: func(c *wshub.Client) {
			name := clientName(c)
			logger.Info("connect", "id", c.ID(), "name", name)
			// Send fails only if the client is already gone, which
			// OnDisconnect will log.
			_ = c.Send(&wshub.Message{Type: "welcome", Data: welcome{ID: c.ID(), Name: name}})
		},
		OnDisconnect: func(c *wshub.Client, reason error) {
			logger.Info("disconnect", "id", c.ID(), "name", clientName(c), "reason", leftBecause(reason))
		},
		Logger: logger,
	}
	if lg != nil {
		// Without Authenticate, every connection signs in with its first
		// frame: a browser cannot set headers on a WebSocket, and a token in
		// the URL would end up in logs.
		opts.Authenticate = nil
		opts.AuthenticateToken = lg.authenticateToken
	}
	return wshub.New(nil, opts)
}

// authenticate takes the nickname from the name query parameter. It is the
// only place a name is read from the client; from then on the server
// remembers it, so nobody can speak under another name.
func authenticate(r *http.Request) (wshub.Identity, error) {
	name, err := checkName(r.URL.Query().Get("name"))
	if err != nil {
		return wshub.Identity{}, wshub.Reject(http.StatusBadRequest, err.Error())
	}
	return identity(name), nil
}

// identity is the client named name.
//
// The name is also the client's ID: the chat has no accounts, so a name is
// a user. Two tabs with one name are one member of a room (with two
// connections), and the "from" of their messages is the same. Info is what
// the room's members are shown of it: {"name": "alice"}.
func identity(name string) wshub.Identity {
	return wshub.Identity{ID: name, Info: memberInfo{Name: name}, Values: map[string]any{"name": name}}
}

// checkName returns name without the spaces around it, or why it is not a
// good name: it is shown to everyone.
func checkName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", errors.New("name is required")
	case !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxNameLen:
		return "", fmt.Errorf("name must be valid UTF-8 of at most %d characters", maxNameLen)
	case hasControl(name):
		return "", errors.New("name must not contain control characters")
	}
	return name, nil
}

// errControlRoom refuses a room name with control characters.
var errControlRoom = errors.New("room name must not contain control characters")

func authorizeJoin(_ *wshub.Client, room string) error {
	if hasControl(room) {
		return errControlRoom
	}
	return nil
}

// hasControl reports whether s holds a control character (ESC, NUL, a
// newline...) or a Unicode control that reorders text. Names and rooms are
// shown to everyone, and a terminal would obey an escape sequence in them;
// so the server refuses them, and clients escape what they print anyway.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r)
	})
}

// stampName replaces whatever data a client published with its text and
// the name it connected with.
func stampName(c *wshub.Client, m *wshub.Message) error {
	raw, _ := m.Data.(json.RawMessage) // the JSON codec's inbound Data
	var in chatMessage
	if err := json.Unmarshal(raw, &in); err != nil {
		return fmt.Errorf("data must be {\"text\": \"...\"}: %w", err)
	}
	text := strings.TrimSpace(in.Text)
	switch {
	case text == "":
		return errEmptyText
	case utf8.RuneCountInString(text) > maxTextLen:
		return fmt.Errorf("message longer than %d characters", maxTextLen)
	}
	m.Data = chatMessage{Name: clientName(c), Text: text}
	return nil
}

// leftBecause says why a client left, for the log: a close by the client
// itself (1000, or 1001 when a page is closed) as such, anything else as
// its error.
func leftBecause(reason error) string {
	switch code := websocket.CloseStatus(reason); code {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway:
		return fmt.Sprintf("closed by the client (%d)", code)
	}
	return reason.Error()
}

func clientName(c *wshub.Client) string {
	name, _ := c.Value("name").(string)
	return name
}
