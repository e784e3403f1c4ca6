// The connection as the page shows it: connecting, connected, reconnecting… or offline (with why).

import { useEffect, useState, useSyncExternalStore } from "react";
import type { PalaverError, User } from "@palaver/client";
import { useConnection } from "@palaver/client/react";

export type ConnState = "connecting" | "connected" | "reconnecting" | "offline";

export interface PageConnection {
  state: ConnState;
  user: User | undefined;
  /** Set when the server refused the connection (a bad token or name): nothing will be retried. */
  refused: PalaverError | undefined;
  /** A word on the last failure, for the badge's tooltip. */
  detail: string | undefined;
}

function subscribeOnline(listener: () => void): () => void {
  window.addEventListener("online", listener);
  window.addEventListener("offline", listener);
  return () => {
    window.removeEventListener("online", listener);
    window.removeEventListener("offline", listener);
  };
}

export function usePageConnection(): PageConnection {
  const { status, user, error, client } = useConnection();
  const online = useSyncExternalStore(subscribeOnline, () => navigator.onLine);
  const [serverClosed, setServerClosed] = useState(false);

  // A server that shuts down (a restart, a deploy) closes every connection itself, and socket.io-client does not
  // come back after that on its own: connect again, with a growing pause, until it answers.
  useEffect(() => {
    if (!client) return undefined;
    let delay = 1000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const offDisconnect = client.on("disconnect", (reason) => {
      if (reason !== "io server disconnect") return;
      setServerClosed(true);
      clearTimeout(timer);
      timer = setTimeout(() => client.socket.connect(), delay);
      delay = Math.min(delay * 2, 10_000);
    });
    const offConnect = client.on("connect", () => {
      delay = 1000;
      setServerClosed(false);
    });
    return () => {
      offDisconnect();
      offConnect();
      clearTimeout(timer);
    };
  }, [client]);

  let state: ConnState;
  if (status === "connected") state = "connected";
  else if (!online) state = "offline";
  else if (status === "closed") state = serverClosed ? "reconnecting" : "offline";
  else state = status;
  const refused = status === "closed" && !serverClosed && error?.code !== "disconnected" ? error : undefined;
  const detail = state === "connected" ? undefined : !online ? "the browser is offline" : error && `${error.code}: ${error.message}`;
  return { state, user, refused, detail };
}
