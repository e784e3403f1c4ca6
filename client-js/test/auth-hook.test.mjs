// The host service's connect hook (--auth-hook-url): a connection without a token is admitted as the user the host
// names, refused with the host's reason, and refused as retryable when the host fails; never admitted as a guest.
// The host is a real HTTP server on a random port.
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { describe, after } from "node:test";

import {
  STORES,
  useServer,
  it,
  client,
  identity,
  connect,
  connectRefused,
  assertUnauthorized,
  assertUser,
  rand,
  sleep,
  token,
  twoNodeGate,
  useTwoNodes,
} from "./harness.mjs";

const SECRET = `hook-secret-${rand()}`;

/**
 * A host service: every call is recorded in `calls` ({ authorization, body }) and answered by `host.answer(body)`,
 * an async function returning `[status, json]`. `maxInFlight` is the most calls it had open at once.
 */
async function startHost() {
  const host = { calls: [], inFlight: 0, maxInFlight: 0, answer: async () => [500, {}] };
  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (chunk) => (raw += chunk));
    req.on("end", async () => {
      // Open until answered or dropped by palaver (a call it gave up on no longer counts).
      host.inFlight++;
      host.maxInFlight = Math.max(host.maxInFlight, host.inFlight);
      res.once("close", () => host.inFlight--);
      try {
        const body = JSON.parse(raw);
        host.calls.push({ authorization: req.headers.authorization, body });
        const [status, answer] = await host.answer(body);
        if (!res.destroyed) res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(answer));
      } catch {
        res.destroy();
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  host.url = `http://127.0.0.1:${server.address().port}/palaver/connect`;
  host.close = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  };
  return host;
}

/** A port nothing listens on. */
async function closedPort() {
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

/** Connects with socket.io-client options beyond `auth`; resolves with `{ socket, session }`. */
function connectWith(srv, options) {
  const socket = client(srv, options);
  return new Promise((resolve, reject) => {
    socket.once("session", (session) => resolve({ socket, session }));
    socket.once("connect_error", (err) => reject(new Error(`connect_error: ${err.message}`)));
  });
}

const host = await startHost();
after(() => host.close());
const downPort = await closedPort();
// Long enough for a loaded box to answer six queued calls; the "no answer" case sleeps well past it.
const hookFlags = { "auth-hook-url": host.url, "auth-hook-secret": SECRET, "auth-hook-timeout-ms": 1500 };

for (const store of STORES) {
  describe(`connect hook [${store}]`, () => {
    const srv = useServer(store, { flags: { ...hookFlags, "auth-hook-concurrency": 2 } });

    it("the host names the user; the call carries the secret, namespace, auth, query, cookie and address", async () => {
      host.answer = async (body) => [200, { user: { id: `host-${body.auth.ticket}`, name: " Ada " }, meta: { plan: "pro" } }];
      const ticket = rand();
      const { session } = await connectWith(srv, {
        auth: { ticket },
        query: { app: "lobby" },
        extraHeaders: { cookie: "sid=abc; theme=dark", "user-agent": "palaver-test" },
      });
      assertUser(session.user, { id: `host-${ticket}`, name: "Ada", anonymous: false });
      const call = host.calls.find((c) => c.body.auth?.ticket === ticket);
      assert.ok(call, "the host was called");
      assert.equal(call.authorization, `Bearer ${SECRET}`);
      assert.equal(call.body.namespace, "/");
      assert.deepEqual(call.body.auth, { ticket });
      assert.equal(call.body.query.app, "lobby");
      for (const own of ["EIO", "transport", "t"]) assert.equal(call.body.query[own], undefined, `query.${own} is Engine.IO's`);
      assert.equal(call.body.headers.cookie, "sid=abc; theme=dark");
      assert.equal(call.body.headers["user-agent"], "palaver-test");
      assert.equal(call.body.address, "127.0.0.1");
    });

    it("the host's 401 or 403 refuses with `refused` and the host's reason", async () => {
      host.answer = async () => [403, { reason: "banned for spam" }];
      const err = await connectRefused(srv, { ticket: "x" });
      assertUnauthorized(err, "refused");
      assert.match(err.message, /banned for spam/);
      host.answer = async () => [401, { error: { message: "session expired" } }];
      const expired = await connectRefused(srv);
      assertUnauthorized(expired, "refused");
      assert.match(expired.message, /session expired/);
    });

    it("a host that fails refuses with `unavailable`, never admits a guest", async () => {
      const failures = [
        ["a 503", async () => [503, { reason: "down for maintenance" }]],
        ["an answer without a user", async () => [200, { ok: true }]],
        ["a guest's id", async () => [200, { user: { id: "anon-123", name: "x" } }]],
        ["a name with a control character", async () => [200, { user: { id: "u-1", name: "a\u0000b" } }]],
        ["no answer within the timeout", async () => (await sleep(4000), [200, { user: { id: "late", name: "Late" } }])],
      ];
      for (const [what, answer] of failures) {
        host.answer = answer;
        const err = await connectRefused(srv, { name: "would-be-guest" });
        assertUnauthorized(err, "unavailable");
        assert.ok(err.message.includes("reconnect"), `${what}: ${err.message}`);
      }
    });

    it("a token decides without the host: a valid one connects, a bad one is refused", async () => {
      host.answer = async () => [200, { user: { id: "from-host", name: "Host" } }];
      const before = host.calls.length;
      const user = identity("jwt");
      const { session } = await connect(srv, user.auth);
      assertUser(session.user, { id: user.id, name: user.name, anonymous: false });
      const err = await connectRefused(srv, { token: token("someone", {}, { secret: "not-the-secret" }) });
      assertUnauthorized(err, "bad_signature");
      assert.equal(host.calls.length, before, "the host was not called");
    });

    it("calls in flight stay within --auth-hook-concurrency; the others wait their turn", async () => {
      host.maxInFlight = 0;
      host.answer = async (body) => (await sleep(100), [200, { user: { id: `busy-${body.auth.n}`, name: "Busy" } }]);
      const sessions = await Promise.all(Array.from({ length: 6 }, (_, n) => connectWith(srv, { auth: { n } })));
      assert.deepEqual(
        sessions.map(({ session }) => session.user.id).sort(),
        Array.from({ length: 6 }, (_, n) => `busy-${n}`),
      );
      assert.ok(host.maxInFlight <= 2, `${host.maxInFlight} calls were open at once`);
    });
  });
}

describe("connect hook: the host is down", () => {
  const srv = useServer(STORES[0] ?? "sqlite", {
    flags: { ...hookFlags, "auth-hook-url": `http://127.0.0.1:${downPort}/hook` },
  });

  it("a connection is refused with `unavailable`, not admitted as a guest", async () => {
    const err = await connectRefused(srv, { name: "guest" });
    assertUnauthorized(err, "unavailable");
  });
});

const gate = await twoNodeGate();

describe("connect hook on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/hook", flags: hookFlags });

  it("users the host names on either node are one user across the cluster (a DM reaches them on the other node)", async () => {
    host.answer = async (body) => [200, { user: { id: `cluster-${body.auth.who}`, name: body.auth.who } }];
    const who = rand();
    const a = await connectWith(nodes[0], { auth: { who: `a${who}` } });
    const b = await connectWith(nodes[1], { auth: { who: `b${who}` } });
    assertUser(b.session.user, { id: `cluster-b${who}`, name: `b${who}`, anonymous: false });
    const arrived = new Promise((resolve) => b.socket.on("message", (m) => m.text === "across" && resolve(m)));
    const ack = await a.socket.timeout(5000).emitWithAck("dm:send", { to: `cluster-b${who}`, text: "across" });
    assert.equal(ack.ok, true, JSON.stringify(ack));
    assert.equal((await arrived).from.id, `cluster-a${who}`);
  });
});
