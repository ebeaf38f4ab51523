#!/usr/bin/env bash
# Allocations per request in the whole server (glommio's included), counted by heaptrack around
# the release binary: one run under wrk, one idle run of the same length, and the difference
# divided by the requests wrk completed. The README's "Allocations per request" table.
# tests/allocations.rs counts seckill's own steps with a counting allocator; this counts all.
# Usage: benches/allocations.sh [shards=2] [duration=5]. Needs heaptrack, wrk and curl
# (apt-get install -y heaptrack wrk curl). Loopback only; stops its servers by PID.
# PATHS="sold-out purchase" picks the paths; DURABILITY=none|sync the purchase's durability.
set -u
. "$(dirname "$0")/lib.sh"
SHARDS=${1:-2}
SECS=${2:-5}
PATHS=${PATHS:-sold-out purchase}
DURABILITY=${DURABILITY:-none}
PORT=18071
OUT=$(mktemp -d target/alloc.XXXX)
command -v heaptrack >/dev/null || { echo "needs heaptrack (apt-get install -y heaptrack)" >&2; exit 1; }

# Runs the server under heaptrack; with a path, loads it with wrk for SECS seconds. Prints
# "<allocations> <requests>".
measure() { # label path
  local data; data=$(mktemp -d "$OUT/data.XXXX")
  heaptrack -o "$OUT/$1" "$BIN" serve --listen 127.0.0.1:$PORT --shards "$SHARDS" \
    --data-dir "$data" --durability "$DURABILITY" > "$OUT/$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 300); do curl -sf localhost:$PORT/readyz >/dev/null && break; sleep 0.1; done
  curl -sf localhost:$PORT/readyz >/dev/null || { echo "server did not start" >&2; cat "$OUT/$1.log" >&2; exit 1; }
  local now=$(($(date +%s%3N)-1000)) requests=0
  sale() { # sku stock limit
    curl -sf -o /dev/null -X PUT "localhost:$PORT/v1/sales/$1" -H "$A" -H 'Content-Type: application/json' \
      -d "{\"name\":\"$1\",\"stock\":$2,\"starts_at\":$now,\"ends_at\":$((now+3600000)),\"per_user_limit\":$3}"
  }
  sale gone 1 1
  sale open 1000000000 1000000
  curl -sf -o /dev/null -X POST localhost:$PORT/v1/sales/gone/purchase -H "Authorization: Bearer $T" -d '{}'
  # Warm the caches and pools the same way in both runs, so the difference is the load.
  for _ in $(seq 50); do
    curl -s -o /dev/null -X POST localhost:$PORT/v1/sales/open/purchase -H "Authorization: Bearer $T" -d '{}'
  done
  case "$2" in
    sold-out) requests=$(wrk -t1 -c16 -d"${SECS}s" -s target/buy.lua http://127.0.0.1:$PORT/v1/sales/gone/purchase \
                | awk '/requests in/ {print $1}') ;;
    purchase) requests=$(wrk -t1 -c16 -d"${SECS}s" -s target/buy.lua http://127.0.0.1:$PORT/v1/sales/open/purchase \
                | awk '/requests in/ {print $1}') ;;
    idle) sleep "$SECS" ;;
  esac
  # heaptrack is a shell script around the server: stop the server, its child, and heaptrack
  # then writes its file.
  kill -TERM "$(pgrep -P "$pid" -x seckill || echo "$pid")"; wait "$pid" 2>/dev/null
  local file; file=$(ls "$OUT/$1".*zst "$OUT/$1".*gz 2>/dev/null | head -1)
  local calls; calls=$(heaptrack_print "$file" 2>/dev/null | awk '/^calls to allocation functions:/ {print $5}')
  echo "$calls $requests"
}

if curl -s -o /dev/null "localhost:$PORT/"; then echo "port $PORT is in use" >&2; exit 1; fi
read -r idle _ < <(measure idle idle)
printf '%-10s %10s %12s %14s\n' path requests allocations per_request
printf '%-10s %10s %12s %14s\n' idle 0 "$idle" -
for path in $PATHS; do
  read -r calls requests < <(measure "$path" "$path")
  printf '%-10s %10s %12s %14.2f\n' "$path" "$requests" "$calls" "$(echo "($calls - $idle) / $requests" | bc -l)"
done
echo "heaptrack files in $OUT (heaptrack_print FILE | less: the top call sites)"
