"use client";
// Clients handed from an unmounted PalaverProvider to the next one mounted with the same settings.
//
// React StrictMode runs every effect twice (set up, clean up, set up), and Fast Refresh remounts a component whose
// hooks changed: either way a provider's client is released and asked for again within the same commit. A released
// client waits here a moment instead of being closed at once, and the next provider with the same settings takes it
// back: one connection, never a closed client reused. The list lives on globalThis, so a re-evaluated copy of this
// module (hot reload) finds it too.

import { connect, type PalaverClient, type PalaverOptions } from "../index.js";

/** How long a released client waits for a provider to take it back before it is closed. */
export const RELEASE_GRACE_MS = 1000;

interface Parked {
  key: string;
  client: PalaverClient;
  timer: ReturnType<typeof setTimeout>;
}

const PARKED = Symbol.for("@palaver/client/react: released clients");

function parked(): Parked[] {
  const g = globalThis as { [PARKED]?: Parked[] };
  return (g[PARKED] ??= []);
}

/**
 * What makes two providers' clients interchangeable: the URLs and every option that can be compared (functions,
 * such as `refreshToken`, are left out: a remount passes a new one that does the same).
 */
export function clientKey(url: string | readonly string[], options: PalaverOptions | undefined): string {
  try {
    return JSON.stringify([url, options ?? {}]);
  } catch {
    // Options that are no JSON (a socket.io `agent`, say): the same object is the same client.
    return JSON.stringify([url, `options#${identity(options!)}`]);
  }
}

const identities = new WeakMap<object, number>();
let nextIdentity = 0;

function identity(value: object): number {
  let id = identities.get(value);
  if (id === undefined) identities.set(value, (id = ++nextIdentity));
  return id;
}

/** A released client with this key if one is waiting, else a new one. */
export function acquireClient(
  url: string | readonly string[],
  options: PalaverOptions | undefined,
  key = clientKey(url, options),
): PalaverClient {
  const list = parked();
  const i = list.findIndex((p) => p.key === key && p.client.status !== "closed");
  if (i >= 0) {
    const [p] = list.splice(i, 1);
    clearTimeout(p!.timer);
    return p!.client;
  }
  return connect(url, options);
}

/** Gives a client back: closed after `graceMs` unless a provider takes it again. */
export function releaseClient(client: PalaverClient, key: string, graceMs = RELEASE_GRACE_MS): void {
  const list = parked();
  const entry: Parked = {
    key,
    client,
    timer: setTimeout(() => {
      const i = list.indexOf(entry);
      if (i >= 0) list.splice(i, 1);
      client.close();
    }, graceMs),
  };
  list.push(entry);
}
