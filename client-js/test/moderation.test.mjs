// Moderation: room:role, room:kick, room:ban / room:unban, room:mute / room:unmute, namespace admins from a token
// claim; success and error paths on both stores, and across two nodes (Postgres + Redis) with the stored log.
import assert from "node:assert/strict";
import { describe } from "node:test";

import pg from "pg";

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
  waitFor,
  noneOf,
  laterAck,
  markerVia,
  until,
  assertUser,
  sdkClient,
  twoNodeGate,
  useTwoNodes,
  PG_BASE,
} from "./harness.mjs";

const MANAGER = `manage-${rand(8)}-0123456789`;

/** An admin by the default claim (`roles` holding "admin"). */
const admin = (label = "admin") => identity(label, { roles: ["user", "admin"] });

/**
 * A room created by its owner, with a member (two sockets) and a watcher in it:
 * `{ room, owner, member, watcher, o, m1, m2, w }` (the last four are sockets).
 */
async function staffed(srv, { visibility = "public" } = {}) {
  const [owner, member, watcher] = [identity("owner"), identity("member"), identity("watcher")];
  const room = roomId("mod");
  const o = (await connect(srv, owner.auth)).socket;
  await ok(o, "room:create", { name: room, visibility, members: visibility === "private" ? [member.id, watcher.id] : [] });
  const m1 = (await connect(srv, member.auth)).socket;
  const m2 = (await connect(srv, member.auth)).socket;
  const w = (await connect(srv, watcher.auth)).socket;
  for (const s of [m1, m2, w]) await ok(s, "room:join", { room });
  return { room, owner, member, watcher, o, m1, m2, w };
}

/**
 * The RFC 3339 time `ms` from now, with a non-zero millisecond part: the server writes times with as many fractional
 * digits as they need (none for a whole second), JavaScript always with three, and the tests compare the strings.
 */
function fromNow(ms) {
  const at = Date.now() + ms;
  return new Date(at % 1000 === 0 ? at + 1 : at).toISOString();
}

for (const store of STORES) {
  describe(`moderation [${store}]`, () => {
    const srv = useServer(store, { flags: { ...FAST, "api-key": `manage=${MANAGER}` } });

    // -- room:role and room:kick -----------------------------------------------------------------

    it("the creator appoints a moderator, who kicks a member: every socket of theirs leaves, the room is told", async () => {
      const { room, owner, member, o, m1, m2, w } = await staffed(srv);
      const mod = identity("mod");
      const d = (await connect(srv, mod.auth)).socket;
      await ok(d, "room:join", { room });

      const appointed = waitFor(w, "room:moderation", (e) => e.room === room && e.action === "role");
      await ok(o, "room:role", { room, user: mod.id, role: "moderator" });
      const told = await appointed;
      assert.deepEqual(told.user, { id: mod.id, name: mod.name });
      assert.equal(told.role, "moderator");
      assert.deepEqual(told.by, { id: owner.id, name: owner.name });

      const seen = [w, m1, m2].map((s) =>
        waitFor(s, "room:notice", (n) => n.room === room && n.kind === "kick" && n.user.id === member.id),
      );
      const logged = waitFor(w, "room:moderation", (e) => e.room === room && e.action === "kick");
      await ok(d, "room:kick", { room, user: member.id });
      for (const notice of await Promise.all(seen)) {
        assertUser(notice.user, { id: member.id, name: member.name, anonymous: false });
        assert.deepEqual(notice.by, { id: mod.id, name: mod.name });
        assert.ok(Number.isSafeInteger(notice.version) && notice.version > 0, JSON.stringify(notice));
        assert.equal("until" in notice, false, "a kick has no end");
      }
      assert.deepEqual((await logged).user, { id: member.id, name: member.name });

      // Both of the member's sockets are out: their sends are refused and the room's messages no longer reach them.
      await fails(m1, "message:send", { room, text: "still here?" }, "forbidden", "socket 1: ");
      await fails(m2, "message:send", { room, text: "still here?" }, "forbidden", "socket 2: ");
      const none1 = noneOf(m1, "message", (m) => m.room === room);
      const none2 = noneOf(m2, "message", (m) => m.room === room);
      await ok(w, "message:send", { room, text: "after the kick" });
      await none1.before(laterAck(m1), "socket 1");
      await none2.before(laterAck(m2), "socket 2");
      // The membership is gone (a new socket does not re-enter the room), and a kick is not a ban.
      const m3 = await connect(srv, member.auth);
      assert.ok(!m3.session.rooms.some((r) => r.id === room && r.member), JSON.stringify(m3.session.rooms));
      await ok(m3.socket, "room:join", { room });
      await ok(m3.socket, "message:send", { room, text: "back" });
    });

    it("room:kick errors: payloads, rooms, ranks and users, each refused before anything changes", async () => {
      const { room, owner, member, o, m1, w } = await staffed(srv);
      const mod = identity("mod");
      const d = (await connect(srv, mod.auth)).socket;
      await ok(d, "room:join", { room });
      await ok(o, "room:role", { room, user: mod.id, role: "moderator" });

      for (const [payload, what] of [
        [{ room }, "no user"],
        [{ user: member.id }, "no room"],
        [{ room, user: 7 }, "user not a string"],
        [{ room, user: "" }, "empty user"],
        [{ room: "bad room", user: member.id }, "bad room id"],
        [{ room, user: member.id, reason: "spam" }, "unknown field"],
        [{ room, user: mod.id }, "yourself"],
        ["kick", "not an object"],
      ]) {
        await fails(d, "room:kick", payload, "bad_request", `${what}: `);
      }
      await fails(d, "room:kick", { room: roomId("nowhere"), user: member.id }, "not_found", "no room: ");
      await fails(w, "room:kick", { room, user: member.id }, "forbidden", "a member: ");
      await fails(d, "room:kick", { room, user: owner.id }, "forbidden", "a moderator kicking the owner: ");
      await fails(d, "room:kick", { room, user: `u-stranger-${rand()}` }, "not_found", "not in the room: ");
      const mod2 = identity("mod2");
      await ok((await connect(srv, mod2.auth)).socket, "room:join", { room });
      await ok(o, "room:role", { room, user: mod2.id, role: "moderator" });
      await fails(d, "room:kick", { room, user: mod2.id }, "forbidden", "a moderator kicking a moderator: ");
      // Nothing changed: the member is still in, and may still speak.
      await ok(m1, "message:send", { room, text: "still in" });
      // A DM has no moderators.
      const dm = await ok(m1, "dm:send", { to: owner.id, text: "hi" });
      await fails(o, "room:kick", { room: dm.message.room, user: member.id }, "forbidden", "a DM: ");
      // The owner may kick a moderator, and the kick ends the role.
      await ok(o, "room:kick", { room, user: mod2.id });
      const back = (await connect(srv, mod2.auth)).socket;
      await ok(back, "room:join", { room });
      await fails(back, "room:kick", { room, user: member.id }, "forbidden", "a kicked moderator: ");
    });

    it("room:role errors: only the owner (or an admin) gives roles, to members, never the owner's", async () => {
      const { room, owner, member, o, m1 } = await staffed(srv);
      const mod = identity("mod");
      const d = (await connect(srv, mod.auth)).socket;
      await ok(d, "room:join", { room });
      for (const [payload, what] of [
        [{ room, user: member.id }, "no role"],
        [{ room, user: member.id, role: "owner" }, "owner cannot be given"],
        [{ room, user: member.id, role: "admin" }, "not a role"],
        [{ room, user: member.id, role: 1 }, "role not a string"],
        [{ room, user: owner.id, role: "member" }, "yourself"],
      ]) {
        await fails(o, "room:role", payload, "bad_request", `${what}: `);
      }
      await fails(m1, "room:role", { room, user: mod.id, role: "moderator" }, "forbidden", "a member: ");
      await fails(o, "room:role", { room: roomId("nowhere"), user: mod.id, role: "moderator" }, "not_found");
      await fails(o, "room:role", { room, user: `u-stranger-${rand()}`, role: "moderator" }, "not_found", "not a member: ");
      await ok(o, "room:role", { room, user: mod.id, role: "moderator" });
      await fails(d, "room:role", { room, user: member.id, role: "moderator" }, "forbidden", "a moderator: ");
      const root = (await connect(srv, admin().auth)).socket;
      await fails(root, "room:role", { room, user: owner.id, role: "member" }, "forbidden", "the owner's role: ");
      // Demoted, the moderator can no longer kick.
      await ok(o, "room:role", { room, user: mod.id, role: "member" });
      await fails(d, "room:kick", { room, user: member.id }, "forbidden", "demoted: ");
    });

    // -- room:ban, room:unban --------------------------------------------------------------------

    it("room:ban removes the user (room:notice ban), keeps them out saying until when; room:unban lets them in", async () => {
      const { room, owner, member, o, m1, m2, w } = await staffed(srv);
      const end = fromNow(3600_000);
      const seen = [w, m1, m2].map((s) => waitFor(s, "room:notice", (n) => n.room === room && n.kind === "ban"));
      const told = waitFor(m1, "room:moderation", (e) => e.room === room && e.action === "ban");
      await ok(o, "room:ban", { room, user: member.id, until: end });
      for (const notice of await Promise.all(seen)) {
        assert.equal(notice.user.id, member.id);
        assert.equal(notice.by.id, owner.id);
        assert.equal(notice.until, end);
      }
      assert.equal((await told).until, end, "the banned user is told until when");
      await fails(m1, "message:send", { room, text: "x" }, "forbidden");
      const refused = await fails(m2, "room:join", { room }, "forbidden", "rejoin: ");
      assert.match(refused.error.message, /banned/);
      assert.ok(refused.error.message.includes(end), `the reason says until when: ${refused.error.message}`);
      const m3 = await connect(srv, member.auth);
      assert.ok(!m3.session.rooms.some((r) => r.id === room), "no membership any more");

      // A new ban replaces the old one: until lifted.
      await ok(o, "room:ban", { room, user: member.id, until: null });
      const forever = await fails(m2, "room:join", { room }, "forbidden");
      assert.match(forever.error.message, /until a moderator lifts it/);

      const lifted = waitFor(m2, "room:moderation", (e) => e.room === room && e.action === "unban");
      await ok(o, "room:unban", { room, user: member.id });
      await lifted;
      await ok(m2, "room:join", { room });
      await ok(m2, "message:send", { room, text: "back again" });
      await fails(o, "room:unban", { room, user: member.id }, "not_found", "not banned any more: ");
    });

    it("room:ban takes any user id, also one who never came; bad payloads change nothing", async () => {
      const { room, member, o, m1, w } = await staffed(srv);
      const stranger = identity("stranger");
      const notices = noneOf(w, "room:notice", (n) => n.kind === "ban");
      await ok(o, "room:ban", { room, user: stranger.id });
      await notices.before(markerVia(m1, room, [w]), "no departure for someone who was not there");
      const s = (await connect(srv, stranger.auth)).socket;
      await fails(s, "room:join", { room }, "forbidden");

      for (const [payload, what] of [
        [{ room, user: member.id, until: "tomorrow" }, "until not RFC 3339"],
        [{ room, user: member.id, until: "2001-01-01T00:00:00Z" }, "until in the past"],
        [{ room, user: member.id, until: 1893456000 }, "until a number"],
        [{ room, user: member.id, untill: fromNow(60_000) }, "misspelt until"],
        [{ room, user: member.id, until: fromNow(60_000), extra: 1 }, "unknown field"],
      ]) {
        await fails(o, "room:ban", payload, "bad_request", `${what}: `);
        await fails(o, "room:mute", payload, "bad_request", `mute, ${what}: `);
      }
      await fails(w, "room:ban", { room, user: member.id }, "forbidden", "a member: ");
      await fails(w, "room:unban", { room, user: stranger.id }, "forbidden", "a member unbanning: ");
      await fails(o, "room:ban", { room: roomId("nowhere"), user: member.id }, "not_found");
      await fails(o, "room:unban", { room, user: member.id }, "not_found", "never banned: ");
      await ok(m1, "message:send", { room, text: "still in after all of that" });
    });

    it("a ban ends at its until: the join is refused before and accepted after", async () => {
      const { room, member, o, m1 } = await staffed(srv);
      const endMs = Date.now() + 1500;
      await ok(o, "room:ban", { room, user: member.id, until: new Date(endMs).toISOString() });
      await fails(m1, "room:join", { room }, "forbidden", "right after the ban: ");
      let last;
      await until(
        async () => {
          last = await call(m1, "room:join", { room });
          return last?.ok === true;
        },
        { every: 150, what: () => JSON.stringify(last) },
      );
      assert.ok(Date.now() >= endMs, "not before the ban's end");
    });

    // -- room:mute, room:unmute ------------------------------------------------------------------

    it("room:mute refuses the user's sends with forbidden saying until when; they still hear the room", async () => {
      const { room, member, o, m1, m2, w } = await staffed(srv);
      const end = fromNow(3600_000);
      const told = waitFor(m2, "room:moderation", (e) => e.room === room && e.action === "mute");
      await ok(o, "room:mute", { room, user: member.id, until: end });
      const event = await told;
      assert.equal(event.until, end);
      assert.deepEqual(event.user, { id: member.id, name: member.name });
      for (const s of [m1, m2]) {
        const refused = await fails(s, "message:send", { room, text: "can I speak?" }, "forbidden");
        assert.match(refused.error.message, /muted/);
        assert.ok(refused.error.message.includes(end), `the reason says until when: ${refused.error.message}`);
      }
      // A refused send is not stored and takes no seq.
      const heard = waitFor(m1, "message", (m) => m.room === room && m.text === "others speak");
      const sent = await ok(w, "message:send", { room, text: "others speak" });
      await heard;
      const history = await ok(w, "history:fetch", { room });
      assert.deepEqual(
        history.messages.map((m) => m.seq),
        Array.from({ length: sent.message.seq }, (_, i) => i + 1),
      );
      assert.ok(!history.messages.some((m) => m.text === "can I speak?"));
      // Muted in this room only.
      const other = roomId("elsewhere");
      await ok(m1, "room:join", { room: other });
      await ok(m1, "message:send", { room: other, text: "fine here" });

      const lifted = waitFor(w, "room:moderation", (e) => e.room === room && e.action === "unmute");
      await ok(o, "room:unmute", { room, user: member.id });
      await lifted;
      await ok(m1, "message:send", { room, text: "I can speak again" });
      await fails(o, "room:unmute", { room, user: member.id }, "not_found", "not muted any more: ");
    });

    it("a mute ends at its until; a mute without until lasts until room:unmute", async () => {
      const { room, member, o, m1 } = await staffed(srv);
      const endMs = Date.now() + 1500;
      await ok(o, "room:mute", { room, user: member.id, until: new Date(endMs).toISOString() });
      await fails(m1, "message:send", { room, text: "now?" }, "forbidden");
      let last;
      await until(
        async () => {
          last = await call(m1, "message:send", { room, text: "now?" });
          return last?.ok === true;
        },
        { every: 150, what: () => JSON.stringify(last) },
      );
      assert.ok(Date.now() >= endMs, "not before the mute's end");
      await ok(o, "room:mute", { room, user: member.id });
      const refused = await fails(m1, "message:send", { room, text: "and now?" }, "forbidden");
      assert.match(refused.error.message, /until a moderator lifts it/);
    });

    it("the SDK: setRole, kick, ban, unban, mute, unmute; a client whose user is kicked stops following the room", async () => {
      const owner = identity("owner");
      const member = identity("member");
      const room = roomId("sdk");
      const boss = await sdkClient(srv.url, { auth: owner.auth });
      await boss.createRoom(room);
      const them = await sdkClient(srv.url, { auth: member.auth });
      await them.join(room);
      assert.equal(them.lastSeq(room), 0, "followed");
      await boss.setRole(room, member.id, "moderator");
      await boss.setRole(room, member.id, "member");
      await boss.mute(room, member.id, new Date(Date.now() + 3600_000));
      await assert.rejects(them.send(room, "muted?"), (err) => err.code === "forbidden" && /muted/.test(err.message));
      await boss.unmute(room, member.id);
      await them.send(room, "speaking");
      const kicked = new Promise((resolve) => them.socket.once("room:notice", resolve));
      await boss.kick(room, member.id);
      assert.equal((await kicked).kind, "kick");
      assert.equal(them.lastSeq(room), undefined, "no longer followed");
      await boss.ban(room, member.id, fromNow(3600_000));
      await assert.rejects(them.join(room), (err) => err.code === "forbidden" && /banned/.test(err.message));
      await boss.unban(room, member.id);
      await them.join(room);
      await assert.rejects(boss.kick(room, `u-nobody-${rand()}`), (err) => err.code === "not_found");
    });

    it("each user sees their own role: room:join, rooms:list and session; session.admin for an admin; none in a DM", async () => {
      const [owner, member] = [identity("owner"), identity("member")];
      const room = roomId("role");
      const o = (await connect(srv, owner.auth)).socket;
      await ok(o, "room:create", { name: room });
      assert.equal((await ok(o, "room:join", { room })).role, "owner");
      const m = await connect(srv, member.auth);
      assert.equal("admin" in m.session, false, "no admin key for everyone else");
      assert.equal((await ok(m.socket, "room:join", { room })).role, "member");
      const listed = async (socket) => (await ok(socket, "rooms:list", {})).rooms.find((r) => r.id === room);
      assert.equal((await listed(m.socket)).role, "member");
      assert.equal((await listed(o)).role, "owner");
      await ok(o, "room:role", { room, user: member.id, role: "moderator" });
      assert.equal((await listed(m.socket)).role, "moderator");
      const again = await connect(srv, member.auth);
      assert.equal(again.session.rooms.find((r) => r.id === room).role, "moderator", "session");
      const dm = (await ok(o, "dm:send", { to: member.id, text: "hi" })).message.room;
      const dmListed = (await ok(m.socket, "rooms:list", {})).rooms.find((r) => r.id === dm);
      assert.equal("role" in dmListed, false, "a DM has no roles");
      assert.equal("role" in (await ok(m.socket, "room:join", { room: dm })), false);
      const root = await connect(srv, admin().auth);
      assert.equal(root.session.admin, true);
      assert.equal((await ok(root.socket, "room:join", { room })).role, "member", "an admin's role in the room is its own");
    });

    // -- admins ----------------------------------------------------------------------------------

    it("a namespace admin (roles claim) moderates any room: gives roles, kicks even the owner", async () => {
      const { room, owner, member, o, w } = await staffed(srv);
      const root = (await connect(srv, admin().auth)).socket;
      await ok(root, "room:role", { room, user: member.id, role: "moderator" });
      await ok(root, "room:mute", { room, user: member.id });
      const seen = waitFor(w, "room:notice", (n) => n.room === room && n.kind === "kick" && n.user.id === owner.id);
      await ok(root, "room:kick", { room, user: owner.id });
      await seen;
      await fails(o, "message:send", { room, text: "my room!" }, "forbidden");
      // A roles claim without "admin" is nobody special.
      const fake = (await connect(srv, identity("fake", { roles: ["administrator", "user"] }).auth)).socket;
      await fails(fake, "room:kick", { room, user: member.id }, "forbidden");
    });

    it("a room the host's backend made has no owner: only admins moderate it", async () => {
      const room = roomId("hosted");
      const put = await fetch(`${srv.url}/api/v1/rooms/${room}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${MANAGER}`, "content-type": "application/json" },
        body: JSON.stringify({ visibility: "public" }),
      });
      assert.ok(put.ok, `PUT room: ${put.status}`);
      const first = identity("first");
      const member = identity("member");
      const f = (await connect(srv, first.auth)).socket;
      await ok(f, "room:join", { room });
      await ok((await connect(srv, member.auth)).socket, "room:join", { room });
      await fails(f, "room:role", { room, user: member.id, role: "moderator" }, "forbidden", "the first member: ");
      await fails(f, "room:kick", { room, user: member.id }, "forbidden");
      const root = (await connect(srv, admin().auth)).socket;
      await ok(root, "room:role", { room, user: first.id, role: "moderator" });
      await ok(f, "room:kick", { room, user: member.id });
    });
  });
}

describe(`moderation: --admin-claim [${STORES[0]}]`, () => {
  const srv = useServer(STORES[0], { flags: { "admin-claim": "perms=moderate" } });

  it("names the claim and value that make an admin; roles=admin then does not", async () => {
    const owner = identity("owner");
    const member = identity("member");
    const room = roomId("claim");
    await ok((await connect(srv, owner.auth)).socket, "room:create", { name: room });
    await ok((await connect(srv, member.auth)).socket, "room:join", { room });
    const old = (await connect(srv, admin().auth)).socket;
    await fails(old, "room:mute", { room, user: member.id }, "forbidden");
    const scoped = (await connect(srv, identity("scoped", { perms: "read moderate" }).auth)).socket;
    await ok(scoped, "room:mute", { room, user: member.id });
  });
});

const gate = await twoNodeGate();

describe("moderation on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/mod", flags: FAST });

  it("a kick on node A takes the member's socket on node B out of the room; B's watchers are told", async () => {
    const [A, B] = nodes;
    const owner = identity("owner");
    const member = identity("member");
    const room = roomId("x");
    const o = (await connect(A, owner.auth)).socket;
    await ok(o, "room:create", { name: room });
    const onA = (await connect(A, member.auth)).socket;
    const onB = (await connect(B, member.auth)).socket;
    const w = (await connect(B, identity("watcher").auth)).socket;
    for (const s of [onA, onB, w]) await ok(s, "room:join", { room });
    const seen = [w, onB].map((s) => waitFor(s, "room:notice", (n) => n.room === room && n.kind === "kick"));
    await ok(o, "room:kick", { room, user: member.id });
    await Promise.all(seen);
    await until(async () => (await call(onB, "message:send", { room, text: "x" }))?.error?.code === "forbidden", {
      what: () => "the socket on node B is still in the room",
    });
  });

  it("a moderator appointed on node A bans on node B; the ban holds on node A; a mute on B refuses sends on A", async () => {
    const [A, B] = nodes;
    const owner = identity("owner");
    const mod = identity("mod");
    const member = identity("member");
    const talker = identity("talker");
    const room = roomId("y");
    const o = (await connect(A, owner.auth)).socket;
    await ok(o, "room:create", { name: room });
    const d = (await connect(B, mod.auth)).socket;
    const m = (await connect(A, member.auth)).socket;
    const t = (await connect(A, talker.auth)).socket;
    for (const s of [d, m, t]) await ok(s, "room:join", { room });
    await ok(o, "room:role", { room, user: mod.id, role: "moderator" });
    const banned = waitFor(m, "room:notice", (n) => n.room === room && n.kind === "ban");
    await ok(d, "room:ban", { room, user: member.id });
    await banned;
    await fails(m, "room:join", { room }, "forbidden", "rejoin on node A: ");
    const end = fromNow(3600_000);
    await ok(d, "room:mute", { room, user: talker.id, until: end });
    const refused = await fails(t, "message:send", { room, text: "hello?" }, "forbidden", "send on node A: ");
    assert.ok(refused.error.message.includes(end), refused.error.message);

    // Every action is stored with who did it.
    const db = new pg.Client({ connectionString: `${PG_BASE}/${await databaseOf(A)}` });
    await db.connect();
    try {
      const { rows } = await db.query(
        "SELECT action, user_id, actor_id, actor_admin, until FROM moderation_log WHERE room = $1 ORDER BY id",
        [room],
      );
      assert.deepEqual(
        rows.map((r) => [r.action, r.user_id, r.actor_id, r.actor_admin]),
        [
          ["role", mod.id, owner.id, false],
          ["ban", member.id, mod.id, false],
          ["mute", talker.id, mod.id, false],
        ],
      );
      assert.equal(rows[1].until, null);
      assert.equal(rows[2].until.toISOString(), end);
    } finally {
      await db.end();
    }
  });
});

/** The Postgres database a node runs on, from its `--database-url`. */
async function databaseOf(node) {
  const url = node.args[node.args.indexOf("--database-url") + 1];
  return new URL(url).pathname.replace(/^\//, "");
}
