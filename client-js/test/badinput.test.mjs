// Bad input: every event answers malformed payloads with bad_request and the server stays up;
// an oversized packet closes only the offending connection.
import assert from "node:assert/strict";
import { describe, before } from "node:test";
import {
  STORES,
  FAST,
  useServer,
  it,
  connect,
  identity,
  roomId,
  ok,
  fails,
  callArgs,
  waitFor,
  waitDisconnect,
} from "./harness.mjs";

const EVENTS = [
  "room:create",
  "room:join",
  "room:leave",
  "message:send",
  "dm:send",
  "history:fetch",
  "rooms:list",
  "presence:list",
  "typing",
  "message:edit",
  "message:delete",
  "reaction:add",
  "reaction:remove",
  "room:read",
];

/** Payload shapes that are not one object, as emit argument lists. */
const NOT_AN_OBJECT = [
  ["no payload", []],
  ["a string", ["hello"]],
  ["a number", [42]],
  ["an array", [[{ room: "x" }]]],
  ["null", [null]],
  ["a boolean", [true]],
];

for (const store of STORES) {
  describe(`bad input [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });
    const alice = identity("alice");
    const bob = identity("bob");
    const room = roomId("bad");

    before(async () => {
      // bob must exist for dm:send cases to be about the payload, not about the user
      const { socket } = await connect(srv, bob.auth);
      socket.close();
    });

    /** alice, connected and in `room` (a socket she re-enters on connect). */
    async function aliceInRoom() {
      const a = await connect(srv, alice.auth);
      await ok(a.socket, "room:join", { room });
      return a.socket;
    }

    /** Sends each case and returns the list of mismatches (empty when all were bad_request). */
    async function probe(socket, event, cases) {
      const wrong = [];
      for (const [label, args] of cases) {
        let ack;
        try {
          ack = await callArgs(socket, event, args);
        } catch (err) {
          wrong.push(`${event} with ${label}: no ack (${err.message})`);
          if (!socket.connected) {
            wrong.push(`(socket disconnected after ${event} with ${label}; stopping)`);
            break;
          }
          continue;
        }
        const good =
          ack &&
          ack.ok === false &&
          ack.error?.code === "bad_request" &&
          typeof ack.error.message === "string" &&
          ack.error.message.length > 0;
        if (!good) wrong.push(`${event} with ${label}: ${JSON.stringify(ack)}`);
      }
      return wrong;
    }

    for (const event of EVENTS) {
      it(`${event}: a payload that is not one object is bad_request`, async () => {
        const s = await aliceInRoom();
        const wrong = await probe(s, event, NOT_AN_OBJECT);
        assert.deepEqual(wrong, [], "every case should be { ok:false, error:{ code:'bad_request', message } }");
        await ok(s, "rooms:list", {}, "after the bad calls: ");
      });
    }

    const long = (n) => "x".repeat(n);
    const FIELD_CASES = {
      "room:create": [
        ["missing name", { visibility: "public" }],
        ["name a number", { name: 42 }],
        ["name null", { name: null }],
        ["visibility a number", { name: roomId("v"), visibility: 1 }],
        ["visibility not public/private", { name: roomId("v"), visibility: "secret" }],
        ["members a string", { name: roomId("m"), members: "bob" }],
        ["members with a number", { name: roomId("m"), members: [1] }],
      ],
      "room:join": [
        ["missing room", {}],
        ["room a number", { room: 42 }],
        ["room an object", { room: { id: "x" } }],
        ["room with a space", { room: "a b" }],
        ["limit a string", { room, limit: "10" }],
        ["limit fractional", { room, limit: 1.5 }],
        ["limit negative", { room, limit: -1 }],
      ],
      "room:leave": [
        ["missing room", {}],
        ["room a number", { room: 42 }],
        ["room an array", { room: [room] }],
      ],
      "message:send": [
        ["missing room", { text: "hi" }],
        ["room a number", { room: 42, text: "hi" }],
        ["missing text", { room }],
        ["text a number", { room, text: 42 }],
        ["text null", { room, text: null }],
        ["text an array", { room, text: ["hi"] }],
        ["clientId a number", { room, text: "hi", clientId: 42 }],
        ["clientId empty", { room, text: "hi", clientId: "" }],
        ["clientId 65 characters", { room, text: "hi", clientId: long(65) }],
      ],
      "dm:send": [
        ["missing to", { text: "hi" }],
        ["to a number", { to: 42, text: "hi" }],
        ["missing text", { to: bob.id }],
        ["text a number", { to: bob.id, text: 42 }],
        ["text an object", { to: bob.id, text: { t: "hi" } }],
        ["clientId an object", { to: bob.id, text: "hi", clientId: {} }],
      ],
      "history:fetch": [
        ["missing room", {}],
        ["room a number", { room: 42 }],
        ["before a string", { room, before: "5" }],
        ["after a boolean", { room, after: true }],
        ["before fractional", { room, before: 1.5 }],
        ["limit a string", { room, limit: "10" }],
        ["limit 0", { room, limit: 0 }],
        ["limit 101", { room, limit: 101 }],
      ],
      "presence:list": [
        ["missing room", {}],
        ["room a number", { room: 42 }],
      ],
      typing: [
        ["missing room", {}],
        ["room a number", { room: 42 }],
      ],
      "message:edit": [
        ["missing seq", { room, text: "x" }],
        ["seq a string", { room, seq: "1", text: "x" }],
        ["seq 0", { room, seq: 0, text: "x" }],
        ["missing text", { room, seq: 1 }],
        ["text a number", { room, seq: 1, text: 1 }],
      ],
      "message:delete": [
        ["missing seq", { room }],
        ["seq fractional", { room, seq: 1.5 }],
        ["seq negative", { room, seq: -1 }],
      ],
      "reaction:add": [
        ["missing emoji", { room, seq: 1 }],
        ["emoji text", { room, seq: 1, emoji: "like" }],
        ["two emoji", { room, seq: 1, emoji: "👍👍" }],
        ["emoji a number", { room, seq: 1, emoji: 1 }],
      ],
      "reaction:remove": [
        ["missing seq", { room, emoji: "👍" }],
        ["emoji empty", { room, seq: 1, emoji: "" }],
      ],
      "room:read": [
        ["missing seq", { room }],
        ["seq a string", { room, seq: "3" }],
        ["seq 0", { room, seq: 0 }],
      ],
      "message:send (replyTo)": [
        ["replyTo a string", { room, text: "hi", replyTo: "1" }],
        ["replyTo 0", { room, text: "hi", replyTo: 0 }],
      ],
    };

    for (const [label, cases] of Object.entries(FIELD_CASES)) {
      const event = label.split(" ")[0];
      it(`${label}: missing or wrong-typed fields are bad_request`, async () => {
        const s = await aliceInRoom();
        const wrong = await probe(
          s,
          event,
          cases.map(([label, payload]) => [label, [payload]]),
        );
        assert.deepEqual(wrong, [], "every case should be { ok:false, error:{ code:'bad_request', message } }");
      });
    }

    it("a bad payload without an ack callback comes as chat:error", async () => {
      const s = await aliceInRoom();
      const got = waitFor(s, "chat:error", (e) => e.event === "room:join");
      s.emit("room:join", "not an object");
      const e = await got;
      assert.equal(e.error.code, "bad_request");
      assert.ok(typeof e.error.message === "string" && e.error.message.length > 0);
    });

    it("the server stays up after all of that: valid calls work on a new connection", async () => {
      const s = await aliceInRoom();
      const m = await ok(s, "message:send", { room, text: "still alive" });
      assert.ok(m.message.seq >= 1);
      const b = await connect(srv, bob.auth);
      const d = await ok(b.socket, "dm:send", { to: alice.id, text: "me too" });
      assert.ok(d.message.room.startsWith("dm:"));
      const h = await ok(s, "history:fetch", { room });
      assert.equal(h.messages.at(-1).text, "still alive");
    });

    it("room:create with more than 100 members is too_large", async () => {
      const s = await aliceInRoom();
      const members = Array.from({ length: 101 }, (_, i) => `u-${i}`);
      await fails(s, "room:create", { name: roomId("m"), members }, "too_large");
    });

    it("a 60 KiB text (under the packet limit) is too_large and the connection stays", async () => {
      const s = await aliceInRoom();
      await fails(s, "message:send", { room, text: long(60 * 1024) }, "too_large");
      assert.equal(s.connected, true);
      await ok(s, "rooms:list", {});
    });

    it("a packet over 64 KiB closes only that client's connection", async () => {
      const victim = await aliceInRoom();
      const other = await connect(srv, bob.auth);
      await ok(other.socket, "room:join", { room });

      const closed = waitDisconnect(victim, 5000);
      victim.timeout(3000).emit("message:send", { room, text: long(70 * 1024) }, () => {});
      const reason = await closed;
      assert.equal(victim.connected, false, `victim disconnected (${reason})`);

      assert.equal(other.socket.connected, true, "the other client is still connected");
      const m = await ok(other.socket, "message:send", { room, text: "unaffected" });
      assert.equal(m.message.text, "unaffected");
      const fresh = await connect(srv, alice.auth);
      await ok(fresh.socket, "rooms:list", {});
    });
  });
}
