// Rooms and tokens (PROTOCOL.md §11) in wshub.js, against the token hub:
// joins with a grant, their renewals and their end, and the server's
// "leave" frames, after which a room is not joined again.

import {test} from "node:test";
import assert from "node:assert/strict";
import {connectToken, control, granter, pause, uniq} from "./helpers.mjs";

// grants returns the grant tokens rec's granters gave, at or after from.
function grants(rec, from = 0) {
  return rec.events("grant", from).map((e) => e.token);
}

test("a join with a grant: renewed before it expires, fresh on a rejoin, then its end", async (t) => {
  const vip = uniq("vip");
  const an = uniq("alice");
  const alice = connectToken(t, an);
  const bob = connectToken(t, uniq("bob"));
  // The grant lasts 1 s: a renewal every 0.5 to 0.9 s.
  const g = granter(alice, 1000);
  const ack = await alice.c.join(vip, {grant: g.grant});
  assert.ok(ack.ttl > 0 && ack.ttl <= 1000, `ttl ${ack.ttl}`);
  // A grant for good: no ttl.
  assert.equal((await bob.c.join(vip, {grant: granter(bob, 0).grant})).ttl, undefined);

  // A renewal is set by the answer to the one before: a fourth grant
  // means that the second renewal was accepted.
  let i = 0;
  for (; alice.count("grant") < 4; i++) {
    assert.ok(i < 10000, "no third renewal in 10000 messages");
    await bob.c.publish(vip, {text: "m" + i});
    await alice.text(vip, "m" + i);
    await pause(10);
  }
  assert.deepEqual(alice.texts(vip), Array.from({length: i}, (_, k) => "m" + k));
  assert.equal(alice.count("left"), 0);
  assert.equal(alice.count("autherror"), 0);
  assert.deepEqual((await control("GET", "/grants", {user: an})).slice(0, 3), grants(alice).slice(0, 3));

  // A rejoin gets a fresh grant.
  let from = alice.mark();
  alice.c.reconnect();
  assert.equal((await alice.until("rejoin", (e) => e.room === vip, from)).recovered, true);
  // Grants are numbered: the first after the reconnect is a new one.
  const [fresh] = grants(alice, from);
  assert.ok(fresh, "no grant for the rejoin");
  assert.ok((await control("GET", "/grants", {user: an})).includes(fresh));

  // Renewals refused: autherror, then the grant ends and the room is left.
  g.refuse = true;
  from = alice.mark();
  const failed = await alice.until("autherror", () => true, from);
  assert.equal(failed.room, vip);
  assert.equal(failed.error.code, "refused");
  assert.deepEqual(await alice.until("left", () => true, from), {
    room: vip, error: "wshub: grant expired", frame: {type: "leave", room: vip, error: "wshub: grant expired"},
  });
  assert.deepEqual(alice.c.rooms, []);
  await assert.rejects(alice.c.publish(vip, {text: "still in?"}), {code: "refused", message: "wshub: not a member of the room"});
});

test("a join whose grant is refused, or throws, rejects", async (t) => {
  const alice = connectToken(t, uniq("alice"));
  const g = granter(alice, 1000);
  g.refuse = true;
  const vip = uniq("vip");
  await assert.rejects(alice.c.join(vip, {grant: g.grant}), {code: "refused", message: /^wshub: join denied/});
  assert.deepEqual(alice.c.rooms, []);
  const oops = new Error("no grant service");
  await assert.rejects(alice.c.join(vip, {grant: async () => { throw oops; }}), oops);
  assert.deepEqual(alice.c.rooms, []);
  // Left while its grant is on its way: canceled, and not sent.
  const joined = alice.c.join(vip, {grant: g.grant});
  await alice.c.leave(vip);
  await assert.rejects(joined, {code: "canceled"});
  assert.deepEqual(alice.c.rooms, []);
});

test("a room the server takes the client out of is not joined again", async (t) => {
  const kept = uniq("kept"), gone = uniq("gone");
  const an = uniq("alice");
  const alice = connectToken(t, an, {ttl: 1000});
  await alice.c.join(kept);
  await alice.c.join(gone);
  // The next refresh asks AuthorizeJoin again, which now refuses gone.
  await control("POST", "/deny", {user: an, room: gone});
  const left = await alice.until("left");
  assert.equal(left.room, gone);
  assert.equal(left.error, "wshub: join denied: this room is closed");
  assert.deepEqual(alice.c.rooms, [kept]);
  assert.equal(alice.c.state, "online");

  const from = alice.mark();
  alice.c.reconnect();
  assert.equal((await alice.until("rejoin", (e) => e.room === kept, from)).recovered, true);
  // Answers come in order: had gone been joined again, its answer would
  // have come before this one.
  await alice.c.publish(kept, {text: "hi"});
  assert.deepEqual(alice.events("rejoin", from).map((e) => e.room), [kept]);
  await assert.rejects(alice.c.publish(gone, {text: "hi"}), {code: "refused"});
});
