// wshub.js: a client of the wshub protocol, version 1 (docs/PROTOCOL.md),
// for browsers and Node.js (docs/CLIENTS.md gives the versions). An ES
// module without dependencies or build step; types in wshub.d.ts.
// docs/CLIENTS.md is its reference; what follows is a summary.
//
//   import {Client} from "/wshub.js";
//   const hub = new Client("/ws?name=alice");
//   hub.on("message", (m) => console.log(m.room, m.from, m.data));
//   await hub.join("lobby", {history: 50});
//   await hub.publish("lobby", {text: "hi"});
//
// Connecting: the client offers the subprotocol wshub.json-batch (option
// protocol: "wshub.json" for one message per frame) and reads either.
//
// Reconnecting: after a close with 1001 (server going away), 1006 (the
// connection was lost, or an attempt to connect failed or took longer
// than the timeout, an HTTP 503 included) or 1012 (service restart), the
// client waits and connects again: about minDelay (500 ms) at first,
// doubling after each failed
// attempt up to maxDelay (15 s), each wait varied by ±25 %, starting over
// after a success. An attempt that failed before the connection opened
// waits at least refusedDelay (1 s) to twice that: it may have been a hub's
// 503 (shutting down, full, or overloaded by a reconnect storm), whose
// Retry-After (1 or 2 s) a browser does not show to scripts. Any other
// close code (1000, 1007, 1008, 1009, 1011, …) is about this client: it
// stops ("closed" state), and reconnect() starts again. In a browser,
// going back online retries at once.
//
// Rooms survive reconnects: every room joined is joined again on each new
// connection, with a recovery (the epoch and last seq seen, with the first
// join's history as a fallback). A room's messages are held from its join
// until the join's ack, messages whose seq was delivered already are
// dropped, and a "rejoin" event says whether the recovery was complete.
//
// Requests (join, leave, publish, presence) return promises, resolved by
// the server's ack and rejected with a WshubError: code "refused" (an
// error frame: message is its text), "timeout" (no answer within the
// timeout option, 30 s; the request may still take effect), "disconnected"
// (the connection was lost before the answer: the request may or may not
// have taken effect), "offline" (with offline: "fail", sent while not
// online), "closed" (the client is closed) or "canceled" (a join left
// before it was sent).
//
// Sending while not online: by default (offline: "wait") requests and
// send() wait for the next connection, and are written after the rooms are
// joined again; the timeout counts from the moment they are written. With
// offline: "fail" they are rejected at once with code "offline". Either
// way they are rejected with "closed" once the client stops.

const retryCodes = new Set([1001, 1006, 1012]);
const requestTypes = new Set(["join", "leave", "publish", "presence"]);

/** An error of a request: see code. */
export class WshubError extends Error {
  constructor(code, message, frame) {
    super(message);
    this.name = "WshubError";
    this.code = code;
    this.frame = frame;
  }
}

export class Client {
  #url;
  #opts;
  #ws = null;
  #state = "connecting";
  #attempt = 0; // failed attempts since the last connection
  #timer = 0; // the next attempt to connect
  #connecting = 0; // the end of the current attempt
  #lastID = 0;
  #pending = new Map(); // request id → request, written on the current connection
  #queue = []; // requests and frames waiting for a connection
  #rooms = new Map(); // room name → room state
  #members = new Map(); // room name → Map of id → member
  #listeners = new Map(); // event type → Set of functions
  #online = () => {
    if (this.#state === "offline") this.#open();
  };

  /**
   * Connects to url (ws:, wss:, http:, https: or, in a page, relative to
   * it; or a function returning one, called at each connection).
   */
  constructor(url, options = {}) {
    this.#url = url;
    this.#opts = {
      protocol: "wshub.json-batch",
      timeout: 30000,
      offline: "wait",
      minDelay: 500,
      maxDelay: 15000,
      refusedDelay: 1000,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    if (typeof this.#opts.WebSocket !== "function") {
      throw new TypeError("wshub: no WebSocket: pass options.WebSocket");
    }
    globalThis.addEventListener?.("online", this.#online);
    // After the caller's code, which may add listeners for the first events.
    queueMicrotask(() => {
      if (this.#state === "connecting" && !this.#ws) this.#open();
    });
  }

  /** "connecting", "online", "offline" (waiting to retry) or "closed". */
  get state() { return this.#state; }

  /** The rooms the client is in, or rejoins on the next connection. */
  get rooms() { return [...this.#rooms.keys()]; }

  /** The members of a presence room the client is in (id → member), or undefined. */
  members(room) { return this.#members.get(room); }

  /** Adds fn as a listener of events of type; returns a function that removes it. */
  on(type, fn) {
    if (!this.#listeners.has(type)) this.#listeners.set(type, new Set());
    this.#listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) { this.#listeners.get(type)?.delete(fn); }

  /**
   * Joins room; history asks for its last messages (then the fallback of
   * every recovery). Resolves with the ack: {room, epoch, seq} in a room
   * with history. Joining a room the client is in resolves at once.
   */
  join(room, {history = 0} = {}) {
    const r = this.#rooms.get(room);
    if (r) return r.first ?? Promise.resolve({room, epoch: r.epoch || undefined, seq: r.epoch ? r.seq : undefined});
    const state = {name: room, history, epoch: "", seq: 0, joined: false, held: null, first: null, req: null};
    this.#rooms.set(room, state);
    state.first = this.#request({type: "join", room}, {room: state}).finally(() => { state.first = null; });
    return state.first;
  }

  /** Leaves room: it is not joined again. */
  leave(room) {
    const r = this.#rooms.get(room);
    this.#rooms.delete(room);
    this.#members.delete(room);
    if (r && !r.joined && !r.req) return Promise.resolve(); // not in it on this connection
    if (r?.req && !r.req.id) { // its join was not written yet
      this.#queue = this.#queue.filter((q) => q !== r.req);
      this.#fail(r.req, "canceled", "wshub: left before the join was sent");
      return Promise.resolve();
    }
    return this.#request({type: "leave", room});
  }

  /** Publishes data to room, which the client must be in. */
  publish(room, data) {
    return this.#request({type: "publish", room, data});
  }

  /** Asks for room's presence state again; resolves with the member map. */
  presence(room) {
    return this.#request({type: "presence", room}).then(() => this.#members.get(room));
  }

  /** Sends an application message (any type but the protocol's); resolves once written. */
  send(msg) {
    return new Promise((resolve, reject) => {
      const item = {frame: msg, resolve, reject};
      if (!this.#refuse(item)) this.#write(item);
    });
  }

  /** Closes the connection with code (1000) and stops reconnecting. */
  close(code = 1000, reason = "") {
    const ws = this.#ws;
    this.#ws = null;
    this.#stop(code, reason);
    ws?.close(code, reason);
  }

  /** Connects again now, with a new connection (and a new call of url). */
  reconnect() {
    const old = this.#ws;
    this.#ws = null;
    if (old) {
      old.close(1000, "reconnecting");
      this.#lost();
    }
    globalThis.addEventListener?.("online", this.#online);
    this.#attempt = 0;
    this.#open();
  }

  #emit(type, event) {
    for (const fn of this.#listeners.get(type) ?? []) {
      try {
        fn(event);
      } catch (err) {
        setTimeout(() => { throw err; }); // reported, without breaking the client
      }
    }
  }

  #setState(state, detail = {}) {
    this.#state = state;
    this.#emit("state", {state, ...detail});
  }

  #open() {
    clearTimeout(this.#timer);
    let url = typeof this.#url === "function" ? this.#url() : this.#url;
    let ws;
    this.#setState("connecting", {attempt: this.#attempt});
    try {
      url = new URL(url, globalThis.location?.href);
      url.protocol = url.protocol.replace(/^http/, "ws");
      ws = new this.#opts.WebSocket(url.href, this.#opts.protocol);
    } catch (err) {
      this.#stop(0, String(err.message ?? err));
      return;
    }
    this.#ws = ws;
    // An attempt that takes longer than the timeout failed: a server that
    // accepts but never answers is tried again.
    clearTimeout(this.#connecting);
    this.#connecting = this.#opts.timeout > 0 && setTimeout(() => {
      if (this.#ws !== ws) return;
      ws.onclose({code: 1006, reason: "timeout"});
      ws.close();
    }, this.#opts.timeout);
    let opened = false;
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      opened = true;
      clearTimeout(this.#connecting);
      this.#attempt = 0;
      this.#setState("online", {protocol: ws.protocol});
      for (const r of this.#rooms.values()) {
        if (!r.first) this.#rejoin(r);
      }
      const queue = this.#queue;
      this.#queue = [];
      for (const item of queue) this.#write(item);
    };
    ws.onmessage = (e) => {
      if (this.#ws !== ws || typeof e.data !== "string") return;
      let frames;
      try {
        frames = JSON.parse(e.data);
      } catch {
        return;
      }
      for (const m of Array.isArray(frames) ? frames : [frames]) {
        if (m && typeof m === "object") this.#handle(m);
      }
    };
    // A failed attempt: browsers close with 1006 after the error, but
    // Node's WebSocket (undici, in Node 20) may stay "connecting" for ever.
    ws.onerror = () => {
      if (ws.readyState !== 1) ws.onclose({code: 1006, reason: ""});
    };
    ws.onclose = (e) => {
      if (this.#ws !== ws) return;
      clearTimeout(this.#connecting);
      this.#ws = null;
      this.#lost();
      if (!retryCodes.has(e.code)) {
        this.#stop(e.code, e.reason);
        return;
      }
      let delay = Math.min(this.#opts.minDelay * 2 ** this.#attempt, this.#opts.maxDelay) * (0.75 + Math.random() * 0.5);
      if (!opened) delay = Math.max(delay, this.#opts.refusedDelay * (1 + Math.random()));
      this.#attempt++;
      this.#timer = setTimeout(() => this.#open(), delay);
      this.#setState("offline", {code: e.code, reason: e.reason, delay, attempt: this.#attempt});
    };
  }

  // lost forgets what belonged to the connection that ended.
  #lost() {
    for (const r of this.#rooms.values()) {
      r.joined = false;
      r.held = null;
    }
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const req of pending) this.#fail(req, "disconnected", "wshub: connection lost before the answer");
  }

  // fail rejects a request or a frame waiting to be written.
  #fail(item, code, message, frame) {
    clearTimeout(item.timer);
    this.#settleJoin(item, null);
    item.reject(new WshubError(code, message, frame));
  }

  // stop ends the client: no more reconnecting, and what waits is rejected.
  #stop(code, reason) {
    clearTimeout(this.#timer);
    clearTimeout(this.#connecting);
    globalThis.removeEventListener?.("online", this.#online);
    const waiting = [...this.#queue, ...this.#pending.values()];
    this.#queue = [];
    this.#pending.clear();
    for (const r of this.#rooms.values()) {
      r.joined = false;
      r.held = null;
    }
    for (const item of waiting) this.#fail(item, "closed", "wshub: client closed");
    if (this.#state !== "closed") this.#setState("closed", {code, reason});
  }

  // refuse rejects item if it cannot be written now nor wait, or queues it
  // if it must wait; it reports whether it did either.
  #refuse(item) {
    if (this.#state === "online") return false;
    if (this.#state === "closed") {
      this.#fail(item, "closed", "wshub: client closed");
    } else if (this.#opts.offline === "fail") {
      this.#fail(item, "offline", "wshub: not connected");
    } else {
      this.#queue.push(item);
    }
    return true;
  }

  #request(frame, extra = {}) {
    return new Promise((resolve, reject) => {
      const req = {frame, resolve, reject, ...extra};
      if (req.room) req.room.req = req;
      if (!this.#refuse(req)) this.#write(req);
    });
  }

  // rejoin joins r again on a new connection, with a recovery; the result
  // is a "rejoin" event.
  #rejoin(r) {
    const req = {frame: {type: "join", room: r.name}, room: r, rejoin: true, resolve() {}};
    req.reject = (err) => {
      if (err.code === "refused" && this.#rooms.get(r.name) === r) {
        this.#rooms.delete(r.name);
        this.#members.delete(r.name);
        this.#emit("rejoin", {room: r.name, recovered: false, error: err});
      }
    };
    r.req = req;
    this.#write(req);
  }

  // write writes a request or frame on the current connection.
  #write(item) {
    const {frame, room: r} = item;
    if (frame.type === "join" && r) {
      if (r.history) frame.history = r.history;
      if (r.epoch) {
        frame.epoch = r.epoch;
        frame.since = r.seq;
      }
      r.held = [];
    }
    if (requestTypes.has(frame.type)) {
      item.id = frame.id = String(++this.#lastID);
      this.#pending.set(item.id, item);
      if (this.#opts.timeout > 0 && !item.rejoin) {
        item.timer = setTimeout(() => {
          if (this.#pending.get(item.id) !== item) return;
          this.#pending.delete(item.id);
          this.#fail(item, "timeout", "wshub: no answer within " + this.#opts.timeout + " ms");
        }, this.#opts.timeout);
      }
    }
    try {
      this.#ws.send(JSON.stringify(frame));
    } catch (err) {
      this.#pending.delete(item.id);
      this.#fail(item, "disconnected", String(err.message ?? err));
      return;
    }
    if (!item.id) item.resolve();
  }

  #handle(m) {
    switch (m.type) {
    case "message": {
      const r = this.#rooms.get(m.room);
      if (r?.held) r.held.push(m);
      else this.#deliver(r, m, undefined);
      return;
    }
    case "ack":
    case "error": {
      const req = this.#pending.get(m.id);
      if (!req) {
        if (m.type === "error") this.#emit("error", new WshubError("refused", m.error, m));
        return;
      }
      this.#pending.delete(m.id);
      clearTimeout(req.timer);
      if (m.type === "error") {
        this.#fail(req, "refused", m.error || "wshub: refused", m);
        return;
      }
      if (req.frame.type === "join" && m.epoch) m.seq ??= 0; // omitted when 0
      this.#settleJoin(req, m);
      req.resolve(req.frame.type === "join" ? {room: m.room ?? req.frame.room, epoch: m.epoch, seq: m.seq, recovered: m.recovered} : undefined);
      return;
    }
    case "presence": {
      const list = m.data?.members ?? [];
      const members = new Map(list.map((p) => [p.id, p]));
      this.#members.set(m.room, members);
      this.#emit("presence", {room: m.room, members, total: m.data?.total ?? list.length});
      return;
    }
    case "presence_diff": {
      const members = this.#members.get(m.room);
      if (!members) return; // the join's state comes first
      const joins = [], leaves = [];
      for (const p of m.data?.joins ?? []) {
        if (!members.has(p.id)) joins.push(p);
        members.set(p.id, p);
      }
      for (const p of m.data?.leaves ?? []) {
        if (members.delete(p.id)) leaves.push(p);
      }
      this.#emit("presence_diff", {room: m.room, joins, leaves, members});
      return;
    }
    default:
      this.#emit("app", m);
    }
  }

  // settleJoin ends the join req: with its ack, the room is joined and its
  // held messages are delivered; without, it is forgotten unless it is
  // joined again on the next connection.
  #settleJoin(req, ack) {
    const r = req.room;
    if (req.frame.type !== "join" || !r || r.req !== req) return;
    r.req = null;
    const held = r.held ?? [];
    r.held = null;
    if (!ack) {
      if (!req.rejoin && this.#rooms.get(r.name) === r) this.#rooms.delete(r.name);
      return;
    }
    if (this.#rooms.get(r.name) !== r) return; // left meanwhile
    const recovery = Boolean(req.frame.epoch);
    const epoch = ack.epoch ?? "";
    if (epoch !== r.epoch) r.seq = 0; // another history, whose seqs start over
    r.epoch = epoch;
    r.joined = true;
    if (req.rejoin) {
      this.#emit("rejoin", {room: r.name, recovered: recovery && ack.recovered === true, epoch: ack.epoch, seq: ack.seq});
    }
    const replay = recovery && ack.recovered ? "recovery" : "history";
    for (const m of held) {
      this.#deliver(r, m, typeof m.seq === "number" && m.seq <= ack.seq ? replay : undefined);
    }
    // Nothing up to the ack's seq is to come: the next recovery starts after it.
    if (typeof ack.seq === "number" && ack.seq > r.seq) r.seq = ack.seq;
  }

  // deliver emits m, a message of room r (undefined for a room the client
  // did not join itself), once.
  #deliver(r, m, replay) {
    if (r && typeof m.seq === "number") {
      if (m.epoch && m.epoch !== r.epoch) { // the server's history started over
        r.epoch = m.epoch;
        r.seq = m.seq - 1;
        this.#emit("reset", {room: r.name, epoch: m.epoch});
      }
      if (m.seq <= r.seq) return;
      r.seq = m.seq;
    }
    this.#emit("message", {room: m.room, from: m.from, data: m.data, seq: m.seq, replay, frame: m});
  }
}
