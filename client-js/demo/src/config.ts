// What the page's address says: which palaver to talk to, who connects, and the room to open first.
//
//   ?server=http://host:port   the palaver (default: this page's origin)
//   ?name=ada                  join as a guest called ada
//   ?token=<jwt>               sign in
//   ?room=general              the room to open first
//   #room-id                   the open room (kept up to date, so a reload comes back to it)

import type { PalaverOptions } from "@palaver/client";

const params = new URLSearchParams(location.search);

export const serverUrl = (params.get("server") || location.origin).replace(/\/+$/, "");
export const token = params.get("token") || undefined;
export const guestName = params.get("name") || undefined;
export const roomParam = params.get("room") || undefined;

/** The options of the page's one client (`<PalaverProvider options>`): data only, so it is compared as JSON. */
export const clientOptions: PalaverOptions = {
  auth: token ? { token } : guestName ? { name: guestName } : {},
  ackTimeout: 10_000,
  retries: 2,
};
