// Server events of issue 12 that the SDK has no typed call for yet: moderation (`room:kick`, `room:mute`,
// `room:unmute`), blocking (`user:block`, `user:unblock`), search (`messages:search`), and the `room:moderation`
// event. They go through `client.socket`, the SDK's public socket.io-client socket, and fail like SDK calls (a
// PalaverError with the server's code).
//
// TODO(issue 12): once the moderation branch's SDK calls are merged, call `client.kick`, `client.mute`,
// `client.unmute`, `client.block`, `client.unblock`, `client.search` and `client.on("room:moderation")` instead,
// take `SearchResult`, `ModerationEvent` and `RoomSummary.blocked` from "@palaver/client", and delete this file.

import { PalaverError, type Message, type PalaverClient, type RoomId, type RoomSummary, type UserId } from "@palaver/client";

/** One search hit: the message and the spans of its text that matched, `[start, end)` in UTF-16 code units. */
export interface SearchResult {
  message: Message;
  highlights: [number, number][];
}

export interface SearchReply {
  /** Newest first. */
  results: SearchResult[];
  hasMore: boolean;
}

/** A moderator acted in a room (to everyone in it, and to the user acted on). */
export interface ModerationEvent {
  room: RoomId;
  action: "role" | "kick" | "ban" | "unban" | "mute" | "unmute";
  user: { id: UserId; name: string };
  by: { id: UserId; name: string };
  role?: "moderator" | "member";
  until?: string | null;
  at: string;
}

/** The events above are not in the SDK's typed contract yet: the socket without its event types. */
interface UntypedSocket {
  timeout(ms: number): { emitWithAck(event: string, payload: unknown): Promise<unknown> };
  on(event: string, listener: (payload: never) => void): unknown;
  off(event: string, listener: (payload: never) => void): unknown;
}

function socketOf(client: PalaverClient): UntypedSocket {
  return client.socket as unknown as UntypedSocket;
}

async function request<T>(client: PalaverClient, event: string, payload: object): Promise<T> {
  let res: unknown;
  try {
    res = await socketOf(client).timeout(client.ackTimeout).emitWithAck(event, payload);
  } catch (err) {
    throw new PalaverError("timeout", `${event}: no answer within ${client.ackTimeout} ms`, { event, cause: err });
  }
  const ack = res as { ok?: boolean; error?: { code: string; message: string } } | null;
  if (ack?.ok === true) return ack as T;
  if (ack?.ok === false && ack.error) {
    throw new PalaverError(ack.error.code as PalaverError["code"], ack.error.message, { event });
  }
  throw new PalaverError("internal", `${event}: malformed answer ${JSON.stringify(res)}`, { event });
}

/** Removes `user` from `room` (a moderator's call; the server refuses anyone else with `forbidden`). */
export async function kick(client: PalaverClient, room: RoomId, user: UserId): Promise<void> {
  await request(client, "room:kick", { room, user });
}

/** Refuses `user`'s messages to `room` until `until`, or until unmuted. */
export async function mute(client: PalaverClient, room: RoomId, user: UserId, until?: Date): Promise<void> {
  await request(client, "room:mute", { room, user, until: until ? until.toISOString() : null });
}

export async function unmute(client: PalaverClient, room: RoomId, user: UserId): Promise<void> {
  await request(client, "room:unmute", { room, user });
}

/** Closes direct messages between the user and `user`, both ways. */
export async function block(client: PalaverClient, user: UserId): Promise<void> {
  await request(client, "user:block", { user });
}

export async function unblock(client: PalaverClient, user: UserId): Promise<void> {
  await request(client, "user:unblock", { user });
}

/** Messages holding every word of `query`, newest first: in `room`, or in every room the user can read. */
export async function search(
  client: PalaverClient,
  query: string,
  options: { room?: RoomId; limit?: number } = {},
): Promise<SearchReply> {
  return request<SearchReply>(client, "messages:search", { query, ...options });
}

/** Calls `listener` with every `room:moderation` event. Returns an unsubscribe function. */
export function onModeration(client: PalaverClient, listener: (event: ModerationEvent) => void): () => void {
  const socket = socketOf(client);
  socket.on("room:moderation", listener);
  return () => {
    socket.off("room:moderation", listener);
  };
}

/** The user blocked the other user of this DM (`rooms:list` says so once blocking exists). */
export function isBlocked(room: RoomSummary | undefined): boolean {
  return (room as (RoomSummary & { blocked?: boolean }) | undefined)?.blocked === true;
}
