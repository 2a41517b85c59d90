package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net/http"
	"os"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/wshub/wshub"
)

// The login mode (-login) shows the token mechanics of docs/PROTOCOL.md
// §11 with two kinds of JWT, both HS256 with the same key:
//
//   - a session token, 24 h, in an HttpOnly, SameSite=Strict cookie set by
//     POST /login: it never reaches the page's JavaScript, and is good
//     only at GET /token;
//   - access tokens, -token-ttl, from GET /token: the page sends one as the
//     first frame of each connection and a fresh one before it expires;
//     they are good only at the hub.
//
// Their audiences keep them apart: a session token is refused by the hub,
// an access token in the cookie by /token. There is no password: a name
// is all it takes, as without -login. Sign-out is stateless too: it clears
// the browser's cookie and closes the name's connections; a token handed
// out before stays good until it expires, and a session cookie copied
// elsewhere until its 24 h are over. A real application keeps sessions on
// the server and checks them at /token.

const (
	sessionCookie = "chat_session"
	sessionTTL    = 24 * time.Hour

	// tokenLeeway is how far past its expiry a token is still accepted:
	// an allowance for the clocks of nodes that share CHAT_TOKEN_KEY. The
	// hub adds its own 5 s before it closes a connection whose sign-in
	// ended.
	tokenLeeway = 5 * time.Second

	tokenIssuer     = "wshub-chat"
	sessionAudience = "wshub-chat-session" // good at /token
	hubAudience     = "wshub-chat-hub"     // good at /ws

	minKeyLen  = 32      // bytes: the size of HS256's hash, below which the key is the weak part
	maxLoginIn = 4 << 10 // bytes of a POST /login body: a name is at most 32 characters
)

// login signs people in and out, and hands out the hub's access tokens.
type login struct {
	key     []byte
	ttl     time.Duration // of access tokens
	logger  *slog.Logger
	session *jwt.Parser // checks session tokens
	access  *jwt.Parser // checks access tokens
}

// newLogin returns the login mode with key, whose access tokens last ttl.
func newLogin(key []byte, ttl time.Duration, logger *slog.Logger) *login {
	parser := func(audience string) *jwt.Parser {
		return jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}), // not "none", not another key type
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(tokenLeeway),
			jwt.WithIssuer(tokenIssuer),
			jwt.WithAudience(audience),
		)
	}
	return &login{key: key, ttl: ttl, logger: logger, session: parser(sessionAudience), access: parser(hubAudience)}
}

// tokenKey returns the key of CHAT_TOKEN_KEY, which nodes that take each
// other's tokens share, or else a random one, good for this process only.
// It fails if the variable holds fewer than 32 bytes.
func tokenKey(logger *slog.Logger) ([]byte, error) {
	if env := os.Getenv("CHAT_TOKEN_KEY"); env != "" {
		if len(env) < minKeyLen {
			return nil, fmt.Errorf("CHAT_TOKEN_KEY has %d bytes, fewer than %d: make one with openssl rand -base64 32", len(env), minKeyLen)
		}
		return []byte(env), nil
	}
	logger.Info("CHAT_TOKEN_KEY not set: tokens are signed with a random key, good for this process only")
	key := make([]byte, minKeyLen)
	rand.Read(key) // never fails (crypto/rand)
	return key, nil
}

// sign returns a token for name, for audience, issued at now, that
// expires at exp.
func (l *login) sign(name, audience string, now, exp time.Time) (string, error) {
	claims := jwt.RegisteredClaims{
		Issuer:    tokenIssuer,
		Subject:   name,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(l.key)
}

// errBadSubject refuses a token whose subject is not a valid name.
var errBadSubject = errors.New("token subject is not a valid name")

// verify checks token with p and returns its name and expiry, or why it
// is refused.
func (l *login) verify(p *jwt.Parser, token string) (name string, exp time.Time, err error) {
	var claims jwt.RegisteredClaims
	if _, err := p.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return l.key, nil }); err != nil {
		return "", time.Time{}, err
	}
	if n, err := checkName(claims.Subject); err != nil || n != claims.Subject {
		return "", time.Time{}, errBadSubject
	}
	return claims.Subject, claims.ExpiresAt.Time, nil
}

// authenticateToken is the hub's Options.AuthenticateToken: a client
// signs in with an access token, as its first frame, and refreshes with
// another. Its name comes from the token, and the hub closes it 5 s after
// the token expires unless it sent a newer one.
func (l *login) authenticateToken(_ *wshub.Client, token string) (wshub.Identity, error) {
	name, exp, err := l.verify(l.access, token)
	if err != nil {
		return wshub.Identity{}, err
	}
	id := identity(name)
	id.Expires = exp
	return id, nil
}

// signedIn returns the name and expiry of the session in r's cookie, or
// false if there is none or it is not good.
func (l *login) signedIn(r *http.Request) (name string, exp time.Time, ok bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", time.Time{}, false
	}
	name, exp, err = l.verify(l.session, c.Value)
	return name, exp, err == nil
}

// setCookie sets the session cookie to value for maxAge seconds (negative:
// deletes it). HttpOnly keeps it from the page's scripts; SameSite=Strict
// from requests that other sites make (so another site can neither get a
// token nor sign the user out).
func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
}

// handleLogin is POST /login: it takes a name (form field or JSON "name",
// the rules of ?name=) and sets the session cookie; 204, or 400 with the
// reason.
func (l *login) handleLogin(w http.ResponseWriter, r *http.Request) {
	name, err := readName(w, r)
	if err == nil {
		name, err = checkName(name)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	token, err := l.sign(name, sessionAudience, now, now.Add(sessionTTL))
	if err != nil {
		l.logger.Error("signing a session token", "err", err)
		http.Error(w, "server error", http.StatusInternalServerError)
		return
	}
	setCookie(w, r, token, int(sessionTTL.Seconds()))
	l.logger.Info("signed in", "name", name)
	w.WriteHeader(http.StatusNoContent)
}

// errLoginBody refuses a body that is neither a form nor JSON with a name.
var errLoginBody = errors.New(`body must be a form with a name field, or JSON {"name": "..."}`)

// readName reads the name of a POST /login, unchecked.
func readName(w http.ResponseWriter, r *http.Request) (string, error) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginIn)
	if mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mediaType == "application/json" {
		var body struct {
			Name string `json:"name"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			return "", errLoginBody
		}
		return body.Name, nil
	}
	if err := r.ParseForm(); err != nil {
		return "", errLoginBody
	}
	return r.PostForm.Get("name"), nil
}

// tokenAnswer is GET /token's answer.
type tokenAnswer struct {
	Token   string `json:"token"`   // an access token for the hub
	Expires int64  `json:"expires"` // its expiry, in Unix milliseconds
	Name    string `json:"name"`    // whom it names
}

// handleToken is GET /token: with a good session cookie, a new access
// token; else 401.
func (l *login) handleToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	name, sessionEnd, ok := l.signedIn(r)
	if !ok {
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	// Rounded up to the second, a JWT's precision, so that a token lasts
	// at least ttl; but no longer than the session.
	now := time.Now()
	exp := now.Add(l.ttl + time.Second - 1).Truncate(time.Second)
	if sessionEnd.Before(exp) {
		exp = sessionEnd
	}
	token, err := l.sign(name, hubAudience, now, exp)
	if err != nil {
		l.logger.Error("signing an access token", "err", err)
		http.Error(w, "server error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(tokenAnswer{Token: token, Expires: exp.UnixMilli(), Name: name})
	// One line per connection and refresh: the mechanics, for all to see.
	l.logger.Info("token issued", "name", name, "expires", exp.UnixMilli())
}

// handleLogout is POST /logout: it deletes the session cookie and closes
// every connection of the name, on every hub, with 4003 "signed out",
// which tells clients to stop. 204 in any case.
func (l *login) handleLogout(hub *wshub.Hub) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		setCookie(w, r, "", -1)
		if name, _, ok := l.signedIn(r); ok {
			// With the chat's in-memory engine, this hub is every hub; with
			// a CommandEngine the others are told too, and an error means
			// some may not have been: this hub's are closed anyway.
			if err := hub.DisconnectUser(r.Context(), name, wshub.StatusSignedOut, "signed out"); err != nil {
				l.logger.Warn("sign-out not sent to every hub", "name", name, "err", err)
			}
			l.logger.Info("signed out", "name", name)
		}
		w.WriteHeader(http.StatusNoContent)
	}
}
