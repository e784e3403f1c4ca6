// Connect storm: N clients connect at once; each, as soon as it is connected, joins one of R rooms and sends one
// message with an ack. Reports how many acks came back ok, errors, and timings.
//
//   node storm.mjs --url http://127.0.0.1:3000 --clients 10000 --rooms 100 [--timeout 120]
import { io } from "socket.io-client";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: "http://127.0.0.1:3000" },
    clients: { type: "string", default: "10000" },
    rooms: { type: "string", default: "100" },
    timeout: { type: "string", default: "120" },
  },
});
const url = values.url;
const clients = Number(values.clients);
const rooms = Number(values.rooms);
const timeoutMs = Number(values.timeout) * 1000;

const started = performance.now();
let connected = 0;
let joined = 0;
let acked = 0;
const errors = new Map();
const sockets = [];
const ackLatencies = [];
const fail = (kind) => errors.set(kind, (errors.get(kind) || 0) + 1);

const done = new Promise((resolve) => {
  let finished = 0;
  const finish = () => {
    finished += 1;
    if (finished === clients) resolve();
  };
  for (let i = 0; i < clients; i++) {
    const room = `storm-${i % rooms}`;
    const socket = io(url, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      timeout: timeoutMs,
      auth: { name: `storm-${i}` },
    });
    sockets.push(socket);
    socket.on("connect_error", (e) => {
      fail(`connect_error: ${e.message}`);
      finish();
    });
    socket.on("connect", async () => {
      connected += 1;
      // Both emitted back to back, without waiting: the server must have the handlers in place and keep order.
      const join = socket.timeout(timeoutMs).emitWithAck("room:join", { room, limit: 1 });
      const sentAt = performance.now();
      const send = socket
        .timeout(timeoutMs)
        .emitWithAck("message:send", { room, text: `hello from ${i}`, clientId: `storm-${i}` });
      try {
        const j = await join;
        if (j.ok) joined += 1;
        else fail(`join: ${j.error.code}`);
        const s = await send;
        if (s.ok) {
          acked += 1;
          ackLatencies.push(performance.now() - sentAt);
        } else fail(`send: ${s.error.code}`);
      } catch (e) {
        fail(`ack timeout: ${e.message}`);
      }
      finish();
    });
  }
});

const progress = setInterval(() => {
  process.stderr.write(`\rconnected ${connected}/${clients} joined ${joined} acked ${acked}   `);
}, 500);
await Promise.race([done, new Promise((r) => setTimeout(r, timeoutMs + 5000))]);
clearInterval(progress);
const elapsed = (performance.now() - started) / 1000;
ackLatencies.sort((a, b) => a - b);
const pct = (p) => (ackLatencies.length ? ackLatencies[Math.min(ackLatencies.length - 1, Math.floor((p / 100) * ackLatencies.length))].toFixed(1) : "-");
const result = {
  clients,
  rooms,
  connected,
  joined,
  acked,
  errors: Object.fromEntries(errors),
  seconds: Number(elapsed.toFixed(2)),
  ackMs: { p50: pct(50), p99: pct(99), max: pct(100) },
};
process.stderr.write("\n");
console.log(JSON.stringify(result, null, 2));
for (const s of sockets) s.close();
process.exit(acked === clients ? 0 : 1);
