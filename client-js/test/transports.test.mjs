// Transports: the stock socket.io-client over WebSocket only, over HTTP long-polling only, and with the default
// upgrade path (polling first, then WebSocket). Each connects, joins, sends, receives a `message` from a client on
// another transport, and pages history; the SDK is run over long-polling too.
//
// Transports do not depend on the store: this suite runs on SQLite unless PALAVER_TEST_STORES leaves it out.
import assert from "node:assert/strict";
import { describe } from "node:test";

import { connect as sdkConnect } from "../dist/index.js";
import {
  STORES,
  FAST,
  useServer,
  it,
  client,
  identity,
  roomId,
  ok,
  call,
  waitFor,
  track,
  assertMessage,
  assertSameMessage,
  assertUser,
} from "./harness.mjs";

const STORE = STORES.includes("sqlite") ? "sqlite" : STORES[0];

/** Connects with socket.io-client options `extra` and resolves with `{ socket, session }`. */
function open(srv, auth, extra) {
  const socket = client(srv, { auth, ...extra });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no session within 5 s")), 5000);
    socket.once("session", (session) => {
      clearTimeout(timer);
      resolve({ socket, session });
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      reject(new Error(`connect_error: ${err.message}`));
    });
  });
}

/** The conversation every transport must carry: join, send both ways, receive, page history. */
async function converse(srv, socket, user, transportName) {
  const room = roomId(`tr-${transportName}`);
  const peerUser = identity("peer");
  const peer = await open(srv, peerUser.auth, { transports: ["websocket"] });

  const joined = await ok(socket, "room:join", { room });
  assert.deepEqual(joined.history, []);
  await ok(peer.socket, "room:join", { room });

  // send: the peer receives it
  const atPeer = waitFor(peer.socket, "message", (m) => m.room === room);
  const sent = await ok(socket, "message:send", { room, text: `over ${transportName}`, clientId: `c-${transportName}` });
  assertMessage(sent.message, { room, seq: 1, fromId: user.id, text: `over ${transportName}`, clientId: `c-${transportName}` });
  assertSameMessage(await atPeer, sent.message);

  // receive: a message from the peer
  const here = waitFor(socket, "message", (m) => m.room === room);
  const fromPeer = await ok(peer.socket, "message:send", { room, text: "back at you" });
  assertSameMessage(await here, fromPeer.message);

  // a few more, then page history back from the latest
  for (let i = 3; i <= 7; i++) await ok(i % 2 ? socket : peer.socket, "message:send", { room, text: `m${i}` });
  const latest = await ok(socket, "history:fetch", { room, limit: 3 });
  assert.deepEqual(latest.messages.map((m) => m.seq), [5, 6, 7]);
  assert.equal(latest.hasMore, true);
  const older = await ok(socket, "history:fetch", { room, before: 5, limit: 3 });
  assert.deepEqual(older.messages.map((m) => m.seq), [2, 3, 4]);
  const oldest = await ok(socket, "history:fetch", { room, before: 2, limit: 3 });
  assert.deepEqual(oldest.messages.map((m) => m.seq), [1]);
  assert.equal(oldest.hasMore, false);
  assertSameMessage(oldest.messages[0], sent.message, "history holds what the ack said");
  const caughtUp = await ok(socket, "history:fetch", { room, after: 6 });
  assert.deepEqual(caughtUp.messages.map((m) => m.text), ["m7"]);

  // presence and typing cross transports too
  const users = await ok(socket, "presence:list", { room });
  assert.deepEqual(users.users.map((u) => u.id).sort(), [user.id, peerUser.id].sort());
  const typing = waitFor(peer.socket, "typing", (t) => t.room === room);
  socket.emit("typing", { room });
  assertUser((await typing).user, { id: user.id });
}

describe(`transports [${STORE}]`, () => {
  const srv = useServer(STORE, { flags: FAST });

  it("WebSocket only", async () => {
    const user = identity("ws");
    const { socket, session } = await open(srv, user.auth, { transports: ["websocket"] });
    assertUser(session.user, { id: user.id });
    assert.equal(socket.io.engine.transport.name, "websocket");
    await converse(srv, socket, user, "websocket");
    assert.equal(socket.io.engine.transport.name, "websocket");
  });

  it("HTTP long-polling only", async () => {
    const user = identity("poll");
    const { socket, session } = await open(srv, user.auth, { transports: ["polling"] });
    assertUser(session.user, { id: user.id });
    assert.equal(socket.io.engine.transport.name, "polling");
    await converse(srv, socket, user, "polling");
    assert.equal(socket.io.engine.transport.name, "polling", "never upgraded");
  });

  it("the default: polling first, then the upgrade to WebSocket", async () => {
    const user = identity("upgrade");
    const socket = client(srv, { auth: user.auth, transports: ["polling", "websocket"], upgrade: true });
    const first = await new Promise((resolve, reject) => {
      socket.io.once("open", () => resolve(socket.io.engine.transport.name));
      socket.once("connect_error", reject);
    });
    assert.equal(first, "polling", "the connection opens over polling");
    const session = await waitFor(socket, "session", () => true, 5000);
    assertUser(session.user, { id: user.id });
    const upgraded = socket.io.engine.transport.name === "websocket"
      ? "websocket"
      : await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no upgrade within 5 s")), 5000);
          socket.io.engine.once("upgrade", (transport) => {
            clearTimeout(timer);
            resolve(transport.name);
          });
        });
    assert.equal(upgraded, "websocket");
    assert.equal(socket.io.engine.transport.name, "websocket", "upgraded to WebSocket");
    await converse(srv, socket, user, "upgrade");
    assert.equal(socket.io.engine.transport.name, "websocket");
  });

  it("an event sent during the upgrade is not lost", async () => {
    const user = identity("mid");
    const room = roomId("mid");
    const socket = client(srv, { auth: user.auth, transports: ["polling", "websocket"] });
    await waitFor(socket, "session", () => true, 5000);
    // fire a burst right away, while the upgrade is probing
    const acks = await Promise.all(
      [ok(socket, "room:join", { room })].concat(
        Array.from({ length: 10 }, (_, i) => call(socket, "message:send", { room, text: `b${i}` })),
      ),
    );
    acks.slice(1).forEach((ack, i) => assert.ok(ack.ok, `send ${i}: ${JSON.stringify(ack)}`));
    assert.deepEqual(acks.slice(1).map((a) => a.message.seq), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "in order");
    const page = await ok(socket, "history:fetch", { room });
    assert.deepEqual(page.messages.map((m) => m.text), Array.from({ length: 10 }, (_, i) => `b${i}`));
  });

  it("the SDK over long-polling", async () => {
    const user = identity("sdkpoll");
    const room = roomId("sdkpoll");
    const sdk = sdkConnect(srv.url, { auth: user.auth, socket: { transports: ["polling"], forceNew: true } });
    track(sdk.socket);
    const peerUser = identity("peer");
    const peer = await open(srv, peerUser.auth, { transports: ["websocket"] });
    await sdk.session;
    assert.equal(sdk.socket.io.engine.transport.name, "polling");
    await sdk.join(room);
    await ok(peer.socket, "room:join", { room });
    const atPeer = waitFor(peer.socket, "message", (m) => m.room === room);
    const m = await sdk.send(room, "sdk over polling");
    assertSameMessage(await atPeer, m);
    const here = new Promise((resolve) => sdk.once("message", resolve));
    await ok(peer.socket, "message:send", { room, text: "reply" });
    assert.equal((await here).text, "reply");
    const { messages, hasMore } = await sdk.history(room, { before: 2 });
    assert.deepEqual(messages.map((x) => x.text), ["sdk over polling"]);
    assert.equal(hasMore, false);
  });
});
