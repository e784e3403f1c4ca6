// The Socket.IO tutorial's chat ("Get started", final step) against palaver with profiles/socketio-tutorial.toml,
// through the stock socket.io-client and the tutorial's exact client calls:
//
//   const socket = io({ auth: { serverOffset: 0 }, ackTimeout: 10000, retries: 3 });
//   socket.emit("chat message", input.value, `${socket.id}-${counter++}`);
//   socket.on("chat message", (msg, serverOffset) => { ...; socket.auth.serverOffset = serverOffset; });
//
// The server broadcasts to everyone (the sender included), acks with no arguments, acks a retried clientOffset
// without a second broadcast (also from a new connection), and replays every message after auth.serverOffset on
// connect. palaver's own events (`session`, `chat:error`) are off; unknown events are ignored.
import assert from "node:assert/strict";
import path from "node:path";
import { describe } from "node:test";

import { io } from "socket.io-client";

import { STORES, PKG_ROOT, useServer, it, track, rand, waitFor, until, short, ACK_TIMEOUT_MS } from "./harness.mjs";

const PROFILE = path.resolve(PKG_ROOT, "../profiles/socketio-tutorial.toml");

/**
 * The tutorial's client: `io(url, { auth: { serverOffset: 0 }, ackTimeout: 10000, retries: 3 })`, its `send`
 * (the form's submit handler) and its "chat message" listener, which shows each message and keeps the offset.
 */
function tutorialClient(srv, { serverOffset = 0, reconnection = false } = {}) {
  const socket = track(
    io(srv.url, { auth: { serverOffset }, ackTimeout: 10000, retries: 3, forceNew: true, reconnection }),
  );
  let counter = 0;
  const items = [];
  socket.on("chat message", (msg, serverOffset) => {
    items.push({ msg, serverOffset });
    socket.auth.serverOffset = serverOffset;
  });
  const send = (text) => {
    const clientOffset = `${socket.id}-${counter++}`;
    socket.emit("chat message", text, clientOffset);
    return clientOffset;
  };
  const connected = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (e) => reject(new Error(`connect_error: ${e.message}`)));
  });
  return { socket, items, send, connected };
}

const texts = (items) => items.map((i) => i.msg);

for (const kind of STORES) {
  describe(`profile socketio-tutorial (${kind})`, () => {
    const srv = useServer(kind, { flags: { profile: PROFILE } });

    it("a message reaches everyone, the sender included, with its offset; the ack has no arguments", async () => {
      const a = tutorialClient(srv);
      const b = tutorialClient(srv);
      await Promise.all([a.connected, b.connected]);
      const text = `hello ${rand()}`;
      const atA = waitFor(a.socket, "chat message", (msg) => msg === text);
      const atB = waitFor(b.socket, "chat message", (msg) => msg === text);
      // The ack the tutorial's retries wait for: called back with no arguments at all.
      const ackArgs = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error("no ack")), ACK_TIMEOUT_MS);
        a.socket.emit("chat message", text, `${a.socket.id}-x`, (...args) => {
          clearTimeout(timer);
          resolve(args);
        });
      });
      // With `ackTimeout`, socket.io-client calls acks error-first: null (no error), then no arguments at all.
      assert.deepEqual(ackArgs, [null]);
      await Promise.all([atA, atB]);
      const [fromA] = a.items.filter((i) => i.msg === text);
      const [fromB] = b.items.filter((i) => i.msg === text);
      assert.equal(typeof fromA.serverOffset, "number", short(a.items));
      assert.equal(fromA.serverOffset, fromB.serverOffset);
      assert.equal(a.socket.auth.serverOffset, fromA.serverOffset, "the client keeps the offset");
    });

    it("the tutorial's send (emit with retries) is delivered once, in order, to every client", async () => {
      const a = tutorialClient(srv);
      const b = tutorialClient(srv);
      await Promise.all([a.connected, b.connected]);
      const sent = Array.from({ length: 10 }, (_, i) => `m${i} ${rand()}`);
      for (const text of sent) a.send(text);
      const mine = (items) => texts(items).filter((t) => sent.includes(t));
      await until(() => mine(a.items).length === 10 && mine(b.items).length === 10, {
        what: () => `a: ${short(a.items)} b: ${short(b.items)}`,
      });
      assert.deepEqual(mine(a.items), sent);
      assert.deepEqual(mine(b.items), sent);
      const offsets = b.items.filter((i) => sent.includes(i.msg)).map((i) => i.serverOffset);
      for (let i = 1; i < offsets.length; i++) assert.equal(offsets[i], offsets[i - 1] + 1, `offsets ${offsets}`);
      // Retries wait for acks: none is left pending once every message has come back.
      await until(() => a.socket._queue.length === 0, { what: () => `queue: ${a.socket._queue.length}` });
    });

    it("a retried clientOffset, even from a new connection, is acked without a second broadcast", async () => {
      const a = tutorialClient(srv);
      const watcher = tutorialClient(srv);
      await Promise.all([a.connected, watcher.connected]);
      const text = `once ${rand()}`;
      const offset = `${a.socket.id}-0`;
      await a.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", text, offset);
      await until(() => texts(watcher.items).includes(text));
      // The same packet again, as socket.io-client's retry sends it after a reconnect: another connection, another
      // (guest) identity.
      const again = tutorialClient(srv);
      await again.connected;
      const ack = await again.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", text, offset);
      assert.equal(ack, undefined);
      // Barrier: a later message through the same room; the duplicate would have come before it.
      const marker = `marker ${rand()}`;
      await again.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", marker, `${again.socket.id}-1`);
      await until(() => texts(watcher.items).includes(marker));
      assert.equal(texts(watcher.items).filter((t) => t === text).length, 1, short(watcher.items));
    });

    it("on connect, every message after auth.serverOffset is replayed in order; none before it", async () => {
      const a = tutorialClient(srv);
      await a.connected;
      const sent = [];
      for (let i = 0; i < 5; i++) {
        const text = `replay ${i} ${rand()}`;
        sent.push(text);
        await a.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", text, `${a.socket.id}-${i}`);
      }
      await until(() => sent.every((t) => texts(a.items).includes(t)));
      const offsets = Object.fromEntries(a.items.map((i) => [i.msg, i.serverOffset]));

      const fresh = tutorialClient(srv, { serverOffset: 0 });
      await fresh.connected;
      await until(() => sent.every((t) => texts(fresh.items).includes(t)), { what: () => short(fresh.items) });
      const replayed = texts(fresh.items);
      assert.deepEqual(replayed.filter((t) => sent.includes(t)), sent, "in order");
      const all = fresh.items.map((i) => i.serverOffset);
      assert.deepEqual(all, [...all].sort((x, y) => x - y), "ascending offsets");
      assert.equal(new Set(all).size, all.length, "no message twice");

      const late = tutorialClient(srv, { serverOffset: offsets[sent[2]] });
      await late.connected;
      await until(() => texts(late.items).includes(sent[4]));
      assert.deepEqual(texts(late.items), sent.slice(3), short(late.items));
    });

    it("a client that reconnects gets exactly what it missed, from the offset it kept", async () => {
      const a = tutorialClient(srv);
      const b = tutorialClient(srv, { reconnection: true });
      await Promise.all([a.connected, b.connected]);
      const before = `before ${rand()}`;
      await a.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", before, `${a.socket.id}-0`);
      await until(() => texts(b.items).includes(before));
      const seen = b.items.length;
      const reconnected = new Promise((resolve) => b.socket.io.once("reconnect", resolve));
      b.socket.io.engine.close(); // the network drops; socket.io-client reconnects with its updated auth
      const missed = [`missed 1 ${rand()}`, `missed 2 ${rand()}`];
      for (const [i, text] of missed.entries()) {
        await a.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", text, `${a.socket.id}-${i + 1}`);
      }
      await reconnected;
      await until(() => missed.every((t) => texts(b.items).includes(t)), { what: () => short(b.items) });
      assert.deepEqual(texts(b.items.slice(seen)), missed, "exactly the missed messages, once each");
    });

    it("messages typed while disconnected are sent on reconnect, once (socket.io-client's retries)", async () => {
      const a = tutorialClient(srv, { reconnection: true });
      const watcher = tutorialClient(srv);
      await Promise.all([a.connected, watcher.connected]);
      const reconnected = new Promise((resolve) => a.socket.io.once("reconnect", resolve));
      a.socket.io.engine.close();
      const text = `offline ${rand()}`;
      a.send(text);
      await reconnected;
      await until(() => texts(watcher.items).includes(text));
      await until(() => a.socket._queue.length === 0, { what: () => `queue: ${a.socket._queue.length}` });
      const marker = `marker ${rand()}`;
      await a.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", marker, `${a.socket.id}-m`);
      await until(() => texts(watcher.items).includes(marker));
      assert.equal(texts(watcher.items).filter((t) => t === text).length, 1);
    });

    it("palaver's own events are off: no session, no chat:error; unknown events are ignored", async () => {
      // A plain client (no retries: with retries, socket.io-client holds every later emit until an unanswered one
      // times out), with an offset past the end so that nothing is replayed.
      const socket = track(io(srv.url, { auth: { serverOffset: 1e12 }, transports: ["websocket"], forceNew: true, reconnection: false }));
      const seen = [];
      socket.onAny((event, ...args) => seen.push([event, ...args]));
      await new Promise((resolve) => socket.once("connect", resolve));
      socket.emit("no such event", { x: 1 });
      socket.emit("no such event", { x: 2 });
      socket.emit("message:send", { room: "chat", text: "native events are not served here" }, () => seen.push(["acked"]));
      const text = `after ${rand()}`;
      await socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", text, `${socket.id}-0`);
      await until(() => seen.some(([event, msg]) => event === "chat message" && msg === text));
      assert.deepEqual(seen.map(([event]) => event), ["chat message"], short(seen));
      assert.ok(socket.connected);
      const log = srv.server.log.join("\n");
      assert.equal(log.match(/event the profile does not map.*event=no such event/g)?.length, 1, "logged once");
    });

    it("bad input gets no ack and breaks nothing: a missing text, an object instead of a string", async () => {
      const a = tutorialClient(srv);
      const b = tutorialClient(srv);
      await Promise.all([a.connected, b.connected]);
      for (const bad of [[], [{ text: "x" }], [42, "o"], ["\u0000", "z"]]) {
        await assert.rejects(a.socket.timeout(300).emitWithAck("chat message", ...bad), /timed out/);
      }
      const text = `fine ${rand()}`;
      await a.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("chat message", text, `${a.socket.id}-ok`);
      await until(() => texts(b.items).includes(text));
      const strays = b.items.filter((i) => typeof i.msg !== "string" || ["\u0000", "o", "x"].includes(i.msg));
      assert.deepEqual(strays, [], short(b.items));
    });
  });
}
