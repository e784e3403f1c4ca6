// Restart persistence: an acked message is committed; a new server on the same database serves it. A stopping
// server takes no new connections while it drains: a client that tries is refused and keeps retrying.
import assert from "node:assert/strict";
import { describe, before, after } from "node:test";
import pg from "pg";
import {
  STORES,
  FAST,
  ACK_TIMEOUT_MS,
  it,
  client,
  connect,
  identity,
  roomId,
  ok,
  fails,
  sendMany,
  waitFor,
  until,
  fullHistory,
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

describe("shutdown: a draining server takes no new connections [postgres]", { skip: !STORES.includes("postgres") && "needs the postgres store" }, () => {
  let db;
  const servers = [];
  let lock;
  after(async () => {
    await lock?.end().catch(() => {});
    for (const s of servers) await stopServer(s);
    if (db) await db.drop();
  });

  it("while pending writes hold the drain, a new client is refused, keeps retrying, and gets in after the restart", { timeout: 60_000 }, async () => {
    db = await createDatabase("postgres");
    const first = await spawnServer({ databaseUrl: db.url, label: "palaver/draining" });
    servers.push(first);
    const room = roomId("drain");
    const writer = await connect(first, identity("writer").auth);
    await ok(writer.socket, "room:join", { room });

    // A send waits on a lock when SIGTERM comes: the server drains until it commits.
    lock = new pg.Client({ connectionString: db.url });
    await lock.connect();
    await lock.query("BEGIN");
    await lock.query("LOCK TABLE messages IN EXCLUSIVE MODE");
    writer.socket.timeout(30_000).emitWithAck("message:send", { room, text: "held", clientId: "held-1" }).catch(() => {});
    // Watched from another connection: inside the lock's transaction pg_stat_activity would stay as first read.
    const watch = new pg.Client({ connectionString: db.url });
    await watch.connect();
    const waiting = async () =>
      (
        await watch.query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO messages%'",
        )
      ).rows[0].n > 0;
    try {
      await until(waiting, { what: () => "the send waiting on the lock" });
    } finally {
      await watch.end();
    }

    const closed = waitFor(writer.socket, "disconnect", () => true, ACK_TIMEOUT_MS);
    first.child.kill("SIGTERM");
    assert.equal(await closed, "transport close", "the writer's socket is closed by the shutdown");

    // The server is still draining (the held send), and takes no one: the attempt fails as a transport error,
    // which socket.io-client retries, not as "Invalid namespace", which it never retries.
    const late = client(first, { auth: identity("late").auth, reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 200 });
    const err = await waitFor(late, "connect_error", () => true, ACK_TIMEOUT_MS);
    assert.equal(first.exit, null, "the server was still draining");
    assert.doesNotMatch(err.message, /namespace/i, "refused at the door, not by a half-stopped server");
    assert.equal(late.active, true, `socket.io-client keeps retrying after "${err.message}"`);

    await lock.query("COMMIT");
    await lock.end();
    lock = undefined;
    assert.deepEqual(await first.exited, { code: 0, signal: null }, "the server exits cleanly once the held send committed");

    const second = await spawnServer({ databaseUrl: db.url, listen: first.addr, label: "palaver/restarted" });
    servers.push(second);
    await waitFor(late, "session", () => true, 15_000);
    await ok(late, "room:join", { room });
    const history = await fullHistory(late, room);
    assert.deepEqual(history.map((m) => [m.text, m.clientId]), [["held", "held-1"]], "the held send committed during the drain");
  });
});
