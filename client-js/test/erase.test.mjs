// `palaver user erase` end to end: the real binary erases a user from the database a running server uses (another
// process, at the same time), prints its report (JSON and text), and a socket.io-client connected all along sees the
// tombstones: through the catch-up it already makes (sync { seq, rev } brings every changed message) and in history.
// The erased user's memberships are gone: reconnecting, their session lists no room. On both stores.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, before, after } from "node:test";
import {
  STORES,
  FAST,
  BIN,
  it,
  connect,
  identity,
  roomId,
  ok,
  createDatabase,
  spawnServer,
  stopServer,
} from "./harness.mjs";

const run = promisify(execFile);

/** Runs the binary with `args` and a clean environment: `{ code, stdout, stderr }`. */
async function palaver(args) {
  try {
    const { stdout, stderr } = await run(BIN, args, { env: { PATH: process.env.PATH }, timeout: 30_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    return { code: err.code, stdout: err.stdout ?? "", stderr: err.stderr ?? "" };
  }
}

for (const store of STORES) {
  describe(`palaver user erase [${store}]`, () => {
    let db;
    let server;
    before(async () => {
      db = await createDatabase(store);
      server = await spawnServer({ databaseUrl: db.url, flags: FAST, label: `palaver/${store}` });
    });
    after(async () => {
      if (server) await stopServer(server);
      if (db) await db.drop();
    });

    it("erases a user while the server runs; a connected client sees the tombstones", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const room = roomId("erase");
      const a = await connect(server, alice.auth);
      const b = await connect(server, bob.auth);
      const joined = await ok(b.socket, "room:join", { room });
      await ok(a.socket, "room:join", { room });
      const sent = [];
      for (const [who, text] of [
        [a, "alice: my address is 1 Main St"],
        [b, "bob: noted"],
        [a, "alice: and my phone is 555-0100"],
      ]) {
        sent.push((await ok(who.socket, "message:send", { room, text })).message);
      }
      await ok(a.socket, "reaction:add", { room, seq: sent[1].seq, emoji: "👍" });
      const dm = (await ok(a.socket, "dm:send", { to: bob.id, text: "alice: a secret" })).message;
      // What bob holds before the erasure: the last seq and the revision of each room.
      const { rooms: held } = await ok(b.socket, "rooms:list", {});
      const roomRev = held.find((r) => r.id === room).rev;
      const dmRev = held.find((r) => r.id === dm.room).rev;
      assert.equal(typeof joined.rev, "number");

      const erased = await palaver(["user", "erase", alice.id, "--json", "--database-url", db.url]);
      assert.equal(erased.code, 0, `erase failed: ${erased.stderr}`);
      const report = JSON.parse(erased.stdout);
      assert.equal(report.user, alice.id);
      const root = report.namespaces.find((n) => n.namespace === "/");
      assert.ok(root, `report of /: ${erased.stdout}`);
      assert.equal(root.messagesTombstoned, 3, "two in the room, one in the DM");
      assert.equal(root.reactionsRemoved, 1);
      assert.equal(root.membershipsRemoved, 2, "the room and the DM");
      assert.deepEqual([...root.roomsChanged].sort(), [dm.room, room].sort());

      // Bob, connected all along, catches up as the SDK does: each changed message once, in its current state.
      const { rooms } = await ok(b.socket, "sync", {
        rooms: { [room]: { seq: sent[2].seq, rev: roomRev }, [dm.room]: { seq: dm.seq, rev: dmRev } },
      });
      const changes = rooms[room].changes;
      const bySeq = new Map(changes.map((m) => [m.seq, m]));
      for (const mine of [sent[0], sent[2]]) {
        const m = bySeq.get(mine.seq);
        assert.ok(m, `tombstone of seq ${mine.seq} in the changes: ${JSON.stringify(changes)}`);
        assert.equal(m.deleted, true);
        assert.equal(m.text, "");
        assert.equal(m.from.id, alice.id, "the seq keeps its sender id");
        assert.equal(m.from.name, "", "but not the display name");
      }
      assert.equal(bySeq.get(sent[1].seq)?.reactions, undefined, "alice's reaction left bob's message");
      assert.equal(rooms[dm.room].changes.length, 1);
      assert.equal(rooms[dm.room].changes[0].deleted, true);

      const history = await ok(b.socket, "history:fetch", { room, limit: 10 });
      assert.deepEqual(
        history.messages.map((m) => [m.seq, m.deleted ?? false, m.text]),
        [
          [sent[0].seq, true, ""],
          [sent[1].seq, false, "bob: noted"],
          [sent[2].seq, true, ""],
        ],
        "seqs stay gap-free; alice's text is gone",
      );

      // Alice's memberships went: a new connection of hers is in no room.
      a.socket.close();
      const again = await connect(server, alice.auth);
      assert.deepEqual(again.session.rooms, [], "no membership left");

      // Erasing again finds nothing; the text report says so.
      const second = await palaver(["user", "erase", alice.id, "--database-url", db.url]);
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stdout, /messages turned into tombstones: 0/);
      assert.match(second.stdout, /memberships removed \(with their read state\): 0/);
    });

    it("refuses a namespace that is not served and an empty id, exiting non-zero", async () => {
      const typo = await palaver(["user", "erase", "someone", "--namespace", "/gmae", "--database-url", db.url]);
      assert.notEqual(typo.code, 0);
      assert.match(typo.stderr, /--namespace "\/gmae" is not served/);
      const empty = await palaver(["user", "erase", "", "--database-url", db.url]);
      assert.notEqual(empty.code, 0);
      assert.match(empty.stderr, /user id is empty/);
    });
  });
}
