#!/usr/bin/env bash
# Builds and tests the web console: type-check + production build, the first-load JS budget,
# Vitest unit tests, and end-to-end tests in headless Chromium against the tokenboard binary.
#   TOKENBOARD_BIN      server binary (default $CARGO_TARGET_DIR/debug/tokenboard,
#                       CARGO_TARGET_DIR defaulting to /tmp/tokenboard-target)
#   WEB_JS_BUDGET_KB    first-load gzipped JS budget in kB (default 250)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/web"
start=$(date +%s)

# npm ci only when node_modules is missing or package-lock.json changed since the last install.
stamp=node_modules/.package-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ ! -d node_modules || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
  echo "$want" > "$stamp"
fi

echo "== build (vue-tsc + vite)"
npm run build

echo "== bundle size"
node scripts/bundle-size.mjs "${WEB_JS_BUDGET_KB:-250}"

echo "== unit tests (vitest)"
npx vitest run

if [[ ! -x /usr/bin/chromium ]]; then
  echo "== installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium || { apt-get update && apt-get install -y --no-install-recommends chromium; }
fi

bin="${TOKENBOARD_BIN:-${CARGO_TARGET_DIR:-/tmp/tokenboard-target}/debug/tokenboard}"
if [[ ! -x $bin ]]; then
  echo "tokenboard binary not found at $bin: build it (cargo build) or set TOKENBOARD_BIN" >&2
  exit 1
fi
echo "== e2e (headless chromium against $bin)"
TOKENBOARD_BIN="$bin" node --test --test-concurrency=1 e2e/

echo "== web tests passed in $(( $(date +%s) - start ))s"
