// socket.io-client 2.x (Engine.IO 3, Socket.IO protocol v4) next to socket.io-client 4.x: the same rooms, messages
// both ways and acks, over WebSocket, long-polling and polling upgraded to WebSocket. Protocol v4 has no `auth` in
// its CONNECT packet, so a 2.x client authenticates with the handshake query (`query: { token, name }`); a refused
// one gets an `error` event (2.x has no `connect_error` for middleware refusals). On a namespace other than `/`,
// the query must go on the Manager. See docs/protocol.md, Connecting.
import assert from "node:assert/strict";
import { describe } from "node:test";

import ioV2 from "socket.io-client-v2";

import {
  STORES,
  ACK_TIMEOUT_MS,
  useServer,
  it,
  track,
  client,
  connect,
  connectUser,
  connectRefused,
  assertUnauthorized,
  assertUser,
  assertMessage,
  assertSameMessage,
  assertError,
  identity,
  token,
  roomId,
  ok,
  waitFor,
  sleep,
} from "./harness.mjs";

const TRANSPORTS = {
  websocket: ["websocket"],
  polling: ["polling"],
  "polling upgraded to websocket": ["polling", "websocket"],
};

/** A socket.io-client 2.x socket on `/` (already connecting), closed at the end of the test. */
function v2Client(srv, query, transports = ["websocket"]) {
  const opts = { transports, forceNew: true, reconnection: false };
  if (query !== undefined) opts.query = query;
  return track(ioV2(srv.url, opts));
}

/** Connects a 2.x client and resolves with `{ socket, session }`; rejects on its `error` event. */
function v2Connect(srv, query, transports) {
  const socket = v2Client(srv, query, transports);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`2.x client: no "session" within ${ACK_TIMEOUT_MS} ms`)), ACK_TIMEOUT_MS);
    socket.once("session", (session) => {
      clearTimeout(timer);
      resolve({ socket, session });
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`2.x client error: ${JSON.stringify(err)}`));
    });
  });
}

/** Expects the 2.x connection to be refused: resolves with the payload of its `error` event. */
function v2Refused(srv, query) {
  const socket = v2Client(srv, query);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`2.x client: neither connect nor error within ${ACK_TIMEOUT_MS} ms`)), ACK_TIMEOUT_MS);
    socket.once("connect", () => {
      clearTimeout(timer);
      reject(new Error(`expected the 2.x connection to be refused, it was accepted (query ${JSON.stringify(query)})`));
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      resolve(err);
    });
  });
}

/** 2.x has no `emitWithAck`: emits with an ack callback and resolves with the ack's argument. */
function v2Call(socket, event, payload) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`2.x client: no ack for ${event} within ${ACK_TIMEOUT_MS} ms`)), ACK_TIMEOUT_MS);
    socket.emit(event, payload, (ack) => {
      clearTimeout(timer);
      resolve(ack);
    });
  });
}

async function v2Ok(socket, event, payload) {
  const ack = await v2Call(socket, event, payload);
  assert.ok(ack?.ok === true, `2.x ${event} ${JSON.stringify(payload)} should succeed, got ${JSON.stringify(ack)}`);
  return ack;
}

for (const store of STORES) {
  describe(`socket.io-client 2.x next to 4.x [${store}]`, () => {
    const srv = useServer(store);

    for (const [label, transports] of Object.entries(TRANSPORTS)) {
      it(`over ${label}: a 2.x guest and a 4.x user chat in one room, both ways`, async () => {
        const room = roomId("v2");
        const old = await v2Connect(srv, { name: "Old Client" }, transports);
        assertUser(old.session.user, { name: "Old Client", anonymous: true });
        const bob = await connectUser(srv, identity("bob"));

        await v2Ok(old.socket, "room:join", { room });
        const joined = waitFor(old.socket, "room:notice", (n) => n.room === room && n.kind === "join" && n.user.id === bob.user.id);
        await ok(bob.socket, "room:join", { room });
        await joined;

        // 2.x → 4.x
        const atBob = waitFor(bob.socket, "message", (m) => m.room === room);
        const sent = await v2Ok(old.socket, "message:send", { room, text: `old over ${label}`, clientId: "c-old" });
        assertMessage(sent.message, { room, seq: 1, fromId: old.session.user.id, fromName: "Old Client", text: `old over ${label}`, clientId: "c-old" });
        assertSameMessage(await atBob, sent.message, "4.x receives the 2.x message");

        // 4.x → 2.x
        const atOld = waitFor(old.socket, "message", (m) => m.room === room);
        const reply = await ok(bob.socket, "message:send", { room, text: "new to old" });
        assertMessage(reply.message, { room, seq: 2, fromId: bob.user.id, text: "new to old" });
        assertSameMessage(await atOld, reply.message, "2.x receives the 4.x message");

        const page = await v2Ok(old.socket, "history:fetch", { room });
        assertSameMessage(page.messages, [sent.message, reply.message], "2.x pages history");
        if (transports.length > 1) {
          const engine = old.socket.io.engine;
          if (engine.transport.name !== "websocket") await waitFor(engine, "upgrade", () => true, ACK_TIMEOUT_MS);
          assert.equal(engine.transport.name, "websocket", "the 2.x client upgraded to WebSocket");
          await v2Ok(old.socket, "history:fetch", { room });
        }
      });
    }

    it("a 2.x client signed in with query.token gets its JWT identity in session, and its rooms back", async () => {
      const ada = identity("ada", { name: "Ada Lovelace" });
      const first = await v2Connect(srv, { token: ada.token });
      assertUser(first.session.user, { id: ada.id, name: "Ada Lovelace", anonymous: false });
      const room = roomId("v2-signed");
      await v2Ok(first.socket, "room:join", { room });

      // The same user on a 4.x client shares the identity and the room.
      const modern = await connect(srv, ada.auth);
      assertUser(modern.session.user, { id: ada.id, anonymous: false });
      assert.ok(modern.session.rooms.some((r) => r.id === room), `4.x session lists ${room}`);
      // And a new 2.x connection of the same user is re-entered into it.
      const again = await v2Connect(srv, { token: ada.token }, ["polling"]);
      assert.ok(again.session.rooms.some((r) => r.id === room), `2.x session lists ${room}`);
    });

    it("query.name is percent-decoded and checked like auth.name", async () => {
      const name = "Zoë & 🦦 = 100%+";
      const { session } = await v2Connect(srv, { name: `  ${name} ` });
      assertUser(session.user, { name, anonymous: true });
      const err = await v2Refused(srv, { name: "   " });
      assertUnauthorized(err, "invalid_name");
    });

    it("a refused 2.x connection gets an error event { message: 'unauthorized: <code>: …' }", async () => {
      const forged = token("u-forged", {}, { secret: "not-the-server-secret" });
      const err = await v2Refused(srv, { token: forged });
      assert.deepEqual(Object.keys(err), ["message"], `error payload ${JSON.stringify(err)}`);
      assertUnauthorized(err, "bad_signature");
      assertUnauthorized(await v2Refused(srv, { token: "not-a-jwt" }), "invalid_token");
    });

    for (const transport of ["websocket", "polling"]) {
      it(`over ${transport}: acks carry { ok: true, message } and { ok: false, error }; binary is refused like for 4.x`, async () => {
        const room = roomId("v2-ack");
        const { socket, session } = await v2Connect(srv, { name: "acker" }, [transport]);
        assertUser(session.user, { name: "acker", anonymous: true });
        const joined = await v2Ok(socket, "room:join", { room });
        assert.deepEqual(joined.history, []);
        const sent = await v2Ok(socket, "message:send", { room, text: "with ack" });
        assertMessage(sent.message, { room, seq: 1, text: "with ack" });
        assertError(await v2Call(socket, "message:send", { room, text: "" }), "bad_request", "empty text");
        assertError(await v2Call(socket, "message:send", { room, text: Buffer.from("bytes") }), "bad_request", "binary text");
        // The socket stays usable, and an event without ack gets chat:error.
        const chatError = waitFor(socket, "chat:error", (e) => e.event === "message:send");
        socket.emit("message:send", { room: "no such room!", text: "x" });
        assert.equal((await chatError).error.code, "bad_request");
        const second = await v2Ok(socket, "message:send", { room, text: "still here" });
        assert.equal(second.message.seq, 2);
      });
    }
  });

  describe(`socket.io-client 2.x on another namespace [${store}]`, () => {
    const srv = useServer(store, { namespaces: '[[namespace]]\npath = "/game"\nanonymous = false\n' });

    it("with the query on the Manager, a 2.x client signs in to /game", async () => {
      const ada = identity("ada");
      const manager = new ioV2.Manager(srv.url, { query: { token: ada.token }, transports: ["websocket"], reconnection: false });
      const socket = track(manager.socket("/game"));
      const session = await waitFor(socket, "session", () => true, ACK_TIMEOUT_MS);
      assertUser(session.user, { id: ada.id, anonymous: false });
      const room = roomId("v2-game");
      await v2Ok(socket, "room:join", { room });
      const modern = await connectUser(srv, ada, { ns: "/game" });
      assert.ok(modern.session.rooms.some((r) => r.id === room), `the /game room ${room} is the user's`);
    });

    it("io(url + '/game', { query }) does not connect (the query ends up in the namespace name)", async () => {
      const ada = identity("ada");
      const socket = track(ioV2(`${srv.url}/game`, { query: { token: ada.token }, transports: ["websocket"], forceNew: true, reconnection: false }));
      const events = [];
      for (const event of ["connect", "session", "error"]) socket.on(event, () => events.push(event));
      await sleep(1000);
      assert.deepEqual(events, [], "a 2.x socket with a query on a namespace other than / hears nothing");
      assert.equal(socket.connected, false);
    });
  });

  describe(`socket.io-client 2.x, anonymous access off [${store}]`, () => {
    const srv = useServer(store, { flags: { anonymous: false } });

    it("a 2.x client without query.token is refused with missing_token; with it, it connects", async () => {
      assertUnauthorized(await v2Refused(srv, undefined), "missing_token");
      assertUnauthorized(await v2Refused(srv, { name: "guest" }), "missing_token");
      const una = identity("una");
      const { session } = await v2Connect(srv, { token: una.token }, ["polling"]);
      assertUser(session.user, { id: una.id, anonymous: false });
    });

    it("a 4.x client's query.token is not read (4.x authenticates with auth)", async () => {
      const una = identity("una");
      const socket = client(srv, { query: { token: una.token } });
      const err = await new Promise((resolve, reject) => {
        socket.once("connect_error", resolve);
        socket.once("connect", () => reject(new Error("4.x client was admitted through query.token")));
      });
      assertUnauthorized(err, "missing_token");
      await connectRefused(srv, undefined);
      await connect(srv, una.auth);
    });
  });
}
