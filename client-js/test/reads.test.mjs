// room:read: a member's read position (never backwards), lastRead and unread in rooms:list and session, `read` to the
// user's other sockets at once, read receipts to the other members (always in DMs, in group rooms with
// --read-receipts), throttled to one a second per user and room carrying the latest seq. Errors: a seq not yet
// used is not_found, a malformed one bad_request, a guest in a public room forbidden. On both stores and two nodes.
import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  FAST,
  useServer,
  it,
  connect,
  identity,
  roomId,
  ok,
  fails,
  waitFor,
  noneOf,
  markerVia,
  laterAck,
  collect,
  until,
  assertUser,
  sendMany,
  pairInRoom,
  onStoresAndTwoNodes,
} from "./harness.mjs";

/** The summary of `room` in `socket`'s rooms:list. */
async function summary(socket, room) {
  const { rooms } = await ok(socket, "rooms:list", {});
  return rooms.find((r) => r.id === room);
}

/** The read scenarios (see `onStoresAndTwoNodes`). */
function readScenarios(on) {
  const { first, second } = on;

  it("lastRead and unread in rooms:list and session: others' messages after lastRead, deleted ones left out", async () => {
    const { room, a, b, alice } = await on.pair("unread");
    await sendMany(b, room, 3, (i) => `bob ${i}`); // 1..3
    await sendMany(a, room, 2, (i) => `alice ${i}`); // 4..5
    let s = await summary(a, room);
    assert.equal(s.lastRead, 0);
    assert.equal(s.unread, 3, "bob's three; alice's own do not count");
    assert.ok(Number.isInteger(s.rev));
    assert.equal((await summary(b, room)).unread, 2);
    await ok(b, "message:delete", { room, seq: 2 });
    assert.equal((await summary(a, room)).unread, 2, "a deleted message is not unread");
    assert.deepEqual(await ok(a, "room:read", { room, seq: 3 }), { ok: true });
    s = await summary(a, room);
    assert.equal(s.lastRead, 3);
    assert.equal(s.unread, 0);
    await ok(b, "message:send", { room, text: "one more" });
    // A new connection's session says the same.
    const again = await connect(second(), alice.auth);
    const listed = again.session.rooms.find((r) => r.id === room);
    assert.equal(listed.lastRead, 3);
    assert.equal(listed.unread, 1);
    // A public room the user is not in: no read state.
    const outsider = await connect(first(), identity("out").auth);
    const seen = await summary(outsider.socket, room);
    assert.equal(seen.lastRead, 0);
    assert.equal(seen.unread, 0);
  });

  it("the user's other sockets get `read` at once; the reading socket does not; a read never moves back", async () => {
    const alice = identity("alice");
    const room = roomId("tabs");
    const t1 = await connect(first(), alice.auth);
    await ok(t1.socket, "room:join", { room });
    const t2 = await connect(second(), alice.auth); // re-enters the room
    const writer = await connect(first(), identity("writer").auth);
    await ok(writer.socket, "room:join", { room });
    await sendMany(writer.socket, room, 5);
    const onT2 = collect(t2.socket, "read", (e) => e.room === room);
    const noneT1 = noneOf(t1.socket, "read");
    const got = waitFor(t2.socket, "read", (e) => e.seq === 4);
    await ok(t1.socket, "room:read", { room, seq: 4 });
    const event = await got;
    assertUser(event.user, { id: alice.id });
    await noneT1.before(laterAck(t1.socket), "the reading socket");
    // Backwards: ok, unchanged, nobody told; the next forward read is the next event the other tab gets.
    assert.deepEqual(await ok(t1.socket, "room:read", { room, seq: 2 }), { ok: true });
    assert.equal((await summary(t1.socket, room)).lastRead, 4);
    const five = waitFor(t2.socket, "read", (e) => e.seq === 5);
    await ok(t1.socket, "room:read", { room, seq: 5 });
    await five;
    onT2.stop();
    assert.deepEqual(onT2.map((e) => e.seq), [4, 5], "no event for the read that moved nothing");
  });

  it("in a DM the other user gets the read receipt", async () => {
    const alice = identity("alice");
    const bob = identity("bob");
    const a = await connect(first(), alice.auth);
    const b = await connect(second(), bob.auth);
    const { message } = await ok(a.socket, "dm:send", { to: bob.id, text: "seen?" });
    const receipt = waitFor(a.socket, "read", (e) => e.room === message.room);
    await ok(b.socket, "room:read", { room: message.room, seq: message.seq });
    const event = await receipt;
    assert.equal(event.seq, message.seq);
    assertUser(event.user, { id: bob.id });
  });

  it("in a group room receipts are off by default: the other members get no `read`", async () => {
    const { room, a, b, alice } = await on.pair("quiet");
    await ok(b, "message:send", { room, text: "hi" });
    const none = noneOf(b, "read");
    await ok(a, "room:read", { room, seq: 1 });
    await none.before(markerVia(a, room, [b]), "bob, another member");
  });

  it("errors: a seq not yet used is not_found, a malformed one bad_request, outside the room or as a guest forbidden", async () => {
    const alice = identity("alice");
    const room = roomId("bad-read");
    const a = await connect(first(), alice.auth);
    await ok(a.socket, "room:join", { room });
    await ok(a.socket, "message:send", { room, text: "one" });
    await fails(a.socket, "room:read", { room, seq: 2 }, "not_found");
    for (const payload of [{ room, seq: 0 }, { room, seq: -1 }, { room, seq: 1.5 }, { room, seq: "1" }, { room }, { seq: 1 }]) {
      await fails(a.socket, "room:read", payload, "bad_request");
    }
    const outsider = await connect(second(), identity("out").auth);
    await fails(outsider.socket, "room:read", { room, seq: 1 }, "forbidden", "not in the room: ");
    const guest = await connect(second(), { name: "guest" });
    await ok(guest.socket, "room:join", { room });
    await fails(guest.socket, "room:read", { room, seq: 1 }, "forbidden", "a guest in a public room: ");
    assert.equal((await summary(a.socket, room)).lastRead, 0, "nothing moved");
  });
}

/** Read receipts in group rooms, where the namespace turns them on. */
function receiptScenarios(store) {
  describe(`read receipts in group rooms: --read-receipts true [${store}]`, () => {
    const srv = useServer(store, { flags: { ...FAST, "read-receipts": true } });

    it("members get receipts, at most one a second per reader, the last one carrying the latest seq", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const room = roomId("receipts");
      const a = await connect(srv, alice.auth);
      const a2 = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      await ok(a.socket, "room:join", { room });
      await ok(b.socket, "room:join", { room });
      await ok(a2.socket, "room:join", { room });
      await sendMany(b.socket, room, 10);
      const receipts = collect(b.socket, "read", (e) => e.room === room);
      const own = collect(a2.socket, "read", (e) => e.room === room);
      const started = Date.now();
      // A scrolling client: every message marked read, one after the other.
      for (let seq = 1; seq <= 10; seq++) await ok(a.socket, "room:read", { room, seq });
      const took = Date.now() - started;
      await until(() => receipts.some((e) => e.seq === 10), { what: () => `receipts ${JSON.stringify(receipts.map((e) => e.seq))}` });
      await until(() => own.some((e) => e.seq === 10));
      const seqs = receipts.map((e) => e.seq);
      assert.equal(seqs[0], 1, "the first receipt goes at once");
      assert.equal(seqs.at(-1), 10, "the latest seq is never dropped");
      assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `in order: ${seqs}`);
      // One at once, then at most one per started second.
      assert.ok(seqs.length <= 2 + Math.floor(took / 1000), `${seqs.length} receipts for 10 reads in ${took} ms: ${seqs}`);
      assert.ok(seqs.length < 10, "throttled");
      for (const e of receipts) assertUser(e.user, { id: alice.id });
      assert.deepEqual(own.map((e) => e.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "the user's own sockets get every read at once");
      receipts.stop();
      own.stop();
    });

    it("a sync in such a room brings the other members' positions", async () => {
      const { room, a, b, bob } = await pairInRoom(srv, srv, "positions");
      await sendMany(a, room, 3);
      await ok(b, "room:read", { room, seq: 2 });
      const { rooms } = await ok(a, "sync", { rooms: { [room]: 3 } });
      assert.deepEqual(
        rooms[room].reads.map((r) => [r.user.id, r.seq]),
        [[bob.id, 2]],
      );
    });
  });
}

await onStoresAndTwoNodes("reads", readScenarios, {
  perStore: receiptScenarios,
  twoNodes: (on) => {
    it("a read on node A reaches the user's socket on node B, and its rooms:list there", async () => {
      const alice = identity("alice");
      const room = roomId("x");
      const onA = await connect(on.nodes[0], alice.auth);
      await ok(onA.socket, "room:join", { room });
      await ok(onA.socket, "message:send", { room, text: "m" });
      const onB = await connect(on.nodes[1], alice.auth);
      const got = waitFor(onB.socket, "read", (e) => e.room === room && e.seq === 1);
      await ok(onA.socket, "room:read", { room, seq: 1 });
      await got;
      assert.equal((await summary(onB.socket, room)).lastRead, 1);
    });
  },
});
