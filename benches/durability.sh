#!/usr/bin/env bash
# Needs wrk and curl (apt-get install -y wrk curl). Loopback only; stops its own server by PID.
# Purchase throughput with --durability sync vs none, same machine, same run, at each connection
# count (CONNECTIONS, default "64 1000 10000"). For `sync`, also the group commit's work from the
# server's own /metrics: group commits (write + fdatasync) per second, records per group commit,
# and the mean time of one.
set -u
. "$(dirname "$0")/lib.sh"
CONNECTIONS=${CONNECTIONS:-64 1000 10000}
ulimit -n "$(ulimit -Hn)"
# "<count> <sum>" of a histogram (all series summed) from a scrape.
histogram() { # scrape family
  awk -v f="$2" '$1 ~ "^"f"_count" {c+=$2} $1 ~ "^"f"_sum" {s+=$2} END {print c+0, s+0}' <<<"$1"
}
for conns in $CONNECTIONS; do
  for mode in sync none; do
    dir=$(mktemp -d target/bench-data.XXXX)
    $BIN serve --listen 127.0.0.1:18060 --shards 2 --data-dir $dir --durability $mode \
      --backlog 16384 --max-connections-per-shard 20000 > target/bench-server.log 2>&1 & P=$!
    for i in $(seq 50); do curl -sf localhost:18060/readyz >/dev/null && break; sleep 0.1; done
    NOW=$(($(date +%s%3N)-1000))
    curl -s -o /dev/null -X PUT localhost:18060/v1/sales/b -H "$A" -H 'Content-Type: application/json' -d "{\"name\":\"B\",\"stock\":1000000000,\"starts_at\":$NOW,\"ends_at\":$((NOW+3600000)),\"per_user_limit\":1000000}"
    before=$(curl -s localhost:18060/metrics)
    out=$(wrk -t1 -c"$conns" -d8s --latency --timeout 10s -s target/buy.lua http://127.0.0.1:18060/v1/sales/b/purchase)
    after=$(curl -s localhost:18060/metrics)
    sold=$(curl -s localhost:18060/v1/sales/b | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['stock']-d['remaining'])")
    line="-c$conns $mode: $(echo "$out" | grep -E 'Requests/sec' | tr -s ' ') p99 $(echo "$out" | grep '99%' | tr -s ' ' | cut -d' ' -f3) sold=$sold"
    if [ "$mode" = sync ]; then
      read -r syncs0 secs0 < <(histogram "$before" seckill_journal_sync_duration_seconds)
      read -r syncs1 secs1 < <(histogram "$after" seckill_journal_sync_duration_seconds)
      read -r groups0 records0 < <(histogram "$before" seckill_journal_group_records)
      read -r groups1 records1 < <(histogram "$after" seckill_journal_group_records)
      line+=$(python3 -c "
syncs, secs = $syncs1 - $syncs0, $secs1 - $secs0
groups, records = $groups1 - $groups0, $records1 - $records0
print(f' | {syncs / 8:.0f} group commits/s, {records / max(groups, 1):.1f} records each, {1000 * secs / max(syncs, 1):.2f} ms each')")
    fi
    echo "$line"
    kill $P; wait $P 2>/dev/null; rm -rf $dir
  done
done
