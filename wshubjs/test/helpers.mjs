// Helpers of the tests of wshub.js, run by node_test.go against a real hub
// (see startHub there for what its rooms and application messages do).

import {Client} from "../wshub.js";

export const base = process.env.WSHUB_URL;
if (!base) throw new Error("WSHUB_URL is not set: run these tests with go test ./wshubjs/");

// patience bounds every wait: generous, since only a failure reaches it,
// and the machine may be busy.
export const patience = 60000;

let n = 0;

// uniq returns a name no other test uses: the test files run in parallel
// against one hub.
export function uniq(prefix) {
  return `${prefix}-${process.pid}-${++n}`;
}

const types = ["state", "message", "app", "presence", "presence_diff", "rejoin", "reset", "error"];

// connect returns a recorder of a new client named name, which reconnects
// fast; the client is closed when the test ends.
export function connect(t, name, options = {}) {
  const c = new Client(`${base}?name=${encodeURIComponent(name)}`, {minDelay: 20, maxDelay: 200, refusedDelay: 0, ...options});
  t.after(() => c.close());
  return new Recorder(c, name);
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
      client.on(type, (e) => {
        this.log.push({type, e});
        for (const f of this.#wake) f();
      });
    }
  }

  #wake;

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
