// @palaver/client: a thin, typed client over the stock socket.io-client for the palaver chat server.
//
//   const client = connect("http://localhost:3000", { auth: { name: "ada" } });
//   client.onMessage((m) => console.log(`${m.from.name}: ${m.text}`));
//   const { history } = await client.join("general");
//   const message = await client.send("general", "hello!");
//
// `client.socket` is the real socket.io-client Socket, typed with the contract; the SDK adds promise helpers,
// PalaverError, client ids and resends for sends, the catch-up after reconnecting (`onMessage`: every message of
// every followed room exactly once, in seq order, without gaps), and hides nothing.

import { io } from "socket.io-client";
import type { DisconnectDescription, ManagerOptions, Socket, SocketOptions } from "socket.io-client";

import { PalaverError, ackFailure, parseConnectError } from "./errors.js";
import type {
  Ack,
  Auth,
  ClientToServerEvents,
  Message,
  MessageSendReply,
  Room,
  RoomId,
  RoomJoinReply,
  RoomNotice,
  RoomSummary,
  ServerToClientEvents,
  Session,
  User,
  UserId,
  Visibility,
  HistoryFetchReply,
  Invitation,
  MessageEditReply,
  SyncCursor,
  SyncReply,
  MessagesSearchPayload,
  MessagesSearchReply,
} from "./protocol.js";
import { RoomStates } from "./rooms.js";
import type { RoomState } from "./rooms.js";
import { ChangeFeed } from "./changes.js";
import type { ChangeHandler, MessageChange } from "./changes.js";

import { newClientId } from "./ids.js";

export * from "./protocol.js";
export { newClientId } from "./ids.js";
export { PalaverError, isPalaverError, parseConnectError } from "./errors.js";
export type { ClientErrorCode, PalaverErrorCode, PalaverErrorOptions } from "./errors.js";
export type { RoomState } from "./rooms.js";
export { ChatStore } from "./store.js";
export type {
  ChatStoreOptions,
  ConnectionView,
  Departure,
  LoadStatus,
  PendingMessage,
  RoomView,
  RoomsView,
  SentMessage,
  TimelineMessage,
} from "./store.js";
export type { ChangeHandler, MessageChange } from "./changes.js";

/** The socket.io-client Socket typed with the palaver contract. */
export type PalaverSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** Events a client can listen to: the server's events plus socket.io-client's own `connect`, `disconnect`, `connect_error`. */
export interface ListenEvents extends ServerToClientEvents {
  connect: () => void;
  connect_error: (err: Error) => void;
  disconnect: (reason: Socket.DisconnectReason, description?: DisconnectDescription) => void;
}

export interface PalaverOptions {
  /** `{ token }` for a signed-in user, `{ name }` for a named guest, nothing for a random guest. */
  auth?: Auth;
  /** The namespace to connect to, default `/`. */
  namespace?: string;
  /** Milliseconds to wait for each acknowledgement, default 5000. */
  ackTimeout?: number;
  /** How many times `send`/`dm` re-emit (same `clientId`) when no ack arrives in time, default 3. */
  retries?: number;
  /**
   * Passed through to socket.io-client's `io()` (`transports`, `reconnectionDelay`, `autoConnect`…).
   * Leave its own `retries`/`ackTimeout` unset: they queue every emit of the socket, one at a time, and change the
   * signature of ack callbacks to `(err, res)`; the SDK's resend covers sends without that.
   */
  socket?: Partial<ManagerOptions & SocketOptions>;
  /**
   * Returns a fresh token for the signed-in user. When given, the client refreshes on its own: on
   * `session:expiring` it calls this, sends `session:refresh`, and signs its later reconnections in with the new
   * token. For palaver's own sessions, {@link refreshPalaverSession} is such a function.
   */
  refreshToken?: () => Promise<string>;
  /**
   * Milliseconds a message stays held when the one before it in its room is missing (live messages can arrive out
   * of order) before the SDK fetches the gap with `history:fetch { after }`, default 500.
   */
  gapTimeout?: number;
}

export interface JoinOptions {
  /** How many of the latest messages to return, 1–100 (server default 50). */
  limit?: number;
  /** The last seq held in the room: `history` is then every message after it (see `truncated`). */
  since?: number;
}
export interface SendOptions {
  /** 1–64 characters; generated with `crypto.randomUUID()` when absent. Reusing one is safe: see `send`. */
  clientId?: string;
  /** The seq of the message of the room this one answers (`send` only). */
  replyTo?: number;
}
export interface RoomSendOptions extends SendOptions {
  /** The seq of the message of the same room this one answers. */
  replyTo?: number;
}
export interface HistoryOptions {
  /** The messages just below this seq (paging back). */
  before?: number;
  /** The messages just above this seq (catching up). */
  after?: number;
  /** 1–100 (server default 50). */
  limit?: number;
}
export interface CreateRoomOptions {
  visibility?: Visibility;
  /** User ids added as members (up to 100). */
  members?: UserId[];
}

export type JoinResult = RoomJoinReply;
export type HistoryResult = HistoryFetchReply;

export const DEFAULT_ACK_TIMEOUT = 5000;
export const DEFAULT_RETRIES = 3;
export const DEFAULT_GAP_TIMEOUT = 500;
/** Rooms per `sync` call (the server's default `--max-rooms-per-socket`; smaller chunks if it answers too_large). */
const SYNC_CHUNK = 100;
/** Messages per `history:fetch` page of the catch-up. */
const PAGE_LIMIT = 100;
/** How many of its own messages (by clientId) the client remembers to settle a resend without sending again. */
const OWN_REMEMBERED = 1000;

/**
 * Where the connection is: `connecting` until the first `session`, `connected` while connected with a session,
 * `reconnecting` after a drop (socket.io-client retries; calls wait, sends are resent), `closed` once it has ended
 * for good (`close()`, a refusal, the server's disconnect: see `client.error`).
 */
export type ConnectionStatus = "connecting" | "connected" | "reconnecting" | "closed";

/** Handles one message of the ordered stream of `onMessage`. */
export type MessageHandler = (message: Message) => void;

/**
 * A `refreshToken` for palaver's own sessions: rotates the refresh token at `POST <url>/api/v1/auth/refresh` and
 * returns the new access token. In a browser, pass nothing else: the `HttpOnly` refresh cookie is sent (from an
 * origin in the server's `--cors-origins`). Elsewhere, pass `getRefreshToken`/`setRefreshToken` to keep the refresh
 * token yourself (it changes on every refresh).
 */
export function refreshPalaverSession(
  url: string,
  store?: { getRefreshToken: () => string; setRefreshToken: (token: string) => void },
): () => Promise<string> {
  // One refresh at a time: two callers at once (two clients of one page) share it, instead of spending the
  // refresh token twice.
  let inflight: Promise<string> | undefined;
  return () => {
    inflight ??= refreshOnce(url, store).finally(() => {
      inflight = undefined;
    });
    return inflight;
  };
}

async function refreshOnce(
  url: string,
  store: { getRefreshToken: () => string; setRefreshToken: (token: string) => void } | undefined,
): Promise<string> {
  const body = store ? { refreshToken: store.getRefreshToken() } : {};
  const res = await fetch(`${url.replace(/\/+$/, "")}/api/v1/auth/refresh`, {
    method: "POST",
    credentials: "include",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as
    | { accessToken: string; refreshToken: string }
    | { error: { code: string; message: string } };
  if (!res.ok || "error" in json) {
    const why = "error" in json ? `${json.error.code}: ${json.error.message}` : `HTTP ${res.status}`;
    throw new PalaverError("unauthorized", `the session could not be refreshed (${why})`);
  }
  store?.setRefreshToken(json.refreshToken);
  return json.accessToken;
}

/**
 * Connects to a palaver server; the same as `new PalaverClient(url, options)`. `url` may be a list of nodes of one
 * cluster: the client starts on the first and moves to the next whenever a connection attempt fails.
 */
export function connect(url: string | readonly string[], options: PalaverOptions = {}): PalaverClient {
  return new PalaverClient(url, options);
}

/** A ban's or mute's end as the server takes it: RFC 3339, or null (until lifted). */
function rfc3339(until: Date | string | undefined): string | null {
  return until instanceof Date ? until.toISOString() : (until ?? null);
}

// socket.io-client's typed emit does not accept a union of event names; the helpers go through this view.
type AnyFn = (...args: any[]) => void;
interface LooseSocket {
  timeout(ms: number): { emitWithAck(event: string, payload: unknown): Promise<unknown> };
  on(event: string, fn: AnyFn): unknown;
  once(event: string, fn: AnyFn): unknown;
  off(event?: string, fn?: AnyFn): unknown;
}

type SendEvent = "message:send" | "dm:send";

export class PalaverClient {
  /** The real socket.io-client socket, typed with the contract. Use it for anything the helpers do not cover. */
  readonly socket: PalaverSocket;
  /**
   * Resolves with the first `session` event. Rejects if the connection ends for good before it: refused (the
   * PalaverError of `onConnectError`, e.g. `expired`), `invalid_namespace`, or `disconnected` (`close()`…).
   */
  readonly session: Promise<Session>;
  /** Milliseconds each helper waits for its ack. */
  readonly ackTimeout: number;
  /** Re-emits of a `send`/`dm` whose ack did not arrive. */
  readonly retries: number;
  /** Milliseconds a message waits for a missing predecessor before the SDK fetches the gap. */
  readonly gapTimeout: number;
  /** The server URLs given to `connect` (several: nodes of one cluster, tried in turn). */
  readonly urls: readonly string[];

  private _user: User | undefined;
  /** Every user id this client has had (a guest gets a new one per connection): its own messages are from these. */
  private readonly userIds = new Set<UserId>();
  private readonly roomStates = new RoomStates();
  private readonly messageHandlers = new Set<MessageHandler>();
  /** Revision cursors of the followed rooms (see changes.ts) and the `onChange` handlers. */
  private readonly changeFeed = new ChangeFeed();
  private readonly changeHandlers = new Set<ChangeHandler>();
  private readonly recoveryErrorHandlers = new Set<(err: PalaverError) => void>();
  /** The client's own messages by clientId (the latest OWN_REMEMBERED): a resend already stored is settled locally. */
  private readonly ownByClientId = new Map<string, Message>();
  /** Sessions received so far: the second and later ones are reconnections, which catch up. */
  private sessions = 0;
  /** Bumped on every session and disconnection: async catch-up work of an older connection stops. */
  private epoch = 0;
  /** The catch-ups in progress (they never reject). */
  private readonly catchUps = new Set<Promise<void>>();
  private urlIndex = 0;
  private readonly namespace: string | undefined;
  /** Timers of the catch-up's retry back-off, cleared by `close()`. */
  private readonly sleepers = new Set<() => void>();
  /** Gets a fresh token when the server says the current one is expiring. */
  private readonly refreshToken: (() => Promise<string>) | undefined;
  /** Set once a connection refused as `expired` has been retried with a fresh token (until a connect). */
  private renewedAfterExpiry = false;
  /** Set when the connection has ended for good (cleared by a new `connect`). */
  private terminal: PalaverError | undefined;
  private closed = false;
  /** Connected and the `session` of this connection has arrived (a signed-in user's rooms are re-entered). */
  private ready = false;
  private readonly readyWaiters = new Set<() => void>();
  /** Rejects `session` while it is pending (a no-op once it has resolved). */
  private rejectSession!: (err: PalaverError) => void;
  private resolveSession!: (s: Session) => void;
  /** Rejecters of the calls waiting on the connection; all called when it ends for good. */
  private readonly aborts = new Set<(err: PalaverError) => void>();
  private _status: ConnectionStatus = "connecting";
  private readonly statusHandlers = new Set<(status: ConnectionStatus) => void>();

  constructor(url: string | readonly string[], options: PalaverOptions = {}) {
    this.ackTimeout = options.ackTimeout ?? DEFAULT_ACK_TIMEOUT;
    this.retries = options.retries ?? DEFAULT_RETRIES;
    this.gapTimeout = options.gapTimeout ?? DEFAULT_GAP_TIMEOUT;
    if (!(this.ackTimeout > 0)) throw new RangeError("ackTimeout must be a positive number of milliseconds");
    if (!(Number.isInteger(this.retries) && this.retries >= 0)) throw new RangeError("retries must be an integer ≥ 0");
    if (!(this.gapTimeout >= 0)) throw new RangeError("gapTimeout must be a number of milliseconds ≥ 0");
    this.urls = typeof url === "string" ? [url] : [...url];
    if (this.urls.length === 0 || this.urls.some((u) => typeof u !== "string" || u.length === 0)) {
      throw new RangeError("url must be a URL or a non-empty list of URLs");
    }
    this.namespace = options.namespace;

    const socketOptions: Partial<ManagerOptions & SocketOptions> = { ...options.socket };
    if (options.auth !== undefined) socketOptions.auth = { ...options.auth };
    // Moving between nodes changes the Manager's URL: it must not be shared with other clients.
    if (this.urls.length > 1) socketOptions.forceNew = true;
    this.socket = io(namespaceUrl(this.urls[0]!, this.namespace), socketOptions);

    this.session = new Promise<Session>((resolve, reject) => {
      this.resolveSession = resolve;
      this.rejectSession = reject;
    });
    // Nobody has to await `session`: a refused connection must not become an unhandled rejection.
    this.session.catch(() => {});

    // `onAny` listeners run before the app's listeners and survive `client.off("message")`/`client.off()`.
    this.refreshToken = options.refreshToken;
    this.socket.onAny((event: string, ...args: unknown[]) => {
      if (event === "session") this.onSession(args[0] as Session);
      else if (event === "message") this.take(args[0] as Message);
      else if (event === "session:expiring") void this.refreshSession();
      else if (event === "room:notice") this.removedBy(args[0] as RoomNotice);
      else this.handOver([this.changeFeed.live(event, args[0])]);
    });
    const s = this.socket as unknown as LooseSocket;
    s.on("connect", () => {
      this.terminal = undefined;
      this.renewedAfterExpiry = false;
    });
    s.on("connect_error", (err: Error) => {
      // A refusal by the server (or a server-side middleware error) deactivates the socket: no retry will come.
      if (!this.socket.active) {
        const refusal = parseConnectError(err);
        // A token that ran out while the client was away (a laptop asleep): refresh it and connect again, once.
        if (refusal.code === "expired" && this.refreshToken && !this.renewedAfterExpiry) {
          this.renewedAfterExpiry = true;
          void this.refreshSession({ reconnect: true }).then((renewed) => {
            if (!renewed) this.end(refusal);
          });
          return;
        }
        this.end(refusal);
      }
    });
    s.on("disconnect", (reason: string) => {
      this.ready = false;
      this.epoch++;
      this.roomStates.clearTimers();
      // Catch-up work waiting to retry stops now; the next connection catches up again.
      for (const wake of [...this.sleepers]) wake();
      if (!this.socket.active) {
        this.end(new PalaverError("disconnected", `disconnected (${reason}) and not reconnecting`));
      } else {
        this.setStatus(this.sessions > 0 ? "reconnecting" : "connecting");
      }
    });
    this.socket.io.on("reconnect_failed", () => {
      this.end(new PalaverError("disconnected", "socket.io-client gave up reconnecting"));
    });
    if (this.urls.length > 1) {
      // Every failed connection attempt (the first one or a reconnection) moves on to the next node.
      this.socket.io.on("error", () => this.nextUrl());
    }
  }

  /**
   * Gets a fresh token from `refreshToken` and hands it to the server (`session:refresh`); later reconnections use
   * it too. A failure is left to the server's expiry: the connection then ends with `session:expired`.
   */
  private async refreshSession({ reconnect = false } = {}): Promise<boolean> {
    if (!this.refreshToken) return false;
    try {
      const token = await this.refreshToken();
      const auth = (typeof this.socket.auth === "object" ? this.socket.auth : {}) as Record<string, unknown>;
      this.socket.auth = { ...auth, token };
      if (reconnect) {
        this.socket.connect();
        return true;
      }
      const res = (await this.socket.timeout(this.ackTimeout).emitWithAck("session:refresh", { token })) as Ack<{
        expiresAt: string;
      }>;
      if (!res.ok) console.warn(`palaver: session:refresh refused: ${res.error.code}: ${res.error.message}`);
      return res.ok;
    } catch (err) {
      console.warn(`palaver: could not refresh the session: ${(err as Error).message}`);
      return false;
    }
  }

  /** Where the connection is now; {@link onStatus} tells every change. */
  get status(): ConnectionStatus {
    return this._status;
  }

  /**
   * Why the connection ended for good, once `status` is `closed`: `disconnected` (`close()`, the server's
   * disconnect), a refusal code (`expired`, `invalid_namespace`…). Undefined while the connection is open or retrying.
   */
  get error(): PalaverError | undefined {
    return this._status === "closed" ? this.terminal : undefined;
  }

  /** Calls `handler` with every change of {@link status}. Returns an unsubscribe function. */
  onStatus(handler: (status: ConnectionStatus) => void): () => void {
    const entry = (status: ConnectionStatus) => handler(status);
    this.statusHandlers.add(entry);
    return () => {
      this.statusHandlers.delete(entry);
    };
  }

  /** The current user, from the latest `session` event (undefined before the first one). */
  get user(): User | undefined {
    return this._user;
  }

  /** The server URL the client connects (or reconnects) to now: one of `urls`. */
  get url(): string {
    return this.urls[this.urlIndex]!;
  }

  /**
   * True while the client is catching up: a reconnection's `sync`/`room:join { since }` or its paging, or a gap
   * fill, is in flight, or a message waits for a missing predecessor.
   */
  get recovering(): boolean {
    return this.catchUps.size > 0 || this.roomStates.busy();
  }

  /**
   * Calls `handler` with every `connect_error`, parsed into a PalaverError (`code` from
   * `"unauthorized: <code>: <why>"`, `invalid_namespace`, else `connect_failed`). Returns an unsubscribe function.
   */
  onConnectError(handler: (err: PalaverError) => void): () => void {
    const listener = (err: Error) => handler(parseConnectError(err));
    this.socket.on("connect_error", listener);
    return () => {
      this.socket.off("connect_error", listener);
    };
  }

  /**
   * Calls `handler` with every message of every room the client follows, **exactly once, in seq order, without
   * gaps**, whether it came live, in the ack of this client's own send, or from the catch-up after a reconnection
   * (or a gap fill). A room is followed from `join`/`createRoom` (or, for a signed-in user, from the `session` that
   * lists it as a member room, or the first message seen in a room not joined through the SDK) until `leave`.
   * Returns an unsubscribe function. See the README, "Messages and reconnections".
   */
  onMessage(handler: MessageHandler): () => void {
    // A wrapper per subscription, so that subscribing the same function twice calls it twice, like `on`.
    const entry: MessageHandler = (m) => handler(m);
    this.messageHandlers.add(entry);
    return () => {
      this.messageHandlers.delete(entry);
    };
  }

  /**
   * Calls `handler` with the errors of the catch-up (`err.room` says which room, if one): `forbidden`/`not_found`
   * (the room is no longer followed), `timeout`/`unavailable`/`rate_limited`/`internal` (retried with back-off),
   * and `not_found` with `event: "history:fetch"` for messages the server's history does not have (a namespace that
   * keeps no history): the stream goes on after them. Returns an unsubscribe function.
   */
  onRecoveryError(handler: (err: PalaverError) => void): () => void {
    const entry = (err: PalaverError) => handler(err);
    this.recoveryErrorHandlers.add(entry);
    return () => {
      this.recoveryErrorHandlers.delete(entry);
    };
  }

  /**
   * Catches up every followed room now, as a reconnection does (one `sync` for a signed-in user,
   * `room:join { since }` per room for a guest, paging when truncated): missed messages go to `onMessage`.
   * Resolves once a catch-up completed on one connection (it waits for the connection, and starts over after a
   * drop); rejects if the connection ends for good. Reconnections catch up by themselves: this is for when the app
   * has a reason to doubt, e.g. after the tab was in the background.
   */
  async catchUp(): Promise<void> {
    for (;;) {
      await this.whenReady();
      const epoch = this.epoch;
      await this.abortable(this.startCatchUp());
      if (epoch === this.epoch && this.ready) return;
    }
  }

  /**
   * Calls `handler` with every change to the messages and read state of the rooms the client follows: live edits,
   * deletes, reactions and read positions as they come, and, after a reconnection (or `catchUp()`), each message
   * changed while the client was away in its current state and the room's read state (see {@link MessageChange}).
   * Returns an unsubscribe function.
   */
  onChange(handler: ChangeHandler): () => void {
    const entry: ChangeHandler = (c) => handler(c);
    this.changeHandlers.add(entry);
    return () => {
      this.changeHandlers.delete(entry);
    };
  }

  /** Replaces the text of the user's message `seq` in `room` (within the server's edit window). */
  async editMessage(room: RoomId, seq: number, text: string): Promise<Message> {
    const { message } = await this.request<MessageEditReply>("message:edit", { room, seq, text });
    return message;
  }

  /**
   * Deletes message `seq` of `room` (the user's own, or anyone's where the user moderates the room): it stays in
   * history as a tombstone.
   */
  async deleteMessage(room: RoomId, seq: number): Promise<void> {
    await this.request<object>("message:delete", { room, seq });
  }

  /** Adds the user's `emoji` (exactly one emoji) reaction to message `seq` of `room`. */
  async addReaction(room: RoomId, seq: number, emoji: string): Promise<void> {
    await this.request<object>("reaction:add", { room, seq, emoji });
  }

  /** Removes the user's `emoji` reaction from message `seq` of `room`. */
  async removeReaction(room: RoomId, seq: number, emoji: string): Promise<void> {
    await this.request<object>("reaction:remove", { room, seq, emoji });
  }

  /** Records that the user has read `room` up to `seq` (it never moves back); the user's other devices hear of it. */
  async markRead(room: RoomId, seq: number): Promise<void> {
    await this.request<object>("room:read", { room, seq });
  }

  /** `socket.on`, typed. Returns an unsubscribe function (calling it again does nothing). */
  on<E extends keyof ListenEvents>(event: E, handler: ListenEvents[E]): () => void {
    const socket = this.socket as unknown as LooseSocket;
    socket.on(event, handler as AnyFn);
    let subscribed = true;
    return () => {
      if (subscribed) socket.off(event, handler as AnyFn);
      subscribed = false;
    };
  }

  /** `socket.once`, typed. Returns an unsubscribe function (a no-op once the handler has run). */
  once<E extends keyof ListenEvents>(event: E, handler: ListenEvents[E]): () => void {
    const socket = this.socket as unknown as LooseSocket;
    let subscribed = true;
    const listener: AnyFn = (...args) => {
      subscribed = false;
      (handler as AnyFn)(...args);
    };
    socket.once(event, listener);
    return () => {
      if (subscribed) socket.off(event, listener);
      subscribed = false;
    };
  }

  /** `socket.off`, typed: one handler, every handler of `event`, or every handler (the SDK's own stay). */
  off<E extends keyof ListenEvents>(event?: E, handler?: ListenEvents[E]): void {
    (this.socket as unknown as LooseSocket).off(event, handler as AnyFn | undefined);
  }

  /**
   * Creates a group room whose id is `name` with the caller as member (this socket enters it); `members` are invited.
   */
  async createRoom(name: RoomId, options: CreateRoomOptions = {}): Promise<Room> {
    this.roomStates.beginJoin(name);
    let room: Room;
    try {
      ({ room } = await this.request<{ room: Room }>("room:create", { name, ...options }));
    } catch (err) {
      this.roomStates.endJoin(name);
      throw err;
    }
    this.roomStates.start(room.id, 0);
    this.changeFeed.startRoom(room.id, 0);
    this.deliver(room.id, this.roomStates.endJoin(name));
    return room;
  }

  /**
   * Enters `room` (creating a missing public room): the latest messages, whether older exist, who is online.
   * The room is followed from then on: `onMessage` gets every message after the returned history (with `since`:
   * every message after `since`, including those of the reply).
   */
  async join(room: RoomId, options: JoinOptions = {}): Promise<JoinResult> {
    this.roomStates.beginJoin(room);
    let res: RoomJoinReply;
    try {
      res = await this.request<RoomJoinReply>("room:join", { room, ...options });
    } catch (err) {
      this.roomStates.endJoin(room);
      throw err;
    }
    const id = res.room.id;
    if (!this.roomStates.has(id)) {
      const latest = res.history.reduce((max, m) => Math.max(max, m.seq), 0);
      this.roomStates.start(id, options.since ?? latest);
    }
    // A room followed from a live message alone has no cursor yet: changes are caught up from this join on.
    this.changeFeed.startRoom(id, res.rev);
    this.deliver(id, [...res.history, ...this.roomStates.endJoin(room)]);
    if (res.truncated) void this.runCatchUp([id], (epoch) => this.pageAfter(id, epoch));
    return res;
  }

  /** Leaves `room` for good: the membership is removed and all of the user's sockets leave it. */
  async leave(room: RoomId): Promise<void> {
    await this.request<object>("room:leave", { room });
    this.roomStates.forget(room);
    this.changeFeed.forget(room);
  }

  /**
   * Sends `text` to `room` and resolves with the stored message (committed: it survives a restart).
   * Carries a `clientId` (generated unless given) and re-emits with the same one when no ack arrives in time:
   * the server returns the original message for a `clientId` it already has, so a message is stored once.
   */
  async send(room: RoomId, text: string, options: RoomSendOptions = {}): Promise<Message> {
    const payload: { room: RoomId; text: string; clientId: string; replyTo?: number } = {
      room,
      text,
      clientId: options.clientId ?? newClientId(),
    };
    if (options.replyTo !== undefined) payload.replyTo = options.replyTo;
    const message = await this.sendWithResend("message:send", payload);
    this.take(message);
    return message;
  }

  /** Sends `text` to the 1:1 conversation with `to` (room `dm:…`), with the same `clientId` and resend as `send`. */
  async dm(to: UserId, text: string, options: SendOptions = {}): Promise<Message> {
    const payload = { to, text, clientId: options.clientId ?? newClientId() };
    const message = await this.sendWithResend("dm:send", payload);
    this.take(message);
    return message;
  }

  /** A page of `room`'s history, oldest first: the latest, or `before`/`after` a seq. */
  async history(room: RoomId, options: HistoryOptions = {}): Promise<HistoryResult> {
    const res = await this.request<HistoryFetchReply>("history:fetch", { room, ...options });
    this.deliver(room, res.messages);
    return res;
  }

  /** The user's rooms and DMs plus every public room, most recently active first. */
  async rooms(): Promise<RoomSummary[]> {
    const { rooms } = await this.request<{ rooms: RoomSummary[] }>("rooms:list", {});
    return rooms;
  }

  /** Invites users to `room` (the caller must be a member); resolves with the ids newly invited. */
  async invite(room: RoomId, users: UserId[]): Promise<UserId[]> {
    const { invited } = await this.request<{ invited: UserId[] }>("room:invite", { room, users });
    return invited;
  }

  /** Declines the invitation to `room`. Accepting is `join(room)`. */
  async decline(room: RoomId): Promise<void> {
    await this.request<object>("room:decline", { room });
  }

  /** The user's open invitations, newest first. */
  async invitations(): Promise<Invitation[]> {
    const { invitations } = await this.request<{ invitations: Invitation[] }>("invitations:list", {});
    return invitations;
  }

  /** The users online in `room` now. */
  async presence(room: RoomId): Promise<User[]> {
    const { users } = await this.request<{ users: User[] }>("presence:list", { room });
    return users;
  }

  /** Tells the others in `room` that this user is typing. Fire and forget: dropped while disconnected. */
  typing(room: RoomId): void {
    this.socket.volatile.emit("typing", { room });
  }

  /** Makes `user` a moderator of `room`, or a member again (the room's owner or a namespace admin). */
  async setRole(room: RoomId, user: UserId, role: "moderator" | "member"): Promise<void> {
    await this.request<object>("room:role", { room, user, role });
  }

  /** Removes `user` from `room` on all their sockets (a moderator); they may join again. */
  async kick(room: RoomId, user: UserId): Promise<void> {
    await this.request<object>("room:kick", { room, user });
  }

  /** Bans `user` from `room` (removing them if there) until `until`, else until `unban`. */
  async ban(room: RoomId, user: UserId, until?: Date | string): Promise<void> {
    await this.request<object>("room:ban", { room, user, until: rfc3339(until) });
  }

  async unban(room: RoomId, user: UserId): Promise<void> {
    await this.request<object>("room:unban", { room, user });
  }

  /** Refuses `user`'s messages to `room` until `until`, else until `unmute`. */
  async mute(room: RoomId, user: UserId, until?: Date | string): Promise<void> {
    await this.request<object>("room:mute", { room, user, until: rfc3339(until) });
  }

  async unmute(room: RoomId, user: UserId): Promise<void> {
    await this.request<object>("room:unmute", { room, user });
  }

  /** Stops DMs between this user and `user`, and invitations from `user`. */
  async block(user: UserId): Promise<void> {
    await this.request<object>("user:block", { user });
  }

  async unblock(user: UserId): Promise<void> {
    await this.request<object>("user:unblock", { user });
  }

  /** Messages holding every word of `query`, newest first, with the spans that matched (see `SearchResult`). */
  async search(query: string, options: Omit<MessagesSearchPayload, "query"> = {}): Promise<MessagesSearchReply> {
    return this.request<MessagesSearchReply>("messages:search", { query, ...options });
  }

  /**
   * The last seq of `room` this client holds with nothing missing below it (every message up to it went to
   * `onMessage`), if the room is followed.
   */
  lastSeq(room: RoomId): number | undefined {
    return this.roomStates.get(room)?.lastSeq;
  }

  /** The per-room state the client keeps (`lastSeq`), for every room it follows. */
  roomState(): Map<RoomId, Readonly<RoomState>> {
    const out = new Map<RoomId, Readonly<RoomState>>();
    for (const room of this.roomStates.rooms()) out.set(room, this.roomStates.get(room)!);
    return out;
  }

  /** Disconnects for good; calls still waiting reject with `disconnected`. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.end(new PalaverError("disconnected", "the client was closed"));
    this.socket.disconnect();
  }

  // -------------------------------------------------------------------------------------------
  // internals: the ordered stream and the catch-up

  private setStatus(status: ConnectionStatus): void {
    if (this._status === status) return;
    this._status = status;
    for (const handler of [...this.statusHandlers]) {
      try {
        handler(status);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  private onSession(session: Session): void {
    const reconnection = this.sessions > 0;
    this.sessions++;
    this.epoch++;
    this._user = session.user;
    this.userIds.add(session.user.id);
    if (!session.user.anonymous && Array.isArray(session.rooms)) {
      // A signed-in user's sockets are in all of the user's rooms: follow them from where they are now.
      for (const r of session.rooms) {
        if (r.member && !this.roomStates.has(r.id) && !this.roomStates.isJoining(r.id)) {
          this.roomStates.start(r.id, r.lastSeq);
          this.changeFeed.startRoom(r.id, r.rev);
        }
      }
    }
    // The catch-up's first requests are emitted now, before any send waiting for the connection: the server handles
    // a socket's events in order, so a guest's sends come after its rooms are joined again.
    this.ready = true;
    if (reconnection) void this.startCatchUp();
    this.resolveSession(session);
    this.setStatus("connected");
    for (const wake of [...this.readyWaiters]) wake();
  }

  /** A moderator removed this user from a room (`kick`, `ban`): the room is no longer followed, as after `leave`. */
  private removedBy(notice: RoomNotice): void {
    if ((notice?.kind === "kick" || notice?.kind === "ban") && this.userIds.has(notice.user?.id)) {
      this.roomStates.forget(notice.room);
      this.changeFeed.forget(notice.room);
    }
  }

  /** A message from a live event or a send ack: into its room's stream (following the room if new). */
  private take(m: Message): void {
    if (!m || typeof m !== "object" || typeof m.room !== "string" || !Number.isInteger(m.seq)) return;
    if (this.roomStates.has(m.room)) {
      this.deliver(m.room, [m]);
    } else if (!this.roomStates.bufferIfJoining(m)) {
      // A room not joined through the SDK (another tab joined it, a new DM…): followed from this message on.
      this.roomStates.start(m.room, m.seq - 1);
      this.deliver(m.room, [m]);
    }
  }

  /** Ingests `messages` of `room` and hands what became deliverable to the `onMessage` handlers. */
  private deliver(room: RoomId, messages: readonly Message[]): void {
    if (messages.length > 0) this.dispatch(this.roomStates.ingest(room, messages));
    this.scheduleGapFill(room);
  }

  /** Hands changes to the `onChange` handlers (`undefined`s are skipped). */
  private handOver(changes: readonly (MessageChange | undefined)[]): void {
    for (const change of changes) {
      if (!change) continue;
      for (const handler of [...this.changeHandlers]) {
        try {
          handler(change);
        } catch (err) {
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    }
  }

  private dispatch(messages: readonly Message[]): void {
    for (const m of messages) {
      if (m.clientId && this.userIds.has(m.from?.id)) this.rememberOwn(m);
      for (const handler of [...this.messageHandlers]) {
        try {
          handler(m);
        } catch (err) {
          // Like an event listener that throws: reported, and the stream goes on.
          queueMicrotask(() => {
            throw err;
          });
        }
      }
    }
  }

  private rememberOwn(m: Message): void {
    const key = m.clientId!;
    this.ownByClientId.delete(key);
    this.ownByClientId.set(key, m);
    if (this.ownByClientId.size > OWN_REMEMBERED) {
      this.ownByClientId.delete(this.ownByClientId.keys().next().value as string);
    }
  }

  private reportRecoveryError(err: PalaverError): void {
    for (const handler of [...this.recoveryErrorHandlers]) {
      try {
        handler(err);
      } catch (e) {
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }

  /** Whether async work started at `epoch` may go on: same connection, still connected. */
  private current(epoch: number): boolean {
    return epoch === this.epoch && this.ready && !this.closed;
  }

  /** Catches up every followed room (a reconnection, or `catchUp()`). Never rejects. */
  private startCatchUp(): Promise<void> {
    const rooms = this.roomStates.rooms();
    const guest = this._user?.anonymous ?? false;
    return this.runCatchUp(rooms, (epoch) =>
      guest ? Promise.all(rooms.map((r) => this.rejoinSince(r, epoch))).then(() => {}) : this.syncRooms(rooms, epoch),
    );
  }

  /**
   * Runs `work` (started synchronously) with `rooms` marked as catching up: no gap fill for them meanwhile, then
   * a gap fill where something is still held. Never rejects.
   */
  private runCatchUp(rooms: readonly RoomId[], work: (epoch: number) => Promise<void>): Promise<void> {
    const epoch = this.epoch;
    const entries = rooms.map((r) => this.roomStates.entry(r)).filter((e) => e !== undefined);
    for (const e of entries) {
      e.catchingUp++;
      if (e.gapTimer) clearTimeout(e.gapTimer);
      e.gapTimer = undefined;
    }
    let started: Promise<void>;
    try {
      started = work(epoch);
    } catch (err) {
      started = Promise.reject(err);
    }
    const done: Promise<void> = started
      .catch((err: unknown) => {
        if (!(err instanceof PalaverError && err.code === "disconnected")) {
          this.reportRecoveryError(
            err instanceof PalaverError ? err : new PalaverError("internal", `catch-up failed: ${String(err)}`, { cause: err }),
          );
        }
      })
      .finally(() => {
        for (const e of entries) e.catchingUp--;
        for (const r of rooms) this.scheduleGapFill(r);
        this.catchUps.delete(done);
      });
    this.catchUps.add(done);
    return done;
  }

  /** A signed-in user: `sync` every room (chunks of SYNC_CHUNK, halved on too_large), then page truncated rooms. */
  private async syncRooms(rooms: readonly RoomId[], epoch: number): Promise<void> {
    const chunks: RoomId[][] = [];
    for (let i = 0; i < rooms.length; i += SYNC_CHUNK) chunks.push(rooms.slice(i, i + SYNC_CHUNK));
    await Promise.all(chunks.map((chunk) => this.syncChunk(chunk, epoch)));
  }

  private async syncChunk(chunk: readonly RoomId[], epoch: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (!this.current(epoch)) return;
      const since: Record<RoomId, SyncCursor> = {};
      for (const room of chunk) {
        const entry = this.roomStates.entry(room);
        if (entry) since[room] = this.changeFeed.syncCursor(room, entry.lastSeq);
      }
      if (Object.keys(since).length === 0) return;
      let res: SyncReply;
      try {
        res = await this.request<SyncReply>("sync", { rooms: since });
      } catch (err) {
        if (isCode(err, "too_large") && chunk.length > 1) {
          const half = Math.ceil(chunk.length / 2);
          await Promise.all([this.syncChunk(chunk.slice(0, half), epoch), this.syncChunk(chunk.slice(half), epoch)]);
          return;
        }
        if (await this.retryAfter(err, undefined, epoch, attempt)) continue;
        return;
      }
      const paging: Promise<void>[] = [];
      const moreChanges: RoomId[] = [];
      for (const [room, result] of Object.entries(res.rooms ?? {})) {
        if (!this.roomStates.has(room)) continue;
        if (result && "error" in result) {
          this.giveUpRoom(room, new PalaverError(result.error.code, result.error.message, { event: "sync", room }));
          continue;
        }
        this.deliver(room, result.messages ?? []);
        this.handOver(this.changeFeed.caughtUp(room, result));
        if (result.truncated) paging.push(this.pageAfter(room, epoch));
        if (result.changesTruncated) moreChanges.push(room);
      }
      await Promise.all(paging);
      // More changes than one reply holds: the same rooms again, from the revision reached.
      if (moreChanges.length > 0) await this.syncChunk(moreChanges, epoch);
      return;
    }
  }

  /** A guest (new user id on every connection): `room:join { room, since }` again, then page if truncated. */
  private async rejoinSince(room: RoomId, epoch: number): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const entry = this.roomStates.entry(room);
      if (!entry || !this.current(epoch)) return;
      let res: RoomJoinReply;
      try {
        const rev = this.changeFeed.cursor(room);
        res = await this.request<RoomJoinReply>("room:join", {
          room,
          since: entry.lastSeq,
          ...(rev === undefined ? {} : { rev }),
        });
      } catch (err) {
        if (await this.retryAfter(err, room, epoch, attempt)) continue;
        return;
      }
      this.deliver(room, res.history ?? []);
      this.handOver(this.changeFeed.caughtUp(room, res));
      if (res.truncated) await this.pageAfter(room, epoch);
      return;
    }
  }

  /** Pages `history:fetch { after: lastSeq }` until the server has nothing more. */
  private async pageAfter(room: RoomId, epoch: number): Promise<void> {
    for (let attempt = 0; ; ) {
      const entry = this.roomStates.entry(room);
      if (!entry || !this.current(epoch)) return;
      const before = entry.lastSeq;
      let page: HistoryFetchReply;
      try {
        page = await this.request<HistoryFetchReply>("history:fetch", { room, after: before, limit: PAGE_LIMIT });
      } catch (err) {
        if (await this.retryAfter(err, room, epoch, attempt++)) continue;
        return;
      }
      attempt = 0;
      this.deliver(room, page.messages ?? []);
      if (!page.hasMore || (page.messages ?? []).length === 0) return;
    }
  }

  /** Schedules a gap fill of `room` if it holds messages above a gap and nothing else is filling it. */
  private scheduleGapFill(room: RoomId): void {
    const entry = this.roomStates.entry(room);
    if (!entry || entry.held.size === 0 || entry.catchingUp > 0 || entry.filling || entry.gapTimer) return;
    if (!this.ready || this.closed) return; // the next connection's catch-up fills it
    entry.gapTimer = setTimeout(() => {
      entry.gapTimer = undefined;
      if (this.roomStates.entry(room) === entry) void this.fillGap(room);
    }, this.gapTimeout);
  }

  /** `history:fetch { after: lastSeq }` until nothing is held any more (or the gap proves unrecoverable). */
  private async fillGap(room: RoomId): Promise<void> {
    const entry = this.roomStates.entry(room);
    if (!entry || entry.held.size === 0 || entry.catchingUp > 0 || entry.filling || !this.ready) return;
    const epoch = this.epoch;
    entry.filling = true;
    try {
      for (let attempt = 0; entry.held.size > 0; ) {
        if (!this.current(epoch) || this.roomStates.entry(room) !== entry) return;
        // Held now means committed before the fetch is sent: history must have everything below these.
        const heldAtSend = [...entry.held.keys()];
        let page: HistoryFetchReply;
        try {
          page = await this.request<HistoryFetchReply>("history:fetch", {
            room,
            after: entry.lastSeq,
            limit: PAGE_LIMIT,
          });
        } catch (err) {
          if (await this.retryAfter(err, room, epoch, attempt++)) continue;
          return;
        }
        attempt = 0;
        if (this.roomStates.entry(room) !== entry) return;
        this.dispatch(this.roomStates.ingest(room, page.messages ?? []));
        if (page.hasMore) continue;
        if (heldAtSend.some((seq) => entry.held.has(seq))) {
          // History had everything up to the end when it answered, yet not the seqs below these: they cannot be
          // recovered (a namespace that keeps no history). Go on after them.
          const skipped = this.roomStates.skipGap(room);
          if (skipped) {
            this.reportRecoveryError(
              new PalaverError(
                "not_found",
                `messages ${skipped.from}–${skipped.to} of room ${room} are not in its history (a namespace that keeps no history?); skipped`,
                { event: "history:fetch", room },
              ),
            );
            this.dispatch(skipped.delivered);
          }
        }
        // Whatever is held now arrived during the fetch: it gets its gapTimeout (scheduled below).
        return;
      }
    } finally {
      entry.filling = false;
      if (this.roomStates.entry(room) === entry) this.scheduleGapFill(room);
    }
  }

  /**
   * After a failed catch-up request: `true` to try again (a transient error, after a back-off on the same
   * connection), `false` to stop (the connection dropped, so the next one catches up; or the room cannot be read
   * any more, so it is no longer followed).
   */
  private async retryAfter(err: unknown, room: RoomId | undefined, epoch: number, attempt: number): Promise<boolean> {
    if (!this.current(epoch) || isCode(err, "disconnected")) return false;
    const e =
      err instanceof PalaverError ? err : new PalaverError("internal", String(err), { cause: err });
    const transient = ["timeout", "unavailable", "rate_limited", "internal"].includes(e.code);
    if (!transient) {
      if (room !== undefined) this.giveUpRoom(room, e);
      else this.reportRecoveryError(e);
      return false;
    }
    this.reportRecoveryError(
      room === undefined || e.room !== undefined ? e : new PalaverError(e.code, e.message, { event: e.event, room, cause: e }),
    );
    await this.sleep(Math.min(5000, 250 * 2 ** Math.min(attempt, 5)));
    return this.current(epoch);
  }

  /** The room cannot be read any more (forbidden, not_found…): stop following it and say why. */
  private giveUpRoom(room: RoomId, err: PalaverError): void {
    this.roomStates.forget(room);
    this.changeFeed.forget(room);
    this.reportRecoveryError(
      err.room === room ? err : new PalaverError(err.code, err.message, { event: err.event, room, cause: err }),
    );
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.sleepers.add(wake);
    });
  }

  /** The next of `urls`, for the next connection attempt. */
  private nextUrl(): void {
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    // socket.io-client's Manager opens every engine on `uri` (host, port, scheme are read from it each time).
    (this.socket.io as unknown as { uri: string }).uri = namespaceUrl(this.url, this.namespace);
  }

  // -------------------------------------------------------------------------------------------
  // internals: calls

  /** The connection has ended for good: remember why and fail every waiting call. */
  private end(err: PalaverError): void {
    this.terminal = this.closed ? (this.terminal ?? err) : err;
    this.epoch++;
    this.ready = false;
    this.roomStates.clearTimers();
    for (const wake of [...this.sleepers]) wake();
    this.rejectSession(this.terminal);
    for (const abort of [...this.aborts]) abort(this.terminal);
    this.setStatus("closed");
  }

  /** `promise`, or a rejection as soon as the connection ends for good. */
  private abortable<T>(promise: Promise<T>, onAbort?: () => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const abort = (err: PalaverError) => {
        this.aborts.delete(abort);
        onAbort?.();
        reject(err);
      };
      this.aborts.add(abort);
      promise.then(
        (value) => {
          this.aborts.delete(abort);
          resolve(value);
        },
        (err: unknown) => {
          this.aborts.delete(abort);
          reject(err);
        },
      );
    });
  }

  /**
   * Resolves once the socket is connected and its `session` has arrived (so a signed-in user's rooms are re-entered);
   * waits through reconnections; rejects if the connection ends for good.
   */
  private whenReady(): Promise<void> {
    if (this.ready && this.socket.connected) return Promise.resolve();
    if (this.terminal) return Promise.reject(this.terminal);
    let wake!: () => void;
    const ready = new Promise<void>((resolve) => {
      wake = () => {
        this.readyWaiters.delete(wake);
        resolve();
      };
      this.readyWaiters.add(wake);
    });
    return this.abortable(ready, () => this.readyWaiters.delete(wake));
  }

  /** One emit with an ack, no resend. Rejects with a PalaverError (error ack, `timeout`, `disconnected`). */
  private async request<T>(event: keyof ClientToServerEvents, payload: object): Promise<T> {
    if (this.terminal && !this.socket.connected) throw this.terminal;
    let res: unknown;
    try {
      res = await this.abortable(this.emitWithAck(event, payload));
    } catch (err) {
      throw ackFailure(err, event, this.ackTimeout);
    }
    return unwrap<T>(event, res);
  }

  /**
   * A send with resends. Each attempt waits until the socket is connected and has its `session` (however long a
   * reconnection takes), emits the same payload (same clientId) and waits `ackTimeout` for the ack. An attempt
   * without an ack (timed out, or the connection dropped first) is followed by another, up to `retries` more; then
   * `timeout`. An error ack is final. socket.io-client's own `retries` option is not used: it queues every emit of
   * the socket behind the one in flight and changes every ack callback to `(err, res)`.
   *
   * Before a resend, a message of this client with the same clientId that the catch-up brought back settles the
   * send without sending again (for a guest, whose new user id after a reconnection would not be deduplicated, the
   * resend waits for the catch-up).
   */
  private async sendWithResend(event: SendEvent, payload: { clientId: string }): Promise<Message> {
    for (let attempt = 0; ; ) {
      await this.whenReady();
      if (attempt > 0) {
        if (this.catchUps.size > 0 && this._user?.anonymous) {
          await this.abortable(Promise.all([...this.catchUps]));
          if (!this.ready || !this.socket.connected) continue; // dropped again: wait for the next connection
        }
        const stored = this.ownByClientId.get(payload.clientId);
        if (stored) return stored;
      }
      let res: unknown;
      try {
        res = await this.abortable(this.emitWithAck(event, payload));
      } catch (err) {
        if (err instanceof PalaverError) throw err; // the connection ended for good
        if (attempt < this.retries) {
          attempt++;
          continue;
        }
        const e = ackFailure(err, event, this.ackTimeout);
        throw new PalaverError("timeout", `${event}: no ack after ${attempt + 1} attempts of ${this.ackTimeout} ms`, {
          event,
          cause: e,
        });
      }
      return unwrap<MessageSendReply>(event, res).message;
    }
  }

  private emitWithAck(event: string, payload: object): Promise<unknown> {
    return (this.socket as unknown as LooseSocket).timeout(this.ackTimeout).emitWithAck(event, payload);
  }
}

function isCode(err: unknown, code: string): boolean {
  return err instanceof PalaverError && err.code === code;
}

/** `{ ok: true, ...data }` → data; `{ ok: false, error }` → throws PalaverError(error.code). */
function unwrap<T>(event: string, res: unknown): T {
  const ack = res as Ack<T> | null | undefined;
  if (ack && typeof ack === "object") {
    if (ack.ok === true) {
      const { ok: _ok, ...data } = ack;
      return data as unknown as T;
    }
    if (ack.ok === false && ack.error && typeof ack.error === "object") {
      throw new PalaverError(ack.error.code, ack.error.message, { event });
    }
  }
  throw new PalaverError("internal", `${event}: malformed ack ${JSON.stringify(res)}`, { event });
}

function namespaceUrl(url: string, namespace: string | undefined): string {
  if (!namespace || namespace === "/") return url;
  const ns = namespace.startsWith("/") ? namespace : `/${namespace}`;
  return `${url.replace(/\/+$/, "")}${ns}`;
}
