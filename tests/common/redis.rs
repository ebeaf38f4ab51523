//! The one `redis-server` launcher and Redis client of the tests and benches: each server on its
//! own loopback port and temp directory, stopped by PID, restartable on the same port and data
//! (for AOF recovery tests), its log printed when a test fails. Commands go through the `redis`
//! crate's sync client, so no test parses RESP by hand.
//!
//! Benches include this file with `#[path]`, next to `ports.rs`:
//! `#[path = "../tests/common/ports.rs"] mod ports;` and
//! `#[path = "../tests/common/redis.rs"] mod redis_server;`.
#![allow(dead_code)]

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use ::redis::{FromRedisValue, RedisError, RedisResult, Value};

/// How long a `redis-server` may take to answer PING after it was spawned, and a command to be
/// answered: only "gave up" bounds, generous for a loaded machine.
pub const REDIS_BOUND: Duration = Duration::from_secs(30);

/// One `redis-server`.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (AOF, cluster config, log).
    pub dir: PathBuf,
    extra: Vec<String>,
}

/// A fresh directory under the target's temp dir.
fn fresh_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("redis-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}

impl RedisServer {
    /// Starts a server with `extra` arguments (for example `--appendonly yes`) and waits until it
    /// answers PING. Panics if it cannot.
    #[track_caller]
    pub fn start(extra: &[&str]) -> RedisServer {
        Self::try_start(extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`RedisServer::start`], with the failure as a message (for benches). A port taken
    /// between picking and binding (`redis-server` exits with "Address already in use") is
    /// retried on another port, up to three attempts, as the harness's `Server` does.
    pub fn try_start(extra: &[&str]) -> Result<RedisServer, String> {
        let mut last = String::new();
        for _attempt in 0..3 {
            let mut server = RedisServer {
                child: None,
                port: super::ports::pick_port(),
                dir: fresh_dir()?,
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            match server.spawn_once() {
                Ok(()) => return Ok(server),
                // Dropping `server` reaps the child and removes its directory.
                Err(SpawnError::AddrInUse(why)) => last = why,
                Err(SpawnError::Other(why)) => return Err(why),
            }
        }
        Err(format!(
            "redis-server failed to start 3 times with address-in-use: {last}"
        ))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    fn spawn(&mut self) -> Result<(), String> {
        self.spawn_once().map_err(|e| match e {
            SpawnError::AddrInUse(why) | SpawnError::Other(why) => why,
        })
    }

    /// Spawns `redis-server` on `self.port` and waits until it, and not some other process on
    /// that port, answers.
    fn spawn_once(&mut self) -> Result<(), SpawnError> {
        // The log is appended to across restarts: only what this spawn wrote tells its fate.
        let log_start = std::fs::metadata(self.log_path()).map_or(0, |m| m.len() as usize);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| SpawnError::Other(format!("redis log: {e}")))?;
        let log2 = log
            .try_clone()
            .map_err(|e| SpawnError::Other(format!("redis log: {e}")))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                SpawnError::Other(format!(
                    "redis-server must be installed (apt-get install redis-server): {e}"
                ))
            })?;
        let pid = child.id();
        self.child = Some(child);
        let started = Instant::now();
        let mut last = String::from("no answer yet");
        loop {
            // Checked before giving up too: a probe of a port held by a process that never
            // answers takes its whole timeout, and our child may have exited meanwhile.
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log = self.log();
                let this_spawn = log.get(log_start..).unwrap_or(&log);
                let why = format!(
                    "redis-server on port {} exited with {status}; log:\n{log}",
                    self.port
                );
                if this_spawn.to_lowercase().contains("address already in use") {
                    return Err(SpawnError::AddrInUse(why));
                }
                return Err(SpawnError::Other(why));
            }
            if started.elapsed() >= REDIS_BOUND {
                return Err(SpawnError::Other(format!(
                    "redis-server on port {} did not answer within {REDIS_BOUND:?} (last: {last}); log:\n{}",
                    self.port,
                    self.log()
                )));
            }
            // Another process that holds the port may answer too: only our child counts. INFO
            // answers while an AOF still loads, PING only once it has.
            match probe(self.port, &["INFO", "server"]) {
                Ok(info) if server_pid(&info) == Some(pid) => match probe(self.port, &["PING"]) {
                    Ok(pong) if pong == "PONG" => return Ok(()),
                    Ok(other) => last = other,
                    Err(e) => last = e.to_string(),
                },
                Ok(_) => last = "another process answers on this port".into(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and directory (with AOF on, the data comes back). Panics if
    /// it does not come up.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill9();
        if let Err(e) = self.spawn() {
            panic!("{e}");
        }
    }

    /// One command, its reply converted to `T` (`i64`, `Option<String>`, `Vec<...>`,
    /// `BTreeMap<...>`, [`Value`], ...). An error reply is an `Err`.
    pub fn query<T: FromRedisValue>(&self, args: &[&str]) -> RedisResult<T> {
        query(self.port, args)
    }

    /// `cmdstat_evalsha`'s total usec and calls from `INFO commandstats`; zeros for a Redis that
    /// ran no script (a cluster master that serves none of a bench's keys).
    pub fn evalsha_usec(&self) -> Result<(f64, f64), String> {
        let info: String = self
            .query(&["INFO", "commandstats"])
            .map_err(|e| e.to_string())?;
        let Some(line) = info
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_evalsha:"))
        else {
            return Ok((0.0, 0.0));
        };
        let value = |name: &str| {
            line.split(',')
                .find_map(|part| part.strip_prefix(name))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok((value("usec="), value("calls=")))
    }

    /// An integer reply, or the integer in a bulk string; `None` for nil or if Redis does not
    /// answer.
    pub fn integer(&self, args: &[&str]) -> Option<i64> {
        self.query::<Option<i64>>(args).ok().flatten()
    }

    /// The reply rendered as RESP2 text (`+OK\r\n`, `:1\r\n`, `$3\r\nabc\r\n`, ...), or `None`
    /// if Redis does not answer. Kept for callers that match on the wire form; prefer
    /// [`RedisServer::query`].
    pub fn command(&self, args: &[&str]) -> Option<String> {
        match self.query::<Value>(args) {
            Ok(value) => Some(resp_text(&value)),
            Err(e) if e.code().is_some() => Some(format!(
                "-{} {}\r\n",
                e.code().unwrap_or("ERR"),
                e.detail().unwrap_or("")
            )),
            Err(_) => None,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = self.log();
            let start = log.len().saturating_sub(4000);
            let start = (start..=log.len())
                .find(|i| log.is_char_boundary(*i))
                .unwrap_or(log.len());
            eprintln!(
                "---- redis-server output (port {}) ----\n{}\n---- end ----",
                self.port,
                &log[start..]
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Why one spawn failed: the port was taken (worth another port), or anything else.
enum SpawnError {
    AddrInUse(String),
    Other(String),
}

/// `process_id` from an `INFO server` reply.
fn server_pid(info: &str) -> Option<u32> {
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

/// A connection to `127.0.0.1:port` with [`REDIS_BOUND`] on connect, reads and writes.
pub fn connect(port: u16) -> RedisResult<::redis::Connection> {
    connect_within(port, REDIS_BOUND)
}

/// A connection to `127.0.0.1:port` with `bound` on connect, reads and writes.
fn connect_within(port: u16, bound: Duration) -> RedisResult<::redis::Connection> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let connection = client.get_connection_with_timeout(bound)?;
    connection.set_read_timeout(Some(bound))?;
    connection.set_write_timeout(Some(bound))?;
    Ok(connection)
}

/// One startup probe: a short timeout, so whatever else holds the port cannot stall the wait
/// for our own server's exit.
fn probe(port: u16, args: &[&str]) -> RedisResult<String> {
    let mut command = ::redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut connect_within(port, Duration::from_secs(2))?)
}

/// The key prefix test nodes use (the `--redis-prefix` default).
pub const PREFIX: &str = "seckill";

/// `PREFIX:{sku}:name`, the key layout of `src/store/redis/keys.rs` (`sku` may be a bucket's
/// part name, `sku~b`).
pub fn sku_key(sku: &str, name: &str) -> String {
    format!("{PREFIX}:{{{sku}}}:{name}")
}

/// The KEYS every per-SKU script takes, in the order its prelude names them: the node's own
/// list (`seckill::store::redis::keys`), for tests that run a script by hand.
pub fn script_keys(sku: &str) -> Vec<String> {
    seckill::store::redis::keys::SkuKeys::new(PREFIX, sku).0
}

/// [`query`], panicking with the command on an error reply or an I/O failure.
#[track_caller]
pub fn query_ok<T: FromRedisValue>(port: u16, args: &[&str]) -> T {
    query(port, args).unwrap_or_else(|e| panic!("redis 127.0.0.1:{port} {args:?}: {e}"))
}

/// One command to `127.0.0.1:port` on a fresh connection. Redis Cluster `MOVED` redirections
/// are followed, so any master of a cluster answers for any key.
pub fn query<T: FromRedisValue>(port: u16, args: &[&str]) -> RedisResult<T> {
    let Some((name, rest)) = args.split_first() else {
        return Err(RedisError::from((
            ::redis::ErrorKind::ClientError,
            "empty command",
        )));
    };
    let mut command = ::redis::cmd(name);
    for arg in rest {
        command.arg(*arg);
    }
    let mut port = port;
    let mut hops = 0;
    loop {
        match command.query(&mut connect(port)?) {
            Err(e) if hops < 5 && e.kind() == ::redis::ErrorKind::Moved => {
                hops += 1;
                port = e
                    .redirect_node()
                    .and_then(|(addr, _slot)| addr.rsplit(':').next()?.parse().ok())
                    .ok_or(e)?;
            }
            reply => return reply,
        }
    }
}

/// `value` in RESP2 wire form (RESP3-only types rendered as their closest RESP2 form).
fn resp_text(value: &Value) -> String {
    match value {
        Value::Nil => "$-1\r\n".into(),
        Value::Int(n) => format!(":{n}\r\n"),
        Value::Okay => "+OK\r\n".into(),
        Value::SimpleString(s) => format!("+{s}\r\n"),
        Value::BulkString(bytes) => {
            format!("${}\r\n{}\r\n", bytes.len(), String::from_utf8_lossy(bytes))
        }
        Value::Array(items) | Value::Set(items) => {
            let mut out = format!("*{}\r\n", items.len());
            for item in items {
                out.push_str(&resp_text(item));
            }
            out
        }
        other => format!("+{other:?}\r\n"),
    }
}

/// Every order `PREFIX:{sku}:orders` holds, by order id, as stored (packed or JSON), from its
/// `HGETALL`. A field of ten characters is a page: the millisecond its orders' ids begin with,
/// holding `.sku` then a line `\n<rest of the ULID> <order>` per order; any other field is an
/// order id of its own (as builds before pages stored orders). Written apart from the scripts
/// (src/store/redis/record.rs) so that a test reading Redis checks them.
#[track_caller]
pub fn stored_orders(
    fields: impl IntoIterator<Item = (String, String)>,
) -> std::collections::HashMap<String, String> {
    let mut orders = std::collections::HashMap::new();
    for (field, value) in fields {
        if field.len() != 10 {
            orders.insert(field, value);
            continue;
        }
        let mut lines = value.split('\n');
        let suffix = lines.next().unwrap_or_default();
        for line in lines {
            let (rest, raw) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("page {field} has an entry without an order: {line:?}"));
            assert_eq!(rest.len(), 16, "page {field}: entry {line:?}");
            orders.insert(format!("{field}{rest}{suffix}"), raw.to_owned());
        }
    }
    orders
}

/// The order ids of a purchase call's `created` stream entry, from its field `pages`: the SKU's
/// id suffix (`.sku`), then each page the call wrote to followed by the rest of the ids of the
/// orders it made there. Written apart from the scripts, as [`stored_orders`] is.
#[track_caller]
pub fn created_ids(pages: &str) -> Vec<String> {
    let mut tokens = pages.split(' ');
    let suffix = tokens.next().unwrap_or_default();
    assert!(
        suffix.starts_with('.'),
        "`pages` without its suffix: {pages:?}"
    );
    let mut page = None;
    let mut ids = Vec::new();
    for token in tokens {
        match token.len() {
            10 => page = Some(token),
            16 => {
                let page = page.unwrap_or_else(|| panic!("an id before its page: {pages:?}"));
                ids.push(format!("{page}{token}{suffix}"));
            }
            _ => panic!("`pages` with a token {token:?}: {pages:?}"),
        }
    }
    ids
}

impl RedisServer {
    /// Every order of `sku` as stored, by id ([`stored_orders`]).
    #[track_caller]
    pub fn orders(&self, sku: &str) -> std::collections::HashMap<String, String> {
        let fields: Vec<(String, String)> = self
            .query(&["HGETALL", &format!("seckill:{{{sku}}}:orders")])
            .unwrap_or_else(|e| panic!("HGETALL orders of {sku}: {e}"));
        stored_orders(fields)
    }

    /// Order `id` of `sku` as stored, if Redis holds it.
    #[track_caller]
    pub fn order(&self, sku: &str, id: &str) -> Option<String> {
        self.orders(sku).remove(id)
    }

    /// Replaces what Redis stores for order `id` of `sku` with `raw`, where the order is stored
    /// (its page's entry, or its own field); false when Redis holds no such order.
    #[track_caller]
    pub fn overwrite_order(&self, sku: &str, id: &str, raw: &str) -> bool {
        let key = format!("seckill:{{{sku}}}:orders");
        let page = &id[..10];
        let text: Option<String> = self
            .query(&["HGET", &key, page])
            .unwrap_or_else(|e| panic!("HGET {key} {page}: {e}"));
        let entry = format!("\n{} ", &id[10..26]);
        let (field, value) = match text {
            Some(text) if text.contains(&entry) => {
                let at = text.find(&entry).unwrap_or_default() + entry.len();
                let end = text[at..].find('\n').map_or(text.len(), |n| at + n);
                (
                    page.to_owned(),
                    format!("{}{raw}{}", &text[..at], &text[end..]),
                )
            }
            _ => {
                let exists: bool = self.query(&["HEXISTS", &key, id]).unwrap_or(false);
                if !exists {
                    return false;
                }
                (id.to_owned(), raw.to_owned())
            }
        };
        self.query::<i64>(&["HSET", &key, &field, &value])
            .unwrap_or_else(|e| panic!("HSET {key} {field}: {e}"));
        true
    }
}

/// An order as `PREFIX:{sku}:orders` stores it, as JSON: stored JSON as is, a packed record
/// (`status quantity created_at ttl amount user_id [idem]`, src/store/redis/record.rs) spelled
/// out. Written apart from the node's decoder so that a test reading Redis checks that one.
#[track_caller]
pub fn stored_order(raw: &str) -> serde_json::Value {
    if raw.starts_with('{') {
        return serde_json::from_str(raw).unwrap_or_else(|e| panic!("order JSON ({e}): {raw}"));
    }
    let fields: Vec<&str> = raw.splitn(7, ' ').collect();
    let number = |at: usize| -> u64 {
        fields
            .get(at)
            .and_then(|field| field.parse().ok())
            .unwrap_or_else(|| panic!("packed order field {at}: {raw:?}"))
    };
    let status = match fields[0] {
        "p" => "pending",
        "y" => "paid",
        "c" => "cancelled",
        "e" => "expired",
        other => panic!("packed order status {other:?}: {raw:?}"),
    };
    serde_json::json!({
        "status": status,
        "quantity": number(1),
        "created_at": number(2),
        "expires_at": number(2) + number(3),
        "amount": number(4),
        "user_id": fields.get(5).unwrap_or_else(|| panic!("packed order user: {raw:?}")),
    })
}

/// The units of one shopper's entry in `PREFIX:{sku}:held`: `<units>[ <order id>...]`, the units
/// their pending and paid orders hold, then their last order ids. Written apart from the scripts
/// so that a test reading Redis checks them.
#[track_caller]
pub fn held_units(raw: &str) -> i64 {
    raw.split(' ')
        .next()
        .and_then(|units| units.parse().ok())
        .unwrap_or_else(|| panic!("a holding that is not `<units> <id>...`: {raw:?}"))
}

/// The orders one shopper's entry in `PREFIX:{sku}:held` lists, oldest first: the ULIDs of
/// their ids (an id without `.sku`).
pub fn held_list(raw: &str) -> Vec<String> {
    raw.split_whitespace().skip(1).map(str::to_owned).collect()
}

/// Every shopper who holds units, and how many, from `HGETALL PREFIX:{sku}:held` (an entry of no
/// units stays while it lists orders; it holds nothing).
#[track_caller]
pub fn holdings<M: FromIterator<(String, i64)>>(
    entries: impl IntoIterator<Item = (String, String)>,
) -> M {
    entries
        .into_iter()
        .map(|(user, raw)| {
            let units = held_units(&raw);
            (user, units)
        })
        .filter(|(_, units)| *units != 0)
        .collect()
}
