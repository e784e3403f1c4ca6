// The anonymous "bdg" chat on two palaver nodes behind Redis (one Postgres), with profiles/bdg-chat.toml, through the
// stock socket.io-client and the app's exact client calls:
//
//   const socket = io(SERVER_URL, { transports: ["websocket"] });
//   socket.on("connect", () => socket.emit("client-server-chat", { type: "notice", userName, message: `${userName}님이 입장했습니다.` }));
//   socket.emit("client-server-chat", { type: "chat", userName, message });
//   socket.on("server-client-chat", (data) => setMessages((prev) => [...prev, data]));
//
// Everything comes back as `server-client-chat` to everyone, the sender included, whichever node they are on; when
// a user's connection closes, the others get `{ type: "notice", userName, message: "<name>님이 나갔습니다." }`.
import assert from "node:assert/strict";
import path from "node:path";
import { describe } from "node:test";

import { io } from "socket.io-client";

import {
  PKG_ROOT,
  it,
  track,
  rand,
  until,
  short,
  twoNodeGate,
  useTwoNodes,
  token,
} from "./harness.mjs";

const PROFILE = path.resolve(PKG_ROOT, "../profiles/bdg-chat.toml");
const gate = await twoNodeGate();

/** Every name a client of this file announced: earlier tests' users may still be leaving while a later test runs. */
const announced = new Set();

/** The app's client on one node: connects over WebSocket only, announces itself on connect, keeps every message. */
function bdgClient(node, userName) {
  announced.add(userName);
  const socket = track(io(node.url, { transports: ["websocket"], forceNew: true, reconnection: false }));
  const messages = [];
  socket.on("connect", () => {
    socket.emit("client-server-chat", { type: "notice", userName, message: `${userName}님이 입장했습니다.` });
  });
  socket.on("server-client-chat", (data) => messages.push(data));
  const say = (message) => socket.emit("client-server-chat", { type: "chat", userName, message });
  const connected = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", (e) => reject(new Error(`connect_error: ${e.message}`)));
  });
  return { socket, messages, say, connected, userName };
}

/** The object's JSON with its keys sorted: the app reads fields, not key order. */
const canonical = (o) => JSON.stringify(Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1))));
const has = (client, data) => client.messages.some((m) => canonical(m) === canonical(data));

describe("profile bdg-chat on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/bdg", flags: { profile: PROFILE } });

  it("entry notices and chat reach everyone on both nodes, the sender included, in the app's exact shape", async () => {
    const alice = bdgClient(nodes[0], `앨리스${rand(2)}`);
    await alice.connected;
    const aliceIn = { type: "notice", userName: alice.userName, message: `${alice.userName}님이 입장했습니다.` };
    await until(() => has(alice, aliceIn), { what: () => short(alice.messages) });
    const bob = bdgClient(nodes[1], `bob-${rand(2)}`);
    await bob.connected;
    const bobIn = { type: "notice", userName: bob.userName, message: `${bob.userName}님이 입장했습니다.` };
    await until(() => has(alice, bobIn) && has(bob, bobIn), { what: () => short({ a: alice.messages, b: bob.messages }) });

    const text = `안녕하세요 👋 ${rand()}`;
    alice.say(text);
    const chat = { type: "chat", userName: alice.userName, message: text };
    await until(() => has(alice, chat) && has(bob, chat), { what: () => short({ a: alice.messages, b: bob.messages }) });
    const reply = `hi from node b ${rand()}`;
    bob.say(reply);
    const back = { type: "chat", userName: bob.userName, message: reply };
    await until(() => has(alice, back) && has(bob, back));
    // Each arrives once, and exactly in the app's shape (no extra fields).
    for (const c of [alice, bob]) {
      for (const m of [bobIn, chat, back]) {
        assert.equal(c.messages.filter((x) => canonical(x) === canonical(m)).length, 1, short(c.messages));
      }
    }
  });

  it("when a user's connection closes, the others on the other node are told '<name>님이 나갔습니다.'", async () => {
    const alice = bdgClient(nodes[0], `alice-${rand(2)}`);
    const bob = bdgClient(nodes[1], `밥${rand(2)}`);
    await Promise.all([alice.connected, bob.connected]);
    const bobIn = { type: "notice", userName: bob.userName, message: `${bob.userName}님이 입장했습니다.` };
    await until(() => has(alice, bobIn));
    bob.socket.close();
    const left = { type: "notice", userName: bob.userName, message: `${bob.userName}님이 나갔습니다.` };
    await until(() => has(alice, left), { what: () => short(alice.messages) });
  });

  it("a connection that never said who it is leaves silently; one without a userName is not broadcast", async () => {
    const alice = bdgClient(nodes[0], `alice-${rand(2)}`);
    await alice.connected;
    const lurker = track(io(nodes[1].url, { transports: ["websocket"], forceNew: true, reconnection: false }));
    const lurked = [];
    lurker.on("server-client-chat", (d) => lurked.push(d));
    await new Promise((resolve) => lurker.once("connect", resolve));
    lurker.emit("client-server-chat", { type: "chat", message: "who am I?" });
    // The lurker listens all the same: it gets alice's messages.
    const seen = `for everyone ${rand()}`;
    alice.say(seen);
    await until(() => lurked.some((m) => m.message === seen));
    lurker.close();
    // Barrier: a later message from alice through the same room; a leave notice or the nameless chat would come first.
    const marker = `marker ${rand()}`;
    alice.say(marker);
    await until(() => alice.messages.some((m) => m.message === marker));
    // Only the lurker's leave is unwanted: the previous test's users close as this one starts, and their leave
    // notices may still be crossing Redis when alice joins.
    const unwanted = alice.messages.filter(
      (m) => m.message === "who am I?" || (/나갔습니다/.test(m.message ?? "") && !announced.has(m.userName)),
    );
    assert.deepEqual(unwanted, [], short(alice.messages));
  });

  it("chat is stored: the room's history on Postgres holds it in order", async () => {
    const carol = bdgClient(nodes[1], `carol-${rand(2)}`);
    await carol.connected;
    const lines = [`one ${rand()}`, `two ${rand()}`, `three ${rand()}`];
    for (const line of lines) carol.say(line);
    await until(() => lines.every((l) => carol.messages.some((m) => m.message === l)));
    const got = carol.messages.filter((m) => lines.includes(m.message)).map((m) => m.message);
    assert.deepEqual(got, lines);
    const res = await fetch(`${nodes[0].url}/api/rooms/lobby/messages?limit=100`, {
      headers: { authorization: `Bearer ${token("reader")}` },
    });
    assert.equal(res.status, 200);
    const body = await res.json();
    const stored = body.messages.filter((m) => lines.includes(m.text));
    assert.deepEqual(stored.map((m) => m.text), lines, short(body));
    assert.ok(stored.every((m) => m.from.name === carol.userName), short(stored));
  });
});
