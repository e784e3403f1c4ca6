import { serverUrl } from "../config";
import type { PageConnection } from "../connection";

const LABELS = { connecting: "connecting…", connected: "connected", reconnecting: "reconnecting…", offline: "offline" };

/** connected / reconnecting… / offline, with what went wrong in the tooltip. */
export function ConnectionBadge({ conn }: { conn: PageConnection }) {
  const text = LABELS[conn.state];
  return (
    <span
      id="conn-state"
      className={`conn conn-${conn.state}`}
      data-state={conn.state}
      role="status"
      aria-live="polite"
      title={conn.detail ? `${text}: ${conn.detail}` : `Connection to ${serverUrl}: ${text}`}
    >
      <span className="conn-dot" aria-hidden="true" />
      <span id="conn-text" className="conn-text">
        {text}
      </span>
    </span>
  );
}
