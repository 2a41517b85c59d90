package main

import (
	"encoding/json"

	"github.com/coder/websocket"
)

// Token checks (PROTOCOL.md §11). A server signs a client in either from
// the upgrade request, and then takes an "auth" frame as a refresh, or
// with the connection's first frame, an "auth" with a token, and then
// closes with 4003 a connection whose first frame is anything else. The
// suite tells which by a probe, once per run: a connection whose first
// frame is a join. Only -token can tell the suite a token the server
// accepts; the checks that need one skip without it.

// statusSignedOut is 4003: signed out, or no sign-in the server accepts.
const statusSignedOut websocket.StatusCode = 4003

// firstFrame reports whether the server requires sign-in with the first
// frame: whether it closes with 4003 a connection whose first frame is a
// join, rather than answering the join. The first call probes, and fails
// the check on any other outcome; the answer holds for the run.
func (t *T) firstFrame() bool {
	s := t.s
	s.mu.Lock()
	known, first := s.authKnown, s.authFirst
	s.mu.Unlock()
	if known {
		return first
	}
	first = t.probeFirstFrame()
	s.mu.Lock()
	s.authKnown, s.authFirst = true, first
	s.mu.Unlock()
	return first
}

func (t *T) probeFirstFrame() bool {
	c := t.dialRaw()
	defer c.ws.CloseNow() // not needed any more; runCheck waits for its reader
	id := c.start(join(t.room("-auth-probe")))
	for {
		ev := c.next("the answer to a join sent as the first frame, or a close with status 4003")
		switch {
		case ev.bad != nil:
			t.Fatalf("%v (waiting for the answer to a first frame)", ev.bad)
		case ev.closed:
			if websocket.CloseStatus(ev.closeErr) == statusSignedOut {
				return true
			}
			t.Fatalf("a connection whose first frame was a join closed with %s: want the join's answer or, from a server that requires sign-in with the first frame, status 4003", closeText(ev.closeErr))
		case (ev.m.Type == "ack" || ev.m.Type == "error") && ev.m.ID == id:
			return false
		}
	}
}

// signIn sends the first frame of a server that requires one, an auth
// with token, and fails the check unless it is acked. What comes before
// the ack is read and dropped; an auth frame sets c.expires.
func (c *conn) signIn(token string) {
	m, _ := c.request(req{"type": "auth", "token": token})
	if m.Type != "ack" {
		c.t.Fatalf("%s: signing in with -token (the first frame) got %s, want an ack", c.name, m)
	}
}

// needToken returns -token, or skips the check without one.
func (t *T) needToken() string {
	if t.s.cfg.Token == "" {
		t.Skipf("no token: give one the server accepts with -token")
	}
	return t.s.cfg.Token
}

// needFirstFrame skips the check unless the server requires sign-in with
// the first frame.
func (t *T) needFirstFrame() {
	if !t.firstFrame() {
		t.Skipf("the server does not require sign-in with the first frame: it answered a join sent first")
	}
}

// signedOut sends r as the first frame of c and fails the check unless
// the server closes the connection with 4003. An ack of r fails at once:
// the server accepted what it must not; an error frame before the close
// is allowed.
func signedOut(c *conn, r req, what string) {
	id := c.start(r)
	for {
		ev := c.next("the close (status 4003) after a first frame that is " + what)
		switch {
		case ev.bad != nil:
			c.t.Fatalf("%v (waiting for the close after a first frame that is %s)", ev.bad, what)
		case ev.closed:
			if code := websocket.CloseStatus(ev.closeErr); code != statusSignedOut {
				c.t.Fatalf("a first frame that is %s closed the connection with %s, want status 4003", what, closeText(ev.closeErr))
			}
			return
		case ev.m.Type == "ack" && ev.m.ID == id:
			c.t.Fatalf("a first frame that is %s was acked: a server that requires sign-in with the first frame accepts nothing before it, and closes with 4003", what)
		}
	}
}

// authFrames returns the auth frames among msgs.
func authFrames(msgs []*msg) []*msg {
	var out []*msg
	for _, m := range msgs {
		if m.Type == "auth" {
			out = append(out, m)
		}
	}
	return out
}

// noAuthFrame fails the check if an auth frame is among msgs, which came
// after the answer that an auth frame must precede.
func noAuthFrame(t *T, msgs []*msg, after string) {
	if a := authFrames(msgs); len(a) > 0 {
		t.Fatalf("auth frame %s came after %s: it must come before the ack", a[0], after)
	}
}

// roundTrip has c publish to r, which it is in, and fails unless its own
// message comes back once before the ack: the connection still works.
func roundTrip(c *conn, r, text string) {
	_, before := c.ack(publish(r, text))
	if n := len(roomMsgs(before, r)); n != 1 {
		c.t.Fatalf("%s got %d messages of the room before its publish's ack, want its own one", c.name, n)
	}
}

// checkAuthRequired: on a server that requires sign-in with the first
// frame, a first frame of another type closes with 4003, a refresh with
// a good token included.
func checkAuthRequired(t *T) {
	token := t.needToken()
	t.needFirstFrame()
	r := t.room("")
	for _, tc := range []struct {
		r    req
		what string
	}{
		{req{"type": "refresh", "token": token}, "a refresh with -token"},
		{publish(r, "before signing in"), "a publish"},
		{req{"type": "presence", "room": r}, "a presence request"},
		{req{"type": "conformance-unknown-" + t.s.runID}, "of an unknown type"},
		{join(r), "a join"},
	} {
		signedOut(t.dialRaw(), tc.r, tc.what)
	}
}

// checkAuthRefused: a first frame that signs in with a token the server
// refuses, or with none, closes with 4003.
func checkAuthRefused(t *T) {
	t.needToken()
	t.needFirstFrame()
	signedOut(t.dialRaw(), req{"type": "auth", "token": t.s.cfg.BadToken}, "an auth with -bad-token")
	signedOut(t.dialRaw(), req{"type": "auth"}, "an auth without a token")
}

// checkAuthFirstFrame: a first frame that signs in with a good token is
// acked (after the auth frame, if any), and the connection then works.
func checkAuthFirstFrame(t *T) {
	token := t.needToken()
	t.needFirstFrame()
	c := t.dialRaw()
	ans, _ := c.request(req{"type": "auth", "token": token})
	if ans.Type != "ack" {
		t.Fatalf("a first frame that signs in with -token got %s, want an ack", ans)
	}
	r := t.room("")
	_, before := c.ack(join(r))
	noAuthFrame(t, before, "the sign-in's ack")
	roundTrip(c, r, "signed in")
}

// checkAuthRefresh: a refresh with a good token is acked, after an auth
// frame if the sign-in expires; one with a bad token gets an error frame,
// and the connection goes on.
func checkAuthRefresh(t *T) {
	token := t.needToken()
	first := t.firstFrame()
	c := t.dial()
	r := t.room("")
	c.ack(join(r)) // the auth frame of a sign-in that expires comes first
	expires := c.expires

	id := c.start(req{"type": "refresh", "token": token})
	// A join bounds the wait on a server that hands "refresh" to its
	// application, which may answer nothing; answers come in order.
	bound := c.start(join(t.room("-bound")))
	ans, before := c.until("the answer to a refresh with -token", func(m *msg) bool {
		return (m.Type == "ack" || m.Type == "error") && (m.ID == id || m.ID == bound)
	})
	switch {
	case ans.ID == bound && first:
		t.Fatalf("no answer to a refresh with -token before the next request's: a server that signs in with tokens answers a refresh")
	case ans.ID == bound:
		t.Skipf("no answer to a refresh before the next request's: the server hands it to an application, it takes no tokens")
	case ans.Type == "error" && first:
		t.Fatalf("a refresh with -token, which signed this connection in, got %s, want an ack", ans)
	case ans.Type == "error":
		t.Skipf("a refresh with -token got %s: the server takes no tokens (or not this one)", ans)
	}
	if expires && len(authFrames(before)) == 0 {
		t.Fatalf("the sign-in expires (its auth frame had a ttl), but a refresh was acked without an auth frame before the ack: the client cannot know its new ttl")
	}
	_, after := c.answer(bound, "the join after the refresh")
	noAuthFrame(t, after, "the refresh's ack")

	ans, before = c.request(req{"type": "refresh", "token": t.s.cfg.BadToken})
	if ans.Type != "error" {
		t.Fatalf("a refresh with -bad-token got %s, want an error frame", ans)
	}
	if a := authFrames(before); len(a) > 0 {
		t.Fatalf("a refused refresh came with auth frame %s: the sign-in is not renewed, and still expires when it would have", a[0])
	}
	roundTrip(c, r, "after a refused refresh")
}

// checkAuthNotFatal: on a server that does not require sign-in with the
// first frame, an auth frame (even first, as a client with a token may
// send on every connection) is a refresh: answered with an ack or an
// error, never a close.
func checkAuthNotFatal(t *T) {
	if t.firstFrame() {
		t.Skipf("the server requires sign-in with the first frame (auth-first-frame checks it)")
	}
	token, which := t.s.cfg.Token, "-token"
	if token == "" {
		token, which = t.s.cfg.BadToken, "-bad-token"
	}
	c := t.dialRaw()
	what := "an auth frame with " + which + ", sent first"
	id := c.start(req{"type": "auth", "token": token})
	r := t.room("")
	// A join bounds the wait on a server that hands "auth" to its
	// application. The server may have closed already: the close, read
	// below, tells more than the write's error.
	bound := c.id()
	jr := join(r)
	jr["id"] = bound
	if b, err := json.Marshal(jr); err != nil || c.write(b) != nil {
		bound = "" // no answer comes: the close ends the wait
	}
	var ans, joined *msg
	for joined == nil {
		ev := c.next("the answers to " + what + " and to a join")
		switch {
		case ev.bad != nil:
			t.Fatalf("%v (waiting for the answer to %s)", ev.bad, what)
		case ev.closed:
			t.Fatalf("%s: connection closed with %s; a server that does not require sign-in with the first frame answers an auth frame, with an ack or an error", what, closeText(ev.closeErr))
		case ev.m.Type != "ack" && ev.m.Type != "error":
		case ev.m.ID == id:
			ans = ev.m
		case bound != "" && ev.m.ID == bound:
			joined = ev.m
		}
	}
	if ans == nil {
		t.Skipf("no answer to %s before the next request's: the server hands it to an application", what)
	}
	if joined.Type != "ack" {
		t.Fatalf("a join after %s got %s, want an ack", what, joined)
	}
	roundTrip(c, r, "after an auth frame")
}
