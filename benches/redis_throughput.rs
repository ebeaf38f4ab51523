//! `cargo bench --bench redis_throughput`: purchases per second in cluster mode, against what
//! one Redis round trip per purchase allows, measured in the same run on the same Redis.
//!
//! 1. Starts a `redis-server` and `seckill serve --redis` on it, once per [`Setup`]: the defaults
//!    (`--redis-batch 64 --redis-pipeline 4`), one call in flight per SKU (`--redis-pipeline 1`)
//!    and batching off (`--redis-batch 1 --redis-pipeline 1`).
//! 2. Each time runs `wrk -t1 -c64 -d8s` (the defaults also with `-c1000`, a flash sale's
//!    concurrency, where batches fill) at the purchase endpoint (one shopper with a huge limit,
//!    so every request creates an order), and reads Redis' `used_memory` before and after: the
//!    bytes of Redis memory per order (every key a purchase writes, stream entry included; no
//!    broker runs, so the stream is never trimmed).
//!    Then the defaults once more with `seckill load` and a million shoppers, each limited to
//!    one unit: nearly every order is a different shopper's, as in a real flash sale, and each
//!    shopper costs Redis an entry of their own.
//! 3. Runs `redis-benchmark -c 64 -P 1` with `EVALSHA` of a gateway-style script (take a unit,
//!    count the user, store the order), one purchase per call: what an industry gateway with one
//!    round trip per purchase gets from Redis at best (no HTTP in front of it).
//! 4. Runs the same script behind an OpenResty-style gateway (nginx + lua-nginx-module, one
//!    `EVALSHA` per purchase over pooled connections, [`gateway`]) with the same wrk flags: the
//!    baseline each setup's purchases/s is divided by.
//!
//! 5. On a local 3-master Redis Cluster, one hot SKU with `stock_buckets` 1 against 3
//!    ([`cluster_buckets`]; `BUCKETS_BENCH_ROUNDS` rounds, default 3, and their medians).
//!
//! For each, Redis CPU per purchase comes from `INFO commandstats` (EVALSHA usec over purchases).
//!
//! The ratios show what coalescing concurrent purchases into one script call buys. Needs `wrk`,
//! `redis-benchmark` and the gateway's nginx (`apt-get install wrk redis-tools nginx-light
//! libnginx-mod-http-lua`). Loopback only; stops what it starts.

/// One hot SKU on a 3-master Redis Cluster, `stock_buckets` 1 against 3.
#[path = "cluster_buckets.rs"]
mod cluster_buckets;
/// The OpenResty-style gateway, driven by the same wrk flags in the same run.
#[path = "gateway.rs"]
mod gateway;
#[path = "../tests/common/ports.rs"]
mod ports;
/// The tests' Redis launcher and client (the `redis` crate), shared so there is one of each.
#[path = "../tests/common/redis.rs"]
mod redis_server;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use seckill::auth::Auth;

const BIN: &str = env!("CARGO_BIN_EXE_seckill");
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const TOKEN_SECRET: &str = "bench-token-secret-0123456789";
const SKU: &str = "bench";
/// The stock of every sale the bench opens: more than it can sell.
const STOCK: i64 = 1_000_000_000;

fn main() {
    if let Err(error) = run() {
        eprintln!("redis_throughput: {error}");
        std::process::exit(1);
    }
}

/// One cluster-mode configuration to measure.
struct Setup {
    batch: &'static str,
    pipeline: &'static str,
    /// wrk's connections: 64 as the gateway gets, or a flash sale's thousand.
    connections: &'static str,
}

/// What `run` measures, first to last; the first is the default configuration.
const SETUPS: [Setup; 4] = [
    Setup {
        batch: "64",
        pipeline: "4",
        connections: "64",
    },
    Setup {
        batch: "64",
        pipeline: "1",
        connections: "64",
    },
    Setup {
        batch: "1",
        pipeline: "1",
        connections: "64",
    },
    Setup {
        batch: "64",
        pipeline: "4",
        connections: "1000",
    },
];

fn run() -> Result<(), String> {
    let mut measured = Vec::new();
    for setup in &SETUPS {
        measured.push((setup, run_server(setup, Shoppers::One)?));
    }
    let distinct = run_server(&SETUPS[0], Shoppers::Distinct)?;
    let redis = redis_server::RedisServer::try_start(&["--appendonly", "no"])?;
    let (gateway_rps, gateway_us) = gateway_benchmark(&redis)?;
    let openresty = {
        let redis = redis_server::RedisServer::try_start(&["--appendonly", "no"])?;
        let query = |args: &[&str]| redis.query::<String>(args).map_err(|e| e.to_string());
        gateway::run_gateway(
            query,
            redis.port,
            ports::pick_port(),
            &["-t1", "-c64", "-d8s"],
        )?
    };
    for (setup, m) in &measured {
        println!(
            "cluster mode, --redis-batch {:>2} --redis-pipeline {}, wrk -t1 -c{} -d8s: {:>8.0} purchases/s  ({}; {:.1} per script call; {:.2} us of Redis per purchase; {:.0} B of Redis per order over {:.0} orders; {:.2}x the OpenResty-style gateway at -c64)",
            setup.batch, setup.pipeline, setup.connections, m.rps, m.p99, m.per_call, m.redis_us, m.bytes_per_order, m.orders, m.rps / openresty.rps
        );
    }
    println!(
        "cluster mode defaults, a different shopper per order (seckill load --users 1000000 --rate 25000 --duration 6s --connections 64): {:.0} orders, {:.1} per script call, {:.2} us of Redis per purchase, {:.0} B of Redis per order",
        distinct.orders, distinct.per_call, distinct.redis_us, distinct.bytes_per_order
    );
    println!(
        "gateway script, redis-benchmark -c 64 -P 1 EVALSHA:    {gateway_rps:>8.0} purchases/s  (one purchase per call; {gateway_us:.2} us of Redis per purchase)"
    );
    println!(
        "OpenResty-style gateway (nginx + lua, one EVALSHA per purchase), wrk -t1 -c64 -d8s: {:>8.0} purchases/s  ({})",
        openresty.rps, openresty.p99
    );
    if let [(_, default), (_, serial), (_, unbatched), ..] = measured.as_slice() {
        println!(
            "batching bought {:.2}x over --redis-batch 1, pipelining {:.2}x over --redis-pipeline 1; seckill (defaults) reached {:.2}x the gateway script's Redis-side ceiling",
            serial.rps / unbatched.rps,
            default.rps / serial.rps,
            default.rps / gateway_rps
        );
    }
    cluster_buckets::run()
}

/// One cluster-mode measurement.
struct Measured {
    rps: f64,
    p99: String,
    per_call: f64,
    /// Redis CPU per purchase: `INFO commandstats` usec of EVALSHA over the purchases it ran.
    redis_us: f64,
    /// Orders made.
    orders: f64,
    /// Growth of Redis' `used_memory` per order made.
    bytes_per_order: f64,
}

/// What the shoppers of one measurement do.
#[derive(Clone, Copy)]
enum Shoppers {
    /// `wrk` with one shopper with a huge limit: every request makes an order.
    One,
    /// `seckill load` with a million shoppers and a limit of one: nearly every order is a
    /// different shopper's, as in a real flash sale.
    Distinct,
}

fn run_server(setup: &Setup, shoppers: Shoppers) -> Result<Measured, String> {
    let redis = redis_server::RedisServer::try_start(&["--appendonly", "no"])?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let shards = std::env::var("REDIS_BENCH_SHARDS").unwrap_or_else(|_| "2".into());
    let mut server = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--shards",
            &shards,
        ])
        .args(["--redis", &redis.url(), "--redis-batch", setup.batch])
        .args(["--redis-pipeline", setup.pipeline])
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SECKILL_TOKEN_SECRET", TOKEN_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {BIN}: {e}"))?;
    let result = match shoppers {
        Shoppers::One => measure(port, &redis, setup.connections),
        Shoppers::Distinct => measure_distinct(port, &redis),
    };
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    result
}

fn curl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("curl")
        .arg("-s")
        .args(args)
        .output()
        .map_err(|e| format!("curl: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until the node at `base` answers `/readyz` ready, at most `bound`.
fn wait_ready(base: &str, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    while !curl(&[&format!("{base}/readyz")])?.contains(r#""status":"ready""#) {
        if Instant::now() > deadline {
            return Err("server not ready".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits for the node at `base`, then opens the bench's sale on it with `per_user_limit`;
/// returns the time it was made.
fn open_sale(base: &str, per_user_limit: u32) -> Result<u64, String> {
    wait_ready(base, Duration::from_secs(20))?;
    let now = seckill::clock::now_ms();
    let sale = format!(
        r#"{{"name":"bench","stock":{STOCK},"starts_at":{},"ends_at":{},"per_user_limit":{per_user_limit}}}"#,
        now - 1000,
        now + 3_600_000
    );
    let created = curl(&[
        "-X",
        "PUT",
        &format!("{base}/v1/sales/{SKU}"),
        "-H",
        &format!("Authorization: Bearer {ADMIN_TOKEN}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        &sale,
    ])?;
    if !created.contains(r#""state":"open""#) {
        return Err(format!("could not create the sale: {created}"));
    }
    Ok(now)
}

/// A million shoppers, a limit of one each: Redis memory and CPU per order when nearly every
/// order is a different shopper's (each costs an entry of its own in `held`).
fn measure_distinct(port: u16, redis: &redis_server::RedisServer) -> Result<Measured, String> {
    let base = format!("http://127.0.0.1:{port}");
    open_sale(&base, 1)?;
    redis
        .query::<()>(&["CONFIG", "RESETSTAT"])
        .map_err(|e| e.to_string())?;
    let memory_before = used_memory(redis)?;
    let load = Command::new(BIN)
        .args(["load", "--url", &base, "--sku", SKU, "--users", "1000000"])
        .args(["--rate", "25000", "--duration", "6s", "--connections", "64"])
        .env("SECKILL_TOKEN_SECRET", TOKEN_SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("seckill load: {e}"))?;
    if !load.success() {
        return Err(format!("seckill load failed: {load}"));
    }
    let metrics = curl(&[&format!("{base}/metrics")])?;
    let made = sample(&metrics, "seckill_redis_batch_purchases_sum").unwrap_or(0.0);
    let calls = sample(&metrics, "seckill_redis_batch_purchases_count").unwrap_or(1.0);
    let (script_usec, _) = redis.evalsha_usec()?;
    // Orders made, from the stock taken (the orders hash holds pages, not one field per order).
    let remaining = redis
        .query::<i64>(&["GET", &format!("seckill:{{{SKU}}}:remaining")])
        .map_err(|e| e.to_string())?;
    let orders = (STOCK - remaining) as f64;
    let memory_after = used_memory(redis)?;
    Ok(Measured {
        rps: 0.0,
        p99: String::new(),
        per_call: made / calls.max(1.0),
        // Per order made, refusals (a shopper drawn twice) included in the cost.
        redis_us: script_usec / orders.max(1.0),
        orders,
        bytes_per_order: (memory_after - memory_before) / orders.max(1.0),
    })
}

fn measure(
    port: u16,
    redis: &redis_server::RedisServer,
    connections: &str,
) -> Result<Measured, String> {
    let base = format!("http://127.0.0.1:{port}");
    let now = open_sale(&base, 1_000_000)?;
    let token = Auth::new("", TOKEN_SECRET).mint("bench-shopper", now / 1000 + 3600);
    // Only the purchases' scripts count: the sale's creation and the warm-up syncs are reset.
    redis
        .query::<()>(&["CONFIG", "RESETSTAT"])
        .map_err(|e| e.to_string())?;
    let memory_before = used_memory(redis)?;
    let lua = std::env::temp_dir().join(format!("seckill-redis-bench-{}.lua", std::process::id()));
    std::fs::write(
        &lua,
        format!("wrk.method = \"POST\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"),
    )
    .map_err(|e| e.to_string())?;
    let wrk = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            "-d8s",
            "--latency",
            "-s",
        ])
        .arg(&lua)
        .arg(format!("{base}/v1/sales/{SKU}/purchase"))
        .output()
        .map_err(|e| format!("wrk (apt-get install wrk): {e}"))?;
    let _ = std::fs::remove_file(&lua);
    let wrk = String::from_utf8_lossy(&wrk.stdout).into_owned();
    let seckill_rps = field(&wrk, "Requests/sec:").ok_or("no wrk figure")?;
    if wrk.contains("Non-2xx") {
        return Err(format!("some purchases failed:\n{wrk}"));
    }
    let metrics = curl(&[&format!("{base}/metrics")])?;
    let batches = sample(&metrics, "seckill_redis_batch_purchases_sum").unwrap_or(0.0);
    let calls = sample(&metrics, "seckill_redis_batch_purchases_count").unwrap_or(1.0);
    let (script_usec, _) = redis.evalsha_usec()?;
    let memory_after = used_memory(redis)?;

    let p99 = wrk
        .lines()
        .find(|line| line.trim_start().starts_with("99%"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    Ok(Measured {
        rps: seckill_rps,
        p99,
        per_call: batches / calls.max(1.0),
        // Background syncs run EVALSHA too; they are counted against the purchases, so the
        // figure is an upper bound.
        redis_us: script_usec / batches.max(1.0),
        orders: batches,
        bytes_per_order: (memory_after - memory_before) / batches.max(1.0),
    })
}

/// `redis-benchmark -c 64 -P 1` calling the gateway's script, one purchase per call: what a
/// gateway with one round trip per purchase gets from Redis at best. Returns calls/s and the
/// Redis usec per call.
fn gateway_benchmark(redis: &redis_server::RedisServer) -> Result<(f64, f64), String> {
    let failed = |e: redis_server::RedisError| e.to_string();
    redis
        .query::<()>(&["SET", "gw:stock", "1000000000"])
        .map_err(failed)?;
    let sha: String = redis
        .query(&["SCRIPT", "LOAD", gateway::GATEWAY_SCRIPT])
        .map_err(failed)?;
    redis
        .query::<()>(&["CONFIG", "RESETSTAT"])
        .map_err(failed)?;
    let order =
        r#"{"order_id":"__rand_int__","user_id":"u-__rand_int__","quantity":1,"status":"pending"}"#;
    let args = [
        "EVALSHA",
        sha.trim(),
        "3",
        "gw:stock",
        "gw:held",
        "gw:orders",
        "u-__rand_int__",
        "1000000",
        "__rand_int__",
        order,
    ];
    let bench = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port.to_string(),
            "-c",
            "64",
            "-P",
            "1",
            "-n",
            "200000",
        ])
        .args(["-r", "100000000", "-q"])
        .args(args)
        .output()
        .map_err(|e| format!("redis-benchmark (apt-get install redis-tools): {e}"))?;
    let bench = String::from_utf8_lossy(&bench.stdout).into_owned();
    let rps = bench
        .split_whitespace()
        .zip(bench.split_whitespace().skip(1))
        .find(|(_, unit)| unit.starts_with("requests"))
        .and_then(|(value, _)| value.parse::<f64>().ok())
        .ok_or_else(|| format!("no redis-benchmark figure in {bench:?}"))?;
    let (usec, calls) = redis.evalsha_usec()?;
    Ok((rps, usec / calls.max(1.0)))
}

/// Redis' `used_memory` (`INFO memory`), in bytes.
fn used_memory(redis: &redis_server::RedisServer) -> Result<f64, String> {
    let info: String = redis
        .query(&["INFO", "memory"])
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| "no used_memory in INFO memory".to_owned())
}

fn field(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(name))
        .and_then(|rest| rest.trim().parse().ok())
}

fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.trim().parse().ok())
}
