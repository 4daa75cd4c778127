#!/usr/bin/env bash
# Runs every test of the project: Rust tests, the web console's unit and browser tests, and a
# smoke run of every fuzz target. Usage: scripts/test.sh
# Installs what the tests need when missing (npm packages, Debian's chromium, cargo-fuzz).
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

echo "== web console: build, unit tests, end-to-end tests in headless Chromium"
TOKENBOARD_BIN="${TOKENBOARD_BIN:-$CARGO_TARGET_DIR/debug/tokenboard}" scripts/web-test.sh

echo "== fuzz smoke run (every target; scripts/fuzz.sh N for longer)"
scripts/fuzz.sh "${FUZZ_SECONDS:-15}"

echo "== all tests passed"
