#!/usr/bin/env bash
# The README's "Performance" table: in the same run, wrk against nginx `return 200` (the machine's
# HTTP ceiling, from benches/nginx-baseline.sh), then seckill's sold-out rejection path and
# its open-sale purchase path with --durability sync and none; each as a ratio to nginx.
# seckill runs with --shards 1 and with --shards 2 (SHARD_COUNTS="1 2"): wrk itself needs a core.
# Each at 64, 1,000 and 10,000 connections (CONNECTIONS="64 1000 10000"): flash sales are
# thousands of connections, and what costs per connection (memory, polling, timers) shows there.
# Usage: benches/performance.sh [rounds=2] [wrk duration=8s]. Needs wrk, curl and nginx-light
# (the baseline script installs nginx and wrk if missing). Loopback only; stops its servers by PID.
set -u
. "$(dirname "$0")/lib.sh"
ROUNDS=${1:-2}
SHARD_COUNTS=${SHARD_COUNTS:-1 2}
DURATION=${2:-8s}
CONNECTIONS=${CONNECTIONS:-64 1000 10000}
PORT=18061
# The nginx baseline beside this script (NGINX_BASELINE overrides it).
BASELINE=${NGINX_BASELINE:-$(dirname "$0")/nginx-baseline.sh}
# wrk, nginx and seckill each hold one descriptor per connection (each process its own limit);
# nginx inherits this one.
most=$(printf '%s\n' $CONNECTIONS | sort -n | tail -1)
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((most + 1024)) ] || {
  echo "the open-file limit $(ulimit -n) cannot hold $most connections; raise the hard limit" >&2; exit 1; }

# "<req/s> <p99> <non-2xx responses> <socket errors>" from wrk output.
summary() {
  awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$5}
       /Socket errors/ {errors=$4+$6+$8+$10} END {print rps, p99, bad+0, errors+0}'
}
# The row's note on socket errors (connect, read, write, timeout), when there were any.
errors_note() { [ "$1" = 0 ] || echo "  ($1 socket errors)"; }

start_server() { # mode shards
  dir=$(mktemp -d target/bench-data.XXXX)
  $BIN serve --listen 127.0.0.1:$PORT --shards "$2" --data-dir "$dir" --durability "$1" \
    --backlog 16384 --max-connections-per-shard 20000 > target/bench-server.log 2>&1 &
  P=$!
  for _ in $(seq 100); do curl -sf localhost:$PORT/readyz >/dev/null && return; sleep 0.1; done
  echo "server did not become ready" >&2; cat target/bench-server.log >&2; exit 1
}
stop_server() { kill "$P"; wait "$P" 2>/dev/null; rm -rf "$dir"; }
put_sale() { # sku stock per_user_limit
  local now=$(($(date +%s%3N)-1000))
  curl -sf -o /dev/null -X PUT "localhost:$PORT/v1/sales/$1" -H "$A" -H 'Content-Type: application/json' \
    -d "{\"name\":\"$1\",\"stock\":$2,\"starts_at\":$now,\"ends_at\":$((now+3600000)),\"per_user_limit\":$3}"
}

printf '%-6s %6s %-22s %10s %9s %8s\n' round conns path req/s p99 ratio
row() { # round conns path rps p99 nginx_rps [extra]
  printf '%-6s %6s %-22s %10s %9s %7.2fx%s\n' "$1" "$2" "$3" "$4" "$5" "$(echo "$4 / $6" | bc -l)" "${7:-}"
}
for round in $(seq "$ROUNDS"); do
 for conns in $CONNECTIONS; do
  WRK=(-t1 -c"$conns" -d"$DURATION" --latency --timeout 10s)
  read -r nginx_rps nginx_p99 _ errors < <("$BASELINE" "${WRK[@]}" | summary)
  row "$round" "$conns" "nginx return 200" "$nginx_rps" "$nginx_p99" "$nginx_rps" "$(errors_note "$errors")"
  for shards in $SHARD_COUNTS; do
    start_server none "$shards"
    put_sale gone 1 1
    curl -sf -o /dev/null -X POST localhost:$PORT/v1/sales/gone/purchase -H "Authorization: Bearer $T" \
      -H 'Content-Type: application/json' -d '{}'
    # Every answer here is the edge's 409 sold_out, so all of them count as non-2xx.
    read -r rps p99 _ errors < <(wrk "${WRK[@]}" -s target/buy.lua http://127.0.0.1:$PORT/v1/sales/gone/purchase | summary)
    row "$round" "$conns" "sold-out, $shards shard(s)" "$rps" "$p99" "$nginx_rps" "$(errors_note "$errors")"
    stop_server
    for mode in none sync; do
      start_server "$mode" "$shards"
      put_sale open 1000000000 1000000
      read -r rps p99 bad errors < <(wrk "${WRK[@]}" -s target/buy.lua http://127.0.0.1:$PORT/v1/sales/open/purchase | summary)
      [ "$bad" = 0 ] || { echo "purchase ($mode, $conns connections): $bad responses were not 201" >&2; exit 1; }
      sold=$(curl -s localhost:$PORT/v1/sales/open | python3 -c "import json,sys; d=json.load(sys.stdin); print(d['stock']-d['remaining'])")
      row "$round" "$conns" "buy $mode, $shards shard(s)" "$rps" "$p99" "$nginx_rps" "  ($sold orders)$(errors_note "$errors")"
      stop_server
    done
  done
 done
done
