"use client";
// <PalaverProvider>: one client for the components under it, made in the browser only.
//
// The client is made in an effect, never during render: render runs twice under StrictMode and runs on the server
// (Next.js), and neither may connect. Until the effect has run (the first render, server rendering, hydration) the
// hooks show an empty, `connecting` state, the same on the server and in the browser.

import { createContext, createElement, useEffect, useState, type ReactNode } from "react";

import { ChatStore, type PalaverClient, type PalaverOptions } from "../index.js";
import { acquireClient, clientKey, releaseClient } from "./lease.js";

/** Holds the provider's client once its effect has made (or taken back) one; the hooks subscribe to it. */
export class ClientSlot {
  private client: PalaverClient | undefined;
  private store: ChatStore | undefined;
  private readonly listeners = new Set<() => void>();
  private readonly waiters = new Set<(store: ChatStore) => void>();

  set(client: PalaverClient): void {
    if (client === this.client) return;
    this.client = client;
    this.store = ChatStore.of(client);
    for (const wake of [...this.waiters]) wake(this.store);
    this.waiters.clear();
    for (const listener of [...this.listeners]) listener();
  }

  readonly subscribe = (listener: () => void): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  readonly getClient = (): PalaverClient | undefined => this.client;
  readonly getStore = (): ChatStore | undefined => this.store;

  /** The store, now or once the provider's effect has run (calls made in a child's first effect wait for it). */
  whenStore(): Promise<ChatStore> {
    if (this.store) return Promise.resolve(this.store);
    return new Promise((resolve) => this.waiters.add(resolve));
  }
}

export const PalaverContext = createContext<ClientSlot | undefined>(undefined);

export interface PalaverProviderProps {
  /** The server (or the nodes of one cluster), as for `connect`. Not needed with `client`. */
  url?: string | readonly string[];
  /** As for `connect`. A change of anything but functions (`refreshToken`) makes a new client. */
  options?: PalaverOptions;
  /** A client made (and closed) by the app instead: the provider then only hands it to the hooks. */
  client?: PalaverClient;
  children?: ReactNode;
}

/**
 * Makes one client for its lifetime (from `url` and `options`), closes it when unmounted, and gives it to
 * `useRoom`, `useRooms` and `useConnection` below it. Safe under StrictMode (one connection, never a closed client
 * reused), with Fast Refresh (a remount takes the same client back) and in server rendering (nothing connects).
 */
export function PalaverProvider({ url, options, client, children }: PalaverProviderProps): ReactNode {
  if (!client && url === undefined) throw new Error("<PalaverProvider> needs a `url` (or a `client`)");
  const [slot] = useState(() => new ClientSlot());
  const key = client ? undefined : clientKey(url!, options);

  // Effects run in the browser only (never in server rendering), after the first render. The effect re-runs only
  // when `key` (what the client is made from) changes; its closure has that render's `url` and `options`.
  useEffect(() => {
    if (client) {
      slot.set(client);
      return undefined;
    }
    const owned = acquireClient(url!, options, key);
    slot.set(owned);
    return () => releaseClient(owned, key!);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [slot, client, key]);

  return createElement(PalaverContext.Provider, { value: slot }, children);
}
