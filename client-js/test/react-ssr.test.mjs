// @palaver/client/react in server rendering (Next.js, Remix…): rendering the provider and the hooks on a server
// opens no connection and shows the same empty `connecting` state the browser's first render shows; the bindings'
// modules are client modules ("use client"), so a server component may render <PalaverProvider>.
//
// No DOM here: this is Node as a server renders. A real palaver listens behind a proxy that counts connections.
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { describe } from "node:test";

import { createElement as h } from "react";
import { renderToString } from "react-dom/server";

import { PalaverProvider, useConnection, useRoom, useRooms } from "../dist/react/index.js";
import { PKG_ROOT, STORES, identity, it, tcpProxy, useServer, sdkClient } from "./harness.mjs";

const STORE = STORES.includes("sqlite") ? "sqlite" : STORES[0];

function Chat() {
  const { status, user } = useConnection();
  const { messages, members, status: roomStatus } = useRoom("general");
  const { rooms } = useRooms();
  return h("p", null, `${status} ${user?.name ?? "nobody"} ${roomStatus} ${messages.length} ${members.length} ${rooms.length}`);
}

describe(`react: server rendering [${STORE}]`, () => {
  const srv = useServer(STORE);

  it("renders the connecting state and opens no connection", async () => {
    const proxy = await tcpProxy(srv);
    const connects = [];
    const realConnect = net.Socket.prototype.connect;
    net.Socket.prototype.connect = function (...args) {
      connects.push(args[0]);
      return realConnect.apply(this, args);
    };
    let html;
    try {
      assert.equal(typeof window, "undefined", "a server has no window");
      html = renderToString(
        h(PalaverProvider, { url: proxy.url, options: { auth: identity("alice").auth } }, h(Chat), h(Chat)),
      );
    } finally {
      net.Socket.prototype.connect = realConnect;
    }
    assert.equal(html, "<p>connecting nobody loading 0 0 0</p><p>connecting nobody loading 0 0 0</p>");
    assert.deepEqual(connects, [], "rendering opened no socket");
    // A client that does connect through the proxy is the first connection it sees.
    const client = await sdkClient(proxy.url, { auth: identity("bob").auth });
    await client.session;
    assert.equal(proxy.opened, 1, "only the SDK client of the test connected");
    client.close();
    await proxy.close();
  });

  it("every module of the bindings is a client module (\"use client\" first)", async () => {
    for (const file of ["index.js", "provider.js", "hooks.js", "lease.js"]) {
      const text = await readFile(path.join(PKG_ROOT, "dist", "react", file), "utf8");
      assert.ok(text.startsWith('"use client";'), `dist/react/${file} starts with "use client"`);
    }
  });
});
