// dm:send: 1:1 conversations between signed-in users, fan-out to every tab, stable DM room ids.
import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  STORES,
  FAST,
  useServer,
  it,
  connect,
  identity,
  ok,
  fails,
  call,
  assertMessage,
  assertRoom,
  assertUser,
  assertSameMessage,
  waitFor,
  noneOf,
  markerVia,
  collect,
} from "./harness.mjs";

for (const store of STORES) {
  describe(`dm [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    it("dm:send reaches both of the recipient's tabs and the sender's other tab, not the sending socket", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a1 = await connect(srv, alice.auth);
      const a2 = await connect(srv, alice.auth);
      const b1 = await connect(srv, bob.auth);
      const b2 = await connect(srv, bob.auth);

      const got = [a2, b1, b2].map((c) => waitFor(c.socket, "message", (m) => m.text === "hi bob"));
      const none = noneOf(a1.socket, "message");
      const ack = await ok(a1.socket, "dm:send", { to: bob.id, text: "hi bob" });
      assertMessage(ack.message, { seq: 1, fromId: alice.id, fromName: alice.name, text: "hi bob" });
      assert.ok(ack.message.room.startsWith("dm:"), `dm room id ${ack.message.room}`);
      const received = await Promise.all(got);
      for (const m of received) assert.deepEqual(m, ack.message);
      await none.before(markerVia(b1.socket, ack.message.room, [a1.socket]), "the sending socket");
    });

    it("the DM id is the same from both sides: the reply lands in the same room at the next seq", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      const first = await ok(a.socket, "dm:send", { to: bob.id, text: "ping" });
      const gotA = waitFor(a.socket, "message", (m) => m.text === "pong");
      const reply = await ok(b.socket, "dm:send", { to: alice.id, text: "pong" });
      assert.equal(reply.message.room, first.message.room);
      assert.equal(reply.message.seq, 2);
      assertMessage(reply.message, { fromId: bob.id, fromName: bob.name });
      assert.equal((await gotA).id, reply.message.id);
      // a third user's DM with alice is another room
      const carol = identity("carol");
      const c = await connect(srv, carol.auth);
      const other = await ok(c.socket, "dm:send", { to: alice.id, text: "hey" });
      assert.notEqual(other.message.room, first.message.room);
      assert.equal(other.message.seq, 1);
    });

    it("both users' sockets enter the DM room: message:send, history:fetch and typing work on it", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      const first = await ok(a.socket, "dm:send", { to: bob.id, text: "start" });
      const room = first.message.room;

      const got = waitFor(a.socket, "message", (m) => m.room === room && m.text === "via message:send");
      const viaSend = await ok(b.socket, "message:send", { room, text: "via message:send" });
      assert.equal(viaSend.message.seq, 2);
      await got;

      const h = await ok(b.socket, "history:fetch", { room });
      assert.deepEqual(
        h.messages.map((m) => m.text),
        ["start", "via message:send"],
      );

      const typing = waitFor(a.socket, "typing", (t) => t.room === room);
      b.socket.emit("typing", { room });
      const t = await typing;
      assertUser(t.user, { id: bob.id });
    });

    it("a tab that connects later re-enters the DM room and lists it with its peer", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      await connect(srv, bob.auth);
      const first = await ok(a.socket, "dm:send", { to: bob.id, text: "hello" });
      const room = first.message.room;

      const b2 = await connect(srv, bob.auth);
      const entry = b2.session.rooms.find((r) => r.id === room);
      assert.ok(entry, `session.rooms lists the DM: ${JSON.stringify(b2.session.rooms.map((r) => r.id))}`);
      assertRoom(entry, { id: room, kind: "dm" });
      assert.equal(entry.member, true);
      assert.equal(entry.lastSeq, 1);
      assertUser(entry.peer, { id: alice.id, name: alice.name, anonymous: false });

      const got = waitFor(b2.socket, "message", (m) => m.room === room);
      await ok(a.socket, "dm:send", { to: bob.id, text: "again" });
      assert.equal((await got).text, "again");
    });

    it("a DM to an offline signed-in user is stored; they see it on connect", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const b = await connect(srv, bob.auth);
      b.socket.close(); // bob is known, now offline
      const a = await connect(srv, alice.auth);
      const sent = await ok(a.socket, "dm:send", { to: bob.id, text: "while you were out" });
      const b2 = await connect(srv, bob.auth);
      const entry = b2.session.rooms.find((r) => r.id === sent.message.room);
      assert.ok(entry, "the DM is in bob's session rooms");
      assert.equal(entry.lastSeq, 1);
      const h = await ok(b2.socket, "history:fetch", { room: sent.message.room });
      assert.equal(h.messages[0].text, "while you were out");
    });

    it("dm:send to yourself is bad_request", async () => {
      const alice = identity("alice");
      const a = await connect(srv, alice.auth);
      await fails(a.socket, "dm:send", { to: alice.id, text: "me, myself" }, "bad_request");
    });

    it("dm:send to an anonymous user id that is gone is not_found", async () => {
      const anon = await connect(srv, { name: "ghost" });
      const anonId = anon.session.user.id;
      anon.socket.close();
      const a = await connect(srv, identity("alice").auth);
      await fails(a.socket, "dm:send", { to: anonId, text: "still there?" }, "not_found");
    });

    it("dm:send with empty text is bad_request, over the limit too_large", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      await connect(srv, bob.auth);
      await fails(a.socket, "dm:send", { to: bob.id, text: "  " }, "bad_request");
      await fails(a.socket, "dm:send", { to: bob.id, text: "x".repeat(4001) }, "too_large");
    });

    it("dm:send clientId dedupe returns the original and delivers once", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      const seen = collect(b.socket, "message");
      const m1 = await ok(a.socket, "dm:send", { to: bob.id, text: "once", clientId: "dm-c1" });
      const m2 = await ok(a.socket, "dm:send", { to: bob.id, text: "once", clientId: "dm-c1" });
      assertSameMessage(m2.message, m1.message);
      const after = waitFor(b.socket, "message", (m) => m.text === "after");
      await ok(a.socket, "dm:send", { to: bob.id, text: "after" });
      await after;
      seen.stop();
      assert.deepEqual(
        seen.map((m) => m.text),
        ["once", "after"],
      );
    });

    it("a third user cannot read or join the DM", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      await connect(srv, bob.auth);
      const sent = await ok(a.socket, "dm:send", { to: bob.id, text: "private" });
      const room = sent.message.room;
      const c = await connect(srv, identity("carol").auth);
      await fails(c.socket, "history:fetch", { room }, "forbidden");
      const join = await call(c.socket, "room:join", { room });
      assert.equal(join.ok, false, `room:join of someone else's DM must fail: ${JSON.stringify(join)}`);
      assert.equal(join.error.code, "forbidden");
      await fails(c.socket, "message:send", { room, text: "intruder" }, "forbidden");
    });
  });
}
