//! The industry gateway seckill is measured against: nginx with lua-nginx-module (what OpenResty
//! is), one `EVALSHA` per purchase over a pooled connection (take a unit, count the user's units,
//! store the order in a hash; no expiry index, no stream, no idempotency), driven by the same
//! `wrk` flags as seckill in the same run. Included with `#[path]` by the Redis benches.
//!
//! Needs `nginx-light`, `libnginx-mod-http-lua` and `wrk` from Debian. Listens on loopback only
//! and stops its nginx by the PID in its own pid file.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The gateway's script: `KEYS = [stock, per-user counts, orders]`, `ARGV = [user, limit,
/// order_id, order]`. Returns 1 (bought), 0 (sold out) or -1 (over the limit).
pub const GATEWAY_SCRIPT: &str = r#"
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
if stock <= 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) > tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
  return -1
end
redis.call('DECR', KEYS[1])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
return 1
"#;

const HANDLER: &str = include_str!("gateway/gateway.lua");
const CONFIG: &str = include_str!("gateway/nginx.conf.in");

/// What `wrk` measured against the gateway.
pub struct GatewayRun {
    /// Purchases per second (every request buys: the stock and the limit are huge).
    pub rps: f64,
    /// wrk's p99 line.
    pub p99: String,
}

/// A running gateway: nginx's workers, stopped on drop.
struct Nginx {
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("nginx.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Loads the script into the Redis at `redis_port` (through `query`, the bench's client), starts
/// the gateway on `port` with one worker per core, and runs `wrk wrk_args` at it as one shopper
/// (`X-User`), so it is compared with seckill on the same terms.
pub fn run_gateway(
    query: impl Fn(&[&str]) -> Result<String, String>,
    redis_port: u16,
    port: u16,
    wrk_args: &[&str],
) -> Result<GatewayRun, String> {
    query(&["SET", "gw:stock", "1000000000"])?;
    let sha = query(&["SCRIPT", "LOAD", GATEWAY_SCRIPT])?;
    let dir = std::env::temp_dir().join(format!("seckill-gateway-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let nginx = Nginx { dir: dir.clone() };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let config = CONFIG
        .replace("@DIR@", &dir.display().to_string())
        .replace("@PORT@", &port.to_string())
        .replace("@REDIS_PORT@", &redis_port.to_string())
        .replace("@SHA@", sha.trim())
        .replace("@WORKERS@", &workers.to_string());
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
    };
    write("nginx.conf", &config)?;
    write("gateway.lua", HANDLER)?;
    write(
        "wrk.lua",
        "wrk.method = \"POST\"\nwrk.headers[\"X-User\"] = \"bench-shopper\"\n",
    )?;
    let started = Command::new("nginx")
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir)
        .status()
        .map_err(|e| format!("nginx (apt-get install nginx-light libnginx-mod-http-lua): {e}"))?;
    if !started.success() {
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
        return Err(format!("nginx did not start: {log}"));
    }
    let url = format!("http://127.0.0.1:{port}/buy");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                &url,
            ])
            .output()
            .map_err(|e| format!("curl: {e}"))?;
        if probe.stdout == b"201" {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(format!("the gateway never sold: {log}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let wrk = Command::new("wrk")
        .args(wrk_args)
        .arg("--latency")
        .arg("-s")
        .arg(dir.join("wrk.lua"))
        .arg(&url)
        .output()
        .map_err(|e| format!("wrk (apt-get install wrk): {e}"))?;
    let wrk = String::from_utf8_lossy(&wrk.stdout).into_owned();
    if wrk.contains("Non-2xx") {
        return Err(format!("some gateway purchases failed:\n{wrk}"));
    }
    let rps = wrk
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no wrk figure in {wrk:?}"))?;
    let p99 = wrk
        .lines()
        .find(|line| line.trim_start().starts_with("99%"))
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    drop(nginx);
    Ok(GatewayRun { rps, p99 })
}
