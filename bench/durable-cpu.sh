#!/usr/bin/env bash
# One durable run (bench/issue12.sh's durable scenario: 1000 clients, 100 rooms of 10, Postgres) against one build,
# with the CPU each process used: palaver, Postgres (all its processes) and the load tool, in seconds and per
# acked message, and with palaver's own batch-writer metrics when the build has them.
#
#   bench/durable-cpu.sh <label> <palaver binary> [server flags...]
#
# RATE sends/s offered (default 16,000), DURATION seconds (default 10), READ_EVERY seconds between a client's reads
# (default: no reads), NO_SEARCH_INDEX=1 drops the full-text index first. Results: /tmp/durable-cpu-<label>.json and
# one line on stdout. Needs Postgres on 127.0.0.1:5432 and the release palaver-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
label=$1; bin=$2; shift 2
pg=postgres://postgres@127.0.0.1:5432
export PALAVER_ROOM_QUOTA=100000 PALAVER_BENCH_JWT_SECRET=issue12-bench-secret
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS durable_cpu WITH (FORCE)" -c "CREATE DATABASE durable_cpu" postgres
log=/tmp/durable-cpu-$label.log
"$bin" --listen 127.0.0.1:3401 --send-rate 100000 --send-burst 100000 --jwt-secret "$PALAVER_BENCH_JWT_SECRET" \
  --database-url "$pg/durable_cpu${URL_SUFFIX:-}" "$@" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null' EXIT
# The port opens before the migrations have run: the server says when it listens.
for _ in $(seq 300); do grep -q "listening" "$log" && break; sleep 0.1; done
# NO_SEARCH_INDEX=1: without the full-text index, to see what it costs.
[ -n "${NO_SEARCH_INDEX:-}" ] && psql -q -h 127.0.0.1 -U postgres durable_cpu -c "DROP INDEX messages_search"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
postgres_ticks() { local t=0; for p in $(pgrep -x postgres); do t=$((t + $(ticks "$p"))); done; echo $t; }
sleep 1
wal() { psql -tA -h 127.0.0.1 -U postgres -c "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn" postgres; }
p0=$(ticks $server); g0=$(postgres_ticks); w0=$(wal)
/usr/bin/time -f "%U %S" -o "/tmp/durable-cpu-$label.time" ./target/release/palaver-bench --url http://127.0.0.1:3401 \
  --server-pid "$server" --json --clients 1000 --rooms 100 --rate "${RATE:-16000}" --duration "${DURATION:-10}" \
  --warmup 2 --drain 40 --auth jwt ${READ_EVERY:+--read-every "$READ_EVERY"} >"/tmp/durable-cpu-$label.json"
p1=$(ticks $server); g1=$(postgres_ticks); w1=$(wal)
commits=$(curl -s http://127.0.0.1:3402/metrics 2>/dev/null | grep -E "^palaver_commit_(batch_size|duration_seconds)_(sum|count)" | tr '\n' ' ' || true)
python3 - "/tmp/durable-cpu-$label.json" "$label" $((p1 - p0)) $((g1 - g0)) "$(cat "/tmp/durable-cpu-$label.time")" "$(getconf CLK_TCK)" "$commits" $((w1 - w0)) <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["messages"]
hz = int(sys.argv[6]); n = m["acked_ok"]
pal = int(sys.argv[3]) / hz; pg = int(sys.argv[4]) / hz; user, system = map(float, sys.argv[5].split())
load = user + system
print(f'{sys.argv[2]}: acked {n} delivered/s {m["delivered_per_s"]:.0f} ack p50 {m["ack_latency"]["p50_ms"]} ms | '
      f'CPU s palaver {pal:.2f} postgres {pg:.2f} load tool {load:.2f} | µs per acked message {pal / n * 1e6:.0f} '
      f'{pg / n * 1e6:.0f} {load / n * 1e6:.0f} | WAL bytes per acked message {int(sys.argv[8]) / n:.0f} {sys.argv[7]}')
PY
