#!/usr/bin/env bash
# What a compatibility profile costs: fan-out through bench/profiles/native-shaped.toml (palaver's own events
# written as a profile, so every event goes through the profile layer) against the native event table, same
# binary, same run, alternating.
#
#   bench/profile-cost.sh [palaver binary] [results-dir]
#
# 1000 clients in 10 rooms of 100 (SQLite), at 1,000 and 2,000 sends/s (~99k and ~198k deliveries/s) unless RATES
# (space-separated sends/s) says otherwise; ROUNDS rounds (default 2), DURATION seconds each (default 15). Besides
# palaver-bench's report, the server's CPU time (user + system, from /proc) is recorded for the whole run in
# <mode>-<rate>-<round>.cpu: CPU per delivered message is what bounds throughput on a busy box, and it is far less
# disturbed by other load on the machine than latency is. The send limit is raised as in bench/sweep.sh. Needs
# `cargo build --release --bins -p palaver -p palaver-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-./target/release/palaver}
out=${2:-bench/results/profile-cost}
mkdir -p "$out"
bench=./target/release/palaver-bench
duration=${DURATION:-15}
rounds=${ROUNDS:-2}

pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

for round in $(seq "$rounds"); do
  for rate in ${RATES:-1000 2000}; do
    for mode in native profile; do
      rm -f /tmp/profile-cost.db*
      extra=()
      [ "$mode" = profile ] && extra=(--profile bench/profiles/native-shaped.toml)
      "$bin" --listen 127.0.0.1:3301 --database-url sqlite:///tmp/profile-cost.db \
        --send-rate 100000 --send-burst 100000 "${extra[@]}" >"$out/$mode-$rate-$round.log" 2>&1 &
      pid=$!
      wait_port 3301
      "$bench" --url http://127.0.0.1:3301 --clients 1000 --rooms 10 --rate "$rate" --duration "$duration" \
        --server-pid "$pid" --json >"$out/$mode-$rate-$round.json"
      # Fields 14 and 15 of /proc/<pid>/stat: user and system time in clock ticks.
      awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$pid/stat" >"$out/$mode-$rate-$round.cpu"
      kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
      echo "round $round, $mode at $rate/s: done"
    done
  done
done
