//! Part of `cargo bench --bench redis_throughput`: one hot SKU on a local 3-master Redis Cluster,
//! with its stock in one bucket (`"stock_buckets": 1`, one master serves every purchase) against
//! three (`3`, one bucket per master), measured in the same run.
//!
//! 1. Starts three cluster-enabled `redis-server`s (no persistence) and joins them with
//!    `redis-cli --cluster create`.
//! 2. For K = 1 and K = 3: starts `seckill serve --redis redis-cluster://...` (`--shards`
//!    from `REDIS_BENCH_SHARDS`, default 2), creates a sale of a SKU whose three buckets hash to
//!    three different masters, and runs `wrk -t1 -c64 -d8s` at its purchase endpoint, the
//!    requests cycling over 256 shoppers (so every home bucket gets buyers), each with a limit
//!    far above what it can buy in the run, so every request creates an order.
//! 3. Reports purchases/s, p99, Redis µs per purchase (`INFO commandstats` EVALSHA usec summed
//!    over the masters, over the purchases), and the ratio K=3 / K=1.
//! 4. Does it all again with each master capped at a quarter of a core (a cgroup-v1 `cpu`
//!    group per master; skipped, and said, where there is none), see [`run`].
//!
//! Needs `wrk` and `redis-cli` (`apt-get install wrk redis-tools`). Loopback only; stops what it
//! starts.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis_server::RedisServer;
use seckill::auth::Auth;

use super::{curl, field, wait_ready, ADMIN_TOKEN, BIN, TOKEN_SECRET};
/// Shoppers the load cycles over.
const SHOPPERS: usize = 256;

/// Each master's share of a core in the Redis-bound pass.
const MASTER_CPU_SHARE: f64 = 0.25;

/// Runs the comparison twice and prints it: first as the machine is, then with each master
/// capped at [`MASTER_CPU_SHARE`] of a core. On a 2-core box that also runs wrk and the node,
/// the node's CPU, not Redis, is the limit, so buckets cannot show there; capping the masters
/// makes one master's core the limit, as it is for a hot SKU on real hardware with many node
/// cores, and that is what buckets are for. Each pass is `BUCKETS_BENCH_ROUNDS` rounds (default
/// 3) of K = 1 then K = 3, and the medians, so a neighbour's burst of CPU skews one round, not
/// the verdict.
pub fn run() -> Result<(), String> {
    let cluster = start_cluster()?;
    let rounds: usize = std::env::var("BUCKETS_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
        .max(1);
    compare(&cluster, 0..rounds, "masters uncapped")?;
    match CpuCaps::cap(&cluster, MASTER_CPU_SHARE) {
        // Fresh SKUs: a sale that started cannot be replaced.
        Ok(_caps) => compare(
            &cluster,
            rounds..2 * rounds,
            &format!("each master capped at {MASTER_CPU_SHARE} of a core"),
        ),
        Err(why) => {
            println!("SKIPPED the Redis-bound pass (each master capped): {why}");
            Ok(())
        }
    }
}

/// Rounds `rounds` (each its own SKUs) of K = 1 then K = 3 on `cluster`, each printed, then the
/// medians.
fn compare(
    cluster: &[RedisServer],
    rounds: std::ops::Range<usize>,
    label: &str,
) -> Result<(), String> {
    let mut runs: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    let count = rounds.len();
    for round in rounds {
        for (slot, k) in [(0, 1), (1, 3)] {
            let m = measure_k(cluster, k, round)?;
            println!(
                "{label}, round {round}: 3-master cluster, one SKU, stock_buckets {k}, wrk -t1 -c64 -d8s: {:>8.0} purchases/s  ({}; {:.2} us of Redis per purchase; EVALSHA calls per master {:?})",
                m.rps, m.p99, m.redis_us, m.calls_per_master
            );
            runs[slot].push(m);
        }
    }
    let median = |runs: &mut Vec<Measured>| {
        runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        let m = &runs[runs.len() / 2];
        (m.rps, m.redis_us)
    };
    let (one, one_us) = median(&mut runs[0]);
    let (three, three_us) = median(&mut runs[1]);
    println!(
        "{label}, median of {count}: stock_buckets 1 {one:.0} purchases/s ({one_us:.2} us of Redis per purchase), stock_buckets 3 {three:.0} purchases/s ({three_us:.2} us): {:.2}x",
        three / one.max(1.0)
    );
    Ok(())
}

/// Where cgroup v1's `cpu` controller is mounted.
const CPU_CGROUPS: &str = "/sys/fs/cgroup/cpu";

/// Each master in a cgroup-v1 `cpu` group of its own with a CFS quota; on drop the masters go
/// back to the root group and the groups are removed.
struct CpuCaps {
    groups: Vec<(std::path::PathBuf, u32)>,
}

impl CpuCaps {
    /// Caps every master of `cluster` at `share` of a core; an error when the machine has no
    /// writable cgroup-v1 `cpu` controller (the pass is then skipped, and says so).
    fn cap(cluster: &[RedisServer], share: f64) -> Result<Self, String> {
        let mut caps = Self { groups: Vec::new() };
        for node in cluster {
            let info: String = node.query(&["INFO", "server"]).map_err(|e| e.to_string())?;
            let pid: u32 = info
                .lines()
                .find_map(|line| line.strip_prefix("process_id:"))
                .and_then(|pid| pid.trim().parse().ok())
                .ok_or("no process_id in INFO server")?;
            let group = std::path::Path::new(CPU_CGROUPS).join(format!(
                "seckill-bench-{}-{}",
                std::process::id(),
                node.port
            ));
            std::fs::create_dir(&group).map_err(|e| format!("{}: {e}", group.display()))?;
            caps.groups.push((group.clone(), pid));
            let write = |name: &str, value: String| {
                std::fs::write(group.join(name), value)
                    .map_err(|e| format!("{}/{name}: {e}", group.display()))
            };
            write("cpu.cfs_period_us", "100000".into())?;
            write("cpu.cfs_quota_us", format!("{:.0}", share * 100_000.0))?;
            write("cgroup.procs", pid.to_string())?;
        }
        Ok(caps)
    }
}

impl Drop for CpuCaps {
    fn drop(&mut self) {
        let root = std::path::Path::new(CPU_CGROUPS).join("cgroup.procs");
        for (group, pid) in &self.groups {
            let _ = std::fs::write(&root, pid.to_string());
            let _ = std::fs::remove_dir(group);
        }
    }
}

/// One run's figures.
struct Measured {
    rps: f64,
    p99: String,
    redis_us: f64,
    calls_per_master: Vec<u64>,
}

/// Three cluster-enabled masters, no replicas, joined into one cluster.
fn start_cluster() -> Result<Vec<RedisServer>, String> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let bus = super::ports::pick_port().to_string();
        nodes.push(RedisServer::try_start(&[
            "--appendonly",
            "no",
            "--save",
            "",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",
            &bus,
        ])?);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .map_err(|e| format!("redis-cli (apt-get install redis-tools): {e}"))?;
    if !out.status.success() {
        return Err(format!("redis-cli --cluster create failed: {out:?}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &nodes {
        loop {
            let info: String = node
                .query(&["CLUSTER", "INFO"])
                .map_err(|e| e.to_string())?;
            if info.contains("cluster_state:ok") {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} never got cluster_state:ok", node.port));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(nodes)
}

/// The port of the master serving `key`.
fn master_of(cluster: &[RedisServer], key: &str) -> Result<u16, String> {
    let slot: i64 = cluster[0]
        .query(&["CLUSTER", "KEYSLOT", key])
        .map_err(|e| e.to_string())?;
    for node in cluster {
        let mine: String = node
            .query(&["CLUSTER", "NODES"])
            .map_err(|e| e.to_string())?;
        let owns = mine
            .lines()
            .filter(|line| line.contains("myself"))
            .flat_map(|line| line.split_whitespace().skip(8))
            .any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    a.parse::<i64>().is_ok_and(|a| a <= slot)
                        && b.parse::<i64>().is_ok_and(|b| slot <= b)
                }
                None => range.parse::<i64>().is_ok_and(|s| s == slot),
            });
        if owns {
            return Ok(node.port);
        }
    }
    Err(format!("no master serves slot {slot}"))
}

/// A SKU (named after `k` and the round) whose first three buckets live on three different
/// masters.
fn spread_sku(cluster: &[RedisServer], k: u32, round: usize) -> Result<String, String> {
    for n in 0..200 {
        let sku = format!("hot{k}r{round}-{n}");
        let mut masters = HashSet::new();
        for bucket in 0..3 {
            let part = if bucket == 0 {
                sku.clone()
            } else {
                format!("{sku}~{bucket}")
            };
            masters.insert(master_of(cluster, &format!("seckill:{{{part}}}:sale"))?);
        }
        if masters.len() == 3 {
            return Ok(sku);
        }
    }
    Err("no SKU with its buckets on three masters".into())
}

fn measure_k(cluster: &[RedisServer], k: u32, round: usize) -> Result<Measured, String> {
    let sku = spread_sku(cluster, k, round)?;
    let port = super::ports::pick_port();
    let shards = std::env::var("REDIS_BENCH_SHARDS").unwrap_or_else(|_| "2".into());
    let url = format!("redis-cluster://127.0.0.1:{}", cluster[0].port);
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--shards", &shards, "--redis", &url])
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SECKILL_TOKEN_SECRET", TOKEN_SECRET)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {BIN}: {e}"))?;
    let result = load(cluster, port, &sku, k);
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    result
}

fn load(cluster: &[RedisServer], port: u16, sku: &str, k: u32) -> Result<Measured, String> {
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base, Duration::from_secs(30))?;
    let now = seckill::clock::now_ms();
    let sale = format!(
        r#"{{"name":"bench","stock":1000000000,"starts_at":{},"ends_at":{},"per_user_limit":1000000,"stock_buckets":{k}}}"#,
        now - 1000,
        now + 3_600_000
    );
    // Ready means one master answers; the first calls to the others may still fail while
    // the node learns the slot map: retried for a while.
    let mut created = String::new();
    for _ in 0..50 {
        created = curl(&[
            "-X",
            "PUT",
            &format!("{base}/v1/sales/{sku}"),
            "-H",
            &format!("Authorization: Bearer {ADMIN_TOKEN}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &sale,
        ])?;
        if !created.contains(r#""error":"unavailable""#) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !created.contains(r#""state":"open""#) {
        return Err(format!("could not create the sale: {created}"));
    }
    let auth = Auth::new("", TOKEN_SECRET);
    let tokens: Vec<String> = (0..SHOPPERS)
        .map(|n| {
            format!(
                "\"{}\"",
                auth.mint(&format!("shopper-{n}"), now / 1000 + 3600)
            )
        })
        .collect();
    for node in cluster {
        node.query::<()>(&["CONFIG", "RESETSTAT"])
            .map_err(|e| e.to_string())?;
    }
    let lua = std::env::temp_dir().join(format!(
        "seckill-buckets-bench-{}-{k}.lua",
        std::process::id()
    ));
    std::fs::write(
        &lua,
        format!(
            "local tokens = {{{}}}\nlocal n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(\"POST\", nil, {{Authorization = \"Bearer \" .. tokens[n % #tokens + 1]}}, \"\")\nend\n",
            tokens.join(",")
        ),
    )
    .map_err(|e| e.to_string())?;
    let wrk = Command::new("wrk")
        .args(["-t1", "-c64", "-d8s", "--latency", "-s"])
        .arg(&lua)
        .arg(format!("{base}/v1/sales/{sku}/purchase"))
        .output()
        .map_err(|e| format!("wrk (apt-get install wrk): {e}"))?;
    let _ = std::fs::remove_file(&lua);
    let wrk = String::from_utf8_lossy(&wrk.stdout).into_owned();
    let rps = field(&wrk, "Requests/sec:").ok_or_else(|| format!("no wrk figure:\n{wrk}"))?;
    if wrk.contains("Non-2xx") {
        return Err(format!("some purchases failed:\n{wrk}"));
    }
    // "N requests in 8.00s, ...": every request created an order (no non-2xx above).
    let purchases = wrk
        .lines()
        .find(|line| line.contains("requests in"))
        .and_then(|line| line.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(rps * 8.0);
    let mut usec = 0.0;
    let mut calls_per_master = Vec::new();
    for node in cluster {
        let (u, c) = node.evalsha_usec()?;
        usec += u;
        calls_per_master.push(c as u64);
    }
    let p99 = wrk
        .lines()
        .find(|line| line.trim_start().starts_with("99%"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    Ok(Measured {
        rps,
        p99,
        // Background syncs run EVALSHA too and are counted against the purchases: an upper
        // bound.
        redis_us: usec / purchases.max(1.0),
        calls_per_master,
    })
}
