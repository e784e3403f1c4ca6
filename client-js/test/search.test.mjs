// messages:search: every word, newest first, UTF-16 highlights, readable rooms only, paging, the same word rules on
// SQLite (FTS5) and Postgres (GIN full-text index); errors; a message committed on one node found on the other.
import assert from "node:assert/strict";
import { describe } from "node:test";

import {
  STORES,
  FAST,
  useServer,
  it,
  connect,
  identity,
  roomId,
  rand,
  ok,
  fails,
  sdkClient,
  twoNodeGate,
  useTwoNodes,
} from "./harness.mjs";

/** A word no other test uses (letters only), so namespace-wide searches see this test's messages alone. */
const unique = (label) => `${label}${rand(4).replace(/\d/g, (d) => "abcdefghij"[d])}`;

/** The texts of a search's results, in order. */
const texts = (reply) => reply.results.map((r) => r.message.text);

/** The highlighted parts of a result, as the client would cut them. */
const marked = (result) => result.highlights.map(([start, end]) => result.message.text.slice(start, end));

for (const store of STORES) {
  describe(`search [${store}]`, () => {
    const srv = useServer(store, { flags: FAST });

    it("finds messages holding every word, newest first, with the matching spans", async () => {
      const w = unique("zephyr");
      const { socket } = await connect(srv, identity("ann").auth);
      const room = roomId("s");
      await ok(socket, "room:join", { room });
      const sent = [];
      for (const text of [
        `The ${w} release notes are out`,
        `no match here`,
        `👋 ${w.toUpperCase()}: release, again`,
        `${w} without the other word`,
      ]) {
        sent.push((await ok(socket, "message:send", { room, text })).message);
      }
      const reply = await ok(socket, "messages:search", { query: `release ${w}`, room });
      assert.deepEqual(texts(reply), [sent[2].text, sent[0].text], "both words, newest first");
      assert.equal(reply.hasMore, false);
      assert.deepEqual(reply.results[0].message, sent[2], "the stored message");
      assert.deepEqual(marked(reply.results[0]), [w.toUpperCase(), "release"]);
      assert.deepEqual(reply.results[0].highlights[0], [3, 3 + w.length], "UTF-16 offsets: 👋 counts 2");
      assert.deepEqual(marked(reply.results[1]), [w, "release"]);
    });

    it("word rules: case folded, accents kept, punctuation splits, whole words, word* a prefix", async () => {
      const w = unique("quokka");
      const { socket } = await connect(srv, identity("ann").auth);
      const room = roomId("s");
      await ok(socket, "room:join", { room });
      for (const text of [`${w} École`, `${w} ecole`, `${w} mail ann@example.com`, `${w} releases`, `${w} 3.14`]) {
        await ok(socket, "message:send", { room, text });
      }
      const find = async (query) => texts(await ok(socket, "messages:search", { query: `${w} ${query}`, room }));
      assert.deepEqual(await find("école"), [`${w} École`]);
      assert.deepEqual(await find("ÉCOLE"), [`${w} École`]);
      assert.deepEqual(await find("ecole"), [`${w} ecole`], "accents are kept");
      assert.deepEqual(await find("example"), [`${w} mail ann@example.com`]);
      assert.deepEqual(await find("ann@example.com"), [`${w} mail ann@example.com`]);
      assert.deepEqual(await find("release"), [], "no stemming, whole words");
      assert.deepEqual(await find("releas*"), [`${w} releases`]);
      assert.deepEqual(await find("14"), [`${w} 3.14`]);
      const prefix = await ok(socket, "messages:search", { query: `${w} rel*`, room });
      assert.deepEqual(marked(prefix.results[0]), [w, "releases"]);
    });

    it("covers the rooms the user joined and public rooms, not others' private rooms or DMs", async () => {
      const w = unique("marmot");
      const ann = identity("ann");
      const bob = identity("bob");
      const a = (await connect(srv, ann.auth)).socket;
      const b = (await connect(srv, bob.auth)).socket;
      const open = roomId("open");
      const mine = roomId("mine");
      const theirs = roomId("theirs");
      await ok(b, "room:create", { name: open });
      await ok(b, "message:send", { room: open, text: `${w} in a public room ann never joined` });
      await ok(a, "room:create", { name: mine, visibility: "private" });
      await ok(a, "message:send", { room: mine, text: `${w} in ann's private room` });
      await ok(b, "room:create", { name: theirs, visibility: "private" });
      await ok(b, "message:send", { room: theirs, text: `${w} in bob's private room` });
      await ok(b, "dm:send", { to: identity("carol").id, text: `${w} in bob's DM with carol` });
      const dm = await ok(b, "dm:send", { to: ann.id, text: `${w} in bob's DM with ann` });

      const all = await ok(a, "messages:search", { query: w });
      assert.deepEqual(texts(all), [
        `${w} in bob's DM with ann`,
        `${w} in ann's private room`,
        `${w} in a public room ann never joined`,
      ]);
      assert.equal(all.results[0].message.room, dm.message.room);
      await fails(a, "messages:search", { query: w, room: theirs }, "forbidden", "bob's private room: ");
      await fails(a, "messages:search", { query: w, room: roomId("nowhere") }, "not_found");
      assert.deepEqual(texts(await ok(a, "messages:search", { query: w, room: open })), [
        `${w} in a public room ann never joined`,
      ]);
      // A guest reads public rooms too.
      const guest = (await connect(srv, { name: "guest" })).socket;
      assert.deepEqual(texts(await ok(guest, "messages:search", { query: w })), [`${w} in a public room ann never joined`]);
    });

    it("pages with limit, hasMore and before", async () => {
      const w = unique("wombat");
      const { socket } = await connect(srv, identity("ann").auth);
      const room = roomId("s");
      await ok(socket, "room:join", { room });
      for (let i = 1; i <= 5; i++) await ok(socket, "message:send", { room, text: `${w} number ${i}` });
      const first = await ok(socket, "messages:search", { query: w, limit: 2 });
      assert.deepEqual(texts(first), [`${w} number 5`, `${w} number 4`]);
      assert.equal(first.hasMore, true);
      const next = await ok(socket, "messages:search", { query: w, limit: 2, before: first.results[1].message.id });
      assert.deepEqual(texts(next), [`${w} number 3`, `${w} number 2`]);
      assert.equal(next.hasMore, true);
      const last = await ok(socket, "messages:search", { query: w, limit: 2, before: next.results[1].message.id });
      assert.deepEqual(texts(last), [`${w} number 1`]);
      assert.equal(last.hasMore, false);
      assert.equal((await ok(socket, "messages:search", { query: w })).results.length, 5, "default limit 20");
    });

    it("the SDK: search(query, { room, limit, before })", async () => {
      const w = unique("tapir");
      const client = await sdkClient(srv.url, { auth: identity("ann").auth });
      const room = roomId("s");
      await client.join(room);
      const sent = [];
      for (const text of [`${w} one`, `${w} two`, `${w} three`]) sent.push(await client.send(room, text));
      const first = await client.search(w, { room, limit: 2 });
      assert.deepEqual(first.results.map((r) => r.message.id), [sent[2].id, sent[1].id]);
      assert.equal(first.hasMore, true);
      const rest = await client.search(w, { room, before: first.results[1].message.id });
      assert.deepEqual(rest.results.map((r) => r.message.text), [`${w} one`]);
      await assert.rejects(client.search("!!"), (err) => err.code === "bad_request");
    });

    it("bad payloads are bad_request", async () => {
      const { socket } = await connect(srv, identity("ann").auth);
      const room = roomId("s");
      await ok(socket, "room:join", { room });
      for (const [payload, what] of [
        [{}, "no query"],
        [{ query: 7 }, "query not a string"],
        [{ query: "" }, "empty query"],
        [{ query: " *!? -- " }, "no word"],
        [{ query: "a b c d e f g h i" }, "nine words"],
        [{ query: "x".repeat(201) }, "201 characters"],
        [{ query: "bad\u0000word" }, "control character"],
        [{ query: "ok", limit: 0 }, "limit 0"],
        [{ query: "ok", limit: 51 }, "limit 51"],
        [{ query: "ok", limit: "5" }, "limit not a number"],
        [{ query: "ok", before: "abc" }, "before not an id"],
        [{ query: "ok", before: 12 }, "before not a string"],
        [{ query: "ok", room: "bad room" }, "bad room id"],
        [{ query: "ok", rooms: [room] }, "unknown field"],
        ["ok", "not an object"],
      ]) {
        await fails(socket, "messages:search", payload, "bad_request", `${what}: `);
      }
      await ok(socket, "messages:search", { query: "a b c d e f g h", room, limit: 50 });
    });
  });
}

const gate = await twoNodeGate();

describe("search on two nodes (Postgres + Redis)", { skip: gate.skip }, () => {
  const nodes = useTwoNodes(gate, { label: "palaver/search", flags: FAST });

  it("a message committed through node A is found from node B, by the same rules", async () => {
    const [A, B] = nodes;
    const w = unique("ocelot");
    const ann = identity("ann");
    const a = (await connect(A, ann.auth)).socket;
    const room = roomId("s");
    await ok(a, "room:join", { room });
    const { message } = await ok(a, "message:send", { room, text: `${w}: Ann@Example.com wrote this` });
    const b = (await connect(B, ann.auth)).socket;
    const reply = await ok(b, "messages:search", { query: `${w} example`, room });
    assert.deepEqual(reply.results.map((r) => r.message), [message]);
    assert.deepEqual(marked(reply.results[0]), [w, "Example"]);
  });
});
