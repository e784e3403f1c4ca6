import { useState } from "react";
import { ChatStore, type RoomId, type User, type UserId } from "@palaver/client";
import { useConnection } from "@palaver/client/react";

import { colourFor, errorText } from "../format";
import { useRoomEvents } from "../roomEvents";
import { useToast } from "../toasts";
import { Avatar } from "./Avatar";

const MUTE_FOR_MS = 60 * 60_000;
const BAN_FOR_MS = 24 * 60 * 60_000;

interface Props {
  /** The group room whose moderation the menu acts on, where the user moderates it; none in a DM. */
  room?: RoomId;
  users: readonly User[];
  me: User | undefined;
  blockedUsers: ReadonlySet<UserId>;
  onStartDm(user: User): void;
  onBlockChanged(): void;
}

/**
 * Who is online in the room: click someone for a direct message. Each other user has a menu: block, and for a
 * moderator of the room (`room` given) kick, ban and mute (the server has the last word: a refusal is a toast).
 */
export function MembersPanel({ room, users, me, blockedUsers, onStartDm, onBlockChanged }: Props) {
  const [menuFor, setMenuFor] = useState<UserId>();
  const sorted = [...users].sort((a, b) =>
    a.id === me?.id ? -1 : b.id === me?.id ? 1 : a.name.localeCompare(b.name),
  );
  return (
    <aside className="members" aria-label="Online">
      <h2 id="online-title" className="nav-title">
        Online — {sorted.length}
      </h2>
      <ul id="online-list" className="member-list">
        {sorted.map((u) => {
          const isMe = u.id === me?.id;
          return (
            <li key={u.id} className="member-row">
              <button
                type="button"
                className={`member${isMe ? " is-me" : ""}`}
                data-user-id={u.id}
                data-user-name={u.name}
                title={isMe ? "You" : `Send ${u.name} a direct message`}
                disabled={isMe}
                onClick={() => onStartDm(u)}
              >
                <span className="member-avatar">
                  <Avatar name={u.name} />
                  <span className="presence-dot" aria-hidden="true" />
                </span>
                <span className="member-name" style={{ color: colourFor(u.name) }}>
                  {u.name}
                </span>
                {isMe ? (
                  <span className="member-tag">you</span>
                ) : u.anonymous ? (
                  <span className="member-tag">guest</span>
                ) : null}
              </button>
              {!isMe && (
                <button
                  type="button"
                  className="member-more"
                  data-menu-for={u.name}
                  aria-label={`More for ${u.name}`}
                  aria-expanded={menuFor === u.id}
                  onClick={() => setMenuFor((id) => (id === u.id ? undefined : u.id))}
                >
                  ⋯
                </button>
              )}
              {menuFor === u.id && (
                <MemberMenu
                  room={room}
                  user={u}
                  blocked={blockedUsers.has(u.id)}
                  onDone={() => setMenuFor(undefined)}
                  onBlockChanged={onBlockChanged}
                />
              )}
            </li>
          );
        })}
      </ul>
      <p className="members-hint">Click someone to send a direct message.</p>
    </aside>
  );
}

function MemberMenu(props: {
  room?: RoomId;
  user: User;
  blocked: boolean;
  onDone(): void;
  onBlockChanged(): void;
}) {
  const { room, user, blocked, onDone, onBlockChanged } = props;
  const { client } = useConnection();
  const events = useRoomEvents();
  const toast = useToast();

  /** Runs a call from the menu; a failure (`forbidden` for someone who may not moderate) says why. */
  async function act(what: string, call: () => Promise<void>) {
    onDone();
    try {
      await call();
    } catch (err) {
      toast(`Could not ${what}: ${errorText(err)}`);
    }
  }

  /** The line in the timeline says it's done (the server does not tell the socket that acted). */
  function moderate(kind: "kick" | "ban" | "mute" | "unmute", call: (room: RoomId) => Promise<void>, until?: Date) {
    if (!room) return;
    const what = { kick: "remove", ban: "ban", mute: "mute", unmute: "unmute" }[kind];
    void act(`${what} ${user.name}`, async () => {
      await call(room);
      events?.acted(room, kind, user, until);
    });
  }

  if (!client) return null;
  return (
    <div className="member-menu" role="menu" aria-label={user.name}>
      {room && (
        <>
          <button type="button" role="menuitem" data-action="kick" onClick={() => moderate("kick", (r) => ChatStore.of(client).kick(r, user.id))}>
            Kick from #{room}
          </button>
          <button
            type="button"
            role="menuitem"
            data-action="ban"
            onClick={() => {
              const until = new Date(Date.now() + BAN_FOR_MS);
              moderate("ban", (r) => ChatStore.of(client).ban(r, user.id, until), until);
            }}
          >
            Ban for a day
          </button>
          <button
            type="button"
            role="menuitem"
            data-action="mute"
            onClick={() => {
              const until = new Date(Date.now() + MUTE_FOR_MS);
              moderate("mute", (r) => client.mute(r, user.id, until), until);
            }}
          >
            Mute for an hour
          </button>
          <button type="button" role="menuitem" data-action="unmute" onClick={() => moderate("unmute", (r) => client.unmute(r, user.id))}>
            Unmute
          </button>
        </>
      )}
      <button
        type="button"
        role="menuitem"
        data-action={blocked ? "unblock" : "block"}
        onClick={() =>
          act(blocked ? `unblock ${user.name}` : `block ${user.name}`, async () => {
            await (blocked ? client.unblock(user.id) : client.block(user.id));
            toast(blocked ? `You unblocked ${user.name}.` : `You blocked ${user.name}: no direct messages either way.`, "info");
            onBlockChanged();
          })
        }
      >
        {blocked ? "Unblock" : "Block"}
      </button>
    </div>
  );
}
