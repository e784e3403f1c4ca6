// The deployment of docker-compose.yml, run for real without Docker: Debian's nginx with deploy/nginx.conf in front
// of two palaver nodes started with the compose file's environment, linked through Redis, storing in Postgres.
//
// - The stock socket.io-client through nginx over WebSocket, over long-polling and over polling upgraded to
//   WebSocket: two users on different nodes chat, and every request of a polling session reaches one node.
// - A rolling restart under steady load: stock clients and SDK clients keep sending with clientIds (resending what
//   is unacked after reconnecting) while node A gets SIGTERM, drains, comes back on its port and is ready, then
//   node B. Each stop comes while the database is slow (a lock holds every insert) and every client of the node has
//   a send waiting, so the node drains with writes pending, its clients come back on the other node meanwhile, and
//   their resends race the pending originals. Every acked message is in history exactly once, every client
//   reconnected, every SDK client's stream of each room is the room's history, and each drain took less than the
//   grace period.
//
// nginx runs as a child process on a configuration generated from deploy/nginx.conf by replacing only its upstream
// server addresses and its listen port; its logs and temp files live in a temp dir. Clients connect from distinct
// loopback addresses (127.0.0.x) so that nginx's address hash spreads them over both nodes; which node a socket is on
// is read from the nodes' own `connected socket=…` log lines and checked against nginx's access log.
//
// Needs Postgres, Redis (PALAVER_TEST_REDIS) and nginx (PALAVER_TEST_NGINX, else nginx on the usual paths or the
// PATH); skipped without them, except under CI, where it fails.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { describe, before, after } from "node:test";

import { io } from "socket.io-client";
import pg from "pg";

import {
  PKG_ROOT,
  JWT_SECRET,
  REDIS_URL,
  ACK_TIMEOUT_MS,
  it,
  identity,
  rand,
  roomId,
  ok,
  waitFor,
  short,
  sleep,
  until,
  track,
  fullHistory,
  assertGapFree,
  assertSameMessage,
  createDatabase,
  spawnServer,
  stopServer,
  sdkClient,
  recordStream,
  twoNodeGate,
} from "./harness.mjs";

const REPO = path.resolve(PKG_ROOT, "..");
const SHIPPED_CONF = path.join(REPO, "deploy", "nginx.conf");
const COMPOSE_FILE = path.join(REPO, "docker-compose.yml");
const KEEP = process.env.PALAVER_TEST_KEEP === "1";
const IN_CI = !["", "0", "false"].includes((process.env.CI ?? "").trim().toLowerCase());

/** Loopback source addresses the clients may connect from (each one a "device" nginx hashes to a node). */
const CANDIDATE_ADDRESSES = Array.from({ length: 60 }, (_, i) => `127.0.0.${i + 2}`);

/** Rolling restart: rooms every client is a member of, and the pause between one client's sends. */
const ROOMS = 3;
const SEND_PAUSE_MS = 250;

// ---------------------------------------------------------------------------------------------
// the shipped files

function findNginx() {
  if (process.env.PALAVER_TEST_NGINX) return process.env.PALAVER_TEST_NGINX;
  const dirs = ["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin", ...(process.env.PATH ?? "").split(":")];
  return dirs.map((d) => path.join(d, "nginx")).find((p) => existsSync(p)) ?? null;
}

/**
 * The palaver service of docker-compose.yml (the `palaver-1: &palaver` entry both nodes share): its `environment`
 * and its `stop_grace_period` in seconds. A deliberately small reader of that one block.
 */
function composeNode() {
  const lines = readFileSync(COMPOSE_FILE, "utf8").split("\n");
  const start = lines.findIndex((l) => /^ {2}palaver-1: &palaver\s*$/.test(l));
  assert.ok(start >= 0, "docker-compose.yml has no `palaver-1: &palaver` service");
  const env = {};
  let stopGraceSecs;
  let inEnv = false;
  for (const line of lines.slice(start + 1)) {
    if (/^ {0,2}\S/.test(line)) break; // the next service
    if (/^ {4}environment:\s*$/.test(line)) {
      inEnv = true;
      continue;
    }
    if (/^ {4}\S/.test(line)) inEnv = false;
    const entry = /^ {6}([A-Z][A-Z0-9_]*): *(.*?)\s*$/.exec(line);
    if (inEnv && entry) env[entry[1]] = entry[2].replace(/^"(.*)"$/, "$1");
    const grace = /^ {4}stop_grace_period: *(\d+)s\s*$/.exec(line);
    if (grace) stopGraceSecs = Number(grace[1]);
  }
  return { env, stopGraceSecs };
}

/**
 * deploy/nginx.conf with its upstream servers (`palaver-1:3000`, `palaver-2:3000`) replaced by `upstreams` and its
 * `listen 80` by `listen 127.0.0.1:<port>`; nothing else changes.
 */
function siteConfig(shipped, upstreams, port) {
  let servers = 0;
  let listens = 0;
  const site = shipped
    .replace(/^(\s*server\s+)palaver-(\d+):3000\b/gm, (_, lead, n) => {
      servers++;
      const upstream = upstreams[Number(n) - 1];
      assert.ok(upstream, `deploy/nginx.conf names palaver-${n}; the test runs ${upstreams.length} nodes`);
      return `${lead}${upstream}`;
    })
    .replace(/^(\s*listen\s+)80;/gm, (_, lead) => {
      listens++;
      return `${lead}127.0.0.1:${port};`;
    });
  assert.equal(servers, upstreams.length, "deploy/nginx.conf should have one `server palaver-N:3000` line per node");
  assert.equal(listens, 1, "deploy/nginx.conf should have one `listen 80;`");
  return site;
}

/** The main configuration around the site: every path in `dir`, a JSON access log naming the upstream of each request. */
function mainConfig(dir) {
  const asRoot =
    process.getuid?.() === 0
      ? // nginx started by root switches its workers to `nobody`, who may not enter this 0700 temp dir (the
        // temp paths and logs below); the test's nginx keeps root instead. Deployments keep their own `user`.
        "user root;\n"
      : "";
  return `# Generated by client-js/test/deploy-nginx.test.mjs around deploy/nginx.conf (site.conf).
${asRoot}worker_processes 1;
error_log ${dir}/error.log warn;
events {
    worker_connections 1024;
}
http {
    log_format upstreams escape=json '{"t":"$msec","remote":"$remote_addr","upstream":"$upstream_addr","status":"$status",'
                                     '"upstreamStatus":"$upstream_status","method":"$request_method","uri":"$request_uri"}';
    access_log ${dir}/access.log upstreams;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;
    include ${dir}/site.conf;
}
`;
}

async function freePort() {
  const server = net.createServer();
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function accepts(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

/**
 * nginx in the foreground on the shipped site, in front of `upstreams` (`host:port` each):
 * `{ url, upstreams, access() → entries, errors() → text, stop() }`.
 */
async function startNginx(bin, upstreams) {
  const dir = await mkdtemp(path.join(os.tmpdir(), "palaver-nginx-"));
  const shipped = readFileSync(SHIPPED_CONF, "utf8");
  await writeFile(path.join(dir, "nginx.conf"), mainConfig(dir));
  for (let attempt = 1; ; attempt++) {
    // The port was free a moment ago; another process may take it first, then nginx exits and we pick again.
    const port = await freePort();
    await writeFile(path.join(dir, "site.conf"), siteConfig(shipped, upstreams, port));
    const args = ["-p", dir, "-e", `${dir}/error.log`, "-c", `${dir}/nginx.conf`, "-g", `daemon off; pid ${dir}/nginx.pid;`];
    const child = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.setEncoding("utf8").on("data", (d) => (output += d));
    child.stderr.setEncoding("utf8").on("data", (d) => (output += d));
    const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    let exit = null;
    void exited.then((e) => (exit = e));
    const errors = () => {
      try {
        return readFileSync(path.join(dir, "error.log"), "utf8");
      } catch {
        return "";
      }
    };
    await until(async () => exit !== null || (await accepts(port)), {
      ms: 15_000,
      what: () => `nginx did not listen on ${port}: ${output}${errors()}`,
    });
    if (exit !== null) {
      if (/in use/i.test(output + errors()) && attempt < 3) continue;
      throw new Error(`nginx exited (${JSON.stringify(exit)}): ${output}${errors()}`);
    }
    return {
      url: `http://127.0.0.1:${port}`,
      dir,
      upstreams,
      access() {
        let text = "";
        try {
          text = readFileSync(path.join(dir, "access.log"), "utf8");
        } catch {
          return [];
        }
        return text
          .split("\n")
          .filter(Boolean)
          .map((line) => JSON.parse(line));
      },
      errors,
      async stop() {
        if (exit === null) {
          child.kill("SIGTERM");
          const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
          await exited;
          clearTimeout(timer);
        }
        if (!KEEP) await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// clients from distinct addresses

const agents = [];

/** socket.io-client options to connect from `address`: WebSocket reads `localAddress`, long-polling its agent. */
function from(address) {
  const agent = new http.Agent({ localAddress: address, keepAlive: true });
  agents.push(agent);
  return { localAddress: address, agent };
}

function get(url, localAddress) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { localAddress, agent: false }, (res) => {
        res.resume();
        res.once("end", () => resolve(res.statusCode));
      })
      .once("error", reject);
  });
}

/** Which upstream nginx sends each candidate address to, from one probe request each: Map address → upstream. */
async function placements(nginx) {
  const probe = `/healthz?probe=${rand()}`;
  for (const address of CANDIDATE_ADDRESSES) {
    assert.equal(await get(`${nginx.url}${probe}`, address), 200, `GET ${probe} from ${address} through nginx`);
  }
  let seen = [];
  await until(
    () => {
      seen = nginx.access().filter((e) => e.uri === probe);
      return seen.length === CANDIDATE_ADDRESSES.length;
    },
    { what: () => `${seen.length} of ${CANDIDATE_ADDRESSES.length} probes in nginx's access log` },
  );
  return new Map(seen.map((e) => [e.remote, e.upstream]));
}

/** A stock socket.io-client of `user` through nginx, from `address`, counting its sessions. */
function stockClient(url, user, address, transports, label) {
  const options = { auth: user.auth, forceNew: true, ...from(address) };
  if (transports) options.transports = transports;
  const socket = track(io(url, options));
  const c = { kind: "stock", label, user, address, transports, socket, sessions: 0, ready: false, sending: false };
  Object.assign(c, { acked: [], resends: 0, refusals: [] });
  socket.on("session", () => {
    c.sessions++;
    c.ready = true;
  });
  socket.on("disconnect", () => {
    c.ready = false;
  });
  c.socketId = () => socket.id;
  c.connected = () => c.ready && socket.connected;
  return c;
}

/** Resolves once `c` (a stock client) has a session, rejects after `ms`. */
function whenReady(c, ms) {
  if (c.connected()) return Promise.resolve();
  return waitFor(c.socket, "session", () => true, ms).then(() => {});
}

/** Sends until acked: after a dropped connection or a missing ack, the same clientId goes again. */
async function stockSend(c, payload) {
  for (;;) {
    await whenReady(c, 60_000);
    let ack;
    try {
      ack = await c.socket.timeout(ACK_TIMEOUT_MS).emitWithAck("message:send", payload);
    } catch {
      c.resends++;
      continue;
    }
    if (ack?.ok) return ack.message;
    if (["unavailable", "rate_limited"].includes(ack?.error?.code)) {
      c.refusals.push(ack.error.code);
      c.resends++;
      continue;
    }
    throw new Error(`${c.label}: message:send ${short(payload)} refused: ${short(ack)}`);
  }
}

// ---------------------------------------------------------------------------------------------

const gate = await twoNodeGate();
const NGINX = findNginx();
const skip =
  gate.skip ||
  (!NGINX && !IN_CI ? "needs nginx (Debian's `nginx` package, or PALAVER_TEST_NGINX; under CI this fails instead)" : false);

describe("deployment: nginx (deploy/nginx.conf) in front of two nodes, Redis and Postgres", { skip }, () => {
  const compose = composeNode();
  const grace = Number(compose.env.PALAVER_SHUTDOWN_GRACE);
  let db;
  let env;
  /** The running node of each upstream: `nodes.a`, `nodes.b` (replaced when restarted); `all` keeps every process. */
  const nodes = { all: [] };
  let nginx;
  /** Candidate addresses nginx sends to node a and to node b. */
  const addressesOn = { a: [], b: [] };

  before(async () => {
    gate.requireRedis();
    assert.ok(NGINX, "nginx is not installed (Debian's `nginx` package; PALAVER_TEST_NGINX names another binary)");
    for (const key of ["DATABASE_URL", "REDIS_URL", "JWT_SECRET", "PALAVER_SHUTDOWN_GRACE"]) {
      assert.ok(key in compose.env, `docker-compose.yml's palaver environment has no ${key}`);
    }
    assert.ok(grace > 0, `PALAVER_SHUTDOWN_GRACE in docker-compose.yml: ${compose.env.PALAVER_SHUTDOWN_GRACE}`);
    assert.ok(
      compose.stopGraceSecs > grace,
      `docker-compose.yml's stop_grace_period (${compose.stopGraceSecs} s) must exceed PALAVER_SHUTDOWN_GRACE (${grace} s)`,
    );
    db = await createDatabase("postgres");
    // The compose file's environment; what points into the compose network, and the tokens' key, are the test's.
    env = {
      ...compose.env,
      DATABASE_URL: db.url,
      REDIS_URL,
      JWT_SECRET,
      PALAVER_REDIS_PREFIX: `palaver-test-${process.pid}-${rand()}`,
    };
    for (const key of ["a", "b"]) {
      nodes[key] = await spawnServer({ databaseUrl: db.url, jwtSecret: null, env, label: `palaver/node-${key}` });
      nodes.all.push(nodes[key]);
    }
    nginx = await startNginx(NGINX, [nodes.a.addr, nodes.b.addr]);
    for (const [address, upstream] of await placements(nginx)) {
      if (upstream === nodes.a.addr) addressesOn.a.push(address);
      else if (upstream === nodes.b.addr) addressesOn.b.push(address);
      else assert.fail(`nginx sent ${address} to ${upstream}, neither node`);
    }
    // Per node: one address for each chat test, then one for each of the rolling restart's clients on it.
    assert.ok(addressesOn.a.length >= 11 && addressesOn.b.length >= 11, `addresses per node: ${short(addressesOn)}`);
  });

  after(async () => {
    if (nginx) await nginx.stop();
    for (const node of nodes.all) await stopServer(node);
    for (const agent of agents) agent.destroy();
    if (db) await db.drop();
  });

  /** "a" or "b": the node whose log says socket `id` connected (a restarted node keeps its letter). */
  function nodeOf(id) {
    if (!id) return null;
    const node = nodes.all.find((n) => n.log.some((l) => l.includes(` connected socket=${id} `)));
    return node ? node.name.at(-1) : null;
  }

  /** The node client `c`'s socket is on, once that node has logged the connection (its log lags the session). */
  async function placed(c) {
    await until(() => nodeOf(c.socketId()) !== null, { what: () => `a node logging ${c.label}'s socket ${c.socketId()}` });
    return nodeOf(c.socketId());
  }

  /** The node process behind `letter` now. */
  const running = (letter) => nodes[letter];

  /**
   * Resolves once nginx sends requests to node `letter` again (after a restart it skips the node for the
   * fail_timeout of deploy/nginx.conf): probes from an address that hashes to it until one reaches it.
   */
  async function routedTo(letter) {
    const probe = `/healthz?routed=${letter}-${rand()}`;
    await until(
      async () => {
        await get(`${nginx.url}${probe}`, addressesOn[letter][0]).catch(() => {});
        return nginx.access().some((e) => e.uri === probe && e.upstream === running(letter).addr);
      },
      { ms: 30_000, every: 100, what: () => `nginx sending requests to node ${letter} again` },
    );
  }

  /** Adds nginx's error log and the logs of the nodes that stopped (the harness shows the running ones) to a failure. */
  async function withNginxLog(fn) {
    try {
      return await fn();
    } catch (err) {
      const stopped = nodes.all.filter((n) => n.exit).map((n) => `--- log of ${n.name} (stopped) ---\n${n.logTail(80)}`);
      err.message += `\n${stopped.join("\n")}\n--- nginx error log ---\n${nginx?.errors().split("\n").slice(-40).join("\n")}`;
      throw err;
    }
  }

  const variants = [
    { name: "WebSocket", transports: ["websocket"] },
    { name: "long-polling", transports: ["polling"] },
    { name: "polling upgraded to WebSocket (the default)", transports: undefined },
  ];
  for (const [i, variant] of variants.entries()) {
    it(`stock socket.io-client over ${variant.name}: users on different nodes chat through nginx`, () =>
      withNginxLog(async () => {
        const users = { a: identity("alice"), b: identity("bob") };
        const clients = {};
        for (const letter of ["a", "b"]) {
          clients[letter] = stockClient(nginx.url, users[letter], addressesOn[letter][i], variant.transports, users[letter].name);
        }
        await Promise.all(Object.values(clients).map((c) => whenReady(c, 10_000)));
        for (const letter of ["a", "b"]) {
          assert.equal(await placed(clients[letter]), letter, `${users[letter].name}'s socket is on node ${letter}`);
        }
        if (!variant.transports) {
          // The default client opens with polling and upgrades; the upgrade request must reach the same node.
          const upgraded = () => Object.values(clients).every((c) => c.socket.io.engine.transport.name === "websocket");
          await until(upgraded, { what: () => "both clients upgraded to WebSocket" });
        }
        const expected = variant.transports?.[0] ?? "websocket";
        for (const c of Object.values(clients)) assert.equal(c.socket.io.engine.transport.name, expected, `${c.label}'s transport`);

        const room = roomId("across");
        for (const c of Object.values(clients)) await ok(c.socket, "room:join", { room });
        for (const [sender, receiver] of [
          [clients.a, clients.b],
          [clients.b, clients.a],
        ]) {
          const text = `hello from ${sender.label} on node ${nodeOf(sender.socketId())}`;
          const arrived = waitFor(receiver.socket, "message", (m) => m.room === room && m.text === text, ACK_TIMEOUT_MS);
          const sent = await ok(sender.socket, "message:send", { room, text, clientId: `across-${rand()}` });
          assertSameMessage(await arrived, sent.message, `${receiver.label} gets ${sender.label}'s message across nodes`);
        }

        // nginx's view: every request of each Engine.IO session went to the node the socket is on.
        const sids = Object.fromEntries(Object.entries(clients).map(([letter, c]) => [letter, c.socket.io.engine.id]));
        for (const c of Object.values(clients)) c.socket.close();
        for (const letter of ["a", "b"]) {
          const ofSession = () => nginx.access().filter((e) => new URLSearchParams(e.uri.split("?")[1] ?? "").get("sid") === sids[letter]);
          const fromClient = () => nginx.access().filter((e) => e.remote === clients[letter].address && e.uri.startsWith("/socket.io/"));
          if (variant.transports?.[0] === "websocket") {
            // A WebSocket request is logged when it ends: the 101 of the closed socket.
            await until(() => fromClient().some((e) => e.status === "101"), { what: () => short(fromClient()) });
          } else {
            // The handshake, posts and polls (the upgrade's 101 too, once it ended).
            await until(() => ofSession().length >= 3 && (variant.transports || ofSession().some((e) => e.status === "101")), {
              what: () => short(ofSession()),
            });
          }
          const entries = variant.transports?.[0] === "websocket" ? fromClient() : ofSession();
          for (const e of entries) {
            assert.equal(e.upstream, running(letter).addr, `nginx sent ${e.method} ${e.uri} to node ${letter}: ${short(e)}`);
            assert.ok(["200", "101"].includes(e.status), `${e.method} ${e.uri} answered ${e.status}`);
          }
        }
      }),
    );
  }

  it("rolling restart under steady load: no acked message lost, every client back, SDK rooms gap-free", { timeout: 150_000 }, (t) =>
    withNginxLog(async () => {
      const started = Date.now();
      const rooms = Array.from({ length: ROOMS }, (_, k) => `rolling-${k}-${rand()}`);
      // Client kinds, spread evenly over both nodes by the address they connect from.
      const kinds = [
        ...Array(4).fill({ kind: "stock", transports: ["websocket"] }),
        ...Array(4).fill({ kind: "stock", transports: ["polling"] }),
        ...Array(2).fill({ kind: "stock", transports: undefined }),
        ...Array(3).fill({ kind: "sdk", transports: ["websocket"] }),
        ...Array(3).fill({ kind: "sdk", transports: ["polling"] }),
      ];
      const pools = { a: addressesOn.a.slice(3), b: addressesOn.b.slice(3) };
      const clients = await Promise.all(
        kinds.map(async ({ kind, transports }, i) => {
          const address = pools[i % 2 === 0 ? "a" : "b"].shift();
          assert.ok(address, "enough addresses for every client");
          const user = identity(`${kind}${i}`);
          const label = `${kind}#${i} (${transports?.join("+") ?? "polling+websocket"})`;
          if (kind === "stock") {
            const c = stockClient(nginx.url, user, address, transports, label);
            await whenReady(c, 15_000);
            for (const room of rooms) await ok(c.socket, "room:join", { room });
            return c;
          }
          const socket = { ...from(address), reconnectionDelay: 100, reconnectionDelayMax: 1000 };
          socket.transports = transports;
          const client = await sdkClient(nginx.url, { auth: user.auth, socket });
          const rec = recordStream(client);
          await client.session;
          for (const room of rooms) await client.join(room);
          return {
            kind,
            label,
            user,
            address,
            transports,
            client,
            rec,
            acked: [],
            resends: 0,
            failures: [],
            sending: false,
            socketId: () => client.socket.id,
            connected: () => client.status === "connected",
            get sessions() {
              return rec.sessions;
            },
          };
        }),
      );
      for (const letter of ["a", "b"]) {
        const here = [];
        for (const c of clients) if ((await placed(c)) === letter) here.push(c);
        assert.equal(here.length, clients.length / 2, `half the clients on node ${letter}: ${here.map((c) => c.label)}`);
      }

      // Steady load: each client sends to its rooms in turn, one message at a time, until told to stop.
      const load = { stop: false };
      const loops = clients.map(async (c, i) => {
        for (let k = 0; !load.stop; k++) {
          const payload = { room: rooms[(i + k) % rooms.length], text: `${c.label} #${k}`, clientId: `${c.user.id}-${k}` };
          c.sending = true;
          if (c.kind === "stock") {
            c.acked.push(await stockSend(c, payload));
          } else {
            for (;;) {
              try {
                c.acked.push(await c.client.send(payload.room, payload.text, { clientId: payload.clientId }));
                break;
              } catch (err) {
                // The SDK gave up after its own resends; the app tries again with the same clientId.
                c.failures.push(`${err.code}: ${err.message}`);
                if (!["timeout", "unavailable", "rate_limited"].includes(err.code)) throw err;
              }
            }
          }
          c.sending = false;
          c.lastAckAt = Date.now();
          await sleep(SEND_PAUSE_MS);
        }
      });
      const loadDone = Promise.all(loops);
      loadDone.catch(() => {}); // awaited below; a failing loop must not be an unhandled rejection meanwhile

      const state = (c) =>
        `${c.label} on ${nodeOf(c.socketId())}: ${c.connected() ? "connected" : "not connected"} (${c.sessions} sessions` +
        `${c.client?.error ? `, ${c.client.error.message}` : ""}), ${c.acked.length} acked, ` +
        `${c.sending ? "sending" : "pausing"}, last ack ${Date.now() - (c.lastAckAt ?? started)} ms ago`;
      /** Waits until every client got `n` more acks than at the call (the load runs, everywhere). */
      const progress = async (n, what) => {
        const base = new Map(clients.map((c) => [c, c.acked.length]));
        await until(() => clients.every((c) => c.acked.length >= base.get(c) + n), {
          ms: 45_000,
          every: 50,
          what: () => `${what}: stalled: ${clients.filter((c) => c.acked.length < base.get(c) + n).map(state)}`,
        });
      };
      await progress(3, "before the restarts");

      const drains = {};
      for (const [letter, other] of [
        ["a", "b"],
        ["b", "a"],
      ]) {
        const node = running(letter);
        const onIt = [];
        for (const c of clients) if ((await placed(c)) === letter) onIt.push(c);
        assert.ok(onIt.length > 0, `clients on node ${letter} before its restart`);
        const sessionsBefore = new Map(clients.map((c) => [c, c.sessions]));

        // A slow database at the moment of the stop: a lock holds every insert until the node's clients are back.
        const lock = new pg.Client({ connectionString: db.url });
        await lock.connect();
        let heldMs;
        let stopAt;
        try {
          await lock.query("BEGIN");
          await lock.query("LOCK TABLE messages IN EXCLUSIVE MODE");
          await until(() => onIt.every((c) => c.sending), {
            what: () => `sends waiting on node ${letter}: ${onIt.filter((c) => c.sending).length} of ${onIt.length}: ${onIt.map(state)}`,
          });

          stopAt = performance.now();
          node.child.kill("SIGTERM");
          // While it drains, its clients reconnect through nginx to the other node (a stopping node takes none).
          const back = (c) => c.sessions > sessionsBefore.get(c) && c.connected();
          await until(() => onIt.every(back), {
            ms: 30_000,
            every: 50,
            what: () => `clients of node ${letter} not back: ${onIt.filter((c) => !back(c)).map(state)}`,
          });
          for (const c of onIt) assert.equal(await placed(c), other, `${c.label} moved to node ${other}`);
          assert.equal(node.exit, null, `node ${letter} was still draining its pending writes`);
          heldMs = Math.round(performance.now() - stopAt);
          await lock.query("COMMIT");
        } finally {
          await lock.end();
        }

        const exit = await Promise.race([node.exited, sleep((grace + 5) * 1000).then(() => ({ timeout: true }))]);
        drains[letter] = Math.round(performance.now() - stopAt);
        assert.deepEqual(exit, { code: 0, signal: null }, `node ${letter} exits cleanly after SIGTERM`);
        assert.ok(drains[letter] < grace * 1000, `node ${letter} drained in ${drains[letter]} ms, within the ${grace} s grace`);
        assert.ok(!node.log.some((l) => l.includes("did not finish in time")), `node ${letter}: pending events finished`);

        const back = await spawnServer({ databaseUrl: db.url, jwtSecret: null, env, listen: node.addr, label: node.name });
        nodes[letter] = back;
        nodes.all.push(back);
        await until(
          async () => {
            try {
              return (await fetch(`${back.url}/readyz`)).status === 200;
            } catch {
              return false;
            }
          },
          { ms: 30_000, every: 50, what: () => `node ${letter} ready after its restart` },
        );
        const readyMs = Math.round(performance.now() - stopAt);
        await routedTo(letter);
        t.diagnostic(
          `node ${letter}: ${onIt.length} clients moved to node ${other} in ${heldMs} ms (inserts held meanwhile); drained in ` +
            `${drains[letter]} ms (exited ${drains[letter] - heldMs} ms after the inserts went on); back and ready ` +
            `${readyMs} ms after SIGTERM, and taking requests from nginx after ` +
            `${Math.round(performance.now() - stopAt)} ms`,
        );
        await progress(3, `after node ${letter}'s restart`);
      }

      // Stop the load; every send in flight is resent until acked.
      load.stop = true;
      await loadDone;
      const loadMs = Date.now() - started;

      const auditor = stockClient(nginx.url, identity("auditor"), addressesOn.a[0], ["websocket"], "auditor");
      await whenReady(auditor, 10_000);
      const history = new Map();
      for (const room of rooms) {
        const h = await fullHistory(auditor.socket, room);
        assertGapFree(h, `history of ${room}`);
        const ids = new Set();
        for (const m of h) {
          const key = `${m.from.id} ${m.clientId}`;
          assert.ok(m.clientId, `${room} #${m.seq} has its clientId`);
          assert.ok(!ids.has(key), `${room} stores clientId ${m.clientId} twice`);
          ids.add(key);
        }
        history.set(room, h);
      }
      const stored = new Map();
      for (const h of history.values()) for (const m of h) stored.set(`${m.from.id} ${m.clientId}`, m);
      const acked = clients.flatMap((c) => c.acked);
      const lost = acked.filter((m) => {
        const s = stored.get(`${m.from.id} ${m.clientId}`);
        return !s || s.id !== m.id || s.seq !== m.seq || s.room !== m.room;
      });
      assert.deepEqual(lost.slice(0, 5), [], `${lost.length} acked messages are not in history as acked`);
      assert.equal(stored.size, acked.length, "history holds exactly the acked messages: every send was acked once");

      for (const c of clients) {
        assert.ok(c.sessions >= 2, `${c.label} reconnected (${c.sessions} sessions)`);
        assert.ok(c.connected(), `${c.label} is connected at the end`);
      }
      const sdk = clients.filter((c) => c.kind === "sdk");
      const behind = () => sdk.filter((c) => c.client.recovering || rooms.some((r) => c.client.lastSeq(r) !== history.get(r).length));
      await until(() => behind().length === 0, {
        ms: 30_000,
        every: 50,
        what: () => `SDK clients behind: ${behind().map((c) => `${c.label}: ${rooms.map((r) => `${c.client.lastSeq(r)}/${history.get(r).length}`)}`)}`,
      });
      for (const c of sdk) {
        const fatal = c.rec.errors.filter((e) => !["timeout", "unavailable", "rate_limited"].includes(e.code));
        assert.deepEqual(fatal.map((e) => `${e.room}: ${e.code}: ${e.message}`), [], `${c.label}: recovery errors`);
        for (const room of rooms) {
          assertGapFree(c.rec.of(room), `${c.label}'s stream of ${room}`);
          assert.deepEqual(c.rec.of(room).map((m) => m.id), history.get(room).map((m) => m.id), `${c.label}'s stream of ${room} is its history`);
        }
      }
      const sdkFailures = sdk.flatMap((c) => c.failures);
      assert.deepEqual(sdkFailures, [], "SDK sends that gave up (timeouts after the SDK's own resends)");

      const resends = clients.reduce((n, c) => n + c.resends, 0);
      const sessions = clients.map((c) => c.sessions);
      const requests = nginx.access().filter((e) => e.uri.startsWith("/socket.io/"));
      const passedOn = requests.filter((e) => e.upstream.includes(",") && e.status !== "502").length;
      const refused = requests.filter((e) => e.status === "502").length;
      t.diagnostic(
        `${clients.length} clients (${clients.length - sdk.length} stock, ${sdk.length} SDK) over ${loadMs} ms: ${acked.length} acked, ` +
          `${stored.size} stored in ${rooms.length} rooms, ${lost.length} lost; stock resends ${resends}; ` +
          `sessions per client ${Math.min(...sessions)}–${Math.max(...sessions)} (${sessions.reduce((a, b) => a + b, 0) - clients.length} reconnections); ` +
          `drains: node a ${drains.a} ms, node b ${drains.b} ms (grace ${grace} s); of ${requests.length} Socket.IO requests ` +
          `through nginx, ${passedOn} went to the other node after a refusal and ${refused} got 502`,
      );
    }),
  );
});
