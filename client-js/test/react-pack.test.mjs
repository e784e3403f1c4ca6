// The package as a new React user gets it: `npm pack`, a fresh Vite React app that installs the tarball and
// socket.io-client from the registry (as it would once published), the READMEs' React setup written verbatim into
// it (the blocks marked `<!-- vite-app: path -->` in client-js/README.md and the repository's README.md). It must have one socket.io-client, type-check
// (`tsc --noEmit`: no clash of two socket.io-client declarations), and build (`vite build`). Then the built app runs
// in Chromium under StrictMode against a real palaver: one connection, and a message sent from the page stored once.
//
// The app's tools are the versions this repository has installed (react, vite, typescript…), so npm mostly finds
// them in its cache; @vitejs/plugin-react comes from the registry. Its socket.io-client is deliberately another
// version than the repository's: a package that brought its own copy (a dependency instead of a peer dependency,
// or an install by path) would leave two, whose types clash (TS2322 "separate declarations of a private property
// 'uri'"; TypeScript merges only identical versions).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe } from "node:test";

import { chromium } from "playwright-core";

import {
  PKG_ROOT,
  connectUser,
  createDatabase,
  fullHistory,
  identity,
  it,
  ok,
  spawnServer,
  stopServer,
  until,
} from "./harness.mjs";

const KEEP = process.env.PALAVER_TEST_KEEP === "1";
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const IN_CI = !["", "0", "false"].includes((process.env.CI ?? "").trim().toLowerCase());
const PLUGIN_REACT = "6.3.0";
/** Within the SDK's peer range, and not the version the repository develops with. */
const APP_SOCKET_IO_CLIENT = "4.8.1";
/** The URL the README's main.tsx connects to; the test's server replaces it. */
const README_URL = "http://localhost:3000";

/** Runs a command; resolves with its output, rejects (with the output) on a non-zero exit. */
function run(cmd, args, { cwd, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout.on("data", (d) => (output += d));
    child.stderr.on("data", (d) => (output += d));
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code === 0) resolve(output);
      else reject(new Error(`${cmd} ${args.join(" ")} (in ${cwd}) exited with ${code}:\n${output.slice(-6000)}`));
    });
  });
}

/** The version of `name` this repository has installed. */
async function installed(name) {
  const json = JSON.parse(await readFile(path.join(PKG_ROOT, "node_modules", name, "package.json"), "utf8"));
  return json.version;
}

/** The files the READMEs' React sections give (this package's and the repository's): `{ "src/App.tsx": "…" }`. */
async function readmeFiles() {
  const files = {};
  for (const readme of [path.join(PKG_ROOT, "README.md"), path.join(PKG_ROOT, "..", "README.md")]) {
    const text = await readFile(readme, "utf8");
    const marked = /<!-- vite-app: (\S+) -->\n```\w*\n([\s\S]*?)\n```/g;
    for (const [, file, code] of text.matchAll(marked)) {
      assert.equal(files[file], undefined, `${file} is given once`);
      files[file] = `${code}\n`;
    }
  }
  return files;
}

/** Every installed package directory named `name` under `dir`/node_modules, at any depth. */
async function copiesOf(dir, name) {
  const found = [];
  async function walk(modules) {
    let entries;
    try {
      entries = await readdir(modules, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory() && !e.isSymbolicLink()) continue;
      const full = path.join(modules, e.name);
      if (e.name.startsWith("@")) {
        for (const sub of await readdir(full)) {
          const pkg = path.join(full, sub);
          if (`${e.name}/${sub}` === name) found.push(pkg);
          await walk(path.join(pkg, "node_modules"));
        }
      } else {
        if (e.name === name) found.push(full);
        await walk(path.join(full, "node_modules"));
      }
    }
  }
  await walk(path.join(dir, "node_modules"));
  return found;
}

describe("react: the packed package in a fresh Vite app", { timeout: 600_000 }, () => {
  let work;
  let app;
  let tarball;

  before(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), "palaver-vite-app-"));
    app = path.join(work, "app");
    await mkdir(path.join(app, "src"), { recursive: true });
  });
  after(async () => {
    if (work && !KEEP) await rm(work, { recursive: true, force: true });
  });

  it("npm pack: dist/ with both entry points, no socket.io-client or react among the dependencies", { timeout: 120_000 }, async () => {
    // `npm test` built dist/ (pretest); packing skips the rebuild of prepack.
    const out = await run("npm", ["pack", "--ignore-scripts", "--json", "--pack-destination", work], { cwd: PKG_ROOT });
    const [info] = JSON.parse(out.slice(out.indexOf("[")));
    tarball = path.join(work, info.filename);
    const files = info.files.map((f) => f.path);
    for (const f of ["dist/index.js", "dist/index.d.ts", "dist/react/index.js", "dist/react/index.d.ts", "package.json"]) {
      assert.ok(files.includes(f), `${f} is in the tarball`);
    }
    assert.ok(!files.some((f) => f.startsWith("test/") || f.startsWith("demo/")), "no tests or demo in the tarball");
    const pkg = JSON.parse(await readFile(path.join(PKG_ROOT, "package.json"), "utf8"));
    assert.equal(pkg.dependencies, undefined, "no dependencies of its own");
    assert.ok(pkg.peerDependencies["socket.io-client"]);
    assert.ok(pkg.peerDependencies.react);
    assert.equal(pkg.peerDependenciesMeta.react.optional, true);
  });

  it("installs into a fresh Vite React app with one socket.io-client", { timeout: 480_000 }, async () => {
    assert.ok(tarball, "packed by the previous test");
    const deps = {
      "@palaver/client": `file:${tarball}`,
      "socket.io-client": APP_SOCKET_IO_CLIENT,
      react: await installed("react"),
      "react-dom": await installed("react-dom"),
    };
    const devDeps = {
      "@types/react": await installed("@types/react"),
      "@types/react-dom": await installed("@types/react-dom"),
      "@vitejs/plugin-react": PLUGIN_REACT,
      typescript: await installed("typescript"),
      vite: await installed("vite"),
    };
    const files = {
      "package.json": JSON.stringify(
        { name: "palaver-react-app", private: true, type: "module", dependencies: deps, devDependencies: devDeps },
        null,
        2,
      ),
      "index.html":
        '<!doctype html>\n<html lang="en">\n  <head><meta charset="UTF-8" /><title>palaver</title></head>\n' +
        '  <body>\n    <div id="root"></div>\n    <script type="module" src="/src/main.tsx"></script>\n  </body>\n</html>\n',
      "vite.config.ts":
        'import { defineConfig } from "vite";\nimport react from "@vitejs/plugin-react";\n\n' +
        "export default defineConfig({ plugins: [react()] });\n",
      // Vite's react-ts template, as of Vite 8.
      "tsconfig.json": JSON.stringify(
        {
          compilerOptions: {
            target: "ES2022",
            lib: ["ES2022", "DOM", "DOM.Iterable"],
            module: "ESNext",
            moduleResolution: "bundler",
            jsx: "react-jsx",
            strict: true,
            noEmit: true,
            isolatedModules: true,
            skipLibCheck: true,
            noUnusedLocals: true,
            noUnusedParameters: true,
            types: [],
          },
          include: ["src"],
        },
        null,
        2,
      ),
    };
    const readme = await readmeFiles();
    assert.deepEqual(Object.keys(readme).sort(), ["src/App.tsx", "src/Welcome.tsx", "src/main.tsx", "src/quick-start.tsx"]);
    assert.ok(readme["src/main.tsx"].includes(README_URL), `the README's main.tsx connects to ${README_URL}`);
    for (const [file, text] of Object.entries({ ...files, ...readme })) await writeFile(path.join(app, file), text);
    await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: app });

    assert.notEqual(await installed("socket.io-client"), APP_SOCKET_IO_CLIENT, "the app's version differs from the repo's");
    const copies = await copiesOf(app, "socket.io-client");
    assert.deepEqual(copies, [path.join(app, "node_modules", "socket.io-client")], "one socket.io-client, at the top");
    assert.ok(existsSync(path.join(app, "node_modules", "@palaver", "client", "dist", "react", "index.js")));
    assert.ok(!existsSync(path.join(app, "node_modules", "@palaver", "client", "node_modules")), "nothing nested");
  });

  it("type-checks (tsc --noEmit) and builds (vite build) with the README's code", { timeout: 240_000 }, async () => {
    // A socket of the app's socket.io-client where the SDK's types are expected, and the reverse: two copies (of
    // different versions) fail here.
    await writeFile(
      path.join(app, "src", "types-check.ts"),
      [
        'import { io, type Socket } from "socket.io-client";',
        'import { connect, type ClientToServerEvents, type PalaverSocket, type ServerToClientEvents } from "@palaver/client";',
        "",
        "const mine: Socket<ServerToClientEvents, ClientToServerEvents> = io();",
        "export const asSdk: PalaverSocket = mine;",
        'export const fromSdk: Socket<ServerToClientEvents, ClientToServerEvents> = connect("http://localhost:3000").socket;',
        "",
      ].join("\n"),
    );
    await run(process.execPath, [path.join(app, "node_modules", "typescript", "bin", "tsc"), "--noEmit", "-p", "."], { cwd: app });
    await run(process.execPath, [path.join(app, "node_modules", "vite", "bin", "vite.js"), "build"], { cwd: app });
    const assets = path.join(app, "dist", "assets");
    const js = (await readdir(assets)).filter((f) => f.endsWith(".js"));
    const bundle = (await Promise.all(js.map((f) => readFile(path.join(assets, f), "utf8")))).join("\n");
    // A string of socket.io-client's own source: once per copy in the bundle.
    assert.equal(bundle.split("io client disconnect").length - 1, 1, "socket.io-client is in the bundle once");
  });

  it(
    "the built app in Chromium under StrictMode: one connection, a message sent from the page stored once",
    { timeout: 120_000, skip: !existsSync(CHROMIUM) && !IN_CI ? `no Chromium at ${CHROMIUM}` : false },
    async () => {
      assert.ok(existsSync(path.join(app, "dist", "index.html")), "built by the previous test");
      const db = await createDatabase("sqlite");
      const server = await spawnServer({
        databaseUrl: db.url,
        flags: { "static-dir": path.join(app, "dist") },
        label: "palaver/vite-app",
      });
      // The README's URL, pointed at this server (the page is served by palaver itself: same origin).
      const assets = path.join(app, "dist", "assets");
      for (const f of await readdir(assets)) {
        if (!f.endsWith(".js")) continue;
        const file = path.join(assets, f);
        const text = await readFile(file, "utf8");
        if (text.includes(README_URL)) await writeFile(file, text.replaceAll(README_URL, server.url));
      }
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
      try {
        const page = await browser.newPage();
        const errors = [];
        page.on("pageerror", (err) => errors.push(err.message));
        page.on("console", (msg) => {
          // The browser asks for /favicon.ico, which the app has not.
          if (msg.type() === "error" && !msg.location().url.endsWith("/favicon.ico")) {
            errors.push(`${msg.text()} (${msg.location().url})`);
          }
        });
        // Every new Engine.IO connection starts with a request without a session id.
        const handshakes = [];
        page.on("request", (req) => {
          const url = new URL(req.url());
          if (url.pathname.startsWith("/socket.io/") && !url.searchParams.has("sid")) handshakes.push(req.url());
        });
        await page.goto(server.url);
        await page.getByText(/^ada · \d+ online$/).waitFor({ timeout: 15_000 });
        await page.locator("input").fill("hello from the README app");
        await page.getByRole("button", { name: "Send" }).click();
        await page.locator("li.sent", { hasText: "hello from the README app" }).waitFor({ timeout: 15_000 });

        const { socket } = await connectUser(server, identity("observer"));
        await ok(socket, "room:join", { room: "general" });
        const history = await fullHistory(socket, "general");
        assert.deepEqual(
          history.map((m) => [m.from.name, m.text]),
          [["ada", "hello from the README app"]],
          "stored once",
        );
        await until(() => page.locator("li").count().then((n) => n === 1));
        assert.equal(handshakes.length, 1, `one connection from the page under StrictMode: ${handshakes.join(", ")}`);
        assert.deepEqual(errors, [], "no error on the page");
      } finally {
        await browser.close();
        await stopServer(server);
        await db.drop();
      }
    },
  );
});
