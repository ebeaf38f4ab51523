//! The command line: `serve`, `token`, `journal`, `load` and `orders`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// seckill: a thread-per-core flash-sale server.
#[derive(Debug, Parser)]
#[command(name = "seckill", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Print a shopper token (reads SECKILL_TOKEN_SECRET or the config file).
    Token(TokenArgs),
    /// Check the host against the configuration: one line per check, exit 1 on any failure.
    Doctor(DoctorArgs),
    /// Inspect the journal.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Send open-loop purchase load to a running deployment and report latency and outcomes.
    Load(LoadArgs),
    /// Read orders out of a running node.
    #[command(subcommand)]
    Orders(OrdersCommand),
    /// Watch the order feed in NATS JetStream.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Proof-of-work, as a shopper's client does it.
    #[command(subcommand)]
    Pow(PowCommand),
    /// Check a lottery's draw.
    #[command(subcommand)]
    Lottery(LotteryCommand),
}

/// `seckill lottery ...`
#[derive(Debug, Subcommand)]
pub enum LotteryCommand {
    /// Recompute a drawn lottery from the seed and registrant list a node publishes, and check
    /// both against the commitment: exit 0 and the winners if it holds, 1 if it does not or
    /// cannot be read. Needs no credentials: anyone can run it.
    Verify {
        /// The node to read, host:port.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// The lottery sale's SKU.
        #[arg(long)]
        sku: String,
    },
}

/// `seckill pow ...`
#[derive(Debug, Subcommand)]
pub enum PowCommand {
    /// Solve a challenge from `GET /v1/sales/{sku}/pow`: prints the nonce on stdout, and the
    /// hashes and time it took on stderr.
    Solve {
        /// The challenge's `challenge` field: 64 hex digits.
        #[arg(long)]
        challenge: String,
        /// The challenge's `bits` field.
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=i64::from(crate::sale::pow::MAX_POW_BITS)))]
        bits: u8,
    },
}

/// `seckill events ...`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print the feed's messages as stored in JetStream, one JSON object a line.
    Tail(TailArgs),
}

/// Flags for `events tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// The broker, as given to `serve --events`.
    #[arg(long, env = "SECKILL_EVENTS", default_value = "nats://127.0.0.1:4222")]
    pub events: String,
    /// The stream the nodes publish to.
    #[arg(long, env = "SECKILL_EVENTS_STREAM", default_value = "SECKILL_EVENTS")]
    pub stream: String,
    /// The subject prefix the nodes publish under.
    #[arg(
        long,
        env = "SECKILL_EVENTS_SUBJECT_PREFIX",
        default_value = "seckill.events"
    )]
    pub subject_prefix: String,
    /// Only this SKU's events.
    #[arg(long)]
    pub sku: Option<String>,
    /// Start from the first stored event (default: only new ones).
    #[arg(long)]
    pub from_start: bool,
    /// Exit after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this many milliseconds without a message.
    #[arg(long)]
    pub idle_exit_ms: Option<u64>,
}

/// `seckill orders ...`
#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// Write every order of a SKU to stdout, in creation order, through the admin API.
    Export(ExportArgs),
}

/// Flags for `orders export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The SKU whose orders to export.
    #[arg(long)]
    pub sku: String,
    /// `jsonl` (one order object a line) or `csv` (with a header line).
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: crate::export::Format,
    /// Only orders in this status: pending, paid, cancelled or expired.
    #[arg(long)]
    pub status: Option<String>,
    /// `HOST:PORT` of a node.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// The admin token.
    #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: String,
    /// Orders asked for per request, 1..=1000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub page_size: u16,
}

/// `seckill journal ...`
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Check every record of the newest complete generation, as startup would, without starting
    /// the server. Exits 1 if the journal is corrupt.
    Verify {
        /// The data directory to check.
        #[arg(long, env = "SECKILL_DATA_DIR", default_value = "seckill-data")]
        data_dir: PathBuf,
    },
}

/// Flags for `serve`. Each may also come from the environment (shown) or the config file (the
/// same name in snake_case); flags win over env, env over the file.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "SECKILL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address every shard listens on [default: 127.0.0.1:8080].
    #[arg(long, env = "SECKILL_LISTEN")]
    pub listen: Option<String>,
    /// Origins a browser may call the API from (CORS), as `scheme://host[:port]`, or `*` for
    /// any; repeat the flag, or separate them with commas in the env var. None by default.
    #[arg(
        long = "cors-origin",
        env = "SECKILL_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Lets dev mode (no secrets set, so throwaway ones are generated and printed) listen on a
    /// non-loopback address; without it dev mode refuses one.
    #[arg(long)]
    pub allow_dev_on_public: bool,
    /// Number of shards, one pinned executor each [default: online CPUs].
    #[arg(long, env = "SECKILL_SHARDS")]
    pub shards: Option<usize>,
    /// Directory for the journal [default: ./seckill-data].
    #[arg(long, env = "SECKILL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// When to acknowledge: `sync` (after fdatasync) or `none` (unsafe, for benchmarks)
    /// [default: sync].
    #[arg(long, env = "SECKILL_DURABILITY")]
    pub durability: Option<String>,
    /// Journal segment size in bytes before rolling over [default: 67108864].
    #[arg(long, env = "SECKILL_SEGMENT_BYTES")]
    pub segment_bytes: Option<u64>,
    /// Close a connection that sends nothing for this long [default: 10000].
    #[arg(long, env = "SECKILL_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Refuse shopper tokens that expire more than this many seconds from now, 1..=31622400
    /// [default: 86400].
    #[arg(long, env = "SECKILL_MAX_TOKEN_TTL_SECS")]
    pub max_token_ttl_secs: Option<u64>,
    /// Accept a payment webhook whose signed timestamp is at most this many seconds from now,
    /// 1..=3600 [default: 300].
    #[arg(long, env = "SECKILL_WEBHOOK_TOLERANCE_SECS")]
    pub webhook_tolerance_secs: Option<u64>,
    /// Open connections per shard before new ones get 503 [default: 10000].
    #[arg(long, env = "SECKILL_MAX_CONNECTIONS_PER_SHARD")]
    pub max_connections_per_shard: Option<usize>,
    /// Listen backlog of each shard's socket [default: 1024].
    #[arg(long, env = "SECKILL_BACKLOG")]
    pub backlog: Option<u32>,
    /// How long shutdown waits for in-flight requests [default: 10000].
    #[arg(long, env = "SECKILL_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Cancelled and expired orders remembered per sale [default: 1000000].
    #[arg(long, env = "SECKILL_CLOSED_ORDERS_PER_SALE")]
    pub closed_orders_per_sale: Option<usize>,
    /// Log filter, e.g. `info` or `seckill=debug` [default: RUST_LOG, else info].
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: pretty or json [default: pretty].
    #[arg(long, env = "SECKILL_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Cluster mode: keep all state in Redis, shared with other nodes: `redis://HOST:PORT`,
    /// `redis-cluster://HOST:PORT,HOST:PORT,...` or
    /// `redis-sentinel://HOST:PORT,HOST:PORT,.../MASTER_NAME` [default: embedded store].
    #[arg(long, env = "SECKILL_REDIS")]
    pub redis: Option<String>,
    /// Namespace of every Redis key [default: seckill].
    #[arg(long, env = "SECKILL_REDIS_PREFIX")]
    pub redis_prefix: Option<String>,
    /// Most purchases of one SKU coalesced into one Redis script call, 1..=1024 [default: 64].
    #[arg(long, env = "SECKILL_REDIS_BATCH")]
    pub redis_batch: Option<usize>,
    /// Script calls of one SKU in flight at once, 1..=32: round trips overlap while each call
    /// stays atomic in Redis [default: 4].
    #[arg(long, env = "SECKILL_REDIS_PIPELINE")]
    pub redis_pipeline: Option<usize>,
    /// Redis reads per second and shard for SKUs this node has not heard of yet (created
    /// through another node since the last sync), 0..=100000; 0 never asks [default: 200].
    #[arg(long, env = "SECKILL_REDIS_LOOKUPS_PER_SEC")]
    pub redis_lookups_per_sec: Option<u32>,
    /// How long a SKU Redis did not know is answered 404 without asking again, 1..=60000
    /// [default: 250].
    #[arg(long, env = "SECKILL_REDIS_NEGATIVE_TTL_MS")]
    pub redis_negative_ttl_ms: Option<u64>,
    /// Longest one store operation (a purchase, say) waits on Redis, its one retry included,
    /// in ms, 10..=60000; past it the shopper gets 503 [default: 300].
    #[arg(long, env = "SECKILL_REDIS_BUDGET_MS")]
    pub redis_budget_ms: Option<u64>,
    /// A Redis connection with calls waiting and no reply for this long (ms, 100..=600000) is
    /// torn down and replaced [default: 2000].
    #[arg(long, env = "SECKILL_REDIS_UNRESPONSIVE_MS")]
    pub redis_unresponsive_ms: Option<u64>,
    /// How long the keys of a settled sale (ended, past its last payment deadline, nothing
    /// pending) are kept in Redis, in seconds, 0..=315360000; 0 keeps them for ever. Settled
    /// sales leave the index of sales either way [default: 604800, a week].
    #[arg(long, env = "SECKILL_REDIS_RETENTION_SECS")]
    pub redis_retention_secs: Option<u64>,
    /// Replicas that must confirm each purchase, payment and cancellation (Redis `WAIT`) before
    /// it is acknowledged, 0..=16; fewer in time answers 503. 0 risks losing acknowledged orders
    /// in a failover [default: 0].
    #[arg(long, env = "SECKILL_REDIS_WAIT")]
    pub redis_wait: Option<u32>,
    /// How long `WAIT` waits for the replicas, in ms: at least 1, at most 400 and below both
    /// `--redis-budget-ms` (which covers the script and the WAIT together) and half of
    /// `--redis-unresponsive-ms` [default: 100].
    #[arg(long, env = "SECKILL_REDIS_WAIT_TIMEOUT_MS")]
    pub redis_wait_timeout_ms: Option<u64>,
    /// Publish every order and sale event to NATS JetStream at this URL (nats://HOST:PORT),
    /// at least once, from the journal or the Redis streams [default: off].
    #[arg(long, env = "SECKILL_EVENTS")]
    pub events: Option<String>,
    /// The JetStream stream, created if missing [default: SECKILL_EVENTS].
    #[arg(long, env = "SECKILL_EVENTS_STREAM")]
    pub events_stream: Option<String>,
    /// Subjects are PREFIX.SKU.TYPE [default: seckill.events].
    #[arg(long, env = "SECKILL_EVENTS_SUBJECT_PREFIX")]
    pub events_subject_prefix: Option<String>,
    /// Duplicate window of the stream this node creates, in seconds, 10..=86400: a republished
    /// event within it is dropped by its id [default: 3600].
    #[arg(long, env = "SECKILL_EVENTS_DEDUP_WINDOW_SECS")]
    pub events_dedup_window_secs: Option<u64>,
    /// Unpublished events a shard keeps before new purchases get 503 (embedded mode),
    /// 100..=100000000 [default: 1000000].
    #[arg(long, env = "SECKILL_EVENTS_OUTBOX_MAX")]
    pub events_outbox_max: Option<usize>,
}

/// Flags for `doctor`: the same as `serve`, since it checks what `serve` would run with.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// What `serve` would be started with.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags for `token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The shopper's user id (1–64 characters from [A-Za-z0-9_-]).
    #[arg(long)]
    pub user: String,
    /// Validity in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,
    /// Config file to read `token_secret` from when the env var is not set.
    #[arg(long, env = "SECKILL_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Flags for `load`. Checked before anything is sent; a bad value exits with status 2.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Base URL of a server, http:// only (e.g. http://127.0.0.1:8080). Repeat to spread the
    /// connections over several servers round-robin.
    #[arg(long = "url", required = true, value_name = "URL")]
    pub urls: Vec<String>,
    /// Target arrival rate in requests per second, over all threads. Arrivals follow this
    /// schedule whatever the server does (open loop).
    #[arg(long)]
    pub rate: f64,
    /// How long to send: seconds (`10`) or with a unit (`500ms`, `10s`, `2m`).
    #[arg(long, default_value = "10s", value_parser = crate::load::parse_duration)]
    pub duration: Duration,
    /// Connections to open, in total.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Number of shoppers; each arrival picks one uniformly at random.
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Shopper ids are this prefix followed by a number.
    #[arg(long, default_value = "load-user-")]
    pub user_prefix: String,
    /// The SKU to buy.
    #[arg(long)]
    pub sku: String,
    /// The server's shopper-token secret, to mint each shopper's token.
    #[arg(long, env = "SECKILL_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: String,
    /// Units per purchase.
    #[arg(long, default_value_t = 1)]
    pub quantity: u64,
    /// Executors (OS threads) generating load; each takes an equal share of the rate.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Deadline of each request and each connection attempt, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// Print the final report as one JSON object on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Allow targets that are not loopback addresses.
    #[arg(long)]
    pub allow_remote: bool,
}
