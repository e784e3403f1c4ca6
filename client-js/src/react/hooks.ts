"use client";
// useRoom, useRooms, useConnection: the store's views (src/store.ts) through useSyncExternalStore, and its calls.
//
// The hooks hold no state of their own: subscribing is watching (a room is joined on its first subscriber and kept
// a moment after its last, so StrictMode's unsubscribe-resubscribe joins once), and every call goes to the store,
// waiting for the provider's client when made before it exists (a child's first effect runs before its parent's).

import { useCallback, useContext, useMemo, useSyncExternalStore } from "react";

import type {
  ChatStore,
  ConnectionView,
  Message,
  PalaverClient,
  RoomId,
  RoomSendOptions,
  RoomView,
  RoomsView,
} from "../index.js";
import { PalaverContext, type ClientSlot } from "./provider.js";

export interface UseRoomResult extends RoomView {
  /**
   * Sends a message: it shows at once with `status: "pending"`, then as the stored message (or `failed`). Pass a
   * `clientId` to make the call idempotent (a send in an effect, a retry of a failed message): one message for any
   * number of calls with it. The promise may be ignored; a failure also shows in `messages`.
   */
  send(text: string, options?: RoomSendOptions): Promise<Message>;
  /** Replaces the text of one of the user's messages. */
  edit(seq: number, text: string): Promise<Message>;
  /** Deletes a message (it stays, with `deleted: true`). */
  remove(seq: number): Promise<void>;
  /** Toggles the user's `emoji` reaction (or sets it: `add` true or false). */
  react(seq: number, emoji: string, add?: boolean): Promise<void>;
  /** Loads the page of messages before the oldest shown (see `hasMore`, `loadingOlder`). */
  loadOlder(): Promise<void>;
  /** Marks the room read up to `seq`, default the newest message. */
  markRead(seq?: number): Promise<void>;
  /** Tells the others that the user is typing (throttled; call it on every keystroke). */
  notifyTyping(): void;
  /** Removes a failed message from `messages`. */
  discard(clientId: string): void;
  /** Leaves the room for good (on every device of the user): the view shows `status: "left"`. */
  leave(): Promise<void>;
  /** Joins a `left` room again. */
  rejoin(): void;
}

export interface UseRoomsResult extends RoomsView {
  /** Reads the list again. */
  refresh(): Promise<void>;
}

export interface UseConnectionResult extends ConnectionView {
  /** The provider's client: undefined during server rendering and before the provider's first effect. */
  client: PalaverClient | undefined;
}

const noop = () => {};
const unsubscribed = () => noop;
const idleRooms = new Map<RoomId, RoomView>();
const IDLE_ROOMS: RoomsView = { status: "loading", error: undefined, rooms: [] };
const IDLE_CONNECTION: ConnectionView = { status: "connecting", user: undefined, admin: false, error: undefined };

/** The view of a room before the provider has a client (server rendering, the first render): one object per room. */
function idleRoom(room: RoomId): RoomView {
  let view = idleRooms.get(room);
  if (!view) {
    view = {
      room,
      status: "loading",
      error: undefined,
      messages: [],
      hasMore: false,
      loadingOlder: false,
      members: [],
      typing: [],
      unread: 0,
      lastRead: 0,
      role: undefined,
      moderator: false,
      left: undefined,
    };
    idleRooms.set(room, view);
  }
  return view;
}

function useSlot(hook: string): ClientSlot {
  const slot = useContext(PalaverContext);
  if (!slot) throw new Error(`${hook}() must be used inside <PalaverProvider>`);
  return slot;
}

function useStore(slot: ClientSlot): ChatStore | undefined {
  return useSyncExternalStore(slot.subscribe, slot.getStore, () => undefined);
}

/** A call on the store, once there is one; its rejection is never reported as unhandled (the caller may ignore it). */
function call<T>(slot: ClientSlot, fn: (store: ChatStore) => T | Promise<T>): Promise<T> {
  const promise = slot.whenStore().then(fn);
  promise.catch(noop);
  return promise;
}

/**
 * One room: its messages (with this client's sends pending until their ack), who is online and typing, the unread
 * counter, and the calls that change them. The room is joined while a component uses it.
 */
export function useRoom(room: RoomId): UseRoomResult {
  const slot = useSlot("useRoom");
  const store = useStore(slot);
  const subscribe = useCallback(
    (listener: () => void) => (store ? store.subscribeRoom(room, listener) : noop),
    [store, room],
  );
  const view = useSyncExternalStore(
    store ? subscribe : unsubscribed,
    () => (store ? store.roomView(room) : idleRoom(room)),
    () => idleRoom(room),
  );
  const calls = useMemo(
    () => ({
      send: (text: string, options?: RoomSendOptions) => call(slot, (s) => s.send(room, text, options)),
      edit: (seq: number, text: string) => call(slot, (s) => s.edit(room, seq, text)),
      remove: (seq: number) => call(slot, (s) => s.remove(room, seq)),
      react: (seq: number, emoji: string, add?: boolean) => call(slot, (s) => s.react(room, seq, emoji, add)),
      loadOlder: () => call(slot, (s) => s.loadOlder(room)),
      markRead: (seq?: number) => call(slot, (s) => s.markRead(room, seq)),
      notifyTyping: () => {
        slot.getStore()?.notifyTyping(room);
      },
      discard: (clientId: string) => {
        slot.getStore()?.discard(room, clientId);
      },
      leave: () => call(slot, (s) => s.leave(room)),
      rejoin: () => {
        slot.getStore()?.rejoin(room);
      },
    }),
    [slot, room],
  );
  return { ...view, ...calls };
}

/** The user's rooms and DMs and the public rooms, most recently active first, with unread counters. */
export function useRooms(): UseRoomsResult {
  const slot = useSlot("useRooms");
  const store = useStore(slot);
  const subscribe = useCallback((listener: () => void) => (store ? store.subscribeRooms(listener) : noop), [store]);
  const view = useSyncExternalStore(
    store ? subscribe : unsubscribed,
    () => (store ? store.roomsView() : IDLE_ROOMS),
    () => IDLE_ROOMS,
  );
  const refresh = useCallback(() => call(slot, (s) => s.refreshRooms()), [slot]);
  return { ...view, refresh };
}

/** The connection: `status` (connecting, connected, reconnecting, closed), the user, the last error, the client. */
export function useConnection(): UseConnectionResult {
  const slot = useSlot("useConnection");
  const store = useStore(slot);
  const subscribe = useCallback((listener: () => void) => (store ? store.subscribeConnection(listener) : noop), [store]);
  const view = useSyncExternalStore(
    store ? subscribe : unsubscribed,
    () => (store ? store.connection() : IDLE_CONNECTION),
    () => IDLE_CONNECTION,
  );
  return { ...view, client: store?.client };
}
