#!/bin/sh
# run.sh: build the libFuzzer harnesses (clang, ASan + UBSan) and run each for a while.
#
#   tests/fuzz/run.sh [seconds per harness, default 60] [harness ...]
#   e.g. tests/fuzz/run.sh 10            (what CI runs)
#        tests/fuzz/run.sh 600 image     (one harness, longer)
#        XT_FUZZ_RUNS=1000000 tests/fuzz/run.sh 0 idx   (a million inputs, however long)
#
# The corpus of each harness grows in build-fuzz/corpus/<name> (seeded from
# tests/fuzz/seeds/<name>), so later runs start where earlier ones stopped. A crash
# leaves its input in build-fuzz/crashes/ and makes this script fail. Prints the
# number of executions of each harness.
set -eu
SECONDS_EACH=${1:-60}
[ $# -gt 0 ] && shift
HARNESSES=${*:-image idx cifar npy}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${XT_FUZZ_BUILD:-$ROOT/build-fuzz}

cmake -S "$ROOT" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DXT_FUZZ=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
targets=""
for h in $HARNESSES; do targets="$targets fuzz_$h"; done
cmake --build "$BUILD" -j2 --target $targets >"$BUILD/build.log" 2>&1 || { cat "$BUILD/build.log"; exit 1; }

mkdir -p "$BUILD/crashes"
# A small quarantine still catches a use after free within one input, and makes the
# readers' many short-lived buffers (zlib's especially) about ten times cheaper.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=8}"
status=0
for h in $HARNESSES; do
    corpus="$BUILD/corpus/$h"
    mkdir -p "$corpus"
    cp -n "$ROOT/tests/fuzz/seeds/$h/"* "$corpus/" 2>/dev/null || true
    log="$BUILD/fuzz_$h.log"
    # -rss_limit_mb: headroom for the largest image a header may declare (256 MiB as RGBA)
    if "$BUILD/tests/fuzz/fuzz_$h" "$corpus" -max_total_time="$SECONDS_EACH" ${XT_FUZZ_RUNS:+-runs=$XT_FUZZ_RUNS} \
        -print_final_stats=1 -rss_limit_mb=3072 -timeout=20 \
        -artifact_prefix="$BUILD/crashes/${h}-" >"$log" 2>&1; then
        result=ok
    else
        result="FAILED (see $log)"
        status=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    took=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    echo "fuzz_$h: ${runs:-?} executions (${took:-?}/s), corpus $(ls "$corpus" | wc -l) files: $result"
    # CI keeps only what is printed: show the report (sanitizer, timeout or leak) itself
    if [ "$result" != ok ]; then
        grep -n -m1 -A30 'ERROR\|runtime error' "$log" || tail -40 "$log"
    fi
done
exit $status
