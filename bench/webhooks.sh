#!/usr/bin/env bash
# What webhooks cost the chat when the host's endpoint is dead: the durable scenario (1000 clients, 100 rooms of 10,
# Postgres, ack after commit) without webhooks, with --webhook-url on a closed port (every delivery refused at
# once, retried), and with --webhook-url on a black hole (accepts, never answers: every delivery waits out
# --webhook-timeout-ms); and, to tell the outbox's own cost from the dead endpoint's, with a healthy endpoint that
# answers at once. Same binary, same run, alternating (CONFIGS picks some of none, healthy, refused, blackhole).
#
#   bench/webhooks.sh <palaver binary> [results-dir]
#
# Needs Postgres on 127.0.0.1:5432 and a release build of palaver-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1
out=${2:-bench/results/webhooks}
mkdir -p "$out"
pg=postgres://postgres@127.0.0.1:5432
bench=${BENCH:-./target/release/palaver-bench}
limits=(--send-rate 100000 --send-burst 100000)
duration=${DURATION:-10}
rate=${RATE:-5000}
rounds=${ROUNDS:-2}
export PALAVER_ROOM_QUOTA=100000

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
fresh_db() { psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" postgres; }
start() { # label, extra args...
  local label=$1; shift
  "$bin" --listen 127.0.0.1:3300 "${limits[@]}" "$@" >"$out/$label.log" 2>&1 &
  pids+=($!); wait_port 3300; echo $!
}
stop() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

# The black hole: accepts connections and never reads or answers.
python3 -c '
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 3398))
s.listen(4096)
held = []
while True:
    held.append(s.accept()[0])
' &
pids+=($!)
wait_port 3398
# A healthy endpoint: answers every delivery 204 at once (Node's http server, keep-alive).
node -e '
require("http").createServer((req, res) => { req.resume(); req.on("end", () => res.writeHead(204).end()); }).listen(3396, "127.0.0.1");
' &
pids+=($!)
wait_port 3396
# A closed port: nothing listens on 3397.
hook=(--webhook-secret bench-secret)
for round in $(seq "$rounds"); do
  for label in ${CONFIGS:-none healthy refused blackhole}; do
    case $label in
      none) extra=() ;;
      healthy) extra=(--webhook-url http://127.0.0.1:3396/hooks "${hook[@]}") ;;
      refused) extra=(--webhook-url http://127.0.0.1:3397/hooks "${hook[@]}") ;;
      blackhole) extra=(--webhook-url http://127.0.0.1:3398/hooks "${hook[@]}") ;;
    esac
    fresh_db webhooks_bench
    p=$(start "$label-$round" --database-url "$pg/webhooks_bench" "${extra[@]}")
    pids+=("$p") # start runs in a subshell: its own pids+= is lost
    echo "== $label (round $round)"
    "$bench" --url http://127.0.0.1:3300 --server-pid "$p" --json --clients 1000 --rooms 100 --rate "$rate" \
      --duration "$duration" --warmup 2 --drain 40 >"$out/$label-$round.json"
    stop "$p"
    # What was delivered by the end of the drain: messages (cursors against the rooms' last seq) and outbox rows.
    psql -qtA -h 127.0.0.1 -U postgres -c "SELECT '$label-$round messages: ' || COALESCE(SUM(c.delivered_seq), 0) || ' of ' || (SELECT SUM(last_seq) FROM rooms) || ' delivered' FROM webhook_cursors c" \
      -c "SELECT '$label-$round outbox: ' || state || ' ' || count(*) FROM webhook_outbox GROUP BY state" webhooks_bench || true
  done
done
echo "results in $out"
