#!/usr/bin/env bash
# Needs wrk and curl (apt-get install -y wrk curl). Loopback only; stops its own server by PID.
# Purchase throughput with --durability sync vs none, same machine, same run.
set -u
. "$(dirname "$0")/lib.sh"
for mode in sync none sync none; do
  dir=$(mktemp -d target/bench-data.XXXX)
  $BIN serve --listen 127.0.0.1:18060 --shards 2 --data-dir $dir --durability $mode > target/bench-server.log 2>&1 & P=$!
  for i in $(seq 50); do curl -sf localhost:18060/readyz >/dev/null && break; sleep 0.1; done
  NOW=$(($(date +%s%3N)-1000))
  curl -s -o /dev/null -X PUT localhost:18060/v1/sales/b -H "$A" -H 'Content-Type: application/json' -d "{\"name\":\"B\",\"stock\":1000000000,\"starts_at\":$NOW,\"ends_at\":$((NOW+3600000)),\"per_user_limit\":1000000}"
  out=$(wrk -t1 -c64 -d8s --latency -s target/buy.lua http://127.0.0.1:18060/v1/sales/b/purchase)
  sold=$(curl -s localhost:18060/v1/sales/b | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['stock']-d['remaining'])")
  echo "$mode: $(echo "$out" | grep -E 'Requests/sec' | tr -s ' ') p99 $(echo "$out" | grep '99%' | tr -s ' ' | cut -d' ' -f3) sold=$sold"
  kill $P; wait $P 2>/dev/null; rm -rf $dir
done
