// No client can hurt another: unstorable input is refused per field, a row the database rejects fails alone, a
// flood from one raw WebSocket client is bounded, and budgets hold per socket and per user.
import assert from "node:assert/strict";
import { describe } from "node:test";
import WebSocket from "ws";
import pg from "pg";
import {
  STORES,
  useServer,
  it,
  connect,
  identity,
  roomId,
  rand,
  ok,
  fails,
  call,
  assertError,
  until,
  sleep,
} from "./harness.mjs";

/** `n` guests in `room`, connected and joined. */
async function crowd(srv, room, n) {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const { socket } = await connect(srv, { name: `user${i}` });
      await ok(socket, "room:join", { room });
      return socket;
    }),
  );
}

/** Every socket sends at once (several rounds); one of them sends `badText` among them. */
async function sendTogether(sockets, room, badText, rounds = 5) {
  const sends = [];
  for (let r = 0; r < rounds; r++) {
    sockets.forEach((socket, i) => {
      const bad = r === 2 && i === 7;
      const text = bad ? badText : `hello ${r}/${i}`;
      sends.push(call(socket, "message:send", { room, text, clientId: `c-${r}-${i}-${rand()}` }).then((ack) => ({ bad, ack })));
    });
  }
  return Promise.all(sends);
}

/** Resident set size of a process, in bytes. */
async function rss(pid) {
  const { readFile } = await import("node:fs/promises");
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
  return kb * 1024;
}

for (const store of STORES) {
  describe(`abuse: unstorable input [${store}]`, () => {
    const srv = useServer(store, { flags: { "send-rate": 1000, "send-burst": 1000 } });

    it("a NUL in one user's text fails that send alone; every other send of the burst commits", async () => {
      const room = roomId("nul");
      const sockets = await crowd(srv, room, 40);
      const results = await sendTogether(sockets, room, "evil\u0000");
      const bad = results.filter((r) => r.bad);
      const innocent = results.filter((r) => !r.bad);
      assert.equal(bad.length, 1);
      assertError(bad[0].ack, "bad_request", "the NUL send: ");
      assert.match(bad[0].ack.error.message, /^text /, "the error names the field");
      const failed = innocent.filter((r) => !r.ack.ok);
      assert.deepEqual(failed.map((r) => r.ack), [], "every innocent send is acked ok");
      const seqs = innocent.map((r) => r.ack.message.seq).sort((a, b) => a - b);
      assert.deepEqual(seqs, Array.from({ length: innocent.length }, (_, i) => i + 1), "gap-free");
    });

    it("control characters in clientId, DM target and invitees are refused naming the field", async () => {
      const { socket } = await connect(srv, identity("ctl").auth);
      const room = roomId("ctl");
      await ok(socket, "room:join", { room });
      const a = await fails(socket, "message:send", { room, text: "x", clientId: "id\u0000" }, "bad_request");
      assert.match(a.error.message, /^clientId /);
      const b = await fails(socket, "dm:send", { to: "bob\u0000", text: "x" }, "bad_request");
      assert.match(b.error.message, /^to /);
      const c = await fails(socket, "room:create", { name: roomId("c"), members: ["ok", "b\u0007d"] }, "bad_request");
      assert.match(c.error.message, /^members\[\] /);
      await ok(socket, "message:send", { room, text: "line one\nline two\ttabbed" });
    });

    it("a NUL in auth.name or in a JWT name claim refuses the connection", async () => {
      await assert.rejects(connect(srv, { name: "evil\u0000" }), /invalid_name/);
      await assert.rejects(connect(srv, identity("x", { name: "evil\u0000" }).auth), /invalid_claim/);
    });

    it("room:join checks `since` before joining: a bad one leaves no membership and no notice", async () => {
      const owner = await connect(srv, identity("owner").auth);
      const room = roomId("since");
      await ok(owner.socket, "room:join", { room });
      const notices = [];
      owner.socket.on("room:notice", (n) => notices.push(n));
      const late = identity("late");
      const { socket } = await connect(srv, late.auth);
      await fails(socket, "room:join", { room, since: -1 }, "bad_request");
      const rooms = await ok(socket, "rooms:list", {});
      const listed = rooms.rooms.find((r) => r.id === room);
      assert.equal(listed?.member, false, "not a member after the refused join");
      // Barrier: a later good join is announced; nothing came before it.
      await ok(socket, "room:join", { room });
      await until(() => notices.length > 0, { what: () => "the good join's notice" });
      assert.deepEqual(notices.map((n) => [n.kind, n.user.id]), [["join", late.id]]);
    });
  });

  describe(`abuse: invitations instead of forced membership [${store}]`, () => {
    const srv = useServer(store, { flags: { "send-rate": 1000, "send-burst": 1000 } });

    it("members named at room:create are invited: an invitation event, listed as invited, no messages until they accept", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      const invited = new Promise((resolve) => b.socket.once("invitation", resolve));
      const name = roomId("priv");
      await ok(a.socket, "room:create", { name, visibility: "private", members: [bob.id] });
      const invitation = await invited;
      assert.equal(invitation.room.id, name);
      assert.deepEqual(invitation.by, { id: alice.id, name: alice.name });

      const listed = (await ok(b.socket, "rooms:list", {})).rooms.find((r) => r.id === name);
      assert.equal(listed?.invited, true);
      assert.equal(listed?.member, false);
      const pending = await ok(b.socket, "invitations:list", {});
      assert.deepEqual(pending.invitations.map((i) => i.room.id), [name]);

      // Bob's new sockets do not enter the room, and it is not in his session.
      const b2 = await connect(srv, bob.auth);
      assert.ok(!b2.session.rooms.some((r) => r.id === name), "an invited room is not in session.rooms");
      assert.deepEqual(b2.session.invitations.map((i) => i.room.id), [name]);
      const heard = [];
      b2.socket.on("message", (m) => heard.push(m));
      await ok(a.socket, "message:send", { room: name, text: "before accepting" });
      await fails(b2.socket, "message:send", { room: name, text: "x" }, "forbidden");

      // Accepting is room:join; then messages arrive, and new sockets re-enter it.
      const joined = await ok(b2.socket, "room:join", { room: name });
      assert.deepEqual(joined.history.map((m) => m.text), ["before accepting"]);
      await ok(a.socket, "message:send", { room: name, text: "after accepting" });
      await until(() => heard.some((m) => m.text === "after accepting"), { what: () => "the message after accepting" });
      assert.ok(!heard.some((m) => m.text === "before accepting"), "nothing was delivered before accepting");
      const b3 = await connect(srv, bob.auth);
      assert.ok(b3.session.rooms.some((r) => r.id === name && r.member));
      assert.deepEqual(b3.session.invitations, []);
    });

    it("room:decline removes the invitation; room:invite invites more; non-members cannot invite", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const carol = identity("carol");
      const a = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      const c = await connect(srv, carol.auth);
      const name = roomId("team");
      await ok(a.socket, "room:create", { name, visibility: "private", members: [bob.id] });
      await fails(c.socket, "room:invite", { room: name, users: [carol.id] }, "forbidden", "a non-member: ");
      await ok(b.socket, "room:decline", { room: name });
      await fails(b.socket, "room:decline", { room: name }, "not_found", "declined twice: ");
      await fails(b.socket, "room:join", { room: name }, "forbidden", "after declining: ");
      const listed = (await ok(b.socket, "rooms:list", {})).rooms.find((r) => r.id === name);
      assert.equal(listed, undefined, "a declined private room is not listed");

      const got = new Promise((resolve) => c.socket.once("invitation", resolve));
      const invite = await ok(a.socket, "room:invite", { room: name, users: [carol.id, alice.id, carol.id] });
      assert.deepEqual(invite.invited, [carol.id], "the inviter and repeats are skipped");
      assert.equal((await got).room.id, name);
      const again = await ok(a.socket, "room:invite", { room: name, users: [carol.id] });
      assert.deepEqual(again.invited, [], "an open invitation is not repeated");
      await ok(c.socket, "room:join", { room: name });
      const members = await ok(a.socket, "room:invite", { room: name, users: [carol.id] });
      assert.deepEqual(members.invited, [], "a member is not invited");
    });

    it("guests cannot invite (no membership), and leaving a room one is only invited to declines it silently", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      const b = await connect(srv, bob.auth);
      const pub = roomId("pub");
      await ok(a.socket, "room:join", { room: pub });
      const guest = await connect(srv, { name: "spammer" });
      await ok(guest.socket, "room:join", { room: pub });
      await fails(guest.socket, "room:invite", { room: pub, users: [bob.id] }, "forbidden", "a guest inviting: ");

      const team = roomId("team");
      await ok(a.socket, "room:create", { name: team, visibility: "private", members: [bob.id] });
      const notices = [];
      a.socket.on("room:notice", (n) => notices.push(n));
      await ok(b.socket, "room:leave", { room: team });
      assert.deepEqual((await ok(b.socket, "invitations:list", {})).invitations, [], "the invitation is gone");
      // Barrier: carol's join is announced; bob's leave of a room he never entered was not.
      const carol = identity("carol");
      await ok(a.socket, "room:invite", { room: team, users: [carol.id] });
      const c = await connect(srv, carol.auth);
      await ok(c.socket, "room:join", { room: team });
      await until(() => notices.some((n) => n.user.id === carol.id), { what: () => "carol's join" });
      assert.deepEqual(notices.map((n) => [n.kind, n.user.id]), [["join", carol.id]]);
    });

    it("a user others invited to 150 rooms, who accepted them all, gets live messages in every room session lists", { timeout: 120_000 }, async () => {
      const target = identity("target");
      const creators = [identity("c1"), identity("c2"), identity("c3")];
      const sockets = await Promise.all(creators.map((c) => connect(srv, c.auth)));
      const rooms = [];
      // Each creator makes 50 rooms inviting the target (within the default quota and budgets, retrying when
      // a budget says slow down, as a real client would).
      await Promise.all(
        sockets.map(async ({ socket }, k) => {
          for (let i = 0; i < 50; i++) {
            const name = `many-${k}-${i}-${rand()}`;
            await retrying(() => call(socket, "room:create", { name, visibility: "private", members: [target.id] }));
            rooms.push({ name, owner: socket });
          }
        }),
      );
      const t = await connect(srv, target.auth);
      assert.equal(t.session.invitations.length, 150);
      for (const { name } of rooms) await retrying(() => call(t.socket, "room:join", { room: name, limit: 1 }));

      const fresh = await connect(srv, target.auth);
      const listed = fresh.session.rooms.map((r) => r.id);
      assert.equal(listed.length, 150, "session lists every accepted room (default limit 500)");
      const heard = new Set();
      fresh.socket.on("message", (m) => heard.add(m.room));
      await Promise.all(
        sockets.map(async ({ socket }) => {
          for (const { name, owner } of rooms) {
            if (owner !== socket) continue;
            await retrying(() => call(socket, "message:send", { room: name, text: "ping" }));
          }
        }),
      );
      await until(() => listed.every((id) => heard.has(id)), {
        ms: 30_000,
        what: () => `live messages from ${heard.size} of ${listed.length} listed rooms`,
      });
    });
  });

  describe(`abuse: budgets and quotas [${store}]`, () => {
    const srv = useServer(store, {
      flags: { "read-rate": 1, "read-burst": 5, "user-budget-factor": 2, "room-quota": 3, "join-burst": 50 },
    });

    it("reads have a per-socket budget, and a user's sockets share a per-user budget", async () => {
      const user = identity("reader");
      const tabs = await Promise.all([1, 2, 3, 4].map(() => connect(srv, user.auth)));
      const one = await Promise.all(Array.from({ length: 8 }, () => call(tabs[0].socket, "rooms:list", {})));
      assert.equal(one.filter((a) => a.ok).length, 5, "the socket's burst");
      assertError(one.find((a) => !a.ok), "rate_limited");
      // The user's burst is 2 × 5 = 10 reads however many tabs: 5 are spent, 5 remain for the other three tabs.
      const rest = await Promise.all(
        tabs.slice(1).flatMap(({ socket }) => Array.from({ length: 5 }, () => call(socket, "rooms:list", {}))),
      );
      assert.equal(rest.filter((a) => a.ok).length, 5, "fifty tabs do not multiply a user's budget");
      const other = await connect(srv, identity("other").auth);
      await ok(other.socket, "rooms:list", {}, "another user has their own budget");
    });

    it("room creation has a per-user quota, counted across reconnects", async () => {
      const user = identity("maker");
      const first = await connect(srv, user.auth);
      await ok(first.socket, "room:create", { name: roomId("q") });
      await ok(first.socket, "room:join", { room: roomId("auto") }, "auto-creation counts too");
      first.socket.close();
      const second = await connect(srv, user.auth);
      await ok(second.socket, "room:create", { name: roomId("q") });
      await fails(second.socket, "room:create", { name: roomId("q") }, "rate_limited", "the fourth room: ");
      await fails(second.socket, "room:join", { room: roomId("auto") }, "rate_limited", "auto-creating past the quota: ");
      const existing = roomId("existing");
      const other = await connect(srv, identity("other").auth);
      await ok(other.socket, "room:create", { name: existing });
      await ok(second.socket, "room:join", { room: existing }, "joining an existing room is not creating");
    });

    it("guests share a creation quota per address: reconnecting does not reset it", async () => {
      let refused = null;
      for (let i = 0; i < 6 && !refused; i++) {
        const { socket } = await connect(srv, { name: `guest${i}` });
        const ack = await call(socket, "room:join", { room: roomId("g") });
        if (!ack.ok) refused = ack;
        socket.close();
      }
      assert.ok(refused, "a guest reconnecting over and over is stopped by the quota");
      assertError(refused, "rate_limited");
    });
  });

  describe(`abuse: a rush of guests into a new room [${store}]`, () => {
    const srv = useServer(store, { flags: { "room-quota": 1 } });

    it("joins racing to create one room spend one creation: every guest gets in, the next new room is refused", async () => {
      const guests = await Promise.all(Array.from({ length: 20 }, (_, i) => connect(srv, { name: `rush${i}` })));
      const room = roomId("rush");
      const acks = await Promise.all(guests.map(({ socket }) => call(socket, "room:join", { room })));
      assert.deepEqual(acks.filter((a) => !a.ok), [], "every guest joins the room one of them created");
      await fails(guests[0].socket, "room:join", { room: roomId("second") }, "rate_limited", "the address's one creation is spent: ");
    });
  });

  describe(`abuse: --guests-create-rooms false [${store}]`, () => {
    const srv = useServer(store, { flags: { "guests-create-rooms": false } });

    it("guests cannot create rooms but can join existing ones; signed-in users can create", async () => {
      const guest = await connect(srv, { name: "guest" });
      await fails(guest.socket, "room:join", { room: roomId("new") }, "forbidden");
      await fails(guest.socket, "room:create", { name: roomId("new") }, "forbidden");
      const user = await connect(srv, identity("u").auth);
      const room = roomId("made");
      await ok(user.socket, "room:create", { name: room });
      await ok(guest.socket, "room:join", { room });
    });
  });
}

/** Calls until the ack is not `rate_limited`, waiting a little between tries; returns the ok ack. */
async function retrying(attempt) {
  for (let i = 0; i < 400; i++) {
    const ack = await attempt();
    if (ack.ok) return ack;
    if (ack.error?.code !== "rate_limited") assert.fail(`refused: ${JSON.stringify(ack)}`);
    await sleep(100);
  }
  assert.fail("still rate_limited after 400 tries");
}

describe("abuse: a row the database rejects fails alone [postgres]", { skip: !STORES.includes("postgres") && "postgres not selected" }, () => {
  const srv = useServer("postgres", { flags: { "send-rate": 1000, "send-burst": 1000 } });

  it("a trigger rejecting one row (which validation does not catch): that send is bad_request, every other commits", async () => {
    const db = new pg.Client({ connectionString: srv.db.url });
    await db.connect();
    try {
      await db.query(`
        CREATE FUNCTION reject_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.text = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER reject_poison BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION reject_poison();`);
    } finally {
      await db.end();
    }
    const room = roomId("poison");
    const sockets = await crowd(srv, room, 40);
    const results = await sendTogether(sockets, room, "poison");
    const bad = results.filter((r) => r.bad);
    assertError(bad[0].ack, "bad_request", "the rejected row: ");
    const failed = results.filter((r) => !r.bad && !r.ack.ok);
    assert.deepEqual(failed.map((r) => r.ack), [], "every innocent send is acked ok");
    const seqs = results.filter((r) => !r.bad).map((r) => r.ack.message.seq).sort((a, b) => a - b);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), "gap-free");
  });
});

describe("abuse: a raw WebSocket client flooding 200,000 events without reading [sqlite]", () => {
  const srv = useServer("sqlite");

  it("the server's memory stays bounded, the flooder is refused, and other users are served", { timeout: 240_000 }, async () => {
    const room = roomId("calm");
    const bystander = await connect(srv, { name: "bystander" });
    await ok(bystander.socket, "room:join", { room });
    const pid = srv.server.child.pid;
    const before = await rss(pid);

    const ws = new WebSocket(`${srv.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
    const opened = new Promise((resolve, reject) => {
      ws.once("error", reject);
      ws.on("message", (data) => {
        const text = data.toString();
        if (text.startsWith("0")) ws.send("40");
        if (text.startsWith("40")) resolve();
      });
    });
    await opened;
    let closed = false;
    ws.once("close", () => (closed = true));
    // Stop reading: the server's acks pile up on its side, bounded, or it gives up on this client.
    ws.removeAllListeners("message");
    ws._socket.pause();
    const total = 200_000;
    let written = 0;
    const flood = (async () => {
      while (written < total && !closed) {
        for (let i = 0; i < 1000 && written < total; i++, written++) ws.send(`42${written}["rooms:list",{}]`);
        await new Promise((r) => setImmediate(r));
        while (ws.bufferedAmount > 4 * 1024 * 1024 && !closed) await sleep(5);
      }
    })();

    // Meanwhile other users are served. The bystander keeps to its own budgets (10 sends/s, 20 reads/s) however
    // long the flood lasts on a slow box: a round every 200 ms is 5 of each per second.
    let served = 0;
    while (written < total && !closed) {
      await ok(bystander.socket, "message:send", { room, text: `still here ${served}` });
      await ok(bystander.socket, "rooms:list", {});
      served++;
      await sleep(200);
    }
    await flood;
    await ok(bystander.socket, "message:send", { room, text: "after the flood" });
    const grown = (await rss(pid)) - before;
    console.log(`flood: ${written} events written, server RSS +${(grown / 1048576).toFixed(1)} MiB, bystander served ${served} rounds`);
    assert.ok(grown < 20 * 1024 * 1024, `server RSS grew by ${(grown / 1048576).toFixed(1)} MiB during the flood`);
    assert.ok(served > 0, "the bystander was served during the flood");
    assert.equal(srv.server.exit, null, "the server is still running");
    // Reading again, the flooder finds its refusals (what fit in its bounded send buffer), unless it was cut off.
    let refusals = 0;
    ws.on("message", (data) => {
      if (/^43\d+\[\{"ok":false,"error":\{"code":"rate_limited"/.test(data.toString())) refusals++;
    });
    ws._socket.resume();
    await until(() => refusals > 0 || closed, { what: () => "a rate_limited ack or a disconnect for the flooder" });
    ws.terminate();
  });
});
