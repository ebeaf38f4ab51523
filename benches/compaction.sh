#!/usr/bin/env bash
# Needs curl and python3. Loopback only; stops its own server by PID; bounded by RATE x SECONDS.
# Purchase tail latency while the journal compacts: one SKU (one owner shard) takes about a
# million orders at a fixed open-loop rate (`seckill load`, so a stall shows in p99.9 and max
# instead of slowing the sender down), `--durability none` so fdatasync does not hide it.
# Prints the load report's latency lines and the server's compaction histogram.
#   benches/compaction.sh [BINARY ...]   each binary in turn (default: this tree's release build)
# Optional env: RATE (default 15000), SECONDS_LOADED (default 70), SEGMENT_BYTES (the server's
# --segment-bytes; smaller segments mean more compactions in the run).
set -u
. "$(dirname "$0")/lib.sh"
RATE=${RATE:-15000}
SECONDS_LOADED=${SECONDS_LOADED:-70}
PORT=18062
for bin in "${@:-$BIN}"; do
  dir=$(mktemp -d target/bench-data.XXXX)
  "$bin" serve --listen 127.0.0.1:$PORT --shards 2 --data-dir "$dir" --durability none \
    ${SEGMENT_BYTES:+--segment-bytes "$SEGMENT_BYTES"} > target/bench-server.log 2>&1 & P=$!
  for i in $(seq 100); do curl -sf localhost:$PORT/readyz >/dev/null && break; sleep 0.1; done
  NOW=$(($(date +%s%3N)-1000))
  curl -s -o /dev/null -X PUT localhost:$PORT/v1/sales/c -H "$A" -H 'Content-Type: application/json' -d "{\"name\":\"C\",\"stock\":1000000000,\"starts_at\":$NOW,\"ends_at\":$((NOW+3600000)),\"per_user_limit\":1000000}"
  echo "== $bin: $RATE purchases/s for ${SECONDS_LOADED}s on one SKU"
  $BIN load --url http://127.0.0.1:$PORT --sku c --rate "$RATE" --duration "${SECONDS_LOADED}s" \
    --connections 64 --users 1000000 2>/dev/null | grep -E "requests:|created|p99.9|WARNING"
  curl -s localhost:$PORT/metrics | grep -E "^seckill_journal_compaction_duration_seconds_(sum|count)|^seckill_orders" || true
  ps -o rss= -p $P | awk '{printf "rss: %.0f MiB\n", $1/1024}'
  kill $P; wait $P 2>/dev/null; rm -rf "$dir"
done
