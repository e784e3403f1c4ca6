import type { Message, RoomId } from "./protocol.js";

/** What the client knows about one room. */
export interface RoomState {
  /**
   * The highest `seq` of the room this client holds with nothing missing below it (down to where it started
   * following the room): every message up to it has been delivered to `onMessage`, in order.
   * 0: the room was empty when the client started following it.
   */
  lastSeq: number;
}

/** The internal state of one followed room. */
export interface RoomEntry {
  /** See {@link RoomState.lastSeq}. */
  lastSeq: number;
  /** Messages with `seq > lastSeq + 1`: they wait until the gap below them is filled. */
  readonly held: Map<number, Message>;
  /** Catch-ups (reconnect `sync` / `room:join { since }`, paging) in flight for the room: no gap fill meanwhile. */
  catchingUp: number;
  /** A gap fill (`history:fetch { after }`) is in flight. */
  filling: boolean;
  /** The timer that starts a gap fill if the gap is still there when it fires. */
  gapTimer: ReturnType<typeof setTimeout> | undefined;
}

/**
 * Per-room client state: the ordered, gap-free stream of every followed room.
 *
 * Seqs are gap-free per room, so "everything after lastSeq" is exactly what the client misses. Every message the
 * client gets (live `message` events, send acks, join/sync/history replies) goes through {@link ingest}, which
 * returns the messages that are now deliverable, in seq order, each exactly once: it drops what is already held
 * (`seq <= lastSeq`, or already waiting), and keeps a message whose predecessor is missing until the gap is filled.
 */
export class RoomStates {
  private readonly map = new Map<RoomId, RoomEntry>();
  /** Rooms being joined or created while not followed: their live messages wait for the reply's baseline. */
  private readonly joining = new Map<RoomId, { count: number; buffered: Message[] }>();

  /** Starts following `room` at `lastSeq` (the last seq already held) unless it is followed already. */
  start(room: RoomId, lastSeq: number): RoomEntry {
    let entry = this.map.get(room);
    if (!entry) {
      entry = { lastSeq: Math.max(0, lastSeq), held: new Map(), catchingUp: 0, filling: false, gapTimer: undefined };
      this.map.set(room, entry);
    }
    return entry;
  }

  /**
   * Takes `messages` of `room` (in any order, duplicates allowed) and returns the ones that are now deliverable,
   * in seq order: those continuing `lastSeq` without a hole, plus any held ones they unblock. Does nothing for a
   * room that is not followed.
   */
  ingest(room: RoomId, messages: readonly Message[]): Message[] {
    const entry = this.map.get(room);
    if (!entry) return [];
    for (const m of messages) {
      if (m.room !== room || !Number.isInteger(m.seq)) continue;
      if (m.seq <= entry.lastSeq || entry.held.has(m.seq)) continue;
      entry.held.set(m.seq, m);
    }
    const out: Message[] = [];
    for (;;) {
      const next = entry.held.get(entry.lastSeq + 1);
      if (!next) break;
      entry.held.delete(next.seq);
      entry.lastSeq = next.seq;
      out.push(next);
    }
    return out;
  }

  /**
   * Gives up on the messages below the lowest held one (they cannot be recovered): moves `lastSeq` just below
   * it and returns what is deliverable from there, and the seqs skipped.
   */
  skipGap(room: RoomId): { delivered: Message[]; from: number; to: number } | undefined {
    const entry = this.map.get(room);
    if (!entry || entry.held.size === 0) return undefined;
    const lowest = Math.min(...entry.held.keys());
    const from = entry.lastSeq + 1;
    entry.lastSeq = lowest - 1;
    return { delivered: this.ingest(room, []), from, to: lowest - 1 };
  }

  /** A join or create of `room` is in flight: buffer its live messages if the room is not followed yet. */
  beginJoin(room: RoomId): void {
    const j = this.joining.get(room);
    if (j) j.count++;
    else this.joining.set(room, { count: 1, buffered: [] });
  }

  /** The join or create of `room` is over: the live messages buffered meanwhile (all of them once the last ends). */
  endJoin(room: RoomId): Message[] {
    const j = this.joining.get(room);
    if (!j) return [];
    const buffered = j.buffered;
    j.buffered = [];
    if (--j.count <= 0) this.joining.delete(room);
    return buffered;
  }

  isJoining(room: RoomId): boolean {
    return this.joining.has(room);
  }

  /** Buffers a live message of a room being joined (not followed yet); false if no join is in flight. */
  bufferIfJoining(m: Message): boolean {
    const j = this.joining.get(m.room);
    if (!j || this.map.has(m.room)) return false;
    j.buffered.push(m);
    return true;
  }

  forget(room: RoomId): void {
    const entry = this.map.get(room);
    if (entry?.gapTimer) clearTimeout(entry.gapTimer);
    this.map.delete(room);
  }

  has(room: RoomId): boolean {
    return this.map.has(room);
  }

  entry(room: RoomId): RoomEntry | undefined {
    return this.map.get(room);
  }

  get(room: RoomId): Readonly<RoomState> | undefined {
    const entry = this.map.get(room);
    return entry ? { lastSeq: entry.lastSeq } : undefined;
  }

  rooms(): RoomId[] {
    return [...this.map.keys()];
  }

  /** Some room holds messages above a gap, or has a catch-up or gap fill in flight. */
  busy(): boolean {
    for (const e of this.map.values()) if (e.held.size > 0 || e.catchingUp > 0 || e.filling) return true;
    return false;
  }

  /** Stops every gap timer (disconnected or closed). */
  clearTimers(): void {
    for (const e of this.map.values()) {
      if (e.gapTimer) clearTimeout(e.gapTimer);
      e.gapTimer = undefined;
    }
  }
}
