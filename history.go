package wshub

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/coder/websocket"
)

// History. A room whose RoomOptions.History keeps messages numbers every
// room message with a seq, increasing in the order its members receive
// them, and the Engine keeps the last ones. The room's epoch names one
// unbroken run of seqs: it changes whenever the engine loses or restarts
// the room's history, so that a client's seq from an older run is never
// taken for one of the current run. A client can then ask, when it joins,
// for the last messages of the room or for everything after the last seq
// it saw; it gets exactly those, or is told that they are gone (join.go
// does it; the package documentation has the protocol).
//
// Rooms without history cost nothing more: no seq, no read, no memory.

// HistoryPolicy says how much of a room's recent history the engine keeps.
type HistoryPolicy struct {
	// Messages is how many of the room's last messages are kept (none if
	// zero: its messages carry no seq). A recovery replays up to this many
	// at once, past the send queue's limits: keep it to a few hundred.
	Messages int

	// MaxAge is how long a message is kept; a room idle longer starts a new
	// epoch. Default: 1 hour.
	MaxAge time.Duration
}

func (p HistoryPolicy) on() bool { return p.Messages > 0 }

func (p HistoryPolicy) maxAge() time.Duration {
	if p.MaxAge <= 0 {
		return defaultHistoryAge
	}
	return p.MaxAge
}

// read reads the room's history from the engine, within ctx and at most
// WriteTimeout.
func (h *Hub) read(ctx context.Context, name string, p HistoryPolicy, after uint64, limit int) (LogPage, error) {
	ctx, cancel := context.WithTimeout(ctx, h.opts.WriteTimeout)
	defer cancel()
	var page LogPage
	err := h.withEngine(func(e Engine) error {
		var err error
		page, err = e.Read(ctx, name, p, after, limit)
		return err
	})
	if err != nil && err != ErrHubClosed {
		h.m.engineErrs.Add(1)
		err = fmt.Errorf("%w: %q: %w", errHistory, name, err)
	}
	return page, err
}

// withPosition returns the JSON object msg with "seq" and, unless empty,
// "epoch" members added.
func withPosition(msg []byte, seq uint64, epoch string) []byte {
	b := make([]byte, 0, len(msg)+24+len(epoch))
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	if epoch != "" {
		e, _ := json.Marshal(epoch) // a string always encodes
		b = append(append(b, `,"epoch":`...), e...)
	}
	if len(msg) > 2 {
		b = append(b, ',')
	}
	return append(b, msg[1:]...)
}

// encodeStored encodes a retained message, with its seq, for c's codec. A
// codec that cannot carry it (RawCodec, for a type other than "message")
// gets an error, as for a live message. Retained messages are JSON, so a
// codec other than the JSON ones gets Data as it decodes from JSON (a
// json.RawMessage): RawCodec replays the JSON text of Data, which for
// []byte data is base64, unlike the live message.
func (c *Client) encodeStored(en Entry) ([]byte, error) {
	b := withPosition(en.JSON, en.Seq, "")
	if c.hub.encKey[c.codecIndex] == len(c.hub.opts.Codecs) { // a JSON codec
		return b, nil
	}
	var m Message
	if err := (JSONCodec{}).Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return c.codec.Marshal(&m)
}

// historyLost closes the room's local members, since the history lost
// messages that they have not had: they rejoin with since and learn what
// they can recover.
func (h *Hub) historyLost(rm *room) {
	rm.mu.Lock()
	// The next join takes its position from the history again: if it
	// was started anew, its seqs may be below the cursor.
	rm.cursor, rm.positioned, rm.epoch, rm.skip, rm.unplaced = 0, false, "", nil, 0
	members := make([]*Client, 0, len(rm.members))
	for c := range rm.members {
		members = append(members, c)
	}
	rm.mu.Unlock()
	h.opts.Logger.Warn("wshub: the room's history lost messages; closing its members", "room", rm.name, "members", len(members))
	for _, c := range members {
		c.closeWith(websocket.StatusServiceRestart, "room log lost messages", fmt.Errorf("%w: the log of %q lost messages", errBroker, rm.name), true)
	}
}

// History returns up to limit of the room's retained messages, the newest
// ones, oldest first, each with its Seq; none when the room keeps no
// history. It waits for the Engine, within ctx and at most WriteTimeout,
// and returns ErrEngine wrapping its error.
func (r Room) History(ctx context.Context, limit int) ([]*Message, error) {
	p := r.hub.roomOptions(r.name).History
	if !p.on() || limit <= 0 {
		return nil, nil
	}
	page, err := r.hub.read(ctx, r.name, p, 0, limit)
	if err != nil {
		return nil, err
	}
	out := make([]*Message, 0, len(page.Messages))
	for _, en := range page.Messages {
		m := new(Message)
		if err := (JSONCodec{}).Unmarshal(en.JSON, m); err != nil {
			return nil, fmt.Errorf("%w: %q: stored message: %w", errHistory, r.name, err)
		}
		m.Seq = en.Seq
		out = append(out, m)
	}
	return out, nil
}

// Position returns the epoch of the room's history and the seq of its
// latest message (0 before the first); "" and 0 when the room keeps no
// history. It waits for the Engine as History does.
func (r Room) Position(ctx context.Context) (epoch string, seq uint64, err error) {
	p := r.hub.roomOptions(r.name).History
	if !p.on() {
		return "", 0, nil
	}
	page, err := r.hub.read(ctx, r.name, p, ^uint64(0), 0)
	if err != nil {
		return "", 0, err
	}
	return page.Epoch, page.Latest, nil
}
