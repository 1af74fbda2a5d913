#!/usr/bin/env bash
# The scale checks of BENCHMARKS.md: start-up time and RSS with 1,000,000
# orders stored (and the time of filtered lists on them), and recovery of
# 10,000 and 100,000 in-flight sagas (from
# process start until no order is PENDING), with RSS when ready, at the end,
# and the peak; and of 30,000 after 6 s down (every reply deadline passed),
# counting the sagas that timed out. Builds the release binary; needs ~4 GB of RAM and ~1 GB of
# disk under $SCALE_DIR (default /tmp/durasaga-scale). Takes ~5 minutes.
#
#   scripts/scale-checks.sh            # all checks
#   scripts/scale-checks.sh 10k        # one of: 1m 10k 100k 30k-down
set -euo pipefail
cd "$(dirname "$0")/.."
# SCALE_BIN=path runs another build (e.g. an older one, for an A/B) instead.
if [[ -z "${SCALE_BIN:-}" ]]; then cargo build --release --quiet; fi
BIN="${SCALE_BIN:-$PWD/target/release/durasaga}"
DIR="${SCALE_DIR:-/tmp/durasaga-scale}"
PORT="${SCALE_PORT:-18199}"
URL="http://127.0.0.1:$PORT"
mkdir -p "$DIR"

now() { date +%s.%N; }
rss_mb() { echo $(( $(ps -o rss= -p "$1") / 1024 )); }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# serve DATA: starts the service in the background; sets $pid and $t0
serve() {
  t0=$(now)
  RUST_LOG=warn "$BIN" serve --bind "127.0.0.1:$PORT" --data-dir "$1" >"$DIR/serve.log" 2>&1 &
  pid=$!
}

wait_ready() {
  for _ in $(seq 1 6000); do
    curl -sf "$URL/health/ready" >/dev/null && return 0
    sleep 0.01
  done
  echo "not ready after 60 s" >&2; return 1
}

stop() { kill -TERM "$1"; wait "$1"; }

check_1m() {
  local d="$DIR/orders-1m"
  rm -rf "$d"
  "$BIN" fill --data-dir "$d" --customers 100000 --orders 1000000
  echo "disk: $(du -sh "$d" | cut -f1) ($(du -sh "$d"/* | tr '\n' ' '))"
  for run in first second; do
    serve "$d"
    wait_ready; t1=$(now); sleep 1
    echo "1M orders, $run start: ready in $(elapsed "$t0" "$t1") s, RSS $(rss_mb "$pid") MB"
    [[ $run == second ]] && filtered_lists
    stop "$pid"
  done
}

# The time of filtered lists on the 1M-order data (none of them matches much).
filtered_lists() {
  local q
  for q in "orders?state=PENDING&limit=100" "orders?customerId=c0000000007&limit=100" "sagas?state=FAILED&limit=100"; do
    echo "GET /$q: $(curl -s -o /dev/null -w '%{http_code} in %{time_total} s' "$URL/$q")"
  done
  echo "RSS after the lists: $(rss_mb "$pid") MB"
}

# Sagas whose history records a reply timeout (pages through GET /sagas).
timed_out() {
  python3 - "$URL" <<'PY'
import json, sys, urllib.request
url, after, n = sys.argv[1], None, 0
while True:
    page = json.load(urllib.request.urlopen(
        f"{url}/sagas?limit=1000" + (f"&after={after}" if after else "")))
    n += sum(any(h.get("cause") == "Timeout" for h in s.get("history", [])) for s in page["sagas"])
    after = page.get("next")
    if not after:
        break
print(n)
PY
}

# recover N CUSTOMERS [DOWN]: N sagas in flight, down for DOWN seconds (0:
# restart at once; longer than saga.reply_timeout_ms makes every reply
# deadline pass while down), then start and time until no order is PENDING
recover() {
  local n=$1 customers=$2 down=${3:-0} d="$DIR/inflight-$1"
  rm -rf "$d"
  "$BIN" fill --data-dir "$d" --customers "$customers" --orders 0 --in-flight "$n"
  sleep "$down"
  serve "$d"
  wait_ready; t1=$(now); r1=$(rss_mb "$pid"); peak=$r1
  until curl -s "$URL/orders?state=PENDING&limit=1" | grep -q '"orders":\[\]'; do
    r=$(rss_mb "$pid"); (( r > peak )) && peak=$r
    sleep 0.05
  done
  t2=$(now)
  failed=$(curl -s "$URL/sagas?state=FAILED&limit=1000" | python3 -c 'import sys,json; print(len(json.load(sys.stdin)["sagas"]))')
  echo "$n in flight, down ${down} s: ready in $(elapsed "$t0" "$t1") s (RSS $r1 MB), every order terminal $(elapsed "$t0" "$t2") s after start, peak RSS $peak MB, FAILED sagas $failed, sagas that timed out $(timed_out)"
  stop "$pid"
}

case "${1:-all}" in
  1m) check_1m ;;
  10k) recover 10000 1000 ;;
  100k) recover 100000 10000 ;;
  30k-down) recover 30000 3000 6 ;;
  all) check_1m; recover 10000 1000; recover 100000 10000; recover 30000 3000 6 ;;
  *) echo "usage: $0 [1m|10k|100k|30k-down|all]" >&2; exit 2 ;;
esac
