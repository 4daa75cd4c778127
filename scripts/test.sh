#!/usr/bin/env bash
# Runs every test of the project. Usage: scripts/test.sh
# Builds go to $CARGO_TARGET_DIR (default /tmp/tokenboard-target, outside the clone, so repeated
# runs reuse them).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tokenboard-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== build every target (benches and examples included)"
cargo build --workspace --all-targets --locked

echo "== engine and workspace tests"
cargo test --workspace --locked

echo "== all tests passed"
