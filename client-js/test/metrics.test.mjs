// /metrics (docs/operations.md): the series move by what real clients do, the token guards them on the chat's port
// and on --metrics-listen, and a node of a cluster reports Redis up.
import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  STORES,
  FAST,
  useServer,
  spawnServer,
  stopServer,
  createDatabase,
  twoNodeGate,
  useTwoNodes,
  it,
  client,
  connect,
  connectRefused,
  parseUnauthorized,
  identity,
  roomId,
  rand,
  ok,
  fails,
  call,
  until,
} from "./harness.mjs";

const TOKEN = `scrape-${rand(12)}`;

/** `GET url` with the bearer `token` (none when undefined): `{ status, type, text }`. */
async function get(url, token) {
  const headers = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const response = await fetch(url, { headers });
  return { status: response.status, type: response.headers.get("content-type"), text: await response.text() };
}

/** The samples of a Prometheus text exposition: `[{ name, labels, value }]`. */
function parse(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${JSON.stringify(line)}`);
    const labels = {};
    for (const [, k, v] of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

/** A scrape with the test token: `{ samples, text, value(name, labels), has(name, labels) }`. */
async function scrape(url, token = TOKEN) {
  const r = await get(`${url}/metrics`, token);
  assert.equal(r.status, 200, `GET /metrics: ${r.status} ${r.text.slice(0, 300)}`);
  assert.match(r.type ?? "", /^text\/plain/, "Prometheus text format");
  const samples = parse(r.text);
  const matching = (name, labels) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return {
    samples,
    text: r.text,
    has: (name, labels = {}) => matching(name, labels).length > 0,
    /** The sum of the matching samples; 0 when none (a series appears at its first use). */
    value: (name, labels = {}) => matching(name, labels).reduce((sum, s) => sum + s.value, 0),
  };
}

/** How much each `[name, labels]` moved between two scrapes. */
function moved(before, after, name, labels = {}) {
  return after.value(name, labels) - before.value(name, labels);
}

/** A guest connected over long-polling only, once its `session` has come. */
async function pollingGuest(srv) {
  const socket = client(srv, { auth: { name: "poller" }, transports: ["polling"] });
  await new Promise((resolve, reject) => {
    socket.once("session", resolve);
    socket.once("connect_error", reject);
  });
  return socket;
}

/** The address the server logged for --metrics-listen. */
function metricsAddr(server) {
  const line = server.log.find((l) => /metrics_addr=/.test(l));
  assert.ok(line, `no metrics_addr in the log:\n${server.logTail(40)}`);
  return /metrics_addr=([\d.]+:\d+)/.exec(line)[1];
}

for (const store of STORES) {
  describe(`metrics [${store}]`, () => {
    const srv = useServer(store, { flags: { ...FAST, "metrics-token": TOKEN } });

    it("events count by outcome; messages, deliveries, commits and sockets move by what clients do", async () => {
      const before = await scrape(srv.url);
      for (const name of ["palaver_connected_sockets", "palaver_events_total", "palaver_messages_stored_total"]) {
        assert.ok(before.text.includes(`# TYPE ${name}`), `${name} is described:\n${before.text.slice(0, 2000)}`);
      }
      const room = roomId("metrics");
      const ada = await connect(srv, identity("ada").auth);
      const bob = await connect(srv, { name: "bob" });
      const poller = await pollingGuest(srv);
      const sockets = (s) => ({
        websocket: s.value("palaver_connected_sockets", { namespace: "/", transport: "websocket" }),
        polling: s.value("palaver_connected_sockets", { namespace: "/", transport: "polling" }),
      });
      const connected = await scrape(srv.url);
      assert.deepEqual(sockets(connected), { websocket: sockets(before).websocket + 2, polling: sockets(before).polling + 1 });

      await ok(ada.socket, "room:join", { room });
      await ok(bob.socket, "room:join", { room });
      for (let i = 0; i < 3; i++) await ok(ada.socket, "message:send", { room, text: `hello ${i}`, clientId: rand(8) });
      // A retry of a stored message is acked again, but neither stored nor delivered twice.
      const clientId = rand(8);
      await ok(bob.socket, "message:send", { room, text: "once", clientId });
      await ok(bob.socket, "message:send", { room, text: "once", clientId });
      await fails(bob.socket, "message:send", { room, text: "" }, "bad_request");
      await fails(bob.socket, "message:send", { room: "not-joined-" + rand(), text: "hi" }, "forbidden");
      const unknown = await call(bob.socket, "no:such-event", {});
      assert.equal(unknown?.error?.code, "bad_request");
      const refusal = await connectRefused(srv, { token: "not-a-jwt" });
      const reason = parseUnauthorized(refusal.message)?.code;
      assert.ok(reason, `refusal names its reason: ${refusal.message}`);

      const after = await scrape(srv.url);
      const events = (event, outcome) => moved(before, after, "palaver_events_total", { event, outcome });
      assert.equal(events("room:join", "ok"), 2);
      assert.equal(events("message:send", "ok"), 5);
      assert.equal(events("message:send", "bad_request"), 1);
      assert.equal(events("message:send", "forbidden"), 1);
      assert.equal(events("unknown", "bad_request"), 1);
      const send = { event: "message:send" };
      assert.equal(moved(before, after, "palaver_ack_duration_seconds_count", send), 7);
      assert.equal(moved(before, after, "palaver_event_duration_seconds_count", send), 7);
      assert.ok(after.value("palaver_ack_duration_seconds_sum", send) > 0);
      const le = after.samples.find((s) => s.name === "palaver_ack_duration_seconds_bucket" && s.labels.le === "+Inf" && s.labels.event === "message:send");
      assert.equal(le?.value, after.value("palaver_ack_duration_seconds_count", send), "the +Inf bucket holds every ack");
      assert.equal(moved(before, after, "palaver_messages_stored_total"), 4, "3 + 1 stored, the retry not again");
      assert.equal(moved(before, after, "palaver_deliveries_total"), 4);
      // The retry goes through the batch writer too (which finds its original): 5 appends.
      const batches = moved(before, after, "palaver_commit_batch_size_count");
      assert.ok(batches >= 1 && batches <= 5, `5 appends in 1 to 5 commits, got ${batches}`);
      assert.equal(moved(before, after, "palaver_commit_batch_size_sum"), 5, "the batches hold the 5 appends");
      assert.equal(moved(before, after, "palaver_commit_duration_seconds_count"), batches);
      assert.equal(moved(before, after, "palaver_connects_total", { namespace: "/", outcome: "ok" }), 3);
      assert.equal(moved(before, after, "palaver_connects_total", { namespace: "/", outcome: reason }), 1);

      // The pools and the process.
      const pools = store === "sqlite" ? ["writer", "reader"] : ["shared"];
      for (const pool of pools) {
        assert.ok(after.has("palaver_db_pool_connections", { pool, state: "in_use" }), `${pool} pool in use`);
        assert.ok(after.has("palaver_db_pool_connections", { pool, state: "idle" }), `${pool} pool idle`);
        assert.ok(after.value("palaver_db_pool_max_connections", { pool }) >= 1, `${pool} pool max`);
      }
      assert.ok(after.value("process_resident_memory_bytes") > 1_000_000, "resident memory");
      assert.ok(after.has("process_cpu_seconds_total"), "CPU time");
      assert.ok(!after.has("palaver_redis_up"), "no Redis gauge on a single node");

      // Sockets go down as they disconnect.
      ada.socket.close();
      bob.socket.close();
      poller.close();
      let last = after;
      await until(
        async () => {
          last = await scrape(srv.url);
          const now = sockets(last);
          return now.websocket === sockets(before).websocket && now.polling === sockets(before).polling;
        },
        { what: () => JSON.stringify(sockets(last)) },
      );
    });

    it("the chat's port serves /metrics only with the token", async () => {
      for (const token of [undefined, "", `${TOKEN}x`, TOKEN.slice(1)]) {
        const r = await get(`${srv.url}/metrics`, token);
        assert.equal(r.status, 401, `token ${JSON.stringify(token)}: ${r.status} ${r.text}`);
        assert.ok(!r.text.includes("palaver_"), "nothing leaks with a 401");
      }
      const r = await get(`${srv.url}/metrics`, TOKEN);
      assert.equal(r.status, 200);
    });
  });
}

describe("metrics: where /metrics is served", () => {
  const store = STORES[0];

  it("--metrics-listen serves it on its own address, behind the token, and the chat's port no more", async () => {
    const db = await createDatabase(store);
    const server = await spawnServer({
      databaseUrl: db.url,
      flags: { "metrics-listen": "127.0.0.1:0", "metrics-token": TOKEN },
      label: "palaver/metrics-listen",
    });
    try {
      const url = `http://${metricsAddr(server)}`;
      assert.notEqual(url, server.url);
      assert.equal((await get(`${server.url}/metrics`, TOKEN)).status, 404, "not on the chat's port");
      assert.equal((await get(`${url}/metrics`)).status, 401, "no token");
      assert.equal((await get(`${url}/metrics`, "wrong-token-0123456789")).status, 401, "a bad token");
      const { socket } = await connect(server, { name: "ada" });
      const s = await scrape(url);
      assert.equal(s.value("palaver_connected_sockets", { namespace: "/", transport: "websocket" }), 1);
      assert.equal((await get(`${url}/socket.io/?EIO=4&transport=polling`)).status, 404, "only /metrics there");
      socket.close();
    } finally {
      await stopServer(server);
      await db.drop();
    }
  });

  it("without a token, --metrics-listen is open, and the chat's port says where to look", async () => {
    const db = await createDatabase(store);
    const open = await spawnServer({ databaseUrl: db.url, flags: { "metrics-listen": "127.0.0.1:0" }, label: "palaver/open" });
    try {
      const s = await scrape(`http://${metricsAddr(open)}`, undefined);
      assert.ok(s.has("palaver_events_total", { event: "message:send", outcome: "ok" }));
      const main = await get(`${open.url}/metrics`);
      assert.equal(main.status, 404);
      assert.match(main.text, /--metrics-listen/);
    } finally {
      await stopServer(open);
    }
    const plain = await spawnServer({ databaseUrl: db.url, label: "palaver/no-metrics-token" });
    try {
      const r = await get(`${plain.url}/metrics`);
      assert.equal(r.status, 404, "the public port serves no metrics without a token");
      assert.match(r.text, /--metrics-token/);
    } finally {
      await stopServer(plain);
      await db.drop();
    }
  });

  it("a bad --metrics-token or --metrics false with a metrics flag stops start-up, naming the flag", async () => {
    const db = await createDatabase(store);
    try {
      for (const flags of [{ "metrics-token": "short" }, { metrics: false, "metrics-listen": "127.0.0.1:0" }]) {
        await assert.rejects(
          spawnServer({ databaseUrl: db.url, flags, label: "palaver/bad-metrics-flags" }),
          (err) => /--metrics-(token|listen)/.test(err.message),
        );
      }
    } finally {
      await db.drop();
    }
  });
});

const gate = await twoNodeGate();
describe("metrics: a node of a cluster", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/metrics-node", flags: { ...FAST, "metrics-token": TOKEN } });

  it("reports Redis up, and a message sent on one node delivered once through the cluster", async () => {
    const [a, b] = nodes;
    const before = await scrape(a.url);
    assert.equal(before.value("palaver_redis_up"), 1, "Redis up");
    assert.ok(before.has("palaver_redis_reconnects_total"), "reconnects are counted");
    assert.ok(before.has("palaver_cluster_fallbacks_total"), "fallbacks are counted");
    const room = roomId("cluster-metrics");
    const ada = await connect(a, { name: "ada" });
    const bob = await connect(b, { name: "bob" });
    await ok(ada.socket, "room:join", { room });
    await ok(bob.socket, "room:join", { room });
    const got = new Promise((resolve) => bob.socket.once("message", resolve));
    await ok(ada.socket, "message:send", { room, text: "across", clientId: rand(8) });
    await got;
    const after = await scrape(a.url);
    assert.equal(moved(before, after, "palaver_deliveries_total"), 1);
    assert.equal(moved(before, after, "palaver_cluster_fallbacks_total"), 0, "no fallback while Redis is up");
    assert.equal((await scrape(b.url)).value("palaver_redis_up"), 1);
  });
});
