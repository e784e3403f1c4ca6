// The React bindings under React 18's StrictMode: the packed package installed next to react@18 and react-dom@18
// in a temp dir (the repository develops with React 19), rendered in jsdom against a real palaver. One connection
// per provider, a send made in an effect stored once, the client closed on unmount.
import "./react-env.mjs";

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { after, before, describe } from "node:test";
import { pathToFileURL } from "node:url";

import { PKG_ROOT, STORES, connectUser, fullHistory, identity, it, ok, roomId, tcpProxy, track, until, useServer } from "./harness.mjs";

const STORE = STORES.includes("sqlite") ? "sqlite" : STORES[0];
const KEEP = process.env.PALAVER_TEST_KEEP === "1";
const REACT_18 = "18.3.1";

function run(cmd, args, cwd) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("error", reject);
    child.on("exit", (code) =>
      code === 0 ? resolve(output) : reject(new Error(`${cmd} ${args.join(" ")} exited with ${code}:\n${output.slice(-4000)}`)),
    );
  });
}

describe(`react 18: StrictMode [${STORE}]`, { timeout: 300_000 }, () => {
  const srv = useServer(STORE);
  let work;
  let React;
  let createRoot;
  let bindings;
  let sdk;

  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "palaver-react18-"));
    const out = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], PKG_ROOT);
    const [info] = JSON.parse(out.slice(out.indexOf("[")));
    const sioVersion = JSON.parse(await readFile(path.join(PKG_ROOT, "node_modules/socket.io-client/package.json"), "utf8")).version;
    const dependencies = {
      "@palaver/client": `file:${path.join(work, info.filename)}`,
      react: REACT_18,
      "react-dom": REACT_18,
      "socket.io-client": sioVersion,
    };
    await writeFile(path.join(work, "package.json"), JSON.stringify({ private: true, type: "module", dependencies }));
    await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], work);
    const require = createRequire(path.join(work, "package.json"));
    const load = async (specifier) => import(pathToFileURL(require.resolve(specifier)).href);
    React = (await load("react")).default;
    createRoot = (await load("react-dom/client")).default.createRoot;
    bindings = await load("@palaver/client/react");
    sdk = await load("@palaver/client");
    assert.equal(React.version, REACT_18);
  });
  after(async () => {
    if (work && !KEEP) await rm(work, { recursive: true, force: true });
  });

  it("one connection, a send in an effect stored once, closed on unmount", async () => {
    const h = React.createElement;
    const { PalaverProvider, useConnection, useRoom } = bindings;
    const proxy = await tcpProxy(srv);
    const alice = identity("alice");
    const room = roomId("r18");
    const probe = { clients: new Set(), effects: 0 };
    function Greeter() {
      const { send } = useRoom(room);
      const [clientId] = React.useState(sdk.newClientId);
      React.useEffect(() => {
        probe.effects++;
        void send("hello from React 18", { clientId });
      }, [send, clientId]);
      return null;
    }
    function Probe() {
      probe.room = useRoom(room);
      const c = useConnection();
      probe.conn = c;
      if (c.client) {
        probe.clients.add(c.client);
        track(c.client.socket);
      }
      return null;
    }
    const container = document.createElement("div");
    const root = createRoot(container);
    const options = { auth: alice.auth, socket: { transports: ["websocket"] } };
    root.render(h(React.StrictMode, null, h(PalaverProvider, { url: proxy.url, options }, h(Greeter), h(Probe))));
    try {
      await until(() => probe.room?.messages.length === 1 && probe.room.messages[0].status === "sent", {
        what: () => JSON.stringify(probe.room?.messages),
      });
      assert.equal(probe.effects, 2, "React 18's StrictMode ran the effect twice");
      assert.equal(proxy.opened, 1, "one connection");
      assert.equal(probe.clients.size, 1, "one client");
      const { socket } = await connectUser(srv, identity("bob"));
      await ok(socket, "room:join", { room });
      assert.deepEqual((await fullHistory(socket, room)).map((m) => m.text), ["hello from React 18"], "stored once");
      const [client] = probe.clients;
      root.unmount();
      await until(() => client.status === "closed" && proxy.connections === 0);
    } finally {
      root.unmount();
      await proxy.close();
    }
  });
});
