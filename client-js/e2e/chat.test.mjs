// Browser end-to-end test of the demo chat (client-js/demo) against the real palaver binary.
//
// Needs: `npm run build:demo` (demo/dist), `cargo build` (../target/debug/palaver, or PALAVER_BIN), and
// Chromium at /usr/bin/chromium (or CHROMIUM_PATH). Screenshots go to ../test-artifacts/e2e/.
//
// Two browser contexts are two people: Ada, signed in with a JWT, and bob, a guest (?name=bob). The steps run in
// order and share the pages; a failing step screenshots every open page as failure-*.png.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";

import jwt from "jsonwebtoken";
import { io } from "socket.io-client";

import {
  JWT_SECRET,
  checkPrerequisites,
  launchBrowser,
  resetArtifacts,
  screenshot,
  startPalaver,
  stopPalaver,
  tempDatabase,
  texts,
} from "./helpers.mjs";

const WAIT = 10_000; // per expectation on the page
const VIEWPORT = { width: 1280, height: 800 };

const rand = () => randomBytes(3).toString("hex");
const ROOM = `lounge-${rand()}`;
const PRIVATE_ROOM = `ada-only-${rand()}`;
const ada = { id: `u-ada-${rand()}`, name: "Ada" };
ada.token = jwt.sign({ sub: ada.id, name: ada.name }, JWT_SECRET, { algorithm: "HS256", expiresIn: "1h" });
const carol = { id: `u-carol-${rand()}`, name: "Carol" };
carol.token = jwt.sign({ sub: carol.id, name: carol.name }, JWT_SECRET, { algorithm: "HS256", expiresIn: "1h" });

const HELLO = "Hi bob, welcome to the lounge!";
const REPLY = "Thanks Ada, glad to be here.";
const HTML = "<img src=x onerror=alert(1)>";
const DM_TEXT = "psst bob, a private word";
const DM_REPLY = "got it, Ada";
const OLDER = 60; // sent by a script: more than one page of 50

let db;
let server;
let browser;
let ctxA;
let ctxB;
let pageA; // Ada
let pageB; // bob
const pageErrors = [];
const dialogs = [];
const sockets = [];

function watch(page, who) {
  page.on("pageerror", (err) => pageErrors.push(`${who}: ${err.message}`));
  page.on("dialog", (d) => {
    dialogs.push(`${who}: ${d.type()} ${d.message()}`);
    void d.dismiss();
  });
  return page;
}

async function newPage(ctx, who) {
  const page = watch(await ctx.newPage(), who);
  page.setDefaultTimeout(WAIT);
  return page;
}

/** A test step: on failure, screenshots of the open pages and the server log go with the error. */
function step(name, fn) {
  it(name, { timeout: 60_000 }, async () => {
    try {
      await fn();
    } catch (err) {
      const slug = name.replace(/[^a-z0-9]+/gi, "-").slice(0, 40);
      for (const [who, page] of [
        ["ada", pageA],
        ["bob", pageB],
      ]) {
        if (page && !page.isClosed()) await screenshot(page, `failure-${slug}-${who}`).catch(() => {});
      }
      err.message += `\n--- palaver log ---\n${server?.logTail?.() ?? "(no server)"}`;
      throw err;
    }
  });
}

/** Waits for an element matching `selector` that contains `text`. */
function seeText(page, selector, text, opts = {}) {
  return page.locator(selector, { hasText: text }).first().waitFor({ state: "visible", timeout: WAIT, ...opts });
}

async function connected(page) {
  await page.locator('#conn-state[data-state="connected"]').waitFor({ timeout: WAIT });
}

async function joinByInput(page, room) {
  await page.fill("#join-input", room);
  await page.press("#join-input", "Enter");
  await seeText(page, "#room-title", room);
  await page.locator("#messages .room-intro, #messages #load-older, #messages .msg").first().waitFor();
}

async function say(page, text) {
  await page.fill("#composer-input", text);
  await page.press("#composer-input", "Enter");
  // committed: the acked message carries its seq (a pending one has none)
  await page.locator("#messages .msg[data-seq] .msg-text", { hasText: text }).first().waitFor();
}

/** A plain socket.io-client socket for the test's own messages; resolves once the session arrived. */
function scriptSocket(auth) {
  const socket = io(server.url, { auth, transports: ["websocket"], forceNew: true, reconnection: false });
  sockets.push(socket);
  return new Promise((resolve, reject) => {
    socket.once("session", () => resolve(socket));
    socket.once("connect_error", reject);
  });
}

async function ack(socket, event, payload) {
  const res = await socket.timeout(5000).emitWithAck(event, payload);
  assert.ok(res?.ok, `${event} ${JSON.stringify(payload)} failed: ${JSON.stringify(res)}`);
  return res;
}

describe("demo chat in a browser", { concurrency: false }, () => {
  before(async () => {
    checkPrerequisites();
    await resetArtifacts();
    db = await tempDatabase();
    // a script sends a page and more of history below: lift the per-socket send rate for it
    server = await startPalaver({ databaseUrl: db.url, flags: { "send-rate": 500, "send-burst": 500 } });
    browser = await launchBrowser();
    ctxA = await browser.newContext({ viewport: VIEWPORT, locale: "en-GB", timezoneId: "UTC" });
    ctxB = await browser.newContext({ viewport: VIEWPORT, locale: "en-GB", timezoneId: "UTC" });
  });

  after(async () => {
    for (const s of sockets) s.close();
    await browser?.close().catch(() => {});
    await stopPalaver(server);
    await db?.drop();
  });

  step("palaver serves the page; a signed-in user and a guest connect", async () => {
    const res = await fetch(`${server.url}/`);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /<title>palaver<\/title>/);

    pageA = await newPage(ctxA, "ada");
    await pageA.goto(`${server.url}/?token=${encodeURIComponent(ada.token)}`);
    await connected(pageA);
    await seeText(pageA, "#me-name", "Ada");
    assert.equal(await pageA.textContent("#me-kind"), "signed in");
    assert.equal(await pageA.textContent("#conn-text"), "connected");

    pageB = await newPage(ctxB, "bob");
    await pageB.goto(`${server.url}/?name=bob`);
    await connected(pageB);
    await seeText(pageB, "#me-name", "bob");
    assert.equal(await pageB.textContent("#me-kind"), "guest");

    // a newcomer lands in #general
    await seeText(pageA, "#room-title", "general");
    await screenshot(pageA, "01-connected-ada");
  });

  step("?server= points the page at a palaver on another origin", async () => {
    // the page from 127.0.0.1, the chat from localhost: a cross-origin Socket.IO connection
    const ctx = await browser.newContext({ viewport: VIEWPORT });
    try {
      const page = await newPage(ctx, "dora");
      const other = `http://localhost:${server.port}`;
      await page.goto(`${server.url}/?name=dora&server=${encodeURIComponent(other)}`);
      await connected(page);
      await seeText(page, "#me-name", "dora");
      assert.match(await page.getAttribute("#conn-state", "title"), /localhost/);
    } finally {
      await ctx.close();
    }
  });

  step("a refused sign-in shows offline and says why", async () => {
    const ctx = await browser.newContext({ viewport: VIEWPORT });
    try {
      const page = await newPage(ctx, "intruder");
      // an hour ago: palaver allows jsonwebtoken's default 60 s of clock leeway on exp
      const expired = jwt.sign({ sub: "u-late", name: "Late", exp: Math.floor(Date.now() / 1000) - 3600 }, JWT_SECRET);
      await page.goto(`${server.url}/?token=${encodeURIComponent(expired)}`);
      await page.locator('#conn-state[data-state="offline"]').waitFor();
      await seeText(page, "#banner", "expired");
      assert.ok(await page.locator("#composer-input").isDisabled());
      await screenshot(page, "01-refused-token");
    } finally {
      await ctx.close();
    }
  });

  step("both join a room from the sidebar and each sees the other's messages and join notice", async () => {
    await joinByInput(pageA, ROOM);
    await pageA.locator(`#room-list [data-room="${ROOM}"]`).waitFor();
    await joinByInput(pageB, ROOM);

    await seeText(pageA, "#messages .notice-join", "bob joined the room");
    await pageA.locator('#online-list [data-user-name="bob"]').waitFor();
    await pageB.locator('#online-list [data-user-name="Ada"]').waitFor();
    assert.equal(await pageA.textContent("#online-title"), "Online — 2");

    await say(pageA, HELLO);
    await seeText(pageB, "#messages .msg-text", HELLO);
    await say(pageB, REPLY);
    await seeText(pageA, "#messages .msg-text", REPLY);
    assert.deepEqual(await texts(pageA, "#messages .msg .msg-author"), ["Ada", "bob"]);
    assert.deepEqual(await texts(pageB, "#messages .msg .msg-author"), ["Ada", "bob"]);
    await screenshot(pageA, "02-room-chat-ada");
    await screenshot(pageB, "02-room-chat-bob");
  });

  step("the typing indicator shows who is typing, and goes away", async () => {
    // The SDK sends `typing` at most every 2 s and bob just sent a message: type for longer than that.
    await pageB.locator("#composer-input").pressSequentially("I am writing something rather long, hold on", { delay: 60 });
    await seeText(pageA, "#typing", "bob is typing…");
    await screenshot(pageA, "03-typing-ada");
    await pageB.fill("#composer-input", "");
    await pageA.locator("#typing.on").waitFor({ state: "detached", timeout: 8000 });
    assert.equal((await pageA.textContent("#typing")).trim(), "");
  });

  step("a message that looks like HTML is shown as text, never run", async () => {
    await say(pageA, HTML);
    const line = pageB.locator("#messages .msg-text", { hasText: "onerror" }).first();
    await line.waitFor();
    assert.equal(await line.textContent(), HTML);
    for (const page of [pageA, pageB]) {
      assert.equal(await page.locator("#messages img").count(), 0, "no <img> element may come out of a message");
    }
    await pageB.waitForTimeout(300);
    assert.deepEqual(dialogs, [], "no script from a message may run");
    await screenshot(pageB, "04-html-as-text-bob");
  });

  step("clicking a user in the online list starts a DM, which the other receives", async () => {
    await pageA.click('#online-list [data-user-name="bob"]');
    await seeText(pageA, "#room-title", "bob");
    await seeText(pageA, "#room-sub", "new direct message");
    await say(pageA, DM_TEXT);
    await pageA.waitForURL(/#dm:/);
    await seeText(pageA, "#dm-list .nav-item", "bob");

    // bob, still in the room, gets a new conversation with an unread badge
    const dmItem = pageB.locator("#dm-list .nav-item", { hasText: "Ada" });
    await dmItem.waitFor();
    assert.equal(await dmItem.locator(".badge").textContent(), "1");
    await screenshot(pageB, "05-dm-unread-bob");
    await dmItem.click();
    await seeText(pageB, "#room-title", "Ada");
    await seeText(pageB, "#messages .msg-text", DM_TEXT);
    assert.equal(await dmItem.locator(".badge").count(), 0, "opening the DM clears its badge");
    // the DM is not in the room
    assert.equal(await pageB.locator("#messages .msg-text", { hasText: HELLO }).count(), 0);

    await say(pageB, DM_REPLY);
    await seeText(pageA, "#messages .msg-text", DM_REPLY);
    await screenshot(pageA, "05-dm-ada");
    await screenshot(pageB, "05-dm-bob");
  });

  step("a private room made with “Create” is refused to someone else, with a readable error", async () => {
    await pageA.fill("#create-input", PRIVATE_ROOM);
    await pageA.check("#create-private");
    await pageA.click("#create-btn");
    await seeText(pageA, "#room-title", PRIVATE_ROOM);
    await seeText(pageA, "#room-sub", "private room");
    await seeText(pageA, `#room-list [data-room="${PRIVATE_ROOM}"]`, PRIVATE_ROOM);
    await say(pageA, "just me in here");

    await pageB.fill("#join-input", PRIVATE_ROOM);
    await pageB.press("#join-input", "Enter");
    await seeText(pageB, "#messages .error-state", "private");
    await seeText(pageB, "#toasts .toast", "private");
    assert.ok(await pageB.locator("#composer-input").isDisabled(), "no composer for a room one could not open");
    assert.equal(await pageB.locator(`#room-list [data-room="${PRIVATE_ROOM}"]`).count(), 0);
    assert.equal(await pageB.locator(`#browse-list [data-room="${PRIVATE_ROOM}"]`).count(), 0);
    assert.equal(await pageB.locator("#messages .msg-text", { hasText: "just me in here" }).count(), 0);
    await screenshot(pageB, "06-private-refused-bob");
  });

  step("leaving with the button, and closing the page, each show a leave notice to the other", async () => {
    await pageA.click(`#room-list [data-room="${ROOM}"]`);
    await seeText(pageA, "#room-title", ROOM);
    await pageB.click(`#room-list [data-room="${ROOM}"]`);
    await seeText(pageB, "#room-title", ROOM);

    await pageB.click("#leave-btn");
    await seeText(pageA, "#messages .notice-leave", "bob left the room");
    await pageB.locator(`#room-list [data-room="${ROOM}"]`).waitFor({ state: "detached" });
    await pageA.locator('#online-list [data-user-name="bob"]').waitFor({ state: "detached" });

    await joinByInput(pageB, ROOM);
    await pageA.locator("#messages .notice-join", { hasText: "bob joined the room" }).nth(1).waitFor();

    await pageB.close();
    await pageA.locator("#messages .notice-leave", { hasText: "bob left the room" }).nth(1).waitFor();
    await pageA.locator('#online-list [data-user-name="bob"]').waitFor({ state: "detached" });
    assert.equal(await pageA.textContent("#online-title"), "Online — 1");
    await screenshot(pageA, "07-leave-notices-ada");
  });

  step("after a reload the history is there again, and “load older” pages back", async () => {
    // Carol, from a script, sends more than one page of history
    const carolSocket = await scriptSocket({ token: carol.token });
    await ack(carolSocket, "room:join", { room: ROOM });
    await seeText(pageA, "#messages .notice-join", "Carol joined the room");
    for (let i = 1; i <= OLDER; i++) {
      await ack(carolSocket, "message:send", { room: ROOM, text: `history message ${i}` });
    }
    await seeText(pageA, "#messages .msg-text", `history message ${OLDER}`);

    // Ada (signed in) reloads: the room comes back from the URL, with the latest 50 messages
    await pageA.reload();
    await connected(pageA);
    await seeText(pageA, "#room-title", ROOM);
    await seeText(pageA, "#messages .msg-text", `history message ${OLDER}`);
    await pageA.locator("#load-older").waitFor();
    assert.equal(await pageA.locator("#messages .msg").count(), 50);
    assert.equal(await pageA.locator("#messages .msg-text", { hasText: HELLO }).count(), 0);
    await screenshot(pageA, "08-reloaded-ada");

    await pageA.click("#load-older");
    await seeText(pageA, "#messages .msg-text", HELLO);
    await pageA.locator("#messages #room-start").waitFor();
    assert.equal(await pageA.locator("#load-older").count(), 0, "no older page is left");
    const all = await texts(pageA, "#messages .msg .msg-text");
    assert.deepEqual(all, [HELLO, REPLY, HTML, ...Array.from({ length: OLDER }, (_, i) => `history message ${i + 1}`)]);
    const seqs = await pageA.locator("#messages .msg[data-seq]").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), "seqs 1…n, in order, once each");
    await pageA.evaluate(() => document.getElementById("messages").scrollTo(0, 0));
    await screenshot(pageA, "09-load-older-ada");

    // bob, a guest, comes back in a new page on the room's address: a new guest, the same history
    pageB = await newPage(ctxB, "bob");
    await pageB.goto(`${server.url}/?name=bob#${ROOM}`);
    await connected(pageB);
    await seeText(pageB, "#room-title", ROOM);
    await seeText(pageB, "#messages .msg-text", `history message ${OLDER}`);
    await seeText(pageA, "#messages .notice-join", "bob joined the room");
    carolSocket.close();
    await seeText(pageA, "#messages .notice-leave", "Carol left the room");
  });

  step("the connection state follows the server: reconnecting… while it is down, connected again after", async () => {
    const port = server.port;
    await stopPalaver(server);
    await pageA.locator('#conn-state[data-state="reconnecting"]').waitFor();
    assert.equal(await pageA.textContent("#conn-text"), "reconnecting…");
    await screenshot(pageA, "10-reconnecting-ada");

    server = await startPalaver({ databaseUrl: db.url, listen: `127.0.0.1:${port}` });
    await pageA.locator('#conn-state[data-state="connected"]').waitFor({ timeout: 20_000 });
    await connected(pageB);
    // both are back in the room: a message from either reaches the other
    await say(pageB, "back after the restart");
    await seeText(pageA, "#messages .msg-text", "back after the restart");
    // Ada was reading older messages: the page offers a way down instead of yanking her there
    await pageA.locator("#jump-latest").waitFor();
    await pageA.click("#jump-latest");
    await pageA.locator("#jump-latest").waitFor({ state: "hidden" });
    await screenshot(pageA, "11-reconnected-ada");
  });

  step("no page threw an uncaught error", async () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(dialogs, []);
  });
});
