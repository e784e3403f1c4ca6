#!/usr/bin/env bash
# What the messaging features of issue 12 cost: a build from before them against the current one, with read
# receipts and read traffic on in the current one, in the same run, alternating (before, after, before, after…).
#
#   bench/issue12.sh <before binary> <after binary> [results-dir]
#
# Per round: durable throughput (1000 clients, 100 rooms of 10, Postgres, ack after commit) at DURABLE_RATE sends/s
# (default 15,000: above what either build sustains, so delivered/s is the ceiling), then fan-out (1000 clients,
# 10 rooms of 100, SQLite) at FANOUT_RATE (default 6,000: BENCHMARKS §1's peak), each for the before build, the
# after build and (NODE=1, the default) the Node reference of BENCHMARKS §1 and §2 (in-memory history for fan-out,
# one INSERT per message for durable).
#
# Every palaver client signs in (`--auth jwt`): read state needs a membership, which guests in public rooms have not.
# The after build runs with `--read-receipts true`, and its clients mark what they receive as read
# (`palaver-bench --read-every READ_EVERY`, default 1 s: the newest seq received, at most once a second per client),
# so every read also goes to the other members of the room as a receipt. The before build has neither (no
# `room:read`), so the difference is the features' whole cost at that traffic. READ_EVERY=0 runs the after build
# without reads: the features' standing cost alone. The reference has no read state and
# runs with guests, as in BENCHMARKS §1/§2. The send limit is raised as in bench/sweep.sh.
#
# ROUNDS (default 3), DURATION (measured seconds, default 10), SCENARIOS ("durable fanout"). Needs Postgres on
# 127.0.0.1:5432 and `npm ci` in the reference's directory (PALAVER_NODE_REFERENCE, default
# ../shared/bench/node-reference).
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1
after=$2
out=${3:-bench/results/issue12}
mkdir -p "$out"
reference=${PALAVER_NODE_REFERENCE:-../shared/bench/node-reference}
pg=postgres://postgres@127.0.0.1:5432
bench=./target/release/palaver-bench
limits=(--send-rate 100000 --send-burst 100000)
duration=${DURATION:-10}
rounds=${ROUNDS:-3}
read_every=${READ_EVERY:-1}
durable_rate=${DURABLE_RATE:-15000}
fanout_rate=${FANOUT_RATE:-6000}
scenarios=" ${SCENARIOS:-durable fanout} "
export PALAVER_ROOM_QUOTA=100000
export PALAVER_BENCH_JWT_SECRET=issue12-bench-secret

dbdir=$(mktemp -d)
# Servers are started in command substitutions (subshells), so their pids go to a file the exit trap reads: a run
# that fails must not leave a server holding the port for the next one.
cleanup() { while read -r p; do kill "$p" 2>/dev/null || true; done <"$dbdir/pids"; rm -rf "$dbdir"; }
: >"$dbdir/pids"
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
fresh_db() { psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" postgres; }
start_palaver() { # binary, log, extra args...
  local bin=$1 log=$2; shift 2
  "$bin" --listen 127.0.0.1:3400 "${limits[@]}" --jwt-secret "$PALAVER_BENCH_JWT_SECRET" "$@" >"$log" 2>&1 &
  echo $! >>"$dbdir/pids"; wait_port 3400; echo $!
}
start_node() { # log, env...
  local log=$1; shift
  (cd "$reference" && exec env PORT=3401 "$@" node server.js) >"$log" 2>&1 &
  echo $! >>"$dbdir/pids"; wait_port 3401; echo $!
}
# The server was started in a command substitution, so it is not this shell's child: wait for it to be gone.
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }
# Prints the run's headline and its server's CPU seconds (user + system, from /proc), and warns when a client did
# not join.
summary() { # json, cpu seconds
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); m = r["messages"]; c = r["connect"]; reads = r.get("reads")
line = (f'  joined {c["joined"]}/{c["attempted"]}  sent/s {m["sent_per_s"]:.0f}  delivered/s {m["delivered_per_s"]:.0f}  '
        f'acked {m["acked_ok"]}/{m["sent"]}  ack p50/p99 {m["ack_latency"]["p50_ms"]}/{m["ack_latency"]["p99_ms"]} ms  '
        f'missing {m["missing_deliveries"]}  dup {m["duplicate_deliveries"]}  server cpu {float(sys.argv[2]):.1f} s')
if reads:
    line += f'\n  reads {reads["sent"]} ({reads["sent_per_s"]:.0f}/s) ok {reads["acked_ok"]} errors {reads["errors"]}  receipts {reads["receipts"]} ({reads["receipts_per_s"]:.0f}/s)'
print(line)
if c["joined"] < c["attempted"]:
    print(f'WARNING {sys.argv[1]}: only {c["joined"]} of {c["attempted"]} clients joined: {c["join_errors"]}')
PY
}
cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
run() { # name, pid, args...
  local name=$1 pid=$2; shift 2
  echo "== $name ($(date +%T))"
  local c0; c0=$(cpu "$pid")
  "$bench" --url http://127.0.0.1:"$port" --server-pid "$pid" --json "$@" >"$out/$name.json"
  local c1; c1=$(cpu "$pid")
  python3 -c "print(f'{$c1 - $c0:.2f}')" >"$out/$name.cpu"
  summary "$out/$name.json" "$(cat "$out/$name.cpu")"
}
common=(--duration "$duration" --warmup 2 --drain 40)
durable=(--clients 1000 --rooms 100 --rate "$durable_rate")
fanout=(--clients 1000 --rooms 10 --rate "$fanout_rate")

for round in $(seq "$rounds"); do
  if [[ $scenarios == *" durable "* ]]; then
    for label in before after; do
      bin=$before; extra=(); reads=()
      [ "$label" = after ] && { bin=$after; extra=(--read-receipts true); [ "$read_every" = 0 ] || reads=(--read-every "$read_every"); }
      fresh_db issue12_bench
      port=3400; p=$(start_palaver "$bin" "$out/$label-durable-$round.log" --database-url "$pg/issue12_bench" "${extra[@]}")
      run "$label-durable-$round" "$p" "${durable[@]}" "${common[@]}" --auth jwt "${reads[@]}"
      stop "$p"
    done
    if [ "${NODE:-1}" = 1 ]; then
      fresh_db issue12_reference
      port=3401; n=$(start_node "$out/node-durable-$round.log" DATABASE_URL="$pg/issue12_reference")
      run "node-durable-$round" "$n" "${durable[@]}" "${common[@]}"
      stop "$n"
    fi
  fi
  if [[ $scenarios == *" fanout "* ]]; then
    for label in before after; do
      bin=$before; extra=(); reads=()
      [ "$label" = after ] && { bin=$after; extra=(--read-receipts true); [ "$read_every" = 0 ] || reads=(--read-every "$read_every"); }
      rm -f "$dbdir"/bench.db*
      port=3400; p=$(start_palaver "$bin" "$out/$label-fanout-$round.log" --database-url "sqlite://$dbdir/bench.db" "${extra[@]}")
      run "$label-fanout-$round" "$p" "${fanout[@]}" "${common[@]}" --auth jwt "${reads[@]}"
      stop "$p"
    done
    if [ "${NODE:-1}" = 1 ]; then
      port=3401; n=$(start_node "$out/node-fanout-$round.log")
      run "node-fanout-$round" "$n" "${fanout[@]}" "${common[@]}"
      stop "$n"
    fi
  fi
done
echo "results in $out"
