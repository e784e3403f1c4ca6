// The official Socket.IO Admin UI (the built pages that @socket.io/admin-ui ships in ui/dist) in headless Chromium,
// against the real palaver binary: served from another origin, it signs in with a username and password, lists
// palaver's sockets (with their users) and rooms, and its disconnect button disconnects a real socket.io-client.
//
// Needs: `cargo build` (../target/debug/palaver, or PALAVER_BIN) and Chromium at /usr/bin/chromium (or
// CHROMIUM_PATH). Screenshots go to ../test-artifacts/admin-ui/.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import jwt from "jsonwebtoken";
import { io } from "socket.io-client";

import { BIN, CHROMIUM, JWT_SECRET, PKG_ROOT, REPO_ROOT, launchBrowser, startPalaver, stopPalaver, tempDatabase } from "./helpers.mjs";

const UI_DIST = path.join(PKG_ROOT, "node_modules/@socket.io/admin-ui/ui/dist");
const ARTIFACTS = path.join(REPO_ROOT, "test-artifacts/admin-ui");
const WAIT = 15_000;
// bcrypt (cost 4) of PASSWORD, as an operator would pass it in --admin-password-hash.
const USERNAME = "operator";
const PASSWORD = "open sesame, palaver";
const HASH = "$2a$04$qck4QEFDIvO.K7GWjt6kKuCeAIX6HRXvpwfkgGLm69Ag003oMvqOq";

const rand = () => randomBytes(3).toString("hex");
const ROOM = `lounge-${rand()}`;
const TYPES = { ".html": "text/html", ".js": "application/javascript", ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml", ".map": "application/json" };

/** A static file server for the UI's pages on 127.0.0.1 (another origin than palaver's). */
async function serveUi() {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, "http://x");
    const file = path.join(UI_DIST, path.normalize(url.pathname === "/" ? "/index.html" : url.pathname));
    if (!file.startsWith(UI_DIST)) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return { server, url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}

/** A signed-in chat user's socket, connected (its `session` received). */
async function user(palaver, name) {
  const id = `u-${name}-${rand()}`;
  const token = jwt.sign({ sub: id, name }, JWT_SECRET, { algorithm: "HS256", expiresIn: "1h" });
  const socket = io(palaver.url, { transports: ["websocket"], forceNew: true, reconnection: false, auth: { token } });
  await new Promise((resolve, reject) => {
    socket.once("session", resolve);
    socket.once("connect_error", reject);
  });
  return { id, name, socket };
}

function join(socket, room) {
  return socket.timeout(5000).emitWithAck("room:join", { room });
}

describe("the Socket.IO Admin UI against palaver, in Chromium", () => {
  let db, ui, palaver, browser, page;
  const users = [];

  before(async () => {
    const missing = [];
    if (!existsSync(path.join(UI_DIST, "index.html"))) missing.push(`no Admin UI pages at ${UI_DIST}: run \`npm install\` in client-js/`);
    if (!existsSync(BIN)) missing.push(`no server binary at ${BIN}: run \`cargo build\` (or set PALAVER_BIN)`);
    if (!existsSync(CHROMIUM)) missing.push(`no Chromium at ${CHROMIUM} (or set CHROMIUM_PATH)`);
    if (missing.length) throw new Error(`cannot run the Admin UI test:\n- ${missing.join("\n- ")}`);
    await mkdir(ARTIFACTS, { recursive: true });
    ui = await serveUi();
    db = await tempDatabase();
    palaver = await startPalaver({
      databaseUrl: db.url,
      flags: { "admin-username": USERNAME, "admin-password-hash": HASH, "cors-origins": ui.url },
    });
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    page = await context.newPage();
    page.on("console", (m) => m.type() === "error" && process.stderr.write(`[admin-ui page] ${m.text()}\n`));
  });

  after(async () => {
    for (const u of users) u.socket.close();
    await browser?.close();
    await stopPalaver(palaver);
    await ui?.close();
    await db?.drop();
  });

  it("signs in from another origin, lists palaver's sockets, users and rooms, and disconnects a socket", { timeout: 90_000 }, async (t) => {
    try {
      users.push(await user(palaver, "ada"), await user(palaver, "bob"));
      const [ada, bob] = users;
      for (const u of users) assert.equal((await join(u.socket, ROOM)).ok, true);

      await page.goto(ui.url);
      // The connection modal: server URL, username, password (the UI's defaults: /admin, polling then WebSocket).
      await page.getByLabel("Server URL").fill(palaver.url);
      await page.getByLabel("Username").fill(USERNAME);
      await page.getByLabel("Password").fill(PASSWORD);
      await page.getByRole("button", { name: "Connect" }).click();
      await page.getByText("connected", { exact: true }).first().waitFor({ timeout: WAIT });

      // Sockets: both users' sockets, then a late one, live.
      await page.evaluate(() => (location.hash = "#/sockets/"));
      for (const u of users) await page.locator("tbody tr", { hasText: u.socket.id }).waitFor({ timeout: WAIT });
      const carol = await user(palaver, "carol");
      users.push(carol);
      await page.locator("tbody tr", { hasText: carol.socket.id }).waitFor({ timeout: WAIT });
      await page.screenshot({ path: path.join(ARTIFACTS, "sockets.png") });

      // One socket's page: its user (palaver's data) and its rooms.
      await page.locator("tbody tr", { hasText: ada.socket.id }).click();
      await page.getByText(`r:${ROOM}`).first().waitFor({ timeout: WAIT });
      await page.getByText(ada.id).first().waitFor({ timeout: WAIT });
      await page.screenshot({ path: path.join(ARTIFACTS, "socket.png") });

      // Rooms: the chat room (as Socket.IO names it) with its two sockets, and each user's own room.
      // (The rows of the Rooms page say "Public"; the socket page's room list may still be fading out.)
      await page.evaluate(() => (location.hash = "#/rooms/"));
      const roomRow = page.locator("tbody tr", { hasText: `r:${ROOM}` }).filter({ hasText: "Public" });
      await roomRow.waitFor({ timeout: WAIT });
      await page.locator("tbody tr", { hasText: `u:${bob.id}` }).filter({ hasText: "Public" }).waitFor({ timeout: WAIT });
      assert.match(await roomRow.innerText(), /\b2\b/, "two sockets in the room");
      // A join seen live: carol enters the room, the count goes to 3.
      assert.equal((await join(carol.socket, ROOM)).ok, true);
      await roomRow.filter({ hasText: /\b3\b/ }).waitFor({ timeout: WAIT });
      await page.screenshot({ path: path.join(ARTIFACTS, "rooms.png") });

      // Servers: this node.
      await page.evaluate(() => (location.hash = "#/servers/"));
      await page.locator("tbody tr").first().waitFor({ timeout: WAIT });
      assert.match(await page.locator("tbody").innerText(), new RegExp(`${palaver.child.pid}`));
      await page.screenshot({ path: path.join(ARTIFACTS, "servers.png") });

      // The disconnect button on bob's row disconnects bob's real client.
      await page.evaluate(() => (location.hash = "#/sockets/"));
      const bobSid = bob.socket.id; // socket.io-client forgets it on disconnect
      const bobRow = page.locator("tbody tr", { hasText: bobSid });
      await bobRow.waitFor({ timeout: WAIT });
      const gone = new Promise((resolve) => bob.socket.once("disconnect", resolve));
      await bobRow.getByRole("button").click();
      assert.equal(await gone, "io server disconnect");
      // The click also opened bob's page (the row's own click); back on the list, bob's row is gone, ada's stays.
      await page.evaluate(() => (location.hash = "#/sockets/"));
      await page.waitForFunction(
        ([bobSid, adaSid]) => {
          const shown = (id) =>
            [...document.querySelectorAll("tbody tr")].some((tr) => tr.offsetParent !== null && tr.textContent.includes(id));
          return location.hash === "#/sockets/" && !shown(bobSid) && shown(adaSid);
        },
        [bobSid, ada.socket.id],
        { timeout: WAIT },
      );
      assert.equal(ada.socket.connected, true, "only bob was disconnected");
      await page.screenshot({ path: path.join(ARTIFACTS, "after-disconnect.png") });
      t.diagnostic(`screenshots in ${ARTIFACTS}`);
    } catch (err) {
      await page?.screenshot({ path: path.join(ARTIFACTS, "failure.png") }).catch(() => {});
      process.stderr.write(`palaver log:\n${palaver?.logTail(60)}\n`);
      throw err;
    }
  });
});
