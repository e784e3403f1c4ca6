#!/usr/bin/env bash
# Side-by-side benchmark: palaver and the Node.js reference, same tool, same machine, same run.
#   bench/sweep.sh [results-dir]        (default bench/results; needs Postgres and Redis on localhost)
#   SCENARIOS="durable cluster" bench/sweep.sh   runs only some of them; FANOUT_RATES, DURABLE_RATES,
#   CLUSTER_RATES (sends/s, space-separated) and DURATION (s) override the defaults
# Scenarios: fanout (1000 clients, 10 rooms of 100), durable (1000 clients, 100 rooms of 10, Postgres),
# idle (10k connections: memory and connect storm), cluster (palaver: clients on one node vs across two nodes).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/results}
mkdir -p "$out"
reference=${PALAVER_NODE_REFERENCE:-../shared/bench/node-reference}
pg=postgres://postgres@127.0.0.1:5432
bench=./target/release/palaver-bench
palaver=./target/release/palaver
limits=(--send-rate 100000 --send-burst 100000)   # the benchmark drives each socket far above the default 10/s
# Every bench client is a guest from 127.0.0.1: the guests' room-creation quota (per address) must not refuse the
# joins that create the bench's rooms.
export PALAVER_ROOM_QUOTA=100000

cargo build --release -p palaver -p palaver-bench
(cd "$reference" && npm ci --no-audit --no-fund >/dev/null)

scenarios=" ${SCENARIOS:-fanout idle durable cluster} "
want() { [[ $scenarios == *" $1 "* ]]; }
duration=${DURATION:-15}

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
fresh_db() { psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" postgres; }
start_palaver() { # port, extra args...
  local port=$1; shift
  "$palaver" --listen 127.0.0.1:"$port" "${limits[@]}" "$@" >"$out/palaver-$port.log" 2>&1 &
  pids+=($!); wait_port "$port"; echo $!
}
start_node() { # port, env...
  local port=$1; shift
  (cd "$reference" && env PORT="$port" "$@" node server.js) >"$out/node-$port.log" 2>&1 &
  pids+=($!); wait_port "$port"; echo $!
}
run() { # name, url, pid, args...
  local name=$1 url=$2 pid=$3; shift 3
  echo "== $name"
  "$bench" --url "$url" --server-pid "$pid" --json "$@" >"$out/$name.json"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# 1. Fan-out, history kept (palaver stores every message in SQLite; the reference keeps 50 in memory).
if want fanout; then
rm -f /tmp/sweep-palaver.db*
p=$(start_palaver 3100 --database-url sqlite:///tmp/sweep-palaver.db)
n=$(start_node 3101)
for rate in ${FANOUT_RATES:-500 1000 2000 4000 6000 8000}; do
  run "palaver-fanout-$rate" http://127.0.0.1:3100 "$p" --clients 1000 --rooms 10 --rate "$rate" --duration "$duration" --warmup 2 --drain 40
  run "node-fanout-$rate" http://127.0.0.1:3101 "$n" --clients 1000 --rooms 10 --rate "$rate" --duration "$duration" --warmup 2 --drain 40
done
stop "$p"; stop "$n"
fi

# 4. Connect storm and memory: 10k connections at once into 1000 rooms, then idle. Fresh processes, one at a
# time: a server that already served a load reuses freed heap, which would hide what a connection costs.
if want idle; then
rm -f /tmp/sweep-palaver.db*
p=$(start_palaver 3100 --database-url sqlite:///tmp/sweep-palaver.db)
run palaver-idle-10k http://127.0.0.1:3100 "$p" --clients 10000 --rooms 1000 --rate 0 --duration 10 --connect-concurrency 2000 --source-addrs 127.0.0.2-127.0.0.11
stop "$p"
n=$(start_node 3101)
run node-idle-10k http://127.0.0.1:3101 "$n" --clients 10000 --rooms 1000 --rate 0 --duration 10 --connect-concurrency 2000 --source-addrs 127.0.0.2-127.0.0.11
stop "$n"
fi

# 2. Durable: Postgres, every message acked after its commit.
if want durable; then
fresh_db sweep_palaver; fresh_db sweep_reference
p=$(start_palaver 3100 --database-url "$pg/sweep_palaver")
n=$(start_node 3101 DATABASE_URL="$pg/sweep_reference")
for rate in ${DURABLE_RATES:-2000 5000 10000 15000 20000}; do
  run "palaver-durable-$rate" http://127.0.0.1:3100 "$p" --clients 1000 --rooms 100 --rate "$rate" --duration "$duration" --warmup 2 --drain 40
  run "node-durable-$rate" http://127.0.0.1:3101 "$n" --clients 1000 --rooms 100 --rate "$rate" --duration "$duration" --warmup 2 --drain 40
done
stop "$p"; stop "$n"
fi

# 3. Cluster: the same load with every client on one node, then spread over two nodes through Redis.
if want cluster; then
fresh_db sweep_cluster
prefix="bench-$RANDOM"
a=$(start_palaver 3100 --database-url "$pg/sweep_cluster" --redis-url redis://127.0.0.1:6379 --redis-prefix "$prefix")
b=$(start_palaver 3102 --database-url "$pg/sweep_cluster" --redis-url redis://127.0.0.1:6379 --redis-prefix "$prefix")
for rate in ${CLUSTER_RATES:-1000 2000 4000}; do
  run "palaver1node-cluster-$rate" http://127.0.0.1:3100 "$a" --clients 1000 --rooms 10 --rate "$rate" --duration "$duration" --warmup 2 --drain 40
  run "palaver2nodes-cluster-$rate" http://127.0.0.1:3100,http://127.0.0.1:3102 "$a" --clients 1000 --rooms 10 --rate "$rate" --duration "$duration" --warmup 2 --drain 40
done
stop "$a"; stop "$b"
fi

bench/.venv/bin/python bench/plot.py "$out" bench/latency-vs-load.svg 2>/dev/null \
  || echo "plot skipped: python3 -m venv bench/.venv && bench/.venv/bin/pip install matplotlib"
