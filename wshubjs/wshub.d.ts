// Types of wshub.js, a client of the wshub protocol v1 (see wshub.js for
// the behaviour: signing in, reconnecting, rejoining, errors).

/** A member of a presence room: a client ID, what the server shows of it, its connections in the room. */
export interface Member {
  id: string;
  info?: unknown;
  conns: number;
}

/** A room message, delivered once. */
export interface RoomMessage {
  room: string;
  /** The publishing client's ID; undefined when the server sent it. */
  from?: string;
  data?: unknown;
  /** Its position in the room's history, in a room with history. */
  seq?: number;
  /**
   * Why it came before the join's ack: "history", the recent messages a
   * join asked for (also the fallback of a failed recovery), or
   * "recovery", a message missed while offline; undefined for a live one.
   */
  replay?: "history" | "recovery";
  /** The frame as received. */
  frame: Record<string, unknown>;
}

/** A frame of a type other than the protocol's, sent by the application. */
export interface AppMessage {
  type: string;
  [field: string]: unknown;
}

export interface JoinAck {
  room: string;
  /** The room's history, in a room with history. */
  epoch?: string;
  /** The room's latest seq when joined, in a room with history. */
  seq?: number;
  recovered?: boolean;
  /** Milliseconds until the join's grant expires (renewed before then); absent: it does not. */
  ttl?: number;
}

export interface JoinOptions {
  /** How many of the room's last messages to replay; also the fallback of every recovery. */
  history?: number;
  /**
   * Returns a token that grants the room, sent with the join: called for
   * this join, for each rejoin after a reconnection and for each renewal
   * (at 50–90 % of the ack's ttl). If it throws, this join rejects with
   * what it threw, a rejoin drops the room ("rejoin" event with error), a
   * renewal is an "autherror" event.
   */
  grant?: () => Promise<string> | string;
}

/** "signedout": stopped by a 4003 close or a token that threw a signedOut error, until reconnect(). */
export type ConnectionState = "connecting" | "online" | "offline" | "closed" | "signedout";

export type StateEvent =
  | {state: "connecting"; attempt: number}
  | {state: "online"; protocol: string}
  /** Waiting delay ms before connecting again, after a close with code (0: the token function failed). */
  | {state: "offline"; code: number; reason: string; delay: number; attempt: number}
  /** Stopped: code is the close code (0: the URL was invalid). */
  | {state: "closed"; code: number; reason: string}
  /** Signed out: code is 4003, or 0 when the token function threw a signedOut error. */
  | {state: "signedout"; code: number; reason: string};

/** The client stopped, signed out: a new token of the same sign-in would not help. */
export interface SignedOutEvent {
  /** 4003, the server's close code (reason: "unauthorized", "auth required", a ban…), or 0: the token function threw error. */
  code: number;
  reason: string;
  error?: unknown;
}

/** The server took the client out of a room: it is not joined again. */
export interface LeftEvent {
  room: string;
  /** Why, as the server said it (e.g. "wshub: grant expired"). */
  error?: string;
  frame: Record<string, unknown>;
}

/**
 * A token or grant that could not be renewed: a refresh or renewal the
 * server refused or did not answer, or a token or grant function that
 * threw. The connection stays: the server closes it (4001) when the
 * sign-in ends, or takes the client out of the room ("left") when the
 * grant ends.
 */
export interface AuthErrorEvent {
  /** Set for a room's grant; absent for the sign-in. */
  room?: string;
  /** A WshubError (refused, timeout), or what the function threw. */
  error: unknown;
}

/** The outcome of joining a room again on a new connection. */
export interface RejoinEvent {
  room: string;
  /** Whether every message missed while offline was replayed; false: some may be missing. */
  recovered: boolean;
  epoch?: string;
  seq?: number;
  /** Set when the server refused the join: the client is no longer in the room. */
  error?: WshubError;
}

export interface PresenceEvent {
  room: string;
  /** The room's members (at most the server's list limit): the map of Client.members. */
  members: Map<string, Member>;
  /** How many members the room has in all. */
  total: number;
}

export interface PresenceDiffEvent {
  room: string;
  /** The members who were not in the map. */
  joins: Member[];
  /** The members who were in the map, and are no longer. */
  leaves: Member[];
  members: Map<string, Member>;
}

export interface Events {
  state: StateEvent;
  message: RoomMessage;
  app: AppMessage;
  presence: PresenceEvent;
  presence_diff: PresenceDiffEvent;
  rejoin: RejoinEvent;
  /** The server's history of a room started over while the client was in it: messages may be missing. */
  reset: {room: string; epoch: string};
  /** An error frame that answers no request of this client. */
  error: WshubError;
  signedout: SignedOutEvent;
  left: LeftEvent;
  autherror: AuthErrorEvent;
}

export interface Options {
  /** The subprotocol to offer: "wshub.json-batch" (default) or "wshub.json". */
  protocol?: string;
  /** How long a request waits for its answer once written, in ms; 0: for ever. Default 30000. */
  timeout?: number;
  /** What requests and send() do while not online: "wait" (default) for the next connection, or "fail" at once. */
  offline?: "wait" | "fail";
  /** The first wait before reconnecting, in ms (500), doubled after each failed attempt up to maxDelay (15000). */
  minDelay?: number;
  maxDelay?: number;
  /** The least wait after an attempt that failed before the connection opened, in ms (1000), drawn up to twice that: a hub's 503, whose Retry-After browsers hide. */
  refusedDelay?: number;
  /**
   * Returns a token for the server (PROTOCOL.md §11), called before every
   * attempt to connect and for every refresh (at 50–90 % of the ttl the
   * server gives): the client signs in with it as its first frame, and
   * refreshes with it before the sign-in expires. If it throws an error
   * whose signedOut property is true, the client signs out ("signedout");
   * any other error is a failed attempt (tried again with backoff) or a
   * failed refresh ("autherror").
   */
  token?: () => Promise<string> | string;
  /** The WebSocket constructor; default globalThis.WebSocket. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

/**
 * The wait before renewing what expires in ttl ms: uniformly random in
 * [0.5, 0.9]·ttl, so that clients that connected together spread their
 * refreshes over 40 % of the ttl.
 */
export function refreshDelay(ttl: number): number;

export class WshubError extends Error {
  name: "WshubError";
  code: "refused" | "timeout" | "disconnected" | "offline" | "closed" | "signedout" | "canceled";
  /** The error frame, for code "refused". */
  frame?: {type: "error"; id?: string; room?: string; error: string};
}

export class Client {
  constructor(url: string | URL | (() => string | URL), options?: Options);
  readonly state: ConnectionState;
  /** The rooms the client is in, or joins again on the next connection. */
  readonly rooms: string[];
  members(room: string): Map<string, Member> | undefined;
  on<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): () => void;
  off<K extends keyof Events>(type: K, fn: (event: Events[K]) => void): void;
  join(room: string, options?: JoinOptions): Promise<JoinAck>;
  leave(room: string): Promise<void>;
  publish(room: string, data?: unknown): Promise<void>;
  presence(room: string): Promise<Map<string, Member> | undefined>;
  send(msg: AppMessage): Promise<void>;
  close(code?: number, reason?: string): void;
  reconnect(): void;
}
