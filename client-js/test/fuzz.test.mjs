// Protocol fuzzing: fast-check generates payloads for every client event (arbitrary JSON, wrong types per field, huge
// strings, NUL and control characters, lone surrogates, deep nesting, arrays, several positional arguments, binary
// attachments, with and without an ack callback, unknown event names) and a stock socket.io-client sends them to the
// real server binary. For every case:
//   - the server process stays up and its log never says "panicked";
//   - an ack is `{ ok: true, … }` or `{ ok: false, error: { code: <non-empty string>, message: <string> } }`, and comes;
//   - without an ack callback, a failure comes as `chat:error { event, error: { code, message } }` and nothing else;
//   - the fuzzing socket is disconnected only for a packet over --max-payload, or (known, see `unreadableEvent`) for an
//     event name socketioxide cannot read; it then reconnects and goes on;
// and afterwards a bystander socket in a room has not been disconnected and still receives a message sent after the
// fuzzing. A second property sends generated texts and clientIds (NUL, control characters, …) while other users send
// valid messages at the same moment: whatever the server makes of the odd one, the others' sends all succeed (sends
// of many sockets are committed together, in one transaction per batch).
//
//   PALAVER_FUZZ_RUNS   cases per store (default 1000: a few seconds per store here; the batch property runs a tenth)
//   PALAVER_FUZZ_SEED   fast-check seed (default 20260909; "random" picks one); a failure prints the seed and the
//                       path that replay it
//   PALAVER_FUZZ_PATH   replay only the counterexample at this path (with its seed)
//   PALAVER_FUZZ_STRICT=1  also fail on `internal` error acks (a bug by the protocol's own definition)
// Stores: PALAVER_TEST_STORES, as for every suite.
import assert from "node:assert/strict";
import { describe } from "node:test";

import fc from "fast-check";

import { STORES, FAST, useServer, it, connect, identity, roomId, ok, call, waitFor, laterAck, short, ACK_TIMEOUT_MS } from "./harness.mjs";

const RUNS = Number(process.env.PALAVER_FUZZ_RUNS || 1000);
const SEED = process.env.PALAVER_FUZZ_SEED === "random" ? Date.now() % 2 ** 31 : Number(process.env.PALAVER_FUZZ_SEED || 20260909);
const PATH = process.env.PALAVER_FUZZ_PATH || undefined;
const STRICT = process.env.PALAVER_FUZZ_STRICT === "1";
const MAX_PAYLOAD = 64 * 1024;
/** Packets within this many bytes of the limit may go either way (framing is not counted exactly here). */
const SLACK = 64;

const EVENTS = [
  "room:create",
  "room:join",
  "room:leave",
  "rooms:list",
  "message:send",
  "history:fetch",
  "dm:send",
  "presence:list",
  "typing",
  "sync",
  "message:edit",
  "message:delete",
  "reaction:add",
  "reaction:remove",
  "room:read",
];
/** Events of an upcoming protocol version: today they may be unknown (`bad_request`); any well-formed ack will do. */
const UPCOMING = ["room:invite", "room:decline", "invitations:list"];
/** Names socket.io-client refuses to emit. */
const RESERVED = new Set(["connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"]);
/** The room the bystander sits in; the generators aim at it too. */
const LOBBY = "fuzz-lobby";

// ---------------------------------------------------------------------------------------------------------------
// generators

const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((c) => String.fromCharCode(c));
const control = fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c));
/** Strings with NUL, control characters, lone surrogates, bidi and zero-width characters mixed in. */
const nastyString = fc
  .array(
    fc.oneof(
      fc.string({ maxLength: 8 }),
      control,
      fc.constant("\u0000"),
      loneSurrogate,
      fc.constantFrom("\u202e", "\u200b", "\ufeff", "\u2028", "😀", "é", "\\", '"', "%s", "'; DROP TABLE rooms; --"),
    ),
    { maxLength: 12 },
  )
  .map((parts) => parts.join(""));
/** From just over the text limit to past the packet limit. */
const hugeString = fc
  .record({ ch: fc.constantFrom("x", "é", "😀", "\u0000", " "), n: fc.integer({ min: 3990, max: 70_000 }) })
  .map(({ ch, n }) => ch.repeat(n));
const deep = fc
  .record({ depth: fc.integer({ min: 20, max: 1000 }), kind: fc.constantFrom("array", "object") })
  .map(({ depth, kind }) => {
    let v = {};
    for (let i = 0; i < depth; i++) v = kind === "array" ? [v] : { room: v };
    return v;
  });
const anyString = fc.oneof(fc.string(), fc.string({ unit: "binary" }), nastyString, hugeString);
const wrongType = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constant([]),
  fc.constant({}),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
  deep,
);
const roomIdLike = fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/);
const room = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(LOBBY, "fuzz-other", "general") },
  { weight: 2, arbitrary: roomIdLike },
  { weight: 1, arbitrary: fc.constantFrom("", " ", "dm:x", "dm:a:b", "a".repeat(65), "bad room", "ROOM", "..", "-") },
  { weight: 1, arbitrary: anyString },
  { weight: 1, arbitrary: wrongType },
);
const text = fc.oneof(fc.string({ minLength: 1 }), anyString, fc.constantFrom("", "   ", "\n\t"), wrongType);
const emoji = fc.oneof(
  fc.constantFrom("👍", "❤️", "👩‍💻", "🇫🇷", "1️⃣", "👍🏽", "👍👍", "ok", "", " 👍", "\u200d", "\ufe0f", "🏴\u{e007f}"),
  anyString,
  wrongType,
);
const clientId = fc.oneof(fc.string({ minLength: 1, maxLength: 64 }), anyString, fc.constant(""), wrongType);
const number = fc.oneof(
  fc.integer({ min: -5, max: 200 }),
  fc.constantFrom(0, -1, 2 ** 31, 2 ** 53, -(2 ** 63), 1e308, 0.5, Number.NaN, Infinity),
  fc.double(),
  fc.string({ maxLength: 4 }),
  wrongType,
);
/** Optional fields: left out, or present with any value. */
const opt = (arb) => fc.option(arb, { nil: undefined });
const userId = (ids) => fc.oneof(fc.constantFrom(...ids), fc.string({ maxLength: 70 }), anyString, wrongType);

/** An object with these fields (optional ones through `opt`); now and then with any of them left out. */
const obj = (fields) =>
  fc.oneof({ weight: 3, arbitrary: fc.record(fields) }, { weight: 1, arbitrary: fc.record(fields, { requiredKeys: [] }) });

/** Object payloads shaped like each event's, with any field possibly wrong; per event name. */
function shaped(ids) {
  const users = fc.oneof(fc.array(userId(ids), { maxLength: 5 }), fc.array(fc.string(), { minLength: 101, maxLength: 120 }), wrongType);
  const visibility = fc.oneof(fc.constantFrom("public", "private", "secret"), wrongType);
  const cursor = fc.oneof(number, obj({ seq: number, rev: opt(number) }));
  const seqs = fc.oneof(fc.dictionary(room.filter((r) => typeof r === "string"), cursor, { maxKeys: 5 }), wrongType);
  return {
    "room:create": obj({ name: room, visibility: opt(visibility), members: opt(users) }),
    "room:join": obj({ room, limit: opt(number), since: opt(number), rev: opt(number) }),
    "room:leave": obj({ room }),
    "rooms:list": fc.oneof(fc.constant({}), obj({ room: opt(room) })),
    "message:send": obj({ room, text, clientId: opt(clientId), replyTo: opt(number) }),
    "message:edit": obj({ room, seq: number, text }),
    "message:delete": obj({ room, seq: number }),
    "reaction:add": obj({ room, seq: number, emoji }),
    "reaction:remove": obj({ room, seq: number, emoji }),
    "room:read": obj({ room, seq: number }),
    "history:fetch": obj({ room, before: opt(number), after: opt(number), limit: opt(number) }),
    "dm:send": obj({ to: userId(ids), text, clientId: opt(clientId) }),
    "presence:list": obj({ room }),
    typing: obj({ room }),
    sync: obj({ rooms: seqs }),
    "room:invite": obj({ room, users: opt(users), members: opt(users) }),
    "room:decline": obj({ room }),
    "invitations:list": fc.oneof(fc.constant({}), wrongType),
  };
}

function caseArbitrary(ids) {
  const byEvent = shaped(ids);
  const unknown = fc.oneof(
    fc.string({ maxLength: 20 }),
    nastyString,
    fc.constantFrom("", "room:join ", "ROOM:JOIN", "message", "session", "chat:error", "room:notice", "__proto__", "constructor", "toString", "hasOwnProperty"),
  );
  const event = fc
    .oneof({ weight: 6, arbitrary: fc.constantFrom(...EVENTS) }, { weight: 2, arbitrary: fc.constantFrom(...UPCOMING) }, { weight: 2, arbitrary: unknown })
    .filter((e) => !RESERVED.has(e));
  const anyPayload = fc.oneof(
    { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 4 }) },
    { weight: 2, arbitrary: fc.anything({ maxDepth: 3 }) },
    { weight: 1, arbitrary: anyString },
    { weight: 1, arbitrary: deep },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)) },
    { weight: 1, arbitrary: fc.record({ room: fc.constant(LOBBY), text: fc.uint8Array({ maxLength: 16 }).map((a) => Buffer.from(a)) }) },
  );
  return event.chain((name) => {
    const own = Object.hasOwn(byEvent, name) ? byEvent[name] : undefined;
    const payload = own ? fc.oneof({ weight: 3, arbitrary: own }, { weight: 2, arbitrary: anyPayload }) : anyPayload;
    const args = fc.oneof(
      { weight: 6, arbitrary: payload.map((p) => [p]) },
      { weight: 1, arbitrary: fc.constant([]) },
      { weight: 2, arbitrary: fc.array(payload, { minLength: 2, maxLength: 4 }) },
    );
    const ack = fc.oneof({ weight: 3, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) });
    return fc.record({ event: fc.constant(name), args, ack });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// checks

/** Bytes of the packet's JSON as socket.io-client writes it (binary attachments are counted by their length). */
function packetSize(event, args) {
  let binary = 0;
  const json = JSON.stringify([event, ...args], (_k, v) => {
    if (v && typeof v === "object" && v.type === "Buffer" && Array.isArray(v.data)) {
      binary += v.data.length;
      return { _placeholder: true, num: 0 };
    }
    return v;
  });
  return Buffer.byteLength(json ?? "") + binary;
}

/**
 * socketioxide 0.18 reads the event name as a borrowed `&str` (socketioxide-parser-common `read_event`), so a name whose
 * JSON has an escape (`"`, `\`, control characters, lone surrogates) fails to parse and the connection is closed
 * ("the packet could not be parsed") instead of answering `bad_request`. Known and accepted here. The close is not
 * immediate (a packet sent after it may still be answered), so the fuzzing socket is replaced after such a case, as
 * after an oversized one, for the close never to land on the next case.
 */
const unreadableEvent = (event) => JSON.stringify(event).slice(1, -1).includes("\\");

/** Why `ack` is not a well-formed ack, or null. */
function badAck(ack) {
  if (!ack || typeof ack !== "object" || Array.isArray(ack)) return `an ack must be an object, got ${short(ack)}`;
  if (ack.ok === true) return null;
  if (ack.ok !== false) return `ack.ok must be true or false in ${short(ack)}`;
  const e = ack.error;
  if (!e || typeof e !== "object") return `an error ack needs an error object: ${short(ack)}`;
  if (typeof e.code !== "string" || e.code.length === 0) return `error.code must be a non-empty string: ${short(ack)}`;
  if (typeof e.message !== "string") return `error.message must be a string: ${short(ack)}`;
  if (STRICT && e.code === "internal") return `internal error ack (PALAVER_FUZZ_STRICT): ${short(ack)}`;
  return null;
}

/** Why a `chat:error` payload is not `{ event, error: { code, message } }`, or null. */
function badChatError(payload) {
  if (!payload || typeof payload.event !== "string") return `chat:error without an event name: ${short(payload)}`;
  return badAck({ ok: false, error: payload.error });
}

/**
 * One fuzzing socket and what it saw. `run(c)` sends one case and checks it; it reconnects after a disconnect the
 * server was entitled to.
 */
function fuzzer(srv, user, stats) {
  const f = { socket: null, chatErrors: [], disconnects: [] };

  f.open = async () => {
    const { socket } = await connect(srv, user.auth);
    socket.on("chat:error", (e) => f.chatErrors.push(e));
    socket.on("disconnect", (reason) => f.disconnects.push(reason));
    // In two rooms, so that sends and reads there get past the membership checks. Best effort: the user's joins have a
    // budget, and a reconnecting socket re-enters the user's rooms anyway.
    for (const r of [LOBBY, "fuzz-other"]) {
      const joined = await call(socket, "room:join", { room: r });
      assert.ok(!badAck(joined), `room:join ${r}: ${short(joined)}`);
    }
    f.socket = socket;
  };

  /** Fails when the server has exited or its log says "panicked". */
  f.checkServer = (what) => {
    const panic = srv.server.log.find((l) => /panicked/.test(l));
    assert.ok(!panic, `the server panicked after ${what}: ${panic}`);
    assert.equal(srv.server.exit, null, `the server exited after ${what}: ${short(srv.server.exit)}`);
  };

  /** Sends one case; returns what happened, or throws with the case in the message. */
  f.run = async (c) => {
    if (!f.socket?.connected) await f.open();
    const { event, args, ack } = c;
    const what = `${ack ? "emitWithAck" : "emit"}(${short([event, ...args], 300)})`;
    const size = packetSize(event, args);
    const over = size > MAX_PAYLOAD + SLACK;
    const borderline = Math.abs(size - MAX_PAYLOAD) <= SLACK;
    const socket = f.socket;
    const errorsBefore = f.chatErrors.length;
    const disconnectsBefore = f.disconnects.length;
    let outcome;
    try {
      if (ack) {
        const answer = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, ...args);
        const bad = badAck(answer);
        assert.ok(!bad, `${what}: ${bad}`);
        outcome = answer.ok ? "ok" : answer.error.code;
        assert.equal(f.chatErrors.length, errorsBefore, `${what}: a chat:error came although the emit had an ack: ${short(f.chatErrors.slice(errorsBefore))}`);
      } else {
        socket.emit(event, ...args);
        // Events of a socket are answered in order: once a later ack is in, any chat:error for this one is too.
        const later = await laterAck(socket);
        assert.ok(!badAck(later), `rooms:list after ${what}: ${short(later)}`);
        const errors = f.chatErrors.slice(errorsBefore);
        assert.ok(errors.length <= 1, `${what}: ${errors.length} chat:error events: ${short(errors)}`);
        for (const e of errors) {
          const bad = badChatError(e);
          assert.ok(!bad, `${what}: ${bad}`);
        }
        outcome = errors.length ? `${errors[0].error.code} (chat:error)` : "no answer";
      }
      assert.ok(!over, `${what}: a packet of ${size} bytes (over --max-payload ${MAX_PAYLOAD}) was answered instead of closing the connection`);
      if (borderline || unreadableEvent(event)) socket.close();
    } catch (err) {
      if (f.disconnects.length === disconnectsBefore && socket.connected) throw err;
      // The server closed the connection: only an oversized packet or an unreadable event name entitles it to.
      await new Promise((r) => setImmediate(r));
      const reason = f.disconnects.slice(disconnectsBefore).join(", ") || "gone";
      assert.ok(
        over || borderline || unreadableEvent(event),
        `${what}: the server disconnected the fuzzing socket (${reason}) for a packet of ${size} bytes, under --max-payload ${MAX_PAYLOAD}`,
      );
      outcome = over || borderline ? `disconnected (${size} bytes)` : "disconnected (unreadable event name)";
      socket.close();
    }
    f.checkServer(what);
    const key = EVENTS.includes(event) || UPCOMING.includes(event) ? event : "(unknown event)";
    stats[key] ??= {};
    stats[key][outcome] = (stats[key][outcome] ?? 0) + 1;
    return outcome;
  };
  return f;
}

// ---------------------------------------------------------------------------------------------------------------

for (const store of STORES) {
  describe(`fuzz: generated payloads for every event [${store}]`, () => {
    const srv = useServer(store, { flags: { "max-payload": MAX_PAYLOAD } });

    it(`${RUNS} cases: no panic, well-formed acks, no disconnect but for oversized packets, the bystander unharmed`, { timeout: 300_000 }, async (t) => {
      const bystanderUser = identity("bystander");
      const speakerUser = identity("speaker");
      const fuzzUser = identity("fuzz");
      const bystander = await connect(srv, bystanderUser.auth);
      const speaker = await connect(srv, speakerUser.auth);
      await ok(bystander.socket, "room:join", { room: LOBBY });
      await ok(speaker.socket, "room:join", { room: LOBBY });
      const bystanderDisconnects = [];
      bystander.socket.on("disconnect", (reason) => bystanderDisconnects.push(reason));

      const stats = {};
      const f = fuzzer(srv, fuzzUser, stats);
      await f.open();
      f.checkServer("startup");
      const ids = [bystanderUser.id, speakerUser.id, fuzzUser.id, bystander.session.user.id];
      const started = Date.now();
      try {
        await fc.assert(
          fc.asyncProperty(caseArbitrary(ids), async (c) => {
            await f.run(c);
          }),
          { numRuns: RUNS, seed: SEED, path: PATH, endOnFailure: !!PATH },
        );
      } catch (err) {
        err.message = `${err.message}\n\nReplay: PALAVER_FUZZ_SEED=${SEED} (and the path above in PALAVER_FUZZ_PATH) PALAVER_TEST_STORES=${store} node --test test/fuzz.test.mjs`;
        throw err;
      }
      t.diagnostic(`${RUNS} cases on ${store} in ${Date.now() - started} ms (seed ${SEED}); fuzzing socket reconnected ${f.disconnects.length} time(s)`);
      for (const [event, outcomes] of Object.entries(stats).sort()) t.diagnostic(`${event}: ${JSON.stringify(outcomes)}`);

      // The bystander was never disconnected and still hears the room.
      assert.deepEqual(bystanderDisconnects, [], "the bystander was disconnected");
      assert.ok(bystander.socket.connected, "the bystander is still connected");
      const text = `after the fuzz ${roomId("m")}`;
      const heard = waitFor(bystander.socket, "message", (m) => m.room === LOBBY && m.text === text, ACK_TIMEOUT_MS);
      await ok(speaker.socket, "message:send", { room: LOBBY, text });
      await heard;
      f.checkServer("the fuzzing");
    });
  });
}

/** Other users sending at the same moment as the odd send, each to a room of its own. */
const NEIGHBOURS = 16;

for (const store of STORES) {
  describe(`fuzz: an odd send does not fail the sends committed with it [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    it(`${Math.ceil(RUNS / 10)} rounds: ${NEIGHBOURS} valid sends of other users next to one generated send, all ok`, { timeout: 300_000 }, async () => {
      const odd = await connect(srv, identity("odd").auth);
      await ok(odd.socket, "room:join", { room: LOBBY });
      const neighbours = [];
      for (let i = 0; i < NEIGHBOURS; i++) {
        const { socket } = await connect(srv, identity(`n${i}`).auth);
        await ok(socket, "room:join", { room: `fuzz-n${i}` });
        neighbours.push(socket);
      }
      // Kept under the packet limit: an oversized one would only close the odd socket.
      const oddSend = fc
        .record({ room: fc.constant(LOBBY), text: fc.oneof(nastyString, text), clientId: opt(fc.oneof(nastyString, clientId)) })
        .filter((p) => packetSize("message:send", [p]) < MAX_PAYLOAD - 1024);
      let round = 0;
      await fc.assert(
        fc.asyncProperty(oddSend, async (payload) => {
          round++;
          const sends = neighbours.map((s, i) => call(s, "message:send", { room: `fuzz-n${i}`, text: `round ${round}` }));
          sends.splice(NEIGHBOURS / 2, 0, call(odd.socket, "message:send", payload));
          const acks = await Promise.all(sends);
          const oddAck = acks.splice(NEIGHBOURS / 2, 1)[0];
          const bad = badAck(oddAck);
          assert.ok(!bad, `message:send ${short(payload)}: ${bad}`);
          const failed = acks.filter((a) => a?.ok !== true);
          assert.deepEqual(
            failed,
            [],
            `${failed.length} of ${NEIGHBOURS} valid sends of other users failed next to message:send ${short(payload)} (answered ${short(oddAck)})`,
          );
        }),
        { numRuns: Math.ceil(RUNS / 10), seed: SEED, path: PATH, endOnFailure: !!PATH },
      ).catch((err) => {
        err.message = `${err.message}\n\nReplay: PALAVER_FUZZ_SEED=${SEED} (and the path above in PALAVER_FUZZ_PATH) PALAVER_TEST_STORES=${store} node --test test/fuzz.test.mjs`;
        throw err;
      });
      assert.ok(!srv.server.log.some((l) => /panicked/.test(l)), "the server panicked");
    });
  });
}
