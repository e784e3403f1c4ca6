// reaction:add and reaction:remove: one reaction per user, message and emoji; the room gets `reaction`; messages carry
// reactions: [{ emoji, count, me }] as each reader sees them; not one emoji is bad_request, a missing seq not_found,
// a 21st emoji too_large. On both stores and across two nodes.
import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  it,
  connect,
  identity,
  ok,
  fails,
  waitFor,
  noneOf,
  markerVia,
  assertUser,
  onStoresAndTwoNodes,
} from "./harness.mjs";

/** Alice and bob in a fresh room (`on.pair`), and a message of alice's: { room, a, b, alice, bob, seq }. */
async function pairWithMessage(on) {
  const pair = await on.pair("react");
  const { message } = await ok(pair.a, "message:send", { room: pair.room, text: "react to me" });
  return { ...pair, seq: message.seq };
}

/** The message `seq` of `room` as `socket`'s user reads it in history. */
async function read(socket, room, seq) {
  const { messages } = await ok(socket, "history:fetch", { room });
  return messages.find((m) => m.seq === seq);
}

/** The reaction scenarios (see `onStoresAndTwoNodes`). */
function reactionScenarios(on) {
  const { first } = on;

  it("adding and removing: the room gets `reaction`, history counts per emoji with `me` for the reader", async () => {
    const { room, a, b, alice, bob, seq } = await pairWithMessage(on);
    const toAlice = waitFor(a, "reaction", (e) => e.user?.id === bob.id);
    const none = noneOf(b, "reaction");
    assert.deepEqual(await ok(b, "reaction:add", { room, seq, emoji: "👍" }), { ok: true });
    const event = await toAlice;
    assert.equal(event.room, room);
    assert.equal(event.seq, seq);
    assert.equal(event.emoji, "👍");
    assert.equal(event.added, true);
    assertUser(event.user, { id: bob.id });
    assert.ok(Number.isInteger(event.rev) && event.rev >= 1);
    await none.before(markerVia(a, room, [b]), "the reacting socket");

    await ok(a, "reaction:add", { room, seq, emoji: "🎉" });
    await ok(a, "reaction:add", { room, seq, emoji: "👍" });
    assert.deepEqual((await read(a, room, seq)).reactions, [
      { emoji: "👍", count: 2, me: true },
      { emoji: "🎉", count: 1, me: true },
    ]);
    assert.deepEqual((await read(b, room, seq)).reactions, [
      { emoji: "👍", count: 2, me: true },
      { emoji: "🎉", count: 1, me: false },
    ]);
    const carol = await connect(first(), identity("carol").auth);
    assert.deepEqual(
      (await read(carol.socket, room, seq)).reactions.map((r) => r.me),
      [false, false],
      "someone who did not react",
    );

    const removed = waitFor(b, "reaction", (e) => e.added === false);
    await ok(a, "reaction:remove", { room, seq, emoji: "🎉" });
    const gone = await removed;
    assert.equal(gone.emoji, "🎉");
    assert.ok(gone.rev > event.rev, "revisions grow");
    assertUser(gone.user, { id: alice.id });
    await ok(a, "reaction:remove", { room, seq, emoji: "👍" });
    await ok(b, "reaction:remove", { room, seq, emoji: "👍" });
    const bare = await read(a, room, seq);
    assert.equal(bare.reactions, undefined, "no reactions left: the field is absent");
    assert.ok(bare.rev >= gone.rev + 2);
  });

  it("adding twice or removing what is not there changes nothing and tells nobody", async () => {
    const { room, a, b, seq } = await pairWithMessage(on);
    // The first add's event reaches alice before anything is recorded: across two nodes it can come after her read.
    const told = waitFor(a, "reaction", (e) => e.seq === seq && e.added === true);
    await ok(b, "reaction:add", { room, seq, emoji: "❤️" });
    await told;
    const before = await read(a, room, seq);
    const none = noneOf(a, "reaction");
    await ok(b, "reaction:add", { room, seq, emoji: "❤️" });
    await ok(b, "reaction:remove", { room, seq, emoji: "😂" });
    await none.before(markerVia(b, room, [a]));
    const after = await read(a, room, seq);
    assert.deepEqual(after.reactions, [{ emoji: "❤️", count: 1, me: false }]);
    assert.equal(after.rev, before.rev, "no new revision");
  });

  it("errors: not one emoji is bad_request, a missing or deleted message not_found, outside the room forbidden", async () => {
    const { room, a, b, seq } = await pairWithMessage(on);
    const none = noneOf(a, "reaction");
    for (const emoji of ["", "ok", "👍👍", " 👍", "👍 ", "a👍", ":+1:", "1", "🇫", "\u0000", "👍".repeat(3), 5, null]) {
      await fails(b, "reaction:add", { room, seq, emoji }, "bad_request", `emoji ${JSON.stringify(emoji)}: `);
      await fails(b, "reaction:remove", { room, seq, emoji }, "bad_request", `emoji ${JSON.stringify(emoji)}: `);
    }
    for (const payload of [{ room, seq: 0, emoji: "👍" }, { room, seq: "1", emoji: "👍" }, { room, emoji: "👍" }, { seq, emoji: "👍" }]) {
      await fails(b, "reaction:add", payload, "bad_request");
    }
    await fails(b, "reaction:add", { room, seq: seq + 10, emoji: "👍" }, "not_found");
    await fails(b, "reaction:remove", { room, seq: seq + 10, emoji: "👍" }, "not_found");
    const outsider = await connect(first(), identity("out").auth);
    await fails(outsider.socket, "reaction:add", { room, seq, emoji: "👍" }, "forbidden");
    await none.before(markerVia(b, room, [a]), "no event for a refused reaction");
    assert.equal((await read(a, room, seq)).reactions, undefined, "nothing was stored");

    // A deleted message loses its reactions and takes no more.
    await ok(b, "reaction:add", { room, seq, emoji: "👍" });
    await ok(a, "message:delete", { room, seq });
    const tomb = await read(b, room, seq);
    assert.equal(tomb.deleted, true);
    assert.equal(tomb.reactions, undefined, "a tombstone carries no reactions");
    await fails(b, "reaction:add", { room, seq, emoji: "👍" }, "not_found");
  });

  it("flags, skin tones, ZWJ sequences and keycaps are one emoji each", async () => {
    const { room, b, seq } = await pairWithMessage(on);
    const emoji = ["🇫🇷", "👍🏽", "👩‍💻", "❤️‍🔥", "1️⃣", "🏳️‍⚧️"];
    for (const e of emoji) await ok(b, "reaction:add", { room, seq, emoji: e });
    assert.deepEqual(
      (await read(b, room, seq)).reactions.map((r) => r.emoji),
      emoji,
      "in the order first used",
    );
  });

  it("a message carries at most 20 different emoji: a 21st is too_large, another of the 20 still counts", async () => {
    const { room, a, b, seq } = await pairWithMessage(on);
    const twenty = [..."😀😁😂🤣😃😄😅😆😉😊😋😎😍😘🥰😗😙😚🙂🤗"];
    assert.equal(twenty.length, 20);
    for (const e of twenty) await ok(b, "reaction:add", { room, seq, emoji: e });
    await fails(b, "reaction:add", { room, seq, emoji: "🤔" }, "too_large");
    await fails(a, "reaction:add", { room, seq, emoji: "🤔" }, "too_large");
    await ok(a, "reaction:add", { room, seq, emoji: "😀" });
    const reactions = (await read(a, room, seq)).reactions;
    assert.equal(reactions.length, 20);
    assert.deepEqual(reactions[0], { emoji: "😀", count: 2, me: true });
  });
}

await onStoresAndTwoNodes("reactions", reactionScenarios);
