//! `cargo bench --bench redis_throughput`: purchases per second in cluster mode, against what
//! one Redis round trip per purchase allows, measured in the same run on the same Redis.
//!
//! 1. Starts a `redis-server` and `seckill serve --redis` on it, twice: with the default batching
//!    (`--redis-batch 64`) and with batching off (`--redis-batch 1`).
//! 2. Each time runs `wrk -t1 -c64 -d8s` at the purchase endpoint (one shopper with a huge limit,
//!    so every request creates an order).
//! 3. Runs `redis-benchmark -c 50 -P 1` with `EVALSHA` of seckill's own purchase script, one
//!    purchase per call: what Redis alone does with one round trip per purchase.
//!
//! The ratios show what coalescing concurrent purchases into one script call buys. Needs `wrk` and
//! `redis-benchmark` (`apt-get install wrk redis-tools`). Loopback only; stops what it starts.

#[path = "../tests/common/ports.rs"]
mod ports;
/// The tests' Redis launcher and client (the `redis` crate), shared so there is one of each.
#[path = "../tests/common/redis.rs"]
mod redis_server;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use seckill::auth::Auth;
use seckill::store::redis::keys::SkuKeys;
use seckill::store::redis::scripts::PURCHASE;

const BIN: &str = env!("CARGO_BIN_EXE_seckill");
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const TOKEN_SECRET: &str = "bench-token-secret-0123456789";
const SKU: &str = "bench";

fn main() {
    if let Err(error) = run() {
        eprintln!("redis_throughput: {error}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let batched = run_server("64")?;
    let unbatched = run_server("1")?;
    let redis = redis_server::RedisServer::try_start(&["--appendonly", "no"])?;
    let script_rps = redis_benchmark(&redis)?;
    println!(
        "cluster mode, --redis-batch 64, wrk -t1 -c64 -d8s: {:>8.0} purchases/s  ({}; {:.1} per script call)",
        batched.rps, batched.p99, batched.per_call
    );
    println!(
        "cluster mode, --redis-batch 1,  wrk -t1 -c64 -d8s: {:>8.0} purchases/s  ({}; {:.1} per script call)",
        unbatched.rps, unbatched.p99, unbatched.per_call
    );
    println!("redis-benchmark -c 50 -P 1 EVALSHA purchase script: {script_rps:>8.0} calls/s (one purchase each)");
    println!(
        "batching bought {:.2}x over --redis-batch 1; {:.2}x of one round trip per purchase",
        batched.rps / unbatched.rps,
        batched.rps / script_rps
    );
    Ok(())
}

/// One cluster-mode measurement.
struct Measured {
    rps: f64,
    p99: String,
    per_call: f64,
}

fn run_server(batch: &str) -> Result<Measured, String> {
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
        .args(["--redis", &redis.url(), "--redis-batch", batch])
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SECKILL_TOKEN_SECRET", TOKEN_SECRET)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn {BIN}: {e}"))?;
    let result = measure(port);
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

fn measure(port: u16) -> Result<Measured, String> {
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !curl(&[&format!("{base}/readyz")])?.contains(r#""status":"ready""#) {
        if Instant::now() > deadline {
            return Err("server not ready".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let now = seckill::clock::now_ms();
    let sale = format!(
        r#"{{"name":"bench","stock":1000000000,"starts_at":{},"ends_at":{},"per_user_limit":1000000}}"#,
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
    let token = Auth::new("", TOKEN_SECRET).mint("bench-shopper", now / 1000 + 3600);
    let lua = std::env::temp_dir().join(format!("seckill-redis-bench-{}.lua", std::process::id()));
    std::fs::write(
        &lua,
        format!("wrk.method = \"POST\"\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n"),
    )
    .map_err(|e| e.to_string())?;
    let wrk = Command::new("wrk")
        .args(["-t1", "-c64", "-d8s", "--latency", "-s"])
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

    let p99 = wrk
        .lines()
        .find(|line| line.trim_start().starts_with("99%"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    Ok(Measured {
        rps: seckill_rps,
        p99,
        per_call: batches / calls.max(1.0),
    })
}

/// `redis-benchmark` calling seckill's purchase script, one purchase per call, on a sale set up
/// the way seckill sets it up.
fn redis_benchmark(redis: &redis_server::RedisServer) -> Result<f64, String> {
    let keys = SkuKeys::new("seckill", SKU).0;
    let now = seckill::clock::now_ms();
    let mut sale = vec!["HSET".to_string(), keys[0].clone()];
    for (field, value) in [
        ("name", "bench".to_string()),
        ("stock", "1000000000".into()),
        ("starts_at", (now - 1000).to_string()),
        ("ends_at", (now + 3_600_000).to_string()),
        ("per_user_limit", "1000000".into()),
        ("payment_timeout_ms", "900000".into()),
        ("rate_limit_per_sec", "0".into()),
    ] {
        sale.push(field.into());
        sale.push(value);
    }
    let sale: Vec<&str> = sale.iter().map(String::as_str).collect();
    let failed = |e: redis_server::RedisError| e.to_string();
    redis.query::<()>(&sale).map_err(failed)?;
    redis
        .query::<()>(&["SET", &keys[1], "1000000000"])
        .map_err(failed)?;
    let sha: String = redis.query(&["SCRIPT", "LOAD", PURCHASE]).map_err(failed)?;
    let mut args: Vec<String> = vec!["EVALSHA".into(), sha.trim().into(), "10".into()];
    args.extend(keys);
    args.extend(
        [
            "1000000",
            "1",
            "__rand_int__.bench",
            "rb-__rand_int__",
            "1",
            "",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let bench = Command::new("redis-benchmark")
        .args([
            "-p",
            &redis.port.to_string(),
            "-c",
            "50",
            "-P",
            "1",
            "-n",
            "200000",
        ])
        .args(["-r", "100000000", "-q"])
        .args(&args)
        .output()
        .map_err(|e| format!("redis-benchmark (apt-get install redis-tools): {e}"))?;
    let bench = String::from_utf8_lossy(&bench.stdout).into_owned();
    bench
        .split_whitespace()
        .zip(bench.split_whitespace().skip(1))
        .find(|(_, unit)| unit.starts_with("requests"))
        .and_then(|(value, _)| value.parse::<f64>().ok())
        .ok_or_else(|| format!("no redis-benchmark figure in {bench:?}"))
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
