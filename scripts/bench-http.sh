#!/usr/bin/env bash
# Measures the server over HTTP with wrk (install: apt-get install -y wrk): batched NDJSON ingest,
# single-event POSTs, and console reads while ingest runs. Prints the figures docs/benchmarks.md
# records. Usage: scripts/bench-http.sh [seconds per run, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tokenboard-target}"
secs="${1:-10}"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)"; exit 1; }
cargo build --release --locked -p tokenboard-server
bin="$CARGO_TARGET_DIR/release/tokenboard"
work="$(mktemp -d)"
token="tb_bench_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
port=18490
"$bin" loadgen --dump 1000 > "$work/batch.ndjson"
"$bin" loadgen --dump 1 --seed 7 > "$work/one.json"
TOKENBOARD_ADMIN_TOKEN="$token" TOKENBOARD_DATA_DIR="$work/data" CONSOLE_PORT=$port TOKENBOARD_BIND=127.0.0.1 \
    "$bin" serve > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
url="http://127.0.0.1:$port"
echo "== batched NDJSON ingest (1000 events per request)"
BODY="$work/batch.ndjson" TOKEN="$token" wrk -t2 -c8 -d"${secs}s" -s benches/http/post_file.lua "$url/api/ingest/events"
echo "== single-event POSTs"
BODY="$work/one.json" CONTENT_TYPE=application/json TOKEN="$token" wrk -t2 -c64 -d"${secs}s" -s benches/http/post_file.lua "$url/api/ingest/events"
echo "== console reads while batched ingest runs"
BODY="$work/batch.ndjson" TOKEN="$token" wrk -t1 -c8 -d"$((secs * 4 + 4))s" -s benches/http/post_file.lua "$url/api/ingest/events" > "$work/bg.txt" &
bg=$!
sleep 2
for path in "/api/console/stats" "/api/console/usage-trend?days=7&granularity=hour&tz=Asia/Shanghai" "/api/console/logs?limit=100" "/api/console/keys"; do
    echo "-- GET $path"
    TOKEN="$token" wrk -t1 -c2 -d"${secs}s" -s benches/http/get.lua "$url$path" | grep -E "Requests/sec|latency"
done
wait $bg
echo "-- the ingest meanwhile"
grep -E "Requests/sec" "$work/bg.txt"
curl -s -H "Authorization: Bearer $token" "$url/api/console/status"; echo
