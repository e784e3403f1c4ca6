-- palaver schema v9 (SQLite): nothing to change. Append-only.
--
-- Postgres's 0009 lets its GIN full-text index keep a larger pending list, merged by the server off the batch
-- writer's path. SQLite's FTS5 index (0008) is written by triggers in the writing statement and has no such list,
-- so this version only keeps the two folders numbered alike.
SELECT 1;
