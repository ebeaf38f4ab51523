//! Shared black-box harness: spawns the real `seckill` binary and talks raw
//! HTTP/1.1 to it over loopback with blocking std sockets.
#![allow(dead_code)]

pub mod edge;
pub mod fair;
pub mod nats;
pub mod ports;
pub mod process;
pub mod prometheus;
pub mod proxy;
pub mod redis;
pub mod redis_cluster;
pub mod sentinel;
pub mod skip;

#[allow(unused_imports)] // not every test binary skips
pub use skip::{skip, skip_unless_required};

/// Never the same port twice per test binary, so two SO_REUSEPORT servers of one run can never
/// share a port.
pub use ports::pick_port;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ADMIN_TOKEN: &str = "it-admin-token-5f1c2b7e0d";
pub const SECRET: &str = "it-token-secret-9a8b7c6d5e4f";
/// The payment service's bearer token every harness server accepts.
pub const PAYMENT_TOKEN: &str = "it-payment-token-3e5d7c9b1a";
/// The payment webhook's HMAC secret every harness server checks signatures with.
pub const WEBHOOK_SECRET: &str = "it-webhook-secret-2c4e6a8b0d";
pub const BIN: &str = env!("CARGO_BIN_EXE_seckill");
/// Socket read/write timeout: generous, only there so a broken server makes a
/// test fail instead of hanging forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Only a "gave up" bound: a debug build beside `stress-ng --cpu 2` and a compiler can take many
/// seconds to start.
const READY_DEADLINE: Duration = Duration::from_secs(60);

/// Whether this test binary runs its servers in cluster mode: binaries named `*_redis` do.
pub fn redis_mode() -> bool {
    env!("CARGO_CRATE_NAME").ends_with("_redis")
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_millis() as i64
}

pub fn now_secs() -> i64 {
    now_ms() / 1000
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

/// base64url_nopad(HMAC-SHA256(secret, payload))
pub fn sign(secret: &str, payload: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(payload.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Token for `user` expiring at `expires_secs` (unix seconds) signed with `secret`.
pub fn token_with(user: &str, expires_secs: i64, secret: &str) -> String {
    let payload = format!("{user}.{expires_secs}");
    let sig = sign(secret, &payload);
    format!("{payload}.{sig}")
}

/// A valid shopper token for `user`, valid for `ttl_secs` from now.
pub fn mint_token(user: &str, ttl_secs: i64) -> String {
    token_with(user, now_secs() + ttl_secs, SECRET)
}

/// A valid shopper token for `user`, valid for an hour.
pub fn tok(user: &str) -> String {
    mint_token(user, 3600)
}

// ---------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------

pub struct Server {
    child: Child,
    pub port: u16,
    pub shards: usize,
    log_path: PathBuf,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// The Redis this server keeps its state in, in Redis mode (stopped with the server).
    pub redis: Option<redis::RedisServer>,
    /// Whether Drop removes `data_dir` (false when a test restarts servers on it).
    owns_data_dir: bool,
}

/// A fresh, empty data directory under the target's temp dir.
pub fn fresh_data_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("seckill-data-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create data dir");
    dir
}

/// A [`fresh_data_dir`] that is removed when dropped, also when the test panics, so a failed
/// test leaves nothing behind under the target's temp dir. Drop it after every process using it.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// A fresh, empty directory under the target's temp dir.
    pub fn new() -> ScratchDir {
        ScratchDir {
            path: fresh_data_dir(),
        }
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Default for ScratchDir {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::path::Path> for ScratchDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for ScratchDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

enum StartError {
    AddrInUse(String),
    Other(String),
}

impl Server {
    /// Spawn `seckill serve --listen 127.0.0.1:PORT --shards N <extra_args>`
    /// and wait until `GET /readyz` answers 200.
    pub fn start(shards: usize, extra_args: &[&str]) -> Server {
        let mut server = Self::start_in(&fresh_data_dir(), shards, extra_args);
        server.owns_data_dir = true;
        server
    }

    /// Like [`Server::start`], on an existing data directory that outlives the server.
    pub fn start_in(data_dir: &std::path::Path, shards: usize, extra_args: &[&str]) -> Server {
        let mut last = String::new();
        for attempt in 0..3 {
            let port = pick_port();
            let log_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
                "seckill-it-{}-{}-{}.log",
                std::process::id(),
                port,
                attempt
            ));
            let log = File::create(&log_path).expect("create server log file");
            let log2 = log.try_clone().expect("clone log file");
            // Test binaries named `*_redis` run every server on its own Redis (cluster mode).
            // A test that names its own Redis (several nodes on one) gets no private one.
            let own_redis = extra_args.contains(&"--redis");
            let redis = (redis_mode() && !own_redis).then(|| redis::RedisServer::start(&[]));
            // Hermetic: no SECKILL_*, RUST_LOG or NOTIFY_SOCKET leaks in from the environment.
            let mut cmd = process::seckill_cmd();
            cmd.arg("serve");
            if let Some(redis) = &redis {
                cmd.arg("--redis").arg(redis.url());
            }
            let child = cmd
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--shards")
                .arg(shards.to_string())
                .arg("--data-dir")
                .arg(data_dir)
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .unwrap_or_else(|e| panic!("failed to spawn {BIN}: {e}"));
            let mut server = Server {
                child,
                port,
                shards,
                log_path,
                data_dir: data_dir.to_path_buf(),
                owns_data_dir: false,
                redis,
            };
            match server.wait_ready() {
                Ok(()) => return server,
                Err(StartError::AddrInUse(msg)) => {
                    last = msg;
                    continue; // port raced with another socket; Drop kills the child
                }
                Err(StartError::Other(msg)) => {
                    panic!("{msg}");
                }
            }
        }
        panic!("server failed to start 3 times with address-in-use: {last}");
    }

    fn wait_ready(&mut self) -> Result<(), StartError> {
        let start = Instant::now();
        let mut last_seen = String::from("no response yet");
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let log = self.log();
                let msg = format!(
                    "seckill serve exited during startup with {status} (args: --shards {}); output:\n{log}",
                    self.shards
                );
                let lower = log.to_lowercase();
                if lower.contains("address already in use") || lower.contains("addrinuse") {
                    return Err(StartError::AddrInUse(msg));
                }
                return Err(StartError::Other(msg));
            }
            if start.elapsed() > READY_DEADLINE {
                return Err(StartError::Other(format!(
                    "seckill serve not ready after {:?} (last /readyz attempt: {last_seen}); output:\n{}",
                    READY_DEADLINE,
                    self.log()
                )));
            }
            match self.try_readyz() {
                Ok(resp) if resp.status == 200 => return Ok(()),
                Ok(resp) => last_seen = format!("status {}", resp.status),
                Err(e) => last_seen = format!("error {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_readyz(&self) -> io::Result<Response> {
        let stream = TcpStream::connect_timeout(
            &format!("127.0.0.1:{}", self.port).parse().expect("addr"),
            Duration::from_secs(2),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        let mut c = Client::from_stream(stream, self.port);
        c.try_request("GET", "/readyz", &[], None)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Everything the server printed so far (stdout + stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("<log unreadable: {e}>"))
    }

    /// Is the server process still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Crash the server: SIGKILL, then reap it.
    pub fn kill9(&mut self) -> std::process::ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait for killed server")
    }

    /// Graceful stop: SIGTERM, then wait (up to [`process::EXIT_BOUND`]) for the exit; returns
    /// its status.
    /// Panics with the server output if it does not exit in time.
    #[track_caller]
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            return status;
        }
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("send SIGTERM");
        let deadline = Instant::now() + process::EXIT_BOUND;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "server did not exit within {:?} of SIGTERM; output:\n{}",
                    process::EXIT_BOUND,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Plain TCP connection with timeouts set.
    pub fn tcp_connect(&self) -> TcpStream {
        connect_with_timeouts(self.port).unwrap_or_else(|e| {
            panic!(
                "connect to {}: {e}; server output:\n{}",
                self.addr(),
                self.log()
            )
        })
    }

    /// A keep-alive HTTP client on a new connection.
    pub fn client(&self) -> Client {
        Client::from_stream(self.tcp_connect(), self.port)
    }

    /// A new connection for raw byte tests (use `send_raw`, `read_response`,
    /// `wait_closed`; `stream` is public).
    pub fn raw_connect(&self) -> Client {
        self.client()
    }

    /// A used connection (one `/healthz` answered) plus the shard that serves it.
    pub fn client_with_shard(&self) -> (Client, usize) {
        let mut c = self.client();
        let r = c.request("GET", "/healthz", &[], None);
        assert_eq!(r.status, 200, "GET /healthz: {r}");
        let shard = r
            .shard()
            .unwrap_or_else(|| panic!("no x-seckill-shard header: {r}"));
        assert!(
            shard < self.shards,
            "x-seckill-shard {shard} out of range 0..{}: {r}",
            self.shards
        );
        (c, shard)
    }

    /// `per_shard` used connections on every shard: result[shard] holds them.
    /// SO_REUSEPORT spreads connections by 4-tuple hash, so keep opening
    /// connections until every shard has enough (bounded).
    pub fn clients_per_shard(&self, per_shard: usize) -> Vec<Vec<Client>> {
        let mut out: Vec<Vec<Client>> = (0..self.shards).map(|_| Vec::new()).collect();
        let max_attempts = 64 + 32 * per_shard * self.shards;
        for _ in 0..max_attempts {
            if out.iter().all(|v| v.len() >= per_shard) {
                return out;
            }
            let (c, shard) = self.client_with_shard();
            if out[shard].len() < per_shard {
                out[shard].push(c);
            }
        }
        let counts: Vec<usize> = out.iter().map(|v| v.len()).collect();
        panic!(
            "after {max_attempts} connections could not get {per_shard} connection(s) on each of {} shards (got {counts:?}); \
             is x-seckill-shard the accepting shard and is SO_REUSEPORT used?",
            self.shards
        );
    }

    /// One used connection on `shard`.
    pub fn client_on_shard(&self, shard: usize) -> Client {
        self.clients_per_shard(1)
            .swap_remove(shard)
            .pop()
            .expect("client")
    }

    /// A fresh connection still gets 200 on /healthz.
    #[track_caller]
    pub fn assert_healthy(&self) {
        let mut c = self.client();
        let r = c
            .try_request("GET", "/healthz", &[], None)
            .unwrap_or_else(|e| {
                panic!(
                    "fresh client GET /healthz failed: {e}; server output:\n{}",
                    self.log()
                )
            });
        assert_eq!(r.status, 200, "fresh client GET /healthz: {r}");
    }

    /// Create an open sale (started a second ago, ends in an hour).
    pub fn open_sale(&self, sku: &str, stock: u64, per_user_limit: u64) -> Value {
        self.client()
            .create_sale(sku, &sale_spec(stock, per_user_limit))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let tail = process::log_tail(&self.log(), 8000);
            eprintln!(
                "---- seckill server output (port {}) ----\n{tail}\n---- end ----",
                self.port
            );
        }
        let _ = std::fs::remove_file(&self.log_path);
        if self.owns_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

// ---------------------------------------------------------------------------
// Sales
// ---------------------------------------------------------------------------

/// Body for an open sale: started 1 s ago, ends in an hour.
pub fn sale_spec(stock: u64, per_user_limit: u64) -> Value {
    let now = now_ms();
    json!({
        "name": "Integration test sale",
        "stock": stock,
        "starts_at": now - 1_000,
        "ends_at": now + 3_600_000,
        "per_user_limit": per_user_limit,
    })
}

pub fn admin_bearer() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------

#[derive(Clone)]
pub struct Response {
    pub status: u16,
    /// HTTP minor version of the response (0 or 1).
    pub version: u8,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self}"))
    }

    /// `error` field of a JSON error body, if any.
    pub fn error_code(&self) -> Option<String> {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
    }

    pub fn shard(&self) -> Option<usize> {
        self.header("x-seckill-shard")
            .and_then(|v| v.trim().parse().ok())
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP/1.{} {} [", self.version, self.status)?;
        for (i, (k, v)) in self.headers.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{k}: {v}")?;
        }
        let text = self.text();
        let shown: String = text.chars().take(2000).collect();
        write!(f, "] body={shown:?}")
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[track_caller]
pub fn assert_status(resp: &Response, status: u16) {
    assert_eq!(resp.status, status, "expected status {status}, got: {resp}");
}

/// Assert an error response: status, `{"error": code, "message": <string>}`.
#[track_caller]
pub fn assert_error(resp: &Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "expected {status} {code}, got: {resp}");
    let v = resp.json();
    assert_eq!(
        v["error"],
        json!(code),
        "expected error code {code:?}, got: {resp}"
    );
    assert!(
        v["message"].is_string(),
        "error body must have a string \"message\": {resp}"
    );
}

/// Assert the response carries `x-seckill-shard` with a valid shard index.
#[track_caller]
pub fn assert_shard_header(resp: &Response, shards: usize) {
    let s = resp
        .shard()
        .unwrap_or_else(|| panic!("missing/invalid x-seckill-shard header: {resp}"));
    assert!(s < shards, "x-seckill-shard {s} not in 0..{shards}: {resp}");
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// A keep-alive HTTP/1.1 connection.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    host: String,
}

/// A connection to `127.0.0.1:port` with the harness's I/O timeouts and no Nagle delay.
fn connect_with_timeouts(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Client {
    /// A keep-alive client on a new connection to `127.0.0.1:port`, with the harness's I/O
    /// timeouts, for servers started without [`Server`]. Panics if the connect fails.
    #[track_caller]
    pub fn connect(port: u16) -> Client {
        let stream = connect_with_timeouts(port)
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        Client::from_stream(stream, port)
    }

    pub fn from_stream(stream: TcpStream, port: u16) -> Client {
        Client {
            stream,
            buf: Vec::new(),
            host: format!("127.0.0.1:{port}"),
        }
    }

    /// Build the request bytes. Adds `Host`; when `body` is `Some`, adds
    /// `Content-Length` (unless a Content-Length/Transfer-Encoding header is
    /// given) and, for a non-empty body, `Content-Type: application/json`
    /// (unless a Content-Type header is given).
    pub fn build_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Vec<u8> {
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            if !has("content-length") && !has("transfer-encoding") {
                out.push_str(&format!("Content-Length: {}\r\n", b.len()));
            }
            if !b.is_empty() && !has("content-type") {
                out.push_str("Content-Type: application/json\r\n");
            }
        }
        out.push_str("\r\n");
        if let Some(b) = body {
            out.push_str(b);
        }
        out.into_bytes()
    }

    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> io::Result<Response> {
        let bytes = self.build_request(method, path, headers, body);
        self.stream.write_all(&bytes)?;
        self.read_response()
    }

    /// Send a request and read its response; panics with context on I/O errors.
    #[track_caller]
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        match self.try_request(method, path, headers, body) {
            Ok(r) => r,
            Err(e) => panic!("{method} {path}: no valid response: {e}"),
        }
    }

    #[track_caller]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing {} raw bytes failed: {e}", bytes.len()));
    }

    /// Read more bytes into the buffer; Ok(0) on EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Read one response (uses Content-Length; reads to EOF if absent).
    pub fn read_response(&mut self) -> io::Result<Response> {
        loop {
            if !self.buf.is_empty() {
                let mut hdrs = [httparse::EMPTY_HEADER; 64];
                let mut parsed = httparse::Response::new(&mut hdrs);
                match parsed.parse(&self.buf) {
                    Ok(httparse::Status::Complete(head_len)) => {
                        let status = parsed.code.unwrap_or(0);
                        let version = parsed.version.unwrap_or(1);
                        let headers: Vec<(String, String)> = parsed
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect();
                        let cl = headers
                            .iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                            .map(|(_, v)| {
                                v.trim().parse::<usize>().map_err(|e| {
                                    io::Error::new(
                                        ErrorKind::InvalidData,
                                        format!("bad Content-Length {v:?}: {e}"),
                                    )
                                })
                            })
                            .transpose()?;
                        let body_len = match cl {
                            Some(n) => n,
                            None if status == 204 || status == 304 || status < 200 => 0,
                            None => {
                                // No length: body runs to EOF.
                                while self.fill()? > 0 {}
                                self.buf.len() - head_len
                            }
                        };
                        while self.buf.len() < head_len + body_len {
                            if self.fill()? == 0 {
                                return Err(io::Error::new(
                                    ErrorKind::UnexpectedEof,
                                    format!(
                                        "EOF inside body: have {} of {} body bytes; so far: {:?}",
                                        self.buf.len() - head_len,
                                        body_len,
                                        String::from_utf8_lossy(&self.buf)
                                    ),
                                ));
                            }
                        }
                        let body = self.buf[head_len..head_len + body_len].to_vec();
                        self.buf.drain(..head_len + body_len);
                        return Ok(Response {
                            status,
                            version,
                            headers,
                            body,
                        });
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(e) => {
                        return Err(io::Error::new(
                            ErrorKind::InvalidData,
                            format!(
                                "unparseable response ({e}): {:?}",
                                String::from_utf8_lossy(&self.buf)
                            ),
                        ))
                    }
                }
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed before a complete response; got {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ),
                ));
            }
        }
    }

    #[track_caller]
    pub fn expect_response(&mut self, what: &str) -> Response {
        self.read_response()
            .unwrap_or_else(|e| panic!("{what}: expected a response, got error: {e}"))
    }

    /// Wait until the peer closes (EOF or reset) within `timeout`. Returns the
    /// bytes that arrived before the close (not yet consumed as responses), or
    /// Err with a description if the connection was still open at the deadline.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<Vec<u8>, String> {
        let deadline = Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(format!(
                    "connection still open after {timeout:?}; unread bytes: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .expect("set_read_timeout");
            match self.fill() {
                Ok(0) => break Ok(std::mem::take(&mut self.buf)),
                Ok(_) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    continue
                }
                Err(e)
                    if e.kind() == ErrorKind::ConnectionReset
                        || e.kind() == ErrorKind::ConnectionAborted
                        || e.kind() == ErrorKind::BrokenPipe =>
                {
                    break Ok(std::mem::take(&mut self.buf))
                }
                Err(e) => {
                    break Err(format!(
                        "unexpected read error while waiting for close: {e}"
                    ))
                }
            }
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        result
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    // ---- API helpers -----------------------------------------------------

    pub fn get(&mut self, path: &str) -> Response {
        self.request("GET", path, &[], None)
    }

    /// Request authenticated with `Authorization: Bearer <token>`.
    pub fn authed(
        &mut self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&str>,
    ) -> Response {
        let auth = format!("Bearer {token}");
        self.request(method, path, &[("Authorization", &auth)], body)
    }

    pub fn admin(&mut self, method: &str, path: &str, body: Option<&str>) -> Response {
        self.authed(method, path, ADMIN_TOKEN, body)
    }

    pub fn put_sale(&mut self, sku: &str, spec: &Value) -> Response {
        self.admin("PUT", &format!("/v1/sales/{sku}"), Some(&spec.to_string()))
    }

    /// PUT the sale, assert 201, return the sale object.
    #[track_caller]
    pub fn create_sale(&mut self, sku: &str, spec: &Value) -> Value {
        let r = self.put_sale(sku, spec);
        assert_eq!(r.status, 201, "create sale {sku} with {spec}: {r}");
        r.json()
    }

    #[track_caller]
    pub fn get_sale(&mut self, sku: &str) -> Value {
        let r = self.get(&format!("/v1/sales/{sku}"));
        assert_eq!(r.status, 200, "GET /v1/sales/{sku}: {r}");
        r.json()
    }

    #[track_caller]
    pub fn remaining(&mut self, sku: &str) -> i64 {
        let s = self.get_sale(sku);
        s["remaining"]
            .as_i64()
            .unwrap_or_else(|| panic!("sale has no integer remaining: {s}"))
    }

    /// POST /v1/sales/{sku}/purchase. `qty` None sends an empty body
    /// (Content-Length: 0).
    pub fn purchase(
        &mut self,
        sku: &str,
        token: &str,
        qty: Option<u64>,
        idem_key: Option<&str>,
    ) -> Response {
        let auth = format!("Bearer {token}");
        let mut headers: Vec<(&str, &str)> = vec![("Authorization", &auth)];
        if let Some(k) = idem_key {
            headers.push(("Idempotency-Key", k));
        }
        let body = qty.map(|q| json!({ "quantity": q }).to_string());
        self.request(
            "POST",
            &format!("/v1/sales/{sku}/purchase"),
            &headers,
            Some(body.as_deref().unwrap_or("")),
        )
    }

    /// Purchase and assert 201; returns the order JSON.
    #[track_caller]
    pub fn buy(&mut self, sku: &str, token: &str, qty: u64) -> Value {
        let r = self.purchase(sku, token, Some(qty), None);
        assert_eq!(r.status, 201, "purchase {sku} qty {qty}: {r}");
        r.json()
    }

    pub fn get_order(&mut self, id: &str, token: &str) -> Response {
        self.authed("GET", &format!("/v1/orders/{id}"), token, None)
    }

    /// Pays order `id` as the payment service, for the amount of a free sale (every sale the
    /// harness opens has no price) and the reference `ref-<id>`.
    pub fn pay(&mut self, id: &str) -> Response {
        self.pay_as(id, PAYMENT_TOKEN, 0, &format!("ref-{id}"))
    }

    /// `POST /v1/orders/{id}/pay` with bearer `token`, naming `amount` and `payment_ref`.
    pub fn pay_as(&mut self, id: &str, token: &str, amount: u64, payment_ref: &str) -> Response {
        let body = json!({ "amount": amount, "payment_ref": payment_ref }).to_string();
        self.authed("POST", &format!("/v1/orders/{id}/pay"), token, Some(&body))
    }

    pub fn cancel(&mut self, id: &str, token: &str) -> Response {
        self.authed("POST", &format!("/v1/orders/{id}/cancel"), token, None)
    }

    pub fn block(&mut self, user: &str) -> Response {
        // Content-Length: 0 (a PUT without any length is only specified as 411
        // for sales, so do not depend on it here).
        self.admin("PUT", &format!("/v1/blocklist/{user}"), Some(""))
    }

    pub fn unblock(&mut self, user: &str) -> Response {
        self.admin("DELETE", &format!("/v1/blocklist/{user}"), None)
    }
}

/// `order["order_id"]` as a String.
#[track_caller]
pub fn order_id(order: &Value) -> String {
    order["order_id"]
        .as_str()
        .unwrap_or_else(|| panic!("order without string order_id: {order}"))
        .to_owned()
}

/// Sends `count` copies of `GET path` back to back on one connection and returns their statuses
/// in order, checking that every refusal is `429 code` with `Retry-After`: how the per-shard
/// limits on expensive requests (scrapes, sale pages) are exercised.
pub fn pipelined_burst(server: &Server, path: &str, count: usize, code: &str) -> Vec<u16> {
    let mut client = server.raw_connect();
    let request = client.build_request("GET", path, &[], None);
    client.send_raw(&request.repeat(count));
    (0..count)
        .map(|n| {
            let response = client.expect_response(&format!("pipelined GET {path} #{n}"));
            if response.status == 429 {
                assert_error(&response, 429, code);
                assert!(response.header("retry-after").is_some(), "{response}");
            }
            response.status
        })
        .collect()
}

/// Poll `f` every 50 ms until it returns Some or `timeout` passes.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Only a "gave up" bound for a state the server should reach soon (an expiry tick, a replay):
/// generous, for a debug build on a loaded machine.
pub const WAIT_BOUND: Duration = Duration::from_secs(60);

/// Polls `GET /v1/sales/{sku}` until its `remaining` is `want`; panics with the last sale seen
/// after [`WAIT_BOUND`].
#[track_caller]
pub fn wait_remaining(c: &mut Client, sku: &str, want: i64) {
    let mut last = Value::Null;
    let reached = poll(WAIT_BOUND, || {
        last = c.get_sale(sku);
        (last["remaining"] == json!(want)).then_some(())
    });
    assert!(
        reached.is_some(),
        "{sku}: remaining not {want} within {WAIT_BOUND:?}; last seen: {last}"
    );
}
