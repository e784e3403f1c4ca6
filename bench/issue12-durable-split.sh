#!/usr/bin/env bash
# Where issue 12's durable cost comes from: the durable scenario of bench/issue12.sh (1000 clients, 100 rooms of 10,
# Postgres, RATE sends/s offered, default 16,000), one run of each variant per round, alternating within the round.
#
#   bench/issue12-durable-split.sh <before binary> <after binary> [results-dir]
#
# VARIANTS (default "before after-noreads after-reads after-nosearchindex"), any of:
#   before               the build before issue 12
#   alt-before           another build of it, the binary ALT_BEFORE names (a change applied to both builds)
#   after-noreads        the after build with --read-receipts true, clients that never read
#   after-reads          the same, clients reading once a second (palaver-bench --read-every 1)
#   after-nosearchindex  after-noreads with the full-text index (messages_search) dropped once the server listens
#   after-nometrics      after-noreads with --metrics false
#   after-reads-nometrics after-reads with --metrics false (the before build has no metrics: issue 13 added them)
#   after-reads-writersN after-reads with N message writers (--db-message-writers N; default 2)
#   alt-reads            after-reads on another after build, the binary ALT names (a change against the after build)
#   alt-reads-nometrics  alt-reads with --metrics false
# ROUNDS (default 5). Needs Postgres on 127.0.0.1:5432.
set -euo pipefail
cd "$(dirname "$0")/.."
before=$1
after=$2
out=${3:-bench/results/issue12/durable-split}
mkdir -p "$out"
pg=postgres://postgres@127.0.0.1:5432
bench=./target/release/palaver-bench
export PALAVER_ROOM_QUOTA=100000
export PALAVER_BENCH_JWT_SECRET=issue12-bench-secret
logs=$(mktemp -d)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$logs"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
for round in $(seq "${ROUNDS:-5}"); do
  for variant in ${VARIANTS:-before after-noreads after-reads after-nosearchindex}; do
    psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS issue12_split WITH (FORCE)" \
      -c "CREATE DATABASE issue12_split" postgres
    bin=$after; flags=(--read-receipts true); reads=(); writers=()
    case $variant in
      after-reads-writers*) reads=(--read-every 1); writers=(--db-message-writers "${variant#after-reads-writers}") ;;
      before) bin=$before; flags=() ;;
      alt-before) bin=${ALT_BEFORE:?ALT_BEFORE names the other before build}; flags=() ;;
      after-reads) reads=(--read-every 1) ;;
      after-nometrics) flags+=(--metrics false) ;;
      after-reads-nometrics) reads=(--read-every 1); flags+=(--metrics false) ;;
      alt-reads) bin=${ALT:?ALT names the other after build}; reads=(--read-every 1) ;;
      alt-reads-nometrics) bin=${ALT:?ALT names the other after build}; reads=(--read-every 1); flags+=(--metrics false) ;;
    esac
    log=$logs/$variant-$round.log
    "$bin" --listen 127.0.0.1:3400 --send-rate 100000 --send-burst 100000 --jwt-secret "$PALAVER_BENCH_JWT_SECRET" \
      --database-url "$pg/issue12_split" "${flags[@]}" "${writers[@]}" >"$log" 2>&1 &
    server=$!
    wait_port 3400
    # The port opens before the migrations have run: the server says when it listens.
    for _ in $(seq 200); do grep -q "listening" "$log" && break; sleep 0.1; done
    if [ "$variant" = after-nosearchindex ]; then
      psql -q -h 127.0.0.1 -U postgres issue12_split -c "DROP INDEX messages_search"
    fi
    "$bench" --url http://127.0.0.1:3400 --server-pid "$server" --json --clients 1000 --rooms 100 \
      --rate "${RATE:-16000}" --duration 10 --warmup 2 --drain 40 --auth jwt "${reads[@]}" >"$out/$variant-$round.json"
    python3 - "$out/$variant-$round.json" "$round $variant" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["messages"]; a = m["ack_latency"]
print(f'{sys.argv[2]}: delivered/s {m["delivered_per_s"]:.0f}  ack p50/p99 {a["p50_ms"]}/{a["p99_ms"]} ms')
PY
    kill "$server"; while kill -0 "$server" 2>/dev/null; do sleep 0.1; done; server=
  done
done
echo "results in $out"
