package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/wshub/wshub"
)

// hubGrace is how long the hub waits past a sign-in's expiry before it
// closes the connection (wshub's, documented at Identity.Expires).
const hubGrace = 5 * time.Second

// startLoginServer starts the chat server with -login, whose access
// tokens last ttl, and a random key, as without CHAT_TOKEN_KEY.
func startLoginServer(t *testing.T, ttl time.Duration) (*server, *login) {
	t.Helper()
	lg := newLogin(randomKey(), ttl, nil) // startServerLogin sets the logger
	return startServerLogin(t, "127.0.0.1:0", debugPages{}, lg), lg
}

// randomKey returns a new key, as the chat makes without CHAT_TOKEN_KEY.
func randomKey() []byte {
	key := make([]byte, minKeyLen)
	rand.Read(key)
	return key
}

// user is someone with a browser's cookie jar, speaking to the chat's
// HTTP endpoints.
type user struct {
	t    *testing.T
	http *http.Client
	base string // http://host:port
}

func newUser(t *testing.T, s *server) *user {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &user{t: t, http: &http.Client{Jar: jar, Timeout: timeout}, base: "http://" + s.addr}
}

// do sends a request to path and returns the answer, its body read.
func (u *user) do(method, path, contentType, body string, header map[string]string) (*http.Response, string) {
	u.t.Helper()
	req, err := http.NewRequest(method, u.base+path, strings.NewReader(body))
	if err != nil {
		u.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := u.http.Do(req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, string(b)
}

// login signs in as name with the form, as the page does.
func (u *user) login(name string) *http.Response {
	u.t.Helper()
	resp, body := u.do("POST", "/login", "application/x-www-form-urlencoded", url.Values{"name": {name}}.Encode(), nil)
	if resp.StatusCode != http.StatusNoContent {
		u.t.Fatalf("POST /login %q: %s %s", name, resp.Status, body)
	}
	return resp
}

// token returns the answer of GET /token, which must be 200.
func (u *user) token() tokenAnswer {
	u.t.Helper()
	resp, body := u.do("GET", "/token", "", "", nil)
	var a tokenAnswer
	if resp.StatusCode != http.StatusOK || json.Unmarshal([]byte(body), &a) != nil {
		u.t.Fatalf("GET /token: %s %s", resp.Status, body)
	}
	return a
}

// tokenStatus returns the status of GET /token.
func (u *user) tokenStatus() int {
	u.t.Helper()
	resp, _ := u.do("GET", "/token", "", "", nil)
	return resp.StatusCode
}

func (u *user) logout() {
	u.t.Helper()
	if resp, body := u.do("POST", "/logout", "", "", nil); resp.StatusCode != http.StatusNoContent {
		u.t.Fatalf("POST /logout: %s %s", resp.Status, body)
	}
}

// dialToken connects to the hub and sends token (if not empty) as the
// first frame.
func dialToken(t *testing.T, s *server, token string) *peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, s.wsURL(), nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	p := &peer{t: t, conn: conn}
	if token != "" {
		b, _ := json.Marshal(wshub.Message{Type: wshub.TypeAuth, ID: "a", Token: token})
		p.send(string(b))
	}
	return p
}

// signedIn reads what the hub sends a connection whose sign-in it took:
// how long the sign-in lasts, the chat's welcome, the ack.
func (p *peer) signedIn(name string) (ttl int64) {
	p.t.Helper()
	got, err := p.read()
	var auth wshub.Message
	if err != nil || json.Unmarshal([]byte(got), &auth) != nil || auth.Type != wshub.TypeAuth || auth.TTL <= 0 {
		p.t.Fatalf("got %s (%v), want an auth frame with a ttl", got, err)
	}
	p.welcome(name)
	p.expect(`{"type":"ack","id":"a"}`)
	return auth.TTL
}

// closedWith fails unless the hub closes the connection with code and
// reason.
func (p *peer) closedWith(code websocket.StatusCode, reason string) {
	p.t.Helper()
	var ce websocket.CloseError
	if err := p.readUntilClosed(); !errors.As(err, &ce) || ce.Code != code || ce.Reason != reason {
		p.t.Fatalf("connection ended with %v, want close %d %q", err, code, reason)
	}
}

// TestLoginOff: without -login the chat has none of the login mode's
// endpoints, and the page knows it.
func TestLoginOff(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	u := newUser(t, s)
	for _, r := range []struct{ method, path string }{{"POST", "/login"}, {"GET", "/token"}, {"POST", "/logout"}} {
		resp, _ := u.do(r.method, r.path, "application/x-www-form-urlencoded", "name=alice", nil)
		equal(t, r.method+" "+r.path, resp.StatusCode, http.StatusNotFound)
	}
	_, body := u.do("GET", "/", "", "", nil)
	if !strings.Contains(body, loginMark) {
		t.Errorf("the page lacks %s", loginMark)
	}
}

// TestLoginEndpoints: POST /login takes the names ?name= takes, as a form
// or JSON, and sets an HttpOnly, SameSite=Strict session cookie; GET
// /token turns it into an access token for the hub; POST /logout deletes
// it. Other sites cannot post, and neither kind of token passes for the
// other.
func TestLoginEndpoints(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	s, lg := startLoginServer(t, ttl)
	u := newUser(t, s)

	_, page := u.do("GET", "/", "", "", nil)
	if !strings.Contains(page, `<html lang="en" data-mode="login">`) {
		t.Error("the page does not say it is in the login mode")
	}
	equal(t, "GET /token before signing in", u.tokenStatus(), http.StatusUnauthorized)

	for _, tc := range []struct{ name, reason string }{
		{"", "name is required"},
		{"  ", "name is required"},
		{strings.Repeat("x", maxNameLen+1), "name must be valid UTF-8 of at most 32 characters"},
		{"\xff", "name must be valid UTF-8 of at most 32 characters"},
		{"\x1b[2Jevil", "name must not contain control characters"},
		{"a\nb", "name must not contain control characters"},
		{"\u202eevil", "name must not contain control characters"},
	} {
		bodies := []struct{ contentType, body string }{{"application/x-www-form-urlencoded", url.Values{"name": {tc.name}}.Encode()}}
		if utf8.ValidString(tc.name) { // JSON cannot carry invalid UTF-8
			js, _ := json.Marshal(map[string]string{"name": tc.name})
			bodies = append(bodies, struct{ contentType, body string }{"application/json", string(js)})
		}
		for _, body := range bodies {
			resp, got := u.do("POST", "/login", body.contentType, body.body, nil)
			equal(t, fmt.Sprintf("%q as %s: status", tc.name, body.contentType), resp.StatusCode, http.StatusBadRequest)
			equal(t, fmt.Sprintf("%q as %s: reason", tc.name, body.contentType), strings.TrimSpace(got), tc.reason)
		}
	}
	resp, got := u.do("POST", "/login", "application/json", `{"name":`, nil)
	equal(t, "bad JSON", resp.StatusCode, http.StatusBadRequest)
	equal(t, "bad JSON: reason", strings.TrimSpace(got), errLoginBody.Error())

	// Another site's page cannot sign its visitors in or out.
	for _, h := range []map[string]string{{"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}} {
		for _, path := range []string{"/login", "/logout"} {
			resp, _ := u.do("POST", path, "application/x-www-form-urlencoded", "name=alice", h)
			equal(t, fmt.Sprintf("POST %s with %v", path, h), resp.StatusCode, http.StatusForbidden)
		}
	}
	equal(t, "GET /token after refused sign-ins", u.tokenStatus(), http.StatusUnauthorized)

	resp, _ = u.do("POST", "/login", "application/json", `{"name":" alice "}`, nil)
	equal(t, "POST /login", resp.StatusCode, http.StatusNoContent)
	cookies := resp.Cookies()
	if len(cookies) != 1 {
		t.Fatalf("cookies: %v", cookies)
	}
	c := cookies[0]
	if c.Name != sessionCookie || c.Path != "/" || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.MaxAge != int(sessionTTL.Seconds()) || c.Secure {
		t.Errorf("cookie: %s", c)
	}
	session, sessionExp, err := lg.verify(lg.session, c.Value)
	if err != nil || session != "alice" {
		t.Fatalf("the cookie's token: %q, %v", session, err)
	}

	resp, got = u.do("GET", "/token", "", "", nil)
	equal(t, "GET /token", resp.StatusCode, http.StatusOK)
	equal(t, "Content-Type", resp.Header.Get("Content-Type"), "application/json")
	equal(t, "Cache-Control", resp.Header.Get("Cache-Control"), "no-store")
	var a tokenAnswer
	if err := json.Unmarshal([]byte(got), &a); err != nil {
		t.Fatalf("GET /token: %s: %v", got, err)
	}
	equal(t, "name", a.Name, "alice")
	// What the hub will check, read with the library directly.
	var claims jwt.RegisteredClaims
	tok, err := jwt.ParseWithClaims(a.Token, &claims, func(*jwt.Token) (any, error) { return lg.key, nil })
	if err != nil {
		t.Fatalf("access token: %v", err)
	}
	equal(t, "alg", tok.Method.Alg(), "HS256")
	equal(t, "sub", claims.Subject, "alice")
	equal(t, "iss", claims.Issuer, tokenIssuer)
	equal(t, "aud", strings.Join(claims.Audience, ","), hubAudience)
	equal(t, "expires", a.Expires, claims.ExpiresAt.UnixMilli())
	// Rounded up to the second, from the second it was issued in.
	if life := claims.ExpiresAt.Sub(claims.IssuedAt.Time); life < ttl || life > ttl+time.Second {
		t.Errorf("the token lasts %v, want %v rounded up to the second", life, ttl)
	}
	if claims.ExpiresAt.After(sessionExp) {
		t.Errorf("the token outlasts the session")
	}

	// Neither kind of token passes for the other.
	if _, _, err := lg.verify(lg.session, a.Token); err == nil {
		t.Error("an access token passes for a session")
	}
	other := newUser(t, s)
	base, _ := url.Parse(other.base)
	other.http.Jar.SetCookies(base, []*http.Cookie{{Name: sessionCookie, Value: a.Token}})
	equal(t, "GET /token with an access token as the cookie", other.tokenStatus(), http.StatusUnauthorized)

	u.logout()
	equal(t, "GET /token after signing out", u.tokenStatus(), http.StatusUnauthorized)
	u.logout() // signed out already: nothing to do, but no error
}

// TestTokenSignIn: in the login mode, a connection signs in with its
// first frame, an access token; anything else is closed with 4003. The
// name comes from the token, whatever the URL says.
func TestTokenSignIn(t *testing.T) {
	t.Parallel()
	s, lg := startLoginServer(t, time.Minute)
	now := time.Now()
	sign := func(l *login, name, audience string, exp time.Time) string {
		t.Helper()
		tok, err := l.sign(name, audience, now, exp)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	u := newUser(t, s)
	u.login("alice")
	sessionToken := u.http.Jar.Cookies(&url.URL{Scheme: "http", Host: s.addr})[0].Value
	noExpiry, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Issuer: tokenIssuer, Subject: "alice", Audience: jwt.ClaimStrings{hubAudience},
	}).SignedString(lg.key)
	if err != nil {
		t.Fatal(err)
	}
	unsigned, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{
		Issuer: tokenIssuer, Subject: "alice", Audience: jwt.ClaimStrings{hubAudience}, ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute)),
	}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := newLogin(randomKey(), time.Minute, nil)

	t.Run("no token", func(t *testing.T) {
		t.Parallel()
		p := dialToken(t, s, "")
		p.send(`{"type":"join","room":"lobby","id":"j"}`)
		p.closedWith(wshub.StatusSignedOut, "auth required")
	})
	for _, tc := range []struct{ name, token string }{
		{"garbage", "not a token"},
		{"session token", sessionToken},
		{"other key", sign(otherKey, "alice", hubAudience, now.Add(time.Minute))},
		{"unsigned", unsigned},
		{"expired", sign(lg, "alice", hubAudience, now.Add(-time.Minute))},
		{"no expiry", noExpiry},
		{"bad name", sign(lg, "\x1b[2Jevil", hubAudience, now.Add(time.Minute))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := dialToken(t, s, tc.token)
			p.closedWith(wshub.StatusSignedOut, "unauthorized")
		})
	}

	t.Run("good", func(t *testing.T) {
		t.Parallel()
		// A name in the URL is no name: the token's is.
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		conn, _, err := websocket.Dial(ctx, s.wsURL()+"?name=mallory", nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.CloseNow() })
		p := &peer{t: t, conn: conn}
		p.send(fmt.Sprintf(`{"type":"auth","id":"a","token":%q}`, u.token().Token))
		if ttl := p.signedIn("alice"); ttl > time.Minute.Milliseconds()+1000 {
			t.Errorf("ttl %d ms, more than the token's minute", ttl)
		}
		p.join("lobby")
		p.send(`{"type":"publish","room":"lobby","data":{"name":"mallory","text":"hi"}}`)
		p.expect(`{"type":"message","room":"lobby","from":"alice","data":{"name":"alice","text":"hi"},"seq":1}`)
	})
}

// TestTokenRefresh: a connection refreshes its sign-in with a new access
// token of its name; the hub says how long the new one lasts. A token of
// another name, or a bad one, is refused, and the connection goes on.
func TestTokenRefresh(t *testing.T) {
	t.Parallel()
	s, _ := startLoginServer(t, time.Minute)
	alice, bob := newUser(t, s), newUser(t, s)
	alice.login("alice")
	bob.login("bob")
	p := dialToken(t, s, alice.token().Token)
	p.signedIn("alice")
	p.join("lobby")

	for i, tc := range []struct{ token, err string }{
		{bob.token().Token, `wshub: refresh refused: the identity's ID "bob" is not the client's`},
		{"not a token", "wshub: refresh refused: token is malformed: token contains an invalid number of segments"},
	} {
		p.send(fmt.Sprintf(`{"type":"refresh","id":"r%d","token":%q}`, i, tc.token))
		p.expect(fmt.Sprintf(`{"type":"error","id":"r%d","error":%q}`, i, tc.err))
	}
	for i := range 3 {
		p.send(fmt.Sprintf(`{"type":"refresh","id":"ok%d","token":%q}`, i, alice.token().Token))
		got, err := p.read()
		var auth wshub.Message
		if err != nil || json.Unmarshal([]byte(got), &auth) != nil || auth.Type != wshub.TypeAuth || auth.TTL <= 0 {
			t.Fatalf("got %s (%v), want an auth frame with a ttl", got, err)
		}
		p.expect(fmt.Sprintf(`{"type":"ack","id":"ok%d"}`, i))
		p.send(fmt.Sprintf(`{"type":"publish","room":"lobby","data":{"text":"after refresh %d"}}`, i))
		p.expect(fmt.Sprintf(`{"type":"message","room":"lobby","from":"alice","data":{"name":"alice","text":"after refresh %d"},"seq":%d}`, i, i+1))
	}
}

// tokenLine is the server's log line for an access token it gave.
var tokenLine = regexp.MustCompile(`msg="token issued" name=(\S+) expires=(\d+)`)

// tokensOf returns the expiries of the access tokens the log says the
// server gave name, in order.
func tokensOf(log, name string) []time.Time {
	var exps []time.Time
	for _, m := range tokenLine.FindAllStringSubmatch(log, -1) {
		if ms, err := strconv.ParseInt(m[2], 10, 64); err == nil && m[1] == name {
			exps = append(exps, time.UnixMilli(ms))
		}
	}
	return exps
}

// chatPastExpiry calls say with a new text for each access token the
// server gives name (each refresh fetches one), until it gave one after
// the first token's expiry and the hub's grace: by then the hub would
// have closed the connection of the first token, had it not taken the
// refreshes.
func chatPastExpiry(t *testing.T, s *server, name string, ttl time.Duration, say func(text string)) {
	t.Helper()
	var first time.Time
	s.log.waitUntil(t, "token of "+name, func(log string) bool {
		if exps := tokensOf(log, name); len(exps) > 0 {
			first = exps[0]
			return true
		}
		return false
	})
	for i := 1; ; i++ {
		if i > 100 {
			t.Fatalf("no token of %s after the first one's expiry in 100 rounds", name)
		}
		say(fmt.Sprint("message ", i))
		var last time.Time
		s.log.waitUntil(t, "another token of "+name, func(log string) bool {
			exps := tokensOf(log, name)
			last = exps[len(exps)-1]
			return len(exps) > i
		})
		// Issued at least ttl before its expiry, which is rounded up to
		// the second.
		if last.Add(-ttl - time.Second).After(first.Add(hubGrace)) {
			return
		}
	}
}

// TestLoginClients drives two real client programs with -login. Their
// tokens last 2 s: they refresh them over one connection while they
// chat, past the point where the hub would have closed it for the first
// token's expiry. Then alice signs out in a browser: every connection of
// hers is closed with 4003, and her client says it is signed out and
// exits; bob's goes on.
func TestLoginClients(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	s, _ := startLoginServer(t, ttl)
	connectLogin := func(name string) *cli {
		c := startClient(t, "-url", s.wsURL(), "-login", name, "-room", "lobby")
		c.name = name
		c.expect("* connected to " + s.wsURL() + " as " + name)
		c.expect("* joined lobby")
		return c
	}
	alice := connectLogin("alice")
	bob := connectLogin("bob")
	aliceConn := s.hub.ClientsOf("alice")
	equal(t, "alice's connections", len(aliceConn), 1)

	chatPastExpiry(t, s, "alice", ttl, func(text string) {
		alice.send(text)
		alice.expect("[lobby] alice: " + text)
		bob.expect("[lobby] alice: " + text)
	})
	alice.send("still the same connection")
	bob.expect("[lobby] alice: still the same connection")
	if now := s.hub.ClientsOf("alice"); len(now) != 1 || now[0] != aliceConn[0] {
		t.Fatalf("alice's connections: %v, want the first one only", now)
	}

	// alice signs in with a browser too, and signs out there.
	browser := newUser(t, s)
	browser.login("alice")
	tab := dialToken(t, s, browser.token().Token)
	tab.signedIn("alice")
	browser.logout()
	tab.closedWith(wshub.StatusSignedOut, "signed out")
	equal(t, "alice's exit status", alice.wait(), 1)
	equal(t, "alice's stderr", alice.stderr.String(), "client: signed out: 4003 signed out\n")
	bob.expectPresence("* alice left lobby")
	bob.send("alone")
	bob.expect("[lobby] bob: alone")
	s.log.waitFor(t, `msg="signed out" name=alice`)
}

// TestClientLoginRefused: the client says why it cannot sign in, and
// exits.
func TestClientLoginRefused(t *testing.T) {
	t.Parallel()
	withLogin, _ := startLoginServer(t, time.Minute)
	without := startServer(t)
	for _, tc := range []struct {
		s          *server
		name, want string
	}{
		{withLogin, "ev\x1bil", "400 Bad Request: name must not contain control characters"},
		{withLogin, " ", "400 Bad Request: name is required"},
		{without, "alice", "404 Not Found: no login there: is the server examples/chat with -login?"},
	} {
		c := startClient(t, "-url", tc.s.wsURL(), "-login", tc.name)
		equal(t, "exit status", c.wait(), 1)
		equal(t, "stderr", c.stderr.String(), "client: cannot sign in at "+tc.s.wsURL()+": "+tc.want+"\n")
	}
}
