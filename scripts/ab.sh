#!/usr/bin/env bash
# A/B of durasaga binaries with the own load generator, runs alternated (the
# machine is noisy: compare medians of several rounds). For each round and
# binary: a fresh data directory, `serve`, `loadgen`, and the server's CPU per
# saga from /proc/PID/stat. Prints one line per run.
#
#   scripts/ab.sh ROUNDS K ORDERS NAME=BINARY [NAME=BINARY ...]
#   scripts/ab.sh 5 64 10000 new=target/release/durasaga old=/tmp/durasaga-old
set -euo pipefail
rounds=$1 k=$2 n=$3; shift 3
port="${AB_PORT:-18091}" data="${AB_DIR:-/tmp/durasaga-ab}"
lg="$(dirname "$0")/../target/release/durasaga"
for _ in $(seq 1 "$rounds"); do
  for nb in "$@"; do
    name=${nb%%=*} bin=${nb#*=}
    rm -rf "$data"
    RUST_LOG=warn "$bin" serve --bind "127.0.0.1:$port" --data-dir "$data" >/dev/null 2>&1 &
    pid=$!
    until curl -sf "127.0.0.1:$port/health/ready" >/dev/null; do sleep 0.02; done
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    json=$("$lg" loadgen --url "http://127.0.0.1:$port" --customers "${AB_CUSTOMERS:-100}" \
      --orders "$n" --concurrency "$k" --json 2>/dev/null)
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    kill -TERM "$pid"; wait "$pid" || true
    ticks=$((u1 + s1 - u0 - s0)) hz=$(getconf CLK_TCK)
    python3 -c "
import json,sys; d=json.loads(sys.argv[1]); l=d['latency_ms']
print('$name K=$k sagas/s=%.0f p50=%.2f p99=%.2f server_cpu_ms_per_saga=%.3f consistent=%s' % (
  d['sagas_per_second'], l['p50'], l['p99'], $ticks*1000.0/$hz/$n, d.get('consistent')))" "$json"
  done
done
