// Helpers for the browser end-to-end tests: the palaver binary serving the built demo, Chromium from the system,
// screenshots, and small waits on the page.

import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const PKG_ROOT = path.resolve(here, "..");
export const REPO_ROOT = path.resolve(PKG_ROOT, "..");
export const BIN = path.resolve(PKG_ROOT, process.env.PALAVER_BIN || "../target/debug/palaver");
export const DIST = path.resolve(PKG_ROOT, "demo/dist");
export const ARTIFACTS = path.resolve(REPO_ROOT, "test-artifacts/e2e");
export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const JWT_SECRET = "palaver-e2e-secret";
const VERBOSE = process.env.PALAVER_TEST_VERBOSE === "1";
const KEEP = process.env.PALAVER_TEST_KEEP === "1";

/** Fails early, with what to do, when the page or the server is not built. */
export function checkPrerequisites() {
  const missing = [];
  if (!existsSync(path.join(DIST, "index.html"))) {
    missing.push(`the demo is not built (${DIST}/index.html): run \`npm run build:demo\` in client-js/`);
  }
  if (!existsSync(BIN)) missing.push(`no server binary at ${BIN}: run \`cargo build\` in ${REPO_ROOT} (or set PALAVER_BIN)`);
  if (!existsSync(CHROMIUM)) missing.push(`no Chromium at ${CHROMIUM}: \`apt-get install -y chromium\` (or set CHROMIUM_PATH)`);
  if (missing.length) throw new Error(`cannot run the browser tests:\n- ${missing.join("\n- ")}`);
}

/** A temp dir for the SQLite file, removed by `drop()`. */
export async function tempDatabase() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "palaver-e2e-"));
  return {
    dir,
    url: `sqlite://${dir}/p.db`,
    drop: () => (KEEP ? Promise.resolve() : rm(dir, { recursive: true, force: true })),
  };
}

// Settings from the environment must not leak into the server under test: every one is a flag here.
function cleanEnv() {
  const env = { ...process.env, NO_COLOR: "1", RUST_LOG: process.env.RUST_LOG || "info" };
  for (const key of Object.keys(env)) {
    if (key.startsWith("PALAVER_") || ["DATABASE_URL", "JWT_SECRET", "JWT_PUBLIC_KEY", "JWT_ALGORITHM", "PORT"].includes(key)) {
      delete env[key];
    }
  }
  return env;
}

/**
 * Starts the palaver binary serving the built demo: `--listen <listen> --static-dir <dist> --database-url <db>
 * --jwt-secret <s>`, and resolves once it logs `listening … addr=127.0.0.1:PORT`.
 */
export async function startPalaver({ databaseUrl, listen = "127.0.0.1:0", flags = {} }) {
  const args = ["--listen", listen, "--static-dir", DIST, "--database-url", databaseUrl, "--jwt-secret", JWT_SECRET];
  for (const [k, v] of Object.entries(flags)) args.push(`--${k}`, String(v));
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"], env: cleanEnv() });
  const log = [];
  const server = { child, log, args, url: null, addr: null, exit: null };
  server.exited = new Promise((resolve) => {
    child.once("exit", (code, signal) => {
      server.exit = { code, signal };
      log.push(`[exited: code=${code} signal=${signal}]`);
      resolve(server.exit);
    });
  });
  const listening = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("palaver did not log `listening` within 30 s")), 30_000);
    const onLine = (line) => {
      // eslint-disable-next-line no-control-regex
      line = line.replace(/\x1b\[[0-9;]*m/g, "");
      log.push(line);
      if (log.length > 2000) log.splice(0, log.length - 2000);
      if (VERBOSE) process.stderr.write(`[palaver] ${line}\n`);
      const m = /listening.*addr=([\d.]+:\d+)/.exec(line);
      if (m && !server.addr) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    for (const stream of [child.stdout, child.stderr]) {
      let buf = "";
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        buf += chunk;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          onLine(buf.slice(0, nl));
          buf = buf.slice(nl + 1);
        }
      });
    }
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${BIN}: ${err.message}`));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`palaver exited before listening (code ${code}, signal ${signal}):\n${log.join("\n")}`));
    });
  });
  server.addr = await listening;
  server.url = `http://${server.addr}`;
  server.port = Number(server.addr.split(":").pop());
  server.stop = () => stopPalaver(server);
  server.logTail = (n = 80) => log.slice(-n).join("\n");
  return server;
}

/** SIGTERM (palaver shuts down gracefully), SIGKILL after 10 s. */
export async function stopPalaver(server) {
  if (!server || server.exit) return server?.exit;
  server.child.kill("SIGTERM");
  const timer = setTimeout(() => server.child.kill("SIGKILL"), 10_000);
  const exit = await server.exited;
  clearTimeout(timer);
  return exit;
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Empties the artifact folder of earlier screenshots. */
export async function resetArtifacts() {
  await mkdir(ARTIFACTS, { recursive: true });
  for (const f of await readdir(ARTIFACTS)) {
    if (f.endsWith(".png")) await rm(path.join(ARTIFACTS, f), { force: true });
  }
}

/** A full-viewport screenshot into test-artifacts/e2e/<name>.png; returns its path. */
export async function screenshot(page, name) {
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/** The trimmed text of every element matching `selector`. */
export function texts(page, selector) {
  return page.locator(selector).evaluateAll((els) => els.map((e) => (e.textContent ?? "").trim()));
}
