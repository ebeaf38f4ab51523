//! A Redis Sentinel for failover tests: `redis-server CONF --sentinel` on its own loopback port
//! and temp directory, watching one master with quorum 1, stopped by PID, its log printed when a
//! test fails.
#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::redis::{query, REDIS_BOUND};

/// The master name every test Sentinel watches.
pub const MASTER_NAME: &str = "seckill-test";

/// How the Sentinel judges and fails over the master.
#[derive(Debug, Clone, Copy)]
pub struct SentinelTimings {
    /// `down-after-milliseconds`: silence before the master counts as down.
    pub down_after_ms: u64,
    /// `failover-timeout`. Also how long a Sentinel waits before pointing a replica that
    /// replicates from another address (a test's proxy) at the master's real address.
    pub failover_timeout_ms: u64,
}

impl Default for SentinelTimings {
    fn default() -> Self {
        Self {
            down_after_ms: 1000,
            failover_timeout_ms: 3000,
        }
    }
}

/// One running Sentinel.
pub struct Sentinel {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl Sentinel {
    /// Starts a Sentinel watching the master at `127.0.0.1:master_port` as [`MASTER_NAME`],
    /// quorum 1, and waits until it answers PING. An error if `redis-server` cannot run Sentinel
    /// mode here (the caller skips).
    pub fn start(master_port: u16, timings: SentinelTimings) -> Result<Sentinel, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut last = String::new();
        for _ in 0..3 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("sentinel-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| format!("sentinel dir: {e}"))?;
            let port = super::ports::pick_port();
            let conf = dir.join("sentinel.conf");
            let text = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir {}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} {}\n\
                 sentinel failover-timeout {MASTER_NAME} {}\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir.display(),
                timings.down_after_ms,
                timings.failover_timeout_ms,
            );
            std::fs::write(&conf, text).map_err(|e| format!("sentinel conf: {e}"))?;
            let log = File::create(dir.join("sentinel.log")).map_err(|e| e.to_string())?;
            let log2 = log.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(|e| format!("redis-server --sentinel cannot start: {e}"))?;
            let mut sentinel = Sentinel {
                child: Some(child),
                port,
                dir,
            };
            let started = Instant::now();
            loop {
                if let Some(Ok(Some(status))) = sentinel.child.as_mut().map(Child::try_wait) {
                    last = format!("sentinel exited with {status}: {}", sentinel.log());
                    break;
                }
                if query::<String>(port, &["PING"]).is_ok_and(|pong| pong == "PONG") {
                    return Ok(sentinel);
                }
                if started.elapsed() > REDIS_BOUND {
                    return Err(format!("sentinel did not answer: {}", sentinel.log()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if !last.to_lowercase().contains("address already in use") {
                return Err(last);
            }
        }
        Err(last)
    }

    /// `redis-sentinel://127.0.0.1:PORT/seckill-test`
    pub fn url(&self) -> String {
        format!("redis-sentinel://127.0.0.1:{}/{MASTER_NAME}", self.port)
    }

    /// The master's port as the Sentinel currently names it.
    pub fn master_port(&self) -> Option<u16> {
        let addr: Vec<String> = query(
            self.port,
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        )
        .ok()?;
        addr.get(1)?.parse().ok()
    }

    /// How many replicas the Sentinel knows and considers reachable.
    pub fn healthy_replicas(&self) -> usize {
        let replicas: Vec<Vec<String>> =
            query(self.port, &["SENTINEL", "replicas", MASTER_NAME]).unwrap_or_default();
        replicas
            .iter()
            .filter(|fields| {
                let flags = fields
                    .iter()
                    .position(|field| field == "flags")
                    .and_then(|i| fields.get(i + 1));
                flags.is_some_and(|flags| flags == "slave")
            })
            .count()
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sentinel.log"))
            .unwrap_or_else(|e| format!("<no log: {e}>"))
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- sentinel output (port {}) ----\n{}\n---- end ----",
                self.port,
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
