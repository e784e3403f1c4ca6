// What a profile can express, beyond the shipped ones, through the stock socket.io-client: a first event carrying
// the user's name, rooms named by events (bare strings, free text in any script) and in each send, delivery to
// everyone else, acks in the app's own shape (an error string as the only argument), history as one event with an
// array on join, typing relayed with the user's name, join/leave notices carrying the number online and the
// member list, and palaver's own events switched on per profile. The profile is the kind of "join_room /
// send_message" React chat our users run.
import assert from "node:assert/strict";
import { describe } from "node:test";

import {
  STORES,
  ACK_TIMEOUT_MS,
  useServer,
  it,
  client,
  rand,
  waitFor,
  collect,
  until,
  short,
} from "./harness.mjs";

const ROOMS_APP = `
[profile]
name = "rooms-app"

[identity]
trust_client_names = true

[history]
replay = "on_join"
limit = 20

[[on]]
event = "add user"
op = "identify"
name = "$0"
ack = [{ username = "{user.name}" }]

[[on]]
event = "join_room"
op = "join"
room = "$0"
ack = [{ room = "{room}", online = "{online}", members = "{names}" }]
ack_error = ["{error.message}"]

[[on]]
event = "leave_room"
op = "leave"
room = "$0"
ack = []

[[on]]
event = "send_message"
op = "send"
room = "$0.room"
text = "$0.message"
ack = [{ id = "{seq}" }]
ack_error = ["{error.message}"]

[[on]]
event = "typing"
op = "relay"
room = "$0"
emit = "typing"
args = [{ username = "{user.name}", room = "{room}" }]
to = "others"

[[on]]
event = "who"
op = "presence"
room = "$0"
ack = ["{online}", "{names}"]

[[emit]]
on = "message"
event = "receive_message"
args = [{ room = "{room}", author = "{user.name}", message = "{text}", id = "{seq}", time = "{at}" }]
to = "others"

[[emit]]
on = "history"
event = "chat_history"
args = ["{room}", "{messages}"]
item = { author = "{user.name}", message = "{text}", id = "{seq}" }

[[emit]]
on = "join"
event = "user joined"
args = [{ username = "{user.name}", numUsers = "{online}", room = "{room}" }]
to = "others"

[[emit]]
on = "leave"
event = "user left"
args = [{ username = "{user.name}", numUsers = "{online}", room = "{room}" }]
to = "others"
`;

const WITH_NATIVE_EVENTS = `
[profile]
session_event = true
error_event = true

[rooms]
default = "main"

[[on]]
event = "say"
op = "send"
text = "$0"
`;

const NAMED_BY_HANDSHAKE = `
[identity]
trust_client_names = true
name = "query.username"

[rooms]
default = "lobby"

[[on]]
event = "chat"
op = "send"
text = "$0"
ack = []

[[emit]]
on = "message"
event = "chat"
args = ["{user.name}", "{text}"]

[[emit]]
on = "join"
event = "joined"
args = ["{user.name}", "{online}"]
to = "others"
`;

/** Emits with an ack and resolves with all of the ack's arguments. */
function ask(socket, event, ...args) {
  return socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, ...args).then(
    (first) => first,
    (err) => {
      throw new Error(`${event}: ${err.message}`);
    },
  );
}
function askAll(socket, event, ...args) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${event}: no ack`)), ACK_TIMEOUT_MS);
    socket.emit(event, ...args, (...ack) => {
      clearTimeout(timer);
      resolve(ack);
    });
  });
}

async function user(srv, name, ns) {
  const socket = client(srv, { ns });
  await new Promise((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("connect_error", reject);
  });
  assert.deepEqual(await ask(socket, "add user", name), { username: name });
  return socket;
}

for (const kind of STORES) {
  describe(`profiles: what a profile can express (${kind})`, () => {
    const srv = useServer(kind, {
      files: { "rooms-app.toml": ROOMS_APP, "native.toml": WITH_NATIVE_EVENTS, "named.toml": NAMED_BY_HANDSHAKE },
      namespaces: `
[[namespace]]
path = "/rooms"
profile = "rooms-app.toml"

[[namespace]]
path = "/native"
profile = "native.toml"

[[namespace]]
path = "/named"
profile = "named.toml"
`,
    });
    it("a first event names the user; a free-text room is joined by a bare string and shown as written", async () => {
      const room = `자유 게시판 ${rand()}`;
      const ana = await user(srv, "Ana", "/rooms");
      assert.deepEqual(await ask(ana, "join_room", room), { room, online: 1, members: ["Ana"] });
      const bo = await user(srv, "Bo 🦦", "/rooms");
      const joined = waitFor(ana, "user joined");
      assert.deepEqual(await ask(bo, "join_room", room), { room, online: 2, members: ["Ana", "Bo 🦦"].sort() });
      assert.deepEqual(await joined, { username: "Bo 🦦", numUsers: 2, room });
    });

    it("a send names its room; everyone else gets it, the sender does not; acks carry the app's shape", async () => {
      const room = `Room ${rand()}`;
      const ana = await user(srv, "Ana", "/rooms");
      const bo = await user(srv, "Bo", "/rooms");
      await ask(ana, "join_room", room);
      await ask(bo, "join_room", room);
      const atAna = collect(ana, "receive_message");
      const got = waitFor(bo, "receive_message");
      const ack = await ask(ana, "send_message", { room, message: "hello there" });
      assert.equal(typeof ack.id, "number");
      const m = await got;
      assert.deepEqual({ ...m, time: undefined }, { room, author: "Ana", message: "hello there", id: ack.id, time: undefined });
      assert.match(m.time, /^\d{4}-\d{2}-\d{2}T/);
      // Barrier: ana's next event is answered after everything her send caused was sent to her.
      await ask(ana, "who", room);
      assert.deepEqual([...atAna], [], "the sender does not get its own message");
    });

    it("failures are acked with the app's error string; nothing is stored or delivered", async () => {
      const room = `r-${rand()}`;
      const ana = await user(srv, "Ana", "/rooms");
      const bo = await user(srv, "Bo", "/rooms");
      await ask(ana, "join_room", room);
      await ask(bo, "join_room", room);
      const atBo = collect(bo, "receive_message");
      assert.deepEqual(await askAll(ana, "send_message", { room, message: "   " }), ["text is empty"]);
      const [nul] = await askAll(ana, "send_message", { room, message: "bad\u0000" });
      assert.match(nul, /control character U\+0000/);
      const [noText] = await askAll(ana, "send_message", { room });
      assert.match(noText, /\$0\.message must be the message text/);
      const [badRoom] = await askAll(ana, "join_room", "");
      assert.match(badRoom, /room name is empty/);
      await ask(ana, "send_message", { room, message: "fine" });
      await until(() => atBo.length > 0);
      assert.deepEqual(atBo.map((m) => m.message), ["fine"], short([...atBo]));
    });

    it("joining sends the room's history as one event with an array, in the item's shape", async () => {
      const room = `hist ${rand()}`;
      const ana = await user(srv, "Ana", "/rooms");
      await ask(ana, "join_room", room);
      for (const text of ["one", "two", "three"]) await ask(ana, "send_message", { room, message: text });
      const cy = await user(srv, "Cy", "/rooms");
      const history = new Promise((resolve) => cy.once("chat_history", (...args) => resolve(args)));
      await ask(cy, "join_room", room);
      const [shownRoom, messages] = await history;
      assert.equal(shownRoom, room);
      assert.deepEqual(
        messages.map(({ author, message }) => ({ author, message })),
        ["one", "two", "three"].map((message) => ({ author: "Ana", message })),
      );
      assert.deepEqual(messages.map((m) => m.id), [1, 2, 3]);
    });

    it("typing is relayed to the others with the user's name; leaving is told with the number online", async () => {
      const room = `t-${rand()}`;
      const ana = await user(srv, "Ana", "/rooms");
      const bo = await user(srv, "Bo", "/rooms");
      await ask(ana, "join_room", room);
      await ask(bo, "join_room", room);
      const typing = waitFor(bo, "typing");
      ana.emit("typing", room);
      assert.deepEqual(await typing, { username: "Ana", room });
      const left = waitFor(ana, "user left");
      assert.deepEqual(await askAll(bo, "leave_room", room), []);
      assert.deepEqual(await left, { username: "Bo", numUsers: 1, room });
      assert.deepEqual(await askAll(ana, "who", room), [1, ["Ana"]]);
    });

    it("a connection that has not named itself listens unannounced, and cannot send until it does", async () => {
      const room = `l-${rand()}`;
      const ana = await user(srv, "Ana", "/rooms");
      await ask(ana, "join_room", room);
      const anon = client(srv, { ns: "/rooms" });
      await new Promise((resolve) => anon.once("connect", resolve));
      const joined = collect(ana, "user joined");
      assert.deepEqual(await ask(anon, "join_room", room), { room, online: 1, members: ["Ana"] });
      const heard = waitFor(anon, "receive_message");
      await ask(ana, "send_message", { room, message: "to the listeners too" });
      assert.equal((await heard).message, "to the listeners too");
      const [refused] = await askAll(anon, "send_message", { room, message: "who am I?" });
      assert.match(refused, /has not given its name/);
      await ask(ana, "who", room); // barrier: a join notice for the listener would have come before this ack
      assert.deepEqual([...joined], []);
      // Naming itself announces it in the rooms it is in.
      const announced = waitFor(ana, "user joined");
      await ask(anon, "add user", "Late");
      assert.deepEqual(await announced, { username: "Late", numUsers: 2, room });
    });

    it("the user's name can come from the handshake (a query parameter here)", async () => {
      const ana = client(srv, { ns: "/named", query: { username: "Ana María" } });
      await new Promise((resolve) => ana.once("connect", resolve));
      const joined = new Promise((resolve) => ana.once("joined", (...args) => resolve(args)));
      const bo = client(srv, { ns: "/named", query: { username: "Bo" } });
      await new Promise((resolve) => bo.once("connect", resolve));
      assert.deepEqual(await joined, ["Bo", 2]);
      const line = new Promise((resolve) => bo.once("chat", (...args) => resolve(args)));
      await askAll(ana, "chat", "hola");
      assert.deepEqual(await line, ["Ana María", "hola"]);
    });

    it("palaver's session and chat:error events can be switched on in a profile", async () => {
      const socket = client(srv, { ns: "/native" });
      const session = await waitFor(socket, "session", () => true, ACK_TIMEOUT_MS);
      assert.equal(typeof session.user.id, "string");
      const error = waitFor(socket, "chat:error");
      socket.emit("say", "");
      const e = await error;
      assert.equal(e.event, "say");
      assert.equal(e.error.code, "bad_request");
    });
  });
}

