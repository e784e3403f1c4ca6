// ChatStore (the held state under the React bindings) against a real palaver: after a reconnection it applies the
// change feed (edits, deletes, reactions, read state) to the messages it holds without reading history again; it
// knows the user's role in each room and whether they are an admin; leaving, a kick and a ban take the room out of
// its state and the view says why.
//
// The store does not depend on the database, so this suite runs on one store: SQLite unless PALAVER_TEST_STORES
// leaves it out.
import assert from "node:assert/strict";
import { describe } from "node:test";

import { ChatStore } from "../dist/index.js";
import {
  FAST,
  STORES,
  identity,
  it,
  outgoing,
  roomId,
  sdkClient,
  short,
  tcpProxy,
  until,
  useServer,
} from "./harness.mjs";

const STORE = STORES.includes("sqlite") ? "sqlite" : STORES[0];

/** A store over a new SDK client of `user` on `url`, holding `room` (watched until the test ends). */
async function holding(url, user, room, stores) {
  const client = await sdkClient(url, { auth: user.auth });
  const store = ChatStore.of(client);
  stores.push(store);
  store.subscribeRoom(room, () => {});
  await until(() => store.roomView(room).status === "ready", { what: () => short(store.roomView(room)) });
  return { client, store, view: () => store.roomView(room) };
}

/** A held message of the view by seq. */
const bySeq = (view, seq) => view.messages.find((m) => m.seq === seq);

/** Calls `fn(stores)`, then disposes of every store it made. */
async function withStores(fn) {
  const stores = [];
  try {
    await fn(stores);
  } finally {
    for (const s of stores) s.dispose();
  }
}

describe(`ChatStore: the change feed after a reconnection [${STORE}]`, () => {
  const srv = useServer(STORE, { flags: FAST });

  it("edits, deletes, reactions and reads made while away show in the held messages, and history is not read", async () =>
    withStores(async (stores) => {
      const proxy = await tcpProxy(srv);
      try {
        const room = roomId("away");
        const [readerId, writerId, carolId] = [identity("reader"), identity("writer"), identity("carol")];
        const reader = await sdkClient(proxy.url, { auth: readerId.auth });
        const fetches = outgoing(reader.socket, "history:fetch");
        const store = ChatStore.of(reader);
        stores.push(store);
        store.subscribeRoom(room, () => {});
        store.subscribeRooms(() => {});
        await until(() => store.roomView(room).status === "ready");
        const view = () => store.roomView(room);

        const writer = await sdkClient(srv.url, { auth: writerId.auth });
        await writer.join(room);
        const carol = await sdkClient(srv.url, { auth: carolId.auth });
        await carol.join(room);
        for (let i = 1; i <= 4; i++) await writer.send(room, `m${i}`);
        await writer.addReaction(room, 2, "👍");
        await until(() => view().messages.length === 4 && bySeq(view(), 2).reactions?.length === 1, {
          what: () => short(view()),
        });
        assert.equal(view().unread, 4, "the writer's messages are unread");

        // Away: the reader's transport is cut and held while the others change what it holds.
        proxy.block();
        proxy.cut();
        await until(() => store.connection().status === "reconnecting");
        const editedAt = (await writer.editMessage(room, 1, "m1, edited")).editedAt;
        await writer.deleteMessage(room, 4);
        await writer.addReaction(room, 3, "🔥");
        await carol.addReaction(room, 3, "👍");
        await writer.removeReaction(room, 2, "👍");
        await writer.send(room, "m5");
        const device = await sdkClient(srv.url, { auth: readerId.auth });
        await device.session;
        await device.markRead(room, 2);
        proxy.unblock();

        await until(
          () =>
            store.connection().status === "connected" &&
            !reader.recovering &&
            view().messages.length === 5 &&
            bySeq(view(), 1).text === "m1, edited" &&
            bySeq(view(), 4).deleted === true &&
            bySeq(view(), 3).reactions?.length === 2 &&
            view().lastRead === 2,
          { what: () => short(view().messages.map((m) => [m.seq, m.text, m.deleted, m.reactions])) },
        );
        const v = view();
        assert.equal(bySeq(v, 1).editedAt, editedAt, "the edit as stored");
        assert.deepEqual([bySeq(v, 4).text, bySeq(v, 4).deleted], ["", true], "a tombstone");
        assert.deepEqual(bySeq(v, 2).reactions ?? [], [], "the reaction taken back while away is gone");
        assert.deepEqual(bySeq(v, 3).reactions, [
          { emoji: "🔥", count: 1, me: false },
          { emoji: "👍", count: 1, me: false },
        ]);
        assert.deepEqual(
          v.messages.map((m) => m.seq),
          [1, 2, 3, 4, 5],
          "every message once, in order",
        );
        assert.equal(v.unread, 2, "after the read up to 2: 3 and 5 (4 is deleted)");
        await until(() => store.roomsView().rooms.find((r) => r.id === room)?.lastSeq === 5);
        assert.equal(store.roomsView().rooms.find((r) => r.id === room).unread, 2, "the room list agrees");
        assert.deepEqual(fetches, [], "no history:fetch: the changes came with the catch-up");
      } finally {
        await proxy.close();
      }
    }));
});

describe(`ChatStore: roles, leaving, kicks and bans [${STORE}]`, () => {
  const srv = useServer(STORE, { flags: FAST });

  it("the view has the user's role and whether they moderate: owner, member made moderator live, admin, a DM", async () =>
    withStores(async (stores) => {
      const room = roomId("roles");
      const [ownerId, memberId, rootId] = [identity("owner"), identity("member"), identity("root", { roles: ["admin"] })];
      const boss = await sdkClient(srv.url, { auth: ownerId.auth });
      await boss.createRoom(room);
      const owner = await holding(srv.url, ownerId, room, stores);
      assert.deepEqual([owner.view().role, owner.view().moderator], ["owner", true]);
      assert.equal(owner.store.connection().admin, false);

      const member = await holding(srv.url, memberId, room, stores);
      assert.deepEqual([member.view().role, member.view().moderator], ["member", false]);
      const unsubscribe = member.store.subscribeRooms(() => {});
      await until(() => member.store.roomsView().status === "ready");
      assert.equal(member.store.roomsView().rooms.find((r) => r.id === room)?.role, "member", "rooms:list says it");
      await boss.setRole(room, memberId.id, "moderator");
      await until(() => member.view().role === "moderator", { what: () => short(member.view()) });
      assert.equal(member.view().moderator, true);
      assert.equal(member.store.roomsView().rooms.find((r) => r.id === room)?.role, "moderator", "the list follows");
      await boss.setRole(room, memberId.id, "member");
      await until(() => member.view().role === "member" && !member.view().moderator);
      unsubscribe();

      const root = await holding(srv.url, rootId, room, stores);
      assert.equal(root.store.connection().admin, true, "session.admin");
      assert.deepEqual([root.view().role, root.view().moderator], ["member", true], "an admin moderates every group room");

      // A DM has no roles, and nobody moderates it, not even an admin.
      const dm = (await root.client.dm(memberId.id, "hello")).room;
      root.store.subscribeRoom(dm, () => {});
      await until(() => root.store.roomView(dm).status === "ready");
      assert.deepEqual([root.store.roomView(dm).role, root.store.roomView(dm).moderator], [undefined, false]);
    }));

  it("a kick takes the room out of the store and says who; rejoin joins again; a ban says until when", async () =>
    withStores(async (stores) => {
      const room = roomId("kick");
      const [ownerId, memberId] = [identity("owner"), identity("member")];
      const boss = await sdkClient(srv.url, { auth: ownerId.auth });
      await boss.createRoom(room);
      await boss.send(room, "welcome");
      const member = await holding(srv.url, memberId, room, stores);
      member.store.subscribeRooms(() => {});
      await until(() => member.store.roomsView().rooms.some((r) => r.id === room && r.member));
      await boss.send(room, "unread one");
      await until(() => member.view().unread === 1);

      await boss.kick(room, memberId.id);
      await until(() => member.view().status === "left", { what: () => short(member.view()) });
      const v = member.view();
      assert.deepEqual(v.left.kind, "kick");
      assert.deepEqual(v.left.by, { id: ownerId.id, name: ownerId.name });
      assert.deepEqual([v.messages, v.members, v.unread, v.role, v.moderator], [[], [], 0, undefined, false]);
      const listed = member.store.roomsView().rooms.find((r) => r.id === room);
      assert.deepEqual([listed.member, listed.unread], [false, 0], "a public room stays listed, not as the user's");
      assert.equal(member.client.lastSeq(room), undefined, "the client no longer follows it");
      await assert.rejects(member.store.send(room, "still here?"), (err) => err.code === "forbidden");

      member.store.rejoin(room);
      await until(() => member.view().status === "ready", { what: () => short(member.view()) });
      assert.deepEqual(
        member.view().messages.map((m) => m.text),
        ["welcome", "unread one"],
      );
      assert.equal(member.view().left, undefined);
      await member.store.send(room, "back");

      const until_ = new Date(Date.now() + 3600_000).toISOString();
      await boss.ban(room, memberId.id, until_);
      await until(() => member.view().status === "left");
      assert.equal(member.view().left.kind, "ban");
      assert.equal(Date.parse(member.view().left.until), Date.parse(until_));
      member.store.rejoin(room);
      await until(() => member.view().status === "error");
      assert.equal(member.view().error.code, "forbidden");
      assert.match(member.view().error.message, /banned/);
    }));

  it("leave(): the membership goes on the server, a private room leaves the list, the view says left", async () =>
    withStores(async (stores) => {
      const room = roomId("leave");
      const [ownerId, memberId] = [identity("owner"), identity("member")];
      const boss = await sdkClient(srv.url, { auth: ownerId.auth });
      await boss.createRoom(room, { visibility: "private", members: [memberId.id] });
      await boss.send(room, "hi");
      const member = await holding(srv.url, memberId, room, stores);
      member.store.subscribeRooms(() => {});
      await until(() => member.store.roomsView().rooms.some((r) => r.id === room && r.member));
      await member.store.leave(room);
      assert.equal(member.view().status, "left");
      assert.equal(member.view().left.kind, "leave");
      assert.deepEqual(member.view().messages, []);
      assert.equal(member.store.roomsView().rooms.some((r) => r.id === room), false);
      const rooms = await member.client.rooms();
      assert.equal(rooms.some((r) => r.id === room && r.member), false, "the server agrees");
    }));
});
