package wshub

import (
	"encoding/json"
	"fmt"
)

// A Codec turns Messages into WebSocket frames and back; the hub calls it
// with *Message, outside every lock. A client picks one by name in the
// Sec-WebSocket-Protocol header (see Options.Codecs). Methods must be safe
// for concurrent use.
type Codec interface {
	// Name is the subprotocol name that selects this codec.
	Name() string
	// Binary reports whether frames are binary (true) or text (false).
	Binary() bool
	// Marshal encodes v. For a *Message it returns one message.
	Marshal(v any) ([]byte, error)
	// Unmarshal decodes data, one inbound frame, into v.
	Unmarshal(data []byte, v any) error
}

// A BatchCodec is a Codec that can write several messages as one frame.
// When a client using it has more than one message queued, the hub encodes
// each with Marshal and writes AppendBatch of them as a single frame; it
// uses AppendBatch even for a single message, so every frame has the batch
// format. A batch frame is at most 32 KiB, unless one message alone is
// bigger, provided AppendBatch adds at most one byte between messages and
// two around them, as JSONBatchCodec does.
type BatchCodec interface {
	Codec
	// AppendBatch appends the frame made of msgs, each a result of
	// Marshal, to dst and returns the extended slice.
	AppendBatch(dst []byte, msgs [][]byte) []byte
}

// JSONCodec is the default codec: each text frame is one JSON object
// following the wire protocol described in the package documentation.
// Inbound Message.Data holds a json.RawMessage (nil when absent), so a
// handler decodes it into its own type.
type JSONCodec struct{}

// Name returns "wshub.json".
func (JSONCodec) Name() string { return "wshub.json" }

// Binary returns false: JSON frames are text frames.
func (JSONCodec) Binary() bool { return false }

// Marshal encodes v with encoding/json.
func (JSONCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes data with encoding/json. For a *Message, Data is left as
// a json.RawMessage.
func (JSONCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*Message)
	if !ok {
		return json.Unmarshal(data, v)
	}
	return unmarshalJSONMessage(data, m)
}

// JSONBatchCodec speaks the JSON protocol, but every frame the server sends
// is a JSON array of one or more messages, so a busy client receives many
// messages per frame. Clients opt in by offering "wshub.json-batch" in
// Sec-WebSocket-Protocol. Inbound frames are single JSON objects, as with
// JSONCodec.
type JSONBatchCodec struct{}

// Name returns "wshub.json-batch".
func (JSONBatchCodec) Name() string { return "wshub.json-batch" }

// Binary returns false: batches are text frames.
func (JSONBatchCodec) Binary() bool { return false }

// Marshal encodes v as one JSON value, an element of a batch.
func (JSONBatchCodec) Marshal(v any) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes one inbound JSON message, as JSONCodec does.
func (JSONBatchCodec) Unmarshal(data []byte, v any) error { return JSONCodec{}.Unmarshal(data, v) }

// AppendBatch appends a JSON array of msgs to dst.
func (JSONBatchCodec) AppendBatch(dst []byte, msgs [][]byte) []byte {
	dst = append(dst, '[')
	for i, m := range msgs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, m...)
	}
	return append(dst, ']')
}

// RawCodec carries only message data, in binary frames. An inbound frame
// is a Message of type "message" with the frame as Data, for the Handler.
// Outbound, only messages of type "message" with Data a []byte, string or
// json.RawMessage (a JSON client's publish) can be sent; anything else,
// acks and errors included, fails with ErrInvalid.
type RawCodec struct{}

// Name returns "wshub.raw".
func (RawCodec) Name() string { return "wshub.raw" }

// Binary returns true.
func (RawCodec) Binary() bool { return true }

// Marshal returns a copy of the data of a *Message, []byte or string.
func (RawCodec) Marshal(v any) ([]byte, error) {
	if m, ok := v.(*Message); ok {
		if m.Type != TypeMessage {
			return nil, fmt.Errorf("%w: raw codec cannot send type %q", errUnsupportedData, m.Type)
		}
		v = m.Data
	}
	switch d := v.(type) {
	case []byte:
		return append([]byte{}, d...), nil
	case json.RawMessage: // a JSON client's publish: its JSON text
		return append([]byte{}, d...), nil
	case string:
		return []byte(d), nil
	default:
		return nil, fmt.Errorf("%w: raw codec needs []byte or string, got %T", errUnsupportedData, v)
	}
}

// Unmarshal stores a copy of data into a *Message (as its Data) or a *[]byte.
func (RawCodec) Unmarshal(data []byte, v any) error {
	b := append([]byte(nil), data...)
	switch d := v.(type) {
	case *Message:
		*d = Message{Type: TypeMessage, Data: b}
	case *[]byte:
		*d = b
	default:
		return fmt.Errorf("%w: raw codec cannot decode into %T", errUnsupportedData, v)
	}
	return nil
}
