package wshub

import (
	"context"
	"encoding/json"
	"fmt"
)

// Message types of the wire protocol. Any other type is an application
// message and goes to the Handler.
const (
	TypeJoin    = "join"    // client → server: join Room
	TypeLeave   = "leave"   // client → server: leave Room; server → client: no longer in Room, see Error
	TypePublish = "publish" // client → server: broadcast Data to Room
	TypeMessage = "message" // server → client: Data, from a room or the server
	TypeAck     = "ack"     // server → client: request ID succeeded
	TypeError   = "error"   // server → client: request failed, see Error

	TypePresence     = "presence"      // client → server: ask for a room's state; server → client: the state
	TypePresenceDiff = "presence_diff" // server → client: who joined and left a room

	// With Options.AuthenticateToken (docs/PROTOCOL.md §11); without, they
	// are application messages.
	TypeAuth    = "auth"    // client → server: sign in with Token; server → client: the sign-in expires in TTL
	TypeRefresh = "refresh" // client → server: a new Token for the sign-in
)

// Message is one protocol message, in either direction. With JSONCodec it
// is the JSON object {"type","id","room","from","data","error",...}, empty
// fields omitted. The fields after Error concern rooms with history.
type Message struct {
	Type  string `json:"type"`
	ID    string `json:"id,omitempty"`    // set by a client to get an ack or error answer
	Room  string `json:"room,omitempty"`  // room of a join, leave, publish or room message
	From  string `json:"from,omitempty"`  // ID of the publishing client; empty when the server sent it
	Data  any    `json:"data,omitempty"`  // payload; inbound, what the codec decoded (json.RawMessage for JSON)
	Error string `json:"error,omitempty"` // reason of an error answer

	// Seq numbers a room message in its room's history; in a join's ack,
	// where the replay ends. Set by the server only.
	Seq uint64 `json:"seq,omitempty"`

	// Epoch names a room's history: in a join, the one Since refers to; in
	// its ack, the current one; in a room message, set when the history
	// started anew while the client was in the room.
	Epoch string `json:"epoch,omitempty"`

	Since     uint64 `json:"since,omitempty"`     // in a join with Epoch: the last seq the client saw
	History   int    `json:"history,omitempty"`   // in a join: how many last messages to replay (at most 100)
	Recovered *bool  `json:"recovered,omitempty"` // in the ack of a join with Epoch: was all after Since replayed?

	Token string `json:"token,omitempty"` // in an auth, refresh or join: a token for the server to check
	TTL   int64  `json:"ttl,omitempty"`   // in an auth from the server or a join's ack: milliseconds until it expires
}

// orMessage returns a copy of m, of type "message" when m has no type: what
// the server sends when the application names no type.
func (m *Message) orMessage() Message {
	out := *m
	if out.Type == "" {
		out.Type = TypeMessage
	}
	return out
}

// A Handler receives the application messages of clients: every inbound
// message whose type is not join, leave, publish or presence. The hub calls it on the
// client's read goroutine, one message at a time and in order, never while
// holding a lock; the next message of that client is read after it returns.
// ctx ends when the client disconnects. A non-nil error is sent to the client
// as an error frame; a nil error is acknowledged when the message had an ID.
type Handler interface {
	ServeMessage(ctx context.Context, c *Client, m *Message) error
}

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx context.Context, c *Client, m *Message) error

// ServeMessage calls f(ctx, c, m).
func (f HandlerFunc) ServeMessage(ctx context.Context, c *Client, m *Message) error {
	return f(ctx, c, m)
}

// jsonMessage is Message as decoded from JSON, keeping data raw.
type jsonMessage struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Room      string          `json:"room"`
	From      string          `json:"from"`
	Data      json.RawMessage `json:"data"`
	Error     string          `json:"error"`
	Seq       uint64          `json:"seq"`
	Epoch     string          `json:"epoch"`
	Since     uint64          `json:"since"`
	History   int             `json:"history"`
	Recovered *bool           `json:"recovered"`
	Token     string          `json:"token"`
	TTL       int64           `json:"ttl"`
}

func unmarshalJSONMessage(data []byte, m *Message) error {
	var jm jsonMessage
	if err := json.Unmarshal(data, &jm); err != nil {
		// A field of the wrong type leaves the others decoded: keep what
		// the error frame needs to answer the request.
		m.ID, m.Room = jm.ID, jm.Room
		return err
	}
	if jm.Type == "" {
		m.ID, m.Room = jm.ID, jm.Room // for the error frame
		return fmt.Errorf("missing message type")
	}
	*m = Message{
		Type: jm.Type, ID: jm.ID, Room: jm.Room, From: jm.From, Error: jm.Error,
		Seq: jm.Seq, Epoch: jm.Epoch, Since: jm.Since, History: jm.History, Recovered: jm.Recovered,
		Token: jm.Token, TTL: jm.TTL,
	}
	if jm.Data != nil {
		m.Data = jm.Data
	}
	return nil
}
