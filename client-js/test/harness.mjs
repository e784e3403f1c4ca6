// Test harness for the palaver contract suite (docs/protocol.md).
//
// - starts the real server binary on a fresh SQLite or Postgres database,
// - opens stock socket.io-client sockets against it,
// - offers small helpers (call, waitFor, noneOf, …),
// - closes every socket a test opened and prints the server's log when a test fails.
//
// Environment:
//   PALAVER_BIN          server binary (default ../target/debug/palaver, relative to client-js/)
//   PALAVER_TEST_PG      Postgres base URL (default postgres://postgres@127.0.0.1:5432)
//   PALAVER_TEST_STORES  comma-separated subset of "sqlite,postgres" (default: both)
//   PALAVER_TEST_KEEP=1  keep the test databases and temp dirs
//   PALAVER_TEST_VERBOSE=1  echo server output while the tests run

import { spawn } from "node:child_process";
import net from "node:net";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { before, after, describe, it as nodeIt } from "node:test";

import { io } from "socket.io-client";
import jwt from "jsonwebtoken";
import pg from "pg";

const here = path.dirname(fileURLToPath(import.meta.url));
export const PKG_ROOT = path.resolve(here, "..");
export const BIN = path.resolve(PKG_ROOT, process.env.PALAVER_BIN || "../target/debug/palaver");
export const PG_BASE = (process.env.PALAVER_TEST_PG || "postgres://postgres@127.0.0.1:5432").replace(/\/+$/, "");
export const JWT_SECRET = "palaver-contract-test-secret";
export const STORES = (process.env.PALAVER_TEST_STORES || "sqlite,postgres")
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);
const KEEP = process.env.PALAVER_TEST_KEEP === "1";
const VERBOSE = process.env.PALAVER_TEST_VERBOSE === "1";

export const ACK_TIMEOUT_MS = 5000;
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 5000;
const LOG_LINES_KEPT = 3000;
const LOG_LINES_SHOWN = 200;

// ---------------------------------------------------------------------------------------------
// small utilities

/** A short random token, safe in room ids and user ids. */
export function rand(n = 4) {
  return randomBytes(n).toString("hex");
}

/** A fresh, valid room id with a readable prefix. */
export function roomId(prefix = "room") {
  return `${prefix}-${rand()}`;
}

/** JSON for assertion messages, cut to `max` characters. */
export function short(value, max = 400) {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > max ? `${text.slice(0, max)}…(${text.length} chars)` : text;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
export const RFC3339_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$/;

// ---------------------------------------------------------------------------------------------
// databases

/**
 * A fresh, empty database of the given kind: `{ kind, url, drop() }`.
 * SQLite: a file in a new temp dir. Postgres: `CREATE DATABASE` through `pg` on the `postgres` database.
 */
export async function createDatabase(kind) {
  if (kind === "sqlite") {
    const dir = await mkdtemp(path.join(os.tmpdir(), "palaver-test-"));
    return {
      kind,
      dir,
      url: `sqlite://${dir}/palaver.db`,
      async drop() {
        if (!KEEP) await rm(dir, { recursive: true, force: true });
      },
    };
  }
  if (kind === "postgres") {
    const name = `palaver_test_${process.pid}_${Date.now().toString(36)}_${rand(3)}`;
    await pgAdmin(`CREATE DATABASE "${name}"`);
    return {
      kind,
      name,
      url: `${PG_BASE}/${name}`,
      async drop() {
        if (!KEEP) await pgAdmin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      },
    };
  }
  throw new Error(`unknown store kind ${kind}`);
}

async function pgAdmin(sql) {
  const client = new pg.Client({ connectionString: `${PG_BASE}/postgres` });
  try {
    await client.connect();
  } catch (err) {
    throw new Error(`cannot reach Postgres at ${PG_BASE} (set PALAVER_TEST_PG): ${err.message}`);
  }
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** Writes a namespaces TOML file into a fresh temp dir and returns its path. */
export async function writeNamespacesToml(text, files = {}) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "palaver-ns-"));
  const file = path.join(dir, "namespaces.toml");
  await writeFile(file, text);
  // Files the namespaces file names (profiles), next to it.
  for (const [name, content] of Object.entries(files)) await writeFile(path.join(dir, name), content);
  return file;
}

// ---------------------------------------------------------------------------------------------
// the server process

const runningServers = new Set();
let serverCounter = 0;

/**
 * Spawns the server binary on `databaseUrl` with `--listen 127.0.0.1:0` and waits for its `listening` line.
 * `flags` is an object of extra flags: `{ "send-rate": 2, anonymous: false }` → `--send-rate 2 --anonymous false`.
 * `jwtSecret: null` starts it without a JWT key. `listen` replaces `127.0.0.1:0`, e.g. to restart a server on the
 * address it had (`listen: server.addr`). `env` adds environment variables (settings given the way a deployment gives
 * them; a flag of the same setting wins). `onOutput(line, "out" | "err")` sees every line the server prints (the
 * kept log is only its tail).
 */
export async function spawnServer({ databaseUrl, flags = {}, jwtSecret = JWT_SECRET, label, listen = "127.0.0.1:0", env = {}, onOutput } = {}) {
  const args = ["--listen", listen, "--database-url", databaseUrl];
  if (jwtSecret != null) args.push("--jwt-secret", jwtSecret);
  for (const [k, v] of Object.entries(flags)) {
    if (v === undefined) continue;
    args.push(`--${k}`, String(v));
  }
  const id = ++serverCounter;
  const name = label ?? `server#${id}`;
  const child = spawn(BIN, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...env, NO_COLOR: "1" },
  });
  const log = [];
  const server = {
    name,
    args,
    child,
    log,
    addr: null,
    url: null,
    exit: null, // { code, signal } once exited
    stop: () => stopServer(server),
    logTail: (n = LOG_LINES_SHOWN) => log.slice(-n).join("\n"),
  };
  runningServers.add(server);

  let onLine;
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${name} did not log "listening" within ${START_TIMEOUT_MS} ms`)),
      START_TIMEOUT_MS,
    );
    onLine = (line) => {
      // A text line (`listening addr=…`) or a JSON one (`--log-format json`).
      const m = /listening.*addr=([\d.]+:\d+)/.exec(line) ?? /"addr":"([\d.]+:\d+)".*"listening"|"listening".*"addr":"([\d.]+:\d+)"/.exec(line);
      if (m && !server.addr) {
        clearTimeout(timer);
        resolve(m[1] ?? m[2]);
      }
    };
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot spawn ${BIN}: ${err.message}`));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before listening (code ${code}, signal ${signal})`));
    });
  });
  server.exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      server.exit = { code, signal };
      runningServers.delete(server);
      log.push(`[${name}] exited: code=${code} signal=${signal}`);
      resolve(server.exit);
    });
  });
  for (const [stream, tag] of [
    [child.stdout, "out"],
    [child.stderr, "err"],
  ]) {
    let buf = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        // eslint-disable-next-line no-control-regex
        const line = buf.slice(0, nl).replace(/\x1b\[[0-9;]*m/g, "");
        buf = buf.slice(nl + 1);
        log.push(`[${name} ${tag}] ${line}`);
        if (log.length > LOG_LINES_KEPT) log.splice(0, log.length - LOG_LINES_KEPT);
        if (VERBOSE) process.stderr.write(`[${name} ${tag}] ${line}\n`);
        onOutput?.(line, tag);
        onLine(line);
      }
    });
  }

  try {
    server.addr = await listening;
  } catch (err) {
    await stopServer(server);
    err.message += `\n--- ${name} (${BIN} ${args.join(" ")}) ---\n${server.logTail()}`;
    throw err;
  }
  server.url = `http://${server.addr}`;
  return server;
}

/** SIGTERM, then SIGKILL after 5 s. Resolves with `{ code, signal }`. */
export async function stopServer(server) {
  if (server.exit) return server.exit;
  if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill("SIGTERM");
  const timer = setTimeout(() => {
    server.log.push(`[${server.name}] still running ${STOP_GRACE_MS} ms after SIGTERM: SIGKILL`);
    server.killedHard = true;
    server.child.kill("SIGKILL");
  }, STOP_GRACE_MS);
  const exit = await server.exited;
  clearTimeout(timer);
  return exit;
}

/** Kills the server with `signal` (default SIGKILL: no shutdown at all) and resolves with `{ code, signal }`. */
export async function killServer(server, signal = "SIGKILL") {
  if (server.exit) return server.exit;
  server.child.kill(signal);
  return server.exited;
}

/**
 * Registers before/after hooks in the current `describe` that start a server on a fresh database of `kind`
 * and stop it (and drop the database) afterwards. Returns a handle whose `url` is set once the server is up.
 * Options: `flags`, `jwtSecret`, `namespaces` (TOML text).
 */
export function useServer(kind, { flags = {}, jwtSecret = JWT_SECRET, namespaces, files, label } = {}) {
  const h = { kind, url: null, server: null, db: null };
  before(async () => {
    h.db = await createDatabase(kind);
    const allFlags = { ...flags };
    if (namespaces) {
      h.namespacesFile = await writeNamespacesToml(namespaces, files);
      allFlags.namespaces = h.namespacesFile;
    }
    h.server = await spawnServer({ databaseUrl: h.db.url, flags: allFlags, jwtSecret, label: label ?? `palaver/${kind}` });
    h.url = h.server.url;
  });
  after(async () => {
    if (h.server) await stopServer(h.server);
    if (h.db) await h.db.drop();
    if (h.namespacesFile && !KEEP) await rm(path.dirname(h.namespacesFile), { recursive: true, force: true });
  });
  return h;
}

// Make sure no child outlives the test process.
process.once("exit", () => {
  for (const s of runningServers) {
    try {
      s.child.kill("SIGKILL");
    } catch {
      /* already gone */
    }
  }
});

// ---------------------------------------------------------------------------------------------
// tests: a wrapper around node:test `it` that closes sockets and prints the server log on failure

const liveSockets = new Set();

/**
 * Like node:test `it`, plus: every socket opened through this harness during the test is closed at its end,
 * and if the test fails the tail of every running server's log goes to stderr.
 */
export function test(name, a, b) {
  const [fn, { timeout = 30_000, ...opts } = {}] = typeof a === "function" ? [a, b] : [b, a];
  return nodeIt(name, { timeout, ...opts }, async (t) => {
    try {
      await fn(t);
    } catch (err) {
      const logs = [...runningServers].map((s) => `--- log of ${s.name} (${s.url}) ---\n${s.logTail()}`);
      process.stderr.write(`\n### FAILED: ${name}\n${err?.stack ?? err}\n${logs.join("\n")}\n### end\n`);
      throw err;
    } finally {
      closeAll();
    }
  });
}
export { test as it };

/** Tracks a socket opened elsewhere (e.g. by the SDK) so that it is closed at the end of the test. */
export function track(socket) {
  liveSockets.add(socket);
  return socket;
}

export function closeAll() {
  for (const s of liveSockets) s.close();
  liveSockets.clear();
}

// ---------------------------------------------------------------------------------------------
// JWTs

/**
 * Signs a test JWT (HS256 with the suite's secret, 1 h expiry unless `claims.exp` is given).
 * `sub` undefined → no sub claim.
 */
export function token(sub, claims = {}, { secret = JWT_SECRET, algorithm = "HS256", expiresIn = "1h" } = {}) {
  const payload = { ...claims };
  if (sub !== undefined) payload.sub = sub;
  const opts = { algorithm };
  if (payload.exp === undefined && expiresIn != null) opts.expiresIn = expiresIn;
  return jwt.sign(payload, secret, opts);
}

/** A correctly HS256-signed token over an arbitrary payload string (for malformed-claims tests). */
export function signRaw(payloadText, { secret = JWT_SECRET, header = { alg: "HS256", typ: "JWT" } } = {}) {
  const h = Buffer.from(JSON.stringify(header)).toString("base64url");
  const p = Buffer.from(payloadText).toString("base64url");
  const sig = createHmac("sha256", secret).update(`${h}.${p}`).digest("base64url");
  return `${h}.${p}.${sig}`;
}

/** A new signed-in identity: `{ id, name, token, auth }`. */
export function identity(label = "user", claims = {}) {
  const id = `u-${label}-${rand()}`;
  const name = claims.name ?? `${label[0].toUpperCase()}${label.slice(1)}`;
  const tok = token(id, { name, ...claims });
  return { id, name, token: tok, auth: { token: tok } };
}

// ---------------------------------------------------------------------------------------------
// clients

function nsUrl(srv, ns = "/") {
  if (!srv.url) throw new Error("server is not started");
  return ns === "/" ? srv.url : `${srv.url}${ns.startsWith("/") ? ns : `/${ns}`}`;
}

/** A raw socket (already connecting), tracked for closing at the end of the test. */
export function client(srv, { auth, ns = "/", ...extra } = {}) {
  const opts = { transports: ["websocket"], forceNew: true, reconnection: false, ...extra };
  if (auth !== undefined) opts.auth = auth;
  const socket = io(nsUrl(srv, ns), opts);
  liveSockets.add(socket);
  return socket;
}

/**
 * Connects and resolves with `{ socket, session }` once the `session` event arrives.
 * Rejects on `connect_error` or when no session comes within `ms`.
 */
export function connect(srv, auth, { ns = "/", ms = ACK_TIMEOUT_MS } = {}) {
  const socket = client(srv, { auth, ns });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`no "session" event within ${ms} ms (connected: ${socket.connected})`));
    }, ms);
    socket.once("session", (session) => {
      clearTimeout(timer);
      resolve({ socket, session });
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      reject(new Error(`connect_error: ${err.message}`));
    });
  });
}

/** Connects a signed-in user: `{ socket, session, user }` where user = `identity(label)`. */
export async function connectUser(srv, user, opts) {
  const r = await connect(srv, user.auth, opts);
  return { ...r, user };
}

/** Expects the connection to be refused; resolves with the `connect_error` Error. */
export function connectRefused(srv, auth, { ns = "/", ms = ACK_TIMEOUT_MS } = {}) {
  const socket = client(srv, { auth, ns });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error(`neither connect nor connect_error within ${ms} ms`));
    }, ms);
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      socket.close();
      resolve(err);
    });
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.close();
      reject(new Error(`expected the connection to be refused, but it was accepted (auth ${JSON.stringify(auth)})`));
    });
  });
}

/** Parses `"unauthorized: <code>: <why>"` → `{ code, why }`, or null. */
export function parseUnauthorized(message) {
  const m = /^unauthorized: ([a-z_]+): (.+)$/s.exec(message ?? "");
  return m ? { code: m[1], why: m[2] } : null;
}

/** Asserts a connect_error is `unauthorized` with the given code. */
export function assertUnauthorized(err, code) {
  assert.ok(
    typeof err?.message === "string" && err.message.startsWith("unauthorized"),
    `connect_error message should start with "unauthorized", got ${JSON.stringify(err?.message)}`,
  );
  const parsed = parseUnauthorized(err.message);
  assert.ok(parsed, `connect_error message should be "unauthorized: <code>: <why>", got ${JSON.stringify(err.message)}`);
  assert.equal(parsed.code, code, `wrong refusal code in ${JSON.stringify(err.message)}`);
}

/** `socket.timeout(5000).emitWithAck(event, payload)`; resolves with the ack. */
export function call(socket, event, payload, ms = ACK_TIMEOUT_MS) {
  return socket.timeout(ms).emitWithAck(event, payload);
}

/** Emits with an explicit argument list (for "no payload" and other odd shapes) and an ack. */
export function callArgs(socket, event, args, ms = ACK_TIMEOUT_MS) {
  return socket.timeout(ms).emitWithAck(event, ...args);
}

/** Calls and asserts `ok: true`; returns the ack. */
export async function ok(socket, event, payload, what = "") {
  const ack = await call(socket, event, payload);
  assert.ok(
    ack && ack.ok === true,
    `${event} ${what}${short(payload)} should succeed, got ${short(ack)}`,
  );
  return ack;
}

/** Asserts an ack is `{ ok: false, error: { code, message } }` with a non-empty message. */
export function assertError(ack, code, what = "") {
  const shown = short(ack);
  assert.ok(ack && typeof ack === "object", `${what}: ack should be an object, got ${shown}`);
  assert.equal(ack.ok, false, `${what}: expected ok:false with code ${code}, got ${shown}`);
  assert.ok(ack.error && typeof ack.error === "object", `${what}: error object missing in ${shown}`);
  assert.equal(ack.error.code, code, `${what}: wrong error code in ${shown}`);
  assert.equal(typeof ack.error.message, "string", `${what}: error.message should be a string`);
  assert.ok(ack.error.message.length > 0, `${what}: error.message should not be empty`);
}

/** Calls and asserts an error ack with `code`. */
export async function fails(socket, event, payload, code, what = "") {
  const ack = await call(socket, event, payload);
  assertError(ack, code, `${event} ${what}${short(payload)}`);
  return ack;
}

/** Resolves with the first `event` payload matching `predicate` within `ms`, else rejects. */
export function waitFor(socket, event, predicate = () => true, ms = 3000) {
  return new Promise((resolve, reject) => {
    const handler = (...args) => {
      let hit;
      try {
        hit = predicate(...args);
      } catch (err) {
        cleanup();
        reject(err);
        return;
      }
      if (hit) {
        cleanup();
        resolve(args[0]);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms waiting for "${event}"${predicate.name ? ` (${predicate.name})` : ""}`));
    }, ms);
    function cleanup() {
      clearTimeout(timer);
      socket.off(event, handler);
    }
    socket.on(event, handler);
  });
}

// "Nothing arrived" is checked against a barrier, never a quiet window: a window passes whenever the server is merely
// slow. After the action that must not deliver X, make something arrive that the server sends the observing socket
// only after X would have been sent, and check that X did not come first:
//   - a marker message through the same room (`markerVia`): room broadcasts reach a socket in the order they were
//     made, and the marker is sent after the action was acked;
//   - the ack of a later event of the same socket (`laterAck`): the events of one socket are handled one after the
//     other, each answered before the next starts (docs/protocol.md), so whatever an earlier event sent this socket
//     comes before that ack.

const MARKER = "marker ";

/** True for the messages `markerVia` sends. */
export const isMarker = (m) => typeof m?.text === "string" && m.text.startsWith(MARKER);

/**
 * Starts recording the `event`s matching `unwanted` on `socket` (markers never count). `await none.before(barrier)`
 * waits for `barrier` (a promise, see above) and fails if anything unwanted arrived first.
 */
export function noneOf(socket, event, unwanted = () => true) {
  const seen = collect(socket, event, (payload) => !isMarker(payload) && unwanted(payload));
  return {
    async before(barrier, what = "") {
      try {
        await barrier;
      } finally {
        seen.stop();
      }
      assert.equal(seen.length, 0, `unexpected "${event}" before the barrier${what ? ` (${what})` : ""}: ${short(seen)}`);
    },
  };
}

/** Sends a marker message from `sender` to `room`; resolves once every socket of `observers` has received it. */
export async function markerVia(sender, room, observers) {
  const text = `${MARKER}${rand()}`;
  const arrived = observers.map((s) => waitFor(s, "message", (m) => m.room === room && m.text === text, ACK_TIMEOUT_MS));
  await ok(sender, "message:send", { room, text });
  await Promise.all(arrived);
}

/**
 * The ack of a `rooms:list` emitted now: the server answers it after everything it sent for the socket's earlier events.
 * An event a budget refuses (`rate_limited`) is answered at once, ahead of the queue, so such an ack proves nothing:
 * then it waits and asks again.
 */
export async function laterAck(socket) {
  for (let wait = 50; ; wait *= 2) {
    const ack = await call(socket, "rooms:list", {});
    if (ack?.ok !== false || ack.error?.code !== "rate_limited") return ack;
    if (wait > 3200) throw new Error(`laterAck: rooms:list kept being refused: ${short(ack)}`);
    await sleep(wait);
  }
}

/**
 * Closes `socket` (a socket of user `userId`) and resolves once the server has handled the disconnect, as `observer`
 * sees it: both first enter a fresh room where `socket` is the user's only socket, and the user's `leave` notice for
 * it is awaited. The notices of other rooms come from the same handler; follow with `markerVia` through the room
 * watched. (A disconnect is handled on its own schedule, so neither barrier above alone covers it.)
 */
export async function closeHandled(socket, userId, observer) {
  const side = roomId("side");
  await ok(observer, "room:join", { room: side });
  await ok(socket, "room:join", { room: side });
  const left = waitFor(observer, "room:notice", (n) => n.room === side && n.kind === "leave" && n.user?.id === userId, ACK_TIMEOUT_MS);
  closeSocket(socket);
  await left;
}

/** Records every `event` payload on `socket` into the returned array (`.stop()` detaches). */
export function collect(socket, event, predicate = () => true) {
  const seen = [];
  const handler = (payload) => {
    if (predicate(payload)) seen.push(payload);
  };
  socket.on(event, handler);
  seen.stop = () => socket.off(event, handler);
  return seen;
}

/** Closes a socket now (it is also forgotten by the end-of-test cleanup). */
export function closeSocket(socket) {
  socket.close();
  liveSockets.delete(socket);
}

/** Resolves with the disconnect reason when the socket disconnects within `ms`. */
export function waitDisconnect(socket, ms = 5000) {
  return new Promise((resolve, reject) => {
    if (!socket.connected) return resolve("not connected");
    const timer = setTimeout(() => reject(new Error(`socket still connected after ${ms} ms`)), ms);
    socket.once("disconnect", (reason) => {
      clearTimeout(timer);
      resolve(reason);
    });
  });
}

/** Sends `n` messages one after the other (each waiting for its ack); returns the messages. */
export async function sendMany(socket, room, n, text = (i) => `message ${i}`) {
  const out = [];
  for (let i = 1; i <= n; i++) {
    const ack = await call(socket, "message:send", { room, text: text(i) });
    assert.ok(ack?.ok, `send #${i} failed: ${JSON.stringify(ack)}`);
    out.push(ack.message);
  }
  return out;
}

/** Asserts a User object shape. */
export function assertUser(u, { id, name, anonymous } = {}) {
  const shown = short(u);
  assert.ok(u && typeof u === "object", `user should be an object, got ${shown}`);
  assert.equal(typeof u.id, "string", `User.id should be a string in ${shown}`);
  assert.equal(typeof u.name, "string", `User.name should be a string in ${shown}`);
  assert.equal(typeof u.anonymous, "boolean", `User.anonymous should be a boolean in ${shown}`);
  if (id !== undefined) assert.equal(u.id, id, `User.id in ${shown}`);
  if (name !== undefined) assert.equal(u.name, name, `User.name in ${shown}`);
  if (anonymous !== undefined) assert.equal(u.anonymous, anonymous, `User.anonymous in ${shown}`);
}

/** Asserts a Message object shape. */
export function assertMessage(m, { room, seq, fromId, fromName, text, clientId } = {}) {
  assert.ok(m && typeof m === "object", `message should be an object, got ${JSON.stringify(m)}`);
  assert.equal(typeof m.id, "string", "message.id");
  assert.ok(m.id.length > 0, "message.id non-empty");
  assert.equal(typeof m.room, "string", "message.room");
  assert.ok(Number.isInteger(m.seq) && m.seq >= 1, `message.seq should be a positive integer, got ${m.seq}`);
  assert.ok(m.from && typeof m.from.id === "string" && typeof m.from.name === "string", "message.from");
  assert.equal(typeof m.text, "string", "message.text");
  assert.match(m.at, RFC3339_UTC, "message.at should be RFC 3339 UTC");
  if (room !== undefined) assert.equal(m.room, room);
  if (seq !== undefined) assert.equal(m.seq, seq);
  if (fromId !== undefined) assert.equal(m.from.id, fromId);
  if (fromName !== undefined) assert.equal(m.from.name, fromName);
  if (text !== undefined) assert.equal(m.text, text);
  if (clientId !== undefined) assert.equal(m.clientId, clientId);
}

/**
 * Asserts two Message objects are the same message: every field equal, and `at` the same instant to the
 * millisecond (a store may keep fewer fractional digits than the ack showed; the strict comparison of `at`
 * has its own test in messages.test.mjs).
 */
export function assertSameMessage(actual, expected, what = "same message") {
  const norm = (m) => (m && typeof m === "object" ? { ...m, at: Date.parse(m.at) } : m);
  if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${what}: expected an array, got ${short(actual)}`);
    assert.deepEqual(actual.map(norm), expected.map(norm), what);
  } else {
    assert.deepEqual(norm(actual), norm(expected), what);
  }
}

/** Asserts a Room object shape. */
export function assertRoom(r, { id, kind, visibility } = {}) {
  assert.ok(r && typeof r === "object", `room should be an object, got ${JSON.stringify(r)}`);
  assert.equal(typeof r.id, "string");
  assert.equal(typeof r.name, "string");
  assert.ok(["group", "dm"].includes(r.kind), `room.kind ${r.kind}`);
  assert.ok(["public", "private"].includes(r.visibility), `room.visibility ${r.visibility}`);
  assert.match(r.createdAt, RFC3339, "room.createdAt should be RFC 3339");
  if (id !== undefined) assert.equal(r.id, id);
  if (kind !== undefined) assert.equal(r.kind, kind);
  if (visibility !== undefined) assert.equal(r.visibility, visibility);
}

/** Server flags that lift the send rate limit for suites that send many messages. */
export const FAST = { "send-rate": 10000, "send-burst": 10000 };

// ---------------------------------------------------------------------------------------------
// recovery helpers

/** Polls `predicate` every `every` ms until it is truthy; rejects after `ms` with `what()` in the message. */
export async function until(predicate, { ms = 10_000, every = 20, what = () => "" } = {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) {
      const detail = typeof what === "function" ? what() : what;
      throw new Error(`condition not met within ${ms} ms${detail ? `: ${detail}` : ""}`);
    }
    await sleep(every);
  }
}

/** Every message of `room` (oldest first), paged with `history:fetch { after }` on a raw socket. */
export async function fullHistory(socket, room, { limit = 100 } = {}) {
  const all = [];
  for (let after = 0; ; ) {
    const page = await call(socket, "history:fetch", { room, after, limit });
    assert.ok(page?.ok, `history:fetch ${room} after ${after}: ${short(page)}`);
    all.push(...page.messages);
    if (!page.hasMore || page.messages.length === 0) return all;
    after = page.messages[page.messages.length - 1].seq;
  }
}

/**
 * Asserts `messages` are exactly seqs 1..n of one room (no gap, no duplicate, in order). Returns n.
 * `what` names the stream in the message.
 */
export function assertGapFree(messages, what = "stream") {
  const seqs = messages.map((m) => m.seq);
  const bad = seqs.findIndex((seq, i) => seq !== i + 1);
  if (bad >= 0) {
    const around = seqs.slice(Math.max(0, bad - 5), bad + 5).join(",");
    assert.fail(`${what}: expected seqs 1..${seqs.length} in order, at index ${bad} got ${seqs[bad]} (…${around}…)`);
  }
  return seqs.length;
}

/**
 * A TCP proxy to `target` (a server or its URL) on 127.0.0.1, for cutting and holding connections:
 * `{ url, block(), unblock(), cut(), close(), connections, opened }`. While blocked, new connections are closed at once
 * (a reconnecting client gets `connect_error` and keeps trying); `cut()` destroys every open connection.
 */
export async function tcpProxy(target) {
  const { default: net } = await import("node:net");
  const url = new URL(typeof target === "string" ? target : target.url);
  const open = new Set();
  let blocked = false;
  let opened = 0;
  const server = net.createServer((down) => {
    if (blocked) {
      down.destroy();
      return;
    }
    opened++;
    const up = net.connect(Number(url.port), url.hostname);
    const pair = { down, up };
    open.add(pair);
    const drop = () => {
      open.delete(pair);
      down.destroy();
      up.destroy();
    };
    down.on("error", drop).on("close", drop);
    up.on("error", drop).on("close", drop);
    down.pipe(up);
    up.pipe(down);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const proxy = {
    url: `http://127.0.0.1:${server.address().port}`,
    get connections() {
      return open.size;
    },
    /** Connections let through since the proxy started. */
    get opened() {
      return opened;
    },
    block() {
      blocked = true;
    },
    unblock() {
      blocked = false;
    },
    cut() {
      for (const { down, up } of [...open]) {
        down.destroy();
        up.destroy();
      }
      open.clear();
    },
    close() {
      proxy.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  return proxy;
}

/**
 * An SDK client (`../dist`, built by `npm test`'s pretest) on `url` (or a list of node URLs), over WebSocket with
 * fast reconnection, closed at the end of the test.
 */
export async function sdkClient(url, { socket, ...options } = {}) {
  const { connect: connectSdk } = await import("../dist/index.js");
  const client = connectSdk(url, {
    ...options,
    socket: {
      transports: ["websocket"],
      forceNew: true,
      reconnectionDelay: 50,
      reconnectionDelayMax: 200,
      ...socket,
    },
  });
  track(client.socket);
  return client;
}

/**
 * Records what an SDK client's `onMessage` delivers, per room, and its `onRecoveryError`s:
 * `{ of(room) → Message[], rooms, errors, sessions }` (`sessions` counts the `session` events).
 */
export function recordStream(client) {
  const rooms = new Map();
  const errors = [];
  const rec = {
    rooms,
    errors,
    sessions: 0,
    of: (room) => rooms.get(room) ?? [],
  };
  client.onMessage((m) => {
    if (!rooms.has(m.room)) rooms.set(m.room, []);
    rooms.get(m.room).push(m);
  });
  client.onRecoveryError((err) => errors.push(err));
  client.socket.on("session", () => rec.sessions++);
  return rec;
}

/** Records the payload of every outgoing `event` of `socket` (an SDK client's `client.socket`). */
export function outgoing(socket, event) {
  const seen = [];
  socket.onAnyOutgoing((name, payload) => {
    if (name === event) seen.push(payload);
  });
  return seen;
}

// ---------------------------------------------------------------------------------------------
// two nodes through Redis

export const REDIS_URL = process.env.PALAVER_TEST_REDIS || "redis://127.0.0.1:6379";

/** Whether a TCP connection to the URL's host and port opens within 1 s. */
async function reachable(url) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const s = net.connect(Number(port || 6379), hostname);
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once("connect", () => done(true));
    s.once("error", () => done(false));
  });
}

/**
 * For a suite that needs Postgres and Redis: `skip` is a reason without the postgres store (PALAVER_TEST_STORES),
 * or without Redis locally; under CI (`CI` set) a missing Redis is not skipped, and `requireRedis()` fails the test.
 */
export async function twoNodeGate() {
  const redisUp = await reachable(REDIS_URL);
  const inCI = !["", "0", "false"].includes((process.env.CI ?? "").trim().toLowerCase());
  const skip = !STORES.includes("postgres")
    ? "needs the postgres store (left out by PALAVER_TEST_STORES)"
    : !redisUp && !inCI
      ? `needs Redis at ${REDIS_URL}, which is unreachable (set PALAVER_TEST_REDIS; under CI this fails instead)`
      : false;
  const requireRedis = () =>
    assert.ok(redisUp, `Redis at ${REDIS_URL} is unreachable; CI is set, so this suite fails instead of skipping`);
  return { skip, requireRedis };
}

/**
 * Two palaver nodes on one fresh Postgres database, linked through Redis under a prefix of their own, for the
 * enclosing `describe` (whose `skip` is `gate.skip`): started before its tests, stopped after them. `flags` are
 * both nodes' (a function, for flags that need set-up, is called first). Returns the nodes' array, filled once
 * they are up.
 */
export function useTwoNodes(gate, { label = "palaver/node", flags = {} } = {}) {
  const nodes = [];
  let db;
  before(async () => {
    gate.requireRedis();
    db = await createDatabase("postgres");
    const shared = {
      ...(typeof flags === "function" ? await flags() : flags),
      "redis-url": REDIS_URL,
      "redis-prefix": `palaver-test-${process.pid}-${rand()}`,
    };
    for (const side of ["a", "b"]) {
      nodes.push(await spawnServer({ databaseUrl: db.url, flags: shared, label: `${label}-${side}` }));
    }
  });
  after(async () => {
    for (const s of nodes) await stopServer(s);
    if (db) await db.drop();
  });
  return nodes;
}

// ---------------------------------------------------------------------------------------------
// scenarios on each store and on two nodes

/**
 * Alice and bob, signed in, in a fresh room `<prefix>-…`: alice's socket on `srvA`, bob's on `srvB` (by default the
 * same server). Resolves with `{ room, a, b, alice, bob }` (`a`, `b`: their sockets).
 */
export async function pairInRoom(srvA, srvB = srvA, prefix = "room") {
  const alice = identity("alice");
  const bob = identity("bob");
  const room = roomId(prefix);
  const a = await connect(srvA, alice.auth);
  const b = await connect(srvB, bob.auth);
  await ok(a.socket, "room:join", { room });
  await ok(b.socket, "room:join", { room });
  return { room, a: a.socket, b: b.socket, alice, bob };
}

/**
 * Registers the same scenarios on each store (one server) and on two nodes of one cluster (Postgres + Redis; skipped
 * as {@link twoNodeGate} says), in `describe`s titled `<area> [<store>]` and `<area> on two nodes (Postgres + Redis)`.
 * `scenarios(on)` gets `on.first()` and `on.second()`, the servers of a test's first and second user (one server, or
 * node A and node B: so every scenario also runs across nodes), `on.pair(prefix)` ({@link pairInRoom} on them) and
 * `on.nodes`. `perStore(store)` registers more `describe`s after each store's; `twoNodes(on)` more tests in the
 * two-node `describe`. Resolves once registered (it awaits the gate).
 */
export async function onStoresAndTwoNodes(area, scenarios, { flags = FAST, label, perStore, twoNodes } = {}) {
  const fixture = (nodes) => {
    const first = () => nodes[0];
    const second = () => nodes[1] ?? nodes[0];
    return { nodes, first, second, pair: (prefix) => pairInRoom(first(), second(), prefix) };
  };
  for (const store of STORES) {
    describe(`${area} [${store}]`, () => {
      const srv = useServer(store, { flags });
      scenarios(fixture([srv]));
    });
    perStore?.(store);
  }
  const gate = await twoNodeGate();
  describe(`${area} on two nodes (Postgres + Redis)`, { skip: gate.skip }, () => {
    const nodes = useTwoNodes(gate, { flags, label: label ?? `palaver/${area.split(" ")[0]}` });
    const on = fixture(nodes);
    scenarios(on);
    twoNodes?.(on);
  });
}
