// Types of wshub.js, a client of the wshub protocol v1 (see wshub.js for
// the behaviour: reconnecting, rejoining, errors).

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
}

export type ConnectionState = "connecting" | "online" | "offline" | "closed";

export type StateEvent =
  | {state: "connecting"; attempt: number}
  | {state: "online"; protocol: string}
  /** Waiting delay ms before connecting again, after a close with code. */
  | {state: "offline"; code: number; reason: string; delay: number; attempt: number}
  /** Stopped: code is the close code (0: the URL was invalid). */
  | {state: "closed"; code: number; reason: string};

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
  /** The WebSocket constructor; default globalThis.WebSocket. */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
}

export class WshubError extends Error {
  name: "WshubError";
  code: "refused" | "timeout" | "disconnected" | "offline" | "closed" | "canceled";
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
  join(room: string, options?: {history?: number}): Promise<JoinAck>;
  leave(room: string): Promise<void>;
  publish(room: string, data?: unknown): Promise<void>;
  presence(room: string): Promise<Map<string, Member> | undefined>;
  send(msg: AppMessage): Promise<void>;
  close(code?: number, reason?: string): void;
  reconnect(): void;
}
