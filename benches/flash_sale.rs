//! `cargo bench --bench flash_sale`: the flash-sale scenario end to end, once per store mode.
//!
//! For each mode it starts the real `seckill` binary on an ephemeral loopback port with a fresh
//! data directory, creates a hot SKU (10,000 units, one per shopper) that opens about 3 seconds
//! into the run, and drives it with the open-loop generator (`seckill::load`) in-process:
//! 100,000 shoppers, a fixed arrival rate, through the not-yet-open, sell-out and sold-out
//! phases. It prints each run's report (latency per outcome, corrected for coordinated
//! omission), writes it to `target/flash_sale-<mode>.json`, and ends with a table comparing the
//! modes.
//!
//! Checks (the process exits 1 if any fails): orders created == stock, according to the report
//! and to `GET /v1/sales/{sku}` (remaining == 0), and no shopper holds more than the limit.
//!
//! Settings (environment):
//! - `FLASH_SALE_MODES`: comma-separated modes to run, default `sync,none,redis`.
//! - `FLASH_SALE_RATE`: arrivals per second, default 20000.
//! - `FLASH_SALE_SECS`: duration of the arrivals, default 8.
//! - `FLASH_SALE_CONNECTIONS`: connections, default 64.
//! - `FLASH_SALE_THREADS`: generator executors, default 1.
//! - `FLASH_SALE_SHARDS`: server shards, default 2.
//!
//! A mode is only a name and extra `serve` arguments ([`MODES`]); a new store is a new row.

#[path = "../tests/common/ports.rs"]
mod ports;
/// The tests' Redis launcher and client (the `redis` crate), shared so there is one of each.
#[path = "../tests/common/redis.rs"]
mod redis_server;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use seckill::load::{run_with_progress, LoadOptions, Report};

const BIN: &str = env!("CARGO_BIN_EXE_seckill");
const ADMIN_TOKEN: &str = "flash-sale-bench-admin-token";
const TOKEN_SECRET: &str = "flash-sale-bench-token-secret";

/// The scenario's fixed shape.
const STOCK: u64 = 10_000;
const PER_USER_LIMIT: u64 = 1;
const SHOPPERS: u64 = 100_000;
/// How long after the load starts the sale opens.
const OPENS_AFTER: Duration = Duration::from_secs(3);

/// Store modes: name and the extra `seckill serve` arguments that select it.
/// `redis` also starts its own `redis-server` and adds `--redis URL`.
const MODES: &[(&str, &[&str])] = &[
    ("sync", &["--durability", "sync"]),
    ("none", &["--durability", "none"]),
    ("redis", &[]),
];

/// Settings from the environment.
struct Settings {
    modes: Vec<(&'static str, &'static [&'static str])>,
    rate: f64,
    secs: f64,
    connections: usize,
    threads: usize,
    shards: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a valid value")),
        Err(_) => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Self, String> {
        let wanted = std::env::var("FLASH_SALE_MODES").unwrap_or_else(|_| "sync,none,redis".into());
        let mut modes = Vec::new();
        for name in wanted.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let mode = MODES
                .iter()
                .find(|(known, _)| *known == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = MODES.iter().map(|(n, _)| *n).collect();
                    format!(
                        "FLASH_SALE_MODES: unknown mode {name:?}; known: {}",
                        known.join(", ")
                    )
                })?;
            modes.push(*mode);
        }
        if modes.is_empty() {
            return Err("FLASH_SALE_MODES names no mode".into());
        }
        let secs: f64 = env_or("FLASH_SALE_SECS", 8.0)?;
        if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
            return Err(format!("FLASH_SALE_SECS={secs} must be in (0, 3600]"));
        }
        Ok(Self {
            modes,
            rate: env_or("FLASH_SALE_RATE", 20_000.0)?,
            secs,
            connections: env_or("FLASH_SALE_CONNECTIONS", 64)?,
            threads: env_or("FLASH_SALE_THREADS", 1)?,
            shards: env_or("FLASH_SALE_SHARDS", 2)?,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A running `seckill serve`; killed (and its data removed) when dropped.
struct ServerProcess {
    child: Child,
    port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
}

impl ServerProcess {
    fn start(mode: &str, extra_args: &[&str], shards: usize) -> Result<Self, String> {
        let mut last = String::new();
        for attempt in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("pick a port: {e}"))?
                .port();
            let base = std::env::temp_dir().join(format!(
                "seckill-flash-sale-{}-{mode}-{attempt}",
                std::process::id()
            ));
            let data_dir = base.join("data");
            let _ = std::fs::remove_dir_all(&base);
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| format!("create {}: {e}", data_dir.display()))?;
            let log_path = base.join("server.log");
            let log = File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
            let log2 = log.try_clone().map_err(|e| format!("clone log: {e}"))?;
            let mut cmd = Command::new(BIN);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("SECKILL_") {
                    cmd.env_remove(&key);
                }
            }
            let child = cmd
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--shards")
                .arg(shards.to_string())
                .arg("--data-dir")
                .arg(&data_dir)
                .args(extra_args)
                .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
                .env("SECKILL_TOKEN_SECRET", TOKEN_SECRET)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| format!("spawn {BIN}: {e}"))?;
            let mut server = Self {
                child,
                port,
                data_dir: base,
                log_path,
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(error) if error.to_lowercase().contains("address already in use") => {
                    last = error;
                }
                Err(error) => return Err(error),
            }
        }
        Err(format!("server could not bind a port 3 times: {last}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("server exited with {status}:\n{}", self.log()));
            }
            if let Ok((200, _)) = http(self.port, "GET", "/readyz", None) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("server not ready after 20 s:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then wait up to 30 s for the exit.
    fn stop(&mut self) -> Result<ExitStatus, String> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let pid = i32::try_from(self.child.id()).map_err(|e| e.to_string())?;
        kill(Pid::from_raw(pid), Signal::SIGTERM).map_err(|e| format!("SIGTERM: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => return Err("server did not exit within 30 s of SIGTERM".into()),
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// One request on its own connection; returns the status and body.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Result<(u16, Vec<u8>), String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(&raw) {
        Ok(httparse::Status::Complete(head)) => {
            Ok((response.code.unwrap_or(0), raw[head..].to_vec()))
        }
        _ => Err(format!(
            "malformed response: {}",
            String::from_utf8_lossy(&raw)
        )),
    }
}

/// The sale's `remaining` field.
fn remaining(port: u16, sku: &str) -> Result<u64, String> {
    let (status, body) = http(port, "GET", &format!("/v1/sales/{sku}"), None)?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if status != 200 {
        return Err(format!("GET /v1/sales/{sku}: {status} {text}"));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("sale JSON ({e}): {text}"))?;
    value["remaining"]
        .as_u64()
        .ok_or_else(|| format!("no remaining in {text}"))
}

/// What one mode produced.
struct ModeResult {
    mode: &'static str,
    report: Report,
    remaining: u64,
    failures: Vec<String>,
}

fn run_mode(
    mode: &'static str,
    extra_args: &[&str],
    settings: &Settings,
) -> Result<ModeResult, String> {
    // Cluster mode runs on its own Redis, dropped (killed) after the server.
    let redis = if mode == "redis" {
        Some(redis_server::RedisServer::try_start(&[
            "--appendonly",
            "no",
        ])?)
    } else {
        None
    };
    let url = redis.as_ref().map(redis_server::RedisServer::url);
    let mut args: Vec<&str> = extra_args.to_vec();
    if let Some(url) = &url {
        args.extend(["--redis", url.as_str()]);
    }
    let mut server = ServerProcess::start(mode, &args, settings.shards)?;
    let sku = format!("flash-{mode}");
    let opens_at = now_ms() + OPENS_AFTER.as_millis() as u64;
    let spec = serde_json::json!({
        "name": "Flash sale bench",
        "stock": STOCK,
        "starts_at": opens_at,
        "ends_at": opens_at + 3_600_000,
        "per_user_limit": PER_USER_LIMIT,
    });
    let (status, body) = http(
        server.port,
        "PUT",
        &format!("/v1/sales/{sku}"),
        Some(&spec.to_string()),
    )?;
    if status != 201 {
        return Err(format!(
            "create sale: {status} {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let options = LoadOptions {
        urls: vec![format!("http://127.0.0.1:{}", server.port)],
        rate: settings.rate,
        duration: Duration::from_secs_f64(settings.secs),
        connections: settings.connections,
        users: SHOPPERS,
        user_prefix: "shopper-".into(),
        sku: sku.clone(),
        token_secret: TOKEN_SECRET.into(),
        quantity: 1,
        threads: settings.threads,
        timeout: Duration::from_secs(5),
        allow_remote: false,
    };
    eprintln!(
        "== {mode}: {} req/s for {}s, {} connections, sale opens after {}s",
        settings.rate,
        settings.secs,
        settings.connections,
        OPENS_AFTER.as_secs()
    );
    let report = run_with_progress(&options, |progress| eprintln!("  {mode} {progress}"))
        .map_err(|e| format!("load: {e}"))?;
    let remaining = remaining(server.port, &sku)?;
    let stopped = server.stop()?;

    let mut failures = Vec::new();
    let created = report.outcome_count("created");
    // A 201 that arrived after the client's deadline counts as an error, not as created; only
    // more orders than stock, or fewer than the errors can explain, are failures.
    if created > STOCK || created + report.errors < STOCK {
        failures.push(format!(
            "report: {created} orders created ({} requests unanswered), stock is {STOCK}",
            report.errors
        ));
    }
    if remaining != 0 {
        failures.push(format!(
            "GET /v1/sales/{sku}: remaining {remaining}, expected 0"
        ));
    }
    if report.max_orders_per_user > PER_USER_LIMIT {
        failures.push(format!(
            "a shopper holds {} orders, the limit is {PER_USER_LIMIT}",
            report.max_orders_per_user
        ));
    }
    if !stopped.success() {
        failures.push(format!("server exited with {stopped} after SIGTERM"));
    }
    Ok(ModeResult {
        mode,
        report,
        remaining,
        failures,
    })
}

fn target_dir() -> PathBuf {
    // BIN is <target>/<profile>/seckill.
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn print_table(results: &[ModeResult]) {
    println!();
    println!("flash_sale summary (latency in ms from the scheduled time; corrected for coordinated omission)");
    println!(
        "{:<6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9}  checks",
        "mode", "rate", "sent", "not_sent", "created", "sold_out", "limit", "early", "resp/s", "p50", "p99", "p99.9", "max", "created99"
    );
    for result in results {
        let r = &result.report;
        let others = ["created", "sold_out", "limit_exceeded", "not_started"]
            .iter()
            .fold(r.sent, |left, name| {
                left.saturating_sub(r.outcome_count(name))
            });
        let created_p99 = r.outcomes.get("created").map_or(0, |l| l.p99_us);
        println!(
            "{:<6} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10.0} {:>8} {:>8} {:>8} {:>8} {:>9}  {}",
            result.mode,
            r.rate,
            r.sent,
            r.not_sent,
            r.outcome_count("created"),
            r.outcome_count("sold_out"),
            r.outcome_count("limit_exceeded"),
            r.outcome_count("not_started"),
            r.throughput,
            ms(r.latency.p50_us),
            ms(r.latency.p99_us),
            ms(r.latency.p999_us),
            ms(r.latency.max_us),
            ms(created_p99),
            if result.failures.is_empty() {
                format!("ok (remaining {})", result.remaining)
            } else {
                format!("FAILED: {}", result.failures.join("; "))
            }
        );
        if others > 0 {
            println!("       other outcomes: {others} (see the report above)");
        }
    }
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; this harness takes no arguments.
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("flash_sale: {error}");
            return ExitCode::from(2);
        }
    };
    let mut results = Vec::new();
    let mut failed = false;
    for &(mode, extra_args) in &settings.modes {
        match run_mode(mode, extra_args, &settings) {
            Ok(result) => {
                println!("\n=== mode {mode} (serve {})", extra_args.join(" "));
                print!("{}", result.report);
                let path = target_dir().join(format!("flash_sale-{mode}.json"));
                match result.report.to_json() {
                    Ok(json) => match std::fs::write(&path, json + "\n") {
                        Ok(()) => println!("report written to {}", path.display()),
                        Err(e) => eprintln!("flash_sale: write {}: {e}", path.display()),
                    },
                    Err(e) => eprintln!("flash_sale: encode the report: {e}"),
                }
                for failure in &result.failures {
                    println!("CHECK FAILED ({mode}): {failure}");
                }
                failed |= !result.failures.is_empty();
                results.push(result);
            }
            Err(error) => {
                eprintln!("flash_sale: mode {mode}: {error}");
                failed = true;
            }
        }
    }
    print_table(&results);
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
