#!/usr/bin/env bash
# Needs wrk and curl (apt-get install -y wrk curl). Loopback only; stops its own server by PID.
# Restart time with ~1M orders in the journal, and where recovery spent it.
#   benches/restart.sh [BINARY]   (default: this tree's release build)
# Optional env: FILL, seconds of wrk per SKU (4 SKUs) to fill the journal (default 7).
set -u
. "$(dirname "$0")/lib.sh"
BIN=${1:-$BIN}
dir=$(mktemp -d target/bench-data.XXXX)
start() { $BIN serve --listen 127.0.0.1:18061 --shards 2 --data-dir $dir --durability none > target/bench-server.log 2>&1 & P=$!; }
wait_ready() { local t0=$(date +%s%N); for i in $(seq 600); do curl -sf localhost:18061/readyz >/dev/null && break; sleep 0.02; done; echo $(( ($(date +%s%N)-t0)/1000000 )); }
start; wait_ready >/dev/null
NOW=$(($(date +%s%3N)-1000))
for sku in a b c d; do
curl -s -o /dev/null -X PUT localhost:18061/v1/sales/$sku -H "$A" -H 'Content-Type: application/json' -d "{\"name\":\"B\",\"stock\":1000000000,\"starts_at\":$NOW,\"ends_at\":$((NOW+3600000)),\"per_user_limit\":1000000}"
done
for sku in a b c d; do wrk -t1 -c64 -d${FILL:-7}s -s target/buy.lua http://127.0.0.1:18061/v1/sales/$sku/purchase >/dev/null; done
total=0; for sku in a b c d; do n=$(curl -s localhost:18061/v1/sales/$sku | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['stock']-d['remaining'])"); total=$((total+n)); done
echo "orders: $total"; du -sh $dir
kill $P; wait $P 2>/dev/null
t0=$(date +%s%N); start; ms=$(wait_ready); echo "restart to ready: ${ms} ms (process start to /readyz 200)"
sed 's/\x1b\[[0-9;]*m//g' target/bench-server.log | grep -o '\(elapsed\|read\|replay\|write\)_ms[^ ]*' | tr '\n' ' '; echo; du -sh $dir; ps -o rss= -p $P | awk '{print "rss MiB:", $1/1024}'
kill $P; wait $P 2>/dev/null; rm -rf $dir
