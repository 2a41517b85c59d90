package main

import (
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// A server is one contender's hub, serving WebSocket clients on /ws in the
// server child process. The room of a client is either chosen by the client
// through the contender's own protocol (wshub, centrifuge) or given in the
// "room" query parameter (the hand-written hubs and melody, which have no
// protocol of their own).
type server interface {
	http.Handler
	// publish sends payload to every member of room, from the server side.
	publish(room string, payload []byte) error
	// members counts room memberships, to know when every client joined.
	members() int
	// kicked counts clients closed, or messages dropped, because a send
	// queue was full. Any nonzero value makes a throughput run invalid.
	kicked() uint64
	close()
}

// A windowedServer is a server whose publisher goroutines (the child's
// "p ROOM N ID") keep up to publishWindow publishes in flight: each
// startPublish hands one over, and its wait, called in order, returns
// what publish would have. A window of at most 1 means publish,
// one at a time.
type windowedServer interface {
	server
	publishWindow() int
	startPublish(room string, payload []byte) (wait func() error)
}

// contender describes one row of the tables: how its server is built and
// how the shared client speaks to it.
type contender struct {
	name    string
	version string
	server  func() (server, error)
	proto   protocol
	// optIn keeps the row out of the default selection: it runs only when
	// -contender names it.
	optIn bool
}

// contenders lists every contender, the baseline first; the opt-in
// variants come last.
func contenders() []contender {
	return []contender{
		{name: "coder", version: "github.com/coder/websocket v1.8.15 (hand-written hub)", server: newCoderHub, proto: queryProtocol{}},
		{name: "wshub", version: "github.com/wshub/wshub (this repo), wshub.json", server: newWshub, proto: wshubProtocol{}},
		{name: "wshub-batch", version: "github.com/wshub/wshub (this repo), wshub.json-batch", server: newWshub, proto: wshubProtocol{batch: true}},
		{name: "melody", version: "github.com/olahol/melody v1.1.4", server: newMelody, proto: queryProtocol{}},
		{name: "gorilla", version: "github.com/gorilla/websocket v1.5.3 (chat-example-style hub)", server: newGorillaHub, proto: queryProtocol{}},
		{name: "gorilla-batch", version: "github.com/gorilla/websocket v1.5.3 (chat-example-style hub, queued messages joined with newlines in one frame)", server: newGorillaBatchHub, proto: queryProtocol{}},
		{name: "centrifuge", version: "github.com/centrifugal/centrifuge v0.40.1, JSON protocol", server: newCentrifuge, proto: centrifugeProtocol{}},
		{name: "wshub-history", version: "github.com/wshub/wshub (this repo), wshub.json, every room keeps its last 1,000 messages", server: newWshubHistory, proto: wshubProtocol{}, optIn: true},
	}
}

// baseline is the contender every ratio is taken against.
const baseline = "coder"

func findContender(name string) (contender, error) {
	for _, c := range contenders() {
		if c.name == name {
			return c, nil
		}
	}
	return contender{}, fmt.Errorf("unknown contender %q", name)
}

// payloadPad makes a payload about 100 bytes long.
const payloadPad = "lorem-ipsum-dolor-sit-amet-consectetur-adipiscing-elit-sed-do-ei"

// newPayload returns a fresh JSON payload of about 100 bytes carrying the
// current time, so a receiver can compute the latency and count messages by
// the "ts" key however they are framed.
func newPayload() []byte {
	b := make([]byte, 0, 112)
	b = append(b, `{"text":"`...)
	b = append(b, payloadPad...)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, time.Now().UnixNano(), 10)
	return append(b, '}')
}
