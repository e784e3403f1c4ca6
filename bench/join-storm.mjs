// Join storm into ONE room: N guests connect at once, spread over the given nodes (client i → URL i mod n), and
// each joins the same room as soon as it is connected. Reports the time until every join is acked ok, the join
// ack latencies, and the room:notice deliveries the clients got until then (each arrival is told to everyone
// already in the room, so at most N(N-1)/2).
//
//   node join-storm.mjs --url http://127.0.0.1:3200,http://127.0.0.1:3201 --clients 2000 [--room storm] [--timeout 120]
//     [--concurrency 200]             clients connecting and joining at once (default: all of them)
//     [--on-joined "shell command"]   run once every client has joined, before any of them disconnects
//                                     (join-storm.sh reads Redis's counters there)
import { execSync } from "node:child_process";
import { io } from "socket.io-client";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:3000" },
    clients: { type: "string", default: "2000" },
    room: { type: "string", default: "storm" },
    timeout: { type: "string", default: "120" },
    "on-joined": { type: "string" },
    concurrency: { type: "string" },
  },
});
const urls = values.url.split(",");
const clients = Number(values.clients);
const room = values.room;
const timeoutMs = Number(values.timeout) * 1000;
const concurrency = Number(values.concurrency || clients);

const started = performance.now();
let connected = 0;
let joined = 0;
let notices = 0;
let lastJoinAt = 0;
const errors = new Map();
const sockets = [];
const joinLatencies = [];
const fail = (kind) => errors.set(kind, (errors.get(kind) || 0) + 1);

const done = new Promise((resolve) => {
  let finished = 0;
  let next = 0;
  const finish = () => {
    finished += 1;
    if (finished === clients) resolve();
    else if (next < clients) start(next++);
  };
  const start = (i) => {
    const socket = io(urls[i % urls.length], {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: timeoutMs,
      auth: { name: `joiner-${i}` },
    });
    sockets.push(socket);
    socket.on("room:notice", () => {
      notices += 1;
    });
    socket.on("connect_error", (e) => {
      fail(`connect_error: ${e.message}`);
      finish();
    });
    socket.on("connect", async () => {
      connected += 1;
      const sentAt = performance.now();
      try {
        const ack = await socket.timeout(timeoutMs).emitWithAck("room:join", { room, limit: 1 });
        if (ack.ok) {
          joined += 1;
          lastJoinAt = performance.now();
          joinLatencies.push(lastJoinAt - sentAt);
        } else fail(`join: ${ack.error.code}`);
      } catch (e) {
        fail(`ack timeout: ${e.message}`);
      }
      finish();
    });
  };
  while (next < Math.min(concurrency, clients)) start(next++);
});

const progress = setInterval(() => {
  process.stderr.write(`\rconnected ${connected}/${clients} joined ${joined} notices ${notices}   `);
}, 500);
await Promise.race([done, new Promise((r) => setTimeout(r, timeoutMs + 5000))]);
clearInterval(progress);
const noticesWhenJoined = notices;
if (values["on-joined"]) execSync(values["on-joined"], { stdio: "inherit" });
joinLatencies.sort((a, b) => a - b);
const pct = (p) =>
  joinLatencies.length
    ? Number(joinLatencies[Math.min(joinLatencies.length - 1, Math.floor((p / 100) * joinLatencies.length))].toFixed(1))
    : null;
const result = {
  clients,
  nodes: urls.length,
  concurrency,
  room,
  connected,
  joined,
  errors: Object.fromEntries(errors),
  allJoinedSeconds: joined === clients ? Number(((lastJoinAt - started) / 1000).toFixed(2)) : null,
  joinAckMs: { p50: pct(50), p90: pct(90), p99: pct(99), max: pct(100) },
  noticesReceived: noticesWhenJoined,
};
process.stderr.write("\n");
console.log(JSON.stringify(result));
for (const s of sockets) s.close();
process.exit(joined === clients ? 0 : 1);
