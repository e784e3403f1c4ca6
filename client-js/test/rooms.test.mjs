// Rooms: room:create, room:join, room:leave, rooms:list.
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
  rand,
  ok,
  fails,
  call,
  assertRoom,
  assertUser,
  assertMessage,
  sendMany,
  waitFor,
  noneOf,
  laterAck,
} from "./harness.mjs";

for (const store of STORES) {
  describe(`rooms [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    // -- room:create -----------------------------------------------------------------------------

    it("room:create makes a public group room by default, id = name", async () => {
      const { socket } = await connect(srv, identity("creator").auth);
      const name = roomId("pub");
      const ack = await ok(socket, "room:create", { name });
      assertRoom(ack.room, { id: name, kind: "group", visibility: "public" });
      assert.equal(ack.room.name, name);
    });

    it("room:create with visibility private and members", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const { socket } = await connect(srv, alice.auth);
      const name = roomId("priv");
      const ack = await ok(socket, "room:create", { name, visibility: "private", members: [bob.id] });
      assertRoom(ack.room, { id: name, kind: "group", visibility: "private" });
    });

    it("the creator's socket is in the created room (can send without joining)", async () => {
      const { socket } = await connect(srv, identity("c").auth);
      const name = roomId("created");
      await ok(socket, "room:create", { name });
      const m = await ok(socket, "message:send", { room: name, text: "first" });
      assertMessage(m.message, { room: name, seq: 1, text: "first" });
    });

    it("room:create with an existing id is bad_request", async () => {
      const a = await connect(srv, identity("a").auth);
      const b = await connect(srv, identity("b").auth);
      const name = roomId("dup");
      await ok(a.socket, "room:create", { name });
      await fails(a.socket, "room:create", { name }, "bad_request", "same creator: ");
      await fails(b.socket, "room:create", { name }, "bad_request", "other user: ");
      // a room auto-created by room:join exists too
      const joined = roomId("joined");
      await ok(b.socket, "room:join", { room: joined });
      await fails(a.socket, "room:create", { name: joined }, "bad_request", "auto-created: ");
    });

    it('room:create with the reserved "dm:" prefix is forbidden', async () => {
      const { socket } = await connect(srv, identity("a").auth);
      await fails(socket, "room:create", { name: `dm:${rand()}` }, "forbidden");
      await fails(socket, "room:create", { name: "dm:" }, "forbidden");
    });

    for (const [label, name] of [
      ["empty", ""],
      ["65 characters", "r".repeat(65)],
      ["with a space", "has space"],
      ["with a slash", "a/b"],
      ["with a non-ASCII letter", "café"],
      ["with a hash", "room#1"],
    ]) {
      it(`room:create with a name ${label} is bad_request`, async () => {
        const { socket } = await connect(srv, identity("a").auth);
        await fails(socket, "room:create", { name }, "bad_request");
      });
    }

    it("room:create accepts a 64-character id and every allowed character class", async () => {
      const { socket } = await connect(srv, identity("a").auth);
      const name64 = `x${rand(8)}`.padEnd(64, "z");
      assert.equal(name64.length, 64);
      const a = await ok(socket, "room:create", { name: name64 });
      assert.equal(a.room.id, name64);
      const odd = `A-z_0.9:${rand()}`;
      const b = await ok(socket, "room:create", { name: odd });
      assert.equal(b.room.id, odd);
    });

    it("room:create with a bad visibility is bad_request", async () => {
      const { socket } = await connect(srv, identity("a").auth);
      await fails(socket, "room:create", { name: roomId("vis"), visibility: "secret" }, "bad_request");
    });

    // -- room:join -------------------------------------------------------------------------------

    it("room:join auto-creates a public group room and lists the joiner among members", async () => {
      const u = identity("joiner");
      const { socket } = await connect(srv, u.auth);
      const room = roomId("auto");
      const ack = await ok(socket, "room:join", { room });
      assertRoom(ack.room, { id: room, kind: "group", visibility: "public" });
      assert.deepEqual(ack.history, []);
      assert.equal(ack.hasMore, false);
      assert.ok(Array.isArray(ack.members));
      const me = ack.members.filter((m) => m.id === u.id);
      assert.equal(me.length, 1, `joiner listed once in members: ${JSON.stringify(ack.members)}`);
      assertUser(me[0], { id: u.id, name: u.name, anonymous: false });
    });

    it("room:join returns the latest 50 messages oldest-first by default, hasMore when older exist", async () => {
      const a = await connect(srv, identity("a").auth);
      const room = roomId("hist");
      await ok(a.socket, "room:join", { room });
      await sendMany(a.socket, room, 55);
      const b = await connect(srv, identity("b").auth);
      const ack = await ok(b.socket, "room:join", { room });
      assert.equal(ack.history.length, 50);
      assert.deepEqual(
        ack.history.map((m) => m.seq),
        range(6, 55),
      );
      assert.equal(ack.history[0].text, "message 6");
      assert.equal(ack.hasMore, true);
      for (const m of ack.history) assertMessage(m, { room });
    });

    it("room:join with limit returns that many latest messages", async () => {
      const a = await connect(srv, identity("a").auth);
      const room = roomId("lim");
      await ok(a.socket, "room:join", { room });
      await sendMany(a.socket, room, 12);
      const b = await connect(srv, identity("b").auth);
      const ack = await ok(b.socket, "room:join", { room, limit: 5 });
      assert.deepEqual(
        ack.history.map((m) => m.seq),
        [8, 9, 10, 11, 12],
      );
      assert.equal(ack.hasMore, true);
      const c = await connect(srv, identity("c").auth);
      const all = await ok(c.socket, "room:join", { room, limit: 12 });
      assert.equal(all.history.length, 12);
      assert.equal(all.hasMore, false, "no older message than seq 1");
      const d = await connect(srv, identity("d").auth);
      const more = await ok(d.socket, "room:join", { room, limit: 100 });
      assert.equal(more.history.length, 12);
      assert.equal(more.hasMore, false);
    });

    it("room:join with limit 0 or 101 is bad_request", async () => {
      const { socket } = await connect(srv, identity("a").auth);
      const room = roomId("badlim");
      await fails(socket, "room:join", { room, limit: 0 }, "bad_request");
      await fails(socket, "room:join", { room, limit: 101 }, "bad_request");
    });

    it("room:join lists the users online in the room now, once each", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const carol = identity("carol");
      const room = roomId("online");
      const a1 = await connect(srv, alice.auth);
      const a2 = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      await ok(a1.socket, "room:join", { room });
      await ok(a2.socket, "room:join", { room });
      await ok(b.socket, "room:join", { room });
      b.socket.close(); // bob goes offline: not listed any more
      await waitFor(a1.socket, "room:notice", (n) => n.room === room && n.kind === "leave" && n.user.id === bob.id);
      const c = await connect(srv, carol.auth);
      const ack = await ok(c.socket, "room:join", { room });
      const ids = ack.members.map((m) => m.id).sort();
      assert.deepEqual(ids, [alice.id, carol.id].sort());
    });

    it("a private room: join by a non-member is forbidden, by a listed member (JWT) is ok", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const carol = identity("carol");
      const room = roomId("vip");
      const a = await connect(srv, alice.auth);
      await ok(a.socket, "room:create", { name: room, visibility: "private", members: [bob.id] });
      await ok(a.socket, "message:send", { room, text: "secret" });

      const c = await connect(srv, carol.auth);
      await fails(c.socket, "room:join", { room }, "forbidden", "carol: ");
      const anon = await connect(srv, { name: "lurker" });
      await fails(anon.socket, "room:join", { room }, "forbidden", "anonymous: ");

      const b = await connect(srv, bob.auth);
      const ack = await ok(b.socket, "room:join", { room });
      assertRoom(ack.room, { id: room, visibility: "private" });
      assert.deepEqual(
        ack.history.map((m) => m.text),
        ["secret"],
      );
    });

    it("room:join of a dm: id that is not yours is forbidden or not_found, never ok", async () => {
      const { socket } = await connect(srv, identity("a").auth);
      const ack = await call(socket, "room:join", { room: `dm:${rand(16)}` });
      assert.equal(ack.ok, false, JSON.stringify(ack));
      assert.ok(["forbidden", "not_found"].includes(ack.error.code), JSON.stringify(ack));
    });

    // -- room:leave ------------------------------------------------------------------------------

    it("room:leave: ok {}, then sending is forbidden and leaving again is not_found", async () => {
      const { socket } = await connect(srv, identity("leaver").auth);
      const room = roomId("leave");
      await ok(socket, "room:join", { room });
      const ack = await ok(socket, "room:leave", { room });
      assert.deepEqual(ack, { ok: true });
      await fails(socket, "message:send", { room, text: "still here?" }, "forbidden");
      await fails(socket, "room:leave", { room }, "not_found");
    });

    it("room:leave of a room you never joined is not_found", async () => {
      const a = await connect(srv, identity("a").auth);
      const b = await connect(srv, identity("b").auth);
      const room = roomId("never");
      await ok(a.socket, "room:join", { room });
      await fails(b.socket, "room:leave", { room }, "not_found");
      await fails(b.socket, "room:leave", { room: roomId("nosuch") }, "not_found");
    });

    it("room:leave removes all of the user's sockets from the room and tells the others once", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const room = roomId("leaveall");
      const a1 = await connect(srv, alice.auth);
      const a2 = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      await ok(a1.socket, "room:join", { room });
      await ok(a2.socket, "room:join", { room });
      await ok(b.socket, "room:join", { room });

      const notices = [];
      b.socket.on("room:notice", (n) => n.room === room && notices.push(n));
      await ok(a1.socket, "room:leave", { room });
      await fails(a2.socket, "message:send", { room, text: "tab 2" }, "forbidden", "other tab after leave: ");

      // bob's messages no longer reach either of alice's tabs
      // they are out of the room, so no marker reaches them there: a later ack of each is the barrier
      const none1 = noneOf(a1.socket, "message");
      const none2 = noneOf(a2.socket, "message");
      await ok(b.socket, "message:send", { room, text: "anyone?" });
      await none1.before(laterAck(a1.socket), "tab 1");
      await none2.before(laterAck(a2.socket), "tab 2");

      const leaves = notices.filter((n) => n.kind === "leave");
      assert.equal(leaves.length, 1, `exactly one leave notice: ${JSON.stringify(notices)}`);
      assertUser(leaves[0].user, { id: alice.id });

      // membership gone: alice's next connection does not re-enter the room
      const a3 = await connect(srv, alice.auth);
      const entry = a3.session.rooms.find((r) => r.id === room);
      assert.ok(!entry || entry.member === false, `room should not be a membership any more: ${JSON.stringify(entry)}`);
      await fails(a3.socket, "message:send", { room, text: "x" }, "forbidden");
    });

    // -- rooms:list ------------------------------------------------------------------------------

    it("rooms:list: own rooms, DMs and public rooms with lastSeq; others' private rooms hidden", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);

      const mine = roomId("mine");
      await ok(a.socket, "room:create", { name: mine, visibility: "private" });
      await sendMany(a.socket, mine, 3);

      const bobsPublic = roomId("bobpub");
      await ok(b.socket, "room:create", { name: bobsPublic });
      await sendMany(b.socket, bobsPublic, 2);

      const bobsPrivate = roomId("bobpriv");
      await ok(b.socket, "room:create", { name: bobsPrivate, visibility: "private" });

      const dm = await ok(a.socket, "dm:send", { to: bob.id, text: "hi bob" });

      const list = await ok(a.socket, "rooms:list", {});
      assert.ok(Array.isArray(list.rooms));
      const byId = new Map(list.rooms.map((r) => [r.id, r]));

      const m = byId.get(mine);
      assert.ok(m, "own private room listed");
      assertRoom(m, { id: mine, kind: "group", visibility: "private" });
      assert.equal(m.lastSeq, 3);
      assert.equal(m.member, true);

      const p = byId.get(bobsPublic);
      assert.ok(p, "someone else's public room listed");
      assert.equal(p.lastSeq, 2);
      assert.equal(p.member, false);

      assert.ok(!byId.has(bobsPrivate), "someone else's private room must not be listed");

      const d = byId.get(dm.message.room);
      assert.ok(d, "DM listed");
      assertRoom(d, { kind: "dm" });
      assert.equal(d.member, true);
      assert.equal(d.lastSeq, 1);
      assertUser(d.peer, { id: bob.id, name: bob.name, anonymous: false });
    });

    it("rooms:list: a room with no message has lastSeq 0", async () => {
      const { socket } = await connect(srv, identity("a").auth);
      const room = roomId("quiet");
      await ok(socket, "room:join", { room });
      const list = await ok(socket, "rooms:list", {});
      const entry = list.rooms.find((r) => r.id === room);
      assert.ok(entry);
      assert.equal(entry.lastSeq, 0);
      assert.equal(entry.member, true);
    });

    it("rooms:list: most recently active first", async () => {
      const { socket } = await connect(srv, identity("a").auth);
      const r1 = roomId("older");
      const r2 = roomId("newer");
      await ok(socket, "room:join", { room: r1 });
      await ok(socket, "room:join", { room: r2 });
      await ok(socket, "message:send", { room: r2, text: "first in r2" });
      await ok(socket, "message:send", { room: r1, text: "later in r1" });
      let ids = (await ok(socket, "rooms:list", {})).rooms.map((r) => r.id);
      assert.ok(ids.indexOf(r1) < ids.indexOf(r2), `r1 (newest message) before r2: ${ids}`);
      await ok(socket, "message:send", { room: r2, text: "r2 again" });
      ids = (await ok(socket, "rooms:list", {})).rooms.map((r) => r.id);
      assert.ok(ids.indexOf(r2) < ids.indexOf(r1), `r2 now before r1: ${ids}`);
    });
  });

  describe(`rooms: --auto-create-rooms false [${store}]`, () => {
    const srv = useServer(store, { flags: { "auto-create-rooms": false } });

    it("room:join of an unknown room is not_found; a created one can be joined", async () => {
      const a = await connect(srv, identity("a").auth);
      const b = await connect(srv, identity("b").auth);
      await fails(a.socket, "room:join", { room: roomId("ghost") }, "not_found");
      const room = roomId("real");
      await ok(a.socket, "room:create", { name: room });
      const ack = await ok(b.socket, "room:join", { room });
      assertRoom(ack.room, { id: room });
    });
  });

  describe(`rooms: --max-rooms-per-socket 3 [${store}]`, () => {
    const srv = useServer(store, { flags: { "max-rooms-per-socket": 3 } });

    it("a fourth room on one socket is too_large; another socket is not affected", async () => {
      const a = await connect(srv, identity("a").auth);
      const rooms = [roomId("m1"), roomId("m2"), roomId("m3"), roomId("m4")];
      for (const room of rooms.slice(0, 3)) await ok(a.socket, "room:join", { room });
      await fails(a.socket, "room:join", { room: rooms[3] }, "too_large");
      const b = await connect(srv, { name: "b" });
      await ok(b.socket, "room:join", { room: rooms[3] });
      // leaving one makes room for another
      await ok(a.socket, "room:leave", { room: rooms[0] });
      await ok(a.socket, "room:join", { room: rooms[3] });
    });
  });
}

function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
