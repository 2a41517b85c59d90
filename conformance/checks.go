package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/coder/websocket"
)

// checks returns the suite, in the order it runs. Each check uses rooms
// of its own and connections of its own; shutdown stops the server, so
// it comes last. docs/PROTOCOL.md's sections are in the comments.
func checks() []check {
	return []check{
		// §3, §4: rooms, acks.
		{"join-ack", checkJoinAck},
		{"join-again-ack", checkJoinAgain},
		{"leave-ack", checkLeaveAck},
		{"publish-echo-before-ack", checkPublishEcho},
		{"publish-reaches-members", checkPublishMembers},
		{"ignores-client-fields", checkIgnoresFields},
		{"room-name-128-bytes", checkRoom128},
		// §3, §4: errors.
		{"publish-not-member-error", checkPublishNotMember},
		{"leave-not-member-error", checkLeaveNotMember},
		{"room-name-empty-error", checkRoomEmpty},
		{"room-name-too-long-error", checkRoomTooLong},
		{"invalid-json-error", checkInvalidJSON},
		{"wrong-field-type-error", checkWrongFieldType},
		{"missing-type-error", checkMissingType},
		{"missing-type-error-id", checkMissingTypeID},
		{"not-an-object-error", checkNotObject},
		{"unknown-type-error", checkUnknownType},
		{"error-without-id", checkErrorWithoutID},
		{"answers-in-order", checkAnswerOrder},
		{"max-rooms-error", checkMaxRooms},
		// §4: one order per room.
		{"one-order-per-room", checkOneOrder},
		// §1: codecs and batching.
		{"codec-none-objects", checkCodecNone},
		{"codec-json-objects", checkCodecJSON},
		{"codec-batch-arrays", checkCodecBatch},
		// §1, §3, §7, §8: limits and close codes.
		{"ping-pong", checkPing},
		{"read-limit-1009", checkReadLimit},
		{"invalid-5-in-a-row-1007", checkInvalidRun},
		{"invalid-utf8-1007", checkInvalidUTF8},
		// §5: history.
		{"history-join-ack", checkHistoryJoinAck},
		{"history-seq-increases", checkHistorySeq},
		{"history-replay", checkHistoryReplay},
		{"history-recovery", checkHistoryRecovery},
		{"history-unknown-epoch", checkHistoryUnknownEpoch},
		{"history-recovery-fallback", checkHistoryFallback},
		{"history-bad-fields", checkHistoryBadFields},
		// §6: presence.
		{"presence-state-before-ack", checkPresenceState},
		{"presence-own-join-diff", checkPresenceOwnDiff},
		{"presence-join-leave-diffs", checkPresenceDiffs},
		{"presence-request", checkPresenceRequest},
		{"presence-not-member-error", checkPresenceNotMember},
		{"presence-from-is-id", checkPresenceFrom},
		// §11: tokens.
		{"auth-required-4003", checkAuthRequired},
		{"auth-refused-4003", checkAuthRefused},
		{"auth-first-frame", checkAuthFirstFrame},
		{"auth-refresh", checkAuthRefresh},
		{"auth-frame-not-fatal", checkAuthNotFatal},
		// §7: shutdown, last.
		{"shutdown-1001", checkShutdown},
	}
}

func checkJoinAck(t *T) {
	c := t.dial()
	c.ack(join(t.room("")))
}

func checkJoinAgain(t *T) {
	c := t.dial()
	r := t.room("")
	c.ack(join(r))
	c.ack(join(r))
	// Changes nothing: still in the room, once.
	_, before := c.ack(publish(r, "once"))
	if n := len(roomMsgs(before, r)); n != 1 {
		t.Fatalf("after joining twice, a publish came back %d times before its ack, want once", n)
	}
}

func checkLeaveAck(t *T) {
	c := t.dial()
	r := t.room("")
	c.ack(join(r))
	c.ack(leave(r))
	m := c.refused(publish(r, "after leave"))
	if m.Room != "" && m.Room != r {
		t.Fatalf("error frame names room %q, want %q", m.Room, r)
	}
}

func checkPublishEcho(t *T) {
	c := t.dial()
	r := t.room("")
	c.ack(join(r))
	ans, before := c.request(publish(r, "echo"))
	own := roomMsgs(before, r)
	if ans.Type != "ack" {
		if len(own) > 0 {
			t.Fatalf("publish answered %s after delivering it", ans)
		}
		t.Fatalf("publish answered %s, want an ack", ans)
	}
	if len(own) != 1 {
		// Another round trip tells a late message from a missing one.
		_, after := c.ack(join(t.room("-probe")))
		if late := roomMsgs(after, r); len(own) == 0 && len(late) > 0 {
			t.Fatalf("the sender got its own message %s after the publish's ack; it must come before", late[0])
		}
		t.Fatalf("the sender got its own message %d times before the publish's ack (and %d after), want once, before", len(own), len(roomMsgs(after, r)))
	}
	if own[0].From == "" {
		t.Fatalf("the sender's own message has no from: %s", own[0])
	}
}

func checkPublishMembers(t *T) {
	a, b := t.dial(), t.dial()
	r := t.room("")
	a.ack(join(r))
	b.ack(join(r))
	_, before := a.ack(publish(r, "from a"))
	aOwn := roomMsgs(before, r)
	if len(aOwn) != 1 {
		t.Fatalf("%s got %d messages of the room before its publish's ack, want its own one", a.name, len(aOwn))
	}
	atB, _ := b.until("a's message", isMessage(r))
	if atB.key() != aOwn[0].key() {
		t.Fatalf("the other member got %s, the sender %s: want the same from and data", atB, aOwn[0])
	}
	if atB.From == "" {
		t.Fatalf("a member's publish reached the other one without from: %s", atB)
	}
	_, before = b.ack(publish(r, "from b"))
	bOwn := roomMsgs(before, r)
	if len(bOwn) != 1 {
		t.Fatalf("%s got %d messages of the room before its publish's ack, want its own one", b.name, len(bOwn))
	}
	atA, _ := a.until("b's message", isMessage(r))
	if atA.key() != bOwn[0].key() {
		t.Fatalf("the other member got %s, the sender %s: want the same from and data", atA, bOwn[0])
	}
}

func checkIgnoresFields(t *T) {
	c := t.dial()
	r := t.room("")
	c.ack(join(r))
	_, before := c.ack(publish(r, "first"))
	first := roomMsgs(before, r)
	if len(first) != 1 {
		t.Fatalf("got %d messages before the publish's ack, want 1", len(first))
	}
	forged := publish(r, "forged")
	forged["from"] = "conformance-forged-from"
	forged["seq"] = 987654321
	forged["conformance_unknown_field"] = map[string]any{"x": []int{1, 2}}
	_, before = c.ack(forged)
	msgs := roomMsgs(before, r)
	if len(msgs) != 1 {
		t.Fatalf("got %d messages before the publish's ack, want 1", len(msgs))
	}
	if m := msgs[0]; m.From != first[0].From || m.Seq == 987654321 {
		t.Fatalf("a publish with from and seq fields came back as %s: the server must ignore them (from %q before)", m, first[0].From)
	}
}

func checkRoom128(t *T) {
	c := t.dial()
	r := t.room("-")
	r += strings.Repeat("x", 128-len(r))
	c.ack(join(r))
	c.ack(publish(r, "long name"))
}

func checkPublishNotMember(t *T) {
	c := t.dial()
	c.refused(publish(t.room(""), "not a member"))
	// Also a room that exists, with another member, who must not get it:
	// its own publish, after the refused one, is the first it gets.
	other := t.dial()
	r := t.room("-busy")
	other.ack(join(r))
	c.refused(publish(r, "not a member"))
	if _, before := other.ack(publish(r, "probe")); len(roomMsgs(before, r)) != 1 {
		t.Fatalf("a refused publish reached a member: %s", roomMsgs(before, r)[0])
	}
}

func checkLeaveNotMember(t *T) {
	c := t.dial()
	c.refused(leave(t.room("")))
}

func checkRoomEmpty(t *T) {
	c := t.dial()
	c.refused(join(""))
	c.refused(publish("", "empty room"))
	c.refused(leave(""))
}

func checkRoomTooLong(t *T) {
	c := t.dial()
	r := t.room("-")
	r += strings.Repeat("x", 129-len(r))
	c.refused(join(r))
	c.refused(publish(r, "long room"))
}

// errorAnswer sends raw and reads until an error frame; a frame with
// another ID in between fails.
func errorAnswer(c *conn, raw string) *msg {
	c.sendRaw([]byte(raw))
	m, _ := c.until("an error frame for "+raw, func(m *msg) bool { return m.Type == "error" || m.Type == "ack" })
	if m.Type != "error" {
		c.t.Fatalf("%s got %s, want an error frame", raw, m)
	}
	return m
}

func checkInvalidJSON(t *T) {
	c := t.dial()
	for _, raw := range []string{`{"type":"join","room":`, `not json`, `{"type":"join"}}`} {
		errorAnswer(c, raw)
	}
	c.ack(join(t.room(""))) // still connected
}

func checkWrongFieldType(t *T) {
	checkErrorsKeepID(t, `{"type":"join","room":123,"id":"wrong-room"}`, `{"type":"publish","room":["x"],"id":"wrong-room2"}`)
}

// checkErrorsKeepID sends each of frames, which end with their "id", and
// fails unless the error frame answering it carries that id.
func checkErrorsKeepID(t *T, frames ...string) {
	c := t.dial()
	for _, raw := range frames {
		m := errorAnswer(c, raw)
		if id := raw[strings.LastIndex(raw, `"id":"`)+6 : len(raw)-2]; m.ID != id {
			t.Fatalf("%s got %s: the error frame must carry the id, which could be read", raw, m)
		}
	}
	c.ack(join(t.room("")))
}

func checkMissingType(t *T) {
	c := t.dial()
	for _, raw := range []string{`{"room":"x"}`, `{"type":"","room":"x"}`, `{"type":7,"room":"x"}`, `{"type":null}`} {
		errorAnswer(c, raw)
	}
	c.ack(join(t.room(""))) // still connected
}

func checkMissingTypeID(t *T) {
	checkErrorsKeepID(t, `{"room":"x","id":"no-type"}`, `{"type":"","id":"empty-type"}`)
}

func checkNotObject(t *T) {
	c := t.dial()
	for _, raw := range []string{`[{"type":"join","room":"x","id":"1"}]`, `"join"`, `42`, `null`} {
		errorAnswer(c, raw)
	}
	c.ack(join(t.room("")))
}

func checkUnknownType(t *T) {
	c := t.dial()
	typ := "conformance-unknown-" + t.s.runID
	id := c.start(req{"type": typ})
	// A join after it bounds the wait: answers come in order.
	jid := c.start(join(t.room("")))
	m, _ := c.until("an answer", func(m *msg) bool {
		return (m.Type == "ack" || m.Type == "error") && (m.ID == id || m.ID == jid)
	})
	switch {
	case m.ID == jid:
		t.Skipf("no answer to type %q before the next request's: an application may handle it and answer nothing", typ)
	case m.Type == "ack":
		t.Skipf("type %q was acked: the server has an application that handles it (a server without one must answer an error)", typ)
	}
}

func checkErrorWithoutID(t *T) {
	c := t.dial()
	r := t.room("")
	requests := []req{
		publish(r, "not a member"),
		leave(r),
		join(""),
		{"type": "presence", "room": r},
	}
	for _, q := range requests {
		c.send(q)
	}
	id := c.start(join(t.room("-end")))
	_, before := c.answer(id, "the closing join")
	var errs []*msg
	for _, m := range before {
		if m.Type == "error" {
			if m.ID != "" {
				t.Fatalf("error frame %s has an id, but the request had none", m)
			}
			errs = append(errs, m)
		}
	}
	if len(errs) != len(requests) {
		t.Fatalf("%d refused requests without id got %d error frames before the next request's answer, want one each", len(requests), len(errs))
	}
}

func checkAnswerOrder(t *T) {
	c := t.dial()
	r := t.room("")
	requests := []req{
		join(r),
		publish(r, "1"),
		leave(t.room("-not-joined")),
		join(""),
		publish(r, "2"),
		join(t.room("-b")),
		{"type": "presence", "room": t.room("-not-joined")},
		publish(r, "3"),
		leave(r),
		publish(r, "4"),
	}
	var ids []string
	for _, q := range requests {
		ids = append(ids, c.start(q))
	}
	var got []string
	for len(got) < len(ids) {
		m := c.read("the answers")
		if (m.Type == "ack" || m.Type == "error") && m.ID != "" {
			got = append(got, m.ID)
		}
	}
	if !slices.Equal(got, ids) {
		t.Fatalf("answers came for requests %v, sent as %v", got, ids)
	}
}

func checkMaxRooms(t *T) {
	c := t.dial()
	const n = 129 // the reference server's default limit is 128
	var ids []string
	for i := range n {
		ids = append(ids, c.start(join(t.room(fmt.Sprint("-", i)))))
	}
	firstErr := -1
	for i, id := range ids {
		m, _ := c.answer(id, fmt.Sprintf("join %d", i))
		switch {
		case m.Type == "error" && firstErr < 0:
			if i == 0 {
				t.Fatalf("the first join got %s", m)
			}
			firstErr = i
		case m.Type == "ack" && firstErr >= 0:
			t.Fatalf("join %d was refused, as if past a limit of rooms, but join %d was acked", firstErr, i)
		}
	}
	if firstErr < 0 {
		t.Skipf("%d joins were all acked: the server allows more rooms per client", n)
	}
}

func checkOneOrder(t *T) {
	const pubs, listeners, each = 3, 2, 20
	r := t.room("")
	var members []*conn
	for range pubs + listeners {
		c := t.dial()
		c.ack(join(r))
		members = append(members, c)
	}
	ids := make([][]string, pubs)
	for k := range each { // interleaved: the server handles the publishers concurrently
		for p := range pubs {
			ids[p] = append(ids[p], members[p].start(publish(r, fmt.Sprintf("order p%d m%d", p, k))))
		}
	}
	var first []string
	for i, c := range members {
		var got []string
		acked := 0
		for len(got) < pubs*each || (i < pubs && acked < each) {
			m := c.read(fmt.Sprintf("message %d of %d", len(got)+1, pubs*each))
			switch {
			case m.Type == "message" && m.Room == r:
				got = append(got, m.key())
			case i < pubs && (m.Type == "ack" || m.Type == "error") && m.ID != "":
				if m.Type == "error" {
					t.Fatalf("%s: publish refused: %s", c.name, m)
				}
				if m.ID != ids[i][acked] {
					t.Fatalf("%s: ack %s came when %s was next", c.name, m.ID, ids[i][acked])
				}
				acked++
			}
		}
		if len(got) != pubs*each {
			t.Fatalf("%s got %d messages, want %d", c.name, len(got), pubs*each)
		}
		if first == nil {
			first = got
			continue
		}
		for j := range got {
			if got[j] != first[j] {
				t.Fatalf("members disagree on the order: message %d is %s at %s, %s at %s",
					j+1, got[j], c.name, first[j], members[0].name)
			}
		}
	}
}

// traffic has p publish n messages of about size bytes of text each to
// room r, pipelined, and waits for the acks.
func traffic(p *conn, r string, n, size int) {
	var ids []string
	for i := range n {
		text := fmt.Sprintf("traffic %d ", i) + strings.Repeat("y", size)
		ids = append(ids, p.start(publish(r, text)))
	}
	for i, id := range ids {
		if m, _ := p.answer(id, fmt.Sprintf("publish %d", i)); m.Type != "ack" {
			p.t.Fatalf("%s: publish %d got %s", p.name, i, m)
		}
	}
}

// receive reads n messages of room r on c; read fails on any frame the
// codec does not allow.
func receive(c *conn, r string, n int) {
	for i := range n {
		c.until(fmt.Sprintf("message %d of %d", i+1, n), isMessage(r))
	}
}

func checkCodecNone(t *T) {
	c, p := t.dial(), t.dial()
	if c.proto != "" {
		t.Fatalf("the server chose subprotocol %q, which the client did not offer", c.proto)
	}
	r := t.room("")
	c.ack(join(r))
	p.ack(join(r))
	traffic(p, r, 50, 500) // p reads its own copies meanwhile
	receive(c, r, 50)
}

func checkCodecJSON(t *T) {
	c := t.dial("wshub.json")
	if c.proto != "wshub.json" {
		t.Fatalf("offered wshub.json, the server chose %q", c.proto)
	}
	p := t.dial("wshub.json")
	r := t.room("")
	c.ack(join(r))
	p.ack(join(r))
	traffic(p, r, 50, 500) // p reads its own copies meanwhile
	receive(c, r, 50)
}

func checkCodecBatch(t *T) {
	c := t.dial("wshub.json-batch")
	switch c.proto {
	case "wshub.json-batch":
	case "", "wshub.json":
		t.Skipf("offered wshub.json-batch alone, the server chose %q: it does not batch", c.proto)
	default:
		t.Fatalf("offered wshub.json-batch, the server chose %q", c.proto)
	}
	p := t.dial()
	r := t.room("")
	c.ack(join(r))
	p.ack(join(r))
	// About 200 KB, so that a batching server has reasons to batch, and
	// to split batches at 32 KiB.
	traffic(p, r, 200, 1000)
	receive(c, r, 200)
	c.ack(leave(r)) // an answer in batch format too
	for _, f := range c.framesSeen() {
		if f.size > 32<<10 && f.msgs > 1 {
			t.Fatalf("a batch frame of %d messages has %d bytes, more than 32 KiB", f.msgs, f.size)
		}
	}
}

func checkPing(t *T) {
	c := t.dial()
	if err := c.ws.Ping(t.ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

// padded returns a join request of exactly n bytes, padded with a field
// the server ignores.
func padded(room, id string, n int) []byte {
	head := fmt.Sprintf(`{"type":"join","room":%q,"id":%q,"pad":"`, room, id)
	pad := n - len(head) - 2
	if pad < 0 {
		pad = 0
	}
	return []byte(head + strings.Repeat("p", pad) + `"}`)
}

func checkReadLimit(t *T) {
	limit := t.s.cfg.ReadLimit
	c := t.dial()
	c.sendRaw(padded(t.room("-at"), "at-limit", limit))
	if m, _ := c.answer("at-limit", fmt.Sprintf("a join of %d bytes, the read limit", limit)); m.Type != "ack" {
		t.Fatalf("a join of %d bytes (the read limit) got %s", limit, m)
	}
	c.sendRaw(padded(t.room("-over"), "over-limit", limit+1))
	ev := c.next(fmt.Sprintf("the close after a message of %d bytes", limit+1))
	for !ev.closed {
		if ev.m != nil && ev.m.ID == "over-limit" {
			t.Skipf("the server answered a message of %d bytes (%s): its read limit is larger than %d; give it with -read-limit", limit+1, ev.m, limit)
		}
		ev = c.next(fmt.Sprintf("the close after a message of %d bytes", limit+1))
	}
	if code := websocket.CloseStatus(ev.closeErr); code != websocket.StatusMessageTooBig {
		t.Fatalf("a message of %d bytes closed the connection with %s, want status 1009", limit+1, closeText(ev.closeErr))
	}
}

func checkInvalidRun(t *T) {
	c := t.dial()
	bad := `{"type":"join","room":`
	for range 4 {
		errorAnswer(c, bad)
	}
	c.ack(join(t.room(""))) // four in a row do not close; a valid message ends the run
	for range 4 {
		errorAnswer(c, bad)
	}
	c.sendRaw([]byte(bad))
	code, how := c.closed("the close after 5 undecodable messages in a row")
	if code != websocket.StatusInvalidFramePayloadData {
		t.Fatalf("5 undecodable messages in a row: connection closed with %s, want status 1007", how)
	}
}

func checkInvalidUTF8(t *T) {
	c := t.dial()
	c.ack(join(t.room("")))
	c.sendRaw([]byte("{\"type\":\"publish\",\"room\":\"x\",\"data\":\"\xff\xfe\"}"))
	code, how := c.closed("the close after a text frame that is not UTF-8")
	if code != websocket.StatusInvalidFramePayloadData {
		t.Fatalf("a text frame that is not UTF-8: connection closed with %s, want status 1007", how)
	}
}

func checkShutdown(t *T) {
	stop := t.s.cfg.Shutdown
	if stop == nil {
		t.Skipf("cannot stop the server: give -shutdown-cmd")
	}
	c := t.dial()
	r := t.room("")
	c.ack(join(r))
	if err := stop(t.ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	code, how := c.closed("the close at shutdown")
	if code != websocket.StatusGoingAway {
		t.Fatalf("at shutdown the connection closed with %s, want status 1001", how)
	}
}
