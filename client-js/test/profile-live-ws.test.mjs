// A live-stream chat on plain WebSocket (the `ws` package) against palaver with profiles/live-ws.toml, served by a
// `[[websocket]]` entry of the namespaces file. The app's browser code:
//
//   const ws = new WebSocket("wss://host/live");
//   ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === "history") show(m.data); else add(m); };
//   ws.send(JSON.stringify({ nickname, text, timestamp: Date.now() }));
//
// On connect the client gets `{ type: "history", data: [...] }`, then every message as `{ nickname, text, timestamp }`
// (its own included). Each plain connection is a Socket.IO client of the namespace at the same path inside palaver,
// so a stock socket.io-client on that namespace shares the chat, and two nodes share it through Redis.
import assert from "node:assert/strict";
import { rm } from "node:fs/promises";
import path from "node:path";
import { describe, before, after } from "node:test";

import WebSocket from "ws";
import { io } from "socket.io-client";

import {
  STORES,
  PKG_ROOT,
  useServer,
  it,
  track,
  rand,
  until,
  short,
  createDatabase,
  spawnServer,
  stopServer,
  twoNodeGate,
  useTwoNodes,
  writeNamespacesToml,
} from "./harness.mjs";

const PROFILE = path.resolve(PKG_ROOT, "../profiles/live-ws.toml");
const NAMESPACES = `[[websocket]]\npath = "/live"\nprofile = ${JSON.stringify(PROFILE)}\n`;
const gate = await twoNodeGate();

/**
 * The app's client on `srv` at `/live` (plus `query`): every frame it receives, parsed, in `frames`; `closed` resolves
 * with `{ code, reason }`.
 */
function liveClient(srv, query = "") {
  const url = `${srv.url.replace(/^http/, "ws")}/live${query ? `?${query}` : ""}`;
  const ws = track(new WebSocket(url));
  const frames = [];
  const errors = [];
  ws.on("message", (data) => {
    const text = data.toString();
    try {
      frames.push(JSON.parse(text));
    } catch {
      frames.push({ notJson: text });
    }
  });
  ws.on("error", (e) => errors.push(e));
  const opened = new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  });
  const closed = new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  const say = (nickname, text) => ws.send(JSON.stringify({ nickname, text, timestamp: Date.now() }));
  return { ws, frames, errors, opened, closed, say };
}

/** The history frame a client got first (waits for it). */
async function firstFrame(c) {
  await until(() => c.frames.length > 0, { what: () => "no frame yet" });
  return c.frames[0];
}

const isHistory = (f) => f?.type === "history" && Array.isArray(f.data);
const sameMessage = (f, nickname, text) => f?.nickname === nickname && f?.text === text;
/** Waits until `c` has the message; returns its index in `c.frames`. */
async function arrives(c, nickname, text) {
  await until(() => c.frames.some((f) => sameMessage(f, nickname, text)), { what: () => short(c.frames) });
  return c.frames.findIndex((f) => sameMessage(f, nickname, text));
}

/** Asserts the app's message shape exactly: `{ nickname, text, timestamp }`, timestamp in ms near now. */
function assertLiveMessage(f, nickname, text) {
  assert.deepEqual(Object.keys(f).sort(), ["nickname", "text", "timestamp"], short(f));
  assert.equal(f.nickname, nickname);
  assert.equal(f.text, text);
  assert.ok(Number.isInteger(f.timestamp), `timestamp should be a number of ms: ${short(f)}`);
  assert.ok(Math.abs(Date.now() - f.timestamp) < 60_000, `timestamp should be ms near now: ${short(f)}`);
}

for (const kind of STORES) {
  describe(`profile live-ws over plain WebSocket (${kind})`, () => {
    const srv = useServer(kind, { namespaces: NAMESPACES });

    it("on a fresh server the first frame is an empty history", async () => {
      const c = liveClient(srv);
      await c.opened;
      assert.deepEqual(await firstFrame(c), { type: "history", data: [] });
    });

    it("a frame reaches every client, the sender included, as { nickname, text, timestamp }; a new client gets it in its history", async () => {
      const a = liveClient(srv);
      const b = liveClient(srv);
      await Promise.all([a.opened, b.opened]);
      assert.ok(isHistory(await firstFrame(a)) && isHistory(await firstFrame(b)));
      const said = [];
      for (const [who, c] of [["alice", a], ["bob", b], ["alice", a]]) {
        const text = `hello from ${who} ${rand()} ✨`;
        c.say(who, text);
        said.push({ nickname: who, text });
        for (const x of [a, b]) assertLiveMessage(x.frames[await arrives(x, who, text)], who, text);
      }
      // The `ws` package's servers read binary frames too (`JSON.parse(buffer)`), and so does palaver.
      const binary = `sent as a binary frame ${rand()}`;
      a.ws.send(Buffer.from(JSON.stringify({ nickname: "alice", text: binary, timestamp: Date.now() })));
      said.push({ nickname: "alice", text: binary });
      await arrives(b, "alice", binary);
      // Each arrives once, in the order sent, after the one history frame.
      for (const x of [a, b]) {
        assert.equal(x.frames.filter(isHistory).length, 1, short(x.frames));
        const got = x.frames.slice(1).map(({ nickname, text }) => ({ nickname, text }));
        assert.deepEqual(got, said, short(x.frames));
      }

      const c = liveClient(srv);
      await c.opened;
      const history = await firstFrame(c);
      assert.ok(isHistory(history), short(history));
      const tail = history.data.slice(-said.length);
      assert.deepEqual(
        tail.map(({ nickname, text }) => ({ nickname, text })),
        said,
        short(history),
      );
      for (const [i, m] of tail.entries()) assertLiveMessage(m, said[i].nickname, said[i].text);
      // The timestamps are the ones the live frames carried.
      assert.deepEqual(
        tail.map((m) => m.timestamp),
        said.map(({ nickname, text }) => a.frames.find((f) => sameMessage(f, nickname, text)).timestamp),
      );
    });

    it("a stock socket.io-client on the same namespace shares the chat both ways", async () => {
      const plain = liveClient(srv);
      await plain.opened;
      await firstFrame(plain);
      const socket = track(io(`${srv.url}/live`, { transports: ["websocket"], forceNew: true, reconnection: false }));
      const got = [];
      socket.on("message", (m) => got.push(m));
      await new Promise((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("connect_error", (e) => reject(new Error(`connect_error: ${e.message}`)));
      });
      await until(() => got.some(isHistory), { what: () => short(got) });
      const text = `from socket.io ${rand()}`;
      socket.emit("message", { nickname: "sio", text, timestamp: Date.now() });
      assertLiveMessage(plain.frames[await arrives(plain, "sio", text)], "sio", text);
      const back = `from ws ${rand()}`;
      plain.say("plain", back);
      await until(() => got.some((m) => sameMessage(m, "plain", back)), { what: () => short(got) });
    });

    it("bad frames (not JSON, no text, NUL in text, 200 KB) reach nobody and break nothing for the others", async () => {
      const observer = liveClient(srv);
      const sender = liveClient(srv);
      const big = liveClient(srv);
      await Promise.all([observer.opened, sender.opened, big.opened]);
      await Promise.all([observer, sender, big].map(firstFrame));
      const seen = observer.frames.length;

      sender.ws.send("not json at all");
      sender.ws.send("{ nickname: 'x', text: 'almost json' ");
      sender.ws.send(JSON.stringify({ nickname: "mallory" }));
      sender.ws.send(JSON.stringify({ nickname: "mallory", text: 42 }));
      sender.ws.send(JSON.stringify({ nickname: "mallory", text: "nul \u0000 inside" }));
      sender.ws.send(JSON.stringify({ nickname: "", text: "nameless" }));
      sender.ws.send(JSON.stringify([1, 2, 3]));
      // Over the packet limit (--max-payload, 64 KiB by default): that client's connection ends, nobody else's.
      big.ws.send(JSON.stringify({ nickname: "mallory", text: "x".repeat(200 * 1024) }));
      const closed = await big.closed;
      assert.equal(closed.code, 1009, short(closed));

      // Barrier: the sender's next good frame is handled after its bad ones; nothing may come before it.
      const good = `still fine ${rand()}`;
      sender.say("sender", good);
      const at = await arrives(observer, "sender", good);
      assert.deepEqual(observer.frames.slice(seen, at), [], `frames before the barrier: ${short(observer.frames.slice(seen))}`);
      await arrives(sender, "sender", good);
      assert.equal(sender.ws.readyState, WebSocket.OPEN, "the sender of bad frames stays connected");
      assert.equal(observer.ws.readyState, WebSocket.OPEN);
    });

    it("closing the plain WebSocket disconnects its Socket.IO socket", async () => {
      const name = `closer-${rand()}`;
      const c = liveClient(srv, `name=${name}`);
      await c.opened;
      await firstFrame(c);
      const connectedLine = new RegExp(`connected socket=(\\S+) ns=/live .*name=${name}`);
      let socketId;
      await until(
        () => {
          for (const line of srv.server.log) {
            const m = connectedLine.exec(line);
            if (m && !line.includes("disconnected")) socketId = m[1];
          }
          return socketId;
        },
        { what: () => "no connected line" },
      );
      c.ws.close(1000, "bye");
      await c.closed;
      await until(() => srv.server.log.some((l) => l.includes(`disconnected socket=${socketId} ns=/live`)), {
        what: () => srv.server.logTail(20),
      });
    });

    it("a refused connection is closed with 1008 and the reason; palaver's own paths are no WebSocket endpoints", async () => {
      // A token that does not verify: the namespace refuses it (`44`), and the plain client hears why.
      const c = liveClient(srv, "token=not-a-jwt");
      const { code, reason } = await c.closed;
      assert.equal(code, 1008, reason);
      assert.match(reason, /^unauthorized/);
      const health = new WebSocket(`${srv.url.replace(/^http/, "ws")}/healthz`);
      const refused = await new Promise((resolve) => health.once("error", resolve));
      assert.match(refused.message, /Unexpected server response/);
    });
  });
}

// A profile that joins the room a frame names and reports failures as `chat:error` (whose first argument the gateway
// sends as a frame): with --room-quota 1, guests from one address may create one room, which only holds if the
// gateway passes the plain client's address on to its Socket.IO socket.
const JOIN_PROFILE = `
[profile]
name = "join-probe"
error_event = true

[[on]]
event = "message"
op = "join"
room = "$0.room"

[[emit]]
on = "join"
event = "message"
args = [{ joined = "{room}" }]
to = "room"
`;

describe("plain WebSocket: the client's address reaches the chat (guest creation quota)", () => {
  let db;
  let server;
  const dirs = [];
  before(async () => {
    const profile = await writeNamespacesToml(JOIN_PROFILE);
    const namespaces = await writeNamespacesToml(`[[websocket]]\npath = "/live"\nprofile = ${JSON.stringify(profile)}\n`);
    dirs.push(path.dirname(profile), path.dirname(namespaces));
    db = await createDatabase(STORES[0] ?? "sqlite");
    server = await spawnServer({
      databaseUrl: db.url,
      flags: { namespaces, "room-quota": 1 },
      label: "palaver/live-quota",
    });
  });
  after(async () => {
    if (server) await stopServer(server);
    if (db) await db.drop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it("a second guest from the same address cannot create a second room", async () => {
    const first = liveClient(server);
    await first.opened;
    const room = `quota-${rand()}`;
    first.ws.send(JSON.stringify({ room }));
    await until(() => first.frames.some((f) => f.joined === room), { what: () => short(first.frames) });
    // Another connection is another guest, from the same address.
    const second = liveClient(server);
    await second.opened;
    second.ws.send(JSON.stringify({ room: `quota-${rand()}` }));
    await until(() => second.frames.length > 0, { what: () => "no answer" });
    assert.equal(second.frames[0]?.error?.code, "rate_limited", short(second.frames));
    // Joining the room that exists is no creation.
    second.ws.send(JSON.stringify({ room }));
    await until(() => second.frames.some((f) => f.joined === room), { what: () => short(second.frames) });
  });
});

describe("profile live-ws over plain WebSocket on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  let namespacesFile;
  const nodes = useTwoNodes(gate, {
    label: "palaver/live",
    flags: async () => {
      namespacesFile = await writeNamespacesToml(NAMESPACES);
      return { namespaces: namespacesFile };
    },
  });
  after(async () => {
    if (namespacesFile) await rm(path.dirname(namespacesFile), { recursive: true, force: true });
  });

  it("a frame sent on one node reaches the clients of both, and the history is shared", async () => {
    const a = liveClient(nodes[0]);
    const b = liveClient(nodes[1]);
    await Promise.all([a.opened, b.opened]);
    await Promise.all([firstFrame(a), firstFrame(b)]);
    const text = `across nodes ${rand()}`;
    a.say("alice", text);
    for (const c of [a, b]) assertLiveMessage(c.frames[await arrives(c, "alice", text)], "alice", text);
    const reply = `back from node b ${rand()}`;
    b.say("bob", reply);
    for (const c of [a, b]) await arrives(c, "bob", reply);
    const late = liveClient(nodes[1]);
    await late.opened;
    const history = await firstFrame(late);
    assert.deepEqual(
      history.data.slice(-2).map(({ nickname, text }) => ({ nickname, text })),
      [
        { nickname: "alice", text },
        { nickname: "bob", text: reply },
      ],
      short(history),
    );
  });
});
