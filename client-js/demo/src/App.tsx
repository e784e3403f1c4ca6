// The page: the rooms on the left, the open conversation in the middle, who is online on the right.
//
// The chat state (messages, pending sends, unread counters, who is online and typing, the room list) and the
// catch-up after a reconnection are the SDK's (`useRoom`, `useRooms`, `useConnection`); the page keeps only what
// is open, and which rooms it joined (a guest's rooms are not memberships, so the server does not list them).

import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { ChatStore, isPalaverError, type RoomId, type RoomSummary, type User } from "@palaver/client";
import { useConnection, useRooms } from "@palaver/client/react";

import { DraftPane } from "./components/DraftPane";
import { EmptyPane } from "./components/EmptyPane";
import { RoomPane } from "./components/RoomPane";
import { Sidebar } from "./components/Sidebar";
import { roomParam } from "./config";
import { usePageConnection } from "./connection";
import { errorText, ROOM_ID, roomIdFrom } from "./format";
import { useRoomEvents } from "./roomEvents";
import { useToast } from "./toasts";

/** What the middle column shows: a room (or DM), a DM not sent yet, or nothing. */
export type Open = { kind: "room"; room: RoomId } | { kind: "draft"; peer: User } | null;

function roomFromHash(): RoomId | undefined {
  const id = decodeURIComponent(location.hash.slice(1));
  return ROOM_ID.test(id) ? id : undefined;
}

/** The room to open first: the address's, else the user's most recently active room, else #general. */
function firstRoom(rooms: readonly RoomSummary[]): RoomId {
  const asked = roomParam && roomIdFrom(roomParam);
  if (asked && ROOM_ID.test(asked)) return asked;
  const mine = rooms.filter((r) => r.member);
  return mine.find((r) => r.kind === "group")?.id ?? mine[0]?.id ?? "general";
}

function withItem<T>(set: ReadonlySet<T>, item: T): ReadonlySet<T> {
  return set.has(item) ? set : new Set(set).add(item);
}

function withoutItem<T>(set: ReadonlySet<T>, item: T): ReadonlySet<T> {
  if (!set.has(item)) return set;
  const next = new Set(set);
  next.delete(item);
  return next;
}

export function App() {
  const conn = usePageConnection();
  const { client } = useConnection();
  const { rooms, status: roomsStatus, refresh } = useRooms();
  const events = useRoomEvents();
  const toast = useToast();
  const [open, setOpen] = useState<Open>(() => {
    const room = roomFromHash();
    return room ? { kind: "room", room } : null;
  });
  /** Rooms joined on this page (the user's memberships are in `rooms` too). */
  const [joined, setJoined] = useState<ReadonlySet<RoomId>>(() => new Set());

  /** A message to scroll to once its room shows it (a search result). */
  const [focus, setFocus] = useState<{ room: RoomId; seq: number }>();

  const openRoom = useCallback((room: RoomId, seq?: number) => {
    setOpen((o) => (o?.kind === "room" && o.room === room ? o : { kind: "room", room }));
    setFocus(seq === undefined ? undefined : { room, seq });
  }, []);
  const onFocused = useCallback(() => setFocus(undefined), []);

  // The open room lives in the address's #fragment, so a reload (or a link) comes back to it.
  useEffect(() => {
    const want = open?.kind === "room" ? `#${open.room}` : "";
    if (location.hash !== want) history.replaceState(null, "", want || location.pathname + location.search);
  }, [open]);
  useEffect(() => {
    const onHash = () => {
      const room = roomFromHash();
      if (room) setOpen((o) => (o?.kind === "room" && o.room === room ? o : { kind: "room", room }));
    };
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);

  // Once the room list is known, open the first room (unless the address named one).
  const picked = useRef(open !== null);
  useEffect(() => {
    if (picked.current || conn.state !== "connected" || roomsStatus !== "ready") return;
    picked.current = true;
    setOpen((o) => o ?? { kind: "room", room: firstRoom(rooms) });
  }, [conn.state, roomsStatus, rooms]);

  const summaries = useMemo(() => new Map(rooms.map((r) => [r.id, r])), [rooms]);
  const myRooms = useMemo(
    () =>
      [...new Set([...rooms.filter((r) => r.kind === "group" && r.member).map((r) => r.id), ...joined])]
        .filter((id) => !id.startsWith("dm:"))
        .sort((a, b) => a.localeCompare(b)),
    [rooms, joined],
  );
  const blockedUsers = useMemo(
    () => new Set(rooms.filter((r) => r.kind === "dm" && r.peer && r.blocked === true).map((r) => r.peer!.id)),
    [rooms],
  );

  // The tab's title counts what is unread.
  const unread = rooms.reduce((n, r) => n + (r.unread ?? 0), 0);
  const openLabel =
    open?.kind === "draft"
      ? `@${open.peer.name}`
      : open?.kind === "room"
        ? summaries.get(open.room)?.kind === "dm"
          ? `@${summaries.get(open.room)?.peer?.name ?? "direct message"}`
          : `#${open.room}`
        : "";
  useEffect(() => {
    document.title = `${unread ? `(${unread}) ` : ""}${openLabel ? `${openLabel} · ` : ""}palaver`;
  }, [unread, openLabel]);

  const onJoined = useCallback(
    (room: RoomId) => {
      setJoined((s) => withItem(s, room));
      void refresh();
    },
    [refresh],
  );

  /**
   * Leaving (the store takes the room out of its state, and shows it as left if opened again): the next room opens.
   */
  const leaveRoom = useCallback(
    async (room: RoomId) => {
      if (!client) return;
      try {
        await ChatStore.of(client).leave(room);
      } catch (err) {
        if (!isPalaverError(err, "not_found")) {
          toast(`Could not leave #${room}: ${errorText(err)}`);
          return;
        }
      }
      toast(`You left #${room}.`, "info");
      setJoined((s) => withoutItem(s, room));
      setOpen((o) => {
        if (o?.kind !== "room" || o.room !== room) return o;
        const next = myRooms.find((id) => id !== room);
        return next ? { kind: "room", room: next } : null;
      });
      await refresh();
    },
    [client, myRooms, refresh, toast],
  );

  // Removed by a moderator: said at once wherever the user is; the room's pane says why and offers to join again.
  useEffect(
    () =>
      events?.onRemoved(({ room, kind, by }) => {
        toast(`${by ? by.name : "A moderator"} ${kind === "ban" ? "banned you from" : "removed you from"} #${room}.`);
        setJoined((s) => withoutItem(s, room));
        void refresh();
      }),
    [events, refresh, toast],
  );

  const joinRoom = useCallback(
    (raw: string): boolean => {
      const id = roomIdFrom(raw);
      if (!ROOM_ID.test(id) || id.startsWith("dm:")) {
        toast("A room name is 1–64 letters, digits, or _ . : - (and cannot start with dm:).");
        return false;
      }
      // A room the user left (or was removed from) a moment ago is still held, as left: asking to join joins it.
      if (client) ChatStore.of(client).rejoin(id);
      openRoom(id);
      return true;
    },
    [client, openRoom, toast],
  );

  const createRoom = useCallback(
    async (raw: string, isPrivate: boolean): Promise<boolean> => {
      const id = roomIdFrom(raw);
      if (!client) return false;
      if (!ROOM_ID.test(id) || id.startsWith("dm:")) {
        toast("A room name is 1–64 letters, digits, or _ . : - (and cannot start with dm:).");
        return false;
      }
      try {
        const room = await client.createRoom(id, { visibility: isPrivate ? "private" : "public" });
        await refresh();
        openRoom(room.id);
        return true;
      } catch (err) {
        toast(`Could not create #${id}: ${errorText(err)}`);
        return false;
      }
    },
    [client, openRoom, refresh, toast],
  );

  const startDm = useCallback(
    (peer: User) => {
      if (peer.id === conn.user?.id) return;
      const existing = rooms.find((r) => r.kind === "dm" && r.peer?.id === peer.id);
      setOpen(existing ? { kind: "room", room: existing.id } : { kind: "draft", peer });
    },
    [conn.user?.id, rooms],
  );

  const onDmStarted = useCallback(
    (room: RoomId) => {
      void refresh();
      openRoom(room);
    },
    [openRoom, refresh],
  );

  return (
    <div className="app" data-conn={conn.state}>
      <Sidebar
        conn={conn}
        rooms={rooms}
        myRooms={myRooms}
        joined={joined}
        open={open}
        onOpen={openRoom}
        onJoin={joinRoom}
        onCreate={createRoom}
      />
      {open === null ? (
        <EmptyPane refused={conn.refused} />
      ) : open.kind === "draft" ? (
        <DraftPane key={open.peer.id} peer={open.peer} me={conn.user} onStarted={onDmStarted} />
      ) : (
        <RoomPane
          key={open.room}
          room={open.room}
          summary={summaries.get(open.room)}
          me={conn.user}
          refused={conn.refused}
          blockedUsers={blockedUsers}
          focusSeq={focus?.room === open.room ? focus.seq : undefined}
          onFocused={onFocused}
          onJoined={onJoined}
          onLeave={leaveRoom}
          onStartDm={startDm}
          onOpenRoom={openRoom}
          onBlockChanged={refresh}
        />
      )}
    </div>
  );
}
