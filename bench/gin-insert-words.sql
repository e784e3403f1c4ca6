-- pgbench -n -h 127.0.0.1 -U postgres -f bench/gin-insert-words.sql -t 300 -c 1 <db>: bench/gin-insert.sql's batch with
-- the words of each text given, as palaver has written them since migration 0011 (BENCHMARKS.md §10, fourth look).
-- The db: migrations/postgres/0001-0011 applied with psql, rooms '/' bench-0..bench-99 created, CREATE SEQUENCE exp_seq.
INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, client_id, created_at, search_words)
SELECT '/', 'bench-' || (s % 100), s, 'bench-' || (s % 1000), 'bench-' || (s % 1000),
       'r1ab:' || (s % 1000) || ':' || (s / 1000) || ':' || (1764488000000000000 + s * 91237) || ':' || repeat('x', 160),
       'r1ab-' || s, now(),
       array_to_tsvector(string_to_array('r1ab ' || (s % 1000) || ' ' || (s / 1000) || ' ' || (1764488000000000000 + s * 91237) || ' ' || repeat('x', 160), ' '))
FROM (SELECT nextval('exp_seq') AS s FROM generate_series(1, 100)) q;
