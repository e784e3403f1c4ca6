// Connecting: anonymous users, auth.name, JWTs and their refusal codes, the session event.
import assert from "node:assert/strict";
import { describe } from "node:test";
import {
  STORES,
  useServer,
  it,
  connect,
  connectRefused,
  assertUnauthorized,
  assertUser,
  token,
  identity,
  rand,
  call,
  signRaw,
} from "./harness.mjs";

const NAME_SHAPE = /^[a-z]+-[a-z]+-\d+$/;

for (const store of STORES) {
  describe(`connect: anonymous users [${store}]`, () => {
    const srv = useServer(store);

    it("no auth: a random readable name (word-word-digits) and a fresh anon- id per connection", async () => {
      const a = await connect(srv);
      const b = await connect(srv);
      for (const { session } of [a, b]) {
        assertUser(session.user, { anonymous: true });
        assert.match(session.user.name, NAME_SHAPE, `random name ${JSON.stringify(session.user.name)}`);
        assert.ok(session.user.id.startsWith("anon-"), `anonymous id ${JSON.stringify(session.user.id)}`);
        assert.ok(Array.isArray(session.rooms), "session.rooms should be an array");
      }
      assert.notEqual(a.session.user.id, b.session.user.id, "each anonymous connection gets its own user id");
    });

    it("the same anonymous client reconnecting gets a new user id", async () => {
      const a = await connect(srv, { name: "ada" });
      a.socket.close();
      const b = await connect(srv, { name: "ada" });
      assert.notEqual(a.session.user.id, b.session.user.id);
    });

    it("auth.name is honoured and trimmed", async () => {
      const { session } = await connect(srv, { name: "  Ada Lovelace \t" });
      assertUser(session.user, { name: "Ada Lovelace", anonymous: true });
      assert.ok(session.user.id.startsWith("anon-"));
    });

    it("auth.name of exactly 32 characters and non-ASCII printable characters are accepted", async () => {
      const name32 = "n".repeat(32);
      const a = await connect(srv, { name: name32 });
      assert.equal(a.session.user.name, name32);
      const b = await connect(srv, { name: "Zoë 🦦 Ümlaut" });
      assert.equal(b.session.user.name, "Zoë 🦦 Ümlaut");
    });

    for (const [label, name] of [
      ["empty", ""],
      ["whitespace only", "   \t "],
      ["33 characters", "x".repeat(33)],
      ["a control character (\\u0001)", "bad\u0001name"],
      ["an embedded newline", "two\nlines"],
      ["DEL (\\u007f)", "del\u007f"],
    ]) {
      it(`auth.name ${label} is refused with invalid_name`, async () => {
        const err = await connectRefused(srv, { name });
        assertUnauthorized(err, "invalid_name");
      });
    }

    it("the server keeps accepting connections after refusals", async () => {
      await connectRefused(srv, { name: "" });
      const { session } = await connect(srv, { name: "after" });
      assert.equal(session.user.name, "after");
    });
  });

  describe(`connect: JWT [${store}]`, () => {
    const srv = useServer(store);

    it("a valid HS256 token: user id = sub, display name = name claim", async () => {
      const sub = `u-${rand()}`;
      const { session } = await connect(srv, {
        token: token(sub, { name: "Alice", preferred_username: "alice99" }),
      });
      assertUser(session.user, { id: sub, name: "Alice", anonymous: false });
      assert.ok(Array.isArray(session.rooms));
    });

    it("without a name claim the display name is preferred_username", async () => {
      const sub = `u-${rand()}`;
      const { session } = await connect(srv, { token: token(sub, { preferred_username: "bobby" }) });
      assertUser(session.user, { id: sub, name: "bobby", anonymous: false });
    });

    it("without name and preferred_username the display name is sub", async () => {
      const sub = `u-${rand()}`;
      const { session } = await connect(srv, { token: token(sub) });
      assertUser(session.user, { id: sub, name: sub, anonymous: false });
    });

    it("the token wins over auth.name", async () => {
      const sub = `u-${rand()}`;
      const { session } = await connect(srv, { token: token(sub, { name: "Real" }), name: "Fake" });
      assertUser(session.user, { id: sub, name: "Real", anonymous: false });
    });

    it("two connections with the same token are the same user", async () => {
      const u = identity("twin");
      const a = await connect(srv, u.auth);
      const b = await connect(srv, u.auth);
      assert.equal(a.session.user.id, u.id);
      assert.equal(b.session.user.id, u.id);
    });

    it("a bad signature is refused with bad_signature", async () => {
      const err = await connectRefused(srv, { token: token(`u-${rand()}`, {}, { secret: "not-the-secret" }) });
      assertUnauthorized(err, "bad_signature");
    });

    it("an expired token is refused with expired", async () => {
      const exp = Math.floor(Date.now() / 1000) - 3600;
      const err = await connectRefused(srv, { token: token(`u-${rand()}`, { exp }) });
      assertUnauthorized(err, "expired");
    });

    it("a token without sub is refused with missing_sub", async () => {
      const err = await connectRefused(srv, { token: token(undefined, { name: "Nobody" }) });
      assertUnauthorized(err, "missing_sub");
    });

    it("a token with an empty sub is refused with missing_sub", async () => {
      const err = await connectRefused(srv, { token: token("", { name: "Nobody" }) });
      assertUnauthorized(err, "missing_sub");
    });

    it("an HS384 token (another algorithm) is refused with wrong_algorithm", async () => {
      const err = await connectRefused(srv, { token: token(`u-${rand()}`, {}, { algorithm: "HS384" }) });
      assertUnauthorized(err, "wrong_algorithm");
    });

    for (const [label, tok] of [
      ["garbage", "garbage"],
      ["three dotted garbage parts", "abc.def.ghi"],
      ["correctly signed but its payload is not JSON", signRaw("nope")],
      ["correctly signed but its payload is a JSON array", signRaw("[1,2,3]")],
    ]) {
      it(`a token that is ${label} is refused with invalid_token`, async () => {
        const err = await connectRefused(srv, { token: tok });
        assertUnauthorized(err, "invalid_token");
      });
    }

    it("the session event carries { user, rooms } and rooms the user is in come back on reconnect", async () => {
      const u = identity("sess");
      const first = await connect(srv, u.auth);
      const room = `sess-${rand()}`;
      const ack = await call(first.socket, "room:join", { room });
      assert.equal(ack.ok, true, JSON.stringify(ack));
      first.socket.close();
      const again = await connect(srv, u.auth);
      assertUser(again.session.user, { id: u.id });
      const entry = again.session.rooms.find((r) => r.id === room);
      assert.ok(entry, `session.rooms should list ${room}: ${JSON.stringify(again.session.rooms.map((r) => r.id))}`);
      assert.equal(entry.member, true);
      assert.equal(entry.lastSeq, 0);
    });
  });

  describe(`connect: --anonymous false [${store}]`, () => {
    const srv = useServer(store, { flags: { anonymous: false } });

    it("no token is refused with missing_token", async () => {
      const err = await connectRefused(srv);
      assertUnauthorized(err, "missing_token");
    });

    it("auth.name without a token is refused with missing_token", async () => {
      const err = await connectRefused(srv, { name: "ada" });
      assertUnauthorized(err, "missing_token");
    });

    it("a valid token is accepted", async () => {
      const u = identity("signed");
      const { session } = await connect(srv, u.auth);
      assertUser(session.user, { id: u.id, name: u.name, anonymous: false });
    });
  });

  describe(`connect: no JWT key configured [${store}]`, () => {
    const srv = useServer(store, { jwtSecret: null });

    it("a token is refused with not_configured", async () => {
      const err = await connectRefused(srv, { token: token(`u-${rand()}`) });
      assertUnauthorized(err, "not_configured");
    });

    it("anonymous users still connect", async () => {
      const { session } = await connect(srv);
      assertUser(session.user, { anonymous: true });
    });
  });

  describe(`connect: namespaces [${store}]`, () => {
    const srv = useServer(store);

    it('an unknown namespace is refused with "Invalid namespace"', async () => {
      const err = await connectRefused(srv, undefined, { ns: "/nope" });
      assert.equal(err.message, "Invalid namespace");
    });
  });
}
