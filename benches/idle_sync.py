#!/usr/bin/env python3
"""Idle cost of N open SKUs on 2 seckill nodes (2 shards each) sharing one redis-server, and
how fast a purchase on node A shows in node B's seckill_stock_remaining. Usage: idle.py BIN TAG"""
import base64, hashlib, hmac, http.client, json, os, re, socket, subprocess, sys, time
BIN, TAG = sys.argv[1], sys.argv[2]
N = int(os.environ.get("SKUS", "2000"))
ADMIN, SECRET = "bench-admin-token-0123456789", "bench-token-secret-0123456789"
def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
# CLUSTER=1: a local 3-master Redis Cluster instead of one redis-server (figures summed over masters).
CLUSTER = os.environ.get("CLUSTER") == "1"
d = f"/tmp/idle_sync/{TAG}"; os.makedirs(d, exist_ok=True)
rports = [free_port() for _ in range(3 if CLUSTER else 1)]
rport = rports[0]
servers = []
for p in rports:
    extra = ["--cluster-enabled", "yes", "--cluster-config-file", f"{d}/nodes-{p}.conf"] if CLUSTER else []
    servers.append(subprocess.Popen(["redis-server", "--port", str(p), "--save", "", "--appendonly", "no", "--dir", d, *extra],
                                    stdout=subprocess.DEVNULL))
class Servers:
    def kill(self):
        for s in servers: s.kill()
redis = Servers()
def rc(*args, port=None):
    return subprocess.run(["redis-cli", "-p", str(port or rport), *args], capture_output=True, text=True).stdout
time.sleep(0.5)
if CLUSTER:
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in rports], "--cluster-yes"],
                   capture_output=True, check=True)
    time.sleep(2)
url = (f"redis-cluster://" + ",".join(f"127.0.0.1:{p}" for p in rports)) if CLUSTER else f"redis://127.0.0.1:{rport}"
env = dict(os.environ, SECKILL_ADMIN_TOKEN=ADMIN, SECKILL_TOKEN_SECRET=SECRET, RUST_LOG="warn",
           SECKILL_PAYMENT_TOKEN="bench-payment-token-0123456789", SECKILL_WEBHOOK_SECRET="bench-webhook-secret-0123456789")
nodes = []
for i in range(2):
    port = free_port()
    p = subprocess.Popen([BIN, "serve", "--redis", url, "--listen", f"127.0.0.1:{port}",
                          "--shards", "2", "--data-dir", f"{d}/node{i}"], env=env,
                         stdout=open(f"{d}/node{i}.log", "w"), stderr=subprocess.STDOUT)
    nodes.append((p, port))
import atexit
atexit.register(lambda: [p.kill() for p, _ in nodes] + [redis.kill()])
def req(port, method, path, body=None, auth=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    h = {"Content-Type": "application/json"}
    if auth: h["Authorization"] = "Bearer " + auth
    c.request(method, path, body=body, headers=h); r = c.getresponse(); data = r.read(); c.close()
    return r.status, data
for _ in range(100):
    try:
        if all(req(port, "GET", "/readyz")[0] == 200 for _, port in nodes): break
    except Exception: pass
    time.sleep(0.2)
now = int(time.time() * 1000)
spec = json.dumps({"name": "idle", "stock": 1000, "starts_at": now - 1000, "ends_at": now + 3600_000, "per_user_limit": 10})
for i in range(N):
    st, _ = req(nodes[0][1], "PUT", f"/v1/sales/idle-{i:05d}", spec, ADMIN)
    assert st in (200, 201), st
time.sleep(8)
def cpu(port=None):
    info = rc("INFO", "cpu", port=port)
    return sum(float(re.search(k + r":([\d.]+)", info).group(1)) for k in ("used_cpu_sys", "used_cpu_user"))
def cpu_all(): return sum(cpu(p) for p in rports)
for p in rports: rc("CONFIG", "RESETSTAT", port=p)
c0 = cpu_all(); t0 = time.time()
ops = []
for _ in range(5):
    time.sleep(2); ops.append(sum(int(re.search(r"instantaneous_ops_per_sec:(\d+)", rc("INFO", "stats", port=p)).group(1)) for p in rports))
secs = time.time() - t0; c1 = cpu_all()
stats = {}
for p in rports:
    for m in re.finditer(r"cmdstat_([\w|]+):calls=(\d+)", rc("INFO", "commandstats", port=p)):
        stats[m.group(1)] = stats.get(m.group(1), 0) + int(m.group(2))
top = {k: round(v / secs) for k, v in sorted(stats.items(), key=lambda kv: -kv[1]) if v / secs >= 1}
print(f"[{TAG}] {N} idle SKUs, 2 nodes x 2 shards, {len(rports)} redis master(s), {secs:.1f} s: redis CPU {100*(c1-c0)/secs:.1f}% of a core; "
      f"commands/s {sum(stats.values())/secs:.0f} (evalsha {stats.get('evalsha',0)/secs:.0f}/s); "
      f"instantaneous_ops_per_sec samples {ops}; per command/s {top}")
# Propagation: buy one unit of a SKU on A, poll B's /metrics for its stock.
def tok(user):
    payload = f"{user}.{int(time.time()) + 3600}"
    sig = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), payload.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    return f"{payload}.{sig}"
lat = []
for k in range(10):
    sku = f"idle-{(k * 197) % N:05d}"
    st, body = req(nodes[1][1], "GET", "/metrics")
    m = re.search(r'seckill_stock_remaining\{sku="%s"\} (\d+)' % sku, body.decode())
    before = int(m.group(1)) if m else None
    t = time.time()
    st, body = req(nodes[0][1], "POST", f"/v1/sales/{sku}/purchase", json.dumps({"quantity": 1}), tok(f"u{k}"))
    assert st == 201, (st, body)
    while time.time() - t < 10:
        st, body = req(nodes[1][1], "GET", "/metrics")
        m = re.search(r'seckill_stock_remaining\{sku="%s"\} (\d+)' % sku, body.decode()) if st == 200 else None
        if m and before is not None and int(m.group(1)) < before:
            lat.append(round((time.time() - t) * 1000)); break
        time.sleep(0.005)
    time.sleep(0.3)
lat.sort()
print(f"[{TAG}] purchase on A seen in B's /metrics after (ms, sorted): {lat}")
for p, _ in nodes: p.kill()
redis.kill()
