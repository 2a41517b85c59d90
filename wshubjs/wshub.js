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
// Signing in (PROTOCOL.md §11): with option token, an async function
// returning a token, the client calls it before every attempt to connect
// and sends the token as the connection's first frame ("auth"); it rejoins
// its rooms and sends what waits only after the server's answer. An error
// answer is not fatal (a server that takes no tokens answers so). When the
// server says the sign-in expires (an "auth" frame with a ttl), the client
// calls token again at a random point in 50–90 % of the ttl, so that
// clients that connected together do not refresh together, and sends it
// in a "refresh"; a refused refresh, or a token that throws, is an
// "autherror" event and nothing more: the server closes the connection
// with 4001 when the sign-in ends, and the client comes back with a new
// token. A token that throws an error whose signedOut property is true
// signs the client out (below); any other error is a failed attempt, tried
// again with backoff.
//
// Reconnecting: after a close with 1001 (server going away), 1006 (the
// connection was lost, or an attempt to connect failed or took longer
// than the timeout, an HTTP 503 included), 1012 (service restart) or an
// application's code 4000–4999 other than 4003, the client waits and
// connects again: about minDelay (500 ms) at first, doubling after each
// failed attempt up to maxDelay (15 s), each wait varied by ±25 %, starting
// over after a success. 4001 (the sign-in expired) is tried again at once
// the first time. An attempt that failed before the connection opened
// waits at least refusedDelay (1 s) to twice that: it may have been a hub's
// 503 (shutting down, full, or overloaded by a reconnect storm), whose
// Retry-After (1 or 2 s) a browser does not show to scripts. Any other
// close code (1000, 1007, 1008, 1009, 1011, …) is about this client: it
// stops ("closed" state), and reconnect() starts again. 4003 (refused
// token, ban, sign-out) signs it out: it stops in the "signedout" state
// with a "signedout" event, as a new token of the same sign-in would not
// help; reconnect() starts again, after a new sign-in. In a browser, going
// back online retries at once.
//
// Rooms survive reconnects: every room joined is joined again on each new
// connection, with a recovery (the epoch and last seq seen, with the first
// join's history as a fallback). A room's messages are held from its join
// until the join's ack, messages whose seq was delivered already are
// dropped, and a "rejoin" event says whether the recovery was complete.
// A room the server takes the client out of (a "leave" frame: a grant
// ended, a refresh that no longer allows it) is a "left" event, and is not
// joined again. A join with a grant, an async function returning a token
// of the room, sends the token, calls grant again for each rejoin, and,
// when the ack says the grant expires, renews it at 50–90 % of its ttl.
//
// Requests (join, leave, publish, presence) return promises, resolved by
// the server's ack and rejected with a WshubError: code "refused" (an
// error frame: message is its text), "timeout" (no answer within the
// timeout option, 30 s; the request may still take effect), "disconnected"
// (the connection was lost before the answer: the request may or may not
// have taken effect), "offline" (with offline: "fail", sent while not
// online), "closed" (the client is closed), "signedout" (the client is
// signed out) or "canceled" (a join left before it was sent). A join whose
// grant throws rejects with what it threw.
//
// Sending while not online: by default (offline: "wait") requests and
// send() wait for the next connection, and are written after the rooms are
// joined again; the timeout counts from the moment they are written. With
// offline: "fail" they are rejected at once with code "offline". Either
// way they are rejected with "closed" or "signedout" once the client stops.

const requestTypes = new Set(["join", "leave", "publish", "presence"]);

// retries reports whether a close with code is tried again: the codes of a
// lost connection or a server going away, and the application's 4000–4999
// (PROTOCOL.md §11: an unknown one counts as 1006), but for 4003.
function retries(code) {
  return code === 1001 || code === 1006 || code === 1012 || (code >= 4000 && code <= 4999 && code !== 4003);
}

/**
 * refreshDelay returns how long to wait before renewing something that
 * expires in ttl ms: a uniformly random point in [0.5, 0.9]·ttl, so that
 * 1,000 clients that connected together refresh over 40 % of the ttl
 * instead of in one burst, each with at least 10 % of it left to succeed.
 */
export function refreshDelay(ttl) {
  return ttl * (0.5 + 0.4 * Math.random());
}

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
  #gen = 0; // the current attempt to connect: async steps of an older one give up
  #attempt = 0; // failed attempts since the last connection
  #timer = 0; // the next attempt to connect
  #connecting = 0; // the end of the current attempt
  #refreshTimer = 0; // the next refresh of the sign-in
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
      token: null,
      WebSocket: globalThis.WebSocket,
      ...options,
    };
    if (typeof this.#opts.WebSocket !== "function") {
      throw new TypeError("wshub: no WebSocket: pass options.WebSocket");
    }
    globalThis.addEventListener?.("online", this.#online);
    // After the caller's code, which may add listeners for the first events.
    queueMicrotask(() => {
      if (this.#state === "connecting" && this.#gen === 0) this.#open();
    });
  }

  /** "connecting", "online", "offline" (waiting to retry), "closed" or "signedout". */
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
   * every recovery); grant, an async function returning a token of the
   * room, is called for this join, each rejoin and each renewal. Resolves
   * with the ack: {room, epoch, seq} in a room with history, ttl when the
   * grant expires. Joining a room the client is in resolves at once.
   */
  join(room, {history = 0, grant = null} = {}) {
    const r = this.#rooms.get(room);
    if (r) return r.first ?? Promise.resolve({room, epoch: r.epoch || undefined, seq: r.epoch ? r.seq : undefined});
    const state = {name: room, history, grant, epoch: "", seq: 0, joined: false, held: null, first: null, req: null, renew: 0, dropped: false};
    this.#rooms.set(room, state);
    // A client that stopped rejects the join without asking for a grant.
    const stopped = this.#state === "closed" || this.#state === "signedout";
    const join = grant && !stopped ? this.#joinGranted(state) : this.#request({type: "join", room}, {room: state});
    state.first = join.finally(() => { state.first = null; });
    return state.first;
  }

  /** Leaves room: it is not joined again. */
  leave(room) {
    const r = this.#rooms.get(room);
    this.#rooms.delete(room);
    this.#members.delete(room);
    if (r) clearTimeout(r.renew);
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

  /** Connects again now, with a new connection (a new call of url, and of token). */
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

  // call calls fn, a token or grant function, and settles with its token
  // as a string, what it threw, or a timeout.
  #call(fn) {
    return new Promise((resolve, reject) => {
      const ms = this.#opts.timeout;
      const timer = ms > 0 && setTimeout(() => reject(new WshubError("timeout", `wshub: no token within ${ms} ms`)), ms);
      Promise.resolve().then(fn).then(
        (token) => { clearTimeout(timer); resolve(String(token)); },
        (err) => { clearTimeout(timer); reject(err); },
      );
    });
  }

  // open starts an attempt to connect: the token, then the connection,
  // then the sign-in, then the rooms (ready).
  #open() {
    clearTimeout(this.#timer);
    clearTimeout(this.#connecting);
    const gen = ++this.#gen;
    this.#setState("connecting", {attempt: this.#attempt});
    if (gen !== this.#gen) return; // a listener closed the client
    // An attempt that takes longer than the timeout failed: a server that
    // accepts but never answers is tried again.
    this.#connecting = this.#opts.timeout > 0 && setTimeout(() => {
      if (gen !== this.#gen) return;
      const ws = this.#ws;
      if (!ws) {
        this.#retry(1006, "timeout", true);
        return;
      }
      ws.onclose({code: 1006, reason: "timeout"});
      ws.close();
    }, this.#opts.timeout);
    if (!this.#opts.token) {
      this.#connect(gen, null);
      return;
    }
    this.#call(this.#opts.token).then((token) => {
      if (gen === this.#gen) this.#connect(gen, token);
    }, (error) => {
      if (gen !== this.#gen) return;
      if (error?.signedOut === true) {
        this.#signOut(0, String(error.message ?? error), error);
        return;
      }
      this.#emit("autherror", {error});
      if (gen === this.#gen) this.#retry(0, "token: " + String(error?.message ?? error), true);
    });
  }

  #connect(gen, token) {
    let url = typeof this.#url === "function" ? this.#url() : this.#url;
    let ws;
    try {
      url = new URL(url, globalThis.location?.href);
      url.protocol = url.protocol.replace(/^http/, "ws");
      ws = new this.#opts.WebSocket(url.href, this.#opts.protocol);
    } catch (err) {
      this.#stop(0, String(err.message ?? err));
      return;
    }
    this.#ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (this.#ws !== ws) return;
      opened = true;
      if (token === null) {
        this.#ready(ws, gen);
        return;
      }
      // The sign-in comes first; an error answer is not fatal: the server
      // takes no tokens, or this is a refresh of a sign-in it made itself.
      const ready = () => {
        if (this.#ws === ws) this.#ready(ws, gen);
      };
      this.#write({frame: {type: "auth", token}, auth: true, resolve: ready, reject: (err) => {
        if (err.code === "refused") ready();
      }});
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
        if (m && typeof m === "object" && this.#ws === ws) this.#handle(m);
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
      if (e.code === 4003) this.#signOut(e.code, e.reason);
      else if (!retries(e.code)) this.#stop(e.code, e.reason);
      else this.#retry(e.code, e.reason, opened);
    };
  }

  // retry ends the current attempt and sets the next.
  #retry(code, reason, opened) {
    this.#gen++;
    clearTimeout(this.#connecting);
    let delay = Math.min(this.#opts.minDelay * 2 ** this.#attempt, this.#opts.maxDelay) * (0.75 + Math.random() * 0.5);
    if (code === 4001 && this.#attempt === 0) {
      delay = 0; // a sign-in that ended: a new token, at once
    } else if (!opened) {
      delay = Math.max(delay, this.#opts.refusedDelay * (1 + Math.random()));
    }
    this.#attempt++;
    this.#timer = setTimeout(() => this.#open(), delay);
    this.#setState("offline", {code, reason, delay, attempt: this.#attempt});
  }

  // ready makes a connection signed in (if it signs in) usable: it gets
  // the grants of the rooms to join again, then joins them and writes what
  // waits.
  async #ready(ws, gen) {
    const rejoins = [...this.#rooms.values()].filter((r) => !r.first);
    const grants = new Map(); // room state → {token} or {error}
    await Promise.all(rejoins.filter((r) => r.grant).map((r) => this.#call(r.grant).then(
      (token) => grants.set(r, {token}),
      (error) => grants.set(r, {error}),
    )));
    if (this.#ws !== ws || gen !== this.#gen) return;
    clearTimeout(this.#connecting);
    this.#attempt = 0;
    this.#setState("online", {protocol: ws.protocol});
    if (this.#ws !== ws) return; // a listener closed the client
    for (const r of rejoins) {
      if (this.#rooms.get(r.name) !== r || r.first) continue; // left, or joined anew, meanwhile
      const g = grants.get(r);
      if (g?.error !== undefined) {
        this.#rooms.delete(r.name);
        this.#members.delete(r.name);
        this.#emit("rejoin", {room: r.name, recovered: false, error: g.error});
        continue;
      }
      this.#rejoin(r, g?.token);
    }
    const queue = this.#queue;
    this.#queue = [];
    for (const item of queue) this.#write(item);
  }

  // lost forgets what belonged to the connection that ended.
  #lost() {
    clearTimeout(this.#refreshTimer);
    for (const r of this.#rooms.values()) {
      r.joined = false;
      r.held = null;
      clearTimeout(r.renew);
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

  // stop ends the client: no more reconnecting, and what waits is
  // rejected; state is "closed" or "signedout".
  #stop(code, reason, state = "closed", error = undefined) {
    this.#gen++;
    clearTimeout(this.#timer);
    clearTimeout(this.#connecting);
    clearTimeout(this.#refreshTimer);
    globalThis.removeEventListener?.("online", this.#online);
    const waiting = [...this.#queue, ...this.#pending.values()];
    this.#queue = [];
    this.#pending.clear();
    for (const r of this.#rooms.values()) {
      r.joined = false;
      r.held = null;
      clearTimeout(r.renew);
    }
    const why = state === "signedout" ? "wshub: signed out" : "wshub: client closed";
    for (const item of waiting) this.#fail(item, state, why);
    if (this.#state === state) return;
    this.#setState(state, {code, reason});
    if (state === "signedout") this.#emit("signedout", error === undefined ? {code, reason} : {code, reason, error});
  }

  // signOut stops the client in the "signedout" state: code 4003 from the
  // server, or 0 when token threw a signedOut error.
  #signOut(code, reason, error) {
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      this.#lost();
      ws.close(1000, "signed out");
    }
    this.#stop(code, reason, "signedout", error);
  }

  // refuse rejects item if it cannot be written now nor wait, or queues it
  // if it must wait; it reports whether it did either.
  #refuse(item) {
    if (this.#state === "online") return false;
    if (this.#state === "closed" || this.#state === "signedout") {
      this.#fail(item, this.#state, this.#state === "closed" ? "wshub: client closed" : "wshub: signed out");
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

  // joinGranted makes the first join of r, a room joined with a grant:
  // the grant's token, then the request.
  async #joinGranted(r) {
    let token;
    try {
      token = await this.#call(r.grant);
    } catch (err) {
      if (this.#rooms.get(r.name) === r) this.#rooms.delete(r.name);
      throw err;
    }
    if (this.#rooms.get(r.name) !== r) throw new WshubError("canceled", "wshub: left before the join was sent");
    return this.#request({type: "join", room: r.name, token}, {room: r});
  }

  // rejoin joins r again on a new connection, with a recovery (and the
  // grant's token, if any); the result is a "rejoin" event.
  #rejoin(r, token) {
    const frame = {type: "join", room: r.name};
    if (token !== undefined) frame.token = token;
    const req = {frame, room: r, rejoin: true, resolve() {}};
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

  // scheduleRefresh sets the refresh of a sign-in that expires in ttl ms,
  // or cancels it (no ttl).
  #scheduleRefresh(ttl) {
    clearTimeout(this.#refreshTimer);
    if (!(ttl > 0)) return;
    const ws = this.#ws;
    this.#refreshTimer = setTimeout(() => this.#refresh(ws), refreshDelay(ttl));
  }

  // refresh sends a new token of the sign-in on ws. Whatever fails is an
  // "autherror": the connection stays until the server closes it at the
  // expiry (4001), and the client comes back with a new token.
  async #refresh(ws) {
    let token;
    try {
      token = await this.#call(this.#opts.token);
    } catch (error) {
      if (this.#ws !== ws) return;
      if (error?.signedOut === true) this.#signOut(0, String(error.message ?? error), error);
      else this.#emit("autherror", {error});
      return;
    }
    if (this.#ws !== ws) return;
    this.#write({frame: {type: "refresh", token}, auth: true, resolve() {}, reject: (error) => {
      if (this.#ws === ws && error.code !== "disconnected") this.#emit("autherror", {error});
    }});
  }

  // scheduleRenew sets the renewal of r's grant, which expires in ttl ms,
  // or cancels it (no ttl).
  #scheduleRenew(r, ttl) {
    clearTimeout(r.renew);
    if (!(ttl > 0) || !r.grant) return;
    const ws = this.#ws;
    r.renew = setTimeout(() => this.#renew(r, ws), refreshDelay(ttl));
  }

  // renew joins r again on ws with a new grant: a join of a room one is in
  // renews its grant, and acks with the new ttl. Whatever fails is an
  // "autherror": the server takes the client out of the room when the
  // grant ends ("left").
  async #renew(r, ws) {
    const current = () => this.#ws === ws && this.#rooms.get(r.name) === r && r.joined;
    let token;
    try {
      token = await this.#call(r.grant);
    } catch (error) {
      if (current()) this.#emit("autherror", {room: r.name, error});
      return;
    }
    if (!current()) return;
    // Not a join of r (item.room): it changes nothing of the room's
    // messages, it only sets the next renewal.
    this.#write({frame: {type: "join", room: r.name, token}, resolve: (ack) => {
      if (this.#rooms.get(r.name) === r) {
        this.#scheduleRenew(r, ack.ttl);
      } else if (r.dropped && !this.#rooms.has(r.name)) {
        // The grant ended before the renewal came, which joined the room
        // anew: out of it again, as the "left" event said.
        this.#write({frame: {type: "leave", room: r.name}, resolve() {}, reject() {}});
      }
    }, reject: (error) => {
      if (this.#ws === ws && error.code !== "disconnected") this.#emit("autherror", {room: r.name, error});
    }});
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
    if (requestTypes.has(frame.type) || item.auth) {
      item.id = frame.id = String(++this.#lastID);
      this.#pending.set(item.id, item);
      // A sign-in counts in the attempt's timeout, a rejoin in none.
      if (this.#opts.timeout > 0 && !item.rejoin && frame.type !== "auth") {
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
      if (req.frame.type !== "join") {
        req.resolve(undefined);
        return;
      }
      if (m.epoch) m.seq ??= 0; // omitted when 0
      this.#settleJoin(req, m);
      const ack = {room: m.room ?? req.frame.room, epoch: m.epoch, seq: m.seq, recovered: m.recovered};
      if (m.ttl) ack.ttl = m.ttl;
      req.resolve(ack);
      return;
    }
    case "auth":
      if (!this.#opts.token) break; // the application's, as before tokens
      this.#scheduleRefresh(m.ttl);
      return;
    case "leave":
      this.#left(m);
      return;
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
    }
    this.#emit("app", m);
  }

  // left handles the server's "leave" frame: the client is no longer in
  // the room, and does not join it again. A frame about a room whose join
  // is on its way is about an earlier membership (a leave and a join in a
  // row): the join's answer is the news.
  #left(m) {
    const r = this.#rooms.get(m.room);
    if (!r?.joined) return;
    this.#rooms.delete(m.room);
    this.#members.delete(m.room);
    clearTimeout(r.renew);
    r.joined = false;
    r.dropped = true;
    this.#emit("left", {room: m.room, error: m.error, frame: m});
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
    this.#scheduleRenew(r, ack.ttl);
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
