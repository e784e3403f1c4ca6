-- palaver schema v8 (postgres): room moderation, blocks between users, and message search. Append-only, like every
-- migration. (0006 and 0007 are taken by other changes; the numbers only have to grow.)

-- Room roles. The owner of a group room is not stored here: it is the room's creator, `rooms.created_by`, recorded
-- since v2 (room:create, and room:join creating a public room). Rooms created before v2, and rooms the host's
-- backend created through the server API, have no creator and so no owner: only namespace admins (a claim of the
-- user's token, --admin-claim) moderate them, and may appoint moderators. A row here makes a user a moderator;
-- a member has no row (demoting deletes it), so the CHECK names the one role a row can hold. `granted_by` is who
-- appointed them; every change is also in moderation_log. A DM never has rows: it has no moderators.
CREATE TABLE room_roles (
    ns          TEXT        NOT NULL,
    room        TEXT        NOT NULL,
    user_id     TEXT        NOT NULL,
    role        TEXT        NOT NULL CHECK (role IN ('moderator')),
    granted_by  TEXT        NOT NULL,
    granted_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (ns, room, user_id),
    FOREIGN KEY (ns, room) REFERENCES rooms (ns, id) ON DELETE CASCADE
);

-- Bans and mutes in force, at most one of each kind per user and room (a new one replaces the old). `until` NULL
-- means until lifted (room:unban, room:unmute). An ended sanction is never swept by a timer: every check compares
-- `until` with the current time, so it simply stops matching (and a later ban or mute of the user replaces the
-- row). Who placed it (id and display name at the time) is kept with it, so an error or a log can say so.
--
-- Checked where it matters, with no query of its own on the hot path: a ban when the user joins (room:join), both
-- kinds in the batch that commits a user's messages. The batch's first statement, which already locks the rooms'
-- counters, asks per room whether any sanction is in force (an EXISTS on the primary key's (ns, room) prefix);
-- only for such a room does a second statement read its senders' sanctions. So a send to a room where nobody is
-- banned or muted costs nothing more.
CREATE TABLE room_sanctions (
    ns        TEXT        NOT NULL,
    room      TEXT        NOT NULL,
    user_id   TEXT        NOT NULL,
    kind      TEXT        NOT NULL CHECK (kind IN ('ban', 'mute')),
    until     TIMESTAMPTZ,
    by_id     TEXT        NOT NULL,
    by_name   TEXT        NOT NULL,
    at        TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (ns, room, user_id, kind),
    FOREIGN KEY (ns, room) REFERENCES rooms (ns, id) ON DELETE CASCADE
);

-- Every moderation action, with who did it: the actor's id and display name at the time, and whether they acted
-- as a namespace admin (rather than by their role in the room). `user_id` is the user acted on; `role` is set for
-- 'role' (the new role), `until` for 'ban' and 'mute' (NULL: until lifted). Append-only; no foreign key to the
-- room, so that the record of what happened does not depend on the room's row.
CREATE TABLE moderation_log (
    id          BIGSERIAL   PRIMARY KEY,
    ns          TEXT        NOT NULL,
    room        TEXT        NOT NULL,
    action      TEXT        NOT NULL CHECK (action IN ('role', 'kick', 'ban', 'unban', 'mute', 'unmute')),
    user_id     TEXT        NOT NULL,
    actor_id    TEXT        NOT NULL,
    actor_name  TEXT        NOT NULL,
    actor_admin BOOLEAN     NOT NULL,
    role        TEXT,
    until       TIMESTAMPTZ,
    at          TIMESTAMPTZ NOT NULL
);
-- A room's log, newest first.
CREATE INDEX moderation_log_room ON moderation_log (ns, room, id);

-- Blocks between users of a namespace: `blocker_id` receives no DM and no invitation from `blocked_id` (and sends
-- none to them). The primary key serves every lookup: one pair (a DM), and one blocked user against a list of
-- blockers (the invitees of room:invite and room:create), and rooms:list's `blocked` flag of a DM.
CREATE TABLE user_blocks (
    ns          TEXT        NOT NULL,
    blocker_id  TEXT        NOT NULL,
    blocked_id  TEXT        NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (ns, blocker_id, blocked_id)
);

-- Full-text search of messages (messages:search), as a GIN index over an expression rather than a stored
-- tsvector column: nothing to keep in sync, no extra row storage, and the index is maintained by the INSERT itself
-- (GIN's fast-update pending list keeps that cheap; BENCHMARKS.md measures it).
--
-- Same behaviour as SQLite's FTS5 index (migrations/sqlite/0008): every run of characters that are neither letters
-- nor digits separates words (regexp_replace), so that Postgres's parser, which would keep `ann@example.com` or
-- `example.com` as one token and `3.14` as a number, sees the words FTS5's unicode61 tokenizer sees; the 'simple'
-- configuration lowercases and neither stems nor drops stop words (FTS5 does neither), and neither side folds
-- accents. Queries use exactly this expression, so the planner can match it to the index.
--
-- On a large messages table this build blocks writes while it runs: create the same index beforehand with
-- CREATE INDEX CONCURRENTLY under the same name, and IF NOT EXISTS makes this a no-op.
CREATE INDEX IF NOT EXISTS messages_search
    ON messages USING GIN (to_tsvector('simple', regexp_replace(text, '[^[:alnum:]]+', ' ', 'g')));
