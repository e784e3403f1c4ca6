// history:fetch: latest, paging back with `before`, catching up with `after`, limits, access.
import assert from "node:assert/strict";
import { describe, before } from "node:test";
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
  sendMany,
  assertMessage,
  assertSameMessage,
  closeAll,
} from "./harness.mjs";

const N = 120;

function seqs(ack) {
  return ack.messages.map((m) => m.seq);
}
function range(from, to) {
  return from > to ? [] : Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

for (const store of STORES) {
  describe(`history [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });
    const owner = identity("historian");
    const room = roomId("hist");
    let sent;

    before(async () => {
      const { socket } = await connect(srv, owner.auth);
      await ok(socket, "room:join", { room });
      sent = await sendMany(socket, room, N, (i) => `m${i}`);
      closeAll();
    });

    async function member() {
      const { socket } = await connect(srv, owner.auth); // re-enters the room on connect
      return socket;
    }

    it(`${N} messages were committed with seq 1..${N}`, () => {
      assert.deepEqual(
        sent.map((m) => m.seq),
        range(1, N),
      );
    });

    it("no before/after: the latest 50, oldest first, hasMore", async () => {
      const s = await member();
      const h = await ok(s, "history:fetch", { room });
      assert.deepEqual(seqs(h), range(N - 49, N));
      assert.equal(h.hasMore, true);
      h.messages.forEach((m, i) => assertMessage(m, { room, text: `m${N - 49 + i}`, fromId: owner.id }));
      assertSameMessage(h.messages, sent.slice(N - 50), "history returns the messages as acked");
    });

    it("limit 100 and limit 1 without a cursor", async () => {
      const s = await member();
      const h100 = await ok(s, "history:fetch", { room, limit: 100 });
      assert.deepEqual(seqs(h100), range(N - 99, N));
      assert.equal(h100.hasMore, true);
      const h1 = await ok(s, "history:fetch", { room, limit: 1 });
      assert.deepEqual(seqs(h1), [N]);
      assert.equal(h1.hasMore, true);
    });

    it("paging backward with before until the start; hasMore false on the last page", async () => {
      const s = await member();
      const pages = [];
      let cursor = N + 1;
      for (let guard = 0; guard < 10; guard++) {
        const h = await ok(s, "history:fetch", { room, before: cursor, limit: 50 });
        pages.push({ seqs: seqs(h), hasMore: h.hasMore });
        if (!h.hasMore) break;
        cursor = h.messages[0].seq;
      }
      assert.deepEqual(pages, [
        { seqs: range(71, 120), hasMore: true },
        { seqs: range(21, 70), hasMore: true },
        { seqs: range(1, 20), hasMore: false },
      ]);
    });

    it("before with the default limit (50) and at the edges", async () => {
      const s = await member();
      const h = await ok(s, "history:fetch", { room, before: 100 });
      assert.deepEqual(seqs(h), range(50, 99));
      assert.equal(h.hasMore, true);
      const h51 = await ok(s, "history:fetch", { room, before: 51 });
      assert.deepEqual(seqs(h51), range(1, 50));
      assert.equal(h51.hasMore, false, "nothing below seq 1");
      const h1 = await ok(s, "history:fetch", { room, before: 1 });
      assert.deepEqual(seqs(h1), []);
      assert.equal(h1.hasMore, false);
    });

    it("paging forward with after until the end; hasMore false on the last page", async () => {
      const s = await member();
      const pages = [];
      let cursor = 0;
      for (let guard = 0; guard < 10; guard++) {
        const h = await ok(s, "history:fetch", { room, after: cursor, limit: 50 });
        pages.push({ seqs: seqs(h), hasMore: h.hasMore });
        if (!h.hasMore) break;
        cursor = h.messages.at(-1).seq;
      }
      assert.deepEqual(pages, [
        { seqs: range(1, 50), hasMore: true },
        { seqs: range(51, 100), hasMore: true },
        { seqs: range(101, 120), hasMore: false },
      ]);
    });

    it("after at and past the end", async () => {
      const s = await member();
      const h = await ok(s, "history:fetch", { room, after: N - 10, limit: 10 });
      assert.deepEqual(seqs(h), range(N - 9, N));
      assert.equal(h.hasMore, false, "exactly the last 10: nothing more above");
      const h2 = await ok(s, "history:fetch", { room, after: N - 11, limit: 10 });
      assert.deepEqual(seqs(h2), range(N - 10, N - 1));
      assert.equal(h2.hasMore, true);
      const end = await ok(s, "history:fetch", { room, after: N });
      assert.deepEqual(seqs(end), []);
      assert.equal(end.hasMore, false);
    });

    it("limit 0 and 101 are bad_request (with and without a cursor)", async () => {
      const s = await member();
      await fails(s, "history:fetch", { room, limit: 0 }, "bad_request");
      await fails(s, "history:fetch", { room, limit: 101 }, "bad_request");
      await fails(s, "history:fetch", { room, before: 50, limit: 0 }, "bad_request");
      await fails(s, "history:fetch", { room, after: 50, limit: 101 }, "bad_request");
    });

    it("an unknown room is not_found", async () => {
      const s = await member();
      await fails(s, "history:fetch", { room: roomId("nowhere") }, "not_found");
    });

    it("a private room: a non-member is forbidden, a member reads it", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const carol = identity("carol");
      const priv = roomId("priv");
      const a = await connect(srv, alice.auth);
      await ok(a.socket, "room:create", { name: priv, visibility: "private", members: [bob.id] });
      await ok(a.socket, "message:send", { room: priv, text: "members only" });
      const c = await connect(srv, carol.auth);
      await fails(c.socket, "history:fetch", { room: priv }, "forbidden");
      const anon = await connect(srv, { name: "peeker" });
      await fails(anon.socket, "history:fetch", { room: priv }, "forbidden");
      const b = await connect(srv, bob.auth);
      await fails(b.socket, "history:fetch", { room: priv }, "forbidden", "invited, not yet accepted: ");
      await ok(b.socket, "room:join", { room: priv, limit: 1 }, "bob accepts the invitation");
      const h = await ok(b.socket, "history:fetch", { room: priv });
      assert.deepEqual(
        h.messages.map((m) => m.text),
        ["members only"],
      );
    });

    it("a public room's history is readable before joining, as its messages are to anyone who joins", async () => {
      const outsider = await connect(srv, identity("outsider").auth);
      const before = await ok(outsider.socket, "history:fetch", { room, limit: 3 });
      assert.deepEqual(seqs(before), range(N - 2, N));
      await ok(outsider.socket, "room:join", { room, limit: 1 });
      const h = await ok(outsider.socket, "history:fetch", { room, limit: 3 });
      assert.deepEqual(seqs(h), range(N - 2, N));
    });

    it("an anonymous user who joined a public room can fetch its history", async () => {
      const anon = await connect(srv, { name: "anon-reader" });
      await ok(anon.socket, "room:join", { room, limit: 1 });
      const h = await ok(anon.socket, "history:fetch", { room, before: 3 });
      assert.deepEqual(seqs(h), [1, 2]);
      assert.equal(h.hasMore, false);
    });
  });
}
