-- palaver schema v1 (SQLite). Migrations are append-only: never edit a file once it has shipped.

-- A room belongs to a Socket.IO namespace: each namespace is an isolated chat space, so the namespace is part of
-- every key. `last_seq` is the room's message counter: appending a message bumps it in the same transaction,
-- which makes the room row the lock that orders concurrent writers, so seq is gap-free and in commit order.
CREATE TABLE rooms (
    ns          TEXT        NOT NULL,
    id          TEXT        NOT NULL,
    name        TEXT        NOT NULL,
    kind        TEXT        NOT NULL CHECK (kind IN ('group', 'dm')),
    visibility  TEXT        NOT NULL CHECK (visibility IN ('public', 'private')),
    created_at  TEXT NOT NULL,
    last_seq    BIGINT      NOT NULL DEFAULT 0,
    -- When the last message was committed: `rooms:list` shows the most recently active rooms first.
    last_active_at TEXT,
    PRIMARY KEY (ns, id)
);

-- Public rooms are listed to everyone in `rooms:list`.
CREATE INDEX rooms_public ON rooms (ns) WHERE visibility = 'public';

-- Who is in which room. The display name is kept so that a DM can show the other side while they are offline.
CREATE TABLE memberships (
    ns         TEXT        NOT NULL,
    room       TEXT        NOT NULL,
    user_id    TEXT        NOT NULL,
    user_name  TEXT        NOT NULL,
    joined_at  TEXT NOT NULL,
    PRIMARY KEY (ns, room, user_id),
    FOREIGN KEY (ns, room) REFERENCES rooms (ns, id) ON DELETE CASCADE
);

-- Re-entering a user's rooms on connect reads memberships by user.
CREATE INDEX memberships_by_user ON memberships (ns, user_id, joined_at DESC);

-- Messages keep the sender's id and display name as they were at send time: renaming later does not rewrite
-- history. `id` is a global surrogate key clients can use as a React key.
CREATE TABLE messages (
    id           INTEGER     PRIMARY KEY AUTOINCREMENT,
    ns           TEXT        NOT NULL,
    room         TEXT        NOT NULL,
    seq          BIGINT      NOT NULL,
    sender_id    TEXT        NOT NULL,
    sender_name  TEXT        NOT NULL,
    text         TEXT        NOT NULL,
    client_id    TEXT,
    created_at   TEXT NOT NULL,
    FOREIGN KEY (ns, room) REFERENCES rooms (ns, id) ON DELETE CASCADE,
    -- Serves every history query (latest, before, after) as an index range scan.
    UNIQUE (ns, room, seq)
);

-- Idempotent sends: the database, not a node's memory, guarantees one message per (room, sender, client id),
-- so retries are safe across reconnects and across nodes.
CREATE UNIQUE INDEX messages_client_id ON messages (ns, room, sender_id, client_id) WHERE client_id IS NOT NULL;

-- SQLite notes: timestamps are RFC 3339 text written by palaver (sortable, and what sqlx's chrono support reads);
-- AUTOINCREMENT keeps message ids from being reused after the newest message is deleted.
