//! Configuration: a TOML file, environment variables and flags, merged with the precedence
//! flags > env > file > defaults, and validated once at startup with errors that name the key.

pub mod events;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;

use crate::cli::ServeArgs;
use crate::store::journal::Durability;

/// Default listen address: loopback, so a bare `serve` is never exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "seckill-data";
/// Shortest admin token or token secret accepted, so a weak secret is caught at startup.
const MIN_SECRET_LEN: usize = 16;

/// The config file, as written. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`ServeArgs::listen`].
    pub listen: Option<String>,
    /// See [`ServeArgs::shards`].
    pub shards: Option<usize>,
    /// See [`ServeArgs::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// Bearer token for admin calls (env `SECKILL_ADMIN_TOKEN` overrides).
    pub admin_token: Option<String>,
    /// HMAC secret for shopper tokens (env `SECKILL_TOKEN_SECRET` overrides).
    pub token_secret: Option<String>,
    /// Bearer token of the payment service, which alone may pay orders by API (env
    /// `SECKILL_PAYMENT_TOKEN` overrides); unset means no token may.
    pub payment_token: Option<String>,
    /// HMAC secret of the signed payment webhook (env `SECKILL_WEBHOOK_SECRET` overrides);
    /// unset means the webhook is off.
    pub webhook_secret: Option<String>,
    /// See [`ServeArgs::webhook_tolerance_secs`].
    pub webhook_tolerance_secs: Option<u64>,
    /// See [`ServeArgs::idle_timeout_ms`].
    pub idle_timeout_ms: Option<u64>,
    /// See [`ServeArgs::max_token_ttl_secs`].
    pub max_token_ttl_secs: Option<u64>,
    /// See [`ServeArgs::cors_origins`].
    pub cors_origins: Option<Vec<String>>,
    /// See [`ServeArgs::max_connections_per_shard`].
    pub max_connections_per_shard: Option<usize>,
    /// See [`ServeArgs::backlog`].
    pub backlog: Option<u32>,
    /// See [`ServeArgs::drain_timeout_ms`].
    pub drain_timeout_ms: Option<u64>,
    /// See [`ServeArgs::closed_orders_per_sale`].
    pub closed_orders_per_sale: Option<usize>,
    /// See [`ServeArgs::durability`].
    pub durability: Option<String>,
    /// See [`ServeArgs::segment_bytes`].
    pub segment_bytes: Option<u64>,
    /// See [`ServeArgs::log_level`].
    pub log_level: Option<String>,
    /// See [`ServeArgs::log_format`].
    pub log_format: Option<String>,
    /// See [`ServeArgs::redis`].
    pub redis: Option<String>,
    /// See [`ServeArgs::redis_prefix`].
    pub redis_prefix: Option<String>,
    /// See [`ServeArgs::redis_batch`].
    pub redis_batch: Option<usize>,
    /// See [`ServeArgs::redis_pipeline`].
    pub redis_pipeline: Option<usize>,
    /// See [`ServeArgs::redis_lookups_per_sec`].
    pub redis_lookups_per_sec: Option<u32>,
    /// See [`ServeArgs::redis_negative_ttl_ms`].
    pub redis_negative_ttl_ms: Option<u64>,
    /// See [`ServeArgs::redis_budget_ms`].
    pub redis_budget_ms: Option<u64>,
    /// See [`ServeArgs::redis_unresponsive_ms`].
    pub redis_unresponsive_ms: Option<u64>,
    /// See [`ServeArgs::redis_retention_secs`].
    pub redis_retention_secs: Option<u64>,
    /// See [`ServeArgs::redis_wait`].
    pub redis_wait: Option<u32>,
    /// See [`ServeArgs::redis_wait_timeout_ms`].
    pub redis_wait_timeout_ms: Option<u64>,
    /// See [`ServeArgs::events`].
    pub events: Option<String>,
    /// See [`ServeArgs::events_stream`].
    pub events_stream: Option<String>,
    /// See [`ServeArgs::events_subject_prefix`].
    pub events_subject_prefix: Option<String>,
    /// See [`ServeArgs::events_dedup_window_secs`].
    pub events_dedup_window_secs: Option<u64>,
    /// See [`ServeArgs::events_outbox_max`].
    pub events_outbox_max: Option<usize>,
}

/// A configuration error, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config: {0}")]
pub struct ConfigError(pub String);

/// Where the secrets came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretsSource {
    /// Set by the operator (env or file).
    Configured,
    /// Neither was set: generated for this run only.
    DevGenerated,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Pretty,
    /// One JSON object per line, for collectors.
    Json,
}

/// The validated configuration `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address every shard listens on.
    pub listen: SocketAddr,
    /// Number of shards.
    pub shards: usize,
    /// Directory for the journal.
    pub data_dir: PathBuf,
    /// When acknowledgements may be sent.
    pub durability: Durability,
    /// Journal segment size.
    pub segment_bytes: u64,
    /// Admin bearer token.
    pub admin_token: String,
    /// Shopper-token HMAC secret.
    pub token_secret: String,
    /// The payment service's bearer token, if paying by token is on.
    pub payment_token: Option<String>,
    /// The payment webhook's secret, if the webhook is on.
    pub webhook_secret: Option<String>,
    /// How far a webhook's timestamp may be from now.
    pub webhook_tolerance_secs: u64,
    /// Whether the secrets were generated (dev mode).
    pub secrets_source: SecretsSource,
    /// Longest lifetime, from now, of a shopper token that is accepted.
    pub max_token_ttl_secs: u64,
    /// The origins a browser may call the API from (checked, so they cannot fail later).
    pub cors: crate::http::cors::Cors,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
    /// Connection cap per shard.
    pub max_connections_per_shard: usize,
    /// Listen backlog.
    pub backlog: u32,
    /// Graceful shutdown limit.
    pub drain_timeout: Duration,
    /// Closed orders kept per sale.
    pub closed_orders_per_sale: usize,
    /// Log filter directive.
    pub log_level: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Redis URL for cluster mode; `None` runs on the embedded store.
    pub redis: Option<String>,
    /// Namespace of every Redis key.
    pub redis_prefix: String,
    /// Most purchases of one SKU per Redis script call.
    pub redis_batch: usize,
    /// Script calls of one SKU in flight at once.
    pub redis_pipeline: usize,
    /// Redis reads per second and shard for SKUs no edge knew; 0 never asks.
    pub redis_lookups_per_sec: u32,
    /// How long a SKU Redis did not know is answered 404 without asking again.
    pub redis_negative_ttl: Duration,
    /// Longest one store operation waits on Redis, its one retry included.
    pub redis_budget: Duration,
    /// Silence after which a Redis connection with calls waiting is replaced.
    pub redis_unresponsive: Duration,
    /// How long a settled sale's keys are kept; `None`: for ever.
    pub redis_retention: Option<Duration>,
    /// Replicas that must confirm each acknowledged write, and for how long to wait.
    pub redis_wait: crate::store::redis::ReplicaWait,
    /// The order feed, if `--events` is set.
    pub events: Option<events::EventsConfig>,
}

/// Largest config file read. A real one is a few KiB; this bounds the memory and parse time
/// of a wrong path or a hostile file.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Longest TOML error reported whole; beyond it (the error quotes the offending line, which
/// may be huge) only the message and position are kept.
const MAX_ERROR_CHARS: usize = 2_000;

/// Reads and parses a config file. The `toml` parser refuses nesting deeper than 80 levels
/// ("recursion limit exceeded"), so a hostile file cannot overflow the stack.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let cannot_read =
        |error: std::io::Error| ConfigError(format!("cannot read {}: {error}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot_read)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError(format!(
            "{} is larger than {MAX_CONFIG_BYTES} bytes",
            path.display()
        )));
    }
    toml::from_str(&text).map_err(|error| {
        let mut report = error.to_string();
        if report.len() > MAX_ERROR_CHARS {
            let at = error
                .span()
                .map(|span| format!(" at byte {}", span.start))
                .unwrap_or_default();
            report = format!("TOML parse error{at}: {}", error.message());
        }
        ConfigError(format!("{}: {report}", path.display()))
    })
}

/// The secret from the environment, else the file.
fn secret(env_key: &str, file_value: Option<&String>) -> Option<String> {
    std::env::var(env_key)
        .ok()
        .filter(|value| !value.is_empty())
        .or_else(|| file_value.cloned())
}

/// Reads the shopper-token secret the way `serve` does (env, then file), for `seckill token`.
pub fn token_secret(config: Option<&Path>) -> Result<String, ConfigError> {
    let file = match config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    secret("SECKILL_TOKEN_SECRET", file.token_secret.as_ref()).ok_or_else(|| {
        ConfigError(
            "`token_secret` is not set (env SECKILL_TOKEN_SECRET or the config file)".into(),
        )
    })
}

fn dev_secret() -> String {
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    value: T,
    low: T,
    high: T,
) -> Result<T, ConfigError> {
    if value < low || value > high {
        return Err(ConfigError(format!(
            "`{key}` must be between {low} and {high}, got {value}"
        )));
    }
    Ok(value)
}

/// Merges flags (already overlaid on env by clap), the file and defaults, and validates.
pub fn resolve(args: &ServeArgs) -> Result<ServeConfig, ConfigError> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let events = events::resolve(args, &file)?;
    let listen_text = args
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen: SocketAddr = listen_text.parse().map_err(|error| {
        ConfigError(format!(
            "`listen` must be IP:PORT, got {listen_text:?}: {error}"
        ))
    })?;
    if listen.port() == 0 {
        return Err(ConfigError(
            "`listen` needs a fixed port: every shard binds the same one with SO_REUSEPORT".into(),
        ));
    }
    let default_shards = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = args.shards.or(file.shards).unwrap_or(default_shards);
    let shards = in_range("shards", shards, 1, 256)?;
    let admin = secret("SECKILL_ADMIN_TOKEN", file.admin_token.as_ref());
    let token = secret("SECKILL_TOKEN_SECRET", file.token_secret.as_ref());
    let (admin_token, token_secret, secrets_source) =
        match (admin, token) {
            (Some(admin), Some(token)) => (admin, token, SecretsSource::Configured),
            (None, None) => (dev_secret(), dev_secret(), SecretsSource::DevGenerated),
            (Some(_), None) => return Err(ConfigError(
                "`token_secret` is not set but `admin_token` is: set both, or neither for dev mode"
                    .into(),
            )),
            (None, Some(_)) => return Err(ConfigError(
                "`admin_token` is not set but `token_secret` is: set both, or neither for dev mode"
                    .into(),
            )),
        };
    // Dev mode's secrets are printed to stderr, so anyone who reads the log (or guesses that
    // nobody set them) could sell out the stock: such a node stays on loopback unless asked.
    if secrets_source == SecretsSource::DevGenerated
        && !listen.ip().is_loopback()
        && !args.allow_dev_on_public
    {
        return Err(ConfigError(format!(
            "dev mode (SECKILL_ADMIN_TOKEN and SECKILL_TOKEN_SECRET not set) listens on loopback only, \
             not {listen}: set both secrets, or pass --allow-dev-on-public"
        )));
    }
    let payment_token = secret("SECKILL_PAYMENT_TOKEN", file.payment_token.as_ref());
    let webhook_secret = secret("SECKILL_WEBHOOK_SECRET", file.webhook_secret.as_ref());
    let webhook_tolerance_secs = args
        .webhook_tolerance_secs
        .or(file.webhook_tolerance_secs)
        .unwrap_or(crate::payment::DEFAULT_WEBHOOK_TOLERANCE_SECS);
    let webhook_tolerance_secs =
        in_range("webhook_tolerance_secs", webhook_tolerance_secs, 1, 3_600)?;
    if payment_token
        .as_ref()
        .is_some_and(|token| *token == admin_token)
    {
        return Err(ConfigError(
            "`payment_token` must differ from `admin_token`".into(),
        ));
    }
    let optional = [
        ("payment_token", payment_token.as_ref()),
        ("webhook_secret", webhook_secret.as_ref()),
    ];
    let optional = optional
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value)));
    for (key, value) in [
        ("admin_token", &admin_token),
        ("token_secret", &token_secret),
    ]
    .into_iter()
    .chain(optional)
    {
        if value.len() < MIN_SECRET_LEN {
            return Err(ConfigError(format!(
                "`{key}` must be at least {MIN_SECRET_LEN} bytes"
            )));
        }
    }
    let idle_timeout_ms = args
        .idle_timeout_ms
        .or(file.idle_timeout_ms)
        .unwrap_or(10_000);
    let idle_timeout_ms = in_range("idle_timeout_ms", idle_timeout_ms, 100, 3_600_000)?;
    let max_token_ttl_secs = args
        .max_token_ttl_secs
        .or(file.max_token_ttl_secs)
        .unwrap_or(crate::auth::DEFAULT_MAX_TOKEN_TTL_SECS);
    let max_token_ttl_secs = in_range("max_token_ttl_secs", max_token_ttl_secs, 1, 366 * 86_400)?;
    // Flags (or the env var) replace the file's list rather than adding to it, like every key.
    let cors_origins = if args.cors_origins.is_empty() {
        file.cors_origins.clone().unwrap_or_default()
    } else {
        args.cors_origins.clone()
    };
    let cors = crate::http::cors::Cors::new(&cors_origins)
        .map_err(|error| ConfigError(error.to_string()))?;
    let max_connections = args
        .max_connections_per_shard
        .or(file.max_connections_per_shard)
        .unwrap_or(10_000);
    let max_connections = in_range("max_connections_per_shard", max_connections, 1, 1_000_000)?;
    let backlog = args.backlog.or(file.backlog).unwrap_or(1024);
    let backlog = in_range("backlog", backlog, 1, 1 << 20)?;
    let drain_ms = args
        .drain_timeout_ms
        .or(file.drain_timeout_ms)
        .unwrap_or(10_000);
    let drain_ms = in_range("drain_timeout_ms", drain_ms, 0, 600_000)?;
    let closed_orders = args
        .closed_orders_per_sale
        .or(file.closed_orders_per_sale)
        .unwrap_or(1_000_000);
    let closed_orders = in_range("closed_orders_per_sale", closed_orders, 1, 100_000_000)?;
    let log_level = args
        .log_level
        .clone()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .or(file.log_level.clone())
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::EnvFilter::try_new(&log_level)
        .map_err(|error| ConfigError(format!("`log_level` {log_level:?} is invalid: {error}")))?;
    let log_format = match args.log_format.as_deref().or(file.log_format.as_deref()) {
        None | Some("pretty") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError(format!(
                "`log_format` must be pretty or json, got {other:?}"
            )))
        }
    };
    let durability = match args.durability.as_deref().or(file.durability.as_deref()) {
        None | Some("sync") => Durability::Sync,
        Some("none") => Durability::None,
        Some(other) => {
            return Err(ConfigError(format!(
                "`durability` must be sync or none, got {other:?}"
            )))
        }
    };
    let segment_bytes = args
        .segment_bytes
        .or(file.segment_bytes)
        .unwrap_or(64 << 20);
    let segment_bytes = in_range("segment_bytes", segment_bytes, 64 << 10, 1 << 34)?;
    let data_dir = args
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError("`data_dir` must not be empty".into()));
    }
    let redis = args.redis.clone().or(file.redis);
    if let Some(url) = &redis {
        let scheme_ok = crate::store::redis::url::SCHEMES
            .iter()
            .any(|scheme| url.starts_with(scheme));
        if !scheme_ok {
            return Err(ConfigError(format!(
                "`redis` must be redis://HOST:PORT, redis-cluster://HOST:PORT,... or redis-sentinel://HOST:PORT,.../MASTER_NAME, got {url:?}"
            )));
        }
        crate::store::redis::parse_url(url).map_err(ConfigError)?;
    }
    let redis_prefix = args
        .redis_prefix
        .clone()
        .or(file.redis_prefix)
        .unwrap_or_else(|| "seckill".into());
    let prefix_ok = !redis_prefix.is_empty()
        && redis_prefix.len() <= 64
        && redis_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-:.".contains(&b));
    if !prefix_ok {
        return Err(ConfigError(format!(
            "`redis_prefix` must be 1 to 64 characters from [A-Za-z0-9_-:.], got {redis_prefix:?}"
        )));
    }
    let redis_batch = args.redis_batch.or(file.redis_batch).unwrap_or(64);
    let redis_batch = in_range("redis_batch", redis_batch, 1, 1024)?;
    let redis_pipeline = args.redis_pipeline.or(file.redis_pipeline).unwrap_or(4);
    let redis_pipeline = in_range("redis_pipeline", redis_pipeline, 1, 32)?;
    let lookups = args
        .redis_lookups_per_sec
        .or(file.redis_lookups_per_sec)
        .unwrap_or(200);
    let redis_lookups_per_sec = in_range("redis_lookups_per_sec", lookups, 0, 100_000)?;
    let negative_ttl_ms = args
        .redis_negative_ttl_ms
        .or(file.redis_negative_ttl_ms)
        .unwrap_or(250);
    let negative_ttl_ms = in_range("redis_negative_ttl_ms", negative_ttl_ms, 1, 60_000)?;
    let redis_budget_ms = args.redis_budget_ms.or(file.redis_budget_ms).unwrap_or(300);
    let redis_budget_ms = in_range("redis_budget_ms", redis_budget_ms, 10, 60_000)?;
    let redis_unresponsive_ms = args
        .redis_unresponsive_ms
        .or(file.redis_unresponsive_ms)
        .unwrap_or(2_000);
    let redis_unresponsive_ms =
        in_range("redis_unresponsive_ms", redis_unresponsive_ms, 100, 600_000)?;
    let redis_retention_secs = args
        .redis_retention_secs
        .or(file.redis_retention_secs)
        .unwrap_or(crate::store::redis::retention::DEFAULT_RETENTION_SECS);
    let redis_retention_secs =
        in_range("redis_retention_secs", redis_retention_secs, 0, 315_360_000)?;
    let redis_wait = args.redis_wait.or(file.redis_wait).unwrap_or(0);
    let redis_wait = in_range("redis_wait", redis_wait, 0, 16)?;
    let redis_wait_timeout_ms = args
        .redis_wait_timeout_ms
        .or(file.redis_wait_timeout_ms)
        .unwrap_or(100);
    // Below the budget, which covers the script and the WAIT together: a longer WAIT could never
    // be seen to succeed.
    // And below half the silence after which the watchdog replaces a connection (a WAIT that
    // waits its whole time must not look like a dead connection), and within the background
    // sync's 500 ms per call.
    let wait_ceiling = (redis_budget_ms.saturating_sub(1))
        .min(redis_unresponsive_ms / 2)
        .clamp(1, 400);
    let redis_wait_timeout_ms = in_range(
        "redis_wait_timeout_ms",
        redis_wait_timeout_ms,
        1,
        wait_ceiling,
    )?;
    Ok(ServeConfig {
        listen,
        shards,
        data_dir,
        durability,
        segment_bytes,
        admin_token,
        token_secret,
        payment_token,
        webhook_secret,
        webhook_tolerance_secs,
        secrets_source,
        max_token_ttl_secs,
        cors,
        idle_timeout: Duration::from_millis(idle_timeout_ms),
        max_connections_per_shard: max_connections,
        backlog,
        drain_timeout: Duration::from_millis(drain_ms),
        closed_orders_per_sale: closed_orders,
        log_level,
        log_format,
        redis,
        redis_prefix,
        redis_batch,
        redis_pipeline,
        redis_lookups_per_sec,
        redis_negative_ttl: Duration::from_millis(negative_ttl_ms),
        redis_budget: Duration::from_millis(redis_budget_ms),
        redis_unresponsive: Duration::from_millis(redis_unresponsive_ms),
        redis_retention: (redis_retention_secs > 0)
            .then(|| Duration::from_secs(redis_retention_secs)),
        redis_wait: crate::store::redis::ReplicaWait {
            replicas: redis_wait,
            timeout: Duration::from_millis(redis_wait_timeout_ms),
        },
        events,
    })
}
