#!/usr/bin/env bash
# Builds and runs Tokenboard. Until the server lands this exercises the storage engine: it appends
# a synthetic workload to ./data (or $1), reopens it and prints what the views answer.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tokenboard-target}"
exec cargo run --release --locked -p tokenboard-engine --example demo -- "${1:-./data}" "${2:-1000000}"
