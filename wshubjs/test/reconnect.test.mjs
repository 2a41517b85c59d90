// Reconnecting: wshub.js connects again after 1001, 1006 and 1012, joins
// its rooms again with a recovery, delivers each message once, says
// whether the recovery was complete, and stops on other close codes.

import {test} from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import {Client} from "../wshub.js";
import {Recorder, connect, uniq} from "./helpers.mjs";

// kickAndHold has the hub close alice's connection with code, and refuse
// her attempts to connect again (503, a failed attempt: 1006) until
// release is called. It resolves once she is offline and an attempt has
// failed, with the state events of both.
async function kickAndHold(alice, code) {
  const from = alice.mark();
  await alice.c.send({type: "kick", data: {code, hold: true}});
  const closed = await alice.until("state", (e) => e.state === "offline", from);
  const failed = await alice.until("state", (e) => e.state === "offline" && e.code === 1006, from);
  return {from, closed, failed};
}

test("reconnect after 1001 with recovery, no duplicate", async (t) => {
  const room = uniq("lobby"), plain = uniq("plain");
  const an = uniq("alice"), bn = uniq("bob");
  const alice = connect(t, an);
  const bob = connect(t, bn);
  await alice.c.join(room, {history: 10});
  await alice.c.join(plain);
  await bob.c.join(room);
  await bob.c.publish(room, {text: "before"});
  await alice.text(room, "before");
  await alice.until("presence_diff", (e) => e.room === room && e.joins.some((p) => p.id === bn));
  const state1 = alice.c.members(room);
  assert.deepEqual([...state1.keys()].sort(), [an, bn].sort());

  const {from, closed, failed} = await kickAndHold(alice, 1001);
  // Backoff: about minDelay (20 ms) ±25 %, doubled after the failed attempt.
  assert.equal(closed.code, 1001);
  assert.equal(closed.attempt, 1);
  assert.ok(closed.delay >= 15 && closed.delay <= 25, `first delay ${closed.delay}`);
  assert.equal(failed.attempt, 2);
  assert.ok(failed.delay >= 30 && failed.delay <= 50, `second delay ${failed.delay}`);
  assert.equal(alice.c.state === "offline" || alice.c.state === "connecting", true);
  assert.deepEqual(alice.c.rooms, [room, plain]);

  await bob.c.publish(room, {text: "missed 1"});
  await bob.c.publish(room, {text: "missed 2"});
  await bob.c.send({type: "release", data: an});

  const rejoin = await alice.until("rejoin", (e) => e.room === room, from);
  assert.equal(rejoin.recovered, true);
  assert.equal(rejoin.seq, 3);
  // A room without history cannot recover.
  assert.equal((await alice.until("rejoin", (e) => e.room === plain, from)).recovered, false);
  await bob.c.publish(room, {text: "after"});
  await alice.text(room, "after");
  assert.deepEqual(alice.texts(room), ["before", "missed 1", "missed 2", "after"]);
  assert.deepEqual(alice.messages(room).map((m) => m.seq), [1, 2, 3, 4]);
  assert.deepEqual(alice.messages(room).map((m) => m.replay), [undefined, "recovery", "recovery", undefined]);
  // The rejoin brought a new presence state, which replaced the map.
  const state2 = await alice.until("presence", (e) => e.room === room, from);
  assert.equal(alice.c.members(room), state2.members);
  assert.notEqual(state2.members, state1);
  assert.deepEqual([...state2.members.keys()].sort(), [an, bn].sort());
});

test("a recovery that fails falls back to history", async (t) => {
  // small- rooms keep their last 10 messages only.
  const room = uniq("small");
  const an = uniq("alice");
  const alice = connect(t, an);
  const bob = connect(t, uniq("bob"));
  await alice.c.join(room, {history: 3});
  await bob.c.join(room);
  await bob.c.publish(room, {text: "m0"});
  await alice.text(room, "m0");

  const {from} = await kickAndHold(alice, 1001);
  for (let i = 1; i <= 12; i++) await bob.c.publish(room, {text: "m" + i});
  await bob.c.send({type: "release", data: an});

  const rejoin = await alice.until("rejoin", (e) => e.room === room, from);
  assert.equal(rejoin.recovered, false);
  await bob.c.publish(room, {text: "after"});
  await alice.text(room, "after");
  assert.deepEqual(alice.texts(room), ["m0", "m10", "m11", "m12", "after"]);
  assert.deepEqual(alice.messages(room).map((m) => m.replay), [undefined, "history", "history", "history", undefined]);
});

test("1012 reconnects; a room left is not joined again", async (t) => {
  const r1 = uniq("one"), r2 = uniq("two");
  const alice = connect(t, uniq("alice"));
  await alice.c.join(r1);
  await alice.c.join(r2);
  await alice.c.leave(r2);
  assert.deepEqual(alice.c.rooms, [r1]);
  const from = alice.mark();
  await alice.c.send({type: "kick", data: {code: 1012}});
  assert.equal((await alice.until("state", (e) => e.state === "offline", from)).code, 1012);
  assert.equal((await alice.until("rejoin", (e) => e.room === r1, from)).recovered, true);
  // Answers come in order: had r2 been joined again, its answer would
  // have come before this one.
  await alice.c.publish(r1, {text: "hi"});
  assert.deepEqual(alice.log.slice(from).filter((x) => x.type === "rejoin").map((x) => x.e.room), [r1]);
});

test("a request in flight when the connection goes is rejected", async (t) => {
  const room = uniq("room");
  const key = uniq("stall");
  const alice = connect(t, uniq("alice"));
  const bob = connect(t, uniq("bob"));
  await alice.c.join(room);
  await alice.c.send({type: "stall", data: key}); // the hub reads nothing more from alice
  const publish = alice.c.publish(room, {text: "lost?"});
  const from = alice.mark();
  alice.c.reconnect();
  await assert.rejects(publish, {code: "disconnected"});
  await bob.c.send({type: "unstall", data: key});
  assert.equal((await alice.until("rejoin", (e) => e.room === room, from)).recovered, true);
  await alice.c.publish(room, {text: "after"});
  await alice.text(room, "after");
});

test("other close codes stop the client", async (t) => {
  const room = uniq("room");
  const alice = connect(t, uniq("alice"));
  await alice.c.join(room);
  const from = alice.mark();
  await alice.c.send({type: "kick", data: {code: 1008, reason: "go away"}});
  assert.deepEqual(await alice.until("state", (e) => e.state !== "online", from), {state: "closed", code: 1008, reason: "go away"});
  assert.equal(alice.c.state, "closed");
  await assert.rejects(alice.c.publish(room, {text: "hi"}), {code: "closed"});
  // Its rooms are kept: reconnect() joins them again.
  assert.deepEqual(alice.c.rooms, [room]);
  alice.c.reconnect();
  assert.equal((await alice.until("rejoin", (e) => e.room === room, from)).recovered, true);
  assert.deepEqual(alice.log.slice(from).filter((x) => x.type === "state").map((x) => x.e.state), ["closed", "connecting", "online"]);
});

test("an attempt to connect that is never answered times out, and is tried again", async (t) => {
  // A server that accepts connections and never answers them.
  const sockets = [];
  const server = net.createServer((s) => sockets.push(s));
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  const c = new Client(`ws://127.0.0.1:${server.address().port}/ws`, {timeout: 200, minDelay: 20, maxDelay: 200, refusedDelay: 0});
  t.after(() => c.close());
  const rec = new Recorder(c, "silent");
  const off = await rec.until("state", (e) => e.state === "offline");
  assert.deepEqual([off.code, off.reason, off.attempt], [1006, "timeout", 1]);
  await rec.until("state", (e) => e.state === "offline" && e.attempt === 2);
  assert.ok(sockets.length >= 2, `${sockets.length} connections`);
});

test("a refused attempt waits at least refusedDelay: a 503's Retry-After is not shown", async (t) => {
  // What a hub shutting down or overloaded answers: 503 and a Retry-After.
  const server = http.createServer((req, res) => {
    res.writeHead(503, {"Retry-After": "1", "Content-Type": "text/plain"});
    res.end("wshub: overloaded, try again later");
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => server.close());
  const c = new Client(`ws://127.0.0.1:${server.address().port}/ws`, {minDelay: 20, maxDelay: 200, refusedDelay: 300});
  t.after(() => c.close());
  const rec = new Recorder(c, "refused");
  const off = await rec.until("state", (e) => e.state === "offline");
  assert.equal(off.code, 1006);
  assert.ok(off.delay >= 300 && off.delay <= 600, `delay ${off.delay}`);
});
