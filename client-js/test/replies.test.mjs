// Replies: message:send { replyTo } carries replyTo { seq, from, excerpt } in the ack, the broadcast and history;
// history shows the replied-to message as it is now (edited, deleted); a replyTo that does not exist is not_found, a
// malformed one bad_request, and a refused reply stores nothing. On both stores and across two nodes.
import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  it,
  roomId,
  ok,
  fails,
  waitFor,
  noneOf,
  markerVia,
  onStoresAndTwoNodes,
} from "./harness.mjs";

/** The reply scenarios (see `onStoresAndTwoNodes`). */
function replyScenarios(on) {

  it("a reply carries replyTo { seq, from, excerpt } in the ack, the broadcast and history", async () => {
    const { room, a, b, alice, bob } = await on.pair("reply");
    const long = `${"é".repeat(99)}xyz and more`;
    const parent = (await ok(a, "message:send", { room, text: long })).message;
    assert.equal(parent.replyTo, undefined, "a message without replyTo has none");
    const got = waitFor(a, "message", (m) => m.room === room && m.replyTo);
    const { message } = await ok(b, "message:send", { room, text: "answer", replyTo: parent.seq });
    assert.deepEqual(message.replyTo, {
      seq: parent.seq,
      from: { id: alice.id, name: alice.name },
      excerpt: `${"é".repeat(99)}x`,
    });
    assert.equal(message.from.id, bob.id);
    assert.deepEqual(await got, message, "the broadcast equals the ack");
    const history = (await ok(a, "history:fetch", { room })).messages;
    assert.deepEqual(history.find((m) => m.seq === message.seq).replyTo, message.replyTo);
  });

  it("history shows the replied-to message as it is now: edited, then deleted", async () => {
    const { room, a, b } = await on.pair("reply");
    const parent = (await ok(a, "message:send", { room, text: "typo" })).message;
    const reply = (await ok(b, "message:send", { room, text: "re", replyTo: parent.seq })).message;
    await ok(a, "message:edit", { room, seq: parent.seq, text: "fixed" });
    let stored = (await ok(b, "history:fetch", { room })).messages.find((m) => m.seq === reply.seq);
    assert.equal(stored.replyTo.excerpt, "fixed");
    assert.equal(stored.replyTo.deleted, undefined);
    await ok(a, "message:delete", { room, seq: parent.seq });
    stored = (await ok(b, "history:fetch", { room })).messages.find((m) => m.seq === reply.seq);
    assert.deepEqual(stored.replyTo, { seq: parent.seq, from: reply.replyTo.from, excerpt: "", deleted: true });
    // A deleted message cannot be replied to any more.
    await fails(b, "message:send", { room, text: "late", replyTo: parent.seq }, "not_found");
  });

  it("a retry of a reply (same clientId) returns the original with its replyTo, sent once", async () => {
    const { room, a, b } = await on.pair("reply");
    const parent = (await ok(a, "message:send", { room, text: "question?" })).message;
    const first1 = (await ok(b, "message:send", { room, text: "yes", replyTo: parent.seq, clientId: "r-1" })).message;
    const again = (await ok(b, "message:send", { room, text: "yes", replyTo: parent.seq, clientId: "r-1" })).message;
    assert.deepEqual(again, first1);
  });

  it("errors: a replyTo that does not exist is not_found, a malformed one bad_request; nothing is stored or sent", async () => {
    const { room, a, b } = await on.pair("reply");
    const parent = (await ok(a, "message:send", { room, text: "only one" })).message;
    const none = noneOf(a, "message");
    await fails(b, "message:send", { room, text: "to nothing", replyTo: parent.seq + 1 }, "not_found");
    await fails(b, "message:send", { room, text: "to nothing", replyTo: 10_000 }, "not_found");
    for (const replyTo of [0, -3, 1.5, "1", true, {}, [1]]) {
      await fails(b, "message:send", { room, text: "x", replyTo }, "bad_request", `replyTo ${JSON.stringify(replyTo)}: `);
    }
    // Another room's seq is looked up in this room: message 1 of an empty room does not exist.
    const other = roomId("other");
    await ok(b, "room:join", { room: other });
    await fails(b, "message:send", { room: other, text: "cross-room", replyTo: parent.seq }, "not_found");
    await none.before(markerVia(b, room, [a]), "a refused reply is not broadcast");
    const next = (await ok(b, "message:send", { room, text: "next" })).message;
    assert.equal(next.seq, parent.seq + 2, "only the marker came between: no seq was taken by a refused reply");
  });
}

await onStoresAndTwoNodes("replies", replyScenarios);
