import { useState, type KeyboardEvent } from "react";
import type { PendingMessage, SentMessage, TimelineMessage, UserId } from "@palaver/client";

import { clock, colourFor, errorText, fullTime } from "../format";
import { Avatar } from "./Avatar";
import { MessageActions } from "./MessageActions";

/** What a reply shows of the message it answers. */
export interface Quote {
  seq: number;
  from: { id: UserId; name: string };
  excerpt: string;
  deleted?: boolean;
}

export interface MessageHandlers {
  onReply(m: SentMessage): void;
  /** Resolves once done (a failure is told by the caller). */
  onEdit(seq: number, text: string): Promise<void>;
  onRemove(seq: number): Promise<void>;
  onReact(seq: number, emoji: string): void;
  onRetry(m: PendingMessage): void;
  onDiscard(clientId: string): void;
}

interface Props extends MessageHandlers {
  m: TimelineMessage;
  /** Under the previous message of the same author: no avatar or name. */
  compact: boolean;
  mine: boolean;
  /** The user moderates the room (deletes anyone's message). */
  moderator: boolean;
  quote: Quote | undefined;
  /** The other user of the DM has read up to this message. */
  seen: boolean;
}

/**
 * One message: stored (with its edits, deletion, reactions and the message it replies to), or one of the user's
 * sends, greyed until the server has it, or failed with Retry and Discard. Text is React text: never HTML.
 */
export function MessageItem({ m, compact, mine, moderator, quote, seen, ...handlers }: Props) {
  const [editing, setEditing] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const sent = m.status === "sent" ? m : undefined;
  const deleted = sent?.deleted === true;
  const className = ["msg", compact && "compact", m.status !== "sent" && m.status, deleted && "deleted"]
    .filter(Boolean)
    .join(" ");
  const ids = sent ? { "data-seq": sent.seq, "data-id": sent.id } : { "data-client-id": m.clientId };

  return (
    <div className={className} {...ids} data-from={m.from.name}>
      {compact ? (
        <span className="msg-gutter">
          <time className="msg-time-compact" dateTime={m.at} title={fullTime(m.at)}>
            {clock(m.at)}
          </time>
        </span>
      ) : (
        <Avatar name={m.from.name} />
      )}
      <div className="msg-body">
        {quote && <ReplyQuote quote={quote} />}
        {!compact && (
          <div className="msg-meta">
            <span className="msg-author" style={{ color: colourFor(m.from.name) }} title={m.from.id}>
              {m.from.name}
            </span>
            <time className="msg-time" dateTime={m.at} title={fullTime(m.at)}>
              {clock(m.at)}
            </time>
          </div>
        )}
        {deleted ? (
          <div className="msg-line">
            <span className="msg-deleted">This message was deleted.</span>
          </div>
        ) : editing && sent ? (
          <EditBox
            text={sent.text}
            onSave={async (text) => {
              if (text !== sent.text) await handlers.onEdit(sent.seq, text);
              setEditing(false);
            }}
            onCancel={() => setEditing(false)}
          />
        ) : (
          <div className="msg-line">
            <span className="msg-text">{m.text}</span>
            {sent?.editedAt && (
              <span className="msg-edited" title={`edited ${fullTime(sent.editedAt)}`}>
                {" "}
                (edited)
              </span>
            )}
          </div>
        )}
        {sent && !deleted && (sent.reactions?.length ?? 0) > 0 && (
          <div className="reactions">
            {sent.reactions!.map((r) => (
              <button
                key={r.emoji}
                type="button"
                className={`reaction${r.me ? " mine" : ""}`}
                aria-pressed={r.me}
                data-emoji={r.emoji}
                title={r.me ? "Remove your reaction" : "React with this too"}
                onClick={() => handlers.onReact(sent.seq, r.emoji)}
              >
                {r.emoji} <span className="reaction-count">{r.count}</span>
              </button>
            ))}
          </div>
        )}
        {m.status === "failed" && (
          <div className="msg-error">
            <span>Not sent: {errorText(m.error)} </span>
            <button type="button" className="link" onClick={() => handlers.onRetry(m)}>
              Retry
            </button>
            {" · "}
            <button type="button" className="link" onClick={() => handlers.onDiscard(m.clientId)}>
              Discard
            </button>
          </div>
        )}
        {confirming && sent && (
          <div className="msg-confirm">
            <span>Delete this message for everyone?</span>
            <button
              type="button"
              className="btn btn-small btn-danger"
              data-action="confirm-delete"
              onClick={() => {
                setConfirming(false);
                void handlers.onRemove(sent.seq);
              }}
            >
              Delete
            </button>
            <button type="button" className="btn btn-small btn-ghost" onClick={() => setConfirming(false)}>
              Cancel
            </button>
          </div>
        )}
        {seen && <div className="msg-seen">Seen</div>}
      </div>
      {sent && !deleted && !editing && (
        <MessageActions
          mine={mine}
          moderator={moderator}
          onReply={() => handlers.onReply(sent)}
          onReact={(emoji) => handlers.onReact(sent.seq, emoji)}
          onEdit={() => setEditing(true)}
          onDelete={() => setConfirming(true)}
        />
      )}
    </div>
  );
}

function ReplyQuote({ quote }: { quote: Quote }) {
  return (
    <div className="msg-reply" data-reply-seq={quote.seq}>
      <span className="msg-reply-author" style={{ color: colourFor(quote.from.name) }}>
        {quote.from.name}
      </span>{" "}
      <span className="msg-reply-text">{quote.deleted ? "(deleted)" : quote.excerpt}</span>
    </div>
  );
}

/** The text of the user's message, in place: Enter saves, Escape cancels. */
function EditBox({ text, onSave, onCancel }: { text: string; onSave(text: string): void; onCancel(): void }) {
  const [draft, setDraft] = useState(text);
  function onKeyDown(e: KeyboardEvent<HTMLInputElement>) {
    if (e.key === "Escape") onCancel();
    if (e.key === "Enter" && draft.trim()) onSave(draft);
  }
  return (
    <div className="msg-edit">
      <input
        className="msg-edit-input"
        aria-label="Edit message"
        maxLength={4000}
        autoFocus
        value={draft}
        onChange={(e) => setDraft(e.target.value)}
        onKeyDown={onKeyDown}
      />
      <span className="msg-edit-hint">Enter to save · Escape to cancel</span>
    </div>
  );
}
