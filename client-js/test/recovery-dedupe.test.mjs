// Concurrent retries of one clientId: five sockets of the same signed-in user emit the same `message:send`
// (same room, text and clientId) at the same moment, round after round. Exactly one message is stored per round,
// every ack carries that message (same id and seq), no seq is burnt by the losers, and the room sees the message
// once. On one node per store, and across two nodes (Postgres + Redis), the sockets split between them.
import assert from "node:assert/strict";
import { describe, after } from "node:test";

import {
  FAST,
  STORES,
  it,
  identity,
  rand,
  roomId,
  connect,
  ok,
  call,
  collect,
  until,
  markerVia,
  isMarker,
  useServer,
  createDatabase,
  spawnServer,
  stopServer,
  fullHistory,
  assertGapFree,
  short,
  REDIS_URL,
  twoNodeGate,
} from "./harness.mjs";

const SOCKETS = 5;
const ROUNDS = 20;

/** `nodes[i % nodes.length]` serves socket i; one observer per node. */
async function concurrentRetries(t, nodes) {
  const user = identity("retrier");
  const room = roomId("retry");
  const first = await connect(nodes[0], user.auth);
  await ok(first.socket, "room:join", { room });
  const sockets = [first.socket];
  for (let i = 1; i < SOCKETS; i++) {
    // the user's other sockets are put in the room on connect
    const { socket, session } = await connect(nodes[i % nodes.length], user.auth);
    assert.ok(session.rooms.some((r) => r.id === room && r.member), `socket ${i}: session lists the room`);
    sockets.push(socket);
  }
  const observers = [];
  const observerSockets = [];
  const inRoom = (m) => m.room === room && !isMarker(m);
  for (const node of nodes) {
    const o = await connect(node, identity("observer").auth);
    await ok(o.socket, "room:join", { room });
    observerSockets.push(o.socket);
    observers.push(collect(o.socket, "message", inRoom));
  }
  const own = sockets.map((s) => collect(s, "message", inRoom));

  const stored = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const clientId = `retry-${round}-${rand()}`;
    const text = `round ${round}`;
    // every emit is written before any ack can come back
    const acks = await Promise.all(sockets.map((s) => call(s, "message:send", { room, text, clientId })));
    for (const [i, ack] of acks.entries()) {
      assert.ok(ack?.ok, `round ${round}, socket ${i}: ${short(ack)}`);
    }
    const ids = new Set(acks.map((a) => a.message.id));
    assert.equal(ids.size, 1, `round ${round}: every ack carries the same message, got ${short(acks.map((a) => a.message))}`);
    assert.deepEqual(new Set(acks.map((a) => a.message.seq)), new Set([round]), `round ${round}: one seq, and no seq burnt`);
    assert.equal(acks[0].message.clientId, clientId);
    assert.equal(acks[0].message.text, text);
    stored.push(acks[0].message);
  }

  const history = await fullHistory(first.socket, room);
  assertGapFree(history, "history");
  assert.deepEqual(
    history.map((m) => m.id),
    stored.map((m) => m.id),
    "history holds exactly one message per round",
  );

  // Every observer gets each message once; of the user's own sockets, all but the one whose send stored it.
  await until(() => observers.every((seen) => seen.length >= ROUNDS), {
    ms: 5000,
    what: () => `observers saw ${observers.map((s) => s.length).join(", ")} of ${ROUNDS}`,
  });
  // A duplicate would have been broadcast before the last ack; a marker sent now reaches every socket after it.
  await markerVia(first.socket, room, [...observerSockets, ...sockets.slice(1)]);
  for (const [k, seen] of observers.entries()) {
    assert.deepEqual(seen.map((m) => m.seq), stored.map((m) => m.seq), `observer ${k} got each message once`);
  }
  for (const m of stored) {
    const got = own.map((seen) => seen.filter((x) => x.seq === m.seq).length);
    assert.ok(got.every((n) => n <= 1), `seq ${m.seq}: a socket of the sender got it more than once (${got})`);
    assert.equal(
      got.reduce((a, b) => a + b, 0),
      SOCKETS - 1,
      `seq ${m.seq}: the user's other sockets get the broadcast once, the storing socket not (${got})`,
    );
  }
  t.diagnostic(`${ROUNDS} rounds of ${SOCKETS} concurrent sends over ${nodes.length} node(s): ${history.length} stored`);
}

for (const store of STORES) {
  describe(`recovery: concurrent retries of one clientId [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    it(`${SOCKETS} sockets of one user send the same clientId at once: one message, every ack the same`, async (t) => {
      await concurrentRetries(t, [srv.server]);
    });
  });
}

const { skip: twoNodesSkip, requireRedis } = await twoNodeGate();
describe("recovery: concurrent retries of one clientId on two nodes (Postgres + Redis)", { skip: twoNodesSkip }, () => {
  let db;
  const servers = [];
  after(async () => {
    for (const s of servers) await stopServer(s);
    if (db) await db.drop();
  });

  it(`${SOCKETS} sockets of one user on two nodes send the same clientId at once: one message, every ack the same`, async (t) => {
    requireRedis();
    db = await createDatabase("postgres");
    const flags = { ...FAST, "redis-url": REDIS_URL, "redis-prefix": `palaver-test-${process.pid}-${rand()}` };
    servers.push(await spawnServer({ databaseUrl: db.url, flags, label: "palaver/node-a" }));
    servers.push(await spawnServer({ databaseUrl: db.url, flags, label: "palaver/node-b" }));
    await concurrentRetries(t, servers);
  });
});
