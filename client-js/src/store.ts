// Held state over a client: what a chat UI renders, kept consistent as events arrive and across reconnections.
//
//   const store = ChatStore.of(client);
//   const stop = store.subscribeRoom("general", () => render(store.roomView("general")));
//   await store.send("general", "hello");   // shown at once as pending, then as the stored message
//
// For each room shown (`watch`/`subscribeRoom`): its messages (the latest on joining, older ones on `loadOlder`,
// every later one from `onMessage`), this client's sends pending until their ack, edits, deletions and reactions
// applied to the messages held, who is online and typing. For every room of the user: unread counters. And the
// room list and the connection. Every view is an immutable snapshot, replaced on change, so React's
// `useSyncExternalStore` (the bindings in `@palaver/client/react`) or any other renderer can compare by reference.
//
// After a reconnection the client's catch-up brings the missed messages and the change feed (`onChange`): each held
// message edited, deleted or reacted to meanwhile comes in its current state and replaces the one held, without
// reading history again; the store re-reads who is online and the room list, and takes the unread counters from
// the new session. The user's role in each room (and whether they are a namespace admin) follows `session`,
// `rooms:list`, the join and `room:moderation`; leaving a room, or being kicked or banned from it, takes it out of
// the store's state, and the room's view says why (`left`).

import { PalaverError } from "./errors.js";
import { newClientId } from "./ids.js";
import type { ConnectionStatus, PalaverClient, RoomSendOptions } from "./index.js";
import type { MessageChange } from "./changes.js";
import type {
  Message,
  ModerationEvent,
  ReactionEvent,
  ReadEvent,
  RoomId,
  RoomKind,
  RoomNotice,
  RoomRole,
  RoomSummary,
  Session,
  TypingEvent,
  User,
  UserId,
} from "./protocol.js";
import { Timeline, type Departure, type LoadStatus, type PendingMessage, type TimelineMessage } from "./timeline.js";
import { ReadStates } from "./unread.js";

export type { Departure, LoadStatus, PendingMessage, SentMessage, TimelineMessage } from "./timeline.js";

/** Everything about one room a UI shows. */
export interface RoomView {
  room: RoomId;
  /**
   * `loading` until the room is joined, `error` if that failed (`error` says why; retried on reconnection), `left`
   * once the user left it or a moderator removed them (`left` says how; `rejoin` joins again).
   */
  status: LoadStatus;
  error: PalaverError | undefined;
  /** Stored messages in seq order, then this client's pending and failed sends in the order they were made. */
  messages: readonly TimelineMessage[];
  /** Older messages than the first held exist (`loadOlder`). */
  hasMore: boolean;
  loadingOlder: boolean;
  /** Users online in the room. */
  members: readonly User[];
  /** Other users typing in the room now. */
  typing: readonly User[];
  /** Messages of others after `lastRead`. */
  unread: number;
  /** The last seq the user has read. */
  lastRead: number;
  /** The user's role in a group room (from the join, `session`, `rooms:list`, `room:moderation`); none in a DM. */
  role: RoomRole | undefined;
  /**
   * The user moderates the room: a group room's owner or moderator, or a namespace admin. They may delete any
   * message, kick, ban and mute (the server decides; this is for showing the controls).
   */
  moderator: boolean;
  /** Why the room is `left`: the user left it (`leave`), or a moderator kicked or banned them (`by`, `until`). */
  left: Departure | undefined;
}

export interface RoomsView {
  status: LoadStatus;
  error: PalaverError | undefined;
  /** The user's rooms and DMs and every public room, most recently active first, with live unread counters. */
  rooms: readonly RoomSummary[];
}

export interface ConnectionView {
  status: ConnectionStatus;
  /** The current user (from the latest `session`). */
  user: User | undefined;
  /** The user is a namespace admin (from the latest `session`): they moderate every group room. */
  admin: boolean;
  /**
   * While not connected: the last failed connection attempt (`connect_failed`…); once `closed`: what ended it.
   */
  error: PalaverError | undefined;
}

export interface ChatStoreOptions {
  /** Milliseconds a room stays held after its last watcher left (a remount takes it back as it was), default 2000. */
  roomKeepAlive?: number;
  /** Milliseconds a user stays in `typing` after their last `typing` event, default 5000. */
  typingTimeout?: number;
  /** Minimum milliseconds between two `typing` events `notifyTyping` sends for one room, default 2000. */
  typingInterval?: number;
}

/** How many messages one `loadOlder` asks for. */
const OLDER_PAGE = 50;

const stores = new WeakMap<PalaverClient, ChatStore>();
const noop = () => {};

/**
 * The held state of one client (one per client: {@link ChatStore.of}). Subscriptions return unsubscribe functions;
 * views are immutable snapshots replaced on every change.
 */
export class ChatStore {
  /** The store of `client`, made on first use (`options` count only then). */
  static of(client: PalaverClient, options?: ChatStoreOptions): ChatStore {
    let store = stores.get(client);
    if (!store) {
      store = new ChatStore(client, options);
      stores.set(client, store);
    }
    return store;
  }

  private readonly roomKeepAlive: number;
  private readonly typingTimeout: number;
  private readonly typingInterval: number;
  private readonly timelines = new Map<RoomId, Timeline>();
  private readonly idleViews = new Map<RoomId, RoomView>();
  private readonly reads = new ReadStates();
  /** The view of each held room, until it changes. */
  private readonly views = new Map<Timeline, RoomView>();
  /** Every user id this client has had (a guest gets a new one per connection). */
  private readonly myIds = new Set<UserId>();
  /** The user's role per group room, and each room's kind, as last heard. */
  private readonly roles = new Map<RoomId, RoomRole>();
  private readonly kinds = new Map<RoomId, RoomKind>();
  private admin = false;
  private readonly lastTypingSent = new Map<RoomId, number>();
  private roomList: RoomSummary[] | undefined;
  private roomsStatus: LoadStatus = "loading";
  private roomsError: PalaverError | undefined;
  private roomsLoad: Promise<void> | undefined;
  private roomsStale = false;
  /** Rooms whose message made the store read the list again: once each, in case the list never has them. */
  private readonly roomsLookedFor = new Set<RoomId>();
  private roomsCache: RoomsView | undefined;
  private readonly roomsListeners = new Set<() => void>();
  private connectError: PalaverError | undefined;
  private connectionView: ConnectionView | undefined;
  private readonly connectionListeners = new Set<() => void>();
  /** Sessions seen: the second and later are reconnections. */
  private sessions = 0;
  private readonly detach: Array<() => void>;
  private disposed = false;

  private constructor(
    readonly client: PalaverClient,
    options: ChatStoreOptions = {},
  ) {
    this.roomKeepAlive = options.roomKeepAlive ?? 2000;
    this.typingTimeout = options.typingTimeout ?? 5000;
    this.typingInterval = options.typingInterval ?? 2000;
    if (client.user) this.myIds.add(client.user.id);
    this.detach = [
      client.onMessage((m) => this.onMessage(m)),
      client.on("session", (s) => this.onSession(s)),
      client.onStatus((status) => this.onStatus(status)),
      client.onConnectError((err) => {
        this.connectError = err;
        this.connectionChanged();
      }),
      // Edits, deletes, reactions and reads, live and from the catch-up, through the client's change feed: it
      // drops a live change older than one already applied (by `rev`).
      client.onChange((c) => this.onChange(c)),
      client.on("typing", (e: TypingEvent) => this.onTyping(e)),
      client.on("room:notice", (n: RoomNotice) => this.onNotice(n)),
      client.on("room:moderation", (e: ModerationEvent) => this.onModeration(e)),
    ];
    // A session that arrived before the store was made: its rooms' counters.
    void client.session.then(
      (s) => {
        if (this.sessions === 0) this.onSession(s);
      },
      noop,
    );
  }

  // -------------------------------------------------------------------------------------------
  // rooms: subscriptions and views

  /**
   * Holds `room` (joins it on first watch, once connected) until the returned function is called; then it is kept
   * `roomKeepAlive` ms more, so an unmount and remount (React StrictMode, Fast Refresh) joins once.
   */
  watch(room: RoomId): () => void {
    const t = this.timeline(room);
    t.watchers++;
    if (t.keepAlive) clearTimeout(t.keepAlive);
    t.keepAlive = undefined;
    let watching = true;
    return () => {
      if (!watching) return;
      watching = false;
      if (--t.watchers === 0 && this.timelines.get(room) === t) {
        t.keepAlive = setTimeout(() => this.drop(t), this.roomKeepAlive);
      }
    };
  }

  /** Watches `room` and calls `listener` on every change of {@link roomView}. Returns an unsubscribe function. */
  subscribeRoom(room: RoomId, listener: () => void): () => void {
    const release = this.watch(room);
    const t = this.timelines.get(room)!;
    const entry = () => listener();
    t.listeners.add(entry);
    return () => {
      t.listeners.delete(entry);
      release();
    };
  }

  /** The room as held now (a `loading` view with nothing in it when it is not held). */
  roomView(room: RoomId): RoomView {
    const t = this.timelines.get(room);
    if (!t) return this.idleView(room);
    let view = this.views.get(t);
    if (!view) {
      const read = this.reads.get(room);
      view = {
        room,
        status: t.status,
        error: t.error,
        messages: [...t.ordered(), ...t.pending.values()],
        hasMore: t.hasMore,
        loadingOlder: t.olderLoad !== undefined,
        members: [...t.members.values()],
        typing: [...t.typers.values()].map((x) => x.user),
        unread: read?.unread ?? 0,
        lastRead: read?.lastRead ?? 0,
        ...this.standing(room),
        left: t.left,
      };
      this.views.set(t, view);
    }
    return view;
  }

  /** The rooms held now (watched, or kept alive after their last watcher). */
  heldRooms(): RoomId[] {
    return [...this.timelines.keys()];
  }

  /** How many listeners the store has (rooms, room list, connection): for tests and dev tools. */
  get subscriberCount(): number {
    let n = this.roomsListeners.size + this.connectionListeners.size;
    for (const t of this.timelines.values()) n += t.listeners.size;
    return n;
  }

  /**
   * Sends `text` to `room`: a pending message shows at once, replaced by the stored message on the ack (or marked
   * failed). With a `clientId` already used, nothing is sent twice: a send in flight is shared, and a failed one is
   * sent again. Waits for the room to be joined (it is held meanwhile); a room the user is out of (`left`) refuses
   * it at once (`forbidden`, nothing shown). The returned promise may be left
   * unawaited: its rejection is not reported as unhandled (the failure shows in the view).
   */
  send(room: RoomId, text: string, options: RoomSendOptions = {}): Promise<Message> {
    const clientId = options.clientId ?? newClientId();
    const t = this.timeline(room);
    if (t.status === "left") {
      // Out of the room (left, kicked, banned): nothing to show as pending; `rejoin` first.
      const refused = Promise.reject(leftError(room));
      refused.catch(noop);
      return refused;
    }
    const inflight = t.inflight.get(clientId);
    if (inflight) return inflight;
    const stored = [...t.sent.values()].find((m) => m.clientId === clientId && this.myIds.has(m.from.id));
    if (stored) return Promise.resolve(stored);

    const release = this.watch(room);
    const user = this.client.user;
    const before = t.pending.get(clientId);
    const pending: PendingMessage = {
      status: "pending",
      key: before?.key ?? clientId,
      clientId,
      room,
      text,
      from: { id: user?.id ?? "", name: user?.name ?? "" },
      at: before?.at ?? new Date().toISOString(),
    };
    if (options.replyTo !== undefined) pending.replyTo = options.replyTo;
    t.pending.delete(clientId); // a resend of a failed one moves to the end, as a new send would
    t.pending.set(clientId, pending);
    this.roomChanged(t);

    const sendOptions: RoomSendOptions = { clientId };
    if (options.replyTo !== undefined) sendOptions.replyTo = options.replyTo;
    const promise = this.whenRoomReady(t)
      .then(() => this.client.send(room, text, sendOptions))
      .then(
        (message) => {
          this.insert(message);
          return message;
        },
        (err: unknown) => {
          const still = t.pending.get(clientId);
          if (still === pending) {
            const error =
              err instanceof PalaverError ? err : new PalaverError("internal", String(err), { cause: err });
            t.pending.set(clientId, { ...pending, status: "failed", error });
            this.roomChanged(t);
          }
          throw err;
        },
      )
      .finally(() => {
        if (t.inflight.get(clientId) === promise) t.inflight.delete(clientId);
        release();
      });
    t.inflight.set(clientId, promise);
    promise.catch(noop);
    return promise;
  }

  /** Removes a failed (or pending) send from the view; a send still in flight may yet be stored. */
  discard(room: RoomId, clientId: string): void {
    const t = this.timelines.get(room);
    if (t?.pending.delete(clientId)) this.roomChanged(t);
  }

  /** Loads the page of messages before the oldest held. Resolves once done; one load at a time. */
  loadOlder(room: RoomId, limit = OLDER_PAGE): Promise<void> {
    const t = this.timelines.get(room);
    if (!t) return Promise.resolve();
    if (t.olderLoad) return t.olderLoad;
    const load = (async () => {
      await this.whenRoomReady(t);
      const before = t.oldestSeq();
      if (before === undefined) {
        t.hasMore = false;
        return;
      }
      const page = await this.client.history(room, { before, limit });
      for (const m of page.messages) t.insert(m, this.mine(m));
      t.hasMore = page.hasMore;
    })().finally(() => {
      t.olderLoad = undefined;
      this.roomChanged(t);
    });
    t.olderLoad = load;
    this.roomChanged(t);
    load.catch(noop);
    return load;
  }

  /** Edits a message (the user's own) and applies the result. */
  async edit(room: RoomId, seq: number, text: string): Promise<Message> {
    const message = await this.client.editMessage(room, seq, text);
    this.applyUpdate(message);
    return message;
  }

  /** Deletes a message (the user's own, or anyone's where the user moderates the room) and applies it. */
  async remove(room: RoomId, seq: number): Promise<void> {
    await this.client.deleteMessage(room, seq);
    this.applyDelete(room, seq);
  }

  /**
   * Leaves `room` for good (`room:leave`: the membership goes, on every device): the room leaves the store's state
   * (its messages, unread counter and role; a private room or DM leaves the list too), and a view still watching it
   * shows `status: "left"` until `rejoin` or until nobody watches it.
   */
  async leave(room: RoomId): Promise<void> {
    await this.client.leave(room);
    this.departed(room, { kind: "leave", at: new Date().toISOString() });
  }

  /**
   * Removes `user` from `room` (a moderator's `room:kick`): they leave its online members here at once (the server
   * tells everyone else, not the socket that acted).
   */
  async kick(room: RoomId, user: UserId): Promise<void> {
    await this.client.kick(room, user);
    this.removeMember(room, user);
  }

  /** Bans `user` from `room` until `until` (else until unbanned), removing them from its online members. */
  async ban(room: RoomId, user: UserId, until?: Date | string): Promise<void> {
    await this.client.ban(room, user, until);
    this.removeMember(room, user);
  }

  /** Joins a `left` room again (a kick can be undone this way; a ban until it ends is refused: see the view's error). */
  rejoin(room: RoomId): void {
    const t = this.timelines.get(room);
    if (!t || t.status !== "left") return;
    t.left = undefined;
    this.setRoomStatus(t, "loading");
    void this.load(t);
  }

  /**
   * Adds (`add: true`) or removes the user's `emoji` reaction to a message; without `add`, toggles it (adds unless
   * the held message already has the user's reaction).
   */
  async react(room: RoomId, seq: number, emoji: string, add?: boolean): Promise<void> {
    const mine = this.timelines.get(room)?.sent.get(seq)?.reactions?.find((r) => r.emoji === emoji)?.me ?? false;
    const adding = add ?? !mine;
    if (adding) await this.client.addReaction(room, seq, emoji);
    else await this.client.removeReaction(room, seq, emoji);
    if (this.timelines.get(room)?.react(seq, emoji, true, adding)) this.roomChanged(this.timelines.get(room)!);
  }

  /**
   * Marks `room` read up to `seq` (default: the newest message held or known). The counters change at once; a seq
   * at or below the last read does nothing.
   */
  async markRead(room: RoomId, seq?: number): Promise<void> {
    const upTo = seq ?? Math.max(this.timelines.get(room)?.newestSeq() ?? 0, this.reads.get(room)?.lastSeq ?? 0);
    if (!(upTo > (this.reads.get(room)?.lastRead ?? 0))) return;
    this.applyRead(room, upTo);
    await this.client.markRead(room, upTo);
  }

  /** Tells the others in `room` that the user is typing, at most once per `typingInterval`. */
  notifyTyping(room: RoomId): void {
    const now = Date.now();
    if (now - (this.lastTypingSent.get(room) ?? -Infinity) < this.typingInterval) return;
    this.lastTypingSent.set(room, now);
    this.client.typing(room);
  }

  // -------------------------------------------------------------------------------------------
  // the room list and the connection

  /** Calls `listener` on every change of {@link roomsView}; loads the list on first use. */
  subscribeRooms(listener: () => void): () => void {
    const entry = () => listener();
    this.roomsListeners.add(entry);
    if (this.roomList === undefined && !this.roomsLoad) void this.refreshRooms();
    return () => {
      this.roomsListeners.delete(entry);
    };
  }

  roomsView(): RoomsView {
    if (!this.roomsCache) {
      const rooms = (this.roomList ?? []).map((r) => {
        const read = this.reads.get(r.id);
        const role = this.roles.get(r.id) ?? r.role;
        const withRole = role === r.role ? r : { ...r, role };
        if (!read) return withRole;
        return { ...withRole, lastSeq: Math.max(r.lastSeq, read.lastSeq), lastRead: read.lastRead, unread: read.unread };
      });
      this.roomsCache = { status: this.roomsStatus, error: this.roomsError, rooms };
    }
    return this.roomsCache;
  }

  /** Reads the room list again (`rooms:list`); also done after every reconnection. */
  refreshRooms(): Promise<void> {
    if (this.roomsLoad) {
      this.roomsStale = true;
      return this.roomsLoad;
    }
    const load = (async () => {
      try {
        await this.whenConnected();
        const rooms = await this.client.rooms();
        for (const r of rooms) if (this.reads.rebase(r)) this.readChanged(r.id);
        for (const r of rooms) this.learnRole(r.id, r.kind, r.role);
        this.roomList = rooms;
        this.roomsStatus = "ready";
        this.roomsError = undefined;
      } catch (err) {
        this.roomsError = err instanceof PalaverError ? err : new PalaverError("internal", String(err), { cause: err });
        if (this.roomList === undefined) this.roomsStatus = "error";
      }
    })().finally(() => {
      this.roomsLoad = undefined;
      this.roomsChanged();
      if (this.roomsStale) {
        this.roomsStale = false;
        void this.refreshRooms();
      }
    });
    this.roomsLoad = load;
    return load;
  }

  subscribeConnection(listener: () => void): () => void {
    const entry = () => listener();
    this.connectionListeners.add(entry);
    return () => {
      this.connectionListeners.delete(entry);
    };
  }

  connection(): ConnectionView {
    if (!this.connectionView) {
      const status = this.client.status;
      this.connectionView = {
        status,
        user: this.client.user,
        admin: this.admin,
        error: status === "closed" ? this.client.error : status === "connected" ? undefined : this.connectError,
      };
    }
    return this.connectionView;
  }

  /** Stops following the client's events and clears every timer; views stay as they are. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const off of this.detach) off();
    for (const t of this.timelines.values()) {
      if (t.keepAlive) clearTimeout(t.keepAlive);
      t.clearTyping();
    }
  }

  // -------------------------------------------------------------------------------------------
  // internals: rooms held

  private timeline(room: RoomId): Timeline {
    let t = this.timelines.get(room);
    if (!t) {
      t = new Timeline(room);
      this.timelines.set(room, t);
      this.idleViews.delete(room);
      void this.load(t);
    }
    return t;
  }

  private idleView(room: RoomId): RoomView {
    let view = this.idleViews.get(room);
    if (!view) {
      const read = this.reads.get(room);
      view = {
        room,
        status: "loading",
        error: undefined,
        messages: [],
        hasMore: false,
        loadingOlder: false,
        members: [],
        typing: [],
        unread: read?.unread ?? 0,
        lastRead: read?.lastRead ?? 0,
        ...this.standing(room),
        left: undefined,
      };
      this.idleViews.set(room, view);
    }
    return view;
  }

  /** Forgets a room nobody watches any more. */
  private drop(t: Timeline): void {
    if (t.watchers > 0 || this.timelines.get(t.room) !== t) return;
    t.clearTyping();
    this.timelines.delete(t.room);
    this.views.delete(t);
  }

  /** Joins the room (once connected) and takes its latest messages, who is online, whether older exist. */
  private async load(t: Timeline): Promise<void> {
    if (t.loading || this.disposed) return;
    t.loading = true;
    if (t.status === "error") this.setRoomStatus(t, "loading");
    try {
      await this.whenConnected();
      const res = await this.client.join(t.room);
      if (this.timelines.get(t.room) !== t || t.status === "left") return;
      this.learnRole(t.room, res.room?.kind, res.role);
      for (const m of res.history) t.insert(m, this.mine(m));
      t.hasMore = res.hasMore;
      t.setMembers(res.members ?? []);
      this.setRoomStatus(t, "ready");
    } catch (err) {
      const error = err instanceof PalaverError ? err : new PalaverError("internal", String(err), { cause: err });
      this.setRoomStatus(t, "error", error);
    } finally {
      t.loading = false;
    }
  }

  private setRoomStatus(t: Timeline, status: LoadStatus, error?: PalaverError): void {
    t.status = status;
    t.error = error;
    if (status !== "loading") {
      for (const w of [...t.readyWaiters]) {
        if (status === "ready") w.resolve();
        else w.reject(error!);
      }
      t.readyWaiters.clear();
    }
    this.roomChanged(t);
  }

  private whenRoomReady(t: Timeline): Promise<void> {
    if (t.status === "ready") return Promise.resolve();
    if (t.status === "left") return Promise.reject(leftError(t.room));
    if (t.status === "error" && !t.loading) void this.load(t);
    return new Promise<void>((resolve, reject) => t.readyWaiters.add({ resolve, reject }));
  }

  /** Resolves once connected with a session; rejects if the connection has ended for good. */
  private whenConnected(): Promise<void> {
    if (this.client.status === "connected") return Promise.resolve();
    if (this.client.status === "closed") {
      return Promise.reject(this.client.error ?? new PalaverError("disconnected", "the client was closed"));
    }
    return new Promise<void>((resolve, reject) => {
      const off = this.client.onStatus((status) => {
        if (status === "connected") {
          off();
          resolve();
        } else if (status === "closed") {
          off();
          reject(this.client.error ?? new PalaverError("disconnected", "the client was closed"));
        }
      });
    });
  }

  /** A stored message into its held room (if held), replacing this client's pending send of it. */
  private insert(m: Message): void {
    const t = this.timelines.get(m.room);
    if (t?.insert(m, this.mine(m))) this.roomChanged(t);
  }

  /** Sent by this client's user (under any of the ids it had). */
  private mine(m: Message): boolean {
    return this.myIds.has(m.from?.id);
  }

  private roomChanged(t: Timeline): void {
    this.views.delete(t);
    for (const listener of [...t.listeners]) listener();
  }

  private roomsChanged(): void {
    this.roomsCache = undefined;
    for (const listener of [...this.roomsListeners]) listener();
  }

  private connectionChanged(): void {
    this.connectionView = undefined;
    for (const listener of [...this.connectionListeners]) listener();
  }

  // -------------------------------------------------------------------------------------------
  // internals: events

  private onMessage(m: Message): void {
    const t = this.timelines.get(m.room);
    const mine = this.mine(m);
    if (this.reads.received(m, mine)) this.readChanged(m.room, false);
    if (t) {
      const inserted = t.insert(m, mine);
      const typed = t.stoppedTyping(m.from?.id);
      if (inserted || typed) this.roomChanged(t);
    }
    if (this.roomList) {
      const i = this.roomList.findIndex((r) => r.id === m.room);
      if (i < 0) {
        // A room new to the list (a first DM, another tab's join).
        if (!this.roomsLookedFor.has(m.room)) {
          this.roomsLookedFor.add(m.room);
          void this.refreshRooms();
        }
      } else {
        const r = this.roomList[i]!;
        this.roomList = [{ ...r, lastSeq: Math.max(r.lastSeq, m.seq) }, ...this.roomList.filter((_, j) => j !== i)];
        this.roomsChanged();
      }
    }
  }

  private onSession(session: Session): void {
    const reconnection = this.sessions > 0;
    this.sessions++;
    if (session?.user) this.myIds.add(session.user.id);
    const adminChanged = this.admin !== (session?.admin === true);
    this.admin = session?.admin === true;
    if (adminChanged) this.idleViews.clear();
    for (const r of session?.rooms ?? []) if (this.reads.rebase(r)) this.readChanged(r.id);
    for (const r of session?.rooms ?? []) this.learnRole(r.id, r.kind, r.role);
    this.connectionChanged();
    if (this.roomList !== undefined) this.roomsChanged();
    for (const t of this.timelines.values()) {
      if (adminChanged) this.roomChanged(t); // `moderator` follows `admin`
      if (t.status === "loading" || t.status === "error") void this.load(t);
      else if (t.status === "ready" && reconnection) void this.refresh(t);
    }
    if (reconnection && (this.roomList !== undefined || this.roomsListeners.size > 0)) void this.refreshRooms();
  }

  private onStatus(status: ConnectionStatus): void {
    if (status === "connected") this.connectError = undefined;
    if (status !== "connected") {
      // Typing indicators of the old connection end; nobody's "typing" comes back on its own.
      for (const t of this.timelines.values()) if (t.clearTyping()) this.roomChanged(t);
    }
    if (status === "closed") {
      // Nothing more will come: waiting sends fail, and no timer of the store outlives the client.
      const err = this.client.error ?? new PalaverError("disconnected", "the client was closed");
      for (const t of this.timelines.values()) {
        for (const w of [...t.readyWaiters]) w.reject(err);
        t.readyWaiters.clear();
        if (t.keepAlive) clearTimeout(t.keepAlive);
        t.keepAlive = undefined;
      }
    }
    this.connectionChanged();
  }

  /**
   * After a reconnection: who is online now. Messages changed meanwhile come from the client's catch-up (`state`
   * changes, applied by `onChange`), new ones from its message stream: nothing of history is read again.
   */
  private async refresh(t: Timeline): Promise<void> {
    const room = t.room;
    try {
      const users = await this.client.presence(room);
      if (this.timelines.get(room) !== t || t.status !== "ready") return;
      t.setMembers(users);
      this.roomChanged(t);
    } catch {
      // The next reconnection tries again; the list stays as it was.
    }
  }

  private onChange(c: MessageChange): void {
    switch (c.type) {
      case "updated":
        return this.applyUpdate(c.message);
      case "deleted":
        return this.applyDelete(c.room, c.seq, c.rev);
      case "reaction":
        return this.onReaction(c);
      case "state": {
        const t = c.message && this.timelines.get(c.message.room);
        if (t?.replace(c.message)) this.roomChanged(t);
        return;
      }
      case "read":
        return this.onRead(c);
      case "readState":
        // The session gave the counters already; a read made since (another device) moves them on.
        if (c.lastRead > (this.reads.get(c.room)?.lastRead ?? 0)) this.applyRead(c.room, c.lastRead);
        return;
    }
  }

  private applyUpdate(m: Message | undefined): void {
    if (!m || typeof m.room !== "string" || !Number.isInteger(m.seq)) return;
    const t = this.timelines.get(m.room);
    if (t?.update(m)) this.roomChanged(t);
  }

  private applyDelete(room: RoomId | undefined, seq: number | undefined, rev?: number): void {
    if (typeof room !== "string" || typeof seq !== "number") return;
    const t = this.timelines.get(room);
    if (t?.delete(seq, rev)) this.roomChanged(t);
  }

  private onReaction(e: ReactionEvent): void {
    if (!e || typeof e.emoji !== "string" || typeof e.room !== "string") return;
    const t = this.timelines.get(e.room);
    if (t?.react(e.seq, e.emoji, this.myIds.has(userIdOf(e.user)), e.added === true, e.rev)) this.roomChanged(t);
  }

  private onRead(e: ReadEvent): void {
    if (!e || typeof e.room !== "string" || !Number.isInteger(e.seq)) return;
    if (this.myIds.has(userIdOf(e.user))) this.applyRead(e.room, e.seq);
  }

  private onTyping(e: TypingEvent): void {
    const t = e && this.timelines.get(e.room);
    const user = e?.user;
    if (!t || !user || this.myIds.has(user.id)) return;
    if (t.typing(user, this.typingTimeout, () => this.roomChanged(t))) this.roomChanged(t);
  }

  private onNotice(n: RoomNotice): void {
    if (!n || typeof n.room !== "string" || !n.user) return;
    if ((n.kind === "kick" || n.kind === "ban") && this.myIds.has(n.user.id)) {
      const left: Departure = { kind: n.kind, at: n.at };
      if (n.by) left.by = n.by;
      if (n.kind === "ban") left.until = n.until ?? null;
      this.departed(n.room, left);
      return;
    }
    const t = this.timelines.get(n.room);
    if (!t || t.status !== "ready") return;
    if (t.notice(n)) this.roomChanged(t);
  }

  /** The user's own role changed (`room:moderation` of action `role` about them). */
  private onModeration(e: ModerationEvent): void {
    if (!e || typeof e.room !== "string" || !this.myIds.has(e.user?.id)) return;
    if (e.action === "role" && (e.role === "moderator" || e.role === "member")) this.learnRole(e.room, "group", e.role);
  }

  // -------------------------------------------------------------------------------------------
  // internals: roles and departures

  private removeMember(room: RoomId, user: UserId): void {
    const t = this.timelines.get(room);
    if (t?.members.delete(user)) this.roomChanged(t);
  }

  /** What the view says about the user's say in `room`. */
  private standing(room: RoomId): { role: RoomRole | undefined; moderator: boolean } {
    const role = this.roles.get(room);
    const group = this.kinds.get(room) === "group";
    return { role, moderator: group && (this.admin || role === "owner" || role === "moderator") };
  }

  /** A room's kind and the user's role in it, as a reply or event says; views change if they differ. */
  private learnRole(room: RoomId, kind: RoomKind | undefined, role: RoomRole | undefined): void {
    let changed = false;
    if ((kind === "group" || kind === "dm") && this.kinds.get(room) !== kind) {
      this.kinds.set(room, kind);
      changed = true;
    }
    if (role !== undefined && this.roles.get(room) !== role) {
      this.roles.set(room, role);
      changed = true;
    }
    if (!changed) return;
    const t = this.timelines.get(room);
    if (t) this.roomChanged(t);
    this.idleViews.delete(room);
    if (this.roomList?.some((r) => r.id === room)) this.roomsChanged();
  }

  /**
   * The user is out of `room` (left, kicked, banned): its messages, counters and role go; a held room shows
   * `left`, sends waiting for it fail; the list no longer has it as the user's (a public room stays listed).
   */
  private departed(room: RoomId, left: Departure): void {
    this.roles.delete(room);
    this.reads.forget(room);
    this.idleViews.delete(room);
    const t = this.timelines.get(room);
    if (t && t.status !== "left") {
      const err = leftError(room);
      for (const w of [...t.readyWaiters]) w.reject(err);
      t.readyWaiters.clear();
      t.leave(left);
      this.roomChanged(t);
    }
    if (this.roomList !== undefined) {
      this.roomList = this.roomList.flatMap((r) => {
        if (r.id !== room) return [r];
        if (r.kind !== "group" || r.visibility !== "public") return [];
        const { role: _role, ...rest } = r;
        return [{ ...rest, member: false, invited: false, lastRead: 0, unread: 0 }];
      });
      this.roomsChanged();
    }
  }

  // -------------------------------------------------------------------------------------------
  // internals: unread counters

  /** The user has read `room` up to `seq` (here or on another device). */
  private applyRead(room: RoomId, seq: number): void {
    const t = this.timelines.get(room);
    const after = (from: number, to: number) =>
      t ? t.countAfter(from, to, (m) => this.mine(m)) : { held: 0, others: 0 };
    if (this.reads.read(room, seq, after)) this.readChanged(room);
  }

  private readChanged(room: RoomId, listChanged = true): void {
    const t = this.timelines.get(room);
    if (t) this.roomChanged(t);
    this.idleViews.delete(room);
    if (this.roomList !== undefined && (listChanged || this.roomList.some((r) => r.id === room))) this.roomsChanged();
  }
}

/** Why a send to a room the user is out of fails. */
function leftError(room: RoomId): PalaverError {
  return new PalaverError("forbidden", `you are no longer in room ${JSON.stringify(room)}: join it again first`, {
    room,
  });
}

/** A user's id, whether the event names the user by id or as a `User`. */
function userIdOf(user: User | UserId | undefined): UserId {
  return (typeof user === "string" ? user : user?.id) ?? "";
}
