import { useCallback, useEffect, useState, useSyncExternalStore } from "react";
import type { PalaverError, PendingMessage, RoomId, RoomSummary, SentMessage, User, UserId } from "@palaver/client";
import { useConnection, useRoom } from "@palaver/client/react";

import { errorText } from "../format";
import { useNotes, useReadByOthers } from "../roomEvents";
import { useToast } from "../toasts";
import { Avatar } from "./Avatar";
import { Composer } from "./Composer";
import { RefusedBanner } from "./EmptyPane";
import { MembersPanel } from "./MembersPanel";
import { RoomHeader } from "./RoomHeader";
import { SearchPanel } from "./SearchPanel";
import { Timeline } from "./Timeline";

interface Props {
  room: RoomId;
  /** The room as the room list has it (undefined until listed). */
  summary: RoomSummary | undefined;
  me: User | undefined;
  refused: PalaverError | undefined;
  blockedUsers: ReadonlySet<UserId>;
  /** A message to scroll to once loaded (a search result). */
  focusSeq?: number;
  onFocused(): void;
  onJoined(room: RoomId): void;
  onLeave(room: RoomId): void;
  onStartDm(user: User): void;
  onOpenRoom(room: RoomId, seq?: number): void;
  onBlockChanged(): void;
}

function subscribeVisibility(listener: () => void): () => void {
  document.addEventListener("visibilitychange", listener);
  return () => document.removeEventListener("visibilitychange", listener);
}

/** An open room or DM: its header, messages, composer, and who is online. `useRoom` joins it while shown. */
export function RoomPane(props: Props) {
  const { room, summary, me, refused, blockedUsers, onJoined, onLeave, onStartDm, onOpenRoom, onBlockChanged } = props;
  const view = useRoom(room);
  const notes = useNotes(room);
  const seenUpTo = useReadByOthers(room);
  const { client } = useConnection();
  const toast = useToast();
  const visible = useSyncExternalStore(subscribeVisibility, () => document.visibilityState === "visible");
  const [replyTo, setReplyTo] = useState<SentMessage>();

  const dm = summary?.kind === "dm" || room.startsWith("dm:");
  const peer = summary?.peer;
  const name = dm ? (peer?.name ?? "direct message") : `#${room}`;
  const blocked = dm && !!peer && blockedUsers.has(peer.id);
  const { status, unread, markRead } = view;

  useEffect(() => {
    if (status === "ready") onJoined(room);
  }, [status, room, onJoined]);

  useEffect(() => {
    if (status === "error") toast(`Could not open ${name}: ${errorText(view.error)}`);
    // Once per failure, not on every change of the name.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [status, view.error]);

  // Read while looking at it: the badges clear here and, where the server keeps read state, on the user's other
  // devices, and in a DM the other user sees "Seen". A server without read state refuses `room:read`; the counter
  // here is cleared all the same, so that failure is not worth a word.
  useEffect(() => {
    if (visible && unread > 0) void markRead();
  }, [visible, unread, markRead]);

  const send = (text: string) => {
    void view.send(text, replyTo ? { replyTo: replyTo.seq } : undefined);
    setReplyTo(undefined);
  };
  const retry = (m: PendingMessage) => {
    void view.send(m.text, m.replyTo === undefined ? { clientId: m.clientId } : { clientId: m.clientId, replyTo: m.replyTo });
  };
  const tell = useCallback((what: string) => (err: unknown) => toast(`Could not ${what}: ${errorText(err)}`), [toast]);

  async function toggleBlock() {
    if (!client || !peer) return;
    try {
      await (blocked ? client.unblock(peer.id) : client.block(peer.id));
      toast(blocked ? `You unblocked ${peer.name}.` : `You blocked ${peer.name}: no direct messages either way.`, "info");
      onBlockChanged();
    } catch (err) {
      tell(blocked ? "unblock" : "block")(err);
    }
  }

  const users = [...view.members];
  if (me && status === "ready" && !users.some((u) => u.id === me.id)) users.push(me);
  // The user's own say here: the room's role (a DM has none), and admin over every group room.
  const standing = view.role === undefined ? undefined : view.moderator && view.role === "member" ? "admin" : view.role;

  const intro = dm ? (
    <div className="room-intro" id="room-start">
      <Avatar name={name} size="large" />
      <h2>{name}</h2>
      <p>This is the beginning of your direct messages with {name}.</p>
    </div>
  ) : (
    <div className="room-intro" id="room-start">
      <span className="room-intro-icon" aria-hidden="true">
        {summary?.visibility === "private" ? <i className="icon-lock" /> : "#"}
      </span>
      <h2>Welcome to #{room}</h2>
      <p>This is the start of the #{room} room.</p>
    </div>
  );

  const sub = dm
    ? "direct message"
    : summary
      ? `${summary.visibility} room${status === "ready" ? ` · ${users.length} online` : ""}`
      : "";
  const live = status === "ready";

  return (
    <>
      <main className="chat" aria-label="Conversation">
        <RoomHeader
          icon={dm ? "@" : summary?.visibility === "private" ? <i className="icon-lock" /> : "#"}
          title={dm ? name : room}
          sub={sub}
        >
          {!dm && live && standing && (
            <span id="my-role" className={`role-badge role-${standing}`} title="Your role in this room">
              {standing}
            </span>
          )}
          <SearchPanel room={room} onOpen={onOpenRoom} />
          {dm && peer && (
            <button id="block-btn" className="btn btn-small btn-danger" type="button" onClick={toggleBlock}>
              {blocked ? "Unblock" : "Block"}
            </button>
          )}
          {!dm && live && (
            <button id="leave-btn" className="btn btn-small btn-danger" type="button" onClick={() => onLeave(room)}>
              Leave room
            </button>
          )}
        </RoomHeader>
        {refused && <RefusedBanner refused={refused} />}
        {blocked && (
          <div id="blocked-banner" className="banner banner-info">
            You blocked {name}: neither of you can send direct messages to the other until you unblock.
          </div>
        )}
        <Timeline
          view={view}
          name={name}
          notes={notes}
          me={me}
          intro={intro}
          seenUpTo={dm ? seenUpTo : 0}
          focusSeq={props.focusSeq}
          onFocused={props.onFocused}
          onReply={setReplyTo}
          onEdit={(seq, text) => view.edit(seq, text).then(() => {}, tell("edit the message"))}
          onRemove={(seq) => view.remove(seq).catch(tell("delete the message"))}
          onReact={(seq, emoji) => void view.react(seq, emoji).catch(tell("react"))}
          onRetry={retry}
          onDiscard={view.discard}
        />
        <Composer
          placeholder={blocked ? `You blocked ${name}` : `Message ${dm ? `@${name}` : name}`}
          disabled={status === "error" || status === "left" || !!refused || blocked}
          replyTo={replyTo}
          onCancelReply={() => setReplyTo(undefined)}
          onSend={send}
          onTyping={view.notifyTyping}
          typing={view.typing}
        />
      </main>
      <MembersPanel
        room={dm || !view.moderator ? undefined : room}
        users={users}
        me={me}
        blockedUsers={blockedUsers}
        onStartDm={onStartDm}
        onBlockChanged={onBlockChanged}
      />
    </>
  );
}
