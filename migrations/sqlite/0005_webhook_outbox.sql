-- palaver schema v5 (SQLite): the webhook outbox. Append-only, like every migration. (0004 is taken by another
-- change; the numbers only have to grow.)

-- Every event the host asked for (--webhook-events) is a row here, written in the same transaction as its cause
-- (a message.created row with the batch that inserts the message, a member row with the membership change), so
-- that an event is never lost when palaver stops between the commit and the delivery, and never sent for a
-- change that rolled back. `message.missed` is the exception: it is written right after the message's commit
-- (who is offline is known only then, from presence, not from the database).
--
-- * id: the delivery order (AUTOINCREMENT: ids are never reused, so a host deduplicating by id stays right);
-- * ns, room: a room's rows are delivered one at a time, in id order: a later row waits while an earlier one of
--   the same room is pending (also while it backs off). A failed (dead-lettered) row no longer holds it back;
-- * event, payload: the event type and its `data`, as JSON text;
-- * attempts, next_attempt_at: the retry schedule; after --webhook-max-attempts the row is `failed`, a dead
--   letter listed by GET /api/v1/webhooks/failed until retried;
-- * leased_until, leased_by: the claim's lease. SQLite serves one node, so the single writer connection is the
--   lock; the lease keeps a row from being claimed twice while its delivery is in flight.
-- Times are TEXT in the format sqlx writes (RFC 3339, UTC), which sorts as time; they are always compared with
-- bound values, never with SQLite's own CURRENT_TIMESTAMP (another format).
CREATE TABLE webhook_outbox (
    id              INTEGER     PRIMARY KEY AUTOINCREMENT,
    ns              TEXT        NOT NULL,
    room            TEXT        NOT NULL,
    event           TEXT        NOT NULL,
    payload         TEXT        NOT NULL,
    created_at      TEXT        NOT NULL,
    attempts        BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at TEXT        NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    last_error      TEXT,
    leased_until    TEXT,
    leased_by       TEXT
);

-- The claim finds the head of each room's queue (its lowest pending id) on this index alone, then checks whether
-- that one row is due: the backlog behind a failing endpoint is never read row by row.
CREATE INDEX webhook_outbox_room ON webhook_outbox (ns, room, id) WHERE state = 'pending';
CREATE INDEX webhook_outbox_failed ON webhook_outbox (id) WHERE state = 'failed';
