#!/usr/bin/env bash
# Where a saga's thread hand-offs and flushes go: runs one fresh `serve` of
# BINARY, drives N sagas at concurrency K with the own load generator, and
# prints sagas/s, the server's CPU per saga, context switches per saga by
# thread group (from /proc/PID/task/*/status) and the flush counters of
# /metrics (durasaga_flushes, durasaga_flush_waiters per database).
#
#   scripts/flush-profile.sh BINARY K N
#   scripts/flush-profile.sh target/release/durasaga 64 10000
set -euo pipefail
bin=$1 k=$2 n=$3
port="${FP_PORT:-18096}" data="${FP_DIR:-/tmp/durasaga-flush-profile}"
lg="$(dirname "$0")/../target/release/durasaga"
rm -rf "$data"
RUST_LOG=warn "$bin" serve --bind "127.0.0.1:$port" --data-dir "$data" >/dev/null 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
until curl -sf "127.0.0.1:$port/health/ready" >/dev/null; do sleep 0.02; done
switches() {
  for t in /proc/"$pid"/task/*; do
    awk -v n="$(cat "$t/comm")" '/^voluntary_ctxt/{v=$2} /^nonvoluntary/{nv=$2} END{print n, v+nv}' "$t/status"
  done | sed 's/sled-io-[0-9]*/sled-io/; s/flusher-[a-z]*/flushers/' |
    awk '{a[$1]+=$2} END{for (k in a) print k, a[k]}' | sort
}
switches >/tmp/fp-switches0
read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
rate=$("$lg" loadgen --url "http://127.0.0.1:$port" --customers 100 --orders "$n" \
  --concurrency "$k" --json 2>/dev/null | python3 -c "import json,sys; print('%.0f' % json.load(sys.stdin)['sagas_per_second'])")
read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
switches >/tmp/fp-switches1
hz=$(getconf CLK_TCK)
echo "sagas/s=$rate server_cpu_ms_per_saga=$(python3 -c "print('%.3f' % (($u1+$s1-$u0-$s0)*1000.0/$hz/$n))")"
join /tmp/fp-switches0 /tmp/fp-switches1 | awk -v n="$n" '$3 > $2 {printf "context switches per saga, %s: %.2f\n", $1, ($3-$2)/n}'
curl -s "127.0.0.1:$port/metrics" | grep -E '^durasaga_(flushes|flush_waiters)\{' | sort
