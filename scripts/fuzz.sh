#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time, on stable Rust.
#
#   scripts/fuzz.sh                      # each target 60 s
#   FUZZ_SECONDS=600 scripts/fuzz.sh     # longer
#   FUZZ_TARGETS=decode_records scripts/fuzz.sh
#
# Targets: decode_records (stored-value decoder), http_bodies (request bodies
# of POST /customers and POST /orders through the real router).
#
# Stable toolchain: with `--sanitizer none` cargo-fuzz passes only stable
# codegen flags (-Cpasses=sancov-module, -Cllvm-args=...), so neither nightly
# nor RUSTC_BOOTSTRAP is needed.
#
# Exits non-zero if a target crashes (panic, failed assertion, 5xx answer),
# hangs (an input runs longer than FUZZ_TIMEOUT seconds) or runs out of
# memory. The offending input is kept under fuzz/artifacts/<target>/ and
# printed in hex; replay it with
#   cargo fuzz run <target> --sanitizer none fuzz/artifacts/<target>/<file>
# Corpora grow in fuzz/corpus/<target>/ (git-ignored); fuzz/seeds/<target>/
# holds the committed seeds. Logs go to fuzz/target/logs/<target>.log.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TIMEOUT=${FUZZ_TIMEOUT:-10}
FUZZ_TARGETS=${FUZZ_TARGETS:-"decode_records http_bodies"}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
echo "==> $(cargo fuzz --version), $(rustc --version)"

# The http_bodies target starts a runtime on a fresh data dir under TMPDIR;
# point TMPDIR at a directory of our own and remove it afterwards.
work=$(mktemp -d "${TMPDIR:-/tmp}/durasaga-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "==> building the fuzz targets (instrumented release build; the first one takes a while)"
cargo fuzz build --sanitizer none

logs="$ROOT/fuzz/target/logs"
mkdir -p "$logs"
failed=()
summary=()
for t in $FUZZ_TARGETS; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    dirs=("$corpus")
    [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
    flags=(-max_total_time="$FUZZ_SECONDS" -timeout="$FUZZ_TIMEOUT" -print_final_stats=1)
    [ -f "fuzz/dicts/$t.dict" ] && flags+=(-dict="fuzz/dicts/$t.dict")
    log="$logs/$t.log"
    before=$(find "fuzz/artifacts/$t" -type f | sort)

    echo "==> fuzzing $t for ${FUZZ_SECONDS}s"
    set +e
    TMPDIR="$work" DURASAGA_FUZZ_STATS=1 \
        cargo fuzz run "$t" --sanitizer none "${dirs[@]}" -- "${flags[@]}" 2>&1 |
        tee "$log" | grep --line-buffered -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE)|^"|Uses: |NEW_FUNC'
    rc=${PIPESTATUS[0]}
    set -e

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
    cov=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW)' "$log" | tail -1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9A-Za-z]+' || true)
    new=$(comm -13 <(echo "$before") <(find "fuzz/artifacts/$t" -type f | sort) | sed '/^$/d')
    if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
        failed+=("$t")
        summary+=("$t: FAILED (exit $rc), ${execs:-?} executions; log $log")
        for a in $new; do
            echo "!! $t finding: $a"
            echo "!! input (hex): $(od -An -v -tx1 "$a" | tr -d ' \n')"
        done
    else
        summary+=("$t: ok, ${execs:-?} executions in ${FUZZ_SECONDS}s (${rate:-?}/s), ${cov:-?}, peak RSS ${rss:-?} MB")
    fi
done

echo
echo "==> fuzz summary"
printf '    %s\n' "${summary[@]}"
if [ ${#failed[@]} -ne 0 ]; then
    echo "==> findings in: ${failed[*]}"
    exit 1
fi
echo "==> no findings"
