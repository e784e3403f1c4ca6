#!/usr/bin/env bash
# What the per-event budgets and the per-socket queue cap cost, and what they buy: two palaver binaries (before and
# after a change) in the same run, alternating.
#
#   bench/budgets.sh <before binary> <after binary> [results-dir]
#
# For each binary: fan-out (1000 clients, 10 rooms of 100, SQLite) at 1,000 and 4,000 sends/s; durable throughput
# (1000 clients, 100 rooms of 10, Postgres) at 5,000 sends/s; then the flood (bench/flood.mjs: one raw WebSocket
# client writing 200,000 `rooms:list` events without reading, while 20 guests chat). The send limit is raised as
# in bench/sweep.sh; every other budget stays at its default. Needs Postgres on 127.0.0.1:5432 and bench's
# node_modules (`cd bench && npm ci`).
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1
after=$2
out=${3:-bench/results/budgets}
mkdir -p "$out"
pg=postgres://postgres@127.0.0.1:5432
bench=./target/release/palaver-bench
limits=(--send-rate 100000 --send-burst 100000)
duration=${DURATION:-15}
# Every bench client is a guest from 127.0.0.1, so the guests' room-creation quota (per address) would refuse the
# joins that create the bench's rooms. An environment variable, which a binary older than the quota ignores.
export PALAVER_ROOM_QUOTA=100000
# A run where clients failed to join measures a smaller load than it claims: say so next to its numbers.
check_joined() {
  python3 - "$1" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["connect"]
if c["joined"] < c["attempted"]:
    print(f"WARNING {sys.argv[1]}: only {c['joined']} of {c['attempted']} clients joined: {c['join_errors']}")
PY
}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
fresh_db() { psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" postgres; }
start() { # binary, label, extra args...
  local bin=$1 label=$2; shift 2
  "$bin" --listen 127.0.0.1:3300 "${limits[@]}" "$@" >"$out/$label.log" 2>&1 &
  pids+=($!); wait_port 3300; echo $!
}
# The server was started in a command substitution, so it is not this shell's child: wait for it to be gone.
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

for rate in 1000 4000; do
  for label in before after; do
    bin=$before; [ "$label" = after ] && bin=$after
    rm -f /tmp/budgets-bench.db*
    p=$(start "$bin" "$label-fanout-$rate" --database-url sqlite:///tmp/budgets-bench.db)
    echo "== $label fanout $rate"
    "$bench" --url http://127.0.0.1:3300 --server-pid "$p" --json --clients 1000 --rooms 10 --rate "$rate" \
      --duration "$duration" --warmup 2 --drain 40 >"$out/$label-fanout-$rate.json"
    check_joined "$out/$label-fanout-$rate.json"
    stop "$p"
  done
done

for label in before after; do
  bin=$before; [ "$label" = after ] && bin=$after
  fresh_db budgets_bench
  p=$(start "$bin" "$label-durable-5000" --database-url "$pg/budgets_bench")
  echo "== $label durable 5000"
  "$bench" --url http://127.0.0.1:3300 --server-pid "$p" --json --clients 1000 --rooms 100 --rate 5000 \
    --duration "$duration" --warmup 2 --drain 40 >"$out/$label-durable-5000.json"
  check_joined "$out/$label-durable-5000.json"
  stop "$p"
done

# FLOOD=0 leaves the flood out (when only throughput is compared).
for label in before after; do
  [ "${FLOOD:-1}" = 1 ] || break
  bin=$before; [ "$label" = after ] && bin=$after
  rm -f /tmp/budgets-bench.db*
  p=$(start "$bin" "$label-flood" --database-url sqlite:///tmp/budgets-bench.db)
  echo "== $label flood"
  node bench/flood.mjs --url http://127.0.0.1:3300 --pid "$p" >"$out/$label-flood.json"
  stop "$p"
done
echo "results in $out"
