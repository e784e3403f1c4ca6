import type {
  Message,
  MessageDeletedEvent,
  MessageUpdatedEvent,
  ReactionEvent,
  ReadEvent,
  ReadPosition,
  RoomCatchUp,
  RoomId,
  SyncCursor,
} from "./protocol.js";

/**
 * A change to a message the app may show, or to read state, as `onChange` hands it over:
 *
 * - `updated`: a live edit: the message's new `text`, `editedAt` and `rev` (no `reactions`: keep the ones you hold);
 * - `deleted`: a live delete: show the message as deleted;
 * - `reaction`: a live reaction added or removed: adjust that emoji's count (`me` if `user` is you);
 * - `state`: from a catch-up (after a reconnection, or `catchUp()`): the message's whole current state, reactions
 *   as you see them included: replace what you hold;
 * - `read`: a live read position: yours from another device (clear the badge), or another member's receipt;
 * - `readState`: from a catch-up: your read state in the room and, where receipts are on, the others' positions.
 *
 * Live changes of a message older than one already handed over (by its `rev`) are dropped.
 */
export type MessageChange =
  | { type: "updated"; message: Message }
  | ({ type: "deleted" } & MessageDeletedEvent)
  | ({ type: "reaction" } & ReactionEvent)
  | { type: "state"; message: Message }
  | ({ type: "read" } & ReadEvent)
  | { type: "readState"; room: RoomId; lastRead: number; unread: number; reads: ReadPosition[] };

export type ChangeHandler = (change: MessageChange) => void;

/** How many messages' latest revisions the client remembers (to drop stale live changes). */
const REVISIONS_REMEMBERED = 5000;

/**
 * The change feed of the followed rooms: each room's revision cursor (where the next catch-up's `changes` start),
 * and the latest revision handed over per message. The cursor only moves with catch-up and join replies (which read
 * the revision before the messages): a live change can be lost in transit, so the next catch-up returns every change
 * since the cursor again, and the app replaces what it holds.
 */
export class ChangeFeed {
  private readonly cursors = new Map<RoomId, number>();
  private readonly latest = new Map<string, number>();

  /** The room's cursor from a reply that read it before its messages (`session`, `room:join`, `sync`). */
  setCursor(room: RoomId, rev: number | undefined): void {
    if (typeof rev !== "number" || !Number.isInteger(rev)) return;
    const held = this.cursors.get(room);
    if (held === undefined || rev > held) this.cursors.set(room, rev);
  }

  /** Sets the room's cursor unless it has one. */
  startRoom(room: RoomId, rev: number | undefined): void {
    if (!this.cursors.has(room)) this.setCursor(room, rev);
  }

  cursor(room: RoomId): number | undefined {
    return this.cursors.get(room);
  }

  forget(room: RoomId): void {
    this.cursors.delete(room);
  }

  /** What `sync` asks for a room where the client holds `lastSeq`. */
  syncCursor(room: RoomId, lastSeq: number): SyncCursor {
    const rev = this.cursors.get(room);
    return rev === undefined ? lastSeq : { seq: lastSeq, rev };
  }

  /** A live server event, as the change to hand over; `undefined` for a stale or malformed one. */
  live(event: string, payload: unknown): MessageChange | undefined {
    if (!payload || typeof payload !== "object") return undefined;
    switch (event) {
      case "message:updated": {
        const { message } = payload as MessageUpdatedEvent;
        if (!message || !this.newer(message.room, message.seq, message.rev, false)) return undefined;
        return { type: "updated", message };
      }
      case "message:deleted": {
        const e = payload as MessageDeletedEvent;
        return this.newer(e.room, e.seq, e.rev, false) ? { type: "deleted", ...e } : undefined;
      }
      case "reaction": {
        const e = payload as ReactionEvent;
        return this.newer(e.room, e.seq, e.rev, false) ? { type: "reaction", ...e } : undefined;
      }
      case "read": {
        const e = payload as ReadEvent;
        return typeof e.room === "string" && Number.isInteger(e.seq) ? { type: "read", ...e } : undefined;
      }
      default:
        return undefined;
    }
  }

  /** The changes a room's catch-up brings (`sync` or `room:join { since, rev }`), and its cursor moved on. */
  caughtUp(room: RoomId, result: Partial<RoomCatchUp> & { changes?: Message[]; rev?: number }): MessageChange[] {
    const out: MessageChange[] = [];
    for (const message of result.changes ?? []) {
      // A whole state replaces one of the same revision (a live delta of it may have been lost).
      if (message && this.newer(room, message.seq, message.rev, true)) out.push({ type: "state", message });
    }
    if (typeof result.lastRead === "number" && typeof result.unread === "number") {
      out.push({ type: "readState", room, lastRead: result.lastRead, unread: result.unread, reads: result.reads ?? [] });
    }
    this.setCursor(room, result.rev);
    return out;
  }

  /** Whether a change of revision `rev` of a message is not older than (`orEqual`) or newer than what was handed. */
  private newer(room: unknown, seq: unknown, rev: unknown, orEqual: boolean): boolean {
    if (typeof room !== "string" || !Number.isInteger(seq)) return false;
    if (typeof rev !== "number") return true;
    const key = `${room}\n${seq as number}`;
    const held = this.latest.get(key);
    if (held !== undefined && (orEqual ? rev < held : rev <= held)) return false;
    this.latest.delete(key);
    this.latest.set(key, rev);
    if (this.latest.size > REVISIONS_REMEMBERED) this.latest.delete(this.latest.keys().next().value as string);
    return true;
  }
}
