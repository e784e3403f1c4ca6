-- palaver schema v11 (SQLite): nothing to change. Append-only.
--
-- Postgres's 0011 moves its full-text index onto words palaver extracts and stores with each message, because
-- evaluating the index's expression cost its batch writer more than the insert itself. SQLite's FTS5 index (0008)
-- is written by triggers with its own tokenizer, so this version only keeps the two folders numbered alike.
SELECT 1;
