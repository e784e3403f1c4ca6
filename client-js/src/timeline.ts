// The held state of one room (its messages, this client's sends before their ack, who is online and typing) and
// the rules that change it: plain code without I/O, used by the store (store.ts).

import type { PalaverError } from "./errors.js";
import type { Message, Reaction, RoomId, RoomNotice, User, UserId } from "./protocol.js";

/** A message the server has stored. */
export interface SentMessage extends Message {
  status: "sent";
  /** Stable across pending → sent: use it as the React key. */
  key: string;
}

/** One of this client's sends, shown before its ack: `pending`, or `failed` (send again with its `clientId`). */
export interface PendingMessage {
  status: "pending" | "failed";
  key: string;
  clientId: string;
  room: RoomId;
  text: string;
  from: { id: UserId; name: string };
  /** When it was sent, RFC 3339. */
  at: string;
  replyTo?: number;
  /** Why it failed (`status: "failed"`). */
  error?: PalaverError;
}

export type TimelineMessage = SentMessage | PendingMessage;

export type LoadStatus = "loading" | "ready" | "error" | "left";

/** How the user came to be out of a room: they left it, or a moderator kicked or banned them. */
export interface Departure {
  kind: "leave" | "kick" | "ban";
  /** The moderator, for a kick or a ban. */
  by?: { id: UserId; name: string };
  /** For a ban: until when (RFC 3339), null until lifted. */
  until?: string | null;
  /** RFC 3339. */
  at: string;
}

interface Typer {
  user: User;
  timer: ReturnType<typeof setTimeout>;
}

/** One room as held: what `RoomView` shows, plus the bookkeeping of the store. */
export class Timeline {
  /** Stored messages by seq. */
  readonly sent = new Map<number, SentMessage>();
  /** This client's sends without an ack yet (or failed), by clientId, in the order they were made. */
  readonly pending = new Map<string, PendingMessage>();
  /** The sends in flight by clientId: a second call with the same clientId shares the first's promise. */
  readonly inflight = new Map<string, Promise<Message>>();
  readonly members = new Map<UserId, User>();
  /** Per user, the `version` of the last `room:notice` applied. */
  private readonly noticeVersions = new Map<UserId, number>();
  readonly typers = new Map<UserId, Typer>();
  readonly listeners = new Set<() => void>();
  status: LoadStatus = "loading";
  error: PalaverError | undefined;
  /** Why the room is `left`. */
  left: Departure | undefined;
  hasMore = false;
  olderLoad: Promise<void> | undefined;
  /** A join is in flight. */
  loading = false;
  /** Components (and sends) holding the room; at 0 it is dropped after the store's keep-alive. */
  watchers = 0;
  keepAlive: ReturnType<typeof setTimeout> | undefined;
  /** Sends waiting for the room to be joined. */
  readonly readyWaiters = new Set<{ resolve: () => void; reject: (err: PalaverError) => void }>();

  constructor(readonly room: RoomId) {}

  /** Held stored messages, oldest first. */
  ordered(): SentMessage[] {
    return [...this.sent.values()].sort((a, b) => a.seq - b.seq);
  }

  oldestSeq(): number | undefined {
    let min: number | undefined;
    for (const seq of this.sent.keys()) if (min === undefined || seq < min) min = seq;
    return min;
  }

  newestSeq(): number | undefined {
    let max: number | undefined;
    for (const seq of this.sent.keys()) if (max === undefined || seq > max) max = seq;
    return max;
  }

  /**
   * A stored message (from history, the live stream or a send's ack): held unless its seq is, and replacing this
   * client's pending send of it (`mine`: sent by one of the client's user ids), whose key it keeps. Returns whether
   * anything changed.
   */
  insert(m: Message, mine: boolean): boolean {
    if (!m || !Number.isInteger(m.seq)) return false;
    let changed = false;
    let key = m.id;
    if (mine && m.clientId !== undefined) {
      const pending = this.pending.get(m.clientId);
      if (pending) {
        key = pending.key;
        this.pending.delete(m.clientId);
        changed = true;
      }
    }
    if (!this.sent.has(m.seq)) {
      this.sent.set(m.seq, { ...m, status: "sent", key });
      changed = true;
    }
    return changed;
  }

  /**
   * An edit (without reactions: the held ones stay): replaces the held text unless the held message is newer (a
   * later revision, or without revisions a later edit).
   */
  update(m: Message): boolean {
    const held = this.sent.get(m.seq);
    if (!held || newer(held, m)) return false;
    const next: SentMessage = { ...m, deleted: m.deleted || held.deleted, status: "sent", key: held.key };
    if (held.reactions !== undefined) next.reactions = held.reactions;
    if (held.deleted) next.text = "";
    this.sent.set(m.seq, next);
    return true;
  }

  /** A delete (of revision `rev`): the held message becomes a tombstone. */
  delete(seq: number, rev?: number): boolean {
    const held = this.sent.get(seq);
    if (!held || held.deleted) return false;
    const tomb = deleted(held);
    if (typeof rev === "number") tomb.rev = Math.max(rev, held.rev ?? rev);
    this.sent.set(seq, tomb);
    return true;
  }

  /**
   * The message's whole current state (a catch-up's change: text, tombstone, reactions as the user sees them):
   * replaces the held one unless that one has a later revision.
   */
  replace(m: Message): boolean {
    const held = this.sent.get(m?.seq);
    if (!held || (held.rev !== undefined && m.rev !== undefined && held.rev > m.rev)) return false;
    if (held.deleted && !m.deleted) return false; // a tombstone stays one
    if (sameContent(held, m) && held.rev === m.rev) return false;
    this.sent.set(m.seq, { ...m, status: "sent", key: held.key });
    return true;
  }

  /**
   * One user's reaction added or removed. The user's own (`mine`) is applied once whichever comes first, this
   * client's ack or the event that another tab's reaction sends, by the `me` flag.
   */
  react(seq: number, emoji: string, mine: boolean, added: boolean, rev?: number): boolean {
    const held = this.sent.get(seq);
    if (!held || held.deleted) return false;
    const reactions: Reaction[] = [...(held.reactions ?? [])];
    const i = reactions.findIndex((r) => r.emoji === emoji);
    const r = i >= 0 ? reactions[i] : undefined;
    if (mine && (r?.me ?? false) === added) return false;
    if (added) {
      if (r) reactions[i] = { ...r, count: r.count + 1, me: r.me || mine };
      else reactions.push({ emoji, count: 1, me: mine });
    } else {
      if (!r) return false;
      if (r.count <= 1) reactions.splice(i, 1);
      else reactions[i] = { ...r, count: r.count - 1, me: mine ? false : r.me };
    }
    const next: SentMessage = { ...held, reactions };
    if (typeof rev === "number") next.rev = Math.max(rev, held.rev ?? rev);
    this.sent.set(seq, next);
    return true;
  }

  /** The user is out of the room: nothing of it is held any more but why. */
  leave(left: Departure): void {
    this.status = "left";
    this.left = left;
    this.error = undefined;
    this.sent.clear();
    this.pending.clear();
    this.members.clear();
    this.noticeVersions.clear();
    this.clearTyping();
    this.hasMore = false;
  }

  /**
   * A join or a departure (leave, kick, ban); per user, the notice with the highest version is the truth.
   */
  notice(n: RoomNotice): boolean {
    if (n.kind !== "join" && n.kind !== "leave" && n.kind !== "kick" && n.kind !== "ban") return false;
    if (typeof n.version === "number") {
      if (n.version <= (this.noticeVersions.get(n.user.id) ?? -Infinity)) return false;
      this.noticeVersions.set(n.user.id, n.version);
    }
    if (n.kind === "join") this.members.set(n.user.id, n.user);
    else this.members.delete(n.user.id);
    return true;
  }

  /** Who is online, from a snapshot (a join's reply, `presence:list`). */
  setMembers(users: readonly User[]): void {
    this.members.clear();
    for (const u of users) this.members.set(u.id, u);
  }

  /** `user` is typing: shown until `timeoutMs` after their last `typing` event, or their next message. */
  typing(user: User, timeoutMs: number, expired: () => void): boolean {
    const before = this.typers.get(user.id);
    if (before) clearTimeout(before.timer);
    const timer = setTimeout(() => {
      if (this.typers.get(user.id)?.timer !== timer) return;
      this.typers.delete(user.id);
      expired();
    }, timeoutMs);
    this.typers.set(user.id, { user, timer });
    return !before;
  }

  stoppedTyping(userId: UserId): boolean {
    const typer = this.typers.get(userId);
    if (!typer) return false;
    clearTimeout(typer.timer);
    this.typers.delete(userId);
    return true;
  }

  clearTyping(): boolean {
    if (this.typers.size === 0) return false;
    for (const x of this.typers.values()) clearTimeout(x.timer);
    this.typers.clear();
    return true;
  }

  /** Of the seqs after `seq` up to `to`: how many are held, and how many of those are from others. */
  countAfter(seq: number, to: number, mine: (m: Message) => boolean): { held: number; others: number } {
    let held = 0;
    let others = 0;
    for (let s = seq + 1; s <= to; s++) {
      const m = this.sent.get(s);
      if (!m) break;
      held++;
      if (!mine(m)) others++;
    }
    return { held, others };
  }
}

/** A deleted message keeps its place (seq, sender, time) without its text or reactions. */
function deleted(m: SentMessage): SentMessage {
  return { ...m, deleted: true, text: "", reactions: [] };
}

/** Whether `held` is a later state of the message than `m`: by revision, else (no revisions) by edit time. */
function newer(held: Message, m: Message): boolean {
  if (held.rev !== undefined && m.rev !== undefined) return held.rev > m.rev;
  return !!(held.editedAt && m.editedAt && held.editedAt > m.editedAt);
}

function sameContent(a: Message, b: Message): boolean {
  return (
    a.text === b.text &&
    a.editedAt === b.editedAt &&
    (a.deleted ?? false) === (b.deleted ?? false) &&
    JSON.stringify(a.reactions ?? []) === JSON.stringify(b.reactions ?? [])
  );
}
