// No lost messages across a reconnection: the SDK catches up by itself (`sync` for a signed-in user,
// `room:join { since }` for a guest, paging when truncated) and `onMessage` delivers every message of a followed
// room exactly once, in seq order, without gaps — also when live messages overtake the catch-up or one is lost.
//
// The reader connects through a TCP proxy: the test cuts its transport (`engine.close()`) while the proxy refuses
// new connections, so the messages sent meanwhile are certainly missed, then lets it reconnect.
// The SDK does not depend on the store: SQLite unless PALAVER_TEST_STORES leaves it out.
import assert from "node:assert/strict";
import { describe } from "node:test";

import {
  FAST,
  STORES,
  it,
  identity,
  roomId,
  useServer,
  sdkClient,
  recordStream,
  outgoing,
  collect,
  tcpProxy,
  until,
  fullHistory,
  assertGapFree,
  waitDisconnect,
  waitFor,
  short,
} from "./harness.mjs";

const STORE = STORES.includes("sqlite") ? "sqlite" : STORES[0];

/** Blocks new connections at the proxy and cuts the client's transport; resolves once it is disconnected. */
async function cutAndHold(client, proxy) {
  proxy.block();
  const gone = waitDisconnect(client.socket);
  client.socket.io.engine.close();
  await gone;
}

/** Asserts the client's stream of `room` is exactly the room's history (ids, seqs 1..n, once each). */
async function assertStreamIsHistory(rec, client, room, what) {
  const history = await fullHistory(client.socket, room);
  assertGapFree(history, `${what}: history`);
  const stream = rec.of(room);
  assertGapFree(stream, `${what}: onMessage stream`);
  assert.deepEqual(
    stream.map((m) => m.id),
    history.map((m) => m.id),
    `${what}: the stream holds exactly the room's messages`,
  );
  return history;
}

/** Incoming `message` packets of the client's current transport matching `drop(m)` are discarded. */
function dropLive(client, drop) {
  const transport = client.socket.io.engine.transport;
  const original = transport.onPacket;
  const dropped = [];
  transport.onPacket = function (packet) {
    if (packet.type === "message" && typeof packet.data === "string" && packet.data.startsWith('2["message",')) {
      const [, m] = JSON.parse(packet.data.slice(1));
      if (drop(m)) {
        dropped.push(m);
        return;
      }
    }
    return original.call(this, packet);
  };
  return dropped;
}

/**
 * Holds back the client's first `sync` packet on its next connection until `release()`: `{ release, held }`.
 */
function holdNextSync(client) {
  const gate = { held: 0 };
  const released = new Promise((resolve) => (gate.release = resolve));
  client.socket.io.once("open", () => {
    const engine = client.socket.io.engine;
    const write = engine.write;
    engine.write = function (data, ...rest) {
      if (typeof data === "string" && /^2\d*\["sync"/.test(data)) {
        gate.held++;
        released.then(() => write.call(this, data, ...rest));
        return this;
      }
      return write.call(this, data, ...rest);
    };
  });
  return gate;
}

/**
 * The reader misses `missed` messages while cut off, then reconnects while the writer keeps sending (at least
 * `during` messages, and until the reader has its new session); it also sends one message itself while away.
 * Returns what the assertions need.
 */
async function missAndRecover(srv, { guest, before = 10, missed = 30, during = 20 }) {
  // Nothing is lost live here, so no gap fill is needed: a long gapTimeout keeps it from masking the catch-up.
  const readerOptions = { gapTimeout: 60_000 };
  const proxy = await tcpProxy(srv);
  try {
    const room = roomId(guest ? "rec-guest" : "rec-user");
    const reader = await sdkClient(proxy.url, { auth: guest ? { name: "Gus" } : identity("reader").auth, ...readerOptions });
    const rec = recordStream(reader);
    const live = collect(reader.socket, "message", (m) => m.room === room);
    const syncs = outgoing(reader.socket, "sync");
    const joins = outgoing(reader.socket, "room:join");
    const fetches = outgoing(reader.socket, "history:fetch");
    const firstSession = await reader.session;
    await reader.join(room);
    const writer = await sdkClient(srv.url, { auth: identity("writer").auth });
    await writer.session;
    await writer.join(room);

    const acked = [];
    for (let i = 0; i < before; i++) acked.push(await (i % 3 === 2 ? reader : writer).send(room, `before ${i}`));
    await until(() => reader.lastSeq(room) === before, { what: () => `reader at ${reader.lastSeq(room)}` });

    await cutAndHold(reader, proxy);
    const cutAt = { syncs: syncs.length, joins: joins.length, fetches: fetches.length };
    const sentWhileAway = reader.send(room, "sent while away"); // waits for the reconnection
    const missedMessages = [];
    for (let i = 0; i < missed; i++) missedMessages.push(await writer.send(room, `missed ${i}`));
    acked.push(...missedMessages);

    proxy.unblock(); // the reader reconnects while the writer goes on
    for (let i = 0; i < during || rec.sessions < 2; i++) {
      assert.ok(i < 2000, "the reader did not reconnect");
      acked.push(await writer.send(room, `during ${i}`));
    }
    acked.push(await sentWhileAway);
    acked.push(await writer.send(room, "after the catch-up"));
    const total = acked.length;
    await until(() => reader.lastSeq(room) === total && !reader.recovering, {
      ms: 10_000,
      what: () => `reader at ${reader.lastSeq(room)} of ${total}, recovering ${reader.recovering}`,
    });
    const sent = {
      syncs: syncs.slice(cutAt.syncs),
      joins: joins.slice(cutAt.joins),
      fetches: fetches.slice(cutAt.fetches),
    };

    const history = await assertStreamIsHistory(rec, reader, room, guest ? "guest" : "user");
    assert.equal(history.length, total, "history holds every acked message and nothing else");
    const byId = new Map(history.map((m) => [m.id, m]));
    for (const m of acked) assert.equal(byId.get(m.id)?.seq, m.seq, `acked message ${m.seq} is in history`);
    const liveSeqs = new Set(live.map((m) => m.seq));
    for (const m of missedMessages) {
      assert.ok(!liveSeqs.has(m.seq), `message ${m.seq} was sent while the reader was cut off, yet arrived live`);
    }
    assert.ok(liveSeqs.has(total), "live delivery goes on after the catch-up");
    assert.deepEqual(rec.errors, [], "no recovery error");
    assert.equal(rec.sessions, 2, "one reconnection");
    return {
      room,
      before,
      reader,
      firstSession,
      ...sent,
    };
  } finally {
    await proxy.close();
  }
}

describe(`recovery: the SDK catches up after a reconnection [${STORE}]`, () => {
  const srv = useServer(STORE, { flags: FAST });

  it("a signed-in user: one sync with the last seq; the stream is exactly 1..N", async () => {
    const r = await missAndRecover(srv, { guest: false });
    assert.equal(r.syncs.length, 1, `one sync after the reconnection, got ${short(r.syncs)}`);
    assert.deepEqual(r.syncs[0], { rooms: { [r.room]: { seq: r.before, rev: 0 } } }, "sync carries the last seq held (and the room's revision)");
    assert.equal(r.joins.length, 0, "a signed-in user's rooms are re-entered by the server: no room:join");
    assert.equal(r.fetches.length, 0, "nothing truncated: no paging");
  });

  it("a guest: room:join { since } again with a new user id; the stream is exactly 1..N", async () => {
    const r = await missAndRecover(srv, { guest: true });
    assert.notEqual(r.reader.user.id, r.firstSession.user.id, "a guest gets a new user id on reconnecting");
    assert.equal(r.syncs.length, 0, "a guest does not sync");
    assert.deepEqual(r.joins[0], { room: r.room, since: r.before, rev: 0 }, "the room is joined again with since (and rev)");
    assert.equal(r.joins.length, 1);
    assert.equal(r.fetches.length, 0);
  });

  it("live messages that overtake the catch-up are held, and the catch-up's copies of them are dropped", async () => {
    const proxy = await tcpProxy(srv);
    try {
      const room = roomId("overtake");
      const reader = await sdkClient(proxy.url, { auth: identity("reader").auth, gapTimeout: 60_000 });
      const rec = recordStream(reader);
      const live = collect(reader.socket, "message", (m) => m.room === room);
      await reader.join(room);
      const writer = await sdkClient(srv.url, { auth: identity("writer").auth });
      await writer.join(room);
      for (let i = 1; i <= 5; i++) await writer.send(room, `m${i}`);
      await until(() => reader.lastSeq(room) === 5);

      await cutAndHold(reader, proxy);
      for (let i = 6; i <= 15; i++) await writer.send(room, `m${i}`);
      const gate = holdNextSync(reader);
      const session = waitFor(reader.socket, "session", () => true, 5000);
      proxy.unblock();
      await session;
      // The server has put the reader back in the room; its sync is held back: these arrive live above the gap.
      for (let i = 16; i <= 20; i++) await writer.send(room, `m${i}`);
      await until(() => live.some((m) => m.seq === 20), { what: () => "seq 20 did not arrive live" });
      assert.equal(gate.held, 1, "the sync was held back");
      assert.equal(reader.lastSeq(room), 5, "nothing is delivered above the gap");
      assert.equal(rec.of(room).length, 5, "16..20 are held, not delivered");
      assert.equal(reader.recovering, true, "recovering while messages are held");
      gate.release(); // the sync reply has 6..20, including the five already held
      await until(() => reader.lastSeq(room) === 20 && !reader.recovering, {
        what: () => `reader at ${reader.lastSeq(room)}`,
      });
      await assertStreamIsHistory(rec, reader, room, "overtaken catch-up");
      assert.deepEqual(
        live.filter((m) => m.seq > 5).map((m) => m.seq),
        [16, 17, 18, 19, 20],
        "16..20 came live as well",
      );
      assert.deepEqual(rec.errors, []);
    } finally {
      await proxy.close();
    }
  });

  it("messages delivered live before the sync reply are not delivered again from it", async () => {
    const proxy = await tcpProxy(srv);
    try {
      const room = roomId("dup");
      const reader = await sdkClient(proxy.url, { auth: identity("reader").auth, gapTimeout: 60_000 });
      const rec = recordStream(reader);
      const syncs = outgoing(reader.socket, "sync");
      await reader.join(room);
      const writer = await sdkClient(srv.url, { auth: identity("writer").auth });
      await writer.join(room);
      for (let i = 1; i <= 3; i++) await writer.send(room, `m${i}`);
      await until(() => reader.lastSeq(room) === 3);
      await cutAndHold(reader, proxy); // nothing is missed this time
      const gate = holdNextSync(reader);
      const session = waitFor(reader.socket, "session", () => true, 5000);
      proxy.unblock();
      await session;
      for (let i = 4; i <= 6; i++) await writer.send(room, `m${i}`);
      await until(() => reader.lastSeq(room) === 6, { what: () => `reader at ${reader.lastSeq(room)}` });
      assert.equal(gate.held, 1, "the sync (since 3) is still held back");
      gate.release(); // its reply has 4..6 again
      await until(() => !reader.recovering && syncs.length === 1);
      await reader.catchUp(); // a second sync (since 6): one more round trip, so the first reply has been handled
      assert.deepEqual(syncs, [{ rooms: { [room]: { seq: 3, rev: 0 } } }, { rooms: { [room]: { seq: 6, rev: 0 } } }]);
      await assertStreamIsHistory(rec, reader, room, "live before the sync reply");
    } finally {
      await proxy.close();
    }
  });

  it("a live message lost in transit is fetched with history:fetch { after }, the later ones held until then", async () => {
    const room = roomId("lost");
    const reader = await sdkClient(srv.url, { auth: identity("reader").auth, gapTimeout: 100 });
    const rec = recordStream(reader);
    const fetches = outgoing(reader.socket, "history:fetch");
    await reader.join(room);
    const writer = await sdkClient(srv.url, { auth: identity("writer").auth });
    await writer.join(room);
    const dropped = dropLive(reader, (m) => m.room === room && m.seq === 3);
    const order = [];
    reader.onMessage((m) => order.push(m.seq));
    reader.socket.onAnyOutgoing((event) => event === "history:fetch" && order.push("fetch"));
    for (let i = 1; i <= 6; i++) await writer.send(room, `m${i}`);
    await until(() => reader.lastSeq(room) === 6 && !reader.recovering, { what: () => `reader at ${reader.lastSeq(room)}` });
    assert.equal(dropped.length, 1, "seq 3 was dropped on the way");
    assert.deepEqual([...fetches], [{ room, after: 2, limit: 100 }], "the gap was fetched after the last seq held");
    assert.deepEqual(order, [1, 2, "fetch", 3, 4, 5, 6], "4..6 were held until 3 was fetched");
    await assertStreamIsHistory(rec, reader, room, "lost live message");
    assert.deepEqual(rec.errors, []);
  });

  it("a message arriving while a gap is fetched is not mistaken for a hole in history", async () => {
    const room = roomId("late");
    const reader = await sdkClient(srv.url, { auth: identity("reader").auth, gapTimeout: 50 });
    const rec = recordStream(reader);
    const fetches = outgoing(reader.socket, "history:fetch");
    await reader.join(room);
    const writer = await sdkClient(srv.url, { auth: identity("writer").auth });
    await writer.join(room);
    const dropped = dropLive(reader, (m) => m.room === room && (m.seq === 3 || m.seq === 5));
    // Hold back the ack of the first gap fetch until released.
    const transport = reader.socket.io.engine.transport;
    const onPacket = transport.onPacket;
    let release;
    const gate = new Promise((resolve) => (release = resolve));
    let held = null;
    transport.onPacket = function (packet) {
      if (!held && fetches.length === 1 && packet.type === "message" && /^3\d/.test(packet.data)) {
        held = packet;
        gate.then(() => onPacket.call(this, packet));
        return;
      }
      return onPacket.call(this, packet);
    };
    for (let i = 1; i <= 4; i++) await writer.send(room, `m${i}`); // 3 lost: 4 held, the gap fetch (after 2) goes out
    await until(() => held !== null, { what: () => `fetches ${JSON.stringify(fetches)}` });
    // The fetch has been answered ([3, 4], nothing more); meanwhile 5 (lost too) and 6 (live, held) are committed.
    await writer.send(room, "m5");
    await writer.send(room, "m6");
    await until(() => dropped.length === 2);
    release();
    await until(() => reader.lastSeq(room) === 6 && !reader.recovering, { what: () => `reader at ${reader.lastSeq(room)}` });
    assert.deepEqual(rec.errors, [], "nothing was skipped");
    assert.deepEqual(
      fetches.map((f) => f.after),
      [2, 4],
      "a second fetch after the first one's answer found 5",
    );
    await assertStreamIsHistory(rec, reader, room, "late arrival during a gap fetch");
  });

  it("catchUp(): a lost last message (no later one reveals the gap) is found by an explicit catch-up", async () => {
    const room = roomId("tail");
    const reader = await sdkClient(srv.url, { auth: identity("reader").auth });
    const rec = recordStream(reader);
    const syncs = outgoing(reader.socket, "sync");
    await reader.join(room);
    const writer = await sdkClient(srv.url, { auth: identity("writer").auth });
    await writer.join(room);
    dropLive(reader, (m) => m.room === room && m.seq === 3);
    for (let i = 1; i <= 3; i++) await writer.send(room, `m${i}`);
    await until(() => reader.lastSeq(room) === 2);
    await reader.catchUp();
    assert.deepEqual(syncs, [{ rooms: { [room]: { seq: 2, rev: 0 } } }]);
    assert.equal(reader.lastSeq(room), 3);
    await assertStreamIsHistory(rec, reader, room, "tail");
  });

  it("a guest's send whose ack was lost in a cut resolves with the original from the catch-up, sent once", async () => {
    const room = roomId("guest-send");
    const guest = await sdkClient(srv.url, { auth: { name: "Gia" }, ackTimeout: 3000, gapTimeout: 60_000 });
    const rec = recordStream(guest);
    const sends = outgoing(guest.socket, "message:send");
    await guest.join(room);
    const watcher = await sdkClient(srv.url, { auth: identity("watcher").auth });
    await watcher.join(room);
    // this transport never delivers an ack: the server stores the message, the guest does not learn it
    const transport = guest.socket.io.engine.transport;
    const onPacket = transport.onPacket;
    transport.onPacket = function (packet) {
      if (packet.type === "message" && typeof packet.data === "string" && /^3\d/.test(packet.data)) return;
      return onPacket.call(this, packet);
    };
    const committed = waitFor(watcher.socket, "message", (m) => m.room === room, 5000);
    const sending = guest.send(room, "hello once");
    const original = await committed;
    guest.socket.io.engine.close(); // a new connection, so a new guest id, which the server would not dedupe
    const m = await sending;
    assert.equal(m.id, original.id, "resolved with the original message");
    assert.equal(sends.length, 1, "not sent again: the catch-up (room:join since) brought the original back");
    assert.notEqual(guest.user.id, original.from.id, "the guest has a new id now");
    const history = await assertStreamIsHistory(rec, guest, room, "guest send");
    assert.equal(history.length, 1, "stored once");
  });

  it("a client given two URLs moves to the second when the first refuses connections", async () => {
    const first = await tcpProxy(srv);
    const second = await tcpProxy(srv);
    try {
      const room = roomId("failover");
      const reader = await sdkClient([first.url, second.url], { auth: identity("reader").auth, gapTimeout: 60_000 });
      const rec = recordStream(reader);
      await reader.join(room);
      assert.equal(reader.url, first.url);
      const writer = await sdkClient(srv.url, { auth: identity("writer").auth });
      await writer.join(room);
      for (let i = 1; i <= 5; i++) await writer.send(room, `m${i}`);
      first.block(); // "node 1" is gone for good
      first.cut();
      for (let i = 6; i <= 30; i++) await writer.send(room, `m${i}`);
      await until(() => reader.lastSeq(room) === 30 && !reader.recovering, {
        what: () => `reader at ${reader.lastSeq(room)}, url ${reader.url}`,
      });
      assert.equal(reader.url, second.url, "moved to the second URL");
      assert.equal(rec.sessions, 2);
      await assertStreamIsHistory(rec, reader, room, "failover");
    } finally {
      await first.close();
      await second.close();
    }
  });
});

describe(`recovery: truncated catch-up pages with history:fetch { after } [${STORE}]`, () => {
  const srv = useServer(STORE, { flags: { ...FAST, "recovery-limit": 20 } });

  for (const guest of [false, true]) {
    it(`${guest ? "a guest" : "a signed-in user"} misses 100 messages with --recovery-limit 20: still exactly 1..N`, async () => {
      const r = await missAndRecover(srv, { guest, before: 10, missed: 100, during: 10 });
      if (guest) assert.deepEqual(r.joins[0], { room: r.room, since: 10, rev: 0 });
      else assert.deepEqual(r.syncs, [{ rooms: { [r.room]: { seq: 10, rev: 0 } } }]);
      assert.ok(r.fetches.length >= 1, "truncated: the rest was paged");
      assert.deepEqual(r.fetches[0], { room: r.room, after: 30, limit: 100 }, "paging starts after the 20 recovered");
    });
  }
});
