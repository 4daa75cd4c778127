#!/usr/bin/env bash
# Builds everything and runs the Tokenboard server with its embedded storage and web console.
# Usage: scripts/run.sh [--config FILE] (any `tokenboard serve` flag)
# Data goes to ./data (TOKENBOARD_DATA_DIR to change); the console is at http://127.0.0.1:8317/console.
# On first start the server prints an admin token once; set TOKENBOARD_ADMIN_TOKEN to choose it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tokenboard-target}"
if [ -f web/package.json ] && command -v npm >/dev/null; then
    echo "== building the web console (npm)"
    (cd web && { [ -d node_modules ] || npm ci --no-audit --no-fund; } && npm run build)
fi
echo "== building the server"
cargo build --release --locked -p tokenboard-server
exec "$CARGO_TARGET_DIR/release/tokenboard" serve "$@"
