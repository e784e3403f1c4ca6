// What the page shows that ChatStore does not hold: who joined and left (and who was removed or muted by a
// moderator), as lines between the messages, and how far the others have read (a DM's "Seen"). Live events only:
// a reload starts with none, as a chat app's "bob joined" lines do.

import { useSyncExternalStore } from "react";
import type { ModerationEvent, PalaverClient, ReadEvent, RoomId, RoomNotice, UserId } from "@palaver/client";
import { useConnection } from "@palaver/client/react";

export type NoteKind = "join" | "leave" | "kick" | "ban" | "mute" | "unmute" | "role";

/** A line between the messages. */
export interface Note {
  key: string;
  room: RoomId;
  kind: NoteKind;
  user: { id: UserId; name: string };
  /** The moderator, for kick, ban, mute, unmute and role. */
  by?: { id: UserId; name: string };
  /** For `role`: the user's new role. */
  role?: "moderator" | "member";
  until?: string | null;
  at: string;
  /** The newest message of the room when it happened: the line shows after that one. */
  afterSeq: number;
}

/** A moderator removed the current user from a room. */
export interface Removal {
  room: RoomId;
  kind: "kick" | "ban";
  by?: { id: UserId; name: string };
}

const NONE: readonly Note[] = [];

export class RoomEvents {
  private readonly notes = new Map<RoomId, readonly Note[]>();
  /** Per room, the highest seq each other user has read. */
  private readonly reads = new Map<RoomId, ReadonlyMap<UserId, number>>();
  private readonly listeners = new Set<() => void>();
  private readonly removalListeners = new Set<(removal: Removal) => void>();
  private counter = 0;

  constructor(private readonly client: PalaverClient) {
    client.on("room:notice", (n: RoomNotice) => this.onNotice(n));
    client.on("read", (e: ReadEvent) => this.onRead(e));
    client.on("room:moderation", (e: ModerationEvent) => this.onModeration(e));
  }

  notesOf(room: RoomId): readonly Note[] {
    return this.notes.get(room) ?? NONE;
  }

  /** The highest seq of `room` another user has read (0: none known). */
  readByOthers(room: RoomId): number {
    let max = 0;
    for (const seq of this.reads.get(room)?.values() ?? []) max = Math.max(max, seq);
    return max;
  }

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  onRemoved(listener: (removal: Removal) => void): () => void {
    this.removalListeners.add(listener);
    return () => {
      this.removalListeners.delete(listener);
    };
  }

  /**
   * The user acted as a moderator (the ack came): the server tells the room and the user acted on, not the socket
   * that acted, so the line is added here.
   */
  acted(room: RoomId, kind: "kick" | "ban" | "mute" | "unmute", user: { id: UserId; name: string }, until?: Date): void {
    const me = this.client.user;
    const by = me && { id: me.id, name: me.name };
    this.add({ room, kind, user, by, until: until?.toISOString(), at: new Date().toISOString() });
  }

  private add(note: Omit<Note, "key" | "afterSeq">): void {
    const full: Note = { ...note, key: `note-${++this.counter}`, afterSeq: this.client.lastSeq(note.room) ?? 0 };
    this.notes.set(note.room, [...this.notesOf(note.room), full]);
    this.changed();
  }

  private changed(): void {
    for (const listener of [...this.listeners]) listener();
  }

  private onNotice(n: RoomNotice): void {
    const kind = n.kind;
    if (kind !== "join" && kind !== "leave" && kind !== "kick" && kind !== "ban") return;
    this.add({ room: n.room, kind, user: n.user, by: n.by, until: n.until, at: n.at });
    if ((kind === "kick" || kind === "ban") && n.user.id === this.client.user?.id) {
      for (const listener of [...this.removalListeners]) listener({ room: n.room, kind, by: n.by });
    }
  }

  private onModeration(e: ModerationEvent): void {
    // Kicks and bans also come as `room:notice`; mutes and roles only come here.
    if (e.action === "mute" || e.action === "unmute") {
      this.add({ room: e.room, kind: e.action, user: e.user, by: e.by, until: e.until, at: e.at });
    } else if (e.action === "role" && e.role) {
      this.add({ room: e.room, kind: "role", user: e.user, by: e.by, role: e.role, at: e.at });
    }
  }

  private onRead(e: ReadEvent): void {
    if (!e?.user || e.user.id === this.client.user?.id) return; // the user's own reads: the store has them
    const reads = new Map(this.reads.get(e.room));
    if ((reads.get(e.user.id) ?? 0) >= e.seq) return;
    reads.set(e.user.id, e.seq);
    this.reads.set(e.room, reads);
    this.changed();
  }
}

const byClient = new WeakMap<PalaverClient, RoomEvents>();

/** The provider's client's room events (made on first use), or undefined before the client exists. */
export function useRoomEvents(): RoomEvents | undefined {
  const { client } = useConnection();
  if (!client) return undefined;
  let events = byClient.get(client);
  if (!events) {
    events = new RoomEvents(client);
    byClient.set(client, events);
  }
  return events;
}

const noSubscription = () => () => {};

/** The join, leave and moderation lines of `room`, oldest first. */
export function useNotes(room: RoomId): readonly Note[] {
  const events = useRoomEvents();
  return useSyncExternalStore(events?.subscribe ?? noSubscription, () => events?.notesOf(room) ?? NONE);
}

/** The highest seq of `room` that someone else has read (read receipts: always on in DMs). */
export function useReadByOthers(room: RoomId): number {
  const events = useRoomEvents();
  return useSyncExternalStore(events?.subscribe ?? noSubscription, () => events?.readByOthers(room) ?? 0);
}
