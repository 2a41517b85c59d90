package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// Tokens (docs/PROTOCOL.md §11). With Options.Token, every connection
// begins with a sign-in: the token is its first frame, and nothing else is
// sent before the answer. The server's "auth" frames say how long the
// sign-in has left; the client refreshes it at a random point between 50 %
// and 90 % of that, so that clients that connected together do not all
// refresh in the same second, and, if that fails, once more halfway
// through what is left; then the server closes with 4001 and the client
// reconnects with a new token. A room joined with JoinOptions.Grant is
// renewed the same way, from its ack's ttl, with a join carrying a new
// grant.
//
// Each connection is a session: the renewals are timers of the session,
// and the goroutines that run them and the rejoin are its own, so that
// run waits for them before it dials again or ends. Their state is under
// Conn.mu, like the rooms they renew.

// session is what belongs to one connection.
type session struct {
	ws     *websocket.Conn
	ctx    context.Context // ends when the connection is lost, or with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // the session's goroutines: the rejoin, the renewals

	// Under Conn.mu.
	renewals map[string]*renewal // "": the sign-in's refresh; else the grant of that room; nil until one
	ended    bool                // no more renewals
}

// renewal is a scheduled renewal of the sign-in or of a grant.
type renewal struct {
	timer   *time.Timer
	expires time.Time // when what it renews ends
	retry   bool      // the retry after a failure: the last try before expires
}

// newSession makes ws the connection read, with a session of its own.
func (c *Conn) newSession(ws *websocket.Conn) *session {
	s := &session{ws: ws}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	c.mu.Lock()
	c.sess, c.reading = s, ws
	c.mu.Unlock()
	return s
}

// endLocked stops the session's renewals and takes no more; its
// goroutines still have to be waited for (wg).
func (s *session) endLocked() {
	s.ended = true
	for key := range s.renewals {
		s.cancelLocked(key)
	}
}

// cancelLocked cancels the renewal of key, if any. One that has started
// runs on, but finds it was cancelled and does nothing.
func (s *session) cancelLocked(key string) {
	r := s.renewals[key]
	if r == nil {
		return
	}
	delete(s.renewals, key)
	if r.timer.Stop() {
		s.wg.Done()
	}
}

// expiresLocked takes a ttl from the server (milliseconds; 0: no
// expiry) for key: the renewal is scheduled at a random point between
// 50 % and 90 % of it, or cancelled.
func (c *Conn) expiresLocked(key string, ttl int64) {
	s := c.sess
	if ttl <= 0 {
		s.cancelLocked(key)
		return
	}
	d := time.Duration(ttl) * time.Millisecond
	c.scheduleLocked(s, key, time.Duration(float64(d)*(0.5+0.4*rand.Float64())), time.Now().Add(d), false)
}

// scheduleLocked renews key on session s after d, in place of any
// renewal of key scheduled before.
func (c *Conn) scheduleLocked(s *session, key string, d time.Duration, expires time.Time, retry bool) {
	s.cancelLocked(key)
	if s.ended {
		return
	}
	r := &renewal{expires: expires, retry: retry}
	if s.renewals == nil {
		s.renewals = make(map[string]*renewal)
	}
	s.wg.Add(1)
	r.timer = time.AfterFunc(d, func() {
		defer s.wg.Done()
		c.renew(s, key, r)
	})
	s.renewals[key] = r
}

// renew runs the renewal r of key, when its time has come: it reports a
// failure and, after a first one, tries once more halfway to the expiry.
func (c *Conn) renew(s *session, key string, r *renewal) {
	c.mu.Lock()
	current := s.renewals[key] == r
	if current {
		delete(s.renewals, key)
	}
	c.mu.Unlock()
	if !current {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, redialTimeout)
	defer cancel()
	var err error
	if key == "" {
		err = c.refresh(ctx, s)
	} else {
		err = c.renewGrant(ctx, s, key)
	}
	if err == nil || s.ctx.Err() != nil { // lost: the next connection signs in and joins afresh
		return
	}
	c.event(Event{State: c.State(), Room: key, Err: fmt.Errorf("%w: %w", ErrNotRenewed, err)})
	if r.retry {
		return // the server ends it: 4001, or a leave frame
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, newer := s.renewals[key]
	if left := time.Until(r.expires); left > 0 && !newer && (key == "" || c.rooms[key] != nil) {
		c.scheduleLocked(s, key, left/2, r.expires, true)
	}
}

// signIn sends the token tok as the first frame of s's connection and
// waits for the answer. An error frame is no failure: the server takes
// no tokens, or it authenticated the upgrade and refused the token as a
// refresh; either way the connection goes on as it is.
func (c *Conn) signIn(ctx context.Context, s *session, tok string) error {
	_, err := c.request(ctx, s.ws, &wshub.Message{Type: wshub.TypeAuth, Token: tok}, nil)
	if _, refused := errors.AsType[*ServerError](err); refused {
		return nil
	}
	return err
}

// refresh sends a new token for the sign-in. The server's "auth" frame,
// which comes before the ack, schedules the next refresh.
func (c *Conn) refresh(ctx context.Context, s *session) error {
	tok, err := c.opts.Token(ctx)
	if err != nil {
		return err
	}
	_, err = c.request(ctx, s.ws, &wshub.Message{Type: wshub.TypeRefresh, Token: tok}, nil)
	return err
}

// renewGrant joins room again with a new grant. The ack schedules the
// next renewal (joinedLocked).
func (c *Conn) renewGrant(ctx context.Context, s *session, room string) error {
	c.mu.Lock()
	var grant func(context.Context) (string, error)
	if r := c.rooms[room]; r != nil {
		grant = r.grant
	}
	c.mu.Unlock()
	if grant == nil {
		return nil // left meanwhile
	}
	tok, err := grant(ctx)
	if err != nil {
		return err
	}
	_, err = c.request(ctx, s.ws, &wshub.Message{Type: wshub.TypeJoin, Room: room, Token: tok}, &joining{room: room, renew: true})
	if err != nil {
		return err
	}
	c.mu.Lock()
	left := c.rooms[room] == nil
	c.mu.Unlock()
	if left {
		// Left (Leave, or the server's leave frame) while the renewal was
		// on its way: the server may have joined it again.
		c.request(ctx, s.ws, &wshub.Message{Type: wshub.TypeLeave, Room: room}, nil)
	}
	return nil
}

// signedOut returns err, the loss of a connection, wrapped with
// ErrSignedOut if the server closed it with 4003.
func signedOut(err error) error {
	if websocket.CloseStatus(err) == wshub.StatusSignedOut {
		return fmt.Errorf("%w: %w", ErrSignedOut, err)
	}
	return err
}
