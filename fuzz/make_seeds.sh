#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/corpus/ from a real server: starts the release binary on a
# scratch data dir, defines two sales, buys, pays, cancels, blocks, restarts (so a snapshot holds
# the state) and does a little more; then packs the journal files, tokens, order ids and the
# requests it sent as seeds. usage: fuzz/make_seeds.sh (after `cargo build --release`)
set -euo pipefail
cd "$(dirname "$0")"
BIN=${SECKILL_BIN:-../target/release/seckill}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/seckill-seeds.XXXXXX")
PORT=${SEED_PORT:-18471}
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
export SECKILL_ADMIN_TOKEN=fuzz-admin-token SECKILL_TOKEN_SECRET=fuzz-token-secret
D=$WORK/data
URL=http://127.0.0.1:$PORT
start() {
  "$BIN" serve --listen 127.0.0.1:$PORT --shards 2 --data-dir "$D" --segment-bytes 65536 \
    --log-level warn 2>>"$WORK/server.log" &
  PID=$!
  for _ in $(seq 100); do curl -sf -o /dev/null $URL/readyz && return; sleep 0.1; done
  cat "$WORK/server.log"; exit 1
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }
ADMIN="Authorization: Bearer $SECKILL_ADMIN_TOKEN"
JSON='Content-Type: application/json'
# Ten years, so the tokens outlive the seeds (the token target verifies at 2026-12-01).
tok() { "$BIN" token --user "$1" --ttl-secs 315360000; }
order_id() { python3 -c 'import json,sys; print(json.load(sys.stdin)["order_id"])'; }

start
now=$(date +%s%3N)
sale_body="{\"name\":\"Flash sale\",\"stock\":50,\"starts_at\":$((now - 1000)),\"ends_at\":$((now + 86400000)),\"per_user_limit\":3,\"payment_timeout_ms\":600000}"
for sku in moutai-2026 gpu_5090; do
  curl -sf -X PUT -H "$ADMIN" -H "$JSON" $URL/v1/sales/$sku -d "$sale_body" >/dev/null
done
ids=()
for user in alice bob carol dave; do
  auth="Authorization: Bearer $(tok $user)"
  ids+=("$(curl -sf -X POST -H "$auth" -H "$JSON" -H "Idempotency-Key: k-$user-1" \
    $URL/v1/sales/moutai-2026/purchase -d '{"quantity":2}' | order_id)")
  ids+=("$(curl -sf -X POST -H "$auth" $URL/v1/sales/gpu_5090/purchase | order_id)")
done
curl -sf -X POST -H "Authorization: Bearer $(tok alice)" $URL/v1/orders/${ids[0]}/pay >/dev/null
curl -sf -X POST -H "Authorization: Bearer $(tok bob)" $URL/v1/orders/${ids[2]}/cancel >/dev/null
curl -sf -X PUT -H "$ADMIN" $URL/v1/blocklist/mallory >/dev/null
stop
cp -a "$D" "$WORK/first-run"
start
ids+=("$(curl -sf -X POST -H "Authorization: Bearer $(tok erin)" -H "$JSON" \
  $URL/v1/sales/moutai-2026/purchase -d '{"quantity":1}' | order_id)")
curl -sf -X POST -H "Authorization: Bearer $(tok carol)" $URL/v1/orders/${ids[4]}/pay >/dev/null
curl -sf -X DELETE -H "$ADMIN" $URL/v1/blocklist/mallory >/dev/null
stop

mkdir -p corpus/{http_request,bodies,journal_decode,recovery,token,order_id}
# Journal files, each as [flags][first_lsn u64 LE][file]: segments continue from LSN 1 (the
# generation's snapshot covers LSN 0); flag 1 = snapshot, 2 = tail may tear, 4 = fix checksums.
for run in first-run data; do
  for file in $(cd "$WORK/$run" && find . -name '*.log' -o -name '*.snap' | sort); do
    case $file in *.snap) flags=1 ;; *) flags=2 ;; esac
    name=$(echo "$run${file#.}" | tr '/' '_')
    { printf "\\x$(printf %02x $flags)\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; cat "$WORK/$run/$file"; } \
      >corpus/journal_decode/"$name"
  done
  # Recovery flags: bit 0 fixes checksums, bits 1-2 pick 1-4 shards; 2 = two shards.
  ./pack_datadir.py "$WORK/$run" 2 >corpus/recovery/"$run"
  ./pack_datadir.py "$WORK/$run" 0 >corpus/recovery/"$run"-one-shard
done
for user in alice bob; do printf 'Bearer %s' "$(tok $user)" >corpus/token/$user; done
printf 'Bearer %s' "$SECKILL_ADMIN_TOKEN" >corpus/token/admin
printf 'Bearer alice.1796083200.AAAA' >corpus/token/bad-signature
for i in "${!ids[@]}"; do printf '%s' "${ids[$i]}" >corpus/order_id/order-$i; done
printf '{"quantity":2}' >corpus/bodies/purchase
printf '{}' >corpus/bodies/empty-object
printf '%s' "$sale_body" >corpus/bodies/sale
printf '{"name":"x","stock":1,"starts_at":0,"ends_at":1,"per_user_limit":1,"payment_timeout_ms":100,"rate_limit_per_sec":10}' \
  >corpus/bodies/sale-all-fields
printf '{"quantity":[[{"a":[]}]],"x":1.5e3,"s":"\\u00e9\\n"}' >corpus/bodies/nested
alice="Authorization: Bearer $(tok alice)"
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n' >corpus/http_request/get
printf 'POST /v1/sales/moutai-2026/purchase HTTP/1.1\r\nHost: localhost\r\n%s\r\nContent-Type: application/json\r\nIdempotency-Key: k-1\r\nX-Request-Id: r-1\r\nContent-Length: 14\r\n\r\n{"quantity":2}' \
  "$alice" >corpus/http_request/purchase
printf 'PUT /v1/sales/sku-1?x=1 HTTP/1.1\r\nHost: localhost\r\n%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
  "$ADMIN" ${#sale_body} "$sale_body" >corpus/http_request/put-sale
printf 'POST /v1/orders/%s/pay HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /v1/sales HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\nGET /readyz HTTP/1.0\r\n\r\n' \
  "${ids[0]}" >corpus/http_request/pipelined
printf 'POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' >corpus/http_request/chunked
echo "seeds written to $(pwd)/corpus"
