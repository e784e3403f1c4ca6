import { useState } from "react";

/** The reactions offered; the server takes any single emoji. */
export const QUICK_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢"];

interface Props {
  mine: boolean;
  /** The user moderates the room: they may delete anyone's message. */
  moderator: boolean;
  onReply(): void;
  onReact(emoji: string): void;
  onEdit(): void;
  onDelete(): void;
}

/**
 * The toolbar a message shows on hover: react, reply; for the user's own messages edit and delete, and delete for
 * a moderator of the room.
 */
export function MessageActions({ mine, moderator, onReply, onReact, onEdit, onDelete }: Props) {
  const [picking, setPicking] = useState(false);
  return (
    <div className="msg-actions" role="toolbar" aria-label="Message actions">
      {picking && (
        <div className="emoji-picker">
          {QUICK_EMOJI.map((emoji) => (
            <button
              key={emoji}
              type="button"
              data-emoji={emoji}
              aria-label={`React with ${emoji}`}
              onClick={() => {
                setPicking(false);
                onReact(emoji);
              }}
            >
              {emoji}
            </button>
          ))}
        </div>
      )}
      <button type="button" data-action="react" aria-expanded={picking} onClick={() => setPicking((p) => !p)}>
        React
      </button>
      <button type="button" data-action="reply" onClick={onReply}>
        Reply
      </button>
      {mine && (
        <button type="button" data-action="edit" onClick={onEdit}>
          Edit
        </button>
      )}
      {(mine || moderator) && (
        <button type="button" data-action="delete" onClick={onDelete}>
          Delete
        </button>
      )}
    </div>
  );
}
