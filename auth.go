package wshub

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/coder/websocket"
)

// Tokens (docs/PROTOCOL.md §11): a sign-in that expires and is refreshed
// over the connection, a sign-in with the first frame, room grants that
// expire, and signing a user out on every hub.
//
// A client has at most one expiry timer, set for the earliest of its
// sign-in's end (plus expiryGrace) and its grants' ends; it runs expire on
// a goroutine of the client's group, which closes the client or takes it
// out of the rooms whose grants ended, and sets the timer again.
// grantMu orders a grant's renewal and its expiry, so that a renewal
// acked is never undone by an expiry decided before it.

const (
	authTimeout = 10 * time.Second // the wait for a first frame's sign-in
	expiryGrace = 5 * time.Second  // past Identity.Expires before the close
)

// clock is the hub's time; tests replace it to expire tokens at will.
type clock struct {
	now       func() time.Time
	afterFunc func(d time.Duration, f func()) (stop func() bool)
}

var realClock = clock{
	now: time.Now,
	afterFunc: func(d time.Duration, f func()) func() bool {
		return time.AfterFunc(d, f).Stop
	},
}

// ttl returns the milliseconds from now until t, at least 1.
func (h *Hub) ttl(t time.Time) int64 {
	return max(1, t.Sub(h.clock.now()).Milliseconds())
}

// encodeInfo encodes an Identity's Info for presence.
func encodeInfo(id string, info any) (json.RawMessage, error) {
	if info == nil {
		return nil, nil
	}
	b, err := json.Marshal(info)
	if err == nil && len(b) > maxInfoBytes {
		err = fmt.Errorf("%d bytes, more than %d", len(b), maxInfoBytes)
	}
	if err != nil {
		return nil, fmt.Errorf("wshub: Identity.Info of client %q: %w", id, err)
	}
	return b, nil
}

// tokenFirst reports whether clients sign in with their first frame.
func (h *Hub) tokenFirst() bool {
	return h.opts.Authenticate == nil && h.opts.AuthenticateToken != nil
}

// started begins the client's sign-in, on its read goroutine before its
// first read: it waits for the first frame, or tells the client when its
// sign-in expires, then runs OnConnect.
func (c *Client) started() {
	if c.hub.tokenFirst() {
		c.mu.Lock()
		if c.cause == nil {
			c.authStop = c.hub.clock.afterFunc(authTimeout, func() {
				c.closeWith(StatusTokenExpired, "auth timeout", errAuthTimeout, true)
			})
		}
		c.mu.Unlock()
		return
	}
	c.signedIn()
}

// signedIn sets the client's expiry timer, tells it when its sign-in
// expires, and runs OnConnect.
func (c *Client) signedIn() {
	c.signed = true
	c.mu.Lock()
	expires := c.expires
	c.scheduleExpiryLocked()
	c.mu.Unlock()
	if !expires.IsZero() {
		c.reply(&Message{Type: TypeAuth, TTL: c.hub.ttl(expires)})
	}
	h := c.hub
	h.opts.Logger.Debug("wshub: client connected", "client", c.id, "codec", c.codec.Name())
	if h.opts.OnConnect != nil {
		h.userCode(func() { h.opts.OnConnect(c) })
	}
}

// signIn handles the first frame of a client that must sign in with it.
func (c *Client) signIn(typ websocket.MessageType, data []byte) {
	h := c.hub
	var m Message
	if err := c.decode(typ, data, &m); err != nil || m.Type != TypeAuth {
		c.closeWith(StatusSignedOut, "auth required", errAuthRequired, true)
		return
	}
	var id Identity
	var err error
	h.userCode(func() { id, err = h.opts.AuthenticateToken(c, m.Token) })
	if err != nil {
		c.closeWith(StatusSignedOut, "unauthorized", fmt.Errorf("%w: %w", errUnauthorized, err), true)
		return
	}
	if id.ID == "" {
		id.ID = newID()
	}
	info, err := encodeInfo(id.ID, id.Info)
	if err != nil {
		h.opts.Logger.Error(err.Error())
		c.closeWith(websocket.StatusInternalError, "server error", err, true)
		return
	}
	if !h.admitSigned(c, id, info) {
		return // the hub is closing, and so is the client
	}
	c.signedIn()
	if m.ID != "" {
		c.reply(&Message{Type: TypeAck, ID: m.ID})
	}
}

// admitSigned gives a client that signed in with its first frame its
// identity and counts it among the hub's clients, unless the hub is
// closing. Its ID is written under h.mu, before Shutdown can see it.
func (h *Hub) admitSigned(c *Client, id Identity, info json.RawMessage) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing.Load() {
		return false
	}
	delete(h.waiting, c)
	h.clients[c] = struct{}{}
	c.id = id.ID
	for k, v := range id.Values {
		c.SetValue(k, v)
	}
	c.mu.Lock()
	c.info, c.expires = info, id.Expires
	c.mu.Unlock()
	return true
}

// refresh handles a signed-in client's "auth" or "refresh" frame.
func (c *Client) refresh(m *Message) error {
	h := c.hub
	var id Identity
	var err error
	h.userCode(func() { id, err = h.opts.AuthenticateToken(c, m.Token) })
	if err == nil && id.ID != "" && id.ID != c.id {
		err = fmt.Errorf("the identity's ID %q is not the client's", id.ID)
	}
	var info json.RawMessage
	if err == nil {
		info, err = encodeInfo(c.id, id.Info)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errRefreshRefused, err)
	}
	for k, v := range id.Values {
		c.SetValue(k, v)
	}
	c.mu.Lock()
	renamed := id.Info != nil && string(info) != string(c.info)
	if id.Info != nil {
		c.info = info
	}
	c.expires = id.Expires
	c.scheduleExpiryLocked()
	var asked []string
	for room, own := range c.rooms {
		if own {
			asked = append(asked, room)
		}
	}
	c.mu.Unlock()
	auth := &Message{Type: TypeAuth}
	if !id.Expires.IsZero() {
		auth.TTL = h.ttl(id.Expires)
	}
	c.reply(auth)
	c.reauthorize(asked)
	if renamed {
		for _, room := range c.Rooms() {
			h.presenceInfo(c, room)
		}
	}
	return nil
}

// reauthorize asks AuthorizeJoin again about rooms the client joined at
// its own request, and takes it out of those now refused, telling it why.
func (c *Client) reauthorize(rooms []string) {
	h := c.hub
	for _, room := range rooms {
		var err error
		h.userCode(func() { err = h.opts.AuthorizeJoin(c, room) })
		if err != nil && h.leave(c, room) == nil {
			c.reply(&Message{Type: TypeLeave, Room: room, Error: fmt.Errorf("%w: %w", errJoinDenied, err).Error()})
		}
	}
}

// joinGranted handles a join that carries a grant token.
func (c *Client) joinGranted(m *Message) (*Message, error) {
	h := c.hub
	var expires time.Time
	var err error
	h.userCode(func() { expires, err = h.opts.AuthorizeGrant(c, m.Room, m.Token) })
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errJoinDenied, err)
	}
	if !expires.IsZero() && !h.clock.now().Before(expires) {
		return nil, errGrantExpired
	}
	c.grantMu.Lock()
	defer c.grantMu.Unlock()
	ack, err := h.join(c, m.Room, m)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if _, ok := c.rooms[m.Room]; ok {
		c.rooms[m.Room] = false // the grant decides, not AuthorizeJoin
		if c.grants == nil {
			c.grants = make(map[string]time.Time)
		}
		c.grants[m.Room] = expires
		c.scheduleExpiryLocked()
	}
	c.mu.Unlock()
	if ack == nil {
		ack = &Message{Type: TypeAck}
	}
	if !expires.IsZero() {
		ack.TTL = h.ttl(expires)
	}
	return ack, nil
}

// scheduleExpiryLocked sets the client's expiry timer for its next end of
// a sign-in or grant, if any.
func (c *Client) scheduleExpiryLocked() {
	if c.authStop != nil {
		c.authStop()
		c.authStop = nil
	}
	if c.cause != nil {
		return
	}
	var next time.Time
	if !c.expires.IsZero() {
		next = c.expires.Add(expiryGrace)
	}
	for _, t := range c.grants {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if next.IsZero() {
		return
	}
	c.authStop = c.hub.clock.afterFunc(next.Sub(c.hub.clock.now()), func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cause == nil {
			c.spawn(c.expire)
		}
	})
}

// expire closes the client if its sign-in ended, else takes it out of
// the rooms whose grants ended, and sets the timer again.
func (c *Client) expire() {
	c.grantMu.Lock()
	defer c.grantMu.Unlock()
	now := c.hub.clock.now()
	c.mu.Lock()
	if !c.expires.IsZero() && !now.Before(c.expires.Add(expiryGrace)) {
		c.closeLocked(StatusTokenExpired, "token expired", errTokenExpired, true)
		c.mu.Unlock()
		return
	}
	var ended []string
	for room, t := range c.grants {
		if !t.IsZero() && !now.Before(t) {
			ended = append(ended, room)
		}
	}
	c.mu.Unlock()
	for _, room := range ended {
		if c.hub.leave(c, room) == nil {
			c.send(&Message{Type: TypeLeave, Room: room, Error: errGrantExpired.Error()}, qReply)
		}
	}
	c.mu.Lock()
	c.scheduleExpiryLocked()
	c.mu.Unlock()
}

// ClientsOf returns this hub's clients whose ID is id: a user's
// connections here. It goes through every client.
func (h *Hub) ClientsOf(id string) []*Client {
	h.mu.RLock()
	defer h.mu.RUnlock()
	var cs []*Client
	for c := range h.clients {
		if c.id == id {
			cs = append(cs, c)
		}
	}
	return cs
}

// DisconnectUser closes every connection of the client ID id with code
// and reason, as Client.Close does (use StatusSignedOut for a ban or a
// sign-out, so that clients stop), on this hub and, when the Engine is a
// CommandEngine (natsbroker's and redisengine's are), on every hub. It
// returns once this hub's are closing and the engine took the command,
// or the engine's error (ErrEngine): this hub's are closed anyway. A hub
// cut off from the bus at that moment misses the command: refuse the
// user's tokens too.
func (h *Hub) DisconnectUser(ctx context.Context, id string, code websocket.StatusCode, reason string) error {
	h.disconnectUser(id, code, reason)
	ce, ok := h.opts.Engine.(CommandEngine)
	if !ok {
		return nil
	}
	cmd, err := json.Marshal(command{Hub: h.id, Op: "disconnect", User: id, Code: int(code), Reason: reason})
	if err != nil {
		return err
	}
	err = h.withEngine(func(Engine) error { return ce.Command(ctx, cmd) })
	if err != nil {
		return fmt.Errorf("%w: %w", errBroker, err)
	}
	return nil
}

func (h *Hub) disconnectUser(id string, code websocket.StatusCode, reason string) {
	for _, c := range h.ClientsOf(id) {
		c.Close(code, reason)
	}
}

// command is a hub's command to every hub, through a CommandEngine.
type command struct {
	Hub    string `json:"hub"` // the sender, which acted already
	Op     string `json:"op"`  // "disconnect"
	User   string `json:"user,omitempty"`
	Code   int    `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// onCommand carries out another hub's command.
func (h *Hub) onCommand(b []byte) {
	var cmd command
	if err := json.Unmarshal(b, &cmd); err != nil {
		h.opts.Logger.Warn("wshub: undecodable command from another hub", "err", err)
		return
	}
	if cmd.Hub == h.id {
		return
	}
	switch cmd.Op {
	case "disconnect":
		h.disconnectUser(cmd.User, websocket.StatusCode(cmd.Code), cmd.Reason)
	default: // a newer hub's: not for this one
		h.opts.Logger.Debug("wshub: unknown command from another hub", "op", cmd.Op)
	}
}
