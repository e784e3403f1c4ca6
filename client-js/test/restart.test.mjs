// Restart persistence: an acked message is committed; a new server on the same database serves it.
import assert from "node:assert/strict";
import { describe, before, after } from "node:test";
import {
  STORES,
  FAST,
  it,
  connect,
  identity,
  roomId,
  ok,
  fails,
  sendMany,
  assertSameMessage,
  createDatabase,
  spawnServer,
  stopServer,
} from "./harness.mjs";

for (const store of STORES) {
  describe(`restart persistence [${store}]`, () => {
    let db;
    let server;
    before(async () => {
      db = await createDatabase(store);
    });
    after(async () => {
      if (server) await stopServer(server);
      if (db) await db.drop();
    });

    const alice = identity("alice");
    const bob = identity("bob");
    const room = roomId("durable");
    const priv = roomId("durable-priv");
    const state = {};

    it("before the restart: acked messages, a private room and a DM", async () => {
      server = await spawnServer({ databaseUrl: db.url, flags: FAST, label: `palaver/${store}#1` });
      const a = await connect(server, alice.auth);
      await ok(a.socket, "room:join", { room });
      state.sent = await sendMany(a.socket, room, 5, (i) => `durable ${i}`);
      state.dedupe = (await ok(a.socket, "message:send", { room, text: "keyed", clientId: "restart-key" })).message;
      await ok(a.socket, "room:create", { name: priv, visibility: "private", members: [bob.id] });
      await ok(a.socket, "message:send", { room: priv, text: "private note" });
      const b = await connect(server, bob.auth);
      await ok(b.socket, "room:join", { room: priv }, "bob accepts the invitation");
      state.dm = (await ok(a.socket, "dm:send", { to: bob.id, text: "dm before restart" })).message;
    });

    it("the server stops on SIGTERM within 5 s", async () => {
      assert.ok(server, "server from the previous test");
      const exit = await stopServer(server);
      assert.equal(server.killedHard ?? false, false, `needed SIGKILL; exit ${JSON.stringify(exit)}`);
    });

    it("after the restart on the same database: history, rooms, DMs and clientId dedupe survive", async () => {
      assert.ok(state.sent, "messages from the first test");
      server = await spawnServer({ databaseUrl: db.url, flags: FAST, label: `palaver/${store}#2` });

      const a = await connect(server, alice.auth);
      const entry = a.session.rooms.find((r) => r.id === room);
      assert.ok(entry, `session.rooms after restart lists ${room}`);
      assert.equal(entry.lastSeq, 6);

      const j = await ok(a.socket, "room:join", { room });
      assertSameMessage(j.history, [...state.sent, state.dedupe], "history equals the acked messages");
      assert.equal(j.hasMore, false);

      const again = await ok(a.socket, "message:send", { room, text: "keyed", clientId: "restart-key" });
      assertSameMessage(again.message, state.dedupe, "clientId dedupe survives the restart");

      const next = await ok(a.socket, "message:send", { room, text: "after restart" });
      assert.equal(next.message.seq, 7, "seq continues after the restart");
      assert.ok(!state.sent.some((m) => m.id === next.message.id));

      const b = await connect(server, bob.auth);
      const hp = await ok(b.socket, "history:fetch", { room: priv });
      assert.deepEqual(
        hp.messages.map((m) => m.text),
        ["private note"],
      );
      const dmEntry = b.session.rooms.find((r) => r.id === state.dm.room);
      assert.ok(dmEntry, "bob's DM is in his session rooms after the restart");
      assert.equal(dmEntry.kind, "dm");
      const hd = await ok(b.socket, "history:fetch", { room: state.dm.room });
      assertSameMessage(hd.messages, [state.dm], "DM history after restart");
      const reply = await ok(b.socket, "dm:send", { to: alice.id, text: "reply after restart" });
      assert.equal(reply.message.room, state.dm.room, "same DM room id after the restart");
      assert.equal(reply.message.seq, 2);

      const outsider = await connect(server, identity("carol").auth);
      await fails(outsider.socket, "room:join", { room: priv }, "forbidden", "private room after restart: ");
    });
  });
}
