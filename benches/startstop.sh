#!/usr/bin/env bash
# Start/stop loop: starts the server N times (default 1000) on a data dir holding a few sales,
# waits for /readyz 200 (giving up after READY_SECS, default 20 s: a startup hang), sends SIGTERM
# and waits for the exit (giving up after STOP_SECS, default 30 s: a shutdown hang). Prints the
# counts. Loopback only, on a free ephemeral port (or PORT; a port taken meanwhile is replaced);
# it signals only the PIDs it started. The waits are deadlines on the clock ($SECONDS), so a hang
# costs its bound, whatever each probe takes.
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
READY_SECS=${READY_SECS:-20} STOP_SECS=${STOP_SECS:-30}
# A loopback port free right now: the kernel picks it for a socket bound to port 0.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port=${PORT:-$(free_port)} || { echo "cannot pick a free port (needs python3; or set PORT)" >&2; exit 1; }
P=
cleanup() { [ -n "$P" ] && kill -9 "$P" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT

ready() { curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/readyz" 2>/dev/null; }
# Starts the server on $port in the background (its PID in P).
start() { $BIN serve --listen "127.0.0.1:$port" --shards 2 --data-dir "$dir" > $out/server.log 2>&1 & P=$!; }
# Waits until $P answers /readyz 200 (returns 0), exits (1) or $1 seconds pass (2).
wait_ready() {
  local deadline=$((SECONDS + $1))
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ "$(ready)" = 200 ] && return 0
    kill -0 "$P" 2>/dev/null || return 1
    sleep 0.01
  done
  [ "$(ready)" = 200 ] && return 0
  kill -0 "$P" 2>/dev/null || return 1
  return 2
}
# Waits until $P exits (returns 0) or $1 seconds pass (1).
wait_gone() {
  local deadline=$((SECONDS + $1))
  while kill -0 "$P" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.01
  done
}
dump() { # $1: what hung
  local f=$out/hang-$1-$i.txt
  { echo "== $1 hang at start $i (pid $P)"; for t in /proc/$P/task/*; do
      echo "$(cat $t/comm 2>/dev/null) $(cat $t/wchan 2>/dev/null)"; done
    echo "== log"; cat $out/server.log; } > "$f"
  echo "  $1 hang at start $i: see $f"
}

# Seed the data dir with sales, so every start republishes them across the mesh.
start
if ! wait_ready 60; then
  echo "the seeding server never became ready; log:" >&2; cat $out/server.log >&2; exit 1
fi
NOW=$(($(date +%s%3N)-1000))
for sku in $(seq -f 'sku%g' "${SALES:-6}"); do
  curl -s -o /dev/null --max-time 10 -X PUT "http://127.0.0.1:$port/v1/sales/$sku" \
    -H "Authorization: Bearer $SECKILL_ADMIN_TOKEN" -H 'Content-Type: application/json' \
    -d "{\"name\":\"S\",\"stock\":10,\"starts_at\":$NOW,\"ends_at\":$((NOW+3600000)),\"per_user_limit\":1}"
done
kill -TERM $P
wait_gone $STOP_SECS || kill -9 $P
wait $P 2>/dev/null; P=

started=0; start_hangs=0; stop_hangs=0; failed=0
for i in $(seq "$N"); do
  # A port taken by another process since it was picked: pick another (at most 3 tries).
  for _ in 1 2 3; do
    start; rc=0; wait_ready $READY_SECS || rc=$?
    [ "$rc" = 1 ] && grep -qi 'address already in use' $out/server.log || break
    wait $P 2>/dev/null; P=; port=$(free_port) || break
  done
  if [ "$rc" != 0 ]; then
    if [ "$rc" = 2 ]; then start_hangs=$((start_hangs+1)); dump start; kill -9 $P
    else failed=$((failed+1)); echo "  start $i: exited early"; tail -5 $out/server.log; fi
    wait $P 2>/dev/null; P=; continue
  fi
  started=$((started+1))
  kill -TERM $P
  if ! wait_gone $STOP_SECS; then stop_hangs=$((stop_hangs+1)); dump stop; kill -9 $P; fi
  wait $P 2>/dev/null; P=
  [ $((i % 100)) = 0 ] && echo "  $i starts: ready $started, start hangs $start_hangs, stop hangs $stop_hangs, failed $failed"
done
echo "starts: $N, ready: $started, start hangs: $start_hangs, stop hangs: $stop_hangs, exited early: $failed"
[ "$started" = "$N" ] && [ "$stop_hangs" = 0 ]
