# Shared setup for the shell benches: build, credentials, a purchase script for wrk.
# Sourced, not run. Needs wrk and curl (apt-get install -y wrk curl); loopback only.
cd "$(dirname "$0")/.." || exit 1
cargo build --release --quiet
BIN=target/release/seckill
export SECKILL_ADMIN_TOKEN=admin-token-0123456789 SECKILL_TOKEN_SECRET=secret-0123456789abcdef
A="Authorization: Bearer $SECKILL_ADMIN_TOKEN"
T=$($BIN token --user bench)
printf 'wrk.method = "POST"\nwrk.headers["Authorization"] = "Bearer %s"\n' "$T" > target/buy.lua
