-- pgbench -n -h 127.0.0.1 -U postgres -f bench/gin-insert.sql -t 300 -c 1 <db>: the batch writer's shape, 100 messages per
-- INSERT, the load tool's texts (BENCHMARKS.md §10). The db: migrations/postgres/0001-0007 applied with psql, rooms
-- '/' bench-0..bench-99 created, CREATE SEQUENCE exp_seq; then vary the search index between runs.
INSERT INTO messages (ns, room, seq, sender_id, sender_name, text, client_id, created_at)
SELECT '/', 'bench-' || (s % 100), s, 'bench-' || (s % 1000), 'bench-' || (s % 1000),
       'r1ab:' || (s % 1000) || ':' || (s / 1000) || ':' || (1764488000000000000 + s * 91237) || ':' || repeat('x', 160),
       'r1ab-' || s, now()
FROM (SELECT nextval('exp_seq') AS s FROM generate_series(1, 100)) q;
