// Helpers of the tests of wshub.js, run by node_test.go against two real
// hubs (see startHub there for what its rooms and application messages
// do, and startTokenHub for its tokens and the requests that drive it).

import {Client} from "../wshub.js";

export const base = process.env.WSHUB_URL;
if (!base) throw new Error("WSHUB_URL is not set: run these tests with go test ./wshubjs/");

// tokenBase is the HTTP base of the hub whose clients sign in with a token.
export const tokenBase = process.env.WSHUB_TOKEN_URL;
if (!tokenBase) throw new Error("WSHUB_TOKEN_URL is not set: run these tests with go test ./wshubjs/");

// patience bounds every wait: generous, since only a failure reaches it,
// and the machine may be busy.
export const patience = 60000;

let n = 0;

// uniq returns a name no other test uses: the test files run in parallel
// against one hub.
export function uniq(prefix) {
  return `${prefix}-${process.pid}-${++n}`;
}

const types = ["state", "message", "app", "presence", "presence_diff", "rejoin", "reset", "error", "signedout", "left", "autherror"];

// connect returns a recorder of a new client named name, which reconnects
// fast; the client is closed when the test ends.
export function connect(t, name, options = {}) {
  const c = new Client(`${base}?name=${encodeURIComponent(name)}`, {minDelay: 20, maxDelay: 200, refusedDelay: 0, ...options});
  t.after(() => c.close());
  return new Recorder(c, name);
}

// connectToken returns a recorder of a new client of the token hub, named
// user, which reconnects fast and signs in with tokens whose sign-in
// expires in ttl ms (0: never). Each token is recorded as a "token" event;
// rec.signer changes what comes next: bad: true gives a token the hub
// refuses, fail: an error throws it.
export function connectToken(t, user, {ttl = 0, ...options} = {}) {
  let rec;
  const signer = {bad: false, fail: null, n: 0};
  const token = async () => {
    if (signer.fail) throw signer.fail;
    const token = signer.bad ? "bad" : `ok:${user}:${ttl}:${++signer.n}`;
    rec.note("token", {token});
    return token;
  };
  const c = new Client(new URL("/ws", tokenBase).href, {minDelay: 20, maxDelay: 200, refusedDelay: 0, token, ...options});
  t.after(() => c.close());
  rec = new Recorder(c, user);
  rec.signer = signer;
  return rec;
}

// granter returns a grant function of the token hub's rooms, granting
// them for ttl ms (0: for good), whose tokens rec records as "grant"
// events; refuse: true gives tokens the hub refuses.
export function granter(rec, ttl) {
  const g = {refuse: false, n: 0};
  g.grant = async () => {
    const token = g.refuse ? "nogrant" : `grant:${ttl}:${++g.n}`;
    rec.note("grant", {token});
    return token;
  };
  return g;
}

// control asks the token hub to do something (POST), or what it saw (GET).
export async function control(method, path, params) {
  const url = new URL(path, tokenBase);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
  const res = await fetch(url, {method});
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
  return method === "GET" ? res.json() : undefined;
}

// pause waits ms: it paces a stream of messages, it waits for nothing.
export function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Recorder records every event of a client, so that a test can wait for
// one whether it came already or not.
export class Recorder {
  constructor(client, name) {
    this.c = client;
    this.name = name;
    this.log = [];
    this.#wake = new Set();
    for (const type of types) {
      client.on(type, (e) => this.note(type, e));
    }
  }

  #wake;

  // note records an event of the test's own, e.g. a token given.
  note(type, e) {
    this.log.push({type, e});
    for (const f of this.#wake) f();
  }

  // count returns how many events of type were recorded at or after from.
  count(type, from = 0) {
    return this.log.slice(from).filter((x) => x.type === type).length;
  }

  // events returns the events of type recorded at or after from.
  events(type, from = 0) {
    return this.log.slice(from).filter((x) => x.type === type).map((x) => x.e);
  }

  // mark returns where the log stands, for until's from.
  mark() {
    return this.log.length;
  }

  // until resolves with the first event of type, at or after from, that
  // pred accepts.
  until(type, pred = () => true, from = 0) {
    return new Promise((resolve, reject) => {
      const check = () => {
        const hit = this.log.slice(from).find((x) => x.type === type && pred(x.e));
        if (!hit) return;
        clearTimeout(timer);
        this.#wake.delete(check);
        resolve(hit.e);
      };
      const timer = setTimeout(() => {
        this.#wake.delete(check);
        reject(new Error(`${this.name}: no ${type} event as expected within ${patience} ms; the last events:\n` +
          this.log.slice(-30).map((x) => x.type + " " + show(x.e)).join("\n")));
      }, patience);
      this.#wake.add(check);
      check();
    });
  }

  // messages returns the messages of room delivered so far.
  messages(room) {
    return this.log.filter((x) => x.type === "message" && x.e.room === room).map((x) => x.e);
  }

  // texts returns the texts of the messages of room delivered so far.
  texts(room) {
    return this.messages(room).map((m) => m.data?.text);
  }

  // text waits for the message of room with text.
  text(room, text) {
    return this.until("message", (m) => m.room === room && m.data?.text === text);
  }
}

function show(e) {
  return JSON.stringify(e, (k, v) => (v instanceof Map ? [...v.keys()] : k === "frame" ? undefined : v));
}
