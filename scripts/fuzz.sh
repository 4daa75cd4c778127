#!/usr/bin/env bash
# Runs every fuzz target for a while. Usage: scripts/fuzz.sh [seconds per target, default 20]
# Installs cargo-fuzz when missing (cargo install, once). Runs on stable Rust with `-s none` (no
# sanitizer; libFuzzer's coverage instrumentation still applies). Seeds come from the CLIProxyAPI
# samples and from segments generated here; new corpus entries stay under $FUZZ_WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tokenboard-target}"
fuzz_target_dir="${FUZZ_TARGET_DIR:-${CARGO_TARGET_DIR}-fuzz}"
work="${FUZZ_WORK:-/tmp/tokenboard-fuzz}"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
samples=server/tests/fixtures/cliproxyapi
mkdir -p "$work"
for t in frame recovery ingest_body cpa_event resp; do mkdir -p "$work/corpus/$t"; done
cp $samples/*.json $samples/*.ndjson "$work/corpus/ingest_body/"
cp $samples/*.bin "$work/corpus/resp/"
head -c 4096 /dev/urandom > "$work/corpus/cpa_event/random"
# Generated segments: a small log written by the real binary, cut to its first 16 KiB.
if [ -x "$CARGO_TARGET_DIR/debug/tokenboard" ]; then
    rm -rf "$work/seed-data"
    "$CARGO_TARGET_DIR/debug/tokenboard" import "$samples/usage-events.ndjson" --data-dir "$work/seed-data" 2>/dev/null
    seg=$(ls "$work"/seed-data/events/*.seg | head -1)
    head -c 16384 "$seg" > "$work/corpus/recovery/segment"
    { printf '\x11\x22\x33\x44'; tail -c +65 "$work/corpus/recovery/segment"; } > "$work/corpus/frame/frames"
fi
cd fuzz
echo "== building the fuzz targets"
CARGO_TARGET_DIR="$fuzz_target_dir" cargo fuzz build -s none --release
for t in frame recovery ingest_body cpa_event resp; do
    echo "== fuzz $t for ${secs}s"
    if ! CARGO_TARGET_DIR="$fuzz_target_dir" cargo fuzz run -s none --release "$t" "$work/corpus/$t" -- \
        -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 > "$work/$t.log" 2>&1; then
        tail -40 "$work/$t.log"
        echo "fuzz target $t failed; the crashing input is under fuzz/artifacts/$t/"
        exit 1
    fi
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$work/$t.log" || true
done
echo "== fuzzing found nothing"
