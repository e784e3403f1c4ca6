// Configured namespaces: per-namespace anonymous access, isolation of rooms and history, message length.
import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  STORES,
  FAST,
  useServer,
  it,
  connect,
  connectRefused,
  assertUnauthorized,
  assertUser,
  identity,
  roomId,
  ok,
  fails,
  waitFor,
  noneOf,
  markerVia,
} from "./harness.mjs";

const GAME_TOML = `
[[namespace]]
path = "/game"
anonymous = false
history = true
max_message_length = 500
`;

const EPHEMERAL_TOML = `
[[namespace]]
path = "/ephemeral"
anonymous = true
history = false
`;

for (const store of STORES) {
  describe(`namespaces: /game (anonymous=false, max_message_length=500) [${store}]`, () => {
    const srv = useServer(store, { namespaces: GAME_TOML, flags: FAST });

    it("/game refuses an anonymous connection with missing_token while / accepts it", async () => {
      const err = await connectRefused(srv, undefined, { ns: "/game" });
      assertUnauthorized(err, "missing_token");
      const err2 = await connectRefused(srv, { name: "ada" }, { ns: "/game" });
      assertUnauthorized(err2, "missing_token");
      const { session } = await connect(srv);
      assertUser(session.user, { anonymous: true });
    });

    it("/game accepts a signed-in user", async () => {
      const u = identity("gamer");
      const { session } = await connect(srv, u.auth, { ns: "/game" });
      assertUser(session.user, { id: u.id, name: u.name, anonymous: false });
    });

    it("rooms and history are isolated between / and /game", async () => {
      const u = identity("iso");
      const root = await connect(srv, u.auth);
      const game = await connect(srv, u.auth, { ns: "/game" });
      const room = roomId("shared");
      const onlyRoot = roomId("rootonly");

      await ok(root.socket, "room:join", { room });
      await ok(root.socket, "room:join", { room: onlyRoot });
      const m1 = await ok(root.socket, "message:send", { room, text: "said on /" });
      await ok(root.socket, "message:send", { room, text: "again on /" });
      assert.equal(m1.message.seq, 1);

      // the same room id in /game is a different room: no history, numbering starts again
      const j = await ok(game.socket, "room:join", { room });
      assert.deepEqual(j.history, [], "history from / must not leak into /game");
      assert.equal(j.hasMore, false);

      const g1 = await ok(game.socket, "message:send", { room, text: "said on /game" });
      assert.equal(g1.message.seq, 1, "seq numbering is per namespace room");

      const h = await ok(game.socket, "history:fetch", { room });
      assert.deepEqual(
        h.messages.map((m) => m.text),
        ["said on /game"],
      );

      // a room that exists only on / is unknown on /game
      await fails(game.socket, "history:fetch", { room: onlyRoot }, "not_found");
      const list = await ok(game.socket, "rooms:list", {});
      const ids = list.rooms.map((r) => r.id);
      assert.ok(!ids.includes(onlyRoot), `/game rooms:list must not include ${onlyRoot}: ${ids}`);
      assert.ok(ids.includes(room));
      assert.equal(list.rooms.find((r) => r.id === room).lastSeq, 1);

      // and on / the room still has its own two messages
      const rl = await ok(root.socket, "rooms:list", {});
      assert.equal(rl.rooms.find((r) => r.id === room)?.lastSeq, 2);
    });

    it("a message on / is not delivered to a /game socket in the same-named room", async () => {
      const a = identity("a");
      const b = identity("b");
      const room = roomId("cross");
      const aRoot = await connect(srv, a.auth);
      const bRoot = await connect(srv, b.auth);
      const bGame = await connect(srv, b.auth, { ns: "/game" });
      await ok(aRoot.socket, "room:join", { room });
      await ok(bRoot.socket, "room:join", { room });
      await ok(bGame.socket, "room:join", { room });
      const aGame = await connect(srv, a.auth, { ns: "/game" });
      await ok(aGame.socket, "room:join", { room });
      const none = noneOf(bGame.socket, "message");
      const got = waitFor(bRoot.socket, "message", (m) => m.room === room);
      await ok(aRoot.socket, "message:send", { room, text: "root only" });
      assert.equal((await got).text, "root only");
      // a marker through the /game room: had the / message leaked, it would be in before it
      await none.before(markerVia(aGame.socket, room, [bGame.socket]), "/game socket");
    });

    it("max_message_length applies per namespace: 500 on /game, 4000 on /", async () => {
      const u = identity("len");
      const room = roomId("len");
      const root = await connect(srv, u.auth);
      const game = await connect(srv, u.auth, { ns: "/game" });
      await ok(root.socket, "room:join", { room });
      await ok(game.socket, "room:join", { room });

      await ok(game.socket, "message:send", { room, text: "g".repeat(500) });
      await fails(game.socket, "message:send", { room, text: "g".repeat(501) }, "too_large");
      await ok(root.socket, "message:send", { room, text: "r".repeat(501) });
      await ok(root.socket, "message:send", { room, text: "r".repeat(4000) });
      await fails(root.socket, "message:send", { room, text: "r".repeat(4001) }, "too_large");
    });
  });

  describe(`namespaces: /ephemeral (history=false) [${store}]`, () => {
    const srv = useServer(store, { namespaces: EPHEMERAL_TOML, flags: FAST });

    it("messages are numbered and delivered but not kept; clientId does not dedupe", async () => {
      const room = roomId("eph");
      const a = await connect(srv, { name: "a" }, { ns: "/ephemeral" });
      const b = await connect(srv, { name: "b" }, { ns: "/ephemeral" });
      await ok(a.socket, "room:join", { room });
      await ok(b.socket, "room:join", { room });

      const got = waitFor(b.socket, "message", (m) => m.room === room);
      const m1 = await ok(a.socket, "message:send", { room, text: "one", clientId: "same" });
      assert.equal(m1.message.seq, 1);
      assert.equal((await got).text, "one");
      const m2 = await ok(a.socket, "message:send", { room, text: "two", clientId: "same" });
      assert.equal(m2.message.seq, 2, "without history clientId must not dedupe");
      assert.notEqual(m2.message.id, m1.message.id);

      const h = await ok(a.socket, "history:fetch", { room });
      assert.deepEqual(h.messages, []);
      assert.equal(h.hasMore, false);

      const c = await connect(srv, { name: "c" }, { ns: "/ephemeral" });
      const j = await ok(c.socket, "room:join", { room });
      assert.deepEqual(j.history, []);
    });

    it("/ keeps history on the same server", async () => {
      const room = roomId("kept");
      const a = await connect(srv, { name: "a" });
      await ok(a.socket, "room:join", { room });
      await ok(a.socket, "message:send", { room, text: "kept" });
      const h = await ok(a.socket, "history:fetch", { room });
      assert.deepEqual(
        h.messages.map((m) => m.text),
        ["kept"],
      );
    });
  });
}
