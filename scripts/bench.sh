#!/usr/bin/env bash
# Runs the engine benchmarks and prints the figures docs/benchmarks.md records.
# Usage: scripts/bench.sh  (TB_BENCH_EVENTS=1000000 for a quicker run; the 10M dataset is built once
# under $TB_BENCH_DIR, default the system temp dir, and reused)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tokenboard-target}"
cargo run --release --locked -p tokenboard-benches --example dataset_status
cargo bench --locked -p tokenboard-benches --bench append -- --warm-up-time 2 --measurement-time 8
cargo bench --locked -p tokenboard-benches --bench rebuild
cargo bench --locked -p tokenboard-benches --bench query -- --warm-up-time 1 --measurement-time 4
