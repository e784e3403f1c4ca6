// Presence and notices: room:notice is about users not sockets; presence:list; typing.
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
  call,
  assertUser,
  waitFor,
  noneOf,
  markerVia,
  laterAck,
  closeHandled,
  isMarker,
  collect,
  closeSocket,
  RFC3339,
} from "./harness.mjs";

const isNotice = (room, kind, userId) => (n) => n.room === room && n.kind === kind && n.user?.id === userId;

for (const store of STORES) {
  describe(`presence and notices [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    it("two tabs of one user: one join notice, none for the second tab, none when one tab closes, one leave at the last", async () => {
      const alice = identity("alice");
      const watcher = identity("watcher");
      const room = roomId("tabs");
      const w = await connect(srv, watcher.auth);
      await ok(w.socket, "room:join", { room });
      const notices = collect(w.socket, "room:notice", (n) => n.room === room);

      const join = waitFor(w.socket, "room:notice", isNotice(room, "join", alice.id));
      const t1 = await connect(srv, alice.auth);
      await ok(t1.socket, "room:join", { room });
      const n = await join;
      assertUser(n.user, { id: alice.id, name: alice.name, anonymous: false });
      assert.match(n.at, RFC3339);

      const t2 = await connect(srv, alice.auth);
      const noSecondJoin = noneOf(w.socket, "room:notice", (x) => x.room === room);
      await ok(t2.socket, "room:join", { room });
      await noSecondJoin.before(markerVia(t2.socket, room, [w.socket]), "second tab joined");

      const noLeave = noneOf(w.socket, "room:notice", (x) => x.room === room);
      await noLeave.before(
        closeHandled(t1.socket, alice.id, w.socket).then(() => markerVia(t2.socket, room, [w.socket])),
        "first tab closed",
      );

      const leave = waitFor(w.socket, "room:notice", isNotice(room, "leave", alice.id));
      closeSocket(t2.socket);
      const l = await leave;
      assertUser(l.user, { id: alice.id });
      assert.match(l.at, RFC3339);
      const noSecondLeave = noneOf(w.socket, "room:notice", (x) => x.room === room && x.kind === "leave");
      const bystander = await connect(srv, identity("bystander").auth);
      await ok(bystander.socket, "room:join", { room });
      await noSecondLeave.before(markerVia(bystander.socket, room, [w.socket]), "after the last tab's leave");

      notices.stop();
      assert.deepEqual(
        notices.filter((x) => x.user.id === alice.id).map((x) => `${x.kind}:${x.user.id}`),
        [`join:${alice.id}`, `leave:${alice.id}`],
      );
    });

    it("a later tab re-enters the user's rooms on connect without a notice, and can send there", async () => {
      const alice = identity("alice");
      const watcher = identity("watcher");
      const room = roomId("reenter");
      const w = await connect(srv, watcher.auth);
      await ok(w.socket, "room:join", { room });
      const t1 = await connect(srv, alice.auth);
      const join = waitFor(w.socket, "room:notice", isNotice(room, "join", alice.id));
      await ok(t1.socket, "room:join", { room });
      await join;

      const none = noneOf(w.socket, "room:notice", (x) => x.room === room);
      const t2 = await connect(srv, alice.auth);
      assert.ok(
        t2.session.rooms.some((r) => r.id === room && r.member === true),
        "session.rooms has the membership",
      );
      // the new tab's message is the marker: a notice from its connect would have come before it
      const got = waitFor(w.socket, "message", (m) => m.room === room);
      await ok(t2.socket, "message:send", { room, text: "from the new tab" });
      await none.before(got, "a later tab re-entered the room");
      assert.equal((await got).text, "from the new tab");
    });

    it("the first socket of a reconnecting user announces join", async () => {
      const alice = identity("alice");
      const watcher = identity("watcher");
      const room = roomId("back");
      const w = await connect(srv, watcher.auth);
      await ok(w.socket, "room:join", { room });
      const t1 = await connect(srv, alice.auth);
      await ok(t1.socket, "room:join", { room });
      const leave = waitFor(w.socket, "room:notice", isNotice(room, "leave", alice.id));
      closeSocket(t1.socket);
      await leave;

      const join = waitFor(w.socket, "room:notice", isNotice(room, "join", alice.id));
      await connect(srv, alice.auth);
      await join;
    });

    it("presence:list lists each online user once, however many tabs", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const room = roomId("pres");
      const a1 = await connect(srv, alice.auth);
      const a2 = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      for (const s of [a1, a2, b]) await ok(s.socket, "room:join", { room });
      const anon = await connect(srv, { name: "guest" });
      await ok(anon.socket, "room:join", { room });

      const p = await ok(b.socket, "presence:list", { room });
      assert.ok(Array.isArray(p.users));
      const ids = p.users.map((u) => u.id).sort();
      assert.deepEqual(ids, [alice.id, bob.id, anon.session.user.id].sort());
      const a = p.users.find((u) => u.id === alice.id);
      assertUser(a, { id: alice.id, name: alice.name, anonymous: false });
      const g = p.users.find((u) => u.id === anon.session.user.id);
      assertUser(g, { name: "guest", anonymous: true });

      // alice closes one tab: still listed; closes both: gone
      closeSocket(a1.socket);
      const p2 = await ok(b.socket, "presence:list", { room });
      assert.ok(p2.users.some((u) => u.id === alice.id));
      const leave = waitFor(b.socket, "room:notice", isNotice(room, "leave", alice.id));
      closeSocket(a2.socket);
      await leave;
      const p3 = await ok(b.socket, "presence:list", { room });
      assert.ok(!p3.users.some((u) => u.id === alice.id), `alice offline: ${JSON.stringify(p3.users)}`);
    });

    it("presence:list of a private room is forbidden for a non-member", async () => {
      const alice = identity("alice");
      const room = roomId("privpres");
      const a = await connect(srv, alice.auth);
      await ok(a.socket, "room:create", { name: room, visibility: "private" });
      const c = await connect(srv, identity("carol").auth);
      await fails(c.socket, "presence:list", { room }, "forbidden");
      const self = await ok(a.socket, "presence:list", { room });
      assert.deepEqual(
        self.users.map((u) => u.id),
        [alice.id],
      );
    });

    it("typing reaches the others in the room, not the sender, and is not stored", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const room = roomId("typing");
      const a = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      const outsider = await connect(srv, identity("out").auth);
      await ok(a.socket, "room:join", { room });
      await ok(b.socket, "room:join", { room });

      const got = waitFor(b.socket, "typing", (t) => t.room === room);
      const noneSelf = noneOf(a.socket, "typing");
      const noneOut = noneOf(outsider.socket, "typing");
      a.socket.emit("typing", { room });
      const t = await got;
      assert.equal(t.room, room);
      assertUser(t.user, { id: alice.id, name: alice.name, anonymous: false });
      await noneSelf.before(markerVia(b.socket, room, [a.socket]), "the typist");
      await noneOut.before(laterAck(outsider.socket), "a socket outside the room");

      const withAck = await ok(a.socket, "typing", { room });
      assert.deepEqual(withAck, { ok: true });

      const h = await ok(b.socket, "history:fetch", { room });
      assert.deepEqual(h.messages.filter((m) => !isMarker(m)), [], "typing is never stored");
    });

    it("typing in a room the socket is not in fails (forbidden)", async () => {
      const a = await connect(srv, identity("alice").auth);
      const b = await connect(srv, identity("bob").auth);
      const room = roomId("nottyping");
      await ok(b.socket, "room:join", { room });
      const none = noneOf(b.socket, "typing");
      const ack = await call(a.socket, "typing", { room });
      assert.equal(ack.ok, false, JSON.stringify(ack));
      assert.equal(ack.error.code, "forbidden");
      await none.before(laterAck(b.socket));
    });

    it("a join notice carries the user; an anonymous joiner is anonymous: true", async () => {
      const w = await connect(srv, identity("watcher").auth);
      const room = roomId("anonjoin");
      await ok(w.socket, "room:join", { room });
      const anon = await connect(srv, { name: "visitor" });
      const join = waitFor(w.socket, "room:notice", isNotice(room, "join", anon.session.user.id));
      await ok(anon.socket, "room:join", { room });
      const n = await join;
      assertUser(n.user, { name: "visitor", anonymous: true });
      const leave = waitFor(w.socket, "room:notice", isNotice(room, "leave", anon.session.user.id));
      closeSocket(anon.socket);
      await leave;
    });
  });
}
