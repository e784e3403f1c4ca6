-- palaver schema v7 (SQLite): replies, edits, deletes, reactions and read state. Append-only, like every
-- migration. (0006 is taken by another change; the numbers only have to grow.)

-- Replies: the seq of the message replied to, in the same room. Only the seq is stored: who wrote it and an
-- excerpt are read from that message when history is read, so an edit or a delete of it shows in the reply too.
-- Adding a nullable column without a default does not rewrite the table; a send without a reply binds NULL.
ALTER TABLE messages ADD COLUMN reply_to BIGINT;

-- Edits and deletes change the row in place: `text` is the current text, `edited_at` when it last changed. A
-- delete keeps the row as a tombstone (`deleted_at` set, `text` emptied, `reply_to` cleared) so that seq stays
-- gap-free and "every message after seq N" stays a correct query.
ALTER TABLE messages ADD COLUMN edited_at TEXT;
ALTER TABLE messages ADD COLUMN deleted_at TEXT;

-- The room's change feed. `rooms.last_rev` counts the changes to a room's stored messages (an edit, a delete, a
-- reaction added or removed); each change takes the next value in the transaction that makes it, after locking
-- the room row with that very update, so revisions grow in commit order, as seq does (the room row is the lock
-- that orders a room's writers). `messages.rev` is the revision of the message's latest change, NULL for a
-- message never changed: "the messages of this room changed after revision R" is then one range scan of the
-- partial index below, and a catch-up returns each changed message once, in its current state. New messages
-- leave it NULL: a send writes neither the counter nor the index.
ALTER TABLE rooms ADD COLUMN last_rev BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN rev BIGINT;
CREATE INDEX messages_changed ON messages (ns, room, rev) WHERE rev IS NOT NULL;

-- Reactions: one row per (message, emoji, user), so adding twice is one reaction and a count is a GROUP BY.
-- Keyed by the message's (ns, room, seq), which its UNIQUE constraint makes a key; a deleted room takes its
-- reactions with its messages. A deleted message's reactions are deleted with the delete.
CREATE TABLE reactions (
    ns          TEXT        NOT NULL,
    room        TEXT        NOT NULL,
    seq         BIGINT      NOT NULL,
    emoji       TEXT        NOT NULL,
    user_id     TEXT        NOT NULL,
    created_at  TEXT        NOT NULL,
    PRIMARY KEY (ns, room, seq, emoji, user_id),
    FOREIGN KEY (ns, room, seq) REFERENCES messages (ns, room, seq) ON DELETE CASCADE
);

-- Read state lives on the membership: a member's position is one column of a row every room listing already
-- reads, so `rooms:list` and `session` get `lastRead` without another join. Guests in public rooms have no
-- membership and so no read state (their id dies with their connection). `last_read` only grows (the update
-- that sets it says `last_read < new`); `last_read_at` orders the read receipts a catch-up returns. A member who
-- joins from now on starts at the room's last seq at that moment (src/store/sql.rs, ADD_MEMBER): what was said
-- before they joined is history, not unread.
ALTER TABLE memberships ADD COLUMN last_read BIGINT NOT NULL DEFAULT 0;
ALTER TABLE memberships ADD COLUMN last_read_at TEXT;

-- Members from before read state existed start with everything read: their clients never said otherwise, and
-- every room of every user turning unread at the upgrade would be noise (and each count a scan); as of the room's
-- last message. One pass over the members, once.
UPDATE memberships
SET last_read = (SELECT r.last_seq FROM rooms r WHERE r.ns = memberships.ns AND r.id = memberships.room),
    last_read_at = (SELECT r.last_active_at FROM rooms r WHERE r.ns = memberships.ns AND r.id = memberships.room)
WHERE state = 'joined';
