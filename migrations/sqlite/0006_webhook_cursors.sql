-- palaver schema v6 (sqlite): message.created webhooks read the message log itself instead of an outbox row per
-- message. Append-only, like every migration.

-- Why. 0005 wrote a `message.created` outbox row in every message batch. That doubled the rows each batch writes
-- and measurably slowed the chat's acks even when the endpoint was dead (BENCHMARKS.md §9). But `messages` already
-- is a durable, per-room ordered log (gap-free `seq`, committed with the message): a cursor per room, "delivered up
-- to seq N", is all the outbox message.created needs. The write path of a message is now the same with or without
-- webhooks. Member events and message.missed still go through webhook_outbox (they are rare).
--
-- * delivered_seq: every message of the room with seq <= delivered_seq has been delivered (or dead-lettered).
-- * attempts, next_attempt_at, last_error: the retry schedule of the message right after delivered_seq (exponential
--   backoff); after --webhook-max-attempts it is copied into webhook_outbox as a dead letter and the cursor moves on.
-- * leased_until, leased_by: a node claims a room's cursor (FOR UPDATE SKIP LOCKED on Postgres; SQLite has one writer) and leases it while it delivers,
--   so one room's messages go out from one node at a time, in order; a dead node's lease runs out.
CREATE TABLE webhook_cursors (
    ns              TEXT        NOT NULL,
    room            TEXT        NOT NULL,
    delivered_seq   BIGINT      NOT NULL,
    attempts        BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at TEXT        NOT NULL,
    last_error      TEXT,
    leased_until    TEXT,
    leased_by       TEXT,
    PRIMARY KEY (ns, room),
    FOREIGN KEY (ns, room) REFERENCES rooms (ns, id) ON DELETE CASCADE
);

-- When message.created webhooks were first turned on for this database (one row). A room gets its cursor the first
-- time a node delivers for it: its messages from before this moment are history, not events, and are skipped;
-- every later one is delivered. (Turning webhooks off and on again pauses delivery: the cursors stay where they
-- were, and the messages sent meanwhile are delivered when they are back on.)
CREATE TABLE webhook_epoch (
    id    INTEGER     PRIMARY KEY CHECK (id = 1),
    since TEXT    NOT NULL
);

-- A dead-lettered message.created row keeps the Palaver-Webhook-Id its attempts carried (`msg-<message id>`), so a
-- receiver that did process one of them can still deduplicate its retry. NULL: the row's own id is the webhook id.
ALTER TABLE webhook_outbox ADD COLUMN webhook_id TEXT;
