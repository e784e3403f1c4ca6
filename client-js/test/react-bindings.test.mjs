// @palaver/client/react against a real palaver, rendered by React DOM (development build, so StrictMode runs every
// effect twice) in jsdom: one connection per provider under StrictMode and Fast Refresh, a send in an effect stored
// once, pending messages replaced by their ack, paging, members, typing, the room list, reconnections, and no
// listener left behind.
//
// The bindings do not depend on the store, so this suite runs on one store: SQLite unless PALAVER_TEST_STORES
// leaves it out.
import { RefreshRuntime } from "./react-env.mjs";

import assert from "node:assert/strict";
import { afterEach, describe } from "node:test";

import { StrictMode, createElement as h, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";

import { ChatStore, PalaverClient, connect, newClientId } from "../dist/index.js";
import { PalaverProvider, useConnection, useRoom, useRooms } from "../dist/react/index.js";
import {
  FAST,
  STORES,
  connectUser,
  fullHistory,
  identity,
  it,
  ok,
  roomId,
  sendMany,
  tcpProxy,
  track,
  until,
  useServer,
} from "./harness.mjs";

const STORE = STORES.includes("sqlite") ? "sqlite" : STORES[0];

/** Client options for a provider: WebSocket only (one TCP connection per client), fast reconnection. */
function options(user) {
  return {
    auth: user.auth,
    socket: { transports: ["websocket"], reconnectionDelay: 50, reconnectionDelayMax: 200 },
  };
}

// ---------------------------------------------------------------------------------------------
// rendering

const mounted = new Set();

/** Renders `element` into a fresh container; unmounted at the end of the test at the latest. */
function mount(element) {
  const container = document.createElement("div");
  document.body.append(container);
  const root = createRoot(container);
  root.render(element);
  const m = {
    root,
    unmount() {
      if (!mounted.delete(m)) return;
      root.unmount();
      container.remove();
    },
  };
  mounted.add(m);
  return m;
}

afterEach(() => {
  for (const m of [...mounted]) m.unmount();
});

/** What the probes saw: the latest hook results, every client the hooks were given, effect runs. */
function newProbe() {
  return { room: undefined, rooms: undefined, conn: undefined, clients: new Set(), statuses: [], mounts: 0, tag: "" };
}

/** Renders useRoom(room) and useConnection() into `probe`. */
function RoomProbe({ room, probe, tag = "" }) {
  const r = useRoom(room);
  const c = useConnection();
  probe.room = r;
  probe.conn = c;
  probe.tag = tag;
  if (c.client) {
    probe.clients.add(c.client);
    track(c.client.socket);
  }
  if (probe.statuses.at(-1) !== c.status) probe.statuses.push(c.status);
  useEffect(() => {
    probe.mounts++;
  }, [probe]);
  return h("ul", null, r.messages.map((m) => h("li", { key: m.key }, m.text)));
}

/** Renders useRooms() into `probe`. */
function RoomsProbe({ probe }) {
  probe.rooms = useRooms();
  return null;
}

/** Sends `text` from an effect, with a clientId kept in state (`stable`) or a fresh one per call. */
function Greeter({ room, text, stable }) {
  const { send } = useRoom(room);
  const [clientId] = useState(newClientId);
  useEffect(() => {
    void send(text, stable ? { clientId } : undefined);
  }, [send, clientId, text, stable]);
  return null;
}

/** Holds every incoming ack of the client's current transport until `release()`. */
function holdAcks(client) {
  const transport = client.socket.io.engine.transport;
  const original = transport.onPacket;
  const held = [];
  let holding = true;
  transport.onPacket = function (packet) {
    if (holding && packet.type === "message" && typeof packet.data === "string" && /^3\d/.test(packet.data)) {
      held.push(packet);
      return;
    }
    return original.call(this, packet);
  };
  return {
    get count() {
      return held.length;
    },
    release() {
      holding = false;
      for (const p of held.splice(0)) original.call(transport, p);
    },
  };
}

/** Every listener on the client's socket and Manager (the SDK's own included). */
function listenerCount(client) {
  const count = (emitter) =>
    Object.keys(emitter._callbacks ?? {}).reduce((n, k) => n + emitter.listeners(k.slice(1)).length, 0);
  return count(client.socket) + count(client.socket.io) + client.socket.listenersAny().length;
}

/** Counts `PalaverClient.join` calls per room while the test runs. */
function countJoins() {
  const real = PalaverClient.prototype.join;
  const joins = [];
  PalaverClient.prototype.join = function (room, ...rest) {
    joins.push(room);
    return real.call(this, room, ...rest);
  };
  joins.restore = () => {
    PalaverClient.prototype.join = real;
  };
  return joins;
}

const sentOnes = (messages) => messages.filter((m) => m.status === "sent");
const seqs = (messages) => sentOnes(messages).map((m) => m.seq);

describe(`react: provider [${STORE}]`, () => {
  const srv = useServer(STORE, { flags: FAST });

  it("StrictMode: one connection per provider, one join, the client never closed and reused; closed on unmount", async () => {
    const proxy = await tcpProxy(srv);
    const joins = countJoins();
    try {
      const alice = identity("alice");
      const room = roomId("strict");
      const probe = newProbe();
      const m = mount(
        h(StrictMode, null, h(PalaverProvider, { url: proxy.url, options: options(alice) }, h(RoomProbe, { room, probe }))),
      );
      await until(() => probe.room?.status === "ready" && probe.conn?.status === "connected", {
        what: () => `room ${probe.room?.status} ${probe.room?.error}, connection ${probe.conn?.status}`,
      });
      assert.equal(probe.mounts, 2, "StrictMode ran the effects twice");
      assert.equal(proxy.opened, 1, "one connection reached the server");
      assert.equal(probe.clients.size, 1, "the hooks were given one client");
      const [client] = probe.clients;
      assert.equal(client.status, "connected");
      assert.equal(probe.conn.user.id, alice.id);
      assert.deepEqual([...joins], [room], "the room was joined once");

      m.unmount();
      await until(() => client.status === "closed" && proxy.connections === 0, {
        what: () => `client ${client.status}, ${proxy.connections} connections`,
      });
      assert.equal(proxy.opened, 1);
    } finally {
      joins.restore();
      await proxy.close();
    }
  });

  it("two providers: two connections, each closed with its provider", async () => {
    const proxy = await tcpProxy(srv);
    try {
      const probes = [newProbe(), newProbe()];
      const room = roomId("two");
      const trees = probes.map((probe, i) =>
        mount(
          h(
            StrictMode,
            null,
            h(PalaverProvider, { url: proxy.url, options: options(identity(`u${i}`)) }, h(RoomProbe, { room, probe })),
          ),
        ),
      );
      await until(() => probes.every((p) => p.room?.status === "ready"));
      assert.equal(proxy.opened, 2);
      const [a] = probes[0].clients;
      const [b] = probes[1].clients;
      assert.notEqual(a, b);
      trees[0].unmount();
      await until(() => a.status === "closed" && proxy.connections === 1);
      assert.equal(b.status, "connected");
      trees[1].unmount();
      await until(() => b.status === "closed" && proxy.connections === 0);
    } finally {
      await proxy.close();
    }
  });

  it("Fast Refresh remounting the provider takes the same client back: still one connection", async () => {
    const proxy = await tcpProxy(srv);
    try {
      const alice = identity("alice");
      const room = roomId("hmr");
      const probe = newProbe();
      const opts = options(alice);
      // What Vite's React plugin does for an edited App.tsx: register the new component under the same id, then
      // refresh. A changed hook signature (forceReset) makes React remount it, and the provider with it.
      function AppV1() {
        return h(PalaverProvider, { url: proxy.url, options: opts }, h(RoomProbe, { room, probe, tag: "v1" }));
      }
      RefreshRuntime.register(AppV1, "react-bindings.test/App");
      RefreshRuntime.setSignature(AppV1, "v1");
      mount(h(StrictMode, null, h(AppV1)));
      await until(() => probe.room?.status === "ready");
      const [client] = probe.clients;
      assert.equal(probe.mounts, 2);

      function AppV2() {
        return h(PalaverProvider, { url: proxy.url, options: { ...opts } }, h(RoomProbe, { room, probe, tag: "v2" }));
      }
      RefreshRuntime.register(AppV2, "react-bindings.test/App");
      RefreshRuntime.setSignature(AppV2, "v2", true);
      RefreshRuntime.performReactRefresh();
      await until(() => probe.tag === "v2" && probe.mounts === 4 && probe.room?.status === "ready", {
        what: () => `tag ${probe.tag}, ${probe.mounts} effect runs`,
      });
      assert.equal(probe.clients.size, 1, "the remounted provider has the same client");
      assert.equal(client.status, "connected", "which was not closed");
      assert.equal(proxy.opened, 1, "one connection in all");
    } finally {
      await proxy.close();
    }
  });

  it("an app-owned client (client prop): mounting and unmounting leaves no listener and holds no room", async () => {
    const alice = identity("alice");
    const client = connect(srv.url, options(alice));
    track(client.socket);
    const store = ChatStore.of(client, { roomKeepAlive: 50 });
    await client.session;
    const baseline = listenerCount(client);
    const rooms = [roomId("leak"), roomId("leak")];
    for (let i = 0; i < 3; i++) {
      const probes = [newProbe(), newProbe(), newProbe()];
      const m = mount(
        h(
          StrictMode,
          null,
          h(
            PalaverProvider,
            { client },
            h(RoomProbe, { room: rooms[0], probe: probes[0] }),
            h(RoomProbe, { room: rooms[1], probe: probes[1] }),
            h(RoomProbe, { room: rooms[1], probe: probes[2] }),
            h(RoomsProbe, { probe: probes[0] }),
          ),
        ),
      );
      await until(() => probes.every((p) => p.room?.status === "ready") && probes[0].rooms?.status === "ready");
      assert.ok(store.subscriberCount > 0);
      m.unmount();
    }
    await until(() => store.heldRooms().length === 0, { what: () => `held: ${store.heldRooms()}` });
    assert.equal(store.subscriberCount, 0, "every hook unsubscribed");
    assert.equal(listenerCount(client), baseline, "no listener added to the socket");
    assert.equal(client.status, "connected", "the provider does not close a client it was given");
  });
});

describe(`react: useRoom [${STORE}]`, () => {
  const srv = useServer(STORE, { flags: FAST });

  it("a send in an effect with a clientId kept in state is stored once under StrictMode (a fresh one each call: twice)", async () => {
    const alice = identity("alice");
    const [once, twice] = [roomId("effect"), roomId("effect")];
    const probes = [newProbe(), newProbe()];
    mount(
      h(
        StrictMode,
        null,
        h(
          PalaverProvider,
          { url: srv.url, options: options(alice) },
          h(Greeter, { room: once, text: "hello once", stable: true }),
          h(Greeter, { room: twice, text: "hello twice", stable: false }),
          h(RoomProbe, { room: once, probe: probes[0] }),
          h(RoomProbe, { room: twice, probe: probes[1] }),
        ),
      ),
    );
    // The effect without a stable clientId is the control: StrictMode does run it twice.
    await until(() => sentOnes(probes[1].room?.messages ?? []).length === 2, {
      what: () => JSON.stringify(probes[1].room?.messages),
    });
    await until(
      () => probes[0].room?.messages.length === 1 && probes[0].room.messages[0].status === "sent",
      { what: () => JSON.stringify(probes[0].room?.messages) },
    );
    const { socket } = await connectUser(srv, identity("bob"));
    for (const room of [once, twice]) await ok(socket, "room:join", { room });
    // Both effects' sends have settled (the views have no pending message): history is final.
    await until(() => probes.every((p) => p.room.messages.every((m) => m.status === "sent")));
    assert.deepEqual((await fullHistory(socket, once)).map((m) => m.text), ["hello once"]);
    assert.deepEqual((await fullHistory(socket, twice)).map((m) => m.text), ["hello twice", "hello twice"]);
  });

  it("a send shows pending until its ack, then the stored message under the same key", async () => {
    const alice = identity("alice");
    const room = roomId("pending");
    const probe = newProbe();
    mount(h(StrictMode, null, h(PalaverProvider, { url: srv.url, options: options(alice) }, h(RoomProbe, { room, probe }))));
    await until(() => probe.room?.status === "ready");
    const [client] = probe.clients;
    const hold = holdAcks(client);
    const sending = probe.room.send("hello");
    await until(() => probe.room.messages.length === 1);
    const [pending] = probe.room.messages;
    assert.equal(pending.status, "pending");
    assert.equal(pending.text, "hello");
    assert.equal(pending.seq, undefined);
    assert.equal(pending.from.id, alice.id);
    await until(() => hold.count === 1, { what: () => "the ack of message:send" });
    hold.release();
    const stored = await sending;
    await until(() => probe.room.messages[0]?.status === "sent");
    const [sent] = probe.room.messages;
    assert.equal(probe.room.messages.length, 1);
    assert.equal(sent.key, pending.key, "the same key: React keeps the row");
    assert.equal(sent.clientId, pending.clientId);
    assert.equal(sent.seq, 1);
    assert.equal(sent.id, stored.id);
    // The same clientId again: the stored message, nothing sent.
    const again = await probe.room.send("hello", { clientId: pending.clientId });
    assert.equal(again.id, stored.id);
    assert.equal(probe.room.messages.length, 1);
  });

  it("a refused send shows failed with its error; sending again with its clientId retries it; discard removes it", async () => {
    const alice = identity("alice");
    const room = roomId("failed");
    const probe = newProbe();
    mount(h(StrictMode, null, h(PalaverProvider, { url: srv.url, options: options(alice) }, h(RoomProbe, { room, probe }))));
    await until(() => probe.room?.status === "ready");
    const long = "x".repeat(5000);
    await assert.rejects(probe.room.send(long), (err) => err.code === "too_large");
    await until(() => probe.room.messages[0]?.status === "failed");
    const [failed] = probe.room.messages;
    assert.equal(failed.error.code, "too_large");
    void probe.room.send(long, { clientId: failed.clientId }); // ignored promise: no unhandled rejection
    await until(() => probe.room.messages[0]?.status === "pending" || probe.room.messages[0]?.error !== failed.error);
    await until(() => probe.room.messages[0]?.status === "failed");
    assert.equal(probe.room.messages.length, 1, "still one row for the clientId");
    assert.equal(probe.room.messages[0].key, failed.key);
    probe.room.discard(failed.clientId);
    await until(() => probe.room.messages.length === 0);
  });

  it("loadOlder pages back to the first message", async () => {
    const alice = identity("alice");
    const room = roomId("older");
    const { socket } = await connectUser(srv, alice);
    await ok(socket, "room:join", { room });
    await sendMany(socket, room, 120);
    const probe = newProbe();
    mount(h(StrictMode, null, h(PalaverProvider, { url: srv.url, options: options(alice) }, h(RoomProbe, { room, probe }))));
    await until(() => probe.room?.status === "ready");
    assert.deepEqual(seqs(probe.room.messages), range(71, 120), "the latest 50");
    assert.equal(probe.room.hasMore, true);
    await probe.room.loadOlder();
    await until(() => probe.room.messages.length === 100);
    assert.deepEqual(seqs(probe.room.messages), range(21, 120));
    assert.equal(probe.room.hasMore, true);
    await probe.room.loadOlder();
    await until(() => probe.room.messages.length === 120 && !probe.room.loadingOlder);
    assert.deepEqual(seqs(probe.room.messages), range(1, 120));
    assert.equal(probe.room.hasMore, false);
  });

  it("members and typing follow the room", async () => {
    const alice = identity("alice");
    const bob = identity("bob");
    const room = roomId("people");
    const probe = newProbe();
    mount(h(StrictMode, null, h(PalaverProvider, { url: srv.url, options: options(alice) }, h(RoomProbe, { room, probe }))));
    await until(() => probe.room?.status === "ready");
    assert.deepEqual(probe.room.members.map((u) => u.id), [alice.id]);
    const { socket } = await connectUser(srv, bob);
    await ok(socket, "room:join", { room });
    await until(() => probe.room.members.some((u) => u.id === bob.id));
    // `typing` is volatile (the server may drop one under load): say it until it shows.
    await until(
      () => {
        if (probe.room.typing.some((u) => u.id === bob.id)) return true;
        socket.emit("typing", { room });
        return false;
      },
      { every: 250 },
    );
    assert.equal(probe.room.typing.length, 1, "only others type");
    await ok(socket, "message:send", { room, text: "done typing" });
    await until(() => probe.room.messages.some((m) => m.text === "done typing"));
    assert.deepEqual(probe.room.typing, [], "a message ends its sender's typing");
    socket.close();
    await until(() => !probe.room.members.some((u) => u.id === bob.id));
  });

  it("a reconnection: missed messages once and in order, a send made meanwhile stored, status reconnecting → connected", async () => {
    const proxy = await tcpProxy(srv);
    try {
      const alice = identity("alice");
      const bob = identity("bob");
      const room = roomId("reconnect");
      const { socket } = await connectUser(srv, bob);
      await ok(socket, "room:join", { room });
      await sendMany(socket, room, 3, (i) => `before ${i}`);
      const probe = newProbe();
      mount(
        h(StrictMode, null, h(PalaverProvider, { url: proxy.url, options: options(alice) }, h(RoomProbe, { room, probe }))),
      );
      await until(() => probe.room?.status === "ready");
      assert.deepEqual(seqs(probe.room.messages), [1, 2, 3]);
      await sendMany(socket, room, 2, (i) => `live ${i}`);
      await until(() => probe.room.messages.length === 5);
      assert.equal(probe.room.unread, 2, "live messages of others are unread");

      proxy.block();
      proxy.cut();
      await until(() => probe.conn.status === "reconnecting");
      await sendMany(socket, room, 3, (i) => `missed ${i}`);
      const sending = probe.room.send("while away");
      await until(() => probe.room.messages.at(-1)?.status === "pending");
      proxy.unblock();
      await sending;
      await until(() => probe.conn.status === "connected" && probe.room.messages.length === 9, {
        what: () => JSON.stringify(probe.room.messages.map((m) => [m.seq, m.status, m.text])),
      });
      const history = await fullHistory(socket, room);
      assert.deepEqual(
        probe.room.messages.map((m) => [m.seq, m.text, m.status]),
        history.map((m) => [m.seq, m.text, "sent"]),
        "the view is history: nothing lost, nothing twice, in order",
      );
      assert.equal(probe.room.unread, 5, "the missed messages are unread too, the user's own is not");
      assert.deepEqual(probe.statuses, ["connecting", "connected", "reconnecting", "connected"]);
      assert.equal(probe.clients.size, 1);
    } finally {
      await proxy.close();
    }
  });
});

describe(`react: useRooms and useConnection [${STORE}]`, () => {
  const srv = useServer(STORE, { flags: FAST });

  it("useRooms lists the user's rooms, most recently active first, with live unread counters", async () => {
    const alice = identity("alice");
    const bob = identity("bob");
    const [quiet, busy] = [roomId("quiet"), roomId("busy")];
    const a = await connectUser(srv, alice);
    const b = await connectUser(srv, bob);
    for (const room of [busy, quiet]) {
      await ok(a.socket, "room:join", { room });
      await ok(b.socket, "room:join", { room });
    }
    await ok(b.socket, "message:send", { room: busy, text: "first" });
    await ok(b.socket, "message:send", { room: quiet, text: "later" });
    a.socket.close();
    const probe = newProbe();
    mount(
      h(StrictMode, null, h(PalaverProvider, { url: srv.url, options: options(alice) }, h(RoomsProbe, { probe }), h(ConnectionProbe, { probe }))),
    );
    await until(() => probe.rooms?.status === "ready");
    const mine = () => probe.rooms.rooms.filter((r) => r.member).map((r) => r.id);
    assert.deepEqual(mine(), [quiet, busy]);
    await ok(b.socket, "message:send", { room: busy, text: "news" });
    await ok(b.socket, "message:send", { room: busy, text: "more news" });
    // Bob's "first" was unread when the list was read (the server's count); two more arrive live.
    await until(() => mine()[0] === busy && probe.rooms.rooms[0].lastSeq === 3 && probe.rooms.rooms[0].unread === 3, {
      what: () => JSON.stringify(probe.rooms.rooms.filter((r) => r.member)),
    });
    // Marking read clears the counter at once, and the server keeps it (a new session says 0).
    const store = ChatStore.of(probe.conn.client);
    await store.markRead(busy);
    await until(() => probe.rooms.rooms.find((r) => r.id === busy).unread === 0);
    const again = await connectUser(srv, alice);
    assert.equal(again.session.rooms.find((r) => r.id === busy).unread, 0);
    again.socket.close();
  });

  it("useConnection: connecting, then connected with the user; a refused token: closed with its code", async () => {
    const alice = identity("alice");
    const probe = newProbe();
    mount(h(StrictMode, null, h(PalaverProvider, { url: srv.url, options: options(alice) }, h(ConnectionProbe, { probe }))));
    await until(() => probe.conn?.status === "connected");
    assert.equal(probe.conn.user.id, alice.id);
    assert.equal(probe.statuses[0], "connecting");

    const refused = newProbe();
    mount(
      h(
        StrictMode,
        null,
        h(PalaverProvider, { url: srv.url, options: options({ auth: { token: "not-a-jwt" } }) }, h(ConnectionProbe, { probe: refused })),
      ),
    );
    await until(() => refused.conn?.status === "closed");
    assert.equal(refused.conn.error.code, "invalid_token");
  });
});

/** Renders useConnection() into `probe`. */
function ConnectionProbe({ probe }) {
  const c = useConnection();
  probe.conn = c;
  if (c.client) {
    probe.clients.add(c.client);
    track(c.client.socket);
  }
  if (probe.statuses.at(-1) !== c.status) probe.statuses.push(c.status);
  return null;
}

function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}
