import { useLayoutEffect, useRef, useState, type ReactNode } from "react";
import type { SentMessage, TimelineMessage, User } from "@palaver/client";
import type { UseRoomResult } from "@palaver/client/react";

import { clock, colourFor, dayKey, dayLabel, excerpt, fullTime } from "../format";
import type { Note } from "../roomEvents";
import { MessageItem, type MessageHandlers, type Quote } from "./MessageItem";

/** Consecutive messages of one author within this share one header. */
const GROUP_GAP_MS = 5 * 60_000;

type Item = { type: "msg"; m: TimelineMessage } | { type: "note"; n: Note };

interface Props extends MessageHandlers {
  view: UseRoomResult;
  /** "#general", or the other user's name in a DM. */
  name: string;
  notes: readonly Note[];
  me: User | undefined;
  /** The room's start, shown once no older messages are left. */
  intro: ReactNode;
  /** In a DM: the highest seq the other user has read ("Seen" under the user's newest message once read). */
  seenUpTo?: number;
  /** A message to scroll to (a search result), if it is loaded. */
  focusSeq?: number;
  onFocused(): void;
}

/** Stored messages in seq order with the join/leave lines between them, then the user's pending and failed sends. */
function itemsOf(messages: readonly TimelineMessage[], notes: readonly Note[]): Item[] {
  const items: Item[] = [];
  let n = 0;
  for (const m of messages) {
    if (m.status === "sent") while (n < notes.length && notes[n].afterSeq < m.seq) items.push({ type: "note", n: notes[n++] });
    else while (n < notes.length) items.push({ type: "note", n: notes[n++] });
    items.push({ type: "msg", m });
  }
  while (n < notes.length) items.push({ type: "note", n: notes[n++] });
  return items;
}

function timeOf(item: Item): string {
  return item.type === "msg" ? item.m.at : item.n.at;
}

/** The message list: paging back, day dividers, grouping, "Jump to latest" while reading older messages. */
export function Timeline({ view, name, notes, me, intro, seenUpTo = 0, focusSeq, onFocused, ...handlers }: Props) {
  const box = useRef<HTMLDivElement>(null);
  /** At the bottom: new messages keep the view there. */
  const stick = useRef(true);
  /** While older messages load above: the distance from the bottom to keep. */
  const keepFromBottom = useRef<number | null>(null);
  const lastKey = useRef<string | undefined>(undefined);
  const [showJump, setShowJump] = useState(false);

  const { messages } = view;
  const bySeq = new Map<number, SentMessage>();
  for (const m of messages) if (m.status === "sent") bySeq.set(m.seq, m);
  // "Seen" goes under the user's newest message, once the other user has read up to it.
  let mineNewest = 0;
  if (me) for (const m of bySeq.values()) if (m.from.id === me.id && m.seq > mineNewest) mineNewest = m.seq;
  const seenSeq = mineNewest > 0 && mineNewest <= seenUpTo ? mineNewest : 0;

  function quoteOf(m: TimelineMessage): Quote | undefined {
    if (m.status === "sent") return m.replyTo && { ...m.replyTo, deleted: bySeq.get(m.replyTo.seq)?.deleted };
    const original = m.replyTo === undefined ? undefined : bySeq.get(m.replyTo);
    return original && { seq: original.seq, from: original.from, excerpt: excerpt(original.text) };
  }

  function measure() {
    const el = box.current;
    if (!el) return;
    const fromBottom = el.scrollHeight - el.scrollTop - el.clientHeight;
    stick.current = fromBottom < 80;
    setShowJump(fromBottom > 300);
  }

  // After every render: keep the reader where they were (older messages loaded above), or at the bottom.
  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    const last = messages[messages.length - 1];
    if (last && last.key !== lastKey.current && last.status !== "sent") stick.current = true; // the user just sent
    lastKey.current = last?.key;
    if (keepFromBottom.current !== null) {
      el.scrollTop = el.scrollHeight - keepFromBottom.current;
      if (!view.loadingOlder) keepFromBottom.current = null;
    } else if (stick.current) {
      el.scrollTop = el.scrollHeight;
    }
    if (focusSeq !== undefined && view.status !== "loading") {
      // Shown if loaded (an older message may not be: the room opens at its latest messages then).
      const target = el.querySelector<HTMLElement>(`[data-seq="${focusSeq}"]`);
      if (target) {
        target.scrollIntoView({ block: "center" });
        target.classList.add("flash");
        stick.current = false;
      }
      onFocused();
    }
    measure();
  });

  function loadOlder() {
    const el = box.current;
    if (el) keepFromBottom.current = el.scrollHeight - el.scrollTop;
    void view.loadOlder();
  }

  const items = itemsOf(messages, notes);
  const rows: ReactNode[] = [];
  let prev: Item | undefined;
  for (const item of items) {
    const at = timeOf(item);
    if (!prev || dayKey(timeOf(prev)) !== dayKey(at)) {
      rows.push(
        <div key={`day-${dayKey(at)}`} className="day-divider" role="separator">
          <span>{dayLabel(at)}</span>
        </div>,
      );
      prev = undefined;
    }
    if (item.type === "note") {
      rows.push(<NoteLine key={item.n.key} note={item.n} />);
    } else {
      const m = item.m;
      const compact =
        prev?.type === "msg" &&
        prev.m.from.id === m.from.id &&
        m.replyTo === undefined &&
        Date.parse(at) - Date.parse(timeOf(prev)) < GROUP_GAP_MS;
      rows.push(
        <MessageItem
          key={m.key}
          m={m}
          compact={compact}
          mine={!!me && m.from.id === me.id}
          moderator={view.moderator}
          quote={quoteOf(m)}
          seen={m.status === "sent" && m.seq === seenSeq}
          {...handlers}
        />,
      );
    }
    prev = item;
  }

  return (
    <div className="timeline">
      <div id="messages" className="messages" role="log" aria-live="polite" aria-label="Messages" ref={box} onScroll={measure}>
        {view.status === "error" ? (
          <div className="empty-state error-state">
            <h2>Could not open {name}</h2>
            <p>{view.error?.message}</p>
          </div>
        ) : view.status === "left" ? (
          <LeftState view={view} name={name} />
        ) : view.status === "loading" ? (
          <div className="loading">Loading messages…</div>
        ) : view.hasMore ? (
          <div className="older">
            <button type="button" id="load-older" className="btn btn-ghost" disabled={view.loadingOlder} onClick={loadOlder}>
              {view.loadingOlder ? "Loading…" : "Load older messages"}
            </button>
          </div>
        ) : (
          intro
        )}
        {view.status !== "error" && view.status !== "left" && rows}
      </div>
      <button
        id="jump-latest"
        className="jump"
        type="button"
        hidden={!showJump}
        onClick={() => box.current?.scrollTo({ top: box.current.scrollHeight, behavior: "smooth" })}
      >
        Jump to latest ↓
      </button>
    </div>
  );
}

/** Why the user is out of the room (they left, a moderator kicked or banned them), and a way back in. */
function LeftState({ view, name }: { view: UseRoomResult; name: string }) {
  const left = view.left;
  const by = left?.by ? left.by.name : "A moderator";
  const why =
    left?.kind === "kick"
      ? `${by} removed you from ${name}.`
      : left?.kind === "ban"
        ? `${by} banned you from ${name} ${left.until ? `until ${fullTime(left.until)}` : "until a moderator lifts it"}.`
        : `You left ${name}.`;
  return (
    <div id="left-state" className="empty-state" data-kind={left?.kind}>
      <h2>You are not in {name}</h2>
      <p id="left-reason">{why}</p>
      <button type="button" id="rejoin-btn" className="btn" onClick={() => view.rejoin()}>
        Join again
      </button>
    </div>
  );
}

const NOTE_TEXT: Record<Note["kind"], string> = {
  join: "joined the room",
  leave: "left the room",
  kick: "was removed from the room",
  ban: "was banned from the room",
  mute: "was muted",
  unmute: "can write again",
  role: "is now a",
};

/** "bob joined the room", "bob was removed from the room by Ada". */
function NoteLine({ note }: { note: Note }) {
  const arriving = note.kind === "join" || note.kind === "unmute" || note.kind === "role";
  return (
    <div className={`notice notice-${note.kind}`} data-user-id={note.user.id}>
      <span className="notice-icon" aria-hidden="true">
        {arriving ? "→" : "←"}
      </span>
      <span className="notice-text">
        <span className="notice-name" style={{ color: colourFor(note.user.name) }}>
          {note.user.name}
        </span>{" "}
        {NOTE_TEXT[note.kind]}
        {note.role && ` ${note.role}`}
        {note.by && ` by ${note.by.name}`}
        {note.until && ` until ${fullTime(note.until)}`}
      </span>
      <time className="notice-time" dateTime={note.at} title={fullTime(note.at)}>
        {clock(note.at)}
      </time>
    </div>
  );
}
