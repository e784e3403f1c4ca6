// Webhooks (--webhook-url): events from a durable outbox, signed, in order per room, retried with backoff,
// dead-lettered after --webhook-max-attempts and retried through the server API; kept across a restart; on two
// nodes each delivered once. The receiver is a real HTTP server on a random port; nothing is mocked.
import assert from "node:assert/strict";
import http from "node:http";
import { createHmac } from "node:crypto";
import { describe, after } from "node:test";

import {
  STORES,
  RFC3339_UTC,
  useServer,
  spawnServer,
  stopServer,
  it,
  connect,
  identity,
  roomId,
  rand,
  ok,
  sendMany,
  until,
  twoNodeGate,
  useTwoNodes,
} from "./harness.mjs";

const SECRET = `whsec-${rand(8)}`;
const ADMIN = `admin-${rand(8)}-0123456789`;
const READER = `read-${rand(8)}-0123456789`;
const KEYS = [`manage=${ADMIN}`, `read=${READER}`].join(",");
// Generous: the suite must pass on a loaded 2-core box.
const WAIT = { ms: 20_000, every: 25 };

/**
 * A host's webhook endpoint. Every request is recorded in `requests` ({ id, signature, raw, body, valid, status });
 * `refuse(body, attempt)` (attempt counts from 1 per id) returns a non-2xx status to answer, or nothing for 200.
 * `down()` closes the port (connection refused), `up()` listens on it again.
 */
async function startReceiver() {
  const r = { requests: [], attempts: new Map(), refuse: () => undefined };
  const server = http.createServer((req, res) => {
    let raw = "";
    req.setEncoding("utf8");
    req.on("data", (chunk) => (raw += chunk));
    req.on("end", () => {
      let body = null;
      try {
        body = JSON.parse(raw);
      } catch {
        /* recorded as null */
      }
      const id = req.headers["palaver-webhook-id"];
      // Ids are per database, and every suite has its own: an event is its id and its time.
      const key = `${id}@${body?.createdAt}`;
      const attempt = (r.attempts.get(key) ?? 0) + 1;
      r.attempts.set(key, attempt);
      const status = r.refuse(body, attempt) ?? 200;
      r.requests.push({ id, key, signature: req.headers["palaver-signature"], raw, body, valid: verify(req, raw), status });
      res.writeHead(status, { "content-type": "text/plain" }).end(status === 200 ? "ok" : "no");
    });
  });
  const listen = (port) => new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  await listen(0);
  r.port = server.address().port;
  r.url = `http://127.0.0.1:${r.port}/hooks`;
  r.down = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  };
  r.up = () => listen(r.port);
  r.close = r.down;
  /** Delivered (answered 200) events, each id once, in arrival order, optionally only those matching. */
  r.delivered = (match = () => true) => {
    const seen = new Set();
    return r.requests
      .filter((q) => q.status === 200 && q.body && match(q.body))
      .filter((q) => (seen.has(q.key) ? false : seen.add(q.key)))
      .map((q) => q.body);
  };
  return r;
}

/** Checks `Palaver-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` with the shared secret. */
function verify(req, raw) {
  const header = req.headers["palaver-signature"] ?? "";
  const parts = Object.fromEntries(header.split(",").map((kv) => kv.split("=")));
  const expected = createHmac("sha256", SECRET).update(`${parts.t}.${raw}`).digest("hex");
  const fresh = Math.abs(Date.now() / 1000 - Number(parts.t)) < 300;
  return parts.v1 === expected && fresh;
}

const roomOf = (body) => body?.data?.message?.room ?? body?.data?.room;
const inRoom = (room) => (body) => roomOf(body) === room;

/** Calls the API: `{ status, body }`. */
async function api(srv, method, path, key) {
  const headers = key ? { authorization: `Bearer ${key}` } : {};
  const response = await fetch(`${srv.url}/api/v1${path}`, { method, headers });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

const receiver = await startReceiver();
after(() => receiver.close());

const FLAGS = {
  "webhook-url": receiver.url,
  "webhook-secret": SECRET,
  // Attempts at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s: dead after about 3 s.
  "webhook-max-attempts": 6,
  "webhook-backoff-ms": 100,
  "webhook-timeout-ms": 2000,
  "api-key": KEYS,
};

for (const kind of STORES) {
  describe(`webhooks (${kind})`, () => {
    const h = useServer(kind, { flags: FLAGS });

    it("message.created is delivered, signed, with the documented shape", async () => {
      const alice = identity("alice");
      const { socket } = await connect(h, alice.auth);
      const room = roomId("wh");
      await ok(socket, "room:join", { room });
      const { message } = await ok(socket, "message:send", { room, text: "hello hooks" });
      await until(() => receiver.delivered(inRoom(room)).some((b) => b.type === "message.created"), WAIT);
      const request = receiver.requests.find((q) => q.body?.type === "message.created" && roomOf(q.body) === room);
      assert.ok(request.valid, `bad signature ${request.signature}`);
      assert.match(request.signature, /^t=\d+,v1=[0-9a-f]{64}$/);
      const body = request.body;
      assert.equal(request.id, body.id);
      assert.equal(typeof body.id, "string");
      assert.match(body.createdAt, RFC3339_UTC);
      assert.deepEqual(Object.keys(body).sort(), ["createdAt", "data", "id", "type"]);
      assert.equal(body.data.ns, "/");
      assert.deepEqual(body.data.message, message);
    });

    it("events of a room arrive in order, also when each first attempt fails", async () => {
      const { socket } = await connect(h, identity("order").auth);
      const room = roomId("wh-order");
      await ok(socket, "room:join", { room });
      receiver.refuse = (body, attempt) => (inRoom(room)(body) && attempt === 1 ? 500 : undefined);
      try {
        const sent = await sendMany(socket, room, 12);
        const created = () => receiver.delivered(inRoom(room)).filter((b) => b.type === "message.created");
        await until(() => created().length === sent.length, WAIT);
        assert.deepEqual(
          created().map((b) => b.data.message.seq),
          sent.map((m) => m.seq),
        );
        // Each was refused once first, and a room's later event waited for the earlier one.
        const firsts = receiver.requests.filter((q) => inRoom(room)(q.body) && q.body.type === "message.created");
        assert.ok(firsts.filter((q) => q.status === 500).length === sent.length);
      } finally {
        receiver.refuse = () => undefined;
      }
    });

    it("room.member_added and room.member_removed follow joins, leaves and the API", async () => {
      const alice = identity("alice");
      const bob = identity("bob");
      const a = await connect(h, alice.auth);
      const b = await connect(h, bob.auth);
      const room = roomId("wh-members");
      await ok(a.socket, "room:join", { room });
      await ok(b.socket, "room:join", { room });
      await ok(b.socket, "room:leave", { room });
      const carol = `u-carol-${rand()}`;
      const put = await fetch(`${h.url}/api/v1/rooms/${room}/members/${carol}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      assert.equal(put.status, 204);
      const del = await fetch(`${h.url}/api/v1/rooms/${room}/members/${carol}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${ADMIN}` },
      });
      assert.equal(del.status, 204);
      const members = () => receiver.delivered(inRoom(room)).filter((b) => b.type.startsWith("room."));
      await until(() => members().length === 5, WAIT);
      assert.deepEqual(
        members().map((b) => [b.type, b.data.user.id]),
        [
          ["room.member_added", alice.id],
          ["room.member_added", bob.id],
          ["room.member_removed", bob.id],
          ["room.member_added", carol],
          ["room.member_removed", carol],
        ],
      );
      const first = members()[0];
      assert.deepEqual(first.data, { ns: "/", room, user: { id: alice.id, name: alice.name } });
    });

    it("message.missed for a DM to an offline user, not for an online one", async () => {
      const alice = identity("alice");
      const online = identity("online");
      const offline = identity("offline");
      const a = await connect(h, alice.auth);
      await connect(h, online.auth);
      await ok(a.socket, "dm:send", { to: online.id, text: "you are here" });
      const { message } = await ok(a.socket, "dm:send", { to: offline.id, text: "you are not" });
      const missed = () =>
        receiver.delivered((b) => b.type === "message.missed" && [online.id, offline.id].includes(b.data.user.id));
      await until(() => missed().length >= 1, WAIT);
      // The online user's DM was decided before its ack, before the offline one was sent.
      assert.equal(missed().length, 1);
      assert.equal(missed()[0].data.user.id, offline.id);
      assert.deepEqual(missed()[0].data.message, message);
    });

    it("the receiver down (refused, then 500) and up again: delivered after retries", async () => {
      const { socket } = await connect(h, identity("retry").auth);
      const room = roomId("wh-down");
      await ok(socket, "room:join", { room });
      await receiver.down();
      let refusedOnce = false;
      try {
        // The chat itself is unaffected.
        await ok(socket, "message:send", { room, text: "while down" });
        // Connection refused (palaver logs each failed attempt), then 500 once, then 200.
        await until(() => h.server.log.some((l) => l.includes("webhook attempt failed") && l.includes("request failed")), WAIT);
        receiver.refuse = (body) => {
          if (inRoom(room)(body) && !refusedOnce) {
            refusedOnce = true;
            return 500;
          }
          return undefined;
        };
      } finally {
        await receiver.up();
      }
      try {
        await until(() => receiver.delivered(inRoom(room)).some((b) => b.type === "message.created"), WAIT);
      } finally {
        receiver.refuse = () => undefined;
      }
    });

    it("an endpoint that keeps failing is probed one attempt at a time: its events wait instead of dying", async () => {
      const { socket } = await connect(h, identity("probe").auth);
      const rooms = Array.from({ length: 4 }, () => roomId("wh-probe"));
      const ours = (body) => rooms.includes(roomOf(body));
      receiver.refuse = (body) => (ours(body) ? 503 : undefined);
      const sent = [];
      try {
        for (const room of rooms) {
          await ok(socket, "room:join", { room });
          sent.push((await ok(socket, "message:send", { room, text: `held back in ${room}` })).message);
        }
        // An outage of 4 s. Without the breaker each of the 8 events (a join and a message per room) would be
        // tried 6 times at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s and be dead by now: 48 attempts, 8 dead letters.
        await until(() => receiver.requests.some((q) => ours(q.body)), WAIT);
        await new Promise((resolve) => setTimeout(resolve, 4000));
        const attempts = receiver.requests.filter((q) => ours(q.body)).length;
        assert.ok(attempts <= 20, `${attempts} attempts during the outage`);
        const { body } = await api(h, "GET", "/webhooks/failed", ADMIN);
        assert.deepEqual(body.failed.filter((f) => ours({ data: f.data })), [], "dead-lettered during the outage");
      } finally {
        receiver.refuse = () => undefined;
      }
      // Back up: the next probe succeeds and everything goes out, each room in order.
      await until(() => rooms.every((room) => receiver.delivered(inRoom(room)).some((b) => b.type === "message.created")), WAIT);
      for (const [i, room] of rooms.entries()) {
        const created = receiver.delivered(inRoom(room)).filter((b) => b.type === "message.created");
        assert.deepEqual(created.map((b) => b.data.message), [sent[i]]);
      }
    });

    it("dead-lettered after --webhook-max-attempts, listed and retried through the API", async () => {
      const { socket } = await connect(h, identity("dead").auth);
      const room = roomId("wh-dead");
      await ok(socket, "room:join", { room });
      receiver.refuse = (body) => (inRoom(room)(body) ? 503 : undefined);
      let dead;
      try {
        const { message } = await ok(socket, "message:send", { room, text: "never taken" });
        await until(async () => {
          const { body } = await api(h, "GET", "/webhooks/failed", ADMIN);
          dead = body.failed.find((f) => f.type === "message.created" && f.data.message.id === message.id);
          return dead;
        }, WAIT);
        assert.equal(dead.attempts, 6);
        assert.match(dead.lastError, /503/);
        assert.match(dead.createdAt, RFC3339_UTC);
        assert.deepEqual(dead.data.message, message);
        const attempts = receiver.requests.filter((q) => q.id === dead.id && inRoom(room)(q.body));
        assert.equal(attempts.length, 6);
      } finally {
        receiver.refuse = () => undefined;
      }
      // Later events of the room are no longer held back by the dead letter.
      await ok(socket, "message:send", { room, text: "after the dead one" });
      await until(() => receiver.delivered(inRoom(room)).some((b) => b.data.message?.text === "after the dead one"), WAIT);
      // Retried through the API: pending again, delivered.
      assert.equal((await api(h, "POST", `/webhooks/failed/${dead.id}/retry`, ADMIN)).status, 204);
      await until(() => receiver.delivered((b) => b.id === dead.id && inRoom(room)(b)).length === 1, WAIT);
      const { body } = await api(h, "GET", "/webhooks/failed", ADMIN);
      assert.ok(!body.failed.some((f) => f.id === dead.id), "still listed after its retry was delivered");
      // Nothing failed to retry: 404.
      assert.equal((await api(h, "POST", `/webhooks/failed/${dead.id}/retry`, ADMIN)).status, 404);
      assert.equal((await api(h, "POST", `/webhooks/failed/999999999/retry`, ADMIN)).status, 404);
      assert.equal((await api(h, "POST", `/webhooks/failed/nope/retry`, ADMIN)).status, 404);
    });

    it("the dead-letter endpoints need a key with the manage scope", async () => {
      const none = await api(h, "GET", "/webhooks/failed");
      assert.equal(none.status, 401);
      assert.equal(none.body.error.code, "unauthorized");
      const reader = await api(h, "GET", "/webhooks/failed", READER);
      assert.equal(reader.status, 403);
      assert.equal(reader.body.error.code, "forbidden");
      assert.equal((await api(h, "POST", "/webhooks/failed/1/retry", READER)).status, 403);
      assert.equal((await api(h, "POST", "/webhooks/failed/1/retry")).status, 401);
      const admin = await api(h, "GET", "/webhooks/failed", ADMIN);
      assert.equal(admin.status, 200);
      assert.ok(Array.isArray(admin.body.failed));
      assert.equal((await api(h, "GET", "/webhooks/failed?limit=0", ADMIN)).status, 400);
      const doc = await api(h, "GET", "/openapi.json");
      for (const path of ["/api/v1/webhooks/failed", "/api/v1/webhooks/failed/{id}/retry"]) {
        assert.ok(doc.body.paths[path], `documents ${path}`);
      }
    });

    it("pending events survive a restart of palaver and are delivered by the new process", async () => {
      const { socket } = await connect(h, identity("restart").auth);
      const room = roomId("wh-restart");
      await ok(socket, "room:join", { room });
      // Refused until palaver has stopped: the events wait in the outbox.
      receiver.refuse = (body) => (inRoom(room)(body) ? 500 : undefined);
      let sent;
      try {
        sent = await sendMany(socket, room, 3);
        await until(() => receiver.requests.some((q) => inRoom(room)(q.body)), WAIT);
        socket.close();
        await stopServer(h.server);
      } finally {
        receiver.refuse = () => undefined;
      }
      h.server = await spawnServer({ databaseUrl: h.db.url, flags: FLAGS, label: `palaver/${kind}-restarted` });
      h.url = h.server.url;
      const created = () => receiver.delivered(inRoom(room)).filter((b) => b.type === "message.created");
      await until(() => created().length === 3, WAIT);
      assert.deepEqual(
        created().map((b) => b.data.message.id),
        sent.map((m) => m.id),
      );
    });
  });
}

const gate = await twoNodeGate();
describe("webhooks on two nodes (postgres + redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/hooks", flags: FLAGS });

  it("every event is delivered exactly once, each room in order", async () => {
    const rooms = [roomId("wh-2n"), roomId("wh-2n"), roomId("wh-2n")];
    const senders = [];
    for (const [i, node] of nodes.entries()) {
      const { socket } = await connect(node, identity(`n${i}`).auth);
      for (const room of rooms) await ok(socket, "room:join", { room });
      senders.push(socket);
    }
    const sent = new Map(rooms.map((r) => [r, []]));
    await Promise.all(
      senders.map(async (socket, i) => {
        for (let n = 0; n < 10; n++) {
          const room = rooms[n % rooms.length];
          const { message } = await ok(socket, "message:send", { room, text: `node ${i} #${n}` });
          sent.get(room).push(message);
        }
      }),
    );
    const inRooms = (b) => rooms.includes(roomOf(b));
    // 20 messages and 6 joins.
    await until(() => receiver.delivered(inRooms).length === 26, WAIT);
    // A last event per room, delivered after every earlier one of its room: any duplicate would be in by then.
    for (const room of rooms) await ok(senders[0], "message:send", { room, text: "last" });
    await until(() => receiver.delivered(inRooms).length === 29, WAIT);
    const counts = new Map();
    for (const q of receiver.requests.filter((q) => inRooms(q.body))) counts.set(q.key, (counts.get(q.key) ?? 0) + 1);
    assert.deepEqual(
      [...counts.entries()].filter(([, n]) => n !== 1),
      [],
      "some events were delivered more than once",
    );
    for (const room of rooms) {
      const seqs = receiver
        .delivered(inRoom(room))
        .filter((b) => b.type === "message.created")
        .map((b) => b.data.message.seq);
      assert.deepEqual(
        seqs,
        [...seqs].sort((x, y) => x - y),
        `room ${room} out of order`,
      );
      assert.equal(seqs.length, sent.get(room).length + 1);
    }
  });
});
