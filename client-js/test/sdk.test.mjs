// The SDK (src/ → dist/): every helper on success and error paths, connect_error parsing, clientId on every send,
// resend on a lost ack or a cut transport (stored once), and that typed usage compiles.
//
// The SDK does not depend on the store, so this suite runs on one store: SQLite unless PALAVER_TEST_STORES
// leaves it out.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { describe } from "node:test";

import {
  PalaverClient,
  PalaverError,
  connect,
  isPalaverError,
  newClientId,
  parseConnectError,
} from "../dist/index.js";
import {
  PKG_ROOT,
  STORES,
  identity,
  it,
  roomId,
  useServer,
  track,
  token,
  sleep,
  waitFor,
  noneOf,
  markerVia,
  isMarker,
  collect,
  assertMessage,
  assertRoom,
  assertUser,
  assertSameMessage,
} from "./harness.mjs";

const STORE = STORES.includes("sqlite") ? "sqlite" : STORES[0];
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** An SDK client on `srv` over websocket, closed at the end of the test. */
function sdk(srv, { socket, ...options } = {}) {
  const client = connect(srv.url, {
    ...options,
    socket: { transports: ["websocket"], forceNew: true, reconnectionDelay: 50, reconnectionDelayMax: 200, ...socket },
  });
  track(client.socket);
  return client;
}

/** An SDK client whose session has arrived. */
async function ready(srv, options) {
  const client = sdk(srv, options);
  await client.session;
  return client;
}

/** Asserts `promise` rejects with a PalaverError of `code`; returns the error. */
async function rejectsWith(promise, code, what = "") {
  let err;
  try {
    const value = await promise;
    assert.fail(`${what} expected PalaverError ${code}, resolved with ${JSON.stringify(value)?.slice(0, 300)}`);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof PalaverError, `${what} expected a PalaverError, got ${err?.stack ?? err}`);
  assert.ok(err instanceof Error, "PalaverError is an Error");
  assert.equal(err.name, "PalaverError");
  assert.equal(err.code, code, `${what} wrong code (message: ${err.message})`);
  assert.equal(typeof err.message, "string");
  assert.ok(err.message.length > 0, "the error has a message");
  return err;
}

/**
 * Makes the client's current transport drop incoming Socket.IO ACK packets (the first `count` of them): the
 * server got the event and answered, the answer is lost on the way. Returns `{ dropped }`.
 */
function dropAcks(client, count = Infinity) {
  const transport = client.socket.io.engine.transport;
  const original = transport.onPacket;
  const state = { dropped: 0 };
  transport.onPacket = function (packet) {
    // an engine.io "message" whose Socket.IO packet type is 3 (ACK), on the main namespace: "3<id>[…]"
    if (state.dropped < count && packet.type === "message" && typeof packet.data === "string" && /^3\d/.test(packet.data)) {
      state.dropped++;
      return;
    }
    return original.call(this, packet);
  };
  return state;
}

/** Records the payload of every outgoing `event` of the client's socket. */
function outgoing(client, event) {
  const seen = [];
  client.socket.onAnyOutgoing((name, payload) => {
    if (name === event) seen.push(payload);
  });
  return seen;
}

/** Two signed-in SDK clients in a fresh room. */
async function pair(srv, options = {}) {
  const alice = identity("alice");
  const bob = identity("bob");
  const room = roomId("sdk");
  const a = await ready(srv, { auth: alice.auth, ...options });
  const b = await ready(srv, { auth: bob.auth });
  await a.join(room);
  await b.join(room);
  return { room, a, b, alice, bob };
}

describe(`sdk: connect [${STORE}]`, () => {
  const srv = useServer(STORE);

  it("a guest with a name: session resolves, user is set", async () => {
    const client = sdk(srv, { auth: { name: "Ada" } });
    assert.ok(client instanceof PalaverClient);
    assert.equal(client.user, undefined, "no user before the session");
    const session = await client.session;
    assertUser(session.user, { name: "Ada", anonymous: true });
    assert.ok(Array.isArray(session.rooms));
    assert.deepEqual(client.user, session.user);
    assert.equal(client.socket.connected, true, "client.socket is the live socket.io-client socket");
  });

  it("a signed-in user: the user id is the JWT sub", async () => {
    const alice = identity("alice");
    const client = sdk(srv, { auth: alice.auth });
    const { user } = await client.session;
    assertUser(user, { id: alice.id, name: alice.name, anonymous: false });
  });

  it("no auth at all: a random guest", async () => {
    const client = sdk(srv);
    const { user } = await client.session;
    assertUser(user, { anonymous: true });
    assert.ok(user.id.startsWith("anon-"), user.id);
  });

  for (const [label, makeToken, code] of [
    ["a bad signature", () => token("u-x", {}, { secret: "not-the-secret" }), "bad_signature"],
    ["an expired token", () => token("u-x", { exp: Math.floor(Date.now() / 1000) - 3600 }), "expired"],
    ["a token that is not a JWT", () => "not-a-jwt", "invalid_token"],
    ["a token without sub", () => token(undefined, { name: "nobody" }), "missing_sub"],
  ]) {
    it(`connect_error for ${label} → PalaverError ${code} (onConnectError, session, calls)`, async () => {
      const client = sdk(srv, { auth: { token: makeToken() } });
      const seen = new Promise((resolve) => client.onConnectError(resolve));
      const err = await seen;
      assert.ok(err instanceof PalaverError);
      assert.equal(err.code, code, err.message);
      assert.ok(err.message.length > 0 && !err.message.startsWith("unauthorized"), `message is the reason: ${err.message}`);
      assert.ok(err.cause instanceof Error && err.cause.message.startsWith(`unauthorized: ${code}: `), "cause is the raw error");
      await rejectsWith(client.session, code, "session:");
      // the connection will not come: calls fail at once with the refusal
      const started = Date.now();
      await rejectsWith(client.join(roomId()), code, "join after refusal:");
      await rejectsWith(client.send(roomId(), "x"), code, "send after refusal:");
      assert.ok(Date.now() - started < 1000, "calls after a refusal fail at once");
    });
  }

  it("an invalid guest name → invalid_name", async () => {
    const client = sdk(srv, { auth: { name: "x".repeat(33) } });
    await rejectsWith(client.session, "invalid_name");
  });

  it("a refused connection is not an unhandled rejection when nobody awaits session", async () => {
    const client = sdk(srv, { auth: { token: "garbage" } });
    await new Promise((resolve) => client.onConnectError(resolve));
    await sleep(50); // an unhandled rejection would fail the test run
    client.close();
  });

  it("onConnectError returns an unsubscribe function", async () => {
    const client = sdk(srv, { auth: { token: "garbage" } });
    const calls = [];
    const off = client.onConnectError((e) => calls.push(e));
    off();
    await rejectsWith(client.session, "invalid_token");
    assert.equal(calls.length, 0);
  });

  it("an unknown namespace → invalid_namespace", async () => {
    const client = sdk(srv, { namespace: "/nowhere" });
    await rejectsWith(client.session, "invalid_namespace");
  });

  it("an unreachable server → connect_failed, and socket.io-client keeps trying", async () => {
    const client = connect("http://127.0.0.1:9", {
      socket: { transports: ["websocket"], forceNew: true, reconnectionDelay: 50, reconnectionDelayMax: 50 },
    });
    track(client.socket);
    const errors = [];
    await new Promise((resolve) =>
      client.onConnectError((e) => {
        errors.push(e);
        if (errors.length === 2) resolve();
      }),
    );
    assert.ok(errors.every((e) => e.code === "connect_failed"), JSON.stringify(errors.map((e) => e.code)));
    assert.equal(client.socket.active, true, "still reconnecting");
    client.close();
    await rejectsWith(client.session, "disconnected", "session after close:");
  });

  it("parseConnectError", () => {
    const cases = [
      ["unauthorized: expired: the token expired at 12:00", "expired", "the token expired at 12:00"],
      ["unauthorized: wrong_algorithm: got HS384: expected HS256", "wrong_algorithm", "got HS384: expected HS256"],
      ["unauthorized: missing_token: anonymous access is off", "missing_token", "anonymous access is off"],
      ["unauthorized", "unauthorized", "unauthorized"],
      ["Invalid namespace", "invalid_namespace", "Invalid namespace"],
      ["websocket error", "connect_failed", "websocket error"],
    ];
    for (const [message, code, why] of cases) {
      const err = parseConnectError(new Error(message));
      assert.ok(err instanceof PalaverError);
      assert.equal(err.code, code, message);
      assert.equal(err.message, why, message);
      assert.ok(isPalaverError(err, code));
      assert.ok(!isPalaverError(err, "internal"));
    }
    assert.ok(!isPalaverError(new Error("x")));
  });

  it("newClientId is a v4 UUID", () => {
    const ids = new Set(Array.from({ length: 100 }, () => newClientId()));
    assert.equal(ids.size, 100);
    for (const id of ids) assert.match(id, UUID);
  });

  it("options are checked", () => {
    assert.throws(() => connect("http://127.0.0.1:9", { ackTimeout: 0, socket: { autoConnect: false } }), RangeError);
    assert.throws(() => connect("http://127.0.0.1:9", { retries: -1, socket: { autoConnect: false } }), RangeError);
    const c = connect("http://127.0.0.1:9", { socket: { autoConnect: false } });
    assert.equal(c.ackTimeout, 5000);
    assert.equal(c.retries, 3);
    c.close();
  });
});

describe(`sdk: namespaces [${STORE}]`, () => {
  const srv = useServer(STORE, {
    namespaces: `
[[namespace]]
path = "/members"
anonymous = false
history = true
max_message_length = 10
`,
  });

  it("namespace option: a guest is refused with missing_token, a user joins and sends there only", async () => {
    const guest = sdk(srv, { namespace: "/members", auth: { name: "guest" } });
    await rejectsWith(guest.session, "missing_token");

    const alice = identity("alice");
    const room = roomId("ns");
    const inNs = await ready(srv, { namespace: "members", auth: alice.auth });
    const onRoot = await ready(srv, { auth: alice.auth });
    await inNs.join(room);
    const m = await inNs.send(room, "short");
    assertMessage(m, { room, seq: 1, text: "short" });
    await rejectsWith(inNs.send(room, "far too long for ten"), "too_large");
    const { history } = await onRoot.join(room);
    assert.deepEqual(history, [], "namespaces are isolated");
  });
});

describe(`sdk: helpers [${STORE}]`, () => {
  const srv = useServer(STORE);

  it("createRoom: a private room with members; bad_request, forbidden", async () => {
    const alice = identity("alice");
    const bob = identity("bob");
    const a = await ready(srv, { auth: alice.auth });
    const name = roomId("created");
    const room = await a.createRoom(name, { visibility: "private", members: [bob.id] });
    assertRoom(room, { id: name, kind: "group", visibility: "private" });
    assert.equal(a.lastSeq(name), 0, "a created room is tracked");
    const b = await ready(srv, { auth: bob.auth });
    const joined = await b.join(name);
    assert.equal(joined.room.visibility, "private");

    await rejectsWith(a.createRoom(name), "bad_request", "existing id:");
    await rejectsWith(a.createRoom("bad room!"), "bad_request", "bad name:");
    const err = await rejectsWith(a.createRoom(`dm:${name}`), "forbidden", "dm: prefix:");
    assert.equal(err.event, "room:create", "the error names the event");
    const carol = await ready(srv, { auth: identity("carol").auth });
    await rejectsWith(carol.join(name), "forbidden", "private room, not a member:");
  });

  it("join: room, history, hasMore, members; limit; bad_request", async () => {
    const { room, a, b, alice, bob } = await pair(srv);
    for (let i = 1; i <= 4; i++) await a.send(room, `m${i}`);
    const c = await ready(srv, { auth: identity("carol").auth });
    const all = await c.join(room);
    assertRoom(all.room, { id: room, kind: "group", visibility: "public" });
    assert.deepEqual(all.history.map((m) => m.text), ["m1", "m2", "m3", "m4"]);
    assert.equal(all.hasMore, false);
    assert.deepEqual(all.members.map((u) => u.id).sort(), [alice.id, bob.id, c.user.id].sort());
    assert.equal("ok" in all, false, "the helper returns the data without ok");
    const c2 = await ready(srv, { auth: identity("dave").auth });
    const last2 = await c2.join(room, { limit: 2 });
    assert.deepEqual(last2.history.map((m) => m.seq), [3, 4]);
    assert.equal(last2.hasMore, true);
    assert.equal(c2.lastSeq(room), 4, "join records the last seq");

    await rejectsWith(b.join("no spaces allowed"), "bad_request", "bad room id:");
    await rejectsWith(b.join(room, { limit: 0 }), "bad_request", "limit 0:");
    await rejectsWith(b.join(room, { limit: 101 }), "bad_request", "limit 101:");
  });

  it("join with since: every message after it (the reconnect catch-up of the protocol)", async () => {
    const { room, a } = await pair(srv);
    for (let i = 1; i <= 5; i++) await a.send(room, `s${i}`);
    const c = await ready(srv, { auth: identity("carol").auth });
    const caughtUp = await c.join(room, { since: 2, limit: 1 });
    assert.deepEqual(caughtUp.history.map((m) => m.seq), [3, 4, 5], "since overrides limit");
    assert.equal(caughtUp.hasMore, true, "messages older than since exist");
    assert.ok(!caughtUp.truncated, "nothing truncated");
    assert.equal(c.lastSeq(room), 5);
  });

  it("leave: resolves, others get a leave notice; not_found when not in the room", async () => {
    const { room, a, b, alice } = await pair(srv);
    const notice = waitFor(b.socket, "room:notice", (n) => n.room === room && n.kind === "leave");
    assert.equal(await a.leave(room), undefined);
    const n = await notice;
    assertUser(n.user, { id: alice.id });
    assert.equal(a.lastSeq(room), undefined, "a left room is no longer tracked");
    await rejectsWith(a.send(room, "still here?"), "forbidden", "send after leave:");
    await rejectsWith(a.leave(room), "not_found", "leave twice:");
    await rejectsWith(a.leave(roomId("nosuch")), "not_found", "leave a missing room:");
    await rejectsWith(a.leave(""), "bad_request", "empty room id:");
  });

  it("send: the committed message with a generated clientId; the others receive it", async () => {
    const { room, a, b, alice } = await pair(srv);
    const received = [];
    b.on("message", (m) => received.push(m));
    const sentIds = outgoing(a, "message:send");
    const m = await a.send(room, "hello");
    assertMessage(m, { room, seq: 1, fromId: alice.id, fromName: alice.name, text: "hello" });
    assert.match(m.clientId, UUID, "a generated clientId");
    assert.equal(sentIds.length, 1);
    assert.equal(sentIds[0].clientId, m.clientId, "the emitted clientId is the stored one");
    const m2 = await a.send(room, "with mine", { clientId: "my-id-1" });
    assert.equal(m2.clientId, "my-id-1", "a given clientId is kept");
    await sleep(100);
    assertSameMessage(received, [m, m2], "b received both");
    assert.equal(a.lastSeq(room), 2);
    assert.equal(b.lastSeq(room), 2, "message events update lastSeq");
  });

  it("send with a clientId already used returns the original message", async () => {
    const { room, a, b } = await pair(srv);
    const delivered = waitFor(b.socket, "message", (m) => m.room === room);
    const first = await a.send(room, "once", { clientId: "dup-1" });
    await delivered;
    const none = noneOf(b.socket, "message");
    const again = await a.send(room, "once more?", { clientId: "dup-1" });
    await none.before(markerVia(a.socket, room, [b.socket]), "the retry must not be broadcast");
    assertSameMessage(again, first);
    const { messages } = await a.history(room);
    assert.equal(messages.filter((m) => !isMarker(m)).length, 1);
  });

  it("send errors: bad_request, forbidden, too_large, rate_limited (error acks are not resent)", async () => {
    const { room, a } = await pair(srv);
    const sent = outgoing(a, "message:send");
    await rejectsWith(a.send(room, "   "), "bad_request", "blank text:");
    await rejectsWith(a.send(roomId("elsewhere"), "hi"), "forbidden", "not in the room:");
    await rejectsWith(a.send(room, "x".repeat(4001)), "too_large", "4001 characters:");
    assert.equal(sent.length, 3, "one emit per failed send: an error ack is final");
    await sleep(2100); // refill the token bucket (10/s, burst 20)
    const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => a.send(room, `burst ${i}`)));
    const limited = results.filter((r) => r.status === "rejected");
    assert.ok(limited.length > 0, "some sends are rate limited");
    for (const r of limited) {
      assert.ok(isPalaverError(r.reason, "rate_limited"), `${r.reason?.code}: ${r.reason?.message}`);
    }
    assert.equal(sent.length, 33, "rate_limited sends are not resent");
  });

  it("dm: both users get the message in a dm: room; bad_request to yourself, not_found for a gone guest", async () => {
    const alice = identity("alice");
    const bob = identity("bob");
    const a = await ready(srv, { auth: alice.auth });
    const b = await ready(srv, { auth: bob.auth });
    const sent = outgoing(a, "dm:send");
    const got = waitFor(b.socket, "message");
    const m = await a.dm(bob.id, "psst");
    assertMessage(m, { fromId: alice.id, text: "psst" });
    assert.ok(m.room.startsWith("dm:"), m.room);
    assert.match(m.clientId, UUID);
    assert.equal(sent[0].clientId, m.clientId);
    assertSameMessage(await got, m);
    const reply = await b.dm(alice.id, "yes?", { clientId: "reply-1" });
    assert.equal(reply.room, m.room, "the same dm room from both sides");
    assert.equal(reply.clientId, "reply-1");
    await sleep(100);
    assert.equal(a.lastSeq(m.room), 2, "dm rooms are tracked from sends and message events");
    assert.equal(b.lastSeq(m.room), 2);

    await rejectsWith(a.dm(alice.id, "me"), "bad_request", "dm to yourself:");
    await rejectsWith(a.dm(bob.id, ""), "bad_request", "empty text:");
    const guest = await ready(srv, { auth: { name: "Guest" } });
    const guestId = guest.user.id;
    guest.close();
    await sleep(200);
    await rejectsWith(a.dm(guestId, "still there?"), "not_found", "gone guest:");
  });

  it("history: latest, before, after, hasMore; bad_request, not_found, forbidden", async () => {
    const { room, a, b } = await pair(srv);
    for (let i = 1; i <= 7; i++) await a.send(room, `h${i}`);
    const latest = await b.history(room, { limit: 3 });
    assert.deepEqual(latest.messages.map((m) => m.seq), [5, 6, 7]);
    assert.equal(latest.hasMore, true);
    const older = await b.history(room, { before: 5, limit: 3 });
    assert.deepEqual(older.messages.map((m) => m.seq), [2, 3, 4]);
    assert.equal(older.hasMore, true);
    const oldest = await b.history(room, { before: 2, limit: 3 });
    assert.deepEqual(oldest.messages.map((m) => m.seq), [1]);
    assert.equal(oldest.hasMore, false);
    const after = await b.history(room, { after: 4, limit: 2 });
    assert.deepEqual(after.messages.map((m) => m.seq), [5, 6]);
    assert.equal(after.hasMore, true);
    const all = await b.history(room);
    assert.equal(all.messages.length, 7);
    assert.deepEqual(Object.keys(all).sort(), ["hasMore", "messages"]);

    await rejectsWith(b.history(room, { limit: 0 }), "bad_request", "limit 0:");
    await rejectsWith(b.history(room, { limit: 101 }), "bad_request", "limit 101:");
    await rejectsWith(b.history(roomId("nowhere")), "not_found", "missing room:");
    const priv = roomId("priv");
    await a.createRoom(priv, { visibility: "private" });
    await rejectsWith(b.history(priv), "forbidden", "private room:");
  });

  it("rooms: joined rooms with lastSeq and member", async () => {
    const { room, a, b } = await pair(srv);
    await a.send(room, "one");
    await a.send(room, "two");
    const rooms = await b.rooms();
    assert.ok(Array.isArray(rooms));
    const mine = rooms.find((r) => r.id === room);
    assert.ok(mine, `room ${room} listed`);
    assertRoom(mine, { id: room });
    assert.equal(mine.lastSeq, 2);
    assert.equal(mine.member, true);
  });

  it("presence: the online users; forbidden for a private room, not_found for a missing one", async () => {
    const { room, a, alice, bob } = await pair(srv);
    const users = await a.presence(room);
    assert.deepEqual(users.map((u) => u.id).sort(), [alice.id, bob.id].sort());
    users.forEach((u) => assertUser(u));
    const priv = roomId("priv");
    await a.createRoom(priv, { visibility: "private" });
    const c = await ready(srv, { auth: identity("carol").auth });
    await rejectsWith(c.presence(priv), "forbidden");
    await rejectsWith(c.presence(roomId("nowhere")), "not_found");
    await rejectsWith(c.presence("bad room"), "bad_request");
  });

  it("typing: fire and forget; the others get { room, user }", async () => {
    const { room, a, b, alice } = await pair(srv);
    const got = waitFor(b.socket, "typing", (t) => t.room === room);
    assert.equal(a.typing(room), undefined);
    const t = await got;
    assertUser(t.user, { id: alice.id });
  });

  it("on/once/off are typed passthroughs to the socket; on and once return unsubscribe functions", async () => {
    const { room, a, b } = await pair(srv);
    const seen = [];
    const once = [];
    const unsubscribed = [];
    const offOnce = [];
    const handler = (m) => seen.push(m.text);
    const baseline = b.socket.listeners("message").length;
    b.on("message", handler);
    const stop = b.on("message", (m) => unsubscribed.push(m.text));
    assert.equal(typeof stop, "function", "on returns an unsubscribe function");
    b.once("message", (m) => once.push(m.text));
    const cancel = b.once("message", (m) => offOnce.push(m.text));
    cancel();
    assert.equal(b.socket.listeners("message").length, baseline + 3, "the cancelled once is gone");
    const one = waitFor(b.socket, "message", (m) => m.text === "one");
    await a.send(room, "one");
    await one;
    stop();
    stop(); // a second call does nothing
    b.off("message", handler);
    assert.equal(b.socket.listeners("message").length, baseline, "every subscription is gone");
    const two = waitFor(b.socket, "message", (m) => m.text === "two");
    await a.send(room, "two");
    await two;
    assert.deepEqual(seen, ["one"]);
    assert.deepEqual(unsubscribed, ["one"]);
    assert.deepEqual(once, ["one"]);
    assert.deepEqual(offOnce, []);
    assert.equal(b.lastSeq(room), 2, "off leaves the SDK's own listeners alone");
  });

  it("status: connecting, connected, reconnecting after a drop, closed after close()", async () => {
    const client = sdk(srv, { auth: identity("stat").auth });
    const seen = [];
    const stop = client.onStatus((s) => seen.push(s));
    assert.equal(client.status, "connecting");
    await client.session;
    assert.equal(client.status, "connected");
    const back = waitFor(client.socket, "session", () => true, 5000);
    client.socket.io.engine.close();
    await back;
    assert.equal(client.status, "connected");
    client.close();
    assert.equal(client.status, "closed");
    assert.equal(client.error?.code, "disconnected");
    assert.deepEqual(seen, ["connected", "reconnecting", "connected", "closed"]);
    stop();
  });

  it("status of a refused connection: closed, with the refusal as error", async () => {
    const client = sdk(srv, { auth: { token: "not-a-jwt" } });
    await rejectsWith(client.session, "invalid_token");
    assert.equal(client.status, "closed");
    assert.equal(client.error?.code, "invalid_token");
  });

  it("editMessage, deleteMessage, addReaction, removeReaction, markRead emit the contract's events and payloads", async () => {
    const { room, a } = await pair(srv, { ackTimeout: 300 });
    const events = [];
    a.socket.onAnyOutgoing((name, payload) => events.push([name, payload]));
    // The server does not handle these events yet; only the wire format is checked here.
    await Promise.allSettled([
      a.editMessage(room, 1, "fixed"),
      a.deleteMessage(room, 2),
      a.addReaction(room, 3, "👍"),
      a.removeReaction(room, 3, "👍"),
      a.markRead(room, 4),
    ]);
    assert.deepEqual(events, [
      ["message:edit", { room, seq: 1, text: "fixed" }],
      ["message:delete", { room, seq: 2 }],
      ["reaction:add", { room, seq: 3, emoji: "👍" }],
      ["reaction:remove", { room, seq: 3, emoji: "👍" }],
      ["room:read", { room, seq: 4 }],
    ]);
  });

  it("lastSeq / roomState follow messages, sends, joins and history", async () => {
    const { room, a, b } = await pair(srv);
    assert.equal(a.lastSeq(room), 0, "joined an empty room");
    await a.send(room, "1");
    await a.send(room, "2");
    await sleep(100);
    assert.equal(a.lastSeq(room), 2);
    assert.equal(b.lastSeq(room), 2);
    const other = roomId("unjoined");
    await b.join(other);
    await b.send(other, "x");
    await a.history(other);
    assert.equal(a.lastSeq(other), undefined, "history of a room we are not in is not tracked");
    assert.deepEqual([...a.roomState()], [[room, { lastSeq: 2 }]]);
  });

  it("a helper without an ack rejects with timeout after ackTimeout", async () => {
    const alice = identity("alice");
    const a = await ready(srv, { auth: alice.auth, ackTimeout: 300 });
    dropAcks(a);
    const started = Date.now();
    const err = await rejectsWith(a.join(roomId()), "timeout");
    const took = Date.now() - started;
    assert.ok(took >= 280 && took < 2000, `took ${took} ms`);
    assert.equal(err.event, "room:join");
    await rejectsWith(a.rooms(), "timeout");
    await rejectsWith(a.presence(roomId()), "timeout");
    await rejectsWith(a.history(roomId()), "timeout");
  });

  it("close(): waiting calls and later calls reject with disconnected", async () => {
    const { room, a } = await pair(srv, { ackTimeout: 3000 });
    dropAcks(a);
    const waiting = a.history(room);
    const sending = a.send(room, "never acked");
    await sleep(100);
    const started = Date.now();
    a.close();
    await rejectsWith(waiting, "disconnected", "waiting request:");
    await rejectsWith(sending, "disconnected", "waiting send:");
    assert.ok(Date.now() - started < 500, "rejected at once");
    await rejectsWith(a.rooms(), "disconnected", "after close:");
    await rejectsWith(a.send(room, "after"), "disconnected", "send after close:");
    assert.equal(a.socket.connected, false);
    a.close(); // idempotent
  });

  it("a server-side disconnect ends waiting sends with disconnected", async () => {
    const { room, a } = await pair(srv);
    // the server disconnects a client whose packet is over --max-payload (64 KiB)
    const err = await rejectsWith(a.send(room, "x".repeat(70_000)), "disconnected");
    assert.match(err.message, /disconnect/);
    assert.equal(a.socket.active, false);
  });
});

describe(`sdk: clientId and resend [${STORE}]`, () => {
  const srv = useServer(STORE);

  it("every send and dm carries a clientId, fresh for each call", async () => {
    const { room, a, bob } = await pair(srv);
    const sends = outgoing(a, "message:send");
    const dms = outgoing(a, "dm:send");
    const msgs = [];
    for (let i = 0; i < 3; i++) msgs.push(await a.send(room, `s${i}`));
    for (let i = 0; i < 2; i++) msgs.push(await a.dm(bob.id, `d${i}`));
    const ids = [...sends, ...dms].map((p) => p.clientId);
    assert.equal(ids.length, 5);
    ids.forEach((id) => assert.match(id, UUID));
    assert.equal(new Set(ids).size, 5, "a fresh clientId per call");
    assert.deepEqual(msgs.map((m) => m.clientId), ids, "each message stored with its clientId");
  });

  it("send with the caller's clientId: the same message for every call with it (a StrictMode double effect)", async () => {
    const { room, a, b } = await pair(srv);
    const clientId = newClientId();
    const [first, second] = await Promise.all([a.send(room, "once", { clientId }), a.send(room, "once", { clientId })]);
    const third = await a.send(room, "once", { clientId });
    assertMessage(first, { room, seq: 1, text: "once", clientId });
    assertSameMessage(second, first);
    assertSameMessage(third, first);
    const { messages } = await b.history(room);
    assert.equal(messages.length, 1, "stored once");
  });

  it("a lost ack: the send is re-emitted with the same clientId, stored once, resolved with the original", async () => {
    const { room, a, b } = await pair(srv, { ackTimeout: 400 });
    const observed = collect(b.socket, "message", (m) => m.room === room);
    const sent = outgoing(a, "message:send");
    const drop = dropAcks(a, 1); // the server stores the first attempt and acks; the ack is lost
    const started = Date.now();
    const m = await a.send(room, "important");
    const took = Date.now() - started;
    assert.equal(drop.dropped, 1, "the first ack was dropped");
    assert.equal(sent.length, 2, "two attempts");
    assert.equal(sent[0].clientId, sent[1].clientId, "the resend reuses the clientId");
    assert.ok(took >= 380, `the resend came after ackTimeout (${took} ms)`);
    assertMessage(m, { room, seq: 1, text: "important", clientId: sent[0].clientId });
    await sleep(200);
    assert.equal(observed.length, 1, "the others got the message once (the first attempt); the retry broadcast nothing");
    assertSameMessage(m, observed[0], "the promise resolves with the original message");
    const { messages } = await b.history(room);
    assert.equal(messages.length, 1, "history holds one copy");
    assertSameMessage(messages[0], m);
  });

  it("the transport cut while a send is in flight: resent after the reconnection, stored once", async () => {
    const { room, a, b } = await pair(srv);
    const observed = collect(b.socket, "message", (m) => m.room === room);
    const sent = outgoing(a, "message:send");
    const events = [];
    a.socket.on("disconnect", (reason) => events.push(`disconnect:${reason}`));
    a.socket.on("session", () => events.push("session"));
    // cut the transport right after the first attempt is written to it, before its ack can come back
    a.socket.onAnyOutgoing((event) => {
      if (event === "message:send" && sent.length === 1) queueMicrotask(() => a.socket.io.engine.close());
    });
    const m = await a.send(room, "through the tunnel");
    events.push("resolved");
    assert.deepEqual(events, ["disconnect:forced close", "session", "resolved"], "cut in flight, resolved after reconnecting");
    assert.equal(sent.length, 2, "sent, then resent after the reconnection");
    assert.equal(sent[0].clientId, sent[1].clientId, "the resend reuses the clientId");
    assertMessage(m, { room, seq: 1, text: "through the tunnel", clientId: sent[0].clientId });
    await sleep(200);
    assert.equal(observed.length, 1, "broadcast once");
    assertSameMessage(observed[0], m);
    const { messages } = await b.history(room);
    assert.equal(messages.length, 1, "history holds one copy");
    assertSameMessage(messages[0], m);
  });

  it("the ack lost, then the transport cut: the resend after the reconnection returns the original", async () => {
    const { room, a, b } = await pair(srv, { ackTimeout: 2000 });
    const observed = collect(b.socket, "message", (m) => m.room === room);
    const sent = outgoing(a, "message:send");
    dropAcks(a); // this transport never delivers an ack; the next one (after reconnecting) does
    const firstArrived = waitFor(b.socket, "message", (m) => m.room === room);
    const sending = a.send(room, "stored before the cut");
    const original = await firstArrived; // the server has committed it
    a.socket.io.engine.close();
    const m = await sending;
    assert.equal(sent.length, 2, "sent, then resent once after the reconnection");
    assert.equal(sent[0].clientId, sent[1].clientId);
    assertSameMessage(m, original, "resolved with the original message");
    await sleep(200);
    assert.equal(observed.length, 1, "the resend broadcast nothing");
    const { messages } = await b.history(room);
    assert.equal(messages.length, 1, "history holds one copy");
  });

  it("a send made while disconnected waits for the reconnection", async () => {
    const { room, a, b } = await pair(srv, { socket: { reconnectionDelay: 500, reconnectionDelayMax: 500 } });
    const sent = outgoing(a, "message:send");
    const disconnected = waitFor(a.socket, "disconnect", () => true, 5000);
    a.socket.io.engine.close();
    await disconnected;
    const started = Date.now();
    const sending = a.send(room, "queued");
    await sleep(200);
    assert.equal(sent.length, 0, "nothing is emitted while disconnected");
    const m = await sending;
    assert.ok(Date.now() - started >= 250, "resolved after the reconnection");
    assert.equal(sent.length, 1, "one attempt, after the reconnection");
    assertMessage(m, { room, text: "queued", clientId: sent[0].clientId });
    const { messages } = await b.history(room);
    assert.equal(messages.length, 1);
  });

  it("no ack at all: 1 + retries attempts with one clientId, then timeout; stored once", async () => {
    const { room, a, b } = await pair(srv, { ackTimeout: 250, retries: 2 });
    const sent = outgoing(a, "message:send");
    dropAcks(a);
    const started = Date.now();
    const err = await rejectsWith(a.send(room, "unlucky"), "timeout");
    const took = Date.now() - started;
    assert.equal(err.event, "message:send");
    assert.equal(sent.length, 3, "the first attempt and 2 retries");
    assert.equal(new Set(sent.map((p) => p.clientId)).size, 1, "one clientId for every attempt");
    assert.ok(took >= 700, `three ack timeouts (${took} ms)`);
    const { messages } = await b.history(room);
    assert.equal(messages.length, 1, "the server stored it once");
    assert.equal(messages[0].clientId, sent[0].clientId);
  });

  it("retries: 0 gives up after the first timeout", async () => {
    const a = await ready(srv, { auth: identity("alice").auth, ackTimeout: 200, retries: 0 });
    const sent = outgoing(a, "dm:send");
    dropAcks(a);
    await rejectsWith(a.dm(identity("zed").id, "hello?"), "timeout");
    assert.equal(sent.length, 1);
  });

  it("a timed-out send can be retried by hand with its clientId from another connection of the user", async () => {
    const alice = identity("alice");
    const room = roomId("manual");
    const a1 = await ready(srv, { auth: alice.auth, ackTimeout: 200, retries: 0 });
    await a1.join(room);
    const sent = outgoing(a1, "message:send");
    dropAcks(a1);
    await rejectsWith(a1.send(room, "did it go?"), "timeout");
    const a2 = await ready(srv, { auth: alice.auth });
    const m = await a2.send(room, "did it go?", { clientId: sent[0].clientId });
    assert.equal(m.seq, 1, "the original message");
    const { messages } = await a2.history(room);
    assert.equal(messages.length, 1);
  });
});

describe("sdk: types", () => {
  it("typed usage compiles (tsc --noEmit on test/types-check.ts), and misuse does not", { timeout: 120_000 }, async () => {
    const require = createRequire(import.meta.url);
    const tsc = require.resolve("typescript/bin/tsc");
    const project = path.join(PKG_ROOT, "test", "tsconfig.types.json");
    const { code, output } = await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [tsc, "--noEmit", "-p", project], { cwd: PKG_ROOT });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("error", reject);
      child.on("exit", (code) => resolve({ code, output }));
    });
    assert.equal(code, 0, `tsc --noEmit failed:\n${output}`);
  });
});
