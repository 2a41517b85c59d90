// Tokens (PROTOCOL.md §11) in wshub.js, against the token hub: signing in
// with the first frame, refreshing before the sign-in expires, 4001 and
// 4003, a token function that throws, and a server that takes no tokens.

import {test} from "node:test";
import assert from "node:assert/strict";
import {Client, refreshDelay} from "../wshub.js";
import {Recorder, connect, connectToken, control, pause, tokenBase, uniq} from "./helpers.mjs";

// tokens returns the tokens rec's signer gave, at or after from.
function tokens(rec, from = 0) {
  return rec.events("token", from).map((e) => e.token);
}

// states returns the states rec went through, at or after from.
function states(rec, from = 0) {
  return rec.events("state", from).map((e) => e.state);
}

test("refreshDelay is uniform in 50–90 % of the ttl", () => {
  const n = 20000;
  const ds = Array.from({length: n}, () => refreshDelay(1000));
  assert.ok(ds.every((d) => d >= 500 && d <= 900), `out of range: ${ds.find((d) => d < 500 || d > 900)}`);
  // Each fifth of the range holds a fifth of the draws: 4000 ± 63
  // (one standard deviation), within ±400.
  const bins = [0, 0, 0, 0, 0];
  for (const d of ds) bins[Math.min(4, Math.floor((d - 500) / 80))]++;
  for (const b of bins) assert.ok(Math.abs(b - n / 5) < 400, `bins ${bins}`);
});

test("sign in with the first frame", async (t) => {
  const room = uniq("lobby");
  const an = uniq("alice");
  const alice = connectToken(t, an);
  const bob = connectToken(t, uniq("bob"));
  // Made while connecting: written after the sign-in.
  const ack = await alice.c.join(room);
  assert.equal(ack.room, room);
  await bob.c.join(room);
  await bob.c.publish(room, {text: "hi"});
  assert.equal((await alice.text(room, "hi")).from, bob.name);
  assert.deepEqual(await control("GET", "/tokens", {user: an}), [{token: tokens(alice)[0], refresh: false}]);
  assert.deepEqual(states(alice), ["connecting", "online"]);
  assert.equal(alice.count("autherror"), 0);

  // A client without a token is refused its first frame, and stops.
  const c = new Client(new URL("/ws", tokenBase).href, {minDelay: 20, maxDelay: 200, refusedDelay: 0});
  t.after(() => c.close());
  const carol = new Recorder(c, "carol");
  const joined = carol.c.join(room);
  assert.deepEqual(await carol.until("signedout"), {code: 4003, reason: "auth required"});
  assert.equal(carol.c.state, "signedout");
  // Its join was the first frame, answered by the close.
  await assert.rejects(joined, {code: "disconnected"});
  await assert.rejects(carol.c.publish(room, {text: "hi"}), {code: "signedout"});
});

test("refreshes before the sign-in expires, and messages flow without a gap", async (t) => {
  const room = uniq("lobby");
  const an = uniq("alice");
  // The sign-in lasts 1 s: a refresh every 0.5 to 0.9 s.
  const alice = connectToken(t, an, {ttl: 1000});
  const bob = connectToken(t, uniq("bob"));
  await alice.c.join(room);
  await bob.c.join(room);
  // A refresh is set by the answer to the one before: a fifth token means
  // that the third refresh was accepted.
  let i = 0;
  for (; alice.count("token") < 5; i++) {
    assert.ok(i < 10000, "no fourth refresh in 10000 messages");
    await bob.c.publish(room, {text: "m" + i});
    await alice.text(room, "m" + i);
    await pause(10);
  }
  const sent = Array.from({length: i}, (_, k) => "m" + k);
  assert.deepEqual(alice.texts(room), sent);
  assert.deepEqual(alice.messages(room).map((m) => m.seq), sent.map((_, k) => k + 1));
  assert.deepEqual(states(alice), ["connecting", "online"]);
  assert.equal(alice.count("autherror"), 0);
  const given = tokens(alice);
  assert.equal(new Set(given).size, given.length, "a token given twice");
  const seen = await control("GET", "/tokens", {user: an});
  assert.deepEqual(seen.slice(0, 4), given.slice(0, 4).map((token, k) => ({token, refresh: k > 0})));
});

test("a refused sign-in signs out, and does not reconnect until reconnect()", async (t) => {
  const room = uniq("room");
  const alice = connectToken(t, uniq("alice"));
  alice.signer.bad = true;
  const joined = alice.c.join(room);
  assert.deepEqual(await alice.until("signedout"), {code: 4003, reason: "unauthorized"});
  assert.deepEqual(states(alice), ["connecting", "signedout"]);
  assert.deepEqual(alice.events("state")[1], {state: "signedout", code: 4003, reason: "unauthorized"});
  await assert.rejects(joined, {code: "signedout"});
  assert.deepEqual(alice.c.rooms, []);
  // Another client's whole sign-in later, alice has not tried again.
  const bob = connectToken(t, uniq("bob"));
  await bob.c.join(room);
  assert.equal(alice.count("token"), 1);
  assert.equal(alice.c.state, "signedout");

  // A new sign-in, and reconnect() starts over.
  alice.signer.bad = false;
  const from = alice.mark();
  alice.c.reconnect();
  await alice.c.join(room);
  assert.deepEqual(states(alice, from), ["connecting", "online"]);
  assert.equal(alice.count("token", from), 1);
});

test("a token function that throws: signedOut signs out, another error is tried again", async (t) => {
  const alice = connectToken(t, uniq("alice"));
  const gone = Object.assign(new Error("no session"), {signedOut: true});
  alice.signer.fail = gone;
  const out = await alice.until("signedout");
  assert.deepEqual([out.code, out.reason, out.error], [0, "no session", gone]);
  assert.deepEqual(states(alice), ["connecting", "signedout"]);

  // Any other error is an attempt that failed.
  const bob = connectToken(t, uniq("bob"));
  const down = new Error("token service down");
  bob.signer.fail = down;
  assert.equal((await bob.until("autherror")).error, down);
  const off = await bob.until("state", (e) => e.state === "offline");
  assert.deepEqual([off.code, off.reason], [0, "token: token service down"]);
  bob.signer.fail = null;
  await bob.until("state", (e) => e.state === "online");
  assert.equal(bob.c.state, "online");

  // At a refresh, signedOut signs out too, and closes the connection.
  const carol = connectToken(t, uniq("carol"), {ttl: 1000});
  await carol.until("state", (e) => e.state === "online");
  carol.signer.fail = gone;
  assert.deepEqual(await carol.until("signedout"), {code: 0, reason: "no session", error: gone});
  assert.equal(carol.c.state, "signedout");
});

test("a token function that never answers is an attempt that timed out", async (t) => {
  let calls = 0;
  const c = new Client(new URL("/ws", tokenBase).href, {
    timeout: 200, minDelay: 20, maxDelay: 200, refusedDelay: 0,
    token: () => { calls++; return new Promise(() => {}); },
  });
  t.after(() => c.close());
  const rec = new Recorder(c, "silent");
  const off = await rec.until("state", (e) => e.state === "offline");
  assert.deepEqual([off.code, off.reason, off.attempt], [1006, "timeout", 1]);
  await rec.until("state", (e) => e.state === "offline" && e.attempt === 2);
  assert.ok(calls >= 2, `${calls} calls`);
});

test("a refused refresh is an autherror; at the expiry, 4001, and a new token at once", async (t) => {
  const room = uniq("room");
  const an = uniq("alice");
  const alice = connectToken(t, an, {ttl: 1000});
  await alice.c.join(room);
  await control("POST", "/refuse", {user: an, on: 1});
  const err = (await alice.until("autherror")).error;
  assert.equal(err.code, "refused");
  assert.match(err.message, /^wshub: refresh refused/);
  assert.equal(err.room, undefined);
  assert.equal(alice.c.state, "online"); // the connection stays

  // 1 s, and the hub's 5 s of grace, later.
  const from = alice.mark();
  await control("POST", "/refuse", {user: an, on: 0});
  const off = await alice.until("state", (e) => e.state === "offline", from);
  assert.deepEqual([off.code, off.reason, off.delay], [4001, "token expired", 0]);
  assert.equal((await alice.until("rejoin", (e) => e.room === room, from)).recovered, true);
  const [token] = tokens(alice, from);
  assert.ok(token && !tokens(alice).slice(0, -1).includes(token), "no new token");
  const signIns = (await control("GET", "/tokens", {user: an})).filter((x) => !x.refresh);
  assert.deepEqual(signIns.map((x) => x.token), [tokens(alice)[0], token]);
  assert.deepEqual(states(alice, from), ["offline", "connecting", "online"]);
});

test("DisconnectUser with 4003 signs the user out", async (t) => {
  const room = uniq("room");
  const an = uniq("alice");
  const alice = connectToken(t, an);
  await alice.c.join(room);
  const from = alice.mark();
  await control("POST", "/disconnect", {user: an, code: 4003, reason: "banned"});
  assert.deepEqual(await alice.until("signedout", () => true, from), {code: 4003, reason: "banned"});
  assert.deepEqual(states(alice, from), ["signedout"]);
  await assert.rejects(alice.c.publish(room, {text: "hi"}), {code: "signedout"});
  // Its rooms are kept for reconnect(), as after a close.
  assert.deepEqual(alice.c.rooms, [room]);
});

test("a server that takes no tokens answers the first frame with an error, which is not fatal", async (t) => {
  const room = uniq("room");
  const alice = connect(t, uniq("alice"), {token: async () => "ok:alice:0"});
  await alice.c.join(room);
  await alice.c.publish(room, {text: "hi"});
  await alice.text(room, "hi");
  assert.deepEqual(states(alice), ["connecting", "online"]);
  assert.equal(alice.count("error"), 0);
  assert.equal(alice.count("autherror"), 0);
});
