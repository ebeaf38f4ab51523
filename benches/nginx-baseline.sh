#!/usr/bin/env bash
# The machine's HTTP ceiling for benches/performance.sh: nginx answering `200 ok` from memory,
# driven by wrk with the flags given (default -t1 -c64 -d10s --latency). Prints wrk's output.
# Needs nginx (Debian nginx-light) and wrk; installs both when missing. Loopback only, on a free
# port; stops its nginx by PID.
set -euo pipefail
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light wrk) >/dev/null
fi
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
stop() {
  [ -s "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null
  sleep 0.2
  rm -rf "$dir"
}
trap stop EXIT
mkdir -p "$dir/tmp"
# As many workers as cores, keep-alive without limits, no logging: what nginx does at its best.
cat >"$dir/nginx.conf" <<CONF
worker_processes $(nproc);
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; use epoll; multi_accept on; }
http {
  access_log off;
  keepalive_requests 1000000000;
  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fcgi; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
  server {
    listen 127.0.0.1:$port reuseport backlog=4096;
    location / { default_type text/plain; return 200 "ok"; }
  }
}
CONF
nginx -c "$dir/nginx.conf" -p "$dir/"
for _ in $(seq 50); do [ -s "$dir/nginx.pid" ] && break; sleep 0.1; done
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-t1 -c64 -d10s --latency)
timeout 300 wrk "${args[@]}" "http://127.0.0.1:$port/"
