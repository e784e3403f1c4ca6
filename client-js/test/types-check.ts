// Compiled (never run) by sdk.test.mjs with `tsc --noEmit -p test/tsconfig.types.json`: typed usage of the
// published declarations (imported by package name, as an application would) must compile, and every line under
// `@ts-expect-error` must be a type error.
import { io, type Socket } from "socket.io-client";
import {
  connect,
  PalaverClient,
  PalaverError,
  isPalaverError,
  type Ack,
  type ChatError,
  type ClientToServerEvents,
  type ConnectErrorCode,
  type ErrorCode,
  type Message,
  type MessageChange,
  type PalaverErrorCode,
  type PalaverOptions,
  type PalaverSocket,
  type Room,
  type RoomJoinReply,
  type RoomNotice,
  type RoomSummary,
  type ServerToClientEvents,
  type Session,
  type TypingEvent,
  type User,
} from "@palaver/client";

// ---------------------------------------------------------------------------------------------
// the protocol types alone, with a plain io()

export async function plainSocket(url: string): Promise<void> {
  const socket: Socket<ServerToClientEvents, ClientToServerEvents> = io(url, { auth: { name: "ada" } });

  socket.on("session", ({ user, rooms }: Session) => {
    const name: string = user.name;
    const anonymous: boolean = user.anonymous;
    const summary: RoomSummary | undefined = rooms[0];
    const lastSeq: number | undefined = summary?.lastSeq;
    const peer: User | undefined = summary?.peer;
    void [name, anonymous, lastSeq, peer];
  });
  socket.on("message", (m) => {
    const seq: number = m.seq;
    const from: string = m.from.name;
    const clientId: string | undefined = m.clientId;
    void [seq, from, clientId];
  });
  socket.on("room:notice", (n: RoomNotice) => {
    const kind: "join" | "leave" | "kick" | "ban" = n.kind;
    void kind;
  });
  socket.on("typing", (t: TypingEvent) => void t.user.id);
  socket.on("chat:error", ({ event, error }) => {
    const code: ErrorCode = error.code;
    void [event, code];
  });

  const joined = await socket.emitWithAck("room:join", { room: "general", limit: 10 });
  if (joined.ok) {
    const history: Message[] = joined.history;
    const room: Room = joined.room;
    const hasMore: boolean = joined.hasMore;
    const members: User[] = joined.members;
    void [history, room, hasMore, members];
  } else {
    const error: ChatError = joined.error;
    void error;
  }
  // @ts-expect-error: the data is only there once `ok` is checked
  void joined.history;

  socket.emit("message:send", { room: "general", text: "hi", clientId: crypto.randomUUID() }, (res) => {
    if (res.ok) void res.message.seq;
    else void res.error.code;
  });
  const sent = await socket.timeout(1000).emitWithAck("message:send", { room: "general", text: "hi" });
  if (sent.ok) void sent.message.id;
  const dm = await socket.emitWithAck("dm:send", { to: "u-bob", text: "hi" });
  if (dm.ok) void dm.message.room;
  const page = await socket.emitWithAck("history:fetch", { room: "general", before: 10, limit: 20 });
  if (page.ok) void page.messages.length;
  const list = await socket.emitWithAck("rooms:list", {});
  if (list.ok) void list.rooms[0]?.lastSeq;
  const who = await socket.emitWithAck("presence:list", { room: "general" });
  if (who.ok) void who.users;
  const created = await socket.emitWithAck("room:create", { name: "team", visibility: "private", members: ["u-bob"] });
  if (created.ok) void created.room.createdAt;
  const left: Ack<Record<never, never>> = await socket.emitWithAck("room:leave", { room: "team" });
  void left;
  socket.emit("typing", { room: "general" });
  const caughtUp = await socket.emitWithAck("room:join", { room: "general", since: 41 });
  if (caughtUp.ok && caughtUp.truncated) void caughtUp.history;
  const synced = await socket.emitWithAck("sync", { rooms: { general: 41, "dm:abc": 7 } });
  if (synced.ok) {
    for (const [room, entry] of Object.entries(synced.rooms)) {
      if ("error" in entry) void [room, entry.error.code];
      else void [entry.messages.map((m) => m.seq), entry.truncated];
    }
  }
  const edit = await socket.emitWithAck("message:edit", { room: "general", seq: 3, text: "fixed" });
  if (edit.ok) void edit.message.editedAt;
  await socket.emitWithAck("message:delete", { room: "general", seq: 3 });
  await socket.emitWithAck("reaction:add", { room: "general", seq: 3, emoji: "🎉" });
  await socket.emitWithAck("reaction:remove", { room: "general", seq: 3, emoji: "🎉" });
  await socket.emitWithAck("room:read", { room: "general", seq: 3 });
  if (list.ok) void [list.rooms[0]?.unread, list.rooms[0]?.lastRead];
  // @ts-expect-error: an edit names the message by its seq
  await socket.emitWithAck("message:edit", { room: "general", id: "m-1", text: "fixed" });
  // @ts-expect-error: sync takes seqs per room
  await socket.emitWithAck("sync", { rooms: ["general"] });

  // @ts-expect-error: not an event of the contract
  socket.emit("room:destroy", { room: "general" }, () => {});
  // @ts-expect-error: text must be a string
  socket.emit("message:send", { room: "general", text: 42 }, () => {});
  // @ts-expect-error: a send needs its room
  await socket.emitWithAck("message:send", { text: "hi" });
  // @ts-expect-error: visibility is "public" | "private"
  await socket.emitWithAck("room:create", { name: "x", visibility: "secret" });
  // @ts-expect-error: not an event the server sends
  socket.on("messages", () => {});
  // @ts-expect-error: a message is not a string
  socket.on("message", (m: string) => void m);
}

// ---------------------------------------------------------------------------------------------
// the SDK

export async function withSdk(url: string, token: string): Promise<void> {
  const options: PalaverOptions = {
    auth: { token },
    namespace: "/",
    ackTimeout: 3000,
    retries: 2,
    socket: { transports: ["websocket"], reconnectionDelayMax: 2000 },
  };
  const client: PalaverClient = connect(url, options);
  const raw: Socket<ServerToClientEvents, ClientToServerEvents> = client.socket;
  const same: PalaverSocket = raw;
  void same;

  const session: Session = await client.session;
  const me: User | undefined = client.user;
  void [session, me];

  const joined: RoomJoinReply = await client.join("general", { limit: 20, since: 3 });
  const { room, history, hasMore, members } = joined;
  void [room, history, hasMore, members];
  const m: Message = await client.send("general", "hello", { clientId: "abc" });
  const d: Message = await client.dm("u-bob", "psst");
  const { messages, hasMore: older } = await client.history("general", { before: m.seq, limit: 50 });
  const rooms: RoomSummary[] = await client.rooms();
  const users: User[] = await client.presence("general");
  const made: Room = await client.createRoom("team", { visibility: "private", members: ["u-bob"] });
  const nothing: void = await client.leave("team");
  const typed: void = client.typing("general");
  const last: number | undefined = client.lastSeq("general");
  void [d, messages, older, rooms, users, made, nothing, typed, last];

  const unsubscribe: Array<() => void> = [
    client.on("message", (msg) => void msg.text),
    client.on("room:notice", (n) => void n.kind),
    client.on("connect", () => {}),
    client.on("disconnect", (reason) => void reason),
    client.once("session", (s) => void s.user),
    client.on("message:updated", ({ message }) => void (message.editedAt satisfies string | undefined)),
    client.on("message:deleted", ({ room, seq }) => void [room, seq]),
    client.on("reaction", ({ emoji, user, added }) => void [emoji, user.id, added]),
    client.on("read", ({ room, user, seq }) => void [room, user.name, seq]),
    client.onMessage((msg) => void msg.reactions?.map((r) => [r.emoji, r.count, r.me])),
    client.onRecoveryError((err) => void err.room),
    client.onStatus((status) => void (status satisfies "connecting" | "connected" | "reconnecting" | "closed")),
  ];
  for (const off of unsubscribe) off();
  const edited: Message = await client.editMessage("general", m.seq, "hello again");
  const gone: void = await client.deleteMessage("general", m.seq);
  const added: void = await client.addReaction("general", m.seq, "👍");
  const removed: void = await client.removeReaction("general", m.seq, "👍");
  const read: void = await client.markRead("general", m.seq);
  const reply: Message = await client.send("general", "yes", { clientId: "c-1", replyTo: m.seq });
  const replied: number | undefined = reply.replyTo?.seq;
  void [edited, gone, added, removed, read, replied, client.status, client.error?.code];
  const off = client.onConnectError((err: PalaverError) => {
    const code: PalaverErrorCode = err.code;
    void code;
  });
  off();

  try {
    await client.send("general", "x");
  } catch (err) {
    if (err instanceof PalaverError) {
      switch (err.code) {
        case "rate_limited":
        case "timeout":
        case "disconnected":
          break;
        default: {
          const other: ErrorCode | ConnectErrorCode | "invalid_namespace" | "connect_failed" = err.code;
          void other;
        }
      }
    }
    if (isPalaverError(err, "forbidden")) void err.event;
  }

  // @ts-expect-error: room ids are strings
  await client.join(42);
  // @ts-expect-error: not a join option
  await client.join("general", { before: 3 });
  // @ts-expect-error: the handler gets a Message
  client.on("message", (n: number) => void n);
  // @ts-expect-error: not an event
  client.on("nope", () => {});
  // @ts-expect-error: on returns an unsubscribe function, not the client
  client.on("message", () => {}).on("typing", () => {});
  // @ts-expect-error: not an error code
  isPalaverError(new Error(), "nope");
  client.close();
}

// ---------------------------------------------------------------------------------------------
// edits, deletes, reactions, replies and read state

export async function messageChanges(url: string): Promise<void> {
  const client = connect(url, { auth: { name: "ada" } });
  const reply: Message = await client.send("general", "me too", { replyTo: 41 });
  const quoted: number | undefined = reply.replyTo?.seq;
  const edited: Message = await client.editMessage("general", 41, "fixed");
  const editedAt: string | undefined = edited.editedAt;
  await client.deleteMessage("general", 41);
  await client.addReaction("general", 41, "👍");
  await client.removeReaction("general", 41, "👍");
  await client.markRead("general", 42);
  const off = client.onChange((change: MessageChange) => {
    switch (change.type) {
      case "updated":
      case "state": {
        const counts: number[] = (change.message.reactions ?? []).map((r) => r.count);
        void counts;
        break;
      }
      case "deleted":
        void change.seq;
        break;
      case "reaction": {
        const added: boolean = change.added;
        void [added, change.emoji, change.user.id];
        break;
      }
      case "read":
        void change.seq;
        break;
      case "readState": {
        const unread: number = change.unread;
        void [unread, change.reads.map((r) => r.user.id)];
        break;
      }
    }
  });
  off();
  client.on("reaction", (e) => void e.rev);
  client.on("message:deleted", (e) => void e.seq);
  const summaries: RoomSummary[] = await client.rooms();
  const badges: number[] = summaries.map((r) => r.unread - r.lastRead + r.rev);
  void [quoted, editedAt, badges];
  // @ts-expect-error: a seq is a number
  await client.markRead("general", "42");
  // @ts-expect-error: replyTo is a seq
  await client.send("general", "x", { replyTo: "41" });
  client.close();
}
