// The server API for the host's backend (/api/v1): keys and scopes, posting messages that are stored, numbered
// and delivered like a user's, history, presence, disconnecting a user, custom events, the OpenAPI document; on
// both stores and across two nodes.
import assert from "node:assert/strict";
import path from "node:path";
import { describe } from "node:test";

import { io } from "socket.io-client";

import {
  STORES,
  PKG_ROOT,
  useServer,
  track,
  it,
  connect,
  identity,
  roomId,
  rand,
  ok,
  call,
  waitFor,
  collect,
  waitDisconnect,
  twoNodeGate,
  useTwoNodes,
} from "./harness.mjs";

const PUBLISHER = `pub-${rand(8)}-0123456789`;
const READER = `read-${rand(8)}-0123456789`;
const ADMIN = `admin-${rand(8)}-0123456789`;
const KEYS = [`publish+read=${PUBLISHER}`, `read=${READER}`, `manage=${ADMIN}`].join(",");

/** Calls the API: resolves with `{ status, body }` (body parsed when there is one). */
async function api(srv, method, path, { key, body } = {}) {
  const headers = { "content-type": "application/json" };
  if (key) headers.authorization = `Bearer ${key}`;
  const response = await fetch(`${srv.url}/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

/** Expects `{ error: { code } }` with this status. */
function refused(result, status, code, what = "") {
  assert.equal(result.status, status, `${what}${JSON.stringify(result.body)}`);
  assert.equal(result.body?.error?.code, code, `${what}${JSON.stringify(result.body)}`);
  assert.equal(typeof result.body.error.message, "string");
}

/** A signed-in user in a fresh room: `{ room, socket, user }`. */
async function member(srv, room = roomId("api")) {
  const user = identity("member");
  const { socket } = await connect(srv, user.auth);
  await ok(socket, "room:join", { room });
  return { room, socket, user };
}

for (const store of STORES) {
  describe(`server API [${store}]`, () => {
    const srv = useServer(store, { flags: { "api-key": KEYS } });

    it("keys and scopes: no key or an unknown one is unauthorized, a key without the scope is forbidden", async () => {
      const { room } = await member(srv);
      const post = { text: "hello" };
      refused(await api(srv, "POST", `/rooms/${room}/messages`, { body: post }), 401, "unauthorized", "no key: ");
      refused(await api(srv, "POST", `/rooms/${room}/messages`, { key: "nope-nope-nope-nope", body: post }), 401, "unauthorized");
      refused(await api(srv, "POST", `/rooms/${room}/messages`, { key: READER, body: post }), 403, "forbidden", "read key posting: ");
      refused(await api(srv, "GET", `/rooms/${room}/messages`, { key: ADMIN }), 403, "forbidden", "manage key reading: ");
      refused(await api(srv, "POST", `/users/someone/disconnect`, { key: PUBLISHER }), 403, "forbidden");
      assert.equal((await api(srv, "GET", `/rooms/${room}/messages`, { key: READER })).status, 200);
    });

    it("every endpoint: no key and an unknown key are 401, a key without its scope is 403", async () => {
      const { room, user } = await member(srv);
      const endpoints = [
        ["POST", `/rooms/${room}/messages`, "publish", { text: "x" }],
        ["POST", `/users/${encodeURIComponent(user.id)}/messages`, "publish", { from: { id: "bot", name: "Bot" }, text: "x" }],
        ["POST", "/emit", "publish", { room, event: "x" }],
        ["GET", `/rooms/${room}/messages`, "read"],
        ["GET", `/rooms/${room}/presence`, "read"],
        ["PUT", `/rooms/${room}`, "manage", {}],
        ["PUT", `/rooms/${room}/members/${encodeURIComponent(user.id)}`, "manage"],
        ["DELETE", `/rooms/${room}/members/someone-else`, "manage"],
        ["POST", `/users/nobody/disconnect`, "manage"],
      ];
      const without = { publish: ADMIN, read: ADMIN, manage: READER };
      for (const [method, path, scope, body] of endpoints) {
        const what = `${method} ${path}: `;
        refused(await api(srv, method, path, { body }), 401, "unauthorized", what);
        refused(await api(srv, method, path, { key: "unknown-key-0123456789", body }), 401, "unauthorized", what);
        refused(await api(srv, method, path, { key: without[scope], body }), 403, "forbidden", what);
        const allowed = { publish: PUBLISHER, read: READER, manage: ADMIN }[scope];
        const res = await api(srv, method, path, { key: allowed, body });
        assert.ok(res.status < 300 || res.body?.error?.code === "not_found", `${what}with its scope: ${res.status} ${JSON.stringify(res.body)}`);
      }
    });

    it("a posted message is stored, numbered and delivered live like a user's; from defaults to the system", async () => {
      const { room, socket, user } = await member(srv);
      await ok(socket, "message:send", { room, text: "first, from a user" });
      const live = waitFor(socket, "message", (m) => m.text === "from the backend");
      const posted = await api(srv, "POST", `/rooms/${room}/messages`, { key: PUBLISHER, body: { text: "from the backend" } });
      assert.equal(posted.status, 201, JSON.stringify(posted.body));
      assert.equal(posted.body.duplicate, false);
      const { message } = posted.body;
      assert.equal(message.seq, 2, "numbered after the user's message");
      assert.deepEqual(message.from, { id: "system", name: "System" });
      assert.deepEqual(await live, message, "the sockets in the room get it as a message event");
      const asBot = await api(srv, "POST", `/rooms/${room}/messages`, {
        key: PUBLISHER,
        body: { text: "order #42 shipped", from: { id: "shop-bot", name: "Shop" } },
      });
      assert.equal(asBot.status, 201);
      assert.deepEqual(asBot.body.message.from, { id: "shop-bot", name: "Shop" });
      const history = await api(srv, "GET", `/rooms/${room}/messages?limit=10`, { key: READER });
      assert.deepEqual(
        history.body.messages.map((m) => [m.seq, m.text, m.from.id]),
        [
          [1, "first, from a user", user.id],
          [2, "from the backend", "system"],
          [3, "order #42 shipped", "shop-bot"],
        ],
      );
      assert.equal(history.body.hasMore, false);
    });

    it("a retried clientId answers the original with 200 and is not delivered twice", async () => {
      const { room, socket } = await member(srv);
      const heard = collect(socket, "message");
      const body = { text: "once", clientId: `c-${rand()}` };
      const first = await api(srv, "POST", `/rooms/${room}/messages`, { key: PUBLISHER, body });
      const again = await api(srv, "POST", `/rooms/${room}/messages`, { key: PUBLISHER, body: { ...body, text: "changed" } });
      assert.equal(first.status, 201);
      assert.equal(again.status, 200);
      assert.equal(again.body.duplicate, true);
      assert.deepEqual(again.body.message, first.body.message);
      // Barrier: a later message arrives after anything the retry could have sent.
      const barrier = waitFor(socket, "message", (m) => m.text === "barrier");
      await api(srv, "POST", `/rooms/${room}/messages`, { key: PUBLISHER, body: { text: "barrier" } });
      await barrier;
      heard.stop();
      assert.deepEqual(heard.filter((m) => m.text === "once").length, 1, "delivered once");
    });

    it("a DM from a bot reaches every socket of the user, is kept in the conversation's history, and is idempotent", async () => {
      const user = identity("dm-target");
      const tabs = await Promise.all([1, 2].map(() => connect(srv, user.auth)));
      const arrived = tabs.map(({ socket }) => waitFor(socket, "message", (m) => m.text === "your order shipped"));
      const body = { from: { id: "shop-bot", name: "Shop" }, text: "your order shipped", clientId: `dm-${rand()}` };
      const sent = await api(srv, "POST", `/users/${encodeURIComponent(user.id)}/messages`, { key: PUBLISHER, body });
      assert.equal(sent.status, 201, JSON.stringify(sent.body));
      for (const message of await Promise.all(arrived)) assert.deepEqual(message, sent.body.message, "every tab gets it");
      assert.deepEqual(sent.body.message.from, { id: "shop-bot", name: "Shop" });
      const again = await api(srv, "POST", `/users/${encodeURIComponent(user.id)}/messages`, { key: PUBLISHER, body });
      assert.equal(again.status, 200);
      assert.deepEqual(again.body.message, sent.body.message);
      const history = await api(srv, "GET", `/rooms/${encodeURIComponent(sent.body.message.room)}/messages`, { key: READER });
      assert.deepEqual(history.body.messages.map((m) => m.text), ["your order shipped"]);
      // The user's next connection lists the conversation.
      const later = await connect(srv, user.auth);
      assert.ok(later.session.rooms.some((r) => r.id === sent.body.message.room), "session lists the DM");
      const dm = (to, b) => api(srv, "POST", `/users/${encodeURIComponent(to)}/messages`, { key: PUBLISHER, body: b });
      refused(await dm(user.id, { text: "no sender" }), 400, "bad_request", "from is required: ");
      refused(await dm("shop-bot", { from: { id: "shop-bot", name: "Shop" }, text: "me" }), 400, "bad_request", "to oneself: ");
      refused(await dm("anon-gone", { from: { id: "shop-bot", name: "Shop" }, text: "hi" }), 404, "not_found", "an offline guest: ");
    });

    it("bad requests are refused with the contract's codes and change nothing", async () => {
      const { room } = await member(srv);
      const post = (body, path = `/rooms/${room}/messages`) => api(srv, "POST", path, { key: PUBLISHER, body });
      refused(await post({}), 400, "bad_request", "no text: ");
      refused(await post({ text: "x", extra: 1 }), 400, "bad_request", "unknown field: ");
      refused(await post("{not json"), 400, "bad_request", "not JSON: ");
      refused(await post({ text: "" }), 400, "bad_request", "empty text: ");
      refused(await post({ text: "x", from: { id: "anon-123", name: "x" } }), 400, "bad_request", "a guest's id as sender: ");
      refused(await post({ text: "x", from: { id: "u-1", name: "a\u0000b" } }), 400, "bad_request", "control character: ");
      refused(await post({ text: "x" }, `/rooms/${roomId("missing")}/messages`), 404, "not_found", "no such room: ");
      refused(await post({ text: "x" }, `/rooms/${room}/messages?ns=/nowhere`), 404, "not_found", "no such namespace: ");
      const history = await api(srv, "GET", `/rooms/${room}/messages`, { key: READER });
      assert.deepEqual(history.body.messages, [], "nothing was stored");
      refused(await api(srv, "GET", `/rooms/${room}/messages?limit=0`, { key: READER }), 400, "bad_request");
    });

    it("PUT a room creates it (201) or sets its name and visibility (200); DM rooms and bad fields are refused", async () => {
      const room = roomId("put");
      const created = await api(srv, "PUT", `/rooms/${room}`, { key: ADMIN, body: { name: "Orders" } });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.equal(created.body.room.id, room);
      assert.equal(created.body.room.name, "Orders");
      assert.equal(created.body.room.visibility, "public");
      const { socket } = await connect(srv, identity("joiner").auth);
      await ok(socket, "room:join", { room }, "a public room the API created can be joined");
      const updated = await api(srv, "PUT", `/rooms/${room}`, { key: ADMIN, body: { name: "Orders (staff)", visibility: "private" } });
      assert.equal(updated.status, 200, JSON.stringify(updated.body));
      assert.equal(updated.body.room.name, "Orders (staff)");
      assert.equal(updated.body.room.visibility, "private");
      const outsider = await connect(srv, identity("outsider").auth);
      const denied = await call(outsider.socket, "room:join", { room });
      assert.equal(denied.error?.code, "forbidden", "a private room needs a membership");
      const put = (path, body, key = ADMIN) => api(srv, "PUT", path, { key, body });
      refused(await put(`/rooms/${roomId("p")}`, {}, PUBLISHER), 403, "forbidden", "without manage: ");
      refused(await put(`/rooms/${roomId("p")}`, { visibility: "secret" }), 400, "bad_request", "visibility: ");
      refused(await put(`/rooms/${roomId("p")}`, { name: "" }), 400, "bad_request", "empty name: ");
      refused(await put(`/rooms/${roomId("p")}`, { name: "a\u0000b" }), 400, "bad_request", "control character: ");
      refused(await put(`/rooms/dm:a:b`, {}), 403, "forbidden", "a DM's id: ");
    });

    it("PUT a member brings the user's online sockets into the room; DELETE takes them out, and the room is told", async () => {
      const room = roomId("team");
      assert.equal((await api(srv, "PUT", `/rooms/${room}`, { key: ADMIN, body: { visibility: "private" } })).status, 201);
      const watcher = identity("watcher");
      assert.equal((await api(srv, "PUT", `/rooms/${room}/members/${encodeURIComponent(watcher.id)}`, { key: ADMIN })).status, 204);
      const w = await connect(srv, watcher.auth);
      assert.ok(w.session.rooms.some((r) => r.id === room), "a member's next connection re-enters the room");
      const user = identity("added");
      const { socket } = await connect(srv, user.auth);
      const joined = waitFor(w.socket, "room:notice", (n) => n.kind === "join" && n.user.id === user.id);
      const added = await api(srv, "PUT", `/rooms/${room}/members/${encodeURIComponent(user.id)}`, {
        key: ADMIN,
        body: { name: "Added User" },
      });
      assert.equal(added.status, 204, JSON.stringify(added.body));
      await joined;
      const live = waitFor(socket, "message", (m) => m.text === "welcome");
      await api(srv, "POST", `/rooms/${room}/messages`, { key: PUBLISHER, body: { text: "welcome" } });
      await live;

      const left = waitFor(w.socket, "room:notice", (n) => n.kind === "leave" && n.user.id === user.id);
      assert.equal((await api(srv, "DELETE", `/rooms/${room}/members/${encodeURIComponent(user.id)}`, { key: ADMIN })).status, 204);
      await left;
      const heard = collect(socket, "message");
      await api(srv, "POST", `/rooms/${room}/messages`, { key: PUBLISHER, body: { text: "after removal" } });
      // Barrier on the removed socket itself: an event sent to it after the post arrives after anything the post
      // could have sent it.
      const barrier = waitFor(socket, "barrier");
      await api(srv, "POST", "/emit", { key: PUBLISHER, body: { user: user.id, event: "barrier", data: 1 } });
      await barrier;
      heard.stop();
      assert.deepEqual(heard.map((m) => m.text), [], "a removed user hears nothing more");
      const denied = await call(socket, "message:send", { room, text: "still here?" });
      assert.equal(denied.error?.code, "forbidden");

      const member = (method, r, u, key = ADMIN) => api(srv, method, `/rooms/${r}/members/${encodeURIComponent(u)}`, { key });
      refused(await member("DELETE", room, user.id), 404, "not_found", "removed twice: ");
      refused(await member("PUT", room, user.id, PUBLISHER), 403, "forbidden", "without manage: ");
      refused(await member("PUT", roomId("none"), user.id), 404, "not_found", "no such room: ");
      refused(await member("PUT", room, "anon-1"), 400, "bad_request", "a guest's id: ");
      const dm = await api(srv, "POST", `/users/${encodeURIComponent(user.id)}/messages`, {
        key: PUBLISHER,
        body: { from: { id: "bot", name: "Bot" }, text: "hi" },
      });
      refused(await member("PUT", dm.body.message.room, "intruder"), 403, "forbidden", "a DM's members: ");
    });

    it("presence lists who is online in the room", async () => {
      const { room, user } = await member(srv);
      const presence = await api(srv, "GET", `/rooms/${room}/presence`, { key: READER });
      assert.equal(presence.status, 200);
      assert.deepEqual(presence.body.users.map((u) => u.id), [user.id]);
    });

    it("disconnect closes every socket of the user and no one else's", async () => {
      const user = identity("kicked");
      const tabs = await Promise.all([1, 2].map(() => connect(srv, user.auth)));
      const other = await member(srv);
      const done = await api(srv, "POST", `/users/${encodeURIComponent(user.id)}/disconnect`, { key: ADMIN });
      assert.equal(done.status, 204);
      for (const { socket } of tabs) await waitDisconnect(socket);
      await ok(other.socket, "rooms:list", {}, "another user is still connected");
    });

    it("emit sends a custom event to a room or to a user's sockets; palaver's own event names are refused", async () => {
      const { room, socket, user } = await member(srv);
      const toRoom = waitFor(socket, "order:update", (d) => d.order === 42);
      assert.equal((await api(srv, "POST", "/emit", { key: PUBLISHER, body: { room, event: "order:update", data: { order: 42 } } })).status, 202);
      await toRoom;
      const toUser = waitFor(socket, "notify", (d) => d === "just you");
      assert.equal((await api(srv, "POST", "/emit", { key: PUBLISHER, body: { user: user.id, event: "notify", data: "just you" } })).status, 202);
      await toUser;
      const emit = (body) => api(srv, "POST", "/emit", { key: PUBLISHER, body });
      refused(await emit({ room, event: "message", data: { text: "spoof" } }), 400, "bad_request", "reserved: ");
      refused(await emit({ room, user: user.id, event: "x" }), 400, "bad_request", "both targets: ");
      refused(await emit({ event: "x" }), 400, "bad_request", "no target: ");
      refused(await emit({ room, event: "" }), 400, "bad_request", "empty event: ");
    });

    it("the OpenAPI document is served without a key", async () => {
      const doc = await api(srv, "GET", "/openapi.json");
      assert.equal(doc.status, 200);
      assert.equal(doc.body.openapi.startsWith("3."), true);
      for (const path of ["/api/v1/auth/exchange", "/api/v1/auth/refresh", "/api/v1/auth/logout", "/api/v1/rooms/{room}", "/api/v1/rooms/{room}/members/{user}", "/api/v1/rooms/{room}/messages", "/api/v1/users/{user}/messages", "/api/v1/rooms/{room}/presence", "/api/v1/users/{user}/disconnect", "/api/v1/emit"]) {
        assert.ok(doc.body.paths[path], `documents ${path}`);
      }
    });
  });
}

describe("server API in a profile namespace (the Socket.IO tutorial's)", () => {
  const srv = useServer(STORES[0] ?? "sqlite", {
    flags: { "api-key": KEYS, profile: path.resolve(PKG_ROOT, "../profiles/socketio-tutorial.toml") },
  });

  it("a posted message reaches the app's clients as the app's event, in the app's shape", async () => {
    const socket = track(io(srv.url, { auth: { serverOffset: 0 }, forceNew: true, reconnection: false }));
    await new Promise((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("connect_error", reject);
    });
    const heard = new Promise((resolve) => socket.on("chat message", (text, seq) => text === "from the backend" && resolve([text, seq])));
    const posted = await api(srv, "POST", "/rooms/chat/messages", { key: PUBLISHER, body: { text: "from the backend" } });
    assert.equal(posted.status, 201, JSON.stringify(posted.body));
    assert.deepEqual(await heard, ["from the backend", posted.body.message.seq]);
  });
});

const gate = await twoNodeGate();

describe("server API on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/api", flags: { "api-key": KEYS } });

  it("a message posted on node A reaches a socket on node B; a disconnect on A closes B's socket", async () => {
    const { room, socket, user } = await member(nodes[1]);
    const live = waitFor(socket, "message", (m) => m.text === "across nodes");
    const posted = await api(nodes[0], "POST", `/rooms/${room}/messages`, { key: PUBLISHER, body: { text: "across nodes" } });
    assert.equal(posted.status, 201);
    assert.deepEqual(await live, posted.body.message);
    const presence = await api(nodes[0], "GET", `/rooms/${room}/presence`, { key: READER });
    assert.deepEqual(presence.body.users.map((u) => u.id), [user.id], "presence spans the nodes");
    // A member added on node A: their socket on node B hears the room; removed on A, it no longer does.
    const team = roomId("team");
    await api(nodes[0], "PUT", `/rooms/${team}`, { key: ADMIN, body: {} });
    assert.equal((await api(nodes[0], "PUT", `/rooms/${team}/members/${encodeURIComponent(user.id)}`, { key: ADMIN })).status, 204);
    const heard = waitFor(socket, "message", (m) => m.text === "to the team");
    await api(nodes[0], "POST", `/rooms/${team}/messages`, { key: PUBLISHER, body: { text: "to the team" } });
    await heard;
    assert.equal((await api(nodes[0], "DELETE", `/rooms/${team}/members/${encodeURIComponent(user.id)}`, { key: ADMIN })).status, 204);
    const after = collect(socket, "message");
    await api(nodes[0], "POST", `/rooms/${team}/messages`, { key: PUBLISHER, body: { text: "after removal" } });
    const barrier = waitFor(socket, "barrier");
    await api(nodes[0], "POST", "/emit", { key: PUBLISHER, body: { user: user.id, event: "barrier", data: 1 } });
    await barrier;
    after.stop();
    assert.deepEqual(after.filter((m) => m.room === team).map((m) => m.text), [], "removed on every node");
    const done = await api(nodes[0], "POST", `/users/${encodeURIComponent(user.id)}/disconnect`, { key: ADMIN });
    assert.equal(done.status, 204);
    await waitDisconnect(socket);
  });
});
