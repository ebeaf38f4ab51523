#!/usr/bin/env bash
# Start/stop loop: starts the server N times (default 1000) on a data dir holding a few sales,
# waits for /readyz 200 (giving up after 20 s: a startup hang), sends SIGTERM and waits for the
# exit (giving up after 30 s: a shutdown hang). Prints the counts. Loopback only; it signals only
# the PIDs it started.
#
#   benches/startstop.sh [N] [BINARY]      (BINARY defaults to a fresh release build)
#
# SALES (default 6) sets how many sales the data dir holds: each start republishes every one to
# every shard and waits for the acknowledgements, so more sales mean more cross-thread wake-ups
# before ready, where a lost one used to hang the start.
#
# On a hang it saves the server log and each thread's kernel wait channel under target/startstop/.
set -u
cd "$(dirname "$0")/.." || exit 1
N=${1:-1000}
if [ -n "${2:-}" ]; then BIN=$2; else cargo build --release --quiet || exit 1; BIN=target/release/seckill; fi
export SECKILL_ADMIN_TOKEN=admin-token-0123456789 SECKILL_TOKEN_SECRET=secret-0123456789abcdef
export RUST_LOG=${RUST_LOG:-warn}
out=target/startstop; mkdir -p $out
dir=$(mktemp -d target/startstop-data.XXXX)
port=${PORT:-18071}
P=
cleanup() { [ -n "$P" ] && kill -9 "$P" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

ready() { curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/readyz" 2>/dev/null; }
dump() { # $1: what hung
  local f=$out/hang-$1-$i.txt
  { echo "== $1 hang at start $i (pid $P)"; for t in /proc/$P/task/*; do
      echo "$(cat $t/comm 2>/dev/null) $(cat $t/wchan 2>/dev/null)"; done
    echo "== log"; cat $out/server.log; } > "$f"
  echo "  $1 hang at start $i: see $f"
}

# Seed the data dir with sales, so every start republishes them across the mesh.
$BIN serve --listen 127.0.0.1:$port --shards 2 --data-dir "$dir" > $out/server.log 2>&1 & P=$!
for _ in $(seq 400); do [ "$(ready)" = 200 ] && break; sleep 0.05; done
NOW=$(($(date +%s%3N)-1000))
for sku in $(seq -f 'sku%g' "${SALES:-6}"); do
  curl -s -o /dev/null -X PUT "http://127.0.0.1:$port/v1/sales/$sku" -H "Authorization: Bearer $SECKILL_ADMIN_TOKEN" \
    -H 'Content-Type: application/json' \
    -d "{\"name\":\"S\",\"stock\":10,\"starts_at\":$NOW,\"ends_at\":$((NOW+3600000)),\"per_user_limit\":1}"
done
kill -TERM $P; wait $P 2>/dev/null; P=

started=0; start_hangs=0; stop_hangs=0; failed=0
for i in $(seq "$N"); do
  $BIN serve --listen 127.0.0.1:$port --shards 2 --data-dir "$dir" > $out/server.log 2>&1 & P=$!
  ok=
  for _ in $(seq 2000); do
    code=$(ready)
    [ "$code" = 200 ] && { ok=1; break; }
    kill -0 $P 2>/dev/null || break
    sleep 0.01
  done
  if [ -z "$ok" ]; then
    if kill -0 $P 2>/dev/null; then start_hangs=$((start_hangs+1)); dump start; kill -9 $P
    else failed=$((failed+1)); echo "  start $i: exited early"; tail -5 $out/server.log; fi
    wait $P 2>/dev/null; P=; continue
  fi
  started=$((started+1))
  kill -TERM $P
  for _ in $(seq 3000); do kill -0 $P 2>/dev/null || break; sleep 0.01; done
  if kill -0 $P 2>/dev/null; then stop_hangs=$((stop_hangs+1)); dump stop; kill -9 $P; fi
  wait $P 2>/dev/null; P=
  [ $((i % 100)) = 0 ] && echo "  $i starts: ready $started, start hangs $start_hangs, stop hangs $stop_hangs, failed $failed"
done
echo "starts: $N, ready: $started, start hangs: $start_hangs, stop hangs: $stop_hangs, exited early: $failed"
[ "$started" = "$N" ] && [ "$stop_hangs" = 0 ]
