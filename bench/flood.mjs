// Flood: one raw WebSocket client writes N `42<id>["rooms:list",{}]` frames (each asking for an ack) without ever
// reading, while B bystanders keep chatting in one room. Reports the server's RSS growth (from /proc, so run it on
// the server's machine), the bystanders' ack latency during the flood, and what became of the flooder.
//
//   node flood.mjs --url http://127.0.0.1:3000 --pid <server pid> [--frames 200000] [--bystanders 20]
import { io } from "socket.io-client";
import WebSocket from "ws";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:3000" },
    pid: { type: "string" },
    frames: { type: "string", default: "200000" },
    bystanders: { type: "string", default: "20" },
    every: { type: "string", default: "50" },
  },
});
const frames = Number(values.frames);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function rssMiB() {
  if (!values.pid) return NaN;
  const status = await readFile(`/proc/${values.pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]) / 1024;
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

const room = `flood-${Date.now()}`;
const bystanders = await Promise.all(
  Array.from({ length: Number(values.bystanders) }, (_, i) =>
    new Promise((resolve, reject) => {
      const socket = io(values.url, { transports: ["websocket"], forceNew: true, auth: { name: `bystander${i}` } });
      socket.once("connect_error", reject);
      socket.once("session", async () => {
        const ack = await socket.timeout(10_000).emitWithAck("room:join", { room });
        if (!ack.ok) reject(new Error(JSON.stringify(ack)));
        resolve(socket);
      });
    }),
  ),
);

const rssBefore = await rssMiB();
let rssPeak = rssBefore;
const ws = new WebSocket(`${values.url.replace(/^http/, "ws")}/socket.io/?EIO=4&transport=websocket`);
await new Promise((resolve, reject) => {
  ws.once("error", reject);
  ws.on("message", (data) => {
    const text = data.toString();
    if (text.startsWith("0")) ws.send("40");
    if (text.startsWith("40")) resolve();
  });
});
let closed = null;
ws.once("close", (code) => (closed = code));
ws.removeAllListeners("message");
ws._socket.pause();

let written = 0;
const started = performance.now();
const flood = (async () => {
  while (written < frames && closed === null) {
    for (let i = 0; i < 1000 && written < frames; i++, written++) ws.send(`42${written}["rooms:list",{}]`);
    await new Promise((r) => setImmediate(r));
    while (ws.bufferedAmount > 4 * 1024 * 1024 && closed === null) await sleep(5);
  }
})();

const latencies = [];
const failures = new Map();
let chatting = true;
const chat = Promise.all(
  bystanders.map(async (socket, i) => {
    let n = 0;
    while (chatting) {
      const t0 = performance.now();
      try {
        const ack = await socket.timeout(10_000).emitWithAck("message:send", { room, text: `b${i} ${n++}` });
        if (ack.ok) latencies.push(performance.now() - t0);
        else failures.set(ack.error.code, (failures.get(ack.error.code) ?? 0) + 1);
      } catch {
        failures.set("timeout", (failures.get("timeout") ?? 0) + 1);
      }
      await sleep(Number(values.every));
    }
  }),
);
const sampler = setInterval(async () => {
  rssPeak = Math.max(rssPeak, await rssMiB());
}, 100);

await flood;
const floodSeconds = (performance.now() - started) / 1000;
await sleep(500);
chatting = false;
await chat;
clearInterval(sampler);
const rssAfter = await rssMiB();

// What the flooder got back, once it reads again.
let refusals = 0;
let answered = 0;
ws.on("message", (data) => {
  const text = data.toString();
  if (/^43\d+/.test(text)) answered++;
  if (text.includes('"code":"rate_limited"')) refusals++;
});
ws._socket.resume();
await sleep(2000);

latencies.sort((a, b) => a - b);
const result = {
  frames_written: written,
  flood_seconds: Number(floodSeconds.toFixed(2)),
  flooder_disconnected: closed !== null,
  flooder_acks_read_after: answered,
  flooder_rate_limited_acks: refusals,
  rss_before_mib: Number(rssBefore.toFixed(1)),
  rss_peak_mib: Number(rssPeak.toFixed(1)),
  rss_after_mib: Number(rssAfter.toFixed(1)),
  bystander_acks: latencies.length,
  bystander_failures: Object.fromEntries(failures),
  bystander_ack_ms: {
    p50: Number(percentile(latencies, 50).toFixed(2)),
    p99: Number(percentile(latencies, 99).toFixed(2)),
    max: Number((latencies.at(-1) ?? NaN).toFixed(2)),
  },
};
console.log(JSON.stringify(result, null, 2));
ws.terminate();
for (const s of bystanders) s.close();
