#!/usr/bin/env bash
# Join storm into one room on two palaver nodes through a Redis of its own, with Redis's command counts.
#
#   bench/join-storm.sh <palaver binary> <label> [clients] [runs]      (CONCURRENCY=n: clients joining at once)
#
# Starts a private redis-server (port 6390, nothing else uses it, so its counters are the storm's), a fresh
# Postgres database, and two nodes of <palaver binary> (ports 3200 and 3201) on them; then runs
# bench/join-storm.mjs (<clients> guests, half on each node, all joining room "storm" at once) <runs> times, each
# on fresh nodes, a fresh database and a flushed Redis. Prints one JSON line per run: the client's report plus the
# Redis side: calls per command during the storm (INFO commandstats deltas), total calls, calls per join, and
# Redis CPU seconds, read when every client has joined and before any leaves. Needs Postgres on 127.0.0.1:5432 (user postgres), redis-server, node with bench/node_modules
# (`cd bench && npm ci`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1
label=$2
clients=${3:-2000}
runs=${4:-1}
redis_port=6390
pg=postgres://postgres@127.0.0.1:5432
db=join_storm
out=${OUT:-/tmp/join-storm}
mkdir -p "$out"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
stats_cmd="redis-cli -p $redis_port INFO commandstats; redis-cli -p $redis_port INFO cpu"
stats() { bash -c "$stats_cmd"; }

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$out/redis.log" 2>&1 &
pids+=($!)
wait_port "$redis_port"

for run in $(seq "$runs"); do
  redis-cli -p "$redis_port" FLUSHALL >/dev/null
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" postgres
  nodes=()
  for port in 3200 3201; do
    "$bin" --listen 127.0.0.1:$port --database-url "$pg/$db" --redis-url "redis://127.0.0.1:$redis_port" \
      --redis-prefix storm --static-dir /nonexistent >"$out/$label-$port.log" 2>&1 &
    pids+=($!); nodes+=($!)
    wait_port $port
  done
  sleep 1
  stats >"$out/before.txt"
  report=$(node bench/join-storm.mjs --url http://127.0.0.1:3200,http://127.0.0.1:3201 --clients "$clients" \
    --room storm --concurrency "${CONCURRENCY:-$clients}" --on-joined "($stats_cmd) >$out/after.txt") || true
  for p in "${nodes[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
  # Times a node took Redis for gone during the storm (its heartbeat timed out): cross-node delivery stops then.
  flips=$(cat "$out/$label-3200.log" "$out/$label-3201.log" | grep -c "delivering to this node's sockets only" || true)
  python3 - "$label" "$clients" "$report" "$out/before.txt" "$out/after.txt" "$flips" <<'EOF'
import json, re, sys
label, clients, report, before, after, flips = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
def parse(path):
    calls, cpu = {}, 0.0
    for line in open(path):
        m = re.match(r"cmdstat_(\S+):calls=(\d+),usec=(\d+)", line)
        if m:
            calls[m.group(1)] = (int(m.group(2)), int(m.group(3)))
        m = re.match(r"used_cpu_(sys|user):([\d.]+)", line)
        if m:
            cpu += float(m.group(2))
    return calls, cpu
(b, bcpu), (a, acpu) = parse(before), parse(after)
delta = {k: (v[0] - b.get(k, (0, 0))[0], v[1] - b.get(k, (0, 0))[1]) for k, v in a.items()}
delta = {k: v for k, v in delta.items() if v[0] > 0 and k != "info"}
total = sum(v[0] for v in delta.values())
out = json.loads(report) if report else {}
out.update({
    "label": label,
    "redis": {
        "calls": total,
        "callsPerJoin": round(total / clients, 1),
        "cpuSeconds": round(acpu - bcpu, 2),
        "nodeTookRedisForDown": flips,
        "byCommand": {k: {"calls": v[0], "usec": v[1]} for k, v in sorted(delta.items(), key=lambda kv: -kv[1][1])},
    },
})
print(json.dumps(out))
EOF
done
