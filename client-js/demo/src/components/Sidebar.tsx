import type { RoomId, RoomSummary } from "@palaver/client";

import type { Open } from "../App";
import { guestName, token } from "../config";
import type { PageConnection } from "../connection";
import { colourFor } from "../format";
import { Avatar } from "./Avatar";
import { ConnectionBadge } from "./ConnectionBadge";
import { RoomForms } from "./RoomForms";
import { RoomList } from "./RoomList";

interface Props {
  conn: PageConnection;
  rooms: readonly RoomSummary[];
  myRooms: readonly RoomId[];
  joined: ReadonlySet<RoomId>;
  open: Open;
  onOpen(room: RoomId): void;
  onJoin(name: string): boolean;
  onCreate(name: string, isPrivate: boolean): Promise<boolean>;
}

/** The left column: the connection, the room forms and lists, and who you are. */
export function Sidebar({ conn, onJoin, onCreate, ...lists }: Props) {
  return (
    <aside className="sidebar" aria-label="Rooms">
      <header className="brand">
        <span className="brand-logo" aria-hidden="true" />
        <span className="brand-name">palaver</span>
        <ConnectionBadge conn={conn} />
      </header>
      <RoomForms onJoin={onJoin} onCreate={onCreate} />
      <RoomList {...lists} />
      <Me conn={conn} />
    </aside>
  );
}

function Me({ conn }: { conn: PageConnection }) {
  const { user, refused } = conn;
  if (!user) {
    return (
      <footer id="me" className="me">
        <span className="avatar avatar-me" aria-hidden="true">
          ?
        </span>
        <span className="me-text">
          <span id="me-name" className="me-name">
            {refused ? (token ? "not signed in" : (guestName ?? "guest")) : "…"}
          </span>
          <span id="me-kind" className="me-kind">
            {refused ? "refused by the server" : "connecting"}
          </span>
        </span>
      </footer>
    );
  }
  return (
    <footer id="me" className="me">
      <Avatar name={user.name} size="me" />
      <span className="me-text">
        <span id="me-name" className="me-name" style={{ color: colourFor(user.name) }}>
          {user.name}
        </span>
        <span
          id="me-kind"
          className={`me-kind ${user.anonymous ? "is-guest" : "is-user"}`}
          title={user.anonymous ? "Anonymous: you get a new identity on every connection" : `user id ${user.id}`}
        >
          {user.anonymous ? "guest" : "signed in"}
        </span>
      </span>
    </footer>
  );
}
