-- palaver schema v10 (SQLite): message retention and background jobs. Append-only, like every migration.

-- Retention (`retention_days`, docs/operations.md) expires a namespace's old messages. Privacy is the point, so an
-- expired message loses its text in the database, exactly as a delete does: it becomes a tombstone (text emptied,
-- reply and reactions gone, `deleted_at` set, its own revision in the room's change feed). The row itself stays:
-- seq stays gap-free, "every message after seq N" stays a correct query, and clients holding the text learn of
-- the tombstone through the catch-up they already make. Deleting rows instead would have broken both promises for
-- a few bytes a message.
--
-- `expired_through`: every message of the room with seq <= expired_through has been expired or was deleted. The
-- job reads each room from there on (an index range scan of the (ns, room, seq) key, which stops at the first
-- message young enough to keep), so its cost follows the messages it expires, not the room's whole history, and
-- the table needs no index by age that every send would pay for. Adding a column with a constant default does
-- not rewrite the table.
ALTER TABLE rooms ADD COLUMN expired_through BIGINT NOT NULL DEFAULT 0;

-- Background jobs that must run on one node at a time (retention). A node runs a job only after claiming its row:
-- one conditional UPDATE that succeeds when the job is due (`last_run_at` older than its interval) and nobody
-- holds an unexpired lease, so two nodes asking at once cannot both win, and a node that dies mid-run holds the
-- job only until `leased_until`. The same pattern as the webhook leases (0005, 0006), on a row per job; it works
-- unchanged on SQLite, where every node of a database is one process anyway.
CREATE TABLE jobs (
    name          TEXT        PRIMARY KEY,
    leased_by     TEXT,
    leased_until  TEXT,
    last_run_at   TEXT,
    -- What the last finished run did, in a line, for the operator.
    last_result   TEXT
);

-- Times are TEXT in the format sqlx writes (RFC 3339, UTC), which sorts as time; they are only compared with bound
-- values.
