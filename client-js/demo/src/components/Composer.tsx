import { useEffect, useRef, useState, type FormEvent } from "react";
import type { SentMessage, User } from "@palaver/client";

import { colourFor, excerpt, typingLine } from "../format";

interface Props {
  placeholder: string;
  disabled: boolean;
  /** The message being answered, quoted above the input. */
  replyTo?: SentMessage;
  onCancelReply(): void;
  onSend(text: string): void;
  /** Called on every keystroke with text (the SDK throttles what it sends). */
  onTyping(): void;
  /** Others typing in the room. */
  typing: readonly User[];
}

/** The input at the bottom, the message it replies to, and who else is typing. */
export function Composer({ placeholder, disabled, replyTo, onCancelReply, onSend, onTyping, typing }: Props) {
  const [draft, setDraft] = useState("");
  const input = useRef<HTMLInputElement>(null);

  useEffect(() => {
    if (replyTo) input.current?.focus();
  }, [replyTo]);

  function submit(e: FormEvent) {
    e.preventDefault();
    if (!draft.trim() || disabled) return;
    onSend(draft);
    setDraft("");
  }

  return (
    <div className="composer-wrap">
      {replyTo && (
        <div id="reply-preview" className="reply-preview">
          <span className="reply-preview-to">
            Replying to{" "}
            <b className="reply-preview-author" style={{ color: colourFor(replyTo.from.name) }}>
              {replyTo.from.name}
            </b>
          </span>
          <span className="reply-preview-text">{excerpt(replyTo.text)}</span>
          <button type="button" id="reply-cancel" className="link" onClick={onCancelReply}>
            Cancel
          </button>
        </div>
      )}
      <form id="composer" className="composer" autoComplete="off" onSubmit={submit}>
        <input
          id="composer-input"
          ref={input}
          name="text"
          placeholder={placeholder}
          aria-label="Message"
          maxLength={4000}
          autoFocus
          disabled={disabled}
          value={draft}
          onChange={(e) => {
            setDraft(e.target.value);
            if (e.target.value.trim()) onTyping();
          }}
          onKeyDown={(e) => {
            if (e.key === "Escape" && replyTo) onCancelReply();
          }}
        />
        <button id="send-btn" type="submit" className="btn" disabled={disabled}>
          Send
        </button>
      </form>
      <div id="typing" className={`typing${typing.length ? " on" : ""}`} aria-live="polite">
        {typing.length > 0 && (
          <>
            <span className="typing-dots" aria-hidden="true">
              <i />
              <i />
              <i />
            </span>
            <span className="typing-text">{typingLine(typing.map((u) => u.name))}</span>
          </>
        )}
      </div>
    </div>
  );
}
