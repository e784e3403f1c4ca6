// Burst: 300 clients connect at once and send right away (on `connect`, before `session`).
// The server must have its handlers in place before a client can send its first event.
import assert from "node:assert/strict";
import { describe } from "node:test";
import { STORES, useServer, it, client, connect, roomId, ok } from "./harness.mjs";

const CLIENTS = 300;
const ACK_MS = 20_000;

for (const store of STORES) {
  describe(`burst of ${CLIENTS} clients [${store}]`, () => {
    const srv = useServer(store);

    it(`${CLIENTS} clients each join and send on connect; every ack is ok and seqs are 1..${CLIENTS}`, { timeout: 90_000 }, async () => {
      const room = roomId("burst");
      const sockets = [];
      const runs = [];
      for (let i = 0; i < CLIENTS; i++) {
        const socket = client(srv, { auth: { name: `b${i}` } });
        sockets.push(socket);
        runs.push(
          new Promise((resolve) => {
            socket.once("connect_error", (err) => resolve({ i, stage: "connect", error: err.message }));
            socket.once("connect", async () => {
              try {
                const join = await socket.timeout(ACK_MS).emitWithAck("room:join", { room, limit: 1 });
                if (!join?.ok) return resolve({ i, stage: "room:join", error: JSON.stringify(join) });
                const send = await socket.timeout(ACK_MS).emitWithAck("message:send", { room, text: `hello from ${i}` });
                if (!send?.ok) return resolve({ i, stage: "message:send", error: JSON.stringify(send) });
                resolve({ i, message: send.message });
              } catch (err) {
                resolve({ i, stage: "ack", error: err.message });
              }
            });
          }),
        );
      }
      const results = await Promise.all(runs);
      const failures = results.filter((r) => r.error);
      assert.deepEqual(
        failures.slice(0, 10),
        [],
        `${failures.length} of ${CLIENTS} clients failed (first 10 shown)`,
      );
      const seqs = results.map((r) => r.message.seq).sort((a, b) => a - b);
      assert.deepEqual(
        seqs,
        Array.from({ length: CLIENTS }, (_, i) => i + 1),
        "seqs are gap-free and unique",
      );
      assert.equal(new Set(results.map((r) => r.message.id)).size, CLIENTS, "message ids are unique");

      // all of them are online in the room, and the room's history has them all
      const watcher = await connect(srv, { name: "watcher" }, { ms: 10_000 });
      const j = await ok(watcher.socket, "room:join", { room, limit: 100 });
      assert.equal(j.history.length, 100);
      assert.equal(j.history.at(-1).seq, CLIENTS);
      assert.equal(j.hasMore, true);
      const p = await ok(watcher.socket, "presence:list", { room });
      assert.equal(p.users.length, CLIENTS + 1, "every burst client and the watcher are online");
    });
  });
}
