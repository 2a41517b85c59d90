package main

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/wshub/wshub"
)

// pongHub holds the README's Handler example, which TestREADMEHandler
// checks is the same code.
func pongHub() *wshub.Hub {
	hub := wshub.New(wshub.HandlerFunc(func(ctx context.Context, c *wshub.Client, m *wshub.Message) error {
		return c.Send(&wshub.Message{Type: "pong", Data: m.Data})
	}), nil)
	return hub
}

// TestREADMEHandler checks that the README's Handler example is pongHub's
// body, and that it answers as the README says.
func TestREADMEHandler(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("handler_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(readme), "go to\nthe `Handler` passed to `New`:\n\n```go\n")
	block, _, _ = strings.Cut(block, "```\n")
	_, body, _ := strings.Cut(string(src), "func pongHub() *wshub.Hub {\n")
	body, _, _ = strings.Cut(body, "\treturn hub\n")
	body = strings.ReplaceAll(body, "\n\t", "\n")
	body = strings.TrimPrefix(body, "\t")
	if block == "" || block != body {
		t.Errorf("README.md's Handler example:\n%s\ndiffers from pongHub's body:\n%s", block, body)
	}

	hub := pongHub()
	ctx, conn := serveHub(t, hub)
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"ping","data":[1,2]}`)); err != nil {
		t.Fatal(err)
	}
	expectFrame(t, ctx, conn, `{"type":"pong","data":[1,2]}`)
}
