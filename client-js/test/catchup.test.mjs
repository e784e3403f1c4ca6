// Catching up on changes (docs/guarantees.md, Delivery): a client that was away gets, through the catch-up it already
// makes (sync, or room:join { since } for a guest), every edit, delete and reaction to the messages it holds (each
// changed message once, in its current state, after the room revision it holds) and its read state — on both
// stores, across two nodes, and through the SDK's onChange after a reconnection.
import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  STORES,
  FAST,
  useServer,
  it,
  connect,
  identity,
  roomId,
  ok,
  fails,
  closeSocket,
  sendMany,
  sdkClient,
  outgoing,
  tcpProxy,
  until,
  waitDisconnect,
  waitFor,
  short,
  twoNodeGate,
  useTwoNodes,
} from "./harness.mjs";

/**
 * Alice holds messages 1..5 of a room (bob's) and the room's revision, then goes away; meanwhile bob edits 1, deletes
 * 2, reacts to 3, reacts to 4 and takes it back, sends 6 and a reply 7; alice's other device reads up to 3.
 * Returns what the assertions need.
 */
async function awayWhileChanged(srvAway, srvChanges = srvAway) {
  const alice = identity("alice");
  const bob = identity("bob");
  const room = roomId("away");
  const b = await connect(srvChanges, bob.auth);
  await ok(b.socket, "room:join", { room });
  // Alice joins first: what was said before a join counts as read.
  const a = await connect(srvAway, alice.auth);
  const joined = await ok(a.socket, "room:join", { room });
  assert.equal(joined.history.length, 0);
  const sent = await sendMany(b.socket, room, 5, (i) => `m${i}`);
  // Messages take seqs, not revisions: the revision alice joined at still holds.
  const held = { seq: 5, rev: joined.rev };
  closeSocket(a.socket);

  await ok(b.socket, "message:edit", { room, seq: 1, text: "m1, edited" });
  await ok(b.socket, "message:delete", { room, seq: 2 });
  await ok(b.socket, "reaction:add", { room, seq: 3, emoji: "🎉" });
  await ok(b.socket, "reaction:add", { room, seq: 4, emoji: "👀" });
  await ok(b.socket, "reaction:remove", { room, seq: 4, emoji: "👀" });
  await ok(b.socket, "message:send", { room, text: "m6" });
  await ok(b.socket, "message:send", { room, text: "re m1", replyTo: 1 });
  const otherDevice = await connect(srvChanges, alice.auth);
  await ok(otherDevice.socket, "room:read", { room, seq: 3 });
  closeSocket(otherDevice.socket);
  return { alice, bob, room, held, sent, b: b.socket };
}

/** Asserts a catch-up entry of `awayWhileChanged`'s room after `held`. */
function assertCaughtUp(entry, { sent }) {
  assert.deepEqual(
    entry.messages.map((m) => [m.seq, m.text]),
    [
      [6, "m6"],
      [7, "re m1"],
    ],
    "the messages after the seq held",
  );
  assert.deepEqual(entry.messages[1].replyTo.excerpt, "m1, edited", "in their current state");
  const changes = entry.changes;
  assert.ok(Array.isArray(changes), `changes in ${short(entry)}`);
  assert.deepEqual(
    changes.map((m) => m.seq),
    [1, 2, 3, 4],
    "each changed message once, in the order of its last change",
  );
  const [m1, m2, m3, m4] = changes;
  assert.equal(m1.text, "m1, edited");
  assert.ok(m1.editedAt, "editedAt");
  assert.equal(m1.id, sent[0].id);
  assert.equal(m2.deleted, true);
  assert.equal(m2.text, "");
  assert.deepEqual(m3.reactions, [{ emoji: "🎉", count: 1, me: false }]);
  assert.equal(m4.reactions, undefined, "a reaction taken back: the state has none");
  const revs = changes.map((m) => m.rev);
  assert.ok(revs.every((r, i) => Number.isInteger(r) && (i === 0 || r > revs[i - 1])), `revs ${revs}`);
  assert.equal(entry.rev, revs.at(-1), "the revision to hold next is the room's latest");
  assert.equal(entry.lastRead, 3, "read on another device while away");
  assert.equal(entry.unread, 4, "4, 5, 6 and 7: bob's, after 3, not deleted");
}

function catchUpScenarios(nodes) {
  const [first, second] = [() => nodes[0], () => nodes[1] ?? nodes[0]];

  it("sync { seq, rev }: the messages after seq, every message changed since rev in its current state, the read state", async () => {
    const away = await awayWhileChanged(first(), second());
    const a = await connect(second(), away.alice.auth);
    const listed = a.session.rooms.find((r) => r.id === away.room);
    assert.equal(listed.lastRead, 3, "session says where alice read up to");
    assert.equal(listed.unread, 4, "4, 5, 6 and 7 are bob's and after 3");
    const { rooms } = await ok(a.socket, "sync", { rooms: { [away.room]: away.held } });
    const entry = rooms[away.room];
    assertCaughtUp(entry, away);
    assert.equal(entry.reads, undefined, "no receipts in a group room by default");
    // From the new revision on: nothing more.
    const again = await ok(a.socket, "sync", { rooms: { [away.room]: { seq: 7, rev: entry.rev } } });
    assert.deepEqual(again.rooms[away.room].messages, []);
    assert.deepEqual(again.rooms[away.room].changes, []);
    assert.equal(again.rooms[away.room].rev, entry.rev);
    // A later change comes on its own.
    await ok(away.b, "message:edit", { room: away.room, seq: 3, text: "m3, edited" });
    const third = await ok(a.socket, "sync", { rooms: { [away.room]: { seq: 7, rev: entry.rev } } });
    assert.deepEqual(
      third.rooms[away.room].changes.map((m) => [m.seq, m.text, m.reactions]),
      [[3, "m3, edited", [{ emoji: "🎉", count: 1, me: false }]]],
    );
  });

  it("sync with a bare seq (no revision held) brings no changes, and the revision to start from", async () => {
    const away = await awayWhileChanged(first(), second());
    const a = await connect(second(), away.alice.auth);
    const { rooms } = await ok(a.socket, "sync", { rooms: { [away.room]: 5 } });
    const entry = rooms[away.room];
    assert.equal(entry.changes, undefined);
    assert.equal(entry.messages.length, 2);
    assert.ok(entry.rev > away.held.rev);
    assert.equal(entry.lastRead, 3);
  });

  it("a guest catches up with room:join { since, rev }", async () => {
    const bob = identity("bob");
    const room = roomId("guest-away");
    const b = await connect(first(), bob.auth);
    await ok(b.socket, "room:join", { room });
    await sendMany(b.socket, room, 3);
    const g = await connect(second(), { name: "Gwen" });
    const joined = await ok(g.socket, "room:join", { room });
    closeSocket(g.socket);
    await ok(b.socket, "message:edit", { room, seq: 2, text: "two" });
    await ok(b.socket, "message:send", { room, text: "four" });
    const back = await connect(second(), { name: "Gwen" });
    const rejoined = await ok(back.socket, "room:join", { room, since: 3, rev: joined.rev });
    assert.deepEqual(rejoined.history.map((m) => m.text), ["four"]);
    assert.deepEqual(rejoined.changes.map((m) => [m.seq, m.text]), [[2, "two"]]);
    assert.equal(rejoined.rev, rejoined.changes[0].rev);
    const plain = await ok(back.socket, "room:join", { room, since: 3 });
    assert.equal(plain.changes, undefined, "no rev, no changes");
  });

  it("bad cursors: a negative rev or seq refuses that room's entry; a rev that is not a number the whole sync", async () => {
    const away = await awayWhileChanged(first(), second());
    const a = await connect(second(), away.alice.auth);
    const { rooms } = await ok(a.socket, "sync", {
      rooms: { [away.room]: { seq: 5, rev: -1 }, "other-room": { seq: -2, rev: 0 } },
    });
    assert.equal(rooms[away.room].error.code, "bad_request");
    assert.equal(rooms["other-room"].error.code, "bad_request");
    await fails(a.socket, "sync", { rooms: { [away.room]: { seq: 5, rev: "7" } } }, "bad_request");
    await fails(a.socket, "sync", { rooms: { [away.room]: { rev: 7 } } }, "bad_request", "no seq: ");
    await fails(a.socket, "room:join", { room: away.room, since: 5, rev: -1 }, "bad_request");
  });
}

for (const store of STORES) {
  describe(`catch-up of changes [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });
    catchUpScenarios([srv]);
  });

  describe(`catch-up of changes: more than one catch-up holds (--recovery-limit 3) [${store}]`, () => {
    const srv = useServer(store, { flags: { ...FAST, "recovery-limit": 3 } });

    it("changesTruncated: rev is the last change returned; syncing again from it brings the rest", async () => {
      const bob = identity("bob");
      const room = roomId("many");
      const b = await connect(srv, bob.auth);
      const joined = await ok(b.socket, "room:join", { room });
      await sendMany(b.socket, room, 5);
      for (let seq = 5; seq >= 1; seq--) await ok(b.socket, "message:edit", { room, seq, text: `edited ${seq}` });
      const first = (await ok(b.socket, "sync", { rooms: { [room]: { seq: 5, rev: joined.rev } } })).rooms[room];
      assert.deepEqual(first.changes.map((m) => m.seq), [5, 4, 3]);
      assert.equal(first.changesTruncated, true);
      assert.equal(first.rev, first.changes[2].rev);
      const rest = (await ok(b.socket, "sync", { rooms: { [room]: { seq: 5, rev: first.rev } } })).rooms[room];
      assert.deepEqual(rest.changes.map((m) => m.seq), [2, 1]);
      assert.equal(rest.changesTruncated, undefined);
      assert.equal(rest.rev, rest.changes[1].rev);
    });
  });
}

describe(`catch-up of changes through the SDK: onChange after a reconnection [${STORES[0]}]`, () => {
  const srv = useServer(STORES[0], { flags: FAST });

  it("live changes come as they happen; those made while away come as states and read state after the reconnection", async () => {
    const proxy = await tcpProxy(srv);
    try {
      const room = roomId("sdk");
      const readerId = identity("reader");
      const reader = await sdkClient(proxy.url, { auth: readerId.auth, gapTimeout: 60_000 });
      const changes = [];
      reader.onChange((c) => changes.push(c));
      const syncs = outgoing(reader.socket, "sync");
      await reader.join(room);
      const writer = await sdkClient(srv.url, { auth: identity("writer").auth });
      await writer.join(room);
      const m = [];
      for (let i = 1; i <= 4; i++) m.push(await writer.send(room, `m${i}`));
      await until(() => reader.lastSeq(room) === 4);

      // Live: an edit, a reaction, a delete, and the reader's own read from another device.
      await writer.editMessage(room, 1, "m1 (live edit)");
      await writer.addReaction(room, 2, "👍");
      await writer.deleteMessage(room, 4);
      const device = await sdkClient(srv.url, { auth: readerId.auth });
      await device.session;
      await device.markRead(room, 2);
      await until(() => changes.length === 4, { what: () => short(changes) });
      assert.deepEqual(
        changes.map((c) => [c.type, c.message?.seq ?? c.seq]),
        [
          ["updated", 1],
          ["reaction", 2],
          ["deleted", 4],
          ["read", 2],
        ],
      );
      assert.equal(changes[0].message.text, "m1 (live edit)");

      // Away: the reader's transport is cut and held while everything changes.
      changes.length = 0;
      proxy.block();
      const gone = waitDisconnect(reader.socket);
      reader.socket.io.engine.close();
      await gone;
      await writer.editMessage(room, 3, "m3 (edited while away)");
      await writer.removeReaction(room, 2, "👍");
      await writer.addReaction(room, 1, "🔥");
      await writer.deleteMessage(room, 1);
      const reply = await writer.send(room, "m5", { replyTo: 3 });
      await device.markRead(room, 4);
      const session = waitFor(reader.socket, "session", () => true, 10_000);
      proxy.unblock();
      await session;
      await until(() => changes.some((c) => c.type === "readState") && reader.lastSeq(room) === 5 && !reader.recovering, {
        what: () => `changes ${short(changes)}, at ${reader.lastSeq(room)}`,
      });
      const lastSync = syncs.at(-1);
      assert.equal(lastSync.rooms[room].seq, 4, "sync carries the last seq held…");
      assert.ok(Number.isInteger(lastSync.rooms[room].rev), "…and the room revision held");
      const states = changes.filter((c) => c.type === "state").map((c) => c.message);
      // The live changes before the cut come again (the cursor moves only with catch-ups): states replace them.
      const bySeq = new Map(states.map((s) => [s.seq, s]));
      assert.equal(bySeq.get(1).deleted, true, "deleted while away");
      assert.equal(bySeq.get(2).reactions, undefined, "its reaction was taken back while away");
      assert.equal(bySeq.get(3).text, "m3 (edited while away)");
      assert.equal(bySeq.get(4).deleted, true);
      const readState = changes.find((c) => c.type === "readState");
      assert.deepEqual([readState.room, readState.lastRead, readState.unread], [room, 4, 1]);
      assert.equal(reply.replyTo.excerpt, "m3 (edited while away)");

      // A second catch-up finds nothing new: no state is handed over twice.
      changes.length = 0;
      await reader.catchUp();
      assert.deepEqual(
        changes.filter((c) => c.type === "state"),
        [],
        "nothing changed since the last catch-up",
      );
    } finally {
      await proxy.close();
    }
  });
});

const gate = await twoNodeGate();

describe("catch-up of changes on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { flags: FAST, label: "palaver/catchup" });
  catchUpScenarios(nodes);
});
