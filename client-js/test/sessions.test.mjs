// palaver's own sessions (issue 11 §1): a host's one-time code exchanged for palaver's tokens, single-use codes,
// refresh rotation and reuse detection, logout, cookies only from allowed origins, palaver's tokens on sockets
// and on the HTTP API, a connected socket's token expiring (session:expiring, session:refresh, session:expired),
// and the SDK refreshing on its own. The host is a real HTTP server on a random port.
import assert from "node:assert/strict";
import http from "node:http";
import { describe, after } from "node:test";

import {
  STORES,
  useServer,
  it,
  client,
  connect,
  assertUnauthorized,
  assertUser,
  roomId,
  rand,
  ok,
  call,
  waitFor,
  waitDisconnect,
  sdkClient,
  until,
  twoNodeGate,
  useTwoNodes,
} from "./harness.mjs";
import { refreshPalaverSession } from "../dist/index.js";

const SECRET = `host-secret-${rand()}`;
const ADMIN_KEY = `admin-${rand(8)}-0123456789`;
const APP = "http://app.example";

/** The host: redeems codes it issued (each maps to a user) and records the calls. It does not make codes single-use. */
async function startHost() {
  const host = { codes: new Map(), calls: [] };
  const server = http.createServer((req, res) => {
    let raw = "";
    req.on("data", (chunk) => (raw += chunk));
    req.on("end", () => {
      const body = JSON.parse(raw || "{}");
      host.calls.push({ authorization: req.headers.authorization, body });
      const user = host.codes.get(body.code);
      const [status, answer] = user ? [200, { user }] : [401, { reason: "unknown or expired code" }];
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(answer));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  host.url = `http://127.0.0.1:${server.address().port}/sessions/redeem`;
  host.close = () => {
    server.closeAllConnections();
    return new Promise((resolve) => server.close(resolve));
  };
  /** A new one-time code for a new user. */
  host.issue = () => {
    const user = { id: `host-user-${rand(6)}`, name: `Host ${rand(2)}` };
    const code = `code-${rand(12)}`;
    host.codes.set(code, user);
    return { code, user };
  };
  return host;
}

const host = await startHost();
after(() => host.close());

/** POST to a session endpoint; `{ status, body, cookies }` (cookies: the Set-Cookie lines). */
async function post(srv, path, body, headers = {}) {
  const response = await fetch(`${srv.url}/api/v1/auth/${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null, cookies: response.headers.getSetCookie() };
}

/** The value of a cookie among Set-Cookie lines. */
const cookieValue = (cookies, name) => cookies.find((c) => c.startsWith(`${name}=`))?.split(";")[0].slice(name.length + 1);

/** Exchanges a fresh code: `{ user, tokens, cookies }`. */
async function signIn(srv) {
  const { code, user } = host.issue();
  const res = await post(srv, "exchange", { code });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return { user, tokens: res.body, cookies: res.cookies };
}

function sessionFlags(extra = {}) {
  return {
    "token-secret": `palaver-token-secret-${rand()}`,
    "auth-exchange-url": host.url,
    "auth-hook-secret": SECRET,
    "cors-origins": APP,
    "cookie-secure": false,
    ...extra,
  };
}

for (const store of STORES) {
  describe(`sessions [${store}]`, () => {
    // No grace: a rotated token used again is a theft at once (the grace is tested below).
    const srv = useServer(store, { flags: sessionFlags({ "refresh-reuse-grace-secs": 0, "api-key": `manage=${ADMIN_KEY}` }) });

    it("a code is exchanged for palaver's tokens, in the body and as HttpOnly cookies; it works once", async () => {
      const { code, user } = host.issue();
      const res = await post(srv, "exchange", { code });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assertUser(res.body.user, { id: user.id, name: user.name, anonymous: false });
      for (const field of ["accessToken", "refreshToken", "accessTokenExpiresAt", "refreshTokenExpiresAt"]) {
        assert.equal(typeof res.body[field], "string", field);
      }
      const call = host.calls.find((c) => c.body.code === code);
      assert.equal(call.authorization, `Bearer ${SECRET}`);
      const access = res.cookies.find((c) => c.startsWith("palaver_access="));
      const refresh = res.cookies.find((c) => c.startsWith("palaver_refresh="));
      assert.match(access, /HttpOnly/);
      assert.match(access, /Path=\//);
      assert.match(refresh, /HttpOnly/);
      assert.match(refresh, /Path=\/api\/v1\/auth/);
      assert.equal(cookieValue(res.cookies, "palaver_access"), res.body.accessToken);
      const again = await post(srv, "exchange", { code });
      assert.equal(again.status, 401, "a code works once");
      assert.equal(again.body.error.code, "unauthorized");
      const unknown = await post(srv, "exchange", { code: "never-issued" });
      assert.equal(unknown.status, 401);
      assert.match(unknown.body.error.message, /unknown or expired code/);
      assert.equal((await post(srv, "exchange", {})).status, 400, "no code");
    });

    it("palaver's access token signs a socket in (auth.token, or the cookie from an allowed origin) and HTTP calls", async () => {
      const { user, tokens } = await signIn(srv);
      const viaAuth = await connect(srv, { token: tokens.accessToken });
      assertUser(viaAuth.session.user, { id: user.id, name: user.name, anonymous: false });
      const room = roomId("own");
      await ok(viaAuth.socket, "room:join", { room });
      await ok(viaAuth.socket, "message:send", { room, text: "signed in by palaver" });
      const page = await fetch(`${srv.url}/api/rooms/${room}/messages`, {
        headers: { authorization: `Bearer ${tokens.accessToken}` },
      });
      assert.equal(page.status, 200);
      assert.deepEqual((await page.json()).messages.map((m) => m.text), ["signed in by palaver"]);

      const cookie = `palaver_access=${tokens.accessToken}`;
      const viaCookie = client(srv, { extraHeaders: { cookie, origin: APP } });
      const session = await waitFor(viaCookie, "session");
      assert.equal(session.user.id, user.id, "the cookie signs the socket in");
      const hijack = await connectRefusedWith(srv, { extraHeaders: { cookie, origin: "http://evil.example" } });
      assertUnauthorized(hijack, "forbidden_origin");
    });

    it("refresh rotates the pair; a rotated token used again revokes the whole session", async () => {
      const { tokens } = await signIn(srv);
      const first = await post(srv, "refresh", { refreshToken: tokens.refreshToken });
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.notEqual(first.body.refreshToken, tokens.refreshToken);
      assert.notEqual(first.body.accessToken, tokens.accessToken);
      await connect(srv, { token: first.body.accessToken });
      const replay = await post(srv, "refresh", { refreshToken: tokens.refreshToken });
      assert.equal(replay.status, 401, "the rotated token is refused");
      assert.match(replay.body.error.message, /already used/);
      const afterReplay = await post(srv, "refresh", { refreshToken: first.body.refreshToken });
      assert.equal(afterReplay.status, 401, "and the session it belonged to is revoked");
    });

    it("the host's backend ends a user's sessions: refresh tokens revoked, sockets disconnected", async () => {
      const { user, tokens } = await signIn(srv);
      const { socket } = await connect(srv, { token: tokens.accessToken });
      const ended = await fetch(`${srv.url}/api/v1/users/${encodeURIComponent(user.id)}/sessions`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
      });
      assert.equal(ended.status, 200);
      assert.ok((await ended.json()).revoked >= 1);
      await waitDisconnect(socket);
      assert.equal((await post(srv, "refresh", { refreshToken: tokens.refreshToken })).status, 401);
    });

    it("a body that does not say it is JSON is refused (no cross-site form posts)", async () => {
      const { code } = host.issue();
      const res = await fetch(`${srv.url}/api/v1/auth/exchange`, {
        method: "POST",
        headers: { "content-type": "text/plain" },
        body: JSON.stringify({ code }),
      });
      assert.equal(res.status, 400);
      assert.equal((await post(srv, "exchange", { code })).status, 200, "the code was not spent");
    });

    it("refresh and logout by cookie only from an allowed origin; logout revokes and clears the cookies", async () => {
      const { tokens } = await signIn(srv);
      const cookie = `palaver_refresh=${tokens.refreshToken}`;
      const forged = await post(srv, "refresh", undefined, { cookie, origin: "http://evil.example" });
      assert.equal(forged.status, 403, "another site cannot use the cookie");
      const noOrigin = await post(srv, "refresh", undefined, { cookie });
      assert.equal(noOrigin.status, 403, "nor a request that does not say where it comes from");
      const byCookie = await post(srv, "refresh", undefined, { cookie, origin: APP });
      assert.equal(byCookie.status, 200, JSON.stringify(byCookie.body));
      const newCookie = `palaver_refresh=${cookieValue(byCookie.cookies, "palaver_refresh")}`;
      const out = await post(srv, "logout", undefined, { cookie: newCookie, origin: APP });
      assert.equal(out.status, 204);
      assert.ok(out.cookies.some((c) => /^palaver_access=;/.test(c) && /Max-Age=0/.test(c)), "clears the access cookie");
      assert.ok(out.cookies.some((c) => /^palaver_refresh=;/.test(c)), "clears the refresh cookie");
      const afterLogout = await post(srv, "refresh", { refreshToken: byCookie.body.refreshToken });
      assert.equal(afterLogout.status, 401, "a logged-out session cannot be refreshed");
      assert.equal((await post(srv, "refresh", { refreshToken: "nope" })).status, 401);
    });
  });
}

describe("sessions: two refreshes at once (the default 30 s grace)", () => {
  const srv = useServer(STORES[0] ?? "sqlite", { flags: sessionFlags() });

  it("both get a pair and the session lives on; the SDK's refresher makes one call for two callers", async () => {
    const { tokens } = await signIn(srv);
    const both = await Promise.all([1, 2].map(() => post(srv, "refresh", { refreshToken: tokens.refreshToken })));
    assert.deepEqual(both.map((r) => r.status), [200, 200], JSON.stringify(both.map((r) => r.body)));
    for (const r of both) {
      assert.equal((await post(srv, "refresh", { refreshToken: r.body.refreshToken })).status, 200, "each new token still works");
    }
    const second = await signIn(srv);
    let refreshToken = second.tokens.refreshToken;
    let calls = 0;
    const refresh = refreshPalaverSession(srv.url, {
      getRefreshToken: () => refreshToken,
      setRefreshToken: (t) => {
        refreshToken = t;
        calls++;
      },
    });
    const [a, b] = await Promise.all([refresh(), refresh()]);
    assert.equal(a, b, "one refresh shared");
    assert.equal(calls, 1);
  });

  it("a session ends when it was due at sign-in: refreshing does not extend it", async () => {
    const { tokens } = await signIn(srv);
    const refreshed = await post(srv, "refresh", { refreshToken: tokens.refreshToken });
    assert.equal(refreshed.body.refreshTokenExpiresAt, tokens.refreshTokenExpiresAt);
  });
});

describe("sessions: a connected socket's token expiring", () => {
  // Tokens live 4 s and sockets hear of it 3 s ahead, so each test takes seconds, not minutes.
  const srv = useServer(STORES[0] ?? "sqlite", {
    flags: sessionFlags({ "access-token-ttl-secs": 4, "session-notice-secs": 3 }),
  });

  it("without a refresh: session:expiring, then session:expired and a disconnect", async () => {
    const { tokens } = await signIn(srv);
    const { socket } = await connect(srv, { token: tokens.accessToken });
    const expiring = await waitFor(socket, "session:expiring", () => true, 10_000);
    assert.equal(expiring.expiresAt, new Date(Date.parse(tokens.accessTokenExpiresAt)).toISOString().replace(/\.\d+Z$/, "Z"));
    const expired = waitFor(socket, "session:expired", () => true, 10_000);
    assert.match((await expired).reason, /expired/);
    await waitDisconnect(socket, 10_000);
  });

  it("session:refresh with a fresh token of the same user keeps the socket past the old expiry; another user's is refused", async () => {
    const { tokens } = await signIn(srv);
    const { socket } = await connect(srv, { token: tokens.accessToken });
    const other = await signIn(srv);
    await waitFor(socket, "session:expiring", () => true, 10_000);
    const wrong = await call(socket, "session:refresh", { token: other.tokens.accessToken });
    assert.equal(wrong.error?.code, "forbidden", "a connection keeps its user");
    // Refresh now, and again on every later notice (each new token lives 4 s too), as a client would.
    let refreshToken = tokens.refreshToken;
    const refreshed = [];
    const renew = async () => {
      const fresh = await post(srv, "refresh", { refreshToken });
      refreshToken = fresh.body.refreshToken;
      refreshed.push(await ok(socket, "session:refresh", { token: fresh.body.accessToken }));
    };
    // A renewal still under way when the test ends must not fail a later one.
    socket.on("session:expiring", () => void renew().catch(() => {}));
    await renew();
    assert.ok(Date.parse(refreshed[0].expiresAt) > Date.parse(tokens.accessTokenExpiresAt));
    // Past the first token's expiry, the socket is still connected and served.
    await until(() => Date.now() > Date.parse(tokens.accessTokenExpiresAt) + 1000, { ms: 15_000 });
    assert.equal(socket.connected, true);
    await ok(socket, "rooms:list", {});
    socket.off("session:expiring");
    socket.close();
  });

  it("the SDK refreshes on its own (refreshPalaverSession) and stays connected", async () => {
    const { user, tokens } = await signIn(srv);
    let refreshToken = tokens.refreshToken;
    let refreshes = 0;
    const refresh = refreshPalaverSession(srv.url, {
      getRefreshToken: () => refreshToken,
      setRefreshToken: (t) => {
        refreshToken = t;
        refreshes++;
      },
    });
    const chat = await sdkClient(srv.url, { auth: { token: tokens.accessToken }, refreshToken: refresh });
    await chat.session;
    await until(() => Date.now() > Date.parse(tokens.accessTokenExpiresAt) + 1000, { ms: 15_000 });
    assert.ok(refreshes >= 1, "the SDK refreshed");
    assert.equal(chat.user.id, user.id);
    assert.equal(chat.socket.connected, true, "still connected past the first token's expiry");
    const room = roomId("sdk");
    await chat.join(room);
    const sent = await chat.send(room, "still signed in");
    assert.equal(sent.from.id, user.id);
    chat.close();
  });

  it("the SDK whose token ran out while it was away refreshes and connects", async () => {
    const { user, tokens } = await signIn(srv);
    await until(() => Date.now() > Date.parse(tokens.accessTokenExpiresAt) + 500, { ms: 15_000 });
    let refreshToken = tokens.refreshToken;
    const chat = await sdkClient(srv.url, {
      auth: { token: tokens.accessToken },
      refreshToken: refreshPalaverSession(srv.url, {
        getRefreshToken: () => refreshToken,
        setRefreshToken: (t) => (refreshToken = t),
      }),
    });
    const session = await chat.session;
    assert.equal(session.user.id, user.id, "connected with the refreshed token");
    chat.close();
  });
});

/** Like connectRefused, with socket.io-client options beyond `auth`. */
function connectRefusedWith(srv, options) {
  const socket = client(srv, options);
  return new Promise((resolve, reject) => {
    socket.once("connect_error", (err) => {
      socket.close();
      resolve(err);
    });
    socket.once("connect", () => {
      socket.close();
      reject(new Error("expected the connection to be refused"));
    });
  });
}

const gate = await twoNodeGate();

describe("sessions on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/sessions", flags: sessionFlags({ "refresh-reuse-grace-secs": 0 }) });

  it("a session exchanged on node A works on node B; a code and a rotated refresh token work once across nodes", async () => {
    const { code, user } = host.issue();
    const [first, second] = await Promise.all(nodes.map((node) => post(node, "exchange", { code })));
    assert.deepEqual([first.status, second.status].sort(), [200, 401], "one node redeems the code, the other refuses it");
    const tokens = (first.status === 200 ? first : second).body;
    const { session } = await connect(nodes[1], { token: tokens.accessToken });
    assert.equal(session.user.id, user.id);
    const rotated = await post(nodes[1], "refresh", { refreshToken: tokens.refreshToken });
    assert.equal(rotated.status, 200);
    const replay = await post(nodes[0], "refresh", { refreshToken: tokens.refreshToken });
    assert.equal(replay.status, 401, "the other node sees the rotation");
    assert.equal((await post(nodes[0], "refresh", { refreshToken: rotated.body.refreshToken })).status, 401, "and the revocation");
  });
});
