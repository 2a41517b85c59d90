// Requests and events of wshub.js against a real hub: joins, publishes and
// their acks, errors, timeouts, history on join, presence, application
// messages, and what requests do while the client is not online.

import {test} from "node:test";
import assert from "node:assert/strict";
import {WshubError} from "../wshub.js";
import {connect, uniq} from "./helpers.mjs";

test("join, publish, acks and batching", async (t) => {
  const room = uniq("lobby");
  const an = uniq("alice");
  const alice = connect(t, an);
  const bob = connect(t, uniq("bob"));
  const carol = connect(t, uniq("carol"), {protocol: "wshub.json"});
  // Joins made while connecting wait for the connection (offline: "wait").
  const ack = await alice.c.join(room);
  assert.equal(ack.room, room);
  assert.equal(typeof ack.epoch, "string");
  assert.equal(ack.seq, 0);
  await bob.c.join(room);
  await carol.c.join(room);
  // Listeners added right after the constructor hear the first attempt.
  assert.deepEqual(alice.log[0], {type: "state", e: {state: "connecting", attempt: 0}});
  assert.equal((await alice.until("state", (e) => e.state === "online")).protocol, "wshub.json-batch");
  assert.equal((await carol.until("state", (e) => e.state === "online")).protocol, "wshub.json");
  assert.deepEqual(alice.c.rooms, [room]);

  assert.equal(await alice.c.publish(room, {text: "hi"}), undefined);
  // The sender gets its own message before the ack.
  assert.deepEqual(alice.texts(room), ["hi"]);
  for (const r of [bob, carol]) {
    const m = await r.text(room, "hi");
    assert.equal(m.from, an);
    assert.equal(m.seq, 1);
    assert.equal(m.replay, undefined);
    assert.equal(m.frame.type, "message");
  }

  // Many at once: with wshub.json-batch they come several to a frame.
  const texts = Array.from({length: 60}, (_, i) => "m" + i);
  await Promise.all(texts.map((text) => bob.c.publish(room, {text})));
  for (const r of [alice, bob, carol]) {
    await r.text(room, "m59");
    assert.deepEqual(r.texts(room), ["hi", ...texts], r.name);
    assert.deepEqual(r.messages(room).map((m) => m.seq), [1, ...texts.map((_, i) => i + 2)], r.name);
  }

  // Joining a room the client is in resolves at once.
  assert.deepEqual(await alice.c.join(room), {room, epoch: ack.epoch, seq: 61});

  // Application messages, both ways.
  await alice.c.send({type: "echo", data: {x: 1}});
  assert.deepEqual((await alice.until("app", (m) => m.type === "echo")).data, {x: 1});
});

test("history on join", async (t) => {
  const room = uniq("history");
  const alice = connect(t, uniq("alice"));
  await alice.c.join(room);
  for (const text of ["one", "two", "three", "four"]) await alice.c.publish(room, {text});
  const bob = connect(t, uniq("bob"));
  const ack = await bob.c.join(room, {history: 3});
  assert.equal(ack.seq, 4);
  // The replay came before the ack, marked as history.
  assert.deepEqual(bob.texts(room), ["two", "three", "four"]);
  assert.deepEqual(bob.messages(room).map((m) => m.replay), ["history", "history", "history"]);
  await alice.c.publish(room, {text: "five"});
  assert.equal((await bob.text(room, "five")).replay, undefined);
  assert.deepEqual(bob.texts(room), ["two", "three", "four", "five"]);
});

test("errors reject", async (t) => {
  const alice = connect(t, uniq("alice"));
  const denied = uniq("denied");
  await assert.rejects(alice.c.join(denied), (err) => {
    assert.ok(err instanceof WshubError);
    assert.equal(err.code, "refused");
    assert.equal(err.message, "wshub: join denied: this room is closed");
    assert.equal(err.frame.room, denied);
    return true;
  });
  assert.deepEqual(alice.c.rooms, []);
  await assert.rejects(alice.c.publish(uniq("nowhere"), {text: "hi"}), {code: "refused", message: "wshub: not a member of the room"});
  const plain = uniq("plain");
  assert.deepEqual(await alice.c.join(plain), {room: plain, epoch: undefined, seq: undefined, recovered: undefined});
  await assert.rejects(alice.c.presence(plain), {code: "refused"});
  // An error that answers no request is an event.
  await alice.c.send({type: "bogus"});
  assert.match((await alice.until("error")).message, /unknown type "bogus"/);
  // The client goes on.
  await alice.c.publish(plain, {text: "still here"});
  assert.deepEqual(alice.texts(plain), ["still here"]);
});

test("timeout", async (t) => {
  const room = uniq("slow");
  const key = uniq("stall");
  const alice = connect(t, uniq("alice"), {timeout: 300});
  const bob = connect(t, uniq("bob"));
  await alice.c.join(room);
  // The hub reads nothing more from alice until bob unstalls her: her
  // publish cannot be answered in time.
  await alice.c.send({type: "stall", data: key});
  await assert.rejects(alice.c.publish(room, {text: "late"}), {code: "timeout"});
  await bob.c.send({type: "unstall", data: key});
  // It took effect after all.
  await alice.text(room, "late");
});

test("presence: state, diffs and the member map", async (t) => {
  const room = uniq("presence");
  const an = uniq("alice"), bn = uniq("bob");
  const alice = connect(t, an);
  await alice.c.join(room);
  // The state came before the ack.
  const state = await alice.until("presence", (e) => e.room === room);
  assert.deepEqual([...state.members.keys()], [an]);
  assert.deepEqual(state.members.get(an), {id: an, info: {name: an}, conns: 1});
  assert.equal(state.total, 1);
  assert.equal(alice.c.members(room), state.members);

  const bob = connect(t, bn);
  await bob.c.join(room);
  assert.deepEqual([...bob.c.members(room).keys()].sort(), [an, bn].sort());
  const joined = await alice.until("presence_diff", (e) => e.room === room && e.joins.length > 0);
  // Only what changed the map: alice's own join, repeated by a diff, is not news.
  assert.deepEqual(joined.joins, [{id: bn, info: {name: bn}, conns: 1}]);
  assert.deepEqual(joined.leaves, []);
  assert.deepEqual([...alice.c.members(room).keys()].sort(), [an, bn].sort());

  await bob.c.leave(room);
  assert.equal(bob.c.members(room), undefined);
  assert.deepEqual(bob.c.rooms, []);
  const left = await alice.until("presence_diff", (e) => e.room === room && e.leaves.length > 0);
  assert.deepEqual(left.leaves.map((p) => p.id), [bn]);
  assert.deepEqual([...alice.c.members(room).keys()], [an]);

  // Asking again brings a new state, which replaces the map.
  const from = alice.mark();
  const members = await alice.c.presence(room);
  assert.equal(members, (await alice.until("presence", (e) => e.room === room, from)).members);
  assert.notEqual(members, state.members);
  assert.deepEqual([...members.keys()], [an]);
});

test("offline: fail, and close", async (t) => {
  const room = uniq("room");
  const alice = connect(t, uniq("alice"), {offline: "fail"});
  // Still connecting: fail fast.
  await assert.rejects(alice.c.join(room), {code: "offline"});
  assert.deepEqual(alice.c.rooms, []);
  await alice.until("state", (e) => e.state === "online");
  await alice.c.join(room);
  alice.c.close();
  assert.equal(alice.c.state, "closed");
  assert.deepEqual(await alice.until("state", (e) => e.state === "closed"), {state: "closed", code: 1000, reason: ""});
  await assert.rejects(alice.c.publish(room, {text: "hi"}), {code: "closed"});
  await assert.rejects(alice.c.send({type: "echo"}), {code: "closed"});
});

test("leaving a room whose join waits cancels the join", async (t) => {
  const room = uniq("room");
  const alice = connect(t, uniq("alice"));
  const join = alice.c.join(room); // waits for the connection
  await alice.c.leave(room);
  await assert.rejects(join, {code: "canceled"});
  assert.deepEqual(alice.c.rooms, []);
});
