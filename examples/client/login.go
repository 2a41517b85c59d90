package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"

	"github.com/wshub/wshub/client"
)

// login signs in at the login mode of examples/chat (-login) and fetches
// the access tokens of that sign-in, with the session cookie it got.
type login struct {
	http      *http.Client // with the cookie jar
	signInURL string       // POST /login
	tokenURL  string       // GET /token
}

// newLogin returns the login of the chat server whose hub is at wsURL:
// its endpoints are next to the hub's (ws://host/ws: http://host/login).
func newLogin(wsURL string) (*login, error) {
	u, err := url.Parse(wsURL)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "ws":
		u.Scheme = "http"
	case "wss":
		u.Scheme = "https"
	case "http", "https":
	default:
		return nil, fmt.Errorf("-url %s: not a ws:// or wss:// URL", wsURL)
	}
	u.RawQuery, u.Fragment = "", ""
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	return &login{
		http:      &http.Client{Jar: jar, Timeout: answerTimeout},
		signInURL: u.ResolveReference(&url.URL{Path: "login"}).String(),
		tokenURL:  u.ResolveReference(&url.URL{Path: "token"}).String(),
	}, nil
}

// signIn signs in as name; the cookie jar keeps the session. It fails
// with the server's reason, or says that the server has no login mode.
func (l *login) signIn(ctx context.Context, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.signInURL, strings.NewReader(url.Values{"name": {name}}.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := l.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK:
		return nil
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed:
		return fmt.Errorf("%s: no login there: is the server examples/chat with -login?", resp.Status)
	}
	return fmt.Errorf("%s: %s", resp.Status, reason(resp))
}

// token is the Go client's Options.Token: a new access token of the
// sign-in. A 401 means the session is over (signed out, or its 24 h have
// passed): the error wraps client.ErrSignedOut, which ends the connection
// for good, as a new try would get the same answer.
func (l *login) token(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.tokenURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := l.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized:
		return "", fmt.Errorf("%w: %s", client.ErrSignedOut, reason(resp))
	default:
		return "", fmt.Errorf("GET /token: %s: %s", resp.Status, reason(resp))
	}
	var answer struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&answer); err != nil || answer.Token == "" {
		return "", fmt.Errorf("GET /token: no token in the answer")
	}
	return answer.Token, nil
}

// reason is the server's short, plain-text reason for its answer, or its
// status.
func reason(resp *http.Response) string {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
	text := strings.TrimSpace(string(b))
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mediaType != "text/plain" || text == "" || strings.Contains(text, "\n") {
		return resp.Status
	}
	return text
}
