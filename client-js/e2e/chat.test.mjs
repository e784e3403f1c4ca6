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
// The server's flags, on its first start and its restart: a script sends a page and more of history (lift the
// per-socket send rate for it), and a message over 2,000 characters is refused (the composer takes 4,000).
const FLAGS = { "send-rate": 500, "send-burst": 500, "max-message-length": 2000 };

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
const FEATURE_ROOM = `features-${rand()}`;
const M_REVIEW = "Who wants to review the release notes?";
const M_LUNCH = "Lunch at noon?";
const M_TYPO = "Teh plan for tomorrow";
const M_FIXED = "The plan for tomorrow";
const PING = "ping from bob";
const REPLY_TEXT = "I can take them tomorrow";
const SEEN_TEXT = "are you still there, bob?";
const BLOCKED_TEXT = "hello again Ada";
const MUTED_TEXT = "can anyone hear me?";

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

/** The message row holding `text` (stored or not). */
function row(page, text) {
  return page.locator("#messages .msg", { has: page.locator(".msg-text", { hasText: text }) }).first();
}

/** Hovers a message and clicks one of its actions (react, reply, edit, delete). */
async function messageAction(page, text, action) {
  const r = row(page, text);
  await r.hover();
  await r.locator(`.msg-actions [data-action="${action}"]`).click();
}

/** Opens the menu of `name` in the online list and picks `action` (kick, mute, unmute, block, unblock). */
async function memberAction(page, name, action) {
  await page.locator(`#online-list [data-user-name="${name}"]`).hover();
  await page.click(`#online-list [data-menu-for="${name}"]`);
  await page.click(`#online-list .member-menu [data-action="${action}"]`);
}

describe("demo chat in a browser", { concurrency: false }, () => {
  before(async () => {
    checkPrerequisites();
    await resetArtifacts();
    db = await tempDatabase();
    // a script sends a page and more of history below: lift the per-socket send rate for it
    server = await startPalaver({ databaseUrl: db.url, flags: FLAGS });
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

  step("a message in another room shows an unread badge (and in the title), which opening the room clears", async () => {
    // Ada creates a public room for the steps below and writes three messages in it; bob joins it
    await pageA.fill("#create-input", FEATURE_ROOM);
    await pageA.click("#create-btn");
    await seeText(pageA, "#room-title", FEATURE_ROOM);
    for (const text of [M_REVIEW, M_LUNCH, M_TYPO]) await say(pageA, text);
    await joinByInput(pageB, FEATURE_ROOM);
    await seeText(pageB, "#messages .msg-text", M_TYPO);

    // Ada looks at another room while bob writes in this one
    await pageA.click(`#room-list [data-room="${ROOM}"]`);
    await seeText(pageA, "#room-title", ROOM);
    await say(pageB, PING);
    const item = pageA.locator(`#room-list [data-room="${FEATURE_ROOM}"]`);
    await seeText(pageA, `#room-list [data-room="${FEATURE_ROOM}"] .badge`, "1");
    assert.match(await pageA.title(), /^\(1\) /);
    await screenshot(pageA, "feature-01-unread-ada");

    await item.click();
    await seeText(pageA, "#messages .msg-text", PING);
    await item.locator(".badge").waitFor({ state: "detached" });
    assert.doesNotMatch(await pageA.title(), /^\(/);
  });

  step("each sees their own role in the header; only a moderator's menu has kick, ban and mute", async () => {
    await seeText(pageA, "#my-role", "owner");
    await seeText(pageB, "#my-role", "member");
    await screenshot(pageA, "feature-01b-role-ada");
    // bob's menu for Ada: block only (a member moderates nothing)
    await pageB.locator('#online-list [data-user-name="Ada"]').hover();
    await pageB.click('#online-list [data-menu-for="Ada"]');
    await pageB.locator('#online-list .member-menu [data-action="block"]').waitFor();
    for (const action of ["kick", "ban", "mute", "unmute"]) {
      assert.equal(await pageB.locator(`#online-list .member-menu [data-action="${action}"]`).count(), 0, action);
    }
    await pageB.click('#online-list [data-menu-for="Ada"]');
    await pageB.locator("#online-list .member-menu").waitFor({ state: "detached" });
    // Ada's menu for bob has them
    await pageA.locator('#online-list [data-user-name="bob"]').hover();
    await pageA.click('#online-list [data-menu-for="bob"]');
    for (const action of ["kick", "ban", "mute", "unmute", "block"]) {
      await pageA.locator(`#online-list .member-menu [data-action="${action}"]`).waitFor();
    }
    await screenshot(pageA, "feature-01c-moderator-menu-ada");
    await pageA.click('#online-list [data-menu-for="bob"]');
    await pageA.locator("#online-list .member-menu").waitFor({ state: "detached" });
  });

  step("a message the server refuses shows as failed, with Retry and Discard", async () => {
    const tooLong = `${"a very long message ".repeat(125)}end`; // 2,503 characters; the server takes 2,000
    await pageB.fill("#composer-input", tooLong);
    await pageB.press("#composer-input", "Enter");
    const failed = pageB.locator("#messages .msg.failed");
    await seeText(pageB, "#messages .msg.failed .msg-error", "Not sent");
    assert.equal(await failed.getAttribute("data-seq"), null, "a failed message has no seq");
    assert.ok(await failed.locator("button", { hasText: "Retry" }).isVisible());
    await screenshot(pageB, "feature-02-failed-bob");
    await failed.locator("button", { hasText: "Discard" }).click();
    await failed.waitFor({ state: "detached" });
    assert.equal(await pageA.locator("#messages .msg-text", { hasText: "very long message" }).count(), 0);
  });

  step("Reply quotes the message answered above the composer; Cancel and Escape drop it", async () => {
    await messageAction(pageB, M_REVIEW, "reply");
    await seeText(pageB, "#reply-preview", "Replying to Ada");
    assert.equal(await pageB.textContent("#reply-preview .reply-preview-text"), M_REVIEW);
    await pageB.click("#reply-cancel");
    await pageB.locator("#reply-preview").waitFor({ state: "detached" });

    await messageAction(pageB, M_REVIEW, "reply");
    await pageB.locator("#reply-preview").waitFor();
    await pageB.press("#composer-input", "Escape");
    await pageB.locator("#reply-preview").waitFor({ state: "detached" });

    await messageAction(pageB, M_REVIEW, "reply");
    await seeText(pageB, "#reply-preview", M_REVIEW);
    await screenshot(pageB, "feature-03-reply-composer-bob");
    await say(pageB, REPLY_TEXT);
    assert.equal(await pageB.locator("#reply-preview").count(), 0, "sending ends the reply");
    await seeText(pageA, "#messages .msg-text", REPLY_TEXT);
  });

  step("a reply shows the message it answers, to both", async () => {
    for (const page of [pageA, pageB]) {
      const quote = row(page, REPLY_TEXT).locator(".msg-reply");
      await quote.waitFor();
      assert.equal(await quote.locator(".msg-reply-author").textContent(), "Ada");
      assert.equal(await quote.locator(".msg-reply-text").textContent(), M_REVIEW);
    }
    await screenshot(pageA, "feature-04-reply-ada");
  });

  step("Edit opens the message's text in place; Escape leaves it as it was", async () => {
    await messageAction(pageA, M_TYPO, "edit");
    const input = pageA.locator("#messages .msg-edit-input");
    await input.waitFor();
    assert.equal(await input.inputValue(), M_TYPO);
    await input.press("Escape");
    await input.waitFor({ state: "detached" });
    await row(pageA, M_TYPO).waitFor();
    assert.equal(await pageA.locator("#messages .msg-edited").count(), 0);
    // bob sees no Edit or Delete on Ada's message
    await row(pageB, M_TYPO).hover();
    assert.equal(await row(pageB, M_TYPO).locator('[data-action="edit"], [data-action="delete"]').count(), 0);
  });

  step("an edit and a deletion show to both", async () => {
    const seq = await row(pageA, M_TYPO).getAttribute("data-seq");
    await messageAction(pageA, M_TYPO, "edit");
    await pageA.fill("#messages .msg-edit-input", M_FIXED);
    await pageA.press("#messages .msg-edit-input", "Enter");
    for (const page of [pageA, pageB]) {
      const edited = page.locator(`#messages .msg[data-seq="${seq}"]`);
      await seeText(page, `#messages .msg[data-seq="${seq}"] .msg-text`, M_FIXED);
      await edited.locator(".msg-edited").waitFor();
    }
    await screenshot(pageB, "feature-05-edited-bob");

    await messageAction(pageA, M_FIXED, "delete");
    await pageA.click('#messages .msg-confirm [data-action="confirm-delete"]');
    for (const page of [pageA, pageB]) {
      await seeText(page, `#messages .msg[data-seq="${seq}"] .msg-deleted`, "This message was deleted.");
      assert.equal(await page.locator("#messages .msg-text", { hasText: M_FIXED }).count(), 0);
    }
    await screenshot(pageA, "feature-06-deleted-ada");
  });

  step("the room's owner deletes someone else's message; the author sees it go", async () => {
    const seq = await row(pageA, PING).getAttribute("data-seq");
    // bob has no Delete on Ada's messages (checked above); Ada, the owner, has one on bob's
    await messageAction(pageA, PING, "delete");
    await pageA.click('#messages .msg-confirm [data-action="confirm-delete"]');
    for (const page of [pageA, pageB]) {
      await seeText(page, `#messages .msg[data-seq="${seq}"] .msg-deleted`, "This message was deleted.");
      assert.equal(await page.locator("#messages .msg-text", { hasText: PING }).count(), 0);
    }
    await screenshot(pageB, "feature-06b-deleted-by-moderator-bob");
  });

  step("a reaction shows to both, and clicking it adds or takes back one's own", async () => {
    await messageAction(pageB, M_LUNCH, "react");
    await row(pageB, M_LUNCH).locator('.emoji-picker [data-emoji="👍"]').click();
    const chip = (page) => row(page, M_LUNCH).locator('.reaction[data-emoji="👍"]');
    for (const page of [pageA, pageB]) await seeText(page, `#messages .reaction[data-emoji="👍"] .reaction-count`, "1");
    assert.equal(await chip(pageB).getAttribute("aria-pressed"), "true");
    assert.equal(await chip(pageA).getAttribute("aria-pressed"), "false");

    await chip(pageA).click();
    for (const page of [pageA, pageB]) await seeText(page, `#messages .reaction[data-emoji="👍"] .reaction-count`, "2");
    assert.equal(await chip(pageA).getAttribute("aria-pressed"), "true");
    await screenshot(pageA, "feature-07-reactions-ada");

    await chip(pageA).click();
    for (const page of [pageA, pageB]) await seeText(page, `#messages .reaction[data-emoji="👍"] .reaction-count`, "1");
    assert.equal(await chip(pageA).getAttribute("aria-pressed"), "false");
  });

  step("search finds a message with the words marked, and a result opens its room", async () => {
    await pageA.click(`#room-list [data-room="${ROOM}"]`);
    await seeText(pageA, "#room-title", ROOM);
    await pageA.fill("#search-input", "release");
    await pageA.press("#search-input", "Enter");
    const hit = pageA.locator("#search-results .search-result", { hasText: M_REVIEW });
    await hit.waitFor();
    assert.equal((await hit.locator("mark").first().textContent()).toLowerCase(), "release");
    await screenshot(pageA, "feature-08-search-ada");
    await hit.click();
    await seeText(pageA, "#room-title", FEATURE_ROOM);
    await pageA.locator("#messages .msg.flash", { hasText: M_REVIEW }).waitFor();
    assert.equal(await pageA.locator("#search-results").count(), 0);
  });

  step("a DM says “Seen” under Ada's message once bob has read it", async () => {
    await pageA.click("#dm-list .nav-item >> text=bob");
    await seeText(pageA, "#room-title", "bob");
    await say(pageA, SEEN_TEXT);
    assert.equal(await pageA.locator("#messages .msg-seen").count(), 0, "not read yet");
    const dm = pageB.locator("#dm-list .nav-item", { hasText: "Ada" });
    await seeText(pageB, "#dm-list .nav-item .badge", "1");
    await dm.click();
    await seeText(pageB, "#messages .msg-text", SEEN_TEXT);
    await seeText(pageA, "#messages .msg-seen", "Seen");
    assert.equal(await row(pageA, SEEN_TEXT).locator(".msg-seen").count(), 1, "under the message read");
    await screenshot(pageA, "feature-09-seen-ada");
  });

  step("blocking in a DM stops bob's messages until Ada unblocks", async () => {
    await pageA.click("#dm-list .nav-item >> text=bob");
    await seeText(pageA, "#room-title", "bob");
    await pageB.click("#dm-list .nav-item >> text=Ada");
    await seeText(pageB, "#room-title", "Ada");

    await pageA.click("#block-btn");
    await pageA.locator("#blocked-banner").waitFor();
    assert.ok(await pageA.locator("#composer-input").isDisabled());
    assert.equal(await pageA.textContent("#block-btn"), "Unblock");
    await pageB.fill("#composer-input", BLOCKED_TEXT);
    await pageB.press("#composer-input", "Enter");
    await seeText(pageB, "#messages .msg.failed .msg-error", "Not sent");
    await screenshot(pageB, "feature-10-blocked-bob");

    await pageA.click("#block-btn");
    await pageA.locator("#blocked-banner").waitFor({ state: "detached" });
    await pageB.locator("#messages .msg.failed button", { hasText: "Retry" }).click();
    await pageB.locator("#messages .msg[data-seq] .msg-text", { hasText: BLOCKED_TEXT }).waitFor();
    await seeText(pageA, "#messages .msg-text", BLOCKED_TEXT);
  });

  step("a moderator mutes bob (his message fails) and unmutes him (Retry goes through)", async () => {
    for (const page of [pageA, pageB]) {
      await page.click(`#room-list [data-room="${FEATURE_ROOM}"]`);
      await seeText(page, "#room-title", FEATURE_ROOM);
    }
    await memberAction(pageA, "bob", "mute");
    for (const page of [pageA, pageB]) await seeText(page, "#messages .notice-mute", "bob was muted by Ada");
    await pageB.fill("#composer-input", MUTED_TEXT);
    await pageB.press("#composer-input", "Enter");
    await seeText(pageB, "#messages .msg.failed .msg-error", "muted");
    await screenshot(pageB, "feature-11-muted-bob");

    await memberAction(pageA, "bob", "unmute");
    await seeText(pageB, "#messages .notice-unmute", "bob can write again");
    await pageB.locator("#messages .msg.failed button", { hasText: "Retry" }).click();
    await seeText(pageA, "#messages .msg-text", MUTED_TEXT);
  });

  step("a moderator kicks bob: Ada sees it, bob is told and the room leaves his list", async () => {
    for (const page of [pageA, pageB]) {
      await page.click(`#room-list [data-room="${FEATURE_ROOM}"]`);
      await seeText(page, "#room-title", FEATURE_ROOM);
    }
    await memberAction(pageA, "bob", "kick");
    await seeText(pageA, "#messages .notice-kick", "bob was removed from the room by Ada");
    await pageA.locator('#online-list [data-user-name="bob"]').waitFor({ state: "detached" });
    await seeText(pageB, "#toasts .toast", "Ada removed you from");
    await pageB.locator(`#room-list [data-room="${FEATURE_ROOM}"]`).waitFor({ state: "detached" });
    // the room's pane says who removed him, and holds nothing of it any more
    await seeText(pageB, "#left-reason", `Ada removed you from #${FEATURE_ROOM}.`);
    assert.equal(await pageB.locator("#messages .msg").count(), 0);
    assert.ok(await pageB.locator("#composer-input").isDisabled());
    await screenshot(pageB, "feature-12-kicked-bob");

    // a kick is not a ban: Join again brings him back, with the room's messages
    await pageB.click("#rejoin-btn");
    await seeText(pageB, "#messages .msg-text", M_REVIEW);
    await pageB.locator(`#room-list [data-room="${FEATURE_ROOM}"]`).waitFor();
    await pageA.locator('#online-list [data-user-name="bob"]').waitFor();
  });

  step("a moderator bans bob for a day: bob is told until when, and cannot join again", async () => {
    await memberAction(pageA, "bob", "ban");
    await seeText(pageA, "#messages .notice-ban", "bob was banned from the room by Ada");
    await seeText(pageB, "#toasts .toast", "Ada banned you from");
    await seeText(pageB, "#left-reason", `Ada banned you from #${FEATURE_ROOM} until`);
    await pageB.locator(`#room-list [data-room="${FEATURE_ROOM}"]`).waitFor({ state: "detached" });
    await screenshot(pageB, "feature-13-banned-bob");
    await pageB.click("#rejoin-btn");
    await seeText(pageB, "#messages .error-state", "banned");
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

    // bob writes while the server is down: the message shows greyed, without a seq, until it is stored
    await pageB.locator('#conn-state[data-state="reconnecting"]').waitFor();
    await pageB.fill("#composer-input", "back after the restart");
    await pageB.press("#composer-input", "Enter");
    await seeText(pageB, "#messages .msg.pending .msg-text", "back after the restart");
    assert.equal(await pageB.locator("#messages .msg.pending").getAttribute("data-seq"), null);
    await screenshot(pageB, "10-pending-bob");

    server = await startPalaver({ databaseUrl: db.url, listen: `127.0.0.1:${port}`, flags: FLAGS });
    await pageA.locator('#conn-state[data-state="connected"]').waitFor({ timeout: 20_000 });
    await connected(pageB);
    // both are back in the room: bob's message is stored (sent once), and reaches Ada
    await pageB.locator("#messages .msg[data-seq] .msg-text", { hasText: "back after the restart" }).waitFor();
    assert.equal(await pageB.locator("#messages .msg.pending").count(), 0);
    await seeText(pageA, "#messages .msg-text", "back after the restart");
    assert.equal(await pageA.locator("#messages .msg-text", { hasText: "back after the restart" }).count(), 1);
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
