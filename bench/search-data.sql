-- psql -h 127.0.0.1 -U postgres -d <a database migrated by palaver (or migrations/postgres/0001-0008 applied by psql)> -f bench/search-data.sql
-- The data of BENCHMARKS.md §10 (search): then bench/search-queries.sh times the search SQL on it.
-- 1M messages in 1000 rooms (100 public), ann a member of 20 private rooms; ~10 words per message from a skewed
-- vocabulary of 5000 words; 'zebracorn' (rare) in 5 messages spread over time, 'w1' very common.
DROP INDEX IF EXISTS messages_search;
INSERT INTO rooms (ns, id, name, kind, visibility)
SELECT '/', 'r' || g, 'r' || g, 'group', CASE WHEN g < 100 THEN 'public' ELSE 'private' END FROM generate_series(0, 999) g;
INSERT INTO memberships (ns, room, user_id, user_name) SELECT '/', 'r' || g, 'ann', 'ann' FROM generate_series(100, 119) g;
INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, created_at)
SELECT '/', 'r' || (t.s % 1000), t.s / 1000 + 1, 'u' || (t.s % 77), 'u' || (t.s % 77),
       (SELECT string_agg('w' || floor(pow(random(), 3) * 5000)::int, ' ') FROM generate_series(1, 10) k WHERE t.s >= 0),
       now()
FROM generate_series(0, 999999) AS t(s);
UPDATE messages SET text = text || ' zebracorn' WHERE id IN (1000, 250100, 500110, 750119, 999105);
UPDATE rooms r SET last_seq = (SELECT coalesce(max(seq), 0) FROM messages m WHERE m.ns = r.ns AND m.room = r.id);
VACUUM ANALYZE messages;
SET maintenance_work_mem = '256MB';
CREATE INDEX IF NOT EXISTS messages_search ON messages USING GIN (to_tsvector('simple', regexp_replace(text, '[^[:alnum:]]+', ' ', 'g')));
ANALYZE messages;
