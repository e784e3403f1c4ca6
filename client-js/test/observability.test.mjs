// Logs and traces (docs/operations.md, Logs and tracing): `--log-format json` writes one JSON object a line, each
// carrying the spans it happened in (a client event's socket, user and room; an HTTP request's method and path);
// `--otlp-endpoint` exports the same spans over OTLP/HTTP, flushed when the server stops; and no secret the server
// was given or a client sent (JWT, JWT secret, API key, webhook secret, token secret, a 2.x client's handshake query
// token) appears in either, even at RUST_LOG=debug.
import assert from "node:assert/strict";
import http from "node:http";
import { after, describe } from "node:test";

import ioV2 from "socket.io-client-v2";

import {
  JWT_SECRET,
  createDatabase,
  spawnServer,
  stopServer,
  it,
  track,
  connect,
  connectRefused,
  identity,
  roomId,
  rand,
  ok,
  call,
} from "./harness.mjs";

const API_KEY = `obs-key-${rand(8)}-0123456789`;
const WEBHOOK_SECRET = `obs-webhook-${rand(8)}`;
const TOKEN_SECRET = `obs-token-secret-${rand(8)}`;
const SECRET_FLAGS = {
  "api-key": `publish+read=${API_KEY}`,
  "webhook-secret": WEBHOOK_SECRET,
  "token-secret": TOKEN_SECRET,
};

/** A local HTTP endpoint recording every request: `{ url, requests: [{ path, type, raw: Buffer }], next(), close() }`. */
async function startEndpoint(path) {
  const r = { requests: [], waiters: [] };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      r.requests.push({ path: req.url, type: req.headers["content-type"], raw: Buffer.concat(chunks) });
      for (const wake of r.waiters.splice(0)) wake();
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  r.url = `http://127.0.0.1:${server.address().port}${path}`;
  /** Resolves once `predicate()` holds, re-checked on every request that arrives. */
  r.until = (predicate, what, ms = 20_000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      const check = () => {
        if (predicate()) {
          clearTimeout(timer);
          resolve();
        } else r.waiters.push(check);
      };
      check();
    });
  r.close = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  };
  return r;
}

const webhooks = await startEndpoint("/hooks");
after(() => webhooks.close());

/**
 * Runs one session against `srv` touching every kind of secret: a JWT-signed socket.io-client 4.x that joins, sends
 * and makes a failing event; a 2.x client whose token rides in the handshake query, over long-polling; a refused
 * connection whose whole `auth` is the JWT string; and a server API call with the API key. Resolves with what the
 * checks need.
 */
async function session(srv) {
  const alice = identity("alice");
  const room = roomId("obs");
  const { socket } = await connect(srv, alice.auth);
  await ok(socket, "room:join", { room });
  const sent = await ok(socket, "message:send", { room, text: "observed", clientId: `c-${rand()}` });
  // A failing event: a send to a room alice is not in.
  const refused = await call(socket, "message:send", { room: roomId("elsewhere"), text: "no", clientId: `c-${rand()}` });
  assert.equal(refused.ok, false, JSON.stringify(refused));

  // socket.io-client 2.x: `?token=<jwt>` on every long-polling request.
  const bob = identity("bob");
  const v2 = track(ioV2(srv.url, { transports: ["polling"], forceNew: true, reconnection: false, query: { token: bob.token } }));
  await new Promise((resolve, reject) => {
    v2.once("session", resolve);
    v2.once("error", (e) => reject(new Error(`the 2.x client was refused: ${e}`)));
  });
  const bobJoined = await new Promise((resolve) => v2.emit("room:join", { room }, resolve));
  assert.equal(bobJoined.ok, true, JSON.stringify(bobJoined));

  // The JWT passed as the whole `auth` (a string, not `{ token }`): refused, and the refusal is logged.
  const error = await connectRefused(srv, alice.token);
  assert.match(error.message, /^unauthorized: invalid_token/);

  const response = await fetch(`${srv.url}/api/v1/rooms/${room}/messages?limit=5`, {
    headers: { authorization: `Bearer ${API_KEY}` },
  });
  assert.equal(response.status, 200, await response.text());
  await webhooks.until(
    () => webhooks.requests.some((q) => q.raw.includes(`"${sent.message.id}"`)),
    "the webhook of the message",
  );
  return { alice, bob, room, sent, refusedCode: refused.error.code, secrets: [alice.token, bob.token, JWT_SECRET, API_KEY, WEBHOOK_SECRET, TOKEN_SECRET] };
}

/** Asserts that none of `secrets` occurs in `text`, naming the one that does and where. */
function assertNoSecret(text, secrets, where) {
  for (const secret of secrets) {
    const at = text.indexOf(secret);
    assert.equal(at, -1, `a secret appears in ${where}: …${text.slice(Math.max(0, at - 300), at + secret.length + 50)}…`);
  }
}

/** Starts palaver on a fresh SQLite database, keeping every line it prints. */
async function start({ flags = {}, env = {} } = {}) {
  const db = await createDatabase("sqlite");
  const lines = [];
  const server = await spawnServer({
    databaseUrl: db.url,
    flags: { ...SECRET_FLAGS, "webhook-url": webhooks.url, "cors-origins": "http://app.test", ...flags },
    env,
    onOutput: (line, tag) => lines.push({ line, tag }),
  });
  after(async () => {
    await stopServer(server);
    await db.drop();
  });
  return { server, lines };
}

describe("logs: --log-format json at RUST_LOG=debug", () => {
  it("every line is JSON; event and request spans carry their fields; no secret appears", { timeout: 60_000 }, async () => {
    const { server, lines } = await start({ flags: { "log-format": "json" }, env: { RUST_LOG: "debug" } });
    const s = await session(server);
    const exit = await stopServer(server);
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}`);

    const out = lines.filter((l) => l.tag === "out").map((l) => l.line);
    const records = out.map((line, i) => {
      try {
        return JSON.parse(line);
      } catch (e) {
        assert.fail(`stdout line ${i} is not JSON (${e.message}): ${line}`);
      }
    });
    assert.ok(records.some((r) => r.level === "DEBUG"), "RUST_LOG=debug lets debug lines through");
    const answered = (event) => records.filter((r) => r.fields?.message === "answered" && r.span?.name === "event" && r.span.event === event);

    // alice's send, answered in its event span: socket, user, namespace and room.
    const sends = answered("message:send").filter((r) => r.span.user === s.alice.id);
    const ok = sends.find((r) => r.fields.outcome === "ok");
    assert.ok(ok, `no "answered" line for alice's message:send: ${JSON.stringify(sends)}`);
    assert.equal(ok.span.room, s.room);
    assert.equal(ok.span.ns, "/");
    assert.match(ok.span.socket, /^\S{8,}$/);
    assert.equal(ok.span["otel.name"], "message:send");
    const failed = sends.find((r) => r.fields.outcome === s.refusedCode);
    assert.ok(failed, `no line for the failing send with outcome ${s.refusedCode}: ${JSON.stringify(sends)}`);
    assert.equal(failed.span.socket, ok.span.socket, "the same connection");

    // The 2.x client's join, over long-polling, in its own connection's span.
    const bobJoin = answered("room:join").find((r) => r.span.user === s.bob.id);
    assert.ok(bobJoin, "bob's room:join");
    assert.equal(bobJoin.span.room, s.room);
    assert.notEqual(bobJoin.span.socket, ok.span.socket);

    // A store call's span (#[instrument]) inside alice's event span, in a line's span list (the SQL statements).
    const nested = records.find((r) => {
      const at = r.spans?.findIndex((p) => p.name === "event" && p.user === s.alice.id) ?? -1;
      return at >= 0 && r.spans.slice(at + 1).some((p) => p.room === s.room);
    });
    assert.ok(nested, "a line inside a store call of alice's event");

    // HTTP requests: method and path, never the query; the API call's status.
    const requests = records.filter((r) => r.span?.name === "request");
    const apiCall = requests.find((r) => r.span.path === `/api/v1/rooms/${s.room}/messages` && r.fields?.message === "answered");
    assert.ok(apiCall, "the API call's request span");
    assert.equal(apiCall.fields.status, 200);
    assert.equal(apiCall.span.method, "GET");
    const polls = requests.filter((r) => r.span.path === "/socket.io/");
    assert.ok(polls.length > 0, "the 2.x client's long-polling requests have request spans");
    for (const r of requests) assert.ok(!r.span.path.includes("?"), `a query in a request span: ${r.span.path}`);

    assertNoSecret(lines.map((l) => l.line).join("\n"), s.secrets, "the log");
  });

  it("at the default level (info) no event or request span reaches the log", { timeout: 60_000 }, async () => {
    const { server, lines } = await start({ flags: { "log-format": "json" }, env: { RUST_LOG: "info" } });
    const alice = identity("alice");
    const { socket } = await connect(server, alice.auth);
    const room = roomId("quiet");
    await ok(socket, "room:join", { room });
    await ok(socket, "message:send", { room, text: "quiet", clientId: `c-${rand()}` });
    await stopServer(server);
    const records = lines.filter((l) => l.tag === "out").map((l) => JSON.parse(l.line));
    assert.ok(records.some((r) => r.fields?.message === "connected" && r.fields.user === alice.id), "the connect line");
    for (const r of records) {
      assert.notEqual(r.level, "DEBUG", JSON.stringify(r));
      assert.ok(!r.spans?.some((p) => p.name === "event" || p.name === "request"), JSON.stringify(r));
    }
  });
});

/** The spans of OTLP/HTTP JSON export requests, flattened: `{ name, traceId, spanId, parentSpanId, attributes }`. */
function otlpSpans(requests) {
  const value = (v) => v.stringValue ?? v.intValue ?? v.boolValue ?? v.doubleValue;
  return requests.flatMap((q) =>
    JSON.parse(q.raw.toString("utf8")).resourceSpans.flatMap((rs) =>
      rs.scopeSpans.flatMap((ss) =>
        ss.spans.map((span) => ({
          ...span,
          service: value(rs.resource.attributes.find((a) => a.key === "service.name").value),
          attributes: Object.fromEntries((span.attributes ?? []).map((a) => [a.key, value(a.value)])),
        })),
      ),
    ),
  );
}

describe("traces: --otlp-endpoint", () => {
  // The batch exporter would wait a minute: everything arrives through the flush on shutdown.
  const env = { OTEL_BSP_SCHEDULE_DELAY: "60000" };

  it("exports event, store and request spans over http/json, flushed on shutdown, with no secret", { timeout: 60_000 }, async () => {
    const collector = await startEndpoint("");
    after(() => collector.close());
    const { server } = await start({ flags: { "otlp-endpoint": collector.url, "otlp-protocol": "http/json" }, env });
    const s = await session(server);
    const exit = await stopServer(server);
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}`);
    assert.ok(collector.requests.length > 0, "nothing was exported");
    for (const q of collector.requests) {
      assert.equal(q.path, "/v1/traces");
      assert.match(q.type, /^application\/json/);
    }
    const spans = otlpSpans(collector.requests);
    assert.ok(spans.every((span) => span.service === "palaver"), "service.name");

    const send = spans.find((span) => span.name === "message:send" && span.attributes.user === s.alice.id && span.attributes.outcome === "ok");
    assert.ok(send, `no message:send span of alice: ${JSON.stringify(spans.map((x) => x.name))}`);
    assert.equal(send.attributes.room, s.room);
    assert.equal(send.attributes.ns, "/");
    assert.ok(send.attributes.socket, "socket attribute");
    const failed = spans.find((span) => span.name === "message:send" && span.attributes.outcome === s.refusedCode);
    assert.ok(failed, "the failing send, with its error code");
    assert.equal(failed.attributes.user, s.alice.id);
    // The store call the send made is a child of its event span.
    const append = spans.find((span) => span.name === "append_message" && span.parentSpanId === send.spanId);
    assert.ok(append, "append_message under message:send");
    assert.equal(append.traceId, send.traceId);
    assert.equal(append.attributes.room, s.room);
    assert.equal(append.attributes.text, undefined, "no message text");

    const apiCall = spans.find((span) => span.name === "GET /api/v1/rooms/{room}/messages");
    assert.ok(apiCall, "the API call's request span, named by its route");
    assert.equal(apiCall.attributes.path, `/api/v1/rooms/${s.room}/messages`);
    assert.equal(Number(apiCall.attributes.status), 200);

    assertNoSecret(collector.requests.map((q) => q.raw.toString("utf8")).join("\n"), s.secrets, "the exported spans");
  });

  it("exports http/protobuf by default", { timeout: 60_000 }, async () => {
    const collector = await startEndpoint("/otel");
    after(() => collector.close());
    const { server } = await start({ flags: { "otlp-endpoint": collector.url }, env });
    const alice = identity("alice");
    const { socket } = await connect(server, alice.auth);
    const room = roomId("proto");
    await ok(socket, "room:join", { room });
    await stopServer(server);
    assert.ok(collector.requests.length > 0, "nothing was exported");
    assert.equal(collector.requests[0].path, "/otel/v1/traces");
    assert.equal(collector.requests[0].type, "application/x-protobuf");
    // Protobuf keeps strings as UTF-8 bytes: the event, the user and the room are in the payload.
    const raw = Buffer.concat(collector.requests.map((q) => q.raw));
    for (const text of ["room:join", alice.id, room]) assert.ok(raw.includes(text), `${text} not exported`);
    assert.ok(!raw.includes(alice.token), "the JWT was exported");
  });
});
