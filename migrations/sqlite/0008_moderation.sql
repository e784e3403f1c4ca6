-- palaver schema v8 (SQLite): room moderation, blocks between users, and message search. Append-only, like every
-- migration. (0006 and 0007 are taken by other changes; the numbers only have to grow.)

-- Room roles. The owner of a group room is not stored here: it is the room's creator, `rooms.created_by`, recorded
-- since v2 (room:create, and room:join creating a public room). Rooms created before v2, and rooms the host's
-- backend created through the server API, have no creator and so no owner: only namespace admins (a claim of the
-- user's token, --admin-claim) moderate them, and may appoint moderators. A row here makes a user a moderator;
-- a member has no row (demoting deletes it), so the CHECK names the one role a row can hold. `granted_by` is who
-- appointed them; every change is also in moderation_log. A DM never has rows: it has no moderators.
CREATE TABLE room_roles (
    ns          TEXT NOT NULL,
    room        TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('moderator')),
    granted_by  TEXT NOT NULL,
    granted_at  TEXT NOT NULL,
    PRIMARY KEY (ns, room, user_id),
    FOREIGN KEY (ns, room) REFERENCES rooms (ns, id) ON DELETE CASCADE
);

-- Bans and mutes in force, at most one of each kind per user and room (a new one replaces the old). `until` NULL
-- means until lifted (room:unban, room:unmute). An ended sanction is never swept by a timer: every check compares
-- `until` with the current time, so it simply stops matching (and a later ban or mute of the user replaces the
-- row). Who placed it (id and display name at the time) is kept with it.
--
-- Checked where it matters, with no query of its own on the hot path: a ban when the user joins (room:join), both
-- kinds in the batch that commits a user's messages. The batch's first statement asks per room whether any
-- sanction is in force (an EXISTS on the primary key's (ns, room) prefix); only for such a room does a second
-- statement read its senders' sanctions.
--
-- Times are TEXT in the format sqlx writes (RFC 3339, UTC, microseconds at most), which sorts as time; they are
-- always compared with bound values, never with SQLite's own CURRENT_TIMESTAMP (another format).
CREATE TABLE room_sanctions (
    ns        TEXT NOT NULL,
    room      TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    kind      TEXT NOT NULL CHECK (kind IN ('ban', 'mute')),
    until     TEXT,
    by_id     TEXT NOT NULL,
    by_name   TEXT NOT NULL,
    at        TEXT NOT NULL,
    PRIMARY KEY (ns, room, user_id, kind),
    FOREIGN KEY (ns, room) REFERENCES rooms (ns, id) ON DELETE CASCADE
);

-- Every moderation action, with who did it: the actor's id and display name at the time, and whether they acted
-- as a namespace admin (rather than by their role in the room). `user_id` is the user acted on; `role` is set for
-- 'role' (the new role), `until` for 'ban' and 'mute' (NULL: until lifted). Append-only (AUTOINCREMENT: ids are
-- never reused); no foreign key to the room, so that the record does not depend on the room's row.
CREATE TABLE moderation_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ns          TEXT    NOT NULL,
    room        TEXT    NOT NULL,
    action      TEXT    NOT NULL CHECK (action IN ('role', 'kick', 'ban', 'unban', 'mute', 'unmute')),
    user_id     TEXT    NOT NULL,
    actor_id    TEXT    NOT NULL,
    actor_name  TEXT    NOT NULL,
    actor_admin BOOLEAN NOT NULL,
    role        TEXT,
    until       TEXT,
    at          TEXT    NOT NULL
);
-- A room's log, newest first.
CREATE INDEX moderation_log_room ON moderation_log (ns, room, id);

-- Blocks between users of a namespace: `blocker_id` receives no DM and no invitation from `blocked_id` (and sends
-- none to them). The primary key serves every lookup.
CREATE TABLE user_blocks (
    ns          TEXT NOT NULL,
    blocker_id  TEXT NOT NULL,
    blocked_id  TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (ns, blocker_id, blocked_id)
);

-- Full-text search of messages (messages:search): an FTS5 index over `messages.text` that stores no copy of the
-- text (an external-content table: content='messages', the message's id is the FTS rowid), kept up to date by the
-- triggers below inside the statement that writes the message (so a rolled-back batch leaves nothing behind, and
-- BENCHMARKS.md measures the cost). The messages already stored are indexed once, by 'rebuild'.
--
-- Same behaviour as the Postgres index (migrations/postgres/0008): the unicode61 tokenizer makes every run of
-- letters and digits a word and lowercases it; `remove_diacritics 0` keeps accents, as Postgres's 'simple'
-- configuration does; neither side stems or drops stop words.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text,
    content = 'messages',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;

-- An external-content index is told what a row held to take it out.
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO messages_fts (rowid, text) VALUES (new.id, new.text);
END;
