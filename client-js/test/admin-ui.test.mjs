// The Socket.IO Admin UI's namespace (`/admin`, docs/operations.md "Admin UI"), spoken to with socket.io-client as
// the UI speaks: sign-in with a username and a bcrypt-hashed password (and the session id it is given), `config`,
// `all_sockets`, `server_stats`, the live events for connections, rooms and disconnections, and the `join`,
// `leave` and `_disconnect` commands; read-only mode; no `/admin` without --admin-username; two nodes through
// Redis show as two servers, and each node's sockets reach a UI connected to the other.
import assert from "node:assert/strict";
import { describe } from "node:test";

import { io } from "socket.io-client";

import {
  it,
  useServer,
  identity,
  roomId,
  connect,
  connectRefused,
  ok,
  track,
  until,
  twoNodeGate,
  useTwoNodes,
  ACK_TIMEOUT_MS,
} from "./harness.mjs";

// bcrypt of PASSWORD at cost 4 (the hash the UI's operator would put in --admin-password-hash).
const PASSWORD = "open sesame, palaver";
const HASH = "$2a$04$qck4QEFDIvO.K7GWjt6kKuCeAIX6HRXvpwfkgGLm69Ag003oMvqOq";
const ADMIN = { "admin-username": "operator", "admin-password-hash": HASH };

/**
 * Opens an admin socket as the UI does and records everything it is told: `{ socket, events, connected }`, where
 * `events` is a list of `[name, ...args]` and `connected` resolves on `connect` (rejects on `connect_error`).
 */
function admin(srv, auth = { username: "operator", password: PASSWORD }) {
  const socket = track(io(`${srv.url}/admin`, { transports: ["websocket"], forceNew: true, reconnection: false, auth }));
  const events = [];
  socket.onAny((name, ...args) => events.push([name, ...args]));
  const connected = new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  return { socket, events, connected };
}

/** Waits until `events` holds an event `name` whose arguments satisfy `match`; returns its arguments. */
async function seen(events, name, match = () => true, what = "") {
  let found;
  await until(
    () => {
      found = events.find(([n, ...args]) => n === name && match(...args));
      return found;
    },
    { ms: 8000, what: () => `${what || name}; got ${JSON.stringify(events.map(([n]) => n))}` },
  );
  return found.slice(1);
}

/** Emits a UI command with an ack (the UI sends none; the ack lets a test wait for the outcome). */
function command(socket, name, ...args) {
  return socket.timeout(ACK_TIMEOUT_MS).emitWithAck(name, ...args);
}

describe("admin UI: sign-in", () => {
  const srv = useServer("sqlite", { flags: ADMIN });

  it("a wrong password, a wrong username and no credentials are refused with 'invalid credentials'", async () => {
    for (const auth of [
      { username: "operator", password: "open sesame" },
      { username: "root", password: PASSWORD },
      {},
      { sessionId: "0123456789abcdef0123456789abcdef" },
    ]) {
      const err = await connectRefused(srv, auth, { ns: "/admin" });
      assert.equal(err.message, "invalid credentials", JSON.stringify(auth));
    }
  });

  it("the right credentials give a session id, config, all_sockets and server_stats; the session id signs in again", async () => {
    const ui = admin(srv);
    await ui.connected;
    const [session] = await seen(ui.events, "session");
    assert.match(session, /^[0-9a-f]{32}$/);
    const [config] = await seen(ui.events, "config");
    for (const feature of ["JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT"]) {
      assert.ok(config.supportedFeatures.includes(feature), `${feature} in ${config.supportedFeatures}`);
    }
    // Without AGGREGATED_EVENTS (byte counts palaver does not have) the UI shows its socket and room pages.
    assert.ok(!config.supportedFeatures.includes("AGGREGATED_EVENTS"));
    const [sockets] = await seen(ui.events, "all_sockets");
    assert.ok(Array.isArray(sockets));
    const [stats] = await seen(ui.events, "server_stats");
    assert.equal(typeof stats.serverId, "string");
    assert.equal(stats.pid > 0, true);
    assert.equal(typeof stats.hostname, "string");
    assert.equal(typeof stats.uptime, "number");
    assert.equal(typeof stats.clientsCount, "number");
    assert.equal(typeof stats.pollingClientsCount, "number");
    assert.ok(Array.isArray(stats.aggregatedEvents));
    assert.deepEqual(
      stats.namespaces.map((n) => n.name),
      ["/"],
    );
    // Every two seconds, another one.
    const count = () => ui.events.filter(([n]) => n === "server_stats").length;
    await until(() => count() >= 2, { ms: 6000, what: "a second server_stats" });

    const again = admin(srv, { sessionId: session });
    await again.connected;
    await seen(again.events, "config");
  });
});

describe("admin UI: sockets, rooms and commands", () => {
  const srv = useServer("sqlite", { flags: ADMIN });

  it("lists sockets with handshake, user and rooms, and tells connections, joins, leaves and disconnections live", async () => {
    const ui = admin(srv);
    await ui.connected;
    await seen(ui.events, "all_sockets");

    const alice = identity("alice");
    const a = await connect(srv, { ...alice.auth });
    const [socket, when] = await seen(ui.events, "socket_connected", (s) => s.id === a.socket.id, "alice's socket");
    assert.equal(socket.nsp, "/");
    assert.equal(socket.transport, "websocket");
    assert.equal(socket.data.user.id, alice.id);
    assert.ok(socket.rooms.includes(`u:${alice.id}`), JSON.stringify(socket.rooms));
    assert.equal(socket.handshake.address, "127.0.0.1");
    assert.equal(typeof socket.handshake.headers, "object");
    assert.equal(socket.handshake.query.EIO, "4");
    assert.ok(!Number.isNaN(Date.parse(when)));

    const room = roomId("adm");
    await ok(a.socket, "room:join", { room });
    await seen(ui.events, "room_joined", (nsp, r, id) => nsp === "/" && r === `r:${room}` && id === a.socket.id);
    await ok(a.socket, "room:leave", { room });
    await seen(ui.events, "room_left", (nsp, r, id) => nsp === "/" && r === `r:${room}` && id === a.socket.id);

    // A UI that connects now is given alice's socket in all_sockets.
    const late = admin(srv);
    await late.connected;
    const [all] = await seen(late.events, "all_sockets");
    const listed = all.find((s) => s.id === a.socket.id);
    assert.ok(listed, `alice's socket in ${JSON.stringify(all.map((s) => s.id))}`);
    assert.equal(listed.data.user.name, alice.name);

    const aliceSid = a.socket.id;
    a.socket.disconnect();
    await seen(ui.events, "socket_disconnected", (nsp, id) => nsp === "/" && id === aliceSid);
  });

  it("join, leave and _disconnect act on one socket, a room, or the whole namespace", async () => {
    const ui = admin(srv);
    await ui.connected;
    await seen(ui.events, "all_sockets");
    const bob = await connect(srv, identity("bob").auth);
    const carol = await connect(srv, identity("carol").auth);
    const [sid, carolSid] = [bob.socket.id, carol.socket.id];
    // Known to the UI first, so that what follows arrives as changes.
    for (const id of [sid, carolSid]) await seen(ui.events, "socket_connected", (s) => s.id === id);

    assert.deepEqual(await command(ui.socket, "join", "/", "vip", sid), { ok: true });
    await seen(ui.events, "room_joined", (nsp, r, id) => r === "vip" && id === sid);
    assert.deepEqual(await command(ui.socket, "leave", "/", "vip", sid), { ok: true });
    await seen(ui.events, "room_left", (nsp, r, id) => r === "vip" && id === sid);

    // Without a socket: everyone in the namespace joins; then the room's sockets are disconnected.
    assert.deepEqual(await command(ui.socket, "join", "/", "everyone"), { ok: true });
    await seen(ui.events, "room_joined", (nsp, r, id) => r === "everyone" && id === carolSid);
    const carolGone = new Promise((resolve) => carol.socket.once("disconnect", resolve));
    const bobGone = new Promise((resolve) => bob.socket.once("disconnect", resolve));
    assert.deepEqual(await command(ui.socket, "_disconnect", "/", false, carolSid), { ok: true });
    assert.equal(await carolGone, "io server disconnect");
    await seen(ui.events, "socket_disconnected", (nsp, id) => id === carolSid);
    assert.equal(bob.socket.connected, true, "only carol was disconnected");
    assert.deepEqual(await command(ui.socket, "_disconnect", "/", false, "everyone"), { ok: true });
    assert.equal(await bobGone, "io server disconnect");
  });

  it("commands with a bad namespace or room are refused, and nothing a UI sends breaks the server", async () => {
    const ui = admin(srv);
    await ui.connected;
    for (const args of [
      ["join", "/admin", "x"],
      ["join", "/nope", "x"],
      ["join", "/", ""],
      ["leave", "/", 42],
      ["_disconnect", "/", false, { room: "x" }],
      ["join"],
    ]) {
      const ack = await command(ui.socket, ...args);
      assert.equal(ack.ok, false, JSON.stringify(args));
      assert.equal(ack.error.code, "bad_request");
      assert.ok(ack.error.message.length > 0);
    }
    // The UI's own fire-and-forget form (no ack) is accepted too, and the socket stays up.
    ui.socket.emit("join", "/", "r:none-such", "not-a-socket-id");
    assert.deepEqual(await command(ui.socket, "leave", "/", "r:none-such"), { ok: true });
  });
});

describe("admin UI: read-only", () => {
  const srv = useServer("sqlite", { flags: { ...ADMIN, "admin-read-only": true } });

  it("offers no commands in config and refuses them", async () => {
    const ui = admin(srv);
    await ui.connected;
    const [config] = await seen(ui.events, "config");
    assert.deepEqual(config.supportedFeatures, []);
    await seen(ui.events, "all_sockets");
    const user = await connect(srv, identity("dave").auth);
    await seen(ui.events, "socket_connected", (s) => s.id === user.socket.id);
    for (const args of [
      ["join", "/", "x", user.socket.id],
      ["leave", "/", `u:x`, user.socket.id],
      ["_disconnect", "/", false, user.socket.id],
    ]) {
      const ack = await command(ui.socket, ...args);
      assert.equal(ack.ok, false);
      assert.equal(ack.error.code, "forbidden", JSON.stringify(ack));
    }
    await ok(user.socket, "rooms:list", {});
    assert.equal(user.socket.connected, true);
  });
});

describe("admin UI: without --admin-username", () => {
  const srv = useServer("sqlite");

  it("there is no /admin namespace", async () => {
    const err = await connectRefused(srv, { username: "operator", password: PASSWORD }, { ns: "/admin" });
    assert.equal(err.message, "Invalid namespace");
  });
});

describe("admin UI: password guessing", () => {
  const srv = useServer("sqlite", { flags: ADMIN });

  it("an address gets 20 password attempts a minute, then is refused even with the right password", async () => {
    const outcomes = [];
    for (let i = 0; i < 21; i += 1) {
      const err = await connectRefused(srv, { username: "operator", password: `guess ${i}` }, { ns: "/admin" });
      outcomes.push(err.message);
    }
    assert.deepEqual(outcomes.slice(0, 20), Array(20).fill("invalid credentials"));
    assert.match(outcomes[20], /too many sign-in attempts/);
    const err = await connectRefused(srv, { username: "operator", password: PASSWORD }, { ns: "/admin" });
    assert.match(err.message, /too many sign-in attempts/);
  });
});

const gate = await twoNodeGate();

describe("admin UI: two nodes through Redis", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/admin", flags: ADMIN });

  it("a UI on node A sees both servers, node B's sockets and rooms, and disconnects a socket on node B", async () => {
    const early = await connect(nodes[1], identity("early").auth);
    const ui = admin(nodes[0]);
    await ui.connected;
    // Node B announces the sockets it had before the UI came.
    await seen(ui.events, "socket_connected", (s) => s.id === early.socket.id, "node B's earlier socket");
    const servers = new Set();
    await until(
      () => {
        for (const [n, stats] of ui.events) if (n === "server_stats") servers.add(stats.serverId);
        return servers.size >= 2;
      },
      { ms: 8000, what: () => `servers ${[...servers]}` },
    );
    assert.equal(servers.size, 2);

    const erin = await connect(nodes[1], identity("erin").auth);
    const [socket] = await seen(ui.events, "socket_connected", (s) => s.id === erin.socket.id, "erin on node B");
    assert.equal(socket.nsp, "/");
    const room = roomId("two");
    await ok(erin.socket, "room:join", { room });
    await seen(ui.events, "room_joined", (nsp, r, id) => r === `r:${room}` && id === erin.socket.id);

    const erinSid = erin.socket.id;
    const gone = new Promise((resolve) => erin.socket.once("disconnect", resolve));
    assert.deepEqual(await command(ui.socket, "_disconnect", "/", false, erinSid), { ok: true });
    assert.equal(await gone, "io server disconnect");
    await seen(ui.events, "socket_disconnected", (nsp, id) => id === erinSid);
  });
});
