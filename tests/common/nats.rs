//! The tests' `nats-server` with JetStream: on its own loopback port and store directory,
//! killed by PID and restarted on the same port and store (so what JetStream stored survives),
//! its log printed when a test fails. The feed is read back with the real binary's
//! `seckill events tail`, so the tests need no NATS client of their own.
#![allow(dead_code)]

use std::fs::File;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long `nats-server` may take to accept connections after it was spawned: a "gave up"
/// bound, generous for a loaded machine.
pub const NATS_BOUND: Duration = Duration::from_secs(30);

/// One `nats-server -js`.
pub struct NatsServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory: the JetStream store and the log.
    pub dir: PathBuf,
}

fn fresh_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("nats-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

impl NatsServer {
    /// Starts a server and waits until it accepts connections. Panics if it cannot (with its
    /// log), including when `nats-server` is not installed: a missing broker is a failed test,
    /// never a silent pass.
    #[track_caller]
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            child: None,
            port: super::ports::pick_port(),
            dir: fresh_dir(),
        };
        server.spawn();
        server
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("nats.log")
    }

    /// What the server logged so far (across restarts).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    #[track_caller]
    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("nats log: {e}"));
        let log2 = log.try_clone().unwrap_or_else(|e| panic!("nats log: {e}"));
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("nats-server must be installed (apt-get install nats-server): {e}")
            });
        self.child = Some(child);
        let started = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "nats-server on port {} exited with {status}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            // Ready once it listens and has logged that JetStream is up.
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.log().matches("Server is ready").count() > self.restarts()
            {
                return;
            }
            if started.elapsed() >= NATS_BOUND {
                panic!(
                    "nats-server on port {} not ready within {NATS_BOUND:?}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Times this server was started before the current spawn.
    fn restarts(&self) -> usize {
        self.log()
            .matches("Starting nats-server")
            .count()
            .saturating_sub(1)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and store. Panics if it does not come up.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- nats-server :{} log ---\n{}", self.port, self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Every message stored in `stream` of the broker at `url` (with `seckill events tail
/// --from-start`), parsed, in stream order. Reading stops after `idle` without a message.
#[track_caller]
pub fn read_feed(url: &str, stream: &str, idle: Duration) -> Vec<serde_json::Value> {
    let output = Command::new(super::BIN)
        .args([
            "events",
            "tail",
            "--from-start",
            "--events",
            url,
            "--stream",
            stream,
        ])
        .args(["--idle-exit-ms", &idle.as_millis().to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run seckill events tail: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "seckill events tail failed ({}): {}\nstdout: {stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("feed line {line:?}: {e}"))
        })
        .collect()
}
