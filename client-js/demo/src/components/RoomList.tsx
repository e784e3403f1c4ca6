import type { RoomId, RoomSummary } from "@palaver/client";

import type { Open } from "../App";
import { Avatar } from "./Avatar";

interface Props {
  rooms: readonly RoomSummary[];
  /** The group rooms the user is in (members, and rooms joined on this page), by name. */
  myRooms: readonly RoomId[];
  joined: ReadonlySet<RoomId>;
  open: Open;
  onOpen(room: RoomId): void;
}

/** The user's rooms and direct messages with unread badges, and public rooms to join. */
export function RoomList({ rooms, myRooms, joined, open, onOpen }: Props) {
  const byId = new Map(rooms.map((r) => [r.id, r]));
  const dms = rooms.filter((r) => r.kind === "dm");
  const browse = rooms
    .filter((r) => r.kind === "group" && r.visibility === "public" && !r.member && !joined.has(r.id))
    .slice(0, 15);
  const item = (id: RoomId) => (
    <RoomItem key={id} id={id} summary={byId.get(id)} active={open?.kind === "room" && open.room === id} onOpen={onOpen} />
  );

  return (
    <nav className="room-nav">
      <section className="nav-section">
        <h2 className="nav-title">Rooms</h2>
        <ul id="room-list" className="nav-list">
          {myRooms.map(item)}
        </ul>
        {myRooms.length === 0 && <p className="nav-empty">No rooms yet — join one above.</p>}
      </section>
      <section className="nav-section">
        <h2 className="nav-title">Direct messages</h2>
        <ul id="dm-list" className="nav-list">
          {dms.map((r) => item(r.id))}
        </ul>
        {dms.length === 0 && <p className="nav-empty">Click someone who is online to start a conversation.</p>}
      </section>
      {browse.length > 0 && (
        <section className="nav-section">
          <h2 className="nav-title">Public rooms</h2>
          <ul id="browse-list" className="nav-list nav-list-browse">
            {browse.map((r) => item(r.id))}
          </ul>
        </section>
      )}
    </nav>
  );
}

function RoomItem(props: { id: RoomId; summary: RoomSummary | undefined; active: boolean; onOpen(room: RoomId): void }) {
  const { id, summary, active, onOpen } = props;
  const unread = summary?.unread ?? 0;
  const dm = summary?.kind === "dm";
  const label = dm ? (summary.peer?.name ?? "direct message") : id;
  return (
    <li>
      <button
        type="button"
        className={`nav-item${active ? " active" : ""}${unread ? " unread" : ""}`}
        data-room={id}
        title={dm ? `Direct messages with ${label}` : `#${id}`}
        onClick={() => onOpen(id)}
      >
        {dm ? (
          <Avatar name={label} size="small" />
        ) : (
          <span className="nav-icon" aria-hidden="true">
            {summary?.visibility === "private" ? <i className="icon-lock" /> : "#"}
          </span>
        )}
        <span className="nav-label">{label}</span>
        {unread > 0 && (
          <span className="badge" aria-label={`${unread} unread`}>
            {unread > 99 ? "99+" : unread}
          </span>
        )}
      </button>
    </li>
  );
}
