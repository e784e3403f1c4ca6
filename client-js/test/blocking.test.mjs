// Blocking: user:block / user:unblock close DMs both ways and stop invitations from the blocked user, with reasons that
// do not reveal the block; rooms:list shows the DM as blocked to the blocker only. Both stores, and two nodes.
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
  noneOf,
  laterAck,
  waitFor,
  sdkClient,
  twoNodeGate,
  useTwoNodes,
} from "./harness.mjs";

/** A refusal's message must not tell the refused user that they are blocked. */
function silent(ack, what) {
  assert.doesNotMatch(ack.error.message, /block/i, `${what}: the reason reveals the block: ${ack.error.message}`);
}

/** The DM of `socket`'s user with `peer` in its rooms:list, if listed. */
async function dmWith(socket, peerId) {
  const { rooms } = await ok(socket, "rooms:list", {});
  return rooms.find((r) => r.kind === "dm" && r.peer?.id === peerId);
}

for (const store of STORES) {
  describe(`blocking [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    it("a blocked user's DMs are refused without saying why; the blocker cannot write either; unblock reopens", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = (await connect(srv, alice.auth)).socket;
      const b = (await connect(srv, bob.auth)).socket;
      const first = await ok(b, "dm:send", { to: alice.id, text: "hi alice" });
      const room = first.message.room;

      await ok(a, "user:block", { user: bob.id });
      await ok(a, "user:block", { user: bob.id }, "blocking twice: ");
      const none = noneOf(a, "message", (m) => m.room === room);
      silent(await fails(b, "dm:send", { to: alice.id, text: "hello?" }, "forbidden"), "dm:send");
      silent(await fails(b, "message:send", { room, text: "hello?" }, "forbidden"), "message:send to the DM room");
      await none.before(laterAck(a), "the blocker receives nothing");
      const noTyping = noneOf(a, "typing", (t) => t.room === room);
      await ok(b, "typing", { room }, "typing in a closed DM is accepted (nothing reveals the block): ");
      await noTyping.before(laterAck(a), "the blocker is not shown the blocked user typing");
      const own = await fails(a, "dm:send", { to: bob.id, text: "go away" }, "forbidden");
      assert.match(own.error.message, /unblock/, "the blocker is told why");
      await fails(a, "message:send", { room, text: "go away" }, "forbidden");
      // Nothing was stored.
      const history = await ok(a, "history:fetch", { room });
      assert.deepEqual(history.messages.map((m) => m.text), ["hi alice"]);

      await ok(a, "user:unblock", { user: bob.id });
      const typing = waitFor(a, "typing", (t) => t.room === room);
      await ok(b, "typing", { room });
      assert.equal((await typing).user.id, bob.id, "unblocked: typing reaches the DM again");
      await ok(b, "dm:send", { to: alice.id, text: "friends again?" });
      await ok(a, "message:send", { room, text: "yes" });
      await fails(a, "user:unblock", { user: bob.id }, "not_found", "not blocked any more: ");
    });

    it("a refused first DM creates no conversation", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = (await connect(srv, alice.auth)).socket;
      const b = (await connect(srv, bob.auth)).socket;
      await ok(a, "user:block", { user: bob.id });
      silent(await fails(b, "dm:send", { to: alice.id, text: "first words" }, "forbidden"), "first DM");
      assert.equal(await dmWith(a, bob.id), undefined, "alice has no DM with bob");
      assert.equal(await dmWith(b, alice.id), undefined, "bob has no DM with alice");
      // Blocks are between two users only: someone else still reaches alice.
      const carol = identity("carol");
      await ok((await connect(srv, carol.auth)).socket, "dm:send", { to: alice.id, text: "hi from carol" });
    });

    it("rooms:list and session show the DM as blocked to the blocker, never to the blocked user", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = (await connect(srv, alice.auth)).socket;
      const b = (await connect(srv, bob.auth)).socket;
      const { message } = await ok(a, "dm:send", { to: bob.id, text: "hi" });
      assert.equal((await dmWith(a, bob.id))?.blocked, false);
      await ok(a, "user:block", { user: bob.id });
      const mine = await dmWith(a, bob.id);
      assert.equal(mine?.id, message.room);
      assert.equal(mine.blocked, true);
      assert.equal((await dmWith(b, alice.id))?.blocked, false, "bob is not told");
      const again = await connect(srv, alice.auth);
      assert.equal(again.session.rooms.find((r) => r.id === message.room)?.blocked, true, "session.rooms");
      const group = (await ok(a, "rooms:list", {})).rooms.find((r) => r.kind === "group");
      if (group) assert.equal("blocked" in group, false, "a group room has no blocked flag");
      await ok(a, "user:unblock", { user: bob.id });
      assert.equal((await dmWith(a, bob.id))?.blocked, false);
    });

    it("invitations from a blocked user are refused without saying why, before anything is created", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const carol = identity("carol");
      const a = (await connect(srv, alice.auth)).socket;
      const b = (await connect(srv, bob.auth)).socket;
      await ok(a, "user:block", { user: bob.id });
      const none = noneOf(a, "invitation");

      const created = roomId("blocked");
      silent(
        await fails(b, "room:create", { name: created, visibility: "private", members: [carol.id, alice.id] }, "forbidden"),
        "room:create",
      );
      const room = roomId("club");
      await ok(b, "room:create", { name: room, visibility: "private" });
      silent(await fails(b, "room:invite", { room, users: [alice.id] }, "forbidden"), "room:invite");
      silent(await fails(b, "room:invite", { room, users: [carol.id, alice.id] }, "forbidden"), "room:invite of two");
      await none.before(laterAck(a), "alice gets no invitation");
      assert.deepEqual((await ok(a, "invitations:list", {})).invitations, []);
      // The refused room:create created nothing: its id is free.
      await ok(b, "room:create", { name: created });
      // Others may still invite alice, and after unblocking bob may too.
      const c = (await connect(srv, carol.auth)).socket;
      const other = roomId("carols");
      await ok(c, "room:create", { name: other, visibility: "private", members: [alice.id] });
      await ok(a, "user:unblock", { user: bob.id });
      const invited = await ok(b, "room:invite", { room, users: [alice.id] });
      assert.deepEqual(invited.invited, [alice.id]);
    });

    it("the SDK: block and unblock", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await sdkClient(srv.url, { auth: alice.auth });
      const b = await sdkClient(srv.url, { auth: bob.auth });
      await a.session;
      await b.session;
      await a.block(bob.id);
      await assert.rejects(b.dm(alice.id, "hi"), (err) => err.code === "forbidden" && !/block/i.test(err.message));
      await a.unblock(bob.id);
      await b.dm(alice.id, "hi");
      await assert.rejects(a.unblock(bob.id), (err) => err.code === "not_found");
    });

    it("bad payloads are bad_request; blocking yourself too", async () => {
      const alice = identity("alice");
      const a = (await connect(srv, alice.auth)).socket;
      for (const event of ["user:block", "user:unblock"]) {
        for (const [payload, what] of [
          [{}, "no user"],
          [{ user: 42 }, "user not a string"],
          [{ user: "" }, "empty user"],
          [{ user: "x".repeat(257) }, "user too long"],
          [{ user: "bad\u0000id" }, "control character"],
          [{ user: "someone", why: "spam" }, "unknown field"],
          [{ user: alice.id }, "yourself"],
          ["bob", "not an object"],
        ]) {
          await fails(a, event, payload, "bad_request", `${event}, ${what}: `);
        }
      }
    });
  });
}

const gate = await twoNodeGate();

describe("blocking on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/block", flags: FAST });

  it("a block made on node A refuses DMs sent on node B and shows on node B", async () => {
    const [A, B] = nodes;
    const alice = identity("alice");
    const bob = identity("bob");
    const a = (await connect(A, alice.auth)).socket;
    const b = (await connect(B, bob.auth)).socket;
    const { message } = await ok(b, "dm:send", { to: alice.id, text: "hi" });
    await ok(a, "user:block", { user: bob.id });
    silent(await fails(b, "dm:send", { to: alice.id, text: "hello?" }, "forbidden"), "dm:send on node B");
    silent(await fails(b, "message:send", { room: message.room, text: "hello?" }, "forbidden"), "message:send on node B");
    const aOnB = (await connect(B, alice.auth)).socket;
    assert.equal((await dmWith(aOnB, bob.id))?.blocked, true);
    await ok(aOnB, "user:unblock", { user: bob.id });
    await ok(b, "dm:send", { to: alice.id, text: "again" });
  });
});
