// The palaver event contract, v1: the types of docs/protocol.md, nothing more.
//
// Usable on its own with a plain socket.io-client:
//
//   import { io, type Socket } from "socket.io-client";
//   import type { ServerToClientEvents, ClientToServerEvents } from "@palaver/client";
//   const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, { auth: { name: "ada" } });
//   const res = await socket.emitWithAck("room:join", { room: "general" });

// ---------------------------------------------------------------------------------------------
// ids and entities

/** A user id: a JWT's `sub`, or `anon-…` for a guest (fresh per connection). */
export type UserId = string;

/** 1–64 of `[A-Za-z0-9_.:-]`; ids starting with `dm:` are reserved for DMs. */
export type RoomId = string;

export type RoomKind = "group" | "dm";
export type Visibility = "public" | "private";

export interface User {
  id: UserId;
  name: string;
  anonymous: boolean;
}

export interface Room {
  id: RoomId;
  name: string;
  kind: RoomKind;
  visibility: Visibility;
  /** RFC 3339. */
  createdAt: string;
}

export interface RoomSummary extends Room {
  /** 0 when the room has no message yet. */
  lastSeq: number;
  /** The user has joined the room (always true for DMs listed). */
  member: boolean;
  /** Someone invited the user: `room:join` accepts, `room:decline` declines. */
  invited: boolean;
  /** For a DM: the other user, as last seen. */
  peer?: User;
  /** The seq the user has read up to (`room:read`); 0 when nothing, or not a member. */
  lastRead: number;
  /** Messages of others after `lastRead`, deleted ones left out; counting stops at 100 (100 means "100 or more"). */
  unread: number;
  /** The room's change revision: where a catch-up of edits, deletes and reactions starts (`sync`). */
  rev: number;
  /** For a DM: the user blocked the other user (`user:block`); never set for the blocked side. */
  blocked?: boolean;
  /** For a group room: the user's role in it (a DM has none). */
  role?: RoomRole;
}

export interface Message {
  /** Unique across the server. */
  id: string;
  room: RoomId;
  /** 1, 2, 3… per room, gap-free, in commit order. */
  seq: number;
  /** The display name as it was when sent. */
  from: { id: UserId; name: string };
  /** The current text; `""` once deleted. */
  text: string;
  clientId?: string;
  /** RFC 3339, UTC. */
  at: string;
  /** The message this one answers (`message:send { replyTo }`), as it is now. */
  replyTo?: ReplyTo;
  /** RFC 3339, UTC: when the text was last edited. */
  editedAt?: string;
  /** A tombstone: the message was deleted (its text is empty; its seq stays taken). */
  deleted?: true;
  /** Its reactions as this user sees them; absent when none (and in `message:updated`, where they do not change). */
  reactions?: Reaction[];
  /** The room's revision of the message's last edit, delete or reaction change; absent if never changed. Of two
   * states of a message, keep the one with the higher `rev`. */
  rev?: number;
}

/** The message a reply answers, read anew whenever the reply is read. */
export interface ReplyTo {
  seq: number;
  from: { id: UserId; name: string };
  /** The first 100 characters of its current text; `""` once deleted. */
  excerpt: string;
  /** It has been deleted since. */
  deleted?: true;
}

/** One emoji's reactions on a message. */
export interface Reaction {
  emoji: string;
  count: number;
  /** This user is one of those who reacted so. */
  me: boolean;
}

/** Where another member has read up to (a read receipt). */
export interface ReadPosition {
  user: User;
  seq: number;
  /** RFC 3339, UTC. */
  at?: string;
}

/** An open invitation to a room. */
export interface Invitation {
  room: Room;
  /** Who invited the user. */
  by: { id: UserId; name: string };
  /** RFC 3339, UTC. */
  at: string;
}

// ---------------------------------------------------------------------------------------------
// errors and acknowledgements

export type ErrorCode =
  /** The payload is malformed: missing or wrong-typed field, bad room name, empty text. */
  | "bad_request"
  /** Missing or invalid credentials (HTTP API). */
  | "unauthorized"
  /** You may not do this: private room you are not a member of, reserved room name. */
  | "forbidden"
  /** The room does not exist, or a guest you DM is no longer online. */
  | "not_found"
  /** Text over the namespace's limit, too many rooms on this socket, too many members. */
  | "too_large"
  /** More sends than the per-socket rate allows; retry later. */
  | "rate_limited"
  /** The database is unreachable; nothing was stored, retry later. */
  | "unavailable"
  /** A bug on the server's side; it is logged. */
  | "internal";

export interface ChatError {
  code: ErrorCode;
  message: string;
}

/** Every acknowledgement: `{ ok: true, ...data }` or `{ ok: false, error }`. */
export type Ack<T> = ({ ok: true } & T) | { ok: false; error: ChatError };

/** The data of an ack that carries nothing but `ok: true`. */
export type EmptyReply = Record<never, never>;

/**
 * Why a connection was refused: `connect_error` carries `"unauthorized: <code>: <why>"` as its message.
 */
export type ConnectErrorCode =
  /** Anonymous access is off and `auth.token` is absent. */
  | "missing_token"
  /** The token is not a JWT, or its payload is not valid claims. */
  | "invalid_token"
  /** The signature does not verify with the configured key. */
  | "bad_signature"
  /** `exp` is in the past. */
  | "expired"
  /** The token has no `sub` claim (or an empty one). */
  | "missing_sub"
  /** The token's `alg` is not one the server is configured for. */
  | "wrong_algorithm"
  /** `auth.name` is not 1–32 printable characters. */
  | "invalid_name"
  /** A token was sent but the server has no JWT key configured. */
  | "not_configured"
  /** The host's connect hook refused the connection (the message is the host's reason). */
  | "refused"
  /** The host's connect hook failed, or the message store is unreachable: retry shortly. */
  | "unavailable"
  /** palaver's session cookie came from an origin not in the server's `--cors-origins`. */
  | "forbidden_origin";

/** The `auth` object of the Socket.IO handshake. */
export interface Auth {
  /** A signed-in user: the JWT's `sub` is the user id. */
  token?: string;
  /** A guest with this display name (1–32 printable characters after trimming). */
  name?: string;
}

// ---------------------------------------------------------------------------------------------
// client → server payloads and replies

export interface RoomCreatePayload {
  name: RoomId;
  visibility?: Visibility;
  /** Up to 100 user ids, invited: each gets `invitation` and enters only by accepting (`room:join`). */
  members?: UserId[];
}

export interface RoomInvitePayload {
  room: RoomId;
  /** Up to 100 user ids. */
  users: UserId[];
}
export interface RoomInviteReply {
  /** The users newly invited (members and users already invited are skipped). */
  invited: UserId[];
}

export interface RoomDeclinePayload {
  room: RoomId;
}
export type RoomDeclineReply = EmptyReply;

export type InvitationsListPayload = Record<string, never>;
export interface InvitationsListReply {
  invitations: Invitation[];
}
export interface RoomCreateReply {
  room: Room;
}

export interface RoomJoinPayload {
  room: RoomId;
  /** 1–100, default 50. */
  limit?: number;
  /**
   * The last seq the client holds in the room: `history` is then every message after it (up to the server's
   * recovery limit) instead of the latest `limit`.
   */
  since?: number;
  /** With `since`: the room revision the client holds; `changes` then brings the messages changed since. */
  rev?: number;
}
export interface RoomJoinReply {
  room: Room;
  /** The latest `limit` messages (with `since`: every message after `since`), oldest first. */
  history: Message[];
  /** Older messages exist (with `since`: messages older than `since` exist). */
  hasMore: boolean;
  /** The users online in the room now. */
  members: User[];
  /** With `since`: more messages were missed than returned; page on with `history:fetch { after }`. */
  truncated?: boolean;
  /** The room's revision, read before `history`: hold it for the next catch-up. */
  rev: number;
  /** With `since` and `rev`: the messages at or below `since` edited, deleted or reacted to since `rev`. */
  changes?: Message[];
  /** For a group room: the user's role in it. */
  role?: RoomRole;
}

export interface RoomLeavePayload {
  room: RoomId;
}
export type RoomLeaveReply = EmptyReply;

export interface MessageSendPayload {
  room: RoomId;
  text: string;
  /** 1–64 characters; the same user reusing it in the room gets the original message back. */
  clientId?: string;
  /** The seq of the message of the room this one answers. */
  replyTo?: number;
}
export interface MessageSendReply {
  message: Message;
}

export interface MessageEditPayload {
  room: RoomId;
  seq: number;
  text: string;
}
export interface MessageEditReply {
  /** The new `text`, `editedAt` and `rev`; no `reactions` (they do not change). */
  message: Message;
}

export interface MessageDeletePayload {
  room: RoomId;
  seq: number;
}
export type MessageDeleteReply = EmptyReply;

export interface ReactionPayload {
  room: RoomId;
  seq: number;
  /** Exactly one emoji (at most 16 code points). */
  emoji: string;
}
export type ReactionReply = EmptyReply;

export interface RoomReadPayload {
  room: RoomId;
  /** The user has read up to here; an older seq changes nothing. */
  seq: number;
}
export type RoomReadReply = EmptyReply;

export interface DmSendPayload {
  to: UserId;
  text: string;
  clientId?: string;
}
export type DmSendReply = MessageSendReply;

export interface HistoryFetchPayload {
  room: RoomId;
  /** The `limit` messages just below this seq (paging back). */
  before?: number;
  /** The `limit` messages just above this seq (catching up). */
  after?: number;
  /** 1–100, default 50. */
  limit?: number;
}
export interface HistoryFetchReply {
  /** Always oldest first. */
  messages: Message[];
  /** More exist in the direction paged. */
  hasMore: boolean;
}

export type RoomsListPayload = EmptyReply;
export interface RoomsListReply {
  /** Most recently active first. */
  rooms: RoomSummary[];
}

export interface PresenceListPayload {
  room: RoomId;
}
export interface PresenceListReply {
  users: User[];
}

// moderation, blocks, search

/** A user's role in a group room. The owner is the room's creator; a DM has no roles. */
export type RoomRole = "owner" | "moderator" | "member";

export interface RoomRolePayload {
  room: RoomId;
  user: UserId;
  /** The owner is the creator: it cannot be given. */
  role: "moderator" | "member";
}
/** `room:kick`, `room:unban`, `room:unmute`. */
export interface RoomUserPayload {
  room: RoomId;
  user: UserId;
}
/** `room:ban`, `room:mute`. */
export interface RoomSanctionPayload {
  room: RoomId;
  user: UserId;
  /** RFC 3339, in the future; absent or null: until lifted (`room:unban`, `room:unmute`). */
  until?: string | null;
}
export type ModerationReply = EmptyReply;

export interface UserBlockPayload {
  user: UserId;
}
export type UserBlockReply = EmptyReply;

export interface MessagesSearchPayload {
  /** 1–8 words (runs of letters and digits), at most 200 characters; every word must match; `word*` is a prefix. */
  query: string;
  /** One room (readable as for `history:fetch`); absent: the rooms the user joined and every public room. */
  room?: RoomId;
  /** 1–50, default 20. */
  limit?: number;
  /** A message id: only older results (the next page: the last result's `message.id`). */
  before?: string;
}
export interface SearchResult {
  message: Message;
  /** The spans of `message.text` that matched, `[start, end)` in UTF-16 code units (`text.slice(start, end)`). */
  highlights: [number, number][];
}
export interface MessagesSearchReply {
  /** Newest first. */
  results: SearchResult[];
  /** More results exist: ask again with `before` = the last result's `message.id`. */
  hasMore: boolean;
}

export interface TypingPayload {
  room: RoomId;
}
export type TypingReply = EmptyReply;

/** Where a client is in a room: the last seq it holds, and the room revision it holds (once it has one). */
export type SyncCursor = number | { seq: number; rev?: number };
export interface SyncPayload {
  /** For each room, the last seq the client holds (and its revision). */
  rooms: { [room: RoomId]: SyncCursor };
}
/** What a client missed in one room. */
export interface RoomCatchUp {
  /** Every message after the seq given, oldest first, up to the server's recovery limit. */
  messages: Message[];
  /** More messages were missed than returned: page on with `history:fetch { after }`. */
  truncated: boolean;
  /** The revision to hold next. */
  rev: number;
  /** With a revision given: the messages at or below the seq given that changed since, in their current state. */
  changes?: Message[];
  /** More changes than returned: `rev` is the last one returned; sync the room again from it. */
  changesTruncated?: true;
  lastRead: number;
  unread: number;
  /** Where read receipts are on (DMs; group rooms when the namespace says so): the other members' positions,
   * the most recent first (at most 100). */
  reads?: ReadPosition[];
}
/** One room of a `sync` reply: what was missed, or why the room cannot be read. */
export type SyncRoomResult = RoomCatchUp | { error: ChatError };
export interface SyncReply {
  rooms: { [room: RoomId]: SyncRoomResult };
}

// ---------------------------------------------------------------------------------------------
// server → client payloads

/** Sent right after connecting (again after every reconnection). */
export interface Session {
  user: User;
  /** The rooms the user has joined, most recently active first (up to the per-socket room limit); the socket is
   * in every one of them. */
  rooms: RoomSummary[];
  /** Open invitations, newest first. */
  invitations: Invitation[];
  /** The user is a namespace admin (a claim of their token): they moderate every group room. */
  admin?: true;
}

/** `kick` and `ban` are departures too: a moderator removed the user from the room. */
export type NoticeKind = "join" | "leave" | "kick" | "ban";

export interface RoomNotice {
  room: RoomId;
  kind: NoticeKind;
  user: User;
  /** RFC 3339. */
  at: string;
  /** Increases per room across every node: order notices by it, not by arrival (docs/protocol.md). */
  version: number;
  /** For `kick` and `ban`: who did it. */
  by?: { id: UserId; name: string };
  /** For `ban`: until when (RFC 3339), null until lifted. */
  until?: string | null;
}

export type ModerationAction = "role" | "kick" | "ban" | "unban" | "mute" | "unmute";

/** A moderation action in a room: sent to everyone in the room and to every socket of the user acted on. */
export interface ModerationEvent {
  room: RoomId;
  action: ModerationAction;
  /** The user acted on (their id stands for the name when they are not online in the room). */
  user: { id: UserId; name: string };
  /** Who did it. */
  by: { id: UserId; name: string };
  /** For `role`: the new role. */
  role?: "moderator" | "member";
  /** For `ban` and `mute`: until when (RFC 3339), null until lifted. */
  until?: string | null;
  /** RFC 3339. */
  at: string;
}

export interface TypingEvent {
  room: RoomId;
  user: User;
}

/** A message was edited: its new `text`, `editedAt` and `rev` (no `reactions`: keep the ones you hold). */
export interface MessageUpdatedEvent {
  message: Message;
}

/** A message was deleted: it is a tombstone now. */
export interface MessageDeletedEvent {
  room: RoomId;
  seq: number;
  rev: number;
}

/** A user added (`added: true`) or removed a reaction. */
export interface ReactionEvent {
  room: RoomId;
  seq: number;
  emoji: string;
  user: User;
  added: boolean;
  rev: number;
}

/** A user has read a room up to `seq`: to the user's other sockets, and as a read receipt to the room. */
export interface ReadEvent {
  room: RoomId;
  user: User;
  seq: number;
}

/** Only for events sent without an ack callback. */
export interface ChatErrorEvent {
  event: string;
  error: ChatError;
}

// ---------------------------------------------------------------------------------------------
// the socket.io typing pair: Socket<ServerToClientEvents, ClientToServerEvents>

export interface ServerToClientEvents {
  session: (session: Session) => void;
  message: (message: Message) => void;
  "room:notice": (notice: RoomNotice) => void;
  typing: (event: TypingEvent) => void;
  "chat:error": (event: ChatErrorEvent) => void;
  /** Someone invited the user to a room. */
  invitation: (invitation: Invitation) => void;
  "message:updated": (event: MessageUpdatedEvent) => void;
  "message:deleted": (event: MessageDeletedEvent) => void;
  reaction: (event: ReactionEvent) => void;
  read: (event: ReadEvent) => void;
  /** The connection's token runs out at `expiresAt` (RFC 3339): send `session:refresh` with a fresh one before then. */
  "session:expiring": (event: { expiresAt: string }) => void;
  /** The token ran out without a refresh; the server disconnects right after. */
  "session:expired": (event: { reason: string }) => void;
  /** A moderator acted in a room the user is in, or on the user. */
  "room:moderation": (event: ModerationEvent) => void;
}

export interface ClientToServerEvents {
  "room:create": (payload: RoomCreatePayload, ack: (res: Ack<RoomCreateReply>) => void) => void;
  "room:join": (payload: RoomJoinPayload, ack: (res: Ack<RoomJoinReply>) => void) => void;
  "room:leave": (payload: RoomLeavePayload, ack: (res: Ack<RoomLeaveReply>) => void) => void;
  "message:send": (payload: MessageSendPayload, ack: (res: Ack<MessageSendReply>) => void) => void;
  "message:edit": (payload: MessageEditPayload, ack: (res: Ack<MessageEditReply>) => void) => void;
  "message:delete": (payload: MessageDeletePayload, ack: (res: Ack<MessageDeleteReply>) => void) => void;
  "reaction:add": (payload: ReactionPayload, ack: (res: Ack<ReactionReply>) => void) => void;
  "reaction:remove": (payload: ReactionPayload, ack: (res: Ack<ReactionReply>) => void) => void;
  "room:read": (payload: RoomReadPayload, ack: (res: Ack<RoomReadReply>) => void) => void;
  "dm:send": (payload: DmSendPayload, ack: (res: Ack<DmSendReply>) => void) => void;
  "history:fetch": (payload: HistoryFetchPayload, ack: (res: Ack<HistoryFetchReply>) => void) => void;
  "rooms:list": (payload: RoomsListPayload, ack: (res: Ack<RoomsListReply>) => void) => void;
  "room:invite": (payload: RoomInvitePayload, ack: (res: Ack<RoomInviteReply>) => void) => void;
  "room:decline": (payload: RoomDeclinePayload, ack: (res: Ack<RoomDeclineReply>) => void) => void;
  "invitations:list": (payload: InvitationsListPayload, ack: (res: Ack<InvitationsListReply>) => void) => void;
  "presence:list": (payload: PresenceListPayload, ack: (res: Ack<PresenceListReply>) => void) => void;
  /** Usually sent without an ack. */
  typing: (payload: TypingPayload, ack?: (res: Ack<TypingReply>) => void) => void;
  /** After a reconnect: every message after the given seq, for each room. */
  sync: (payload: SyncPayload, ack: (res: Ack<SyncReply>) => void) => void;
  /** A fresh token of the same user: the connection goes on past the old token's expiry. */
  "session:refresh": (payload: { token: string }, ack: (res: Ack<{ expiresAt: string }>) => void) => void;
  "room:role": (payload: RoomRolePayload, ack: (res: Ack<ModerationReply>) => void) => void;
  "room:kick": (payload: RoomUserPayload, ack: (res: Ack<ModerationReply>) => void) => void;
  "room:ban": (payload: RoomSanctionPayload, ack: (res: Ack<ModerationReply>) => void) => void;
  "room:unban": (payload: RoomUserPayload, ack: (res: Ack<ModerationReply>) => void) => void;
  "room:mute": (payload: RoomSanctionPayload, ack: (res: Ack<ModerationReply>) => void) => void;
  "room:unmute": (payload: RoomUserPayload, ack: (res: Ack<ModerationReply>) => void) => void;
  "user:block": (payload: UserBlockPayload, ack: (res: Ack<UserBlockReply>) => void) => void;
  "user:unblock": (payload: UserBlockPayload, ack: (res: Ack<UserBlockReply>) => void) => void;
  "messages:search": (payload: MessagesSearchPayload, ack: (res: Ack<MessagesSearchReply>) => void) => void;
}

/** The names of the client → server events. */
export type ClientEventName = keyof ClientToServerEvents;
/** The names of the server → client events. */
export type ServerEventName = keyof ServerToClientEvents;
