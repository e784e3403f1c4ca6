// message:send: commit, fan-out, dedupe, validation, length and rate limits, chat:error.
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
  assertMessage,
  assertError,
  assertSameMessage,
  waitFor,
  noneOf,
  markerVia,
  laterAck,
  collect,
  sleep,
} from "./harness.mjs";

/** Two signed-in users in a fresh room: { room, a, b, alice, bob }. */
async function pair(srv) {
  const alice = identity("alice");
  const bob = identity("bob");
  const room = roomId("chat");
  const a = await connect(srv, alice.auth);
  const b = await connect(srv, bob.auth);
  await ok(a.socket, "room:join", { room });
  await ok(b.socket, "room:join", { room });
  return { room, a: a.socket, b: b.socket, alice, bob };
}

for (const store of STORES) {
  describe(`messages [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    it("the ack carries the committed message; seq is 1, 2, 3 per room", async () => {
      const { room, a, alice } = await pair(srv);
      const acks = [];
      for (const text of ["one", "two", "three"]) acks.push(await ok(a, "message:send", { room, text }));
      acks.forEach((ack, i) =>
        assertMessage(ack.message, { room, seq: i + 1, fromId: alice.id, fromName: alice.name, text: ["one", "two", "three"][i] }),
      );
      const ids = new Set(acks.map((x) => x.message.id));
      assert.equal(ids.size, 3, "message ids are unique");
      // another room starts at 1 again
      const other = roomId("other");
      await ok(a, "room:join", { room: other });
      const m = await ok(a, "message:send", { room: other, text: "x" });
      assert.equal(m.message.seq, 1);
      assert.ok(!ids.has(m.message.id), "ids are unique across rooms");
    });

    it("`at` is the same string in the ack, the broadcast, history and a clientId retry", async () => {
      const { room, a, b } = await pair(srv);
      const got = waitFor(b, "message", (m) => m.room === room);
      const ack = await ok(a, "message:send", { room, text: "when?", clientId: "at-1" });
      assert.equal((await got).at, ack.message.at, "broadcast");
      const h = await ok(a, "history:fetch", { room });
      assert.equal(h.messages.at(-1).at, ack.message.at, "history:fetch");
      const retry = await ok(a, "message:send", { room, text: "when?", clientId: "at-1" });
      assert.equal(retry.message.at, ack.message.at, "clientId retry");
    });

    it("text is stored as sent (not trimmed); clientId is echoed", async () => {
      const { room, a } = await pair(srv);
      const ack = await ok(a, "message:send", { room, text: "  padded\n", clientId: "c-1" });
      assertMessage(ack.message, { text: "  padded\n", clientId: "c-1" });
      const h = await ok(a, "history:fetch", { room });
      assert.equal(h.messages.at(-1).text, "  padded\n");
      assert.equal(h.messages.at(-1).clientId, "c-1");
    });

    it("others in the room receive `message`; the sending socket does not", async () => {
      const { room, a, b } = await pair(srv);
      const carol = await connect(srv, identity("carol").auth);
      await ok(carol.socket, "room:join", { room });
      const outsider = await connect(srv, identity("out").auth);

      const gotB = waitFor(b, "message", (m) => m.room === room);
      const gotC = waitFor(carol.socket, "message", (m) => m.room === room);
      const noneA = noneOf(a, "message");
      const noneOut = noneOf(outsider.socket, "message");
      const ack = await ok(a, "message:send", { room, text: "hello all" });
      const [mb, mc] = await Promise.all([gotB, gotC]);
      assert.deepEqual(mb, ack.message, "broadcast equals the acked message");
      assert.deepEqual(mc, ack.message);
      await noneA.before(markerVia(b, room, [a]), "the sender");
      await noneOut.before(laterAck(outsider.socket), "a socket outside the room");
    });

    it("the sender's other tab in the room receives the message", async () => {
      const alice = identity("alice");
      const room = roomId("tabs");
      const t1 = await connect(srv, alice.auth);
      const t2 = await connect(srv, alice.auth);
      await ok(t1.socket, "room:join", { room });
      await ok(t2.socket, "room:join", { room });
      const got = waitFor(t2.socket, "message", (m) => m.room === room);
      const none = noneOf(t1.socket, "message");
      const ack = await ok(t1.socket, "message:send", { room, text: "from tab 1" });
      assert.equal((await got).id, ack.message.id);
      await none.before(markerVia(t2.socket, room, [t1.socket]), "the sending tab");
    });

    it("message:send to a room this socket has not entered is forbidden", async () => {
      const { room } = await pair(srv);
      const c = await connect(srv, identity("carol").auth);
      await fails(c.socket, "message:send", { room, text: "let me in" }, "forbidden");
    });

    it("clientId dedupe: the same clientId twice returns the original message and broadcasts once", async () => {
      const { room, a, b } = await pair(srv);
      const received = collect(b, "message", (m) => m.room === room);
      const first = await ok(a, "message:send", { room, text: "once", clientId: "dedupe-1" });
      const second = await ok(a, "message:send", { room, text: "once", clientId: "dedupe-1" });
      assert.equal(second.message.id, first.message.id);
      assert.equal(second.message.seq, first.message.seq);
      assertSameMessage(second.message, first.message);
      // the retry with a different text still returns the original
      const third = await ok(a, "message:send", { room, text: "changed", clientId: "dedupe-1" });
      assert.equal(third.message.id, first.message.id);
      assert.equal(third.message.text, "once");
      // a fresh send goes on at the next seq; once b has it, any duplicate broadcast would have come before it
      const nextArrives = waitFor(b, "message", (m) => m.text === "next");
      const next = await ok(a, "message:send", { room, text: "next" });
      assert.equal(next.message.seq, first.message.seq + 1);
      await nextArrives;
      received.stop();
      assert.deepEqual(
        received.map((m) => m.text),
        ["once", "next"],
        "the duplicate must not be broadcast",
      );
    });

    it("clientId dedupe is per user: another user's identical clientId is a new message", async () => {
      const { room, a, b } = await pair(srv);
      const m1 = await ok(a, "message:send", { room, text: "a", clientId: "shared-id" });
      const m2 = await ok(b, "message:send", { room, text: "b", clientId: "shared-id" });
      assert.notEqual(m2.message.id, m1.message.id);
      assert.equal(m2.message.seq, m1.message.seq + 1);
    });

    it("concurrent sends with the same clientId still produce one message", async () => {
      const { room, a } = await pair(srv);
      const acks = await Promise.all(
        Array.from({ length: 5 }, () => call(a, "message:send", { room, text: "race", clientId: "race-1" })),
      );
      for (const ack of acks) assert.equal(ack.ok, true, JSON.stringify(ack));
      assert.equal(new Set(acks.map((x) => x.message.id)).size, 1, "one message for one clientId");
      const h = await ok(a, "history:fetch", { room });
      assert.equal(h.messages.filter((m) => m.clientId === "race-1").length, 1);
    });

    it("seqs stay gap-free under concurrent sends from several sockets", async () => {
      const { room, a, b } = await pair(srv);
      const sends = [];
      for (let i = 0; i < 20; i++) sends.push(call(i % 2 ? a : b, "message:send", { room, text: `c${i}` }));
      const acks = await Promise.all(sends);
      for (const ack of acks) assert.equal(ack.ok, true, JSON.stringify(ack));
      assert.deepEqual(
        acks.map((x) => x.message.seq).sort((x, y) => x - y),
        Array.from({ length: 20 }, (_, i) => i + 1),
      );
    });

    for (const [label, text] of [
      ["empty", ""],
      ["whitespace only", "  \n\t  "],
    ]) {
      it(`text ${label} is bad_request`, async () => {
        const { room, a } = await pair(srv);
        await fails(a, "message:send", { room, text }, "bad_request");
      });
    }

    it("text over 4000 characters is too_large; exactly 4000 (multi-byte) is fine", async () => {
      const { room, a } = await pair(srv);
      await ok(a, "message:send", { room, text: "é".repeat(4000) });
      await fails(a, "message:send", { room, text: "x".repeat(4001) }, "too_large");
    });

    it("without an ack callback a failure comes as chat:error { event, error }", async () => {
      const { room, a } = await pair(srv);
      const got = waitFor(a, "chat:error");
      a.emit("message:send", { room, text: "" });
      const e = await got;
      assert.equal(e.event, "message:send");
      assertError({ ok: false, error: e.error }, "bad_request", "chat:error");

      const got2 = waitFor(a, "chat:error");
      a.emit("room:join", { room: "bad room" });
      const e2 = await got2;
      assert.equal(e2.event, "room:join");
      assert.equal(e2.error.code, "bad_request");
    });

    it("without an ack callback a success sends no chat:error and still broadcasts", async () => {
      const { room, a, b } = await pair(srv);
      const none = noneOf(a, "chat:error");
      const got = waitFor(b, "message", (m) => m.text === "fire and forget");
      a.emit("message:send", { room, text: "fire and forget" });
      await got;
      await none.before(laterAck(a));
    });

    it("with an ack callback a failure does not also send chat:error", async () => {
      const { room, a } = await pair(srv);
      const none = noneOf(a, "chat:error");
      await fails(a, "message:send", { room, text: "" }, "bad_request");
      await none.before(laterAck(a));
    });
  });

  describe(`messages: default limits [${store}]`, () => {
    const srv = useServer(store);

    it("default rate limit: a burst of 30 sends gives 20 ok, the rest rate_limited", async () => {
      const { room, a } = await pair(srv);
      const acks = await Promise.all(
        Array.from({ length: 30 }, (_, i) => call(a, "message:send", { room, text: `burst ${i}` })),
      );
      const okCount = acks.filter((x) => x.ok).length;
      const limited = acks.filter((x) => !x.ok);
      for (const x of limited) assertError(x, "rate_limited");
      // 20 burst, plus at most a couple refilled at 10/s while the burst is processed
      assert.ok(okCount >= 20 && okCount <= 23, `ok sends: ${okCount}`);
      assert.ok(limited.length >= 7, `rate_limited: ${limited.length}`);
    });
  });

  describe(`messages: --max-message-length 10 --send-rate 2 --send-burst 3 [${store}]`, () => {
    const srv = useServer(store, { flags: { "max-message-length": 10, "send-rate": 2, "send-burst": 3 } });

    it("max-message-length 10: 10 characters ok, 11 too_large", async () => {
      const { room, a } = await pair(srv);
      await ok(a, "message:send", { room, text: "0123456789" });
      await fails(a, "message:send", { room, text: "0123456789X" }, "too_large");
    });

    it("rate limit: a burst of 10 sends gives about 3 ok, the rest rate_limited; it refills", async () => {
      const { room, a, b } = await pair(srv);
      const acks = await Promise.all(
        Array.from({ length: 10 }, (_, i) => call(a, "message:send", { room, text: `r${i}` })),
      );
      const okCount = acks.filter((x) => x.ok).length;
      const limited = acks.filter((x) => !x.ok);
      for (const x of limited) assertError(x, "rate_limited");
      assert.ok(okCount >= 3 && okCount <= 4, `ok sends: ${okCount}`);
      assert.ok(limited.length >= 6, `rate_limited: ${limited.length}`);

      // per socket: another socket still has its burst
      await ok(b, "message:send", { room, text: "other" });

      // it refills at 2/s
      await sleep(1100);
      await ok(a, "message:send", { room, text: "after" });
    });

    it("DMs count against the same per-socket rate", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(srv, alice.auth);
      await connect(srv, bob.auth);
      const room = roomId("mix");
      await ok(a.socket, "room:join", { room });
      const acks = [];
      for (let i = 0; i < 3; i++) acks.push(await call(a.socket, "dm:send", { to: bob.id, text: `dm${i}` }));
      for (const x of acks) assert.equal(x.ok, true, JSON.stringify(x));
      await fails(a.socket, "message:send", { room, text: "one more" }, "rate_limited");
    });

    it("a rate_limited send without ack comes as chat:error", async () => {
      const { room, a } = await pair(srv);
      const errors = collect(a, "chat:error");
      for (let i = 0; i < 8; i++) a.emit("message:send", { room, text: `nr${i}` });
      await waitFor(a, "chat:error", (e) => e.error?.code === "rate_limited");
      await sleep(200);
      errors.stop();
      assert.ok(errors.length >= 4, `chat:error count ${errors.length}`);
      for (const e of errors) {
        assert.equal(e.event, "message:send");
        assert.equal(e.error.code, "rate_limited");
      }
    });
  });
}
