// message:edit and message:delete: the author edits within the window and deletes, others get message:updated and
// message:deleted, history shows the current text with editedAt and keeps a deleted message as a tombstone (seq stays
// gap-free); someone else's message is forbidden, a missing seq not_found, a bad payload bad_request, and nothing
// changes on an error. On both stores and across two nodes.
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
  waitFor,
  noneOf,
  markerVia,
  laterAck,
  assertGapFree,
  fullHistory,
  assertMessage,
  until,
  RFC3339_UTC,
  onStoresAndTwoNodes,
} from "./harness.mjs";

/** The edit and delete scenarios (see `onStoresAndTwoNodes`). */
function editScenarios(on) {
  const { first, second } = on;

  it("the author edits: the ack and message:updated carry the new text, editedAt and rev; history shows it", async () => {
    const { room, a, b, alice } = await on.pair("edit");
    const sent = (await ok(a, "message:send", { room, text: "helo", clientId: "e-1" })).message;
    const updated = waitFor(b, "message:updated", (e) => e.message?.seq === sent.seq);
    const none = noneOf(a, "message:updated");
    const ack = await ok(a, "message:edit", { room, seq: sent.seq, text: "hello" });
    assertMessage(ack.message, { room, seq: sent.seq, fromId: alice.id, text: "hello", clientId: "e-1" });
    assert.equal(ack.message.id, sent.id, "same message");
    assert.equal(ack.message.at, sent.at, "`at` stays the send time");
    assert.match(ack.message.editedAt, RFC3339_UTC);
    assert.ok(Number.isInteger(ack.message.rev) && ack.message.rev >= 1, `rev ${ack.message.rev}`);
    assert.equal(ack.message.reactions, undefined, "an edit carries no reactions");
    assert.deepEqual((await updated).message, ack.message, "message:updated equals the ack");
    await none.before(markerVia(b, room, [a]), "the editing socket");
    const history = await ok(b, "history:fetch", { room });
    const stored = history.messages.find((m) => m.seq === sent.seq);
    assert.equal(stored.text, "hello");
    assert.equal(Date.parse(stored.editedAt), Date.parse(ack.message.editedAt));
    assert.equal(stored.rev, ack.message.rev);
    // A second edit takes a later revision.
    const again = await ok(a, "message:edit", { room, seq: sent.seq, text: "hello!" });
    assert.ok(again.message.rev > ack.message.rev, "revisions grow");
  });

  it("editing to the same text changes nothing and tells nobody", async () => {
    const { room, a, b } = await on.pair("edit");
    const sent = (await ok(a, "message:send", { room, text: "same" })).message;
    const none = noneOf(b, "message:updated");
    const ack = await ok(a, "message:edit", { room, seq: sent.seq, text: "same" });
    assert.equal(ack.message.editedAt, undefined);
    assert.equal(ack.message.rev, undefined);
    await none.before(markerVia(a, room, [b]));
  });

  it("edit errors: someone else's message is forbidden, a missing seq not_found, bad fields bad_request; nothing changes", async () => {
    const { room, a, b } = await on.pair("edit");
    const sent = (await ok(a, "message:send", { room, text: "original" })).message;
    const none = noneOf(a, "message:updated");
    await fails(b, "message:edit", { room, seq: sent.seq, text: "hijacked" }, "forbidden", "bob edits alice's: ");
    await fails(a, "message:edit", { room, seq: sent.seq + 1, text: "x" }, "not_found", "a seq not yet used: ");
    await fails(a, "message:edit", { room, seq: 999_999, text: "x" }, "not_found");
    for (const [label, payload] of [
      ["seq 0", { room, seq: 0, text: "x" }],
      ["seq -1", { room, seq: -1, text: "x" }],
      ["seq fractional", { room, seq: 1.5, text: "x" }],
      ["seq a string", { room, seq: "1", text: "x" }],
      ["seq missing", { room, text: "x" }],
      ["text missing", { room, seq: sent.seq }],
      ["text empty", { room, seq: sent.seq, text: "  " }],
      ["text with NUL", { room, seq: sent.seq, text: "a\u0000b" }],
      ["room invalid", { room: "bad room", seq: sent.seq, text: "x" }],
    ]) {
      await fails(a, "message:edit", payload, "bad_request", `${label}: `);
    }
    await fails(a, "message:edit", { room, seq: sent.seq, text: "x".repeat(4001) }, "too_large");
    const outsider = await connect(first(), identity("out").auth);
    await fails(outsider.socket, "message:edit", { room, seq: sent.seq, text: "x" }, "forbidden", "not in the room: ");
    await none.before(markerVia(b, room, [a]), "no event for a refused edit");
    const history = await ok(a, "history:fetch", { room });
    const stored = history.messages.find((m) => m.seq === sent.seq);
    assert.equal(stored.text, "original");
    assert.equal(stored.editedAt, undefined);
  });

  it("the author deletes: message:deleted { room, seq, rev }; history keeps a tombstone and seq stays gap-free", async () => {
    const { room, a, b, alice } = await on.pair("edit");
    const sent = [];
    for (const text of ["one", "two", "three"]) sent.push((await ok(a, "message:send", { room, text, clientId: `d-${text}` })).message);
    const deleted = waitFor(b, "message:deleted", (e) => e.seq === 2);
    const none = noneOf(a, "message:deleted");
    assert.deepEqual(await ok(a, "message:delete", { room, seq: 2 }), { ok: true });
    const event = await deleted;
    assert.equal(event.room, room);
    assert.ok(Number.isInteger(event.rev) && event.rev >= 1);
    await none.before(markerVia(b, room, [a]), "the deleting socket");
    const history = await fullHistory(b, room);
    assertGapFree(history, "history with a tombstone");
    const tomb = history.find((m) => m.seq === 2);
    assert.equal(tomb.deleted, true);
    assert.equal(tomb.text, "");
    assert.equal(tomb.id, sent[1].id);
    assert.equal(tomb.from.id, alice.id);
    assert.equal(tomb.rev, event.rev);
    assert.equal(tomb.clientId, "d-two", "the client id stays: a retry still finds its message");
    assert.equal(history.find((m) => m.seq === 3).text, "three");
    // A retry of the deleted message's send gets the tombstone, not a new message.
    const retry = await ok(a, "message:send", { room, text: "two", clientId: "d-two" });
    assert.equal(retry.message.seq, 2);
    assert.equal(retry.message.deleted, true);
    // Deleting it again: ok, nothing told.
    const noAgain = noneOf(b, "message:deleted");
    assert.deepEqual(await ok(a, "message:delete", { room, seq: 2 }), { ok: true });
    await noAgain.before(markerVia(a, room, [b]), "a second delete");
    // A deleted message cannot be edited.
    await fails(a, "message:edit", { room, seq: 2, text: "back" }, "not_found");
  });

  it("delete errors: someone else's message is forbidden, a missing seq not_found, bad fields bad_request; nothing changes", async () => {
    const { room, a, b } = await on.pair("edit");
    const sent = (await ok(a, "message:send", { room, text: "keep me" })).message;
    const none = noneOf(a, "message:deleted");
    await fails(b, "message:delete", { room, seq: sent.seq }, "forbidden");
    await fails(a, "message:delete", { room, seq: sent.seq + 5 }, "not_found");
    for (const payload of [{ room, seq: 0 }, { room, seq: "1" }, { room }, { seq: 1 }, { room: 5, seq: 1 }]) {
      await fails(a, "message:delete", payload, "bad_request");
    }
    const outsider = await connect(first(), identity("out").auth);
    await fails(outsider.socket, "message:delete", { room, seq: sent.seq }, "forbidden");
    await none.before(markerVia(b, room, [a]), "no event for a refused delete");
    const stored = (await ok(a, "history:fetch", { room })).messages.find((m) => m.seq === sent.seq);
    assert.equal(stored.text, "keep me");
    assert.equal(stored.deleted, undefined);
  });

  it("moderators delete anyone's message: the owner, a moderator, an admin; a member or a demoted moderator cannot", async () => {
    const [owner, mod, member] = [identity("owner"), identity("mod"), identity("member")];
    const root = identity("root", { roles: ["admin"] });
    const room = roomId("moddel");
    const o = (await connect(first(), owner.auth)).socket;
    await ok(o, "room:create", { name: room });
    const d = (await connect(second(), mod.auth)).socket;
    const m = (await connect(second(), member.auth)).socket;
    const r = (await connect(first(), root.auth)).socket;
    for (const s of [d, m, r]) await ok(s, "room:join", { room });
    await ok(o, "room:role", { room, user: mod.id, role: "moderator" });
    // Sent by: the member, the member, the owner, the moderator, the member.
    const texts = ["member one", "member two", "owner's", "mod's", "member three"];
    const sent = [];
    for (const [i, s] of [m, m, o, d, m].entries()) sent.push((await ok(s, "message:send", { room, text: texts[i] })).message);

    // A member deletes neither the owner's nor a moderator's message, nor another member's.
    await fails(m, "message:delete", { room, seq: sent[2].seq }, "forbidden", "member deletes the owner's: ");
    await fails(m, "message:delete", { room, seq: sent[3].seq }, "forbidden", "member deletes the moderator's: ");
    // Editing stays the author's, moderator or not.
    await fails(d, "message:edit", { room, seq: sent[0].seq, text: "censored" }, "forbidden", "a moderator edits: ");

    // The moderator (on the other node from the owner) deletes a member's message: the room is told, as for the author.
    const told = [o, m].map((s) => waitFor(s, "message:deleted", (e) => e.room === room && e.seq === sent[0].seq));
    assert.deepEqual(await ok(d, "message:delete", { room, seq: sent[0].seq }), { ok: true });
    const events = await Promise.all(told);
    assert.ok(Number.isInteger(events[0].rev) && events[0].rev === events[1].rev, JSON.stringify(events));
    // The owner deletes a member's message and the moderator's; an admin deletes the owner's.
    await ok(o, "message:delete", { room, seq: sent[1].seq });
    await ok(o, "message:delete", { room, seq: sent[3].seq });
    await ok(r, "message:delete", { room, seq: sent[2].seq });

    // Demoted, the moderator is a member again: someone else's message is forbidden once more.
    await ok(o, "room:role", { room, user: mod.id, role: "member" });
    await fails(d, "message:delete", { room, seq: sent[4].seq }, "forbidden", "demoted: ");

    const history = await fullHistory(m, room);
    assertGapFree(history, "history with tombstones");
    assert.deepEqual(
      history.map((x) => [x.seq, x.deleted === true, x.text]),
      [
        [sent[0].seq, true, ""],
        [sent[1].seq, true, ""],
        [sent[2].seq, true, ""],
        [sent[3].seq, true, ""],
        [sent[4].seq, false, "member three"],
      ],
    );
  });

  it("in a DM nobody moderates: each user deletes only their own messages", async () => {
    const alice = identity("alice");
    const bob = identity("bob");
    const a = (await connect(first(), alice.auth)).socket;
    const b = (await connect(second(), bob.auth)).socket;
    const arrived = waitFor(b, "message", (x) => x.text === "hi bob");
    const fromA = (await ok(a, "dm:send", { to: bob.id, text: "hi bob" })).message;
    await arrived; // bob's socket is in the DM room now
    const fromB = (await ok(b, "message:send", { room: fromA.room, text: "hi alice" })).message;
    await fails(b, "message:delete", { room: fromA.room, seq: fromA.seq }, "forbidden", "bob deletes alice's: ");
    await fails(a, "message:delete", { room: fromA.room, seq: fromB.seq }, "forbidden", "alice deletes bob's: ");
    await ok(b, "message:delete", { room: fromA.room, seq: fromB.seq });
  });

  it("without an ack callback a refused edit comes as chat:error", async () => {
    const { room, a, b } = await on.pair("edit");
    const sent = (await ok(a, "message:send", { room, text: "mine" })).message;
    const got = waitFor(b, "chat:error", (e) => e.event === "message:edit");
    b.emit("message:edit", { room, seq: sent.seq, text: "theirs" });
    assert.equal((await got).error.code, "forbidden");
  });
}

await onStoresAndTwoNodes("edits and deletes", editScenarios, {
  label: "palaver/edits",
  twoNodes: (on) => {
    it("an edit made on node A shows in history read on node B, and a delete on B on A", async () => {
      const { room, a, b } = await on.pair("edit");
      const m1 = (await ok(a, "message:send", { room, text: "first" })).message;
      const m2 = (await ok(b, "message:send", { room, text: "second" })).message;
      await ok(a, "message:edit", { room, seq: m1.seq, text: "first, edited" });
      await ok(b, "message:delete", { room, seq: m2.seq });
      const onB = (await ok(b, "history:fetch", { room })).messages;
      const onA = (await ok(a, "history:fetch", { room })).messages;
      assert.deepEqual(onA, onB, "both nodes read the same history");
      assert.equal(onA.find((m) => m.seq === m1.seq).text, "first, edited");
      assert.equal(onA.find((m) => m.seq === m2.seq).deleted, true);
      await laterAck(a);
    });
  },
});

describe(`edits: --edit-window-secs 1 [${STORES[0]}]`, () => {
  const srv = useServer(STORES[0], { flags: { ...FAST, "edit-window-secs": 1 } });

  it("edits pass while the message is young and are forbidden once the window has passed", async () => {
    const alice = identity("alice");
    const a = await connect(srv, alice.auth);
    const room = roomId("window");
    await ok(a.socket, "room:join", { room });
    const sent = (await ok(a.socket, "message:send", { room, text: "v0" })).message;
    const sentAt = Date.parse(sent.at);
    let edits = 0;
    let refused;
    // Edit until the server refuses: each edit inside the window succeeds; the refusal comes after it.
    await until(
      async () => {
        const ack = await call(a.socket, "message:edit", { room, seq: sent.seq, text: `v${++edits}` });
        if (ack.ok) return false;
        refused = { ack, at: Date.now() };
        return true;
      },
      { ms: 10_000, every: 50, what: () => `still editable after ${edits} edits` },
    );
    assert.equal(refused.ack.error.code, "forbidden");
    assert.match(refused.ack.error.message, /edited for 1 seconds/);
    assert.ok(refused.at - sentAt >= 1000, `refused ${refused.at - sentAt} ms after sending`);
    assert.ok(edits >= 2, "edits inside the window went through");
    // Deleting is not bound to the window.
    await ok(a.socket, "message:delete", { room, seq: sent.seq });
  });
});
