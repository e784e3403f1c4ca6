-- palaver schema v5 (postgres): the webhook outbox. Append-only, like every migration. (0004 is taken by another
-- change; the numbers only have to grow.)

-- Every event the host asked for (--webhook-events) is a row here, written in the same transaction as its cause
-- (a message.created row with the batch that inserts the message, a member row with the membership change), so
-- that an event is never lost when palaver stops between the commit and the delivery, and never sent for a
-- change that rolled back. `message.missed` is the exception: it is written right after the message's commit
-- (who is offline is known only then, from presence, not from the database).
--
-- * id: BIGSERIAL, the delivery order. Within a room, rows are inserted under the room's lock (the batch writer
--   locks the room row to number its messages), so a room's message ids grow in commit order.
-- * ns, room: a room's rows are delivered one at a time, in id order: a later row waits while an earlier one of
--   the same room is pending (also while it is failing and backing off). A failed (dead-lettered) row no longer
--   holds its room back.
-- * event: the event type (`message.created`, `room.member_added`, …); payload: the event's `data`, as JSON text
--   (TEXT rather than JSONB: palaver never queries into it, and sends it back byte for byte).
-- * attempts, next_attempt_at: the retry schedule (exponential backoff, capped); after --webhook-max-attempts the
--   row is `failed`, a dead letter listed by GET /api/v1/webhooks/failed until retried.
-- * leased_until, leased_by: a node claims due rows with FOR UPDATE SKIP LOCKED and sets a lease; while it lasts
--   no other node claims them, and if the node dies mid-delivery the lease runs out and another node takes over
--   (at least once: the host deduplicates by the Palaver-Webhook-Id header).
CREATE TABLE webhook_outbox (
    id              BIGSERIAL   PRIMARY KEY,
    ns              TEXT        NOT NULL,
    room            TEXT        NOT NULL,
    event           TEXT        NOT NULL,
    payload         TEXT        NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    attempts        BIGINT      NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    state           TEXT        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    last_error      TEXT,
    leased_until    TIMESTAMPTZ,
    leased_by       TEXT
);

-- The claim finds the head of each room's queue (its lowest pending id) on this index alone, then checks whether
-- that one row is due: the backlog behind a failing endpoint is never read row by row. Delivered rows stay out of
-- it (they are kept for the record and can be pruned by the operator).
CREATE INDEX webhook_outbox_room ON webhook_outbox (ns, room, id) WHERE state = 'pending';
-- The dead letters, for the API.
CREATE INDEX webhook_outbox_failed ON webhook_outbox (id) WHERE state = 'failed';
