// Invitations, creation quotas and budgets across two nodes (one Postgres, one Redis): an invitation made on one
// node reaches the invitee's sockets on the other, accepting there works, the creation quota is counted in the
// database and so holds across nodes, and a user's budget is per node.
import assert from "node:assert/strict";
import { describe } from "node:test";

import {
  it,
  identity,
  roomId,
  connect,
  ok,
  fails,
  call,
  until,
  twoNodeGate,
  useTwoNodes,
} from "./harness.mjs";

const gate = await twoNodeGate();

describe("abuse: invitations, quotas and budgets on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, {
    flags: { "room-quota": 2, "read-rate": 1, "read-burst": 3, "user-budget-factor": 1 },
  });

  it("an invitation made on node A reaches the invitee on node B, who accepts there and then hears the room", async () => {
    const alice = identity("alice");
    const bob = identity("bob");
    const a = await connect(nodes[0], alice.auth);
    const b = await connect(nodes[1], bob.auth);
    const invited = new Promise((resolve) => b.socket.once("invitation", resolve));
    const room = roomId("x");
    await ok(a.socket, "room:create", { name: room, visibility: "private", members: [bob.id] });
    assert.equal((await invited).room.id, room);
    await fails(b.socket, "message:send", { room, text: "not yet" }, "forbidden");
    await ok(b.socket, "room:join", { room });
    const heard = [];
    b.socket.on("message", (m) => heard.push(m.text));
    await ok(a.socket, "message:send", { room, text: "across nodes" });
    await until(() => heard.includes("across nodes"), { what: () => `bob heard ${JSON.stringify(heard)}` });
    // Bob's next socket, on node A this time, re-enters the accepted room.
    const b2 = await connect(nodes[0], bob.auth);
    assert.ok(b2.session.rooms.some((r) => r.id === room && r.member));
  });

  it("the creation quota is counted in the database: rooms made on node A count on node B", async () => {
    const maker = identity("maker");
    const a = await connect(nodes[0], maker.auth);
    const b = await connect(nodes[1], maker.auth);
    await ok(a.socket, "room:create", { name: roomId("q") });
    await ok(b.socket, "room:create", { name: roomId("q") });
    await fails(a.socket, "room:create", { name: roomId("q") }, "rate_limited", "third room on node A: ");
    await fails(b.socket, "room:join", { room: roomId("q") }, "rate_limited", "third room on node B: ");
  });

  it("a user's budget is shared by their sockets on a node, and each node has its own", async () => {
    const reader = identity("reader");
    const a1 = await connect(nodes[0], reader.auth);
    const a2 = await connect(nodes[0], reader.auth);
    const b1 = await connect(nodes[1], reader.auth);
    const onA = await Promise.all([a1, a2, a1, a2, a1, a2].map(({ socket }) => call(socket, "rooms:list", {})));
    assert.equal(onA.filter((x) => x.ok).length, 3, "two sockets on node A share the user's burst of 3");
    const onB = await Promise.all([1, 2, 3].map(() => call(b1.socket, "rooms:list", {})));
    assert.equal(onB.filter((x) => x.ok).length, 3, "node B has its own budget for the user");
  });
});
