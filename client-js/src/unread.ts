// Unread counters per room: the server's (`lastRead`, `unread` in `session` and `rooms:list`) as the base, then
// every message of others the client receives after it, and reads (this client's `markRead`, `read` events from the
// user's other tabs and devices). Plain code without I/O, used by the store (store.ts).

import type { Message, RoomId, RoomSummary } from "./protocol.js";

export interface ReadState {
  /** The newest seq the counter has seen. */
  lastSeq: number;
  /** The last seq the user has read. */
  lastRead: number;
  /** Messages of others after `lastRead`. */
  unread: number;
}

export class ReadStates {
  private readonly map = new Map<RoomId, ReadState>();

  get(room: RoomId): Readonly<ReadState> | undefined {
    return this.map.get(room);
  }

  /**
   * The server's counters of a room (`session`, `rooms:list`), unless the client has seen newer messages since the
   * server counted. A server without read state gives only `lastSeq`: counting starts there. Returns whether the
   * counters changed.
   */
  rebase(r: RoomSummary): boolean {
    if (!r || typeof r.id !== "string" || typeof r.lastSeq !== "number") return false;
    const read = this.map.get(r.id);
    if (read && r.lastSeq < read.lastSeq) return false;
    if (typeof r.unread === "number" || typeof r.lastRead === "number") {
      this.map.set(r.id, {
        lastSeq: r.lastSeq,
        lastRead: r.lastRead ?? read?.lastRead ?? 0,
        unread: r.unread ?? read?.unread ?? 0,
      });
      return true;
    }
    if (read) return false;
    this.map.set(r.id, { lastSeq: r.lastSeq, lastRead: 0, unread: 0 });
    return true;
  }

  /** The user is out of the room (left, removed): no counter any more. Returns whether there was one. */
  forget(room: RoomId): boolean {
    return this.map.delete(room);
  }

  /** A message received (each once, in order): one more unread if it is another user's and new. */
  received(m: Message, mine: boolean): boolean {
    const read = this.map.get(m.room) ?? { lastSeq: m.seq - 1, lastRead: 0, unread: 0 };
    if (m.seq <= read.lastSeq) return false;
    const next = { ...read, lastSeq: m.seq };
    if (!mine && m.seq > read.lastRead) next.unread++;
    this.map.set(m.room, next);
    return true;
  }

  /**
   * The user has read `room` up to `seq`. What stays unread is counted from the held messages when all of them
   * after `seq` are held (`after`), else bounded by the seqs left.
   */
  read(room: RoomId, seq: number, after: (seq: number, to: number) => { held: number; others: number }): boolean {
    const read = this.map.get(room) ?? { lastSeq: seq, lastRead: 0, unread: 0 };
    if (seq <= read.lastRead) return false;
    let unread = 0;
    if (seq < read.lastSeq) {
      const { held, others } = after(seq, read.lastSeq);
      unread = held === read.lastSeq - seq ? others : Math.min(read.unread, read.lastSeq - seq);
    }
    this.map.set(room, { lastSeq: Math.max(read.lastSeq, seq), lastRead: seq, unread });
    return true;
  }
}
