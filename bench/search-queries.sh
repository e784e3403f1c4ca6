#!/usr/bin/env bash
# Old (main at e82765b) and new search SQL of messages:search on the database of bench/search-data.sql (DB, default
# bench12_search) (1M messages), namespace-wide for ann (20 private
# rooms + 100 public) and in one room; each query run 5 times, the median reported.
db=${DB:-bench12_search}
cols="m.id, m.room, m.seq, m.sender_id, m.sender_name, m.text, m.client_id, m.created_at, m.edited_at, (m.deleted_at IS NOT NULL) AS deleted, m.rev, m.reply_to, p.sender_id AS reply_sender_id, p.sender_name AS reply_sender_name, SUBSTR(p.text, 1, 100) AS reply_excerpt, (p.deleted_at IS NOT NULL) AS reply_deleted FROM messages m LEFT JOIN messages p ON p.ns = m.ns AND p.room = m.room AND p.seq = m.reply_to "
match="messages m WHERE to_tsvector('simple', regexp_replace(m.text, '[^[:alnum:]]+', ' ', 'g')) @@ to_tsquery('simple', \$3)"
all_rooms="m.room IN (SELECT room FROM memberships WHERE ns = \$1 AND user_id = \$2 AND state = 'joined' UNION SELECT id FROM rooms WHERE ns = \$1 AND visibility = 'public')"
one_room="m.room = \$2"
any_rooms="(m.room = ANY (ARRAY(SELECT room FROM memberships WHERE ns = \$1 AND user_id = \$2 AND state = 'joined' UNION SELECT id FROM rooms WHERE ns = \$1 AND visibility = 'public'))) IS TRUE"
old() { echo "WITH hits AS MATERIALIZED (SELECT m.id FROM $match AND m.ns = \$1 AND m.id < \$4 AND $1 AND m.deleted_at IS NULL) SELECT $cols WHERE m.id IN (SELECT id FROM hits) ORDER BY m.id DESC LIMIT \$5"; }
new() { echo "WITH hits AS MATERIALIZED (SELECT m.id FROM $match AND m.ns = \$1 AND m.id < \$4 AND $1 AND m.deleted_at IS NULL ORDER BY m.id DESC LIMIT \$5) SELECT $cols WHERE m.id IN (SELECT id FROM hits) ORDER BY m.id DESC"; }
time_it() { # sql, room-or-user, tsquery
  local sql=$1 who=$2 q=$3
  for i in 1 2 3 4 5; do
    psql -qtA -h 127.0.0.1 -U postgres -d $db <<SQL 2>&1 | grep -o 'Execution Time: [0-9.]*' | awk '{print $3}'
PREPARE s(text, text, text, bigint, bigint) AS $sql;
EXPLAIN (ANALYZE, TIMING OFF) EXECUTE s('/', '$who', '$q', 9223372036854775807, 21);
SQL
  done | sort -n | sed -n 3p
}
for q in zebracorn w3000 w1 'w1 & w2' 'w49:*'; do
  for scope in all one; do
    if [ $scope = all ]; then f=$all_rooms; g=$any_rooms; who=ann; else f=$one_room; g=$one_room; who=r105; fi
    printf "%-10s %-4s old %8s ms   new %8s ms\n" "$q" $scope "$(time_it "$(old "$f")" $who "$q")" "$(time_it "$(new "$g")" $who "$q")"
  done
done
