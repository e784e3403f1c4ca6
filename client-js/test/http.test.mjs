// HTTP routes: /healthz, /readyz, and the history route.
import assert from "node:assert/strict";
import { describe } from "node:test";
import { STORES, FAST, useServer, it, connect, identity, roomId, ok, sendMany, token } from "./harness.mjs";

async function get(srv, path, tok) {
  const res = await fetch(`${srv.url}${path}`, { headers: tok ? { authorization: `Bearer ${tok}` } : {} });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

function assertHttpError(r, status, code) {
  assert.equal(r.status, status, JSON.stringify(r));
  assert.equal(r.body?.error?.code, code, JSON.stringify(r));
  assert.ok(typeof r.body.error.message === "string" && r.body.error.message.length > 0);
}

for (const store of STORES) {
  describe(`http [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    it("GET /healthz and /readyz", async () => {
      assert.deepEqual(await get(srv, "/healthz"), { status: 200, body: { status: "ok" } });
      assert.deepEqual(await get(srv, "/readyz"), {
        status: 200,
        body: { status: "ready", checks: { database: "ok" } },
      });
    });

    it("GET /api/rooms/{room}/messages pages like history:fetch", async () => {
      const alice = identity("alice");
      const room = roomId("http");
      const a = await connect(srv, alice.auth);
      await ok(a.socket, "room:join", { room });
      await sendMany(a.socket, room, 12);
      const viaWs = await ok(a.socket, "history:fetch", { room, before: 10, limit: 5 });
      const r = await get(srv, `/api/rooms/${room}/messages?before=10&limit=5`, alice.token);
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.deepEqual(r.body, { messages: viaWs.messages, hasMore: viaWs.hasMore });
      assert.deepEqual(
        r.body.messages.map((m) => m.seq),
        [5, 6, 7, 8, 9],
      );
      const latest = await get(srv, `/api/rooms/${room}/messages`, alice.token);
      assert.deepEqual(
        latest.body.messages.map((m) => m.seq),
        Array.from({ length: 12 }, (_, i) => i + 1),
      );
      assert.equal(latest.body.hasMore, false);
      const after = await get(srv, `/api/rooms/${room}/messages?after=10`, alice.token);
      assert.deepEqual(
        after.body.messages.map((m) => m.seq),
        [11, 12],
      );
    });

    it("history route errors: 401 without or with a bad token, 403, 404, 400", async () => {
      const alice = identity("alice");
      const carol = identity("carol");
      const priv = roomId("httppriv");
      const a = await connect(srv, alice.auth);
      await ok(a.socket, "room:create", { name: priv, visibility: "private" });
      assertHttpError(await get(srv, `/api/rooms/${priv}/messages`), 401, "unauthorized");
      assertHttpError(
        await get(srv, `/api/rooms/${priv}/messages`, token(alice.id, {}, { secret: "wrong" })),
        401,
        "unauthorized",
      );
      await connect(srv, carol.auth);
      assertHttpError(await get(srv, `/api/rooms/${priv}/messages`, carol.token), 403, "forbidden");
      assertHttpError(await get(srv, `/api/rooms/${roomId("none")}/messages`, alice.token), 404, "not_found");
      assertHttpError(await get(srv, `/api/rooms/${priv}/messages?limit=0`, alice.token), 400, "bad_request");
      assertHttpError(await get(srv, `/api/rooms/${priv}/messages?limit=abc`, alice.token), 400, "bad_request");
    });
  });
}
