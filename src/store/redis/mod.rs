//! The Redis store: Redis (or a Redis Cluster) holds the truth for every node, and each shard
//! talks to it through its own fred client on its own glommio executor.
//!
//! - Every state change is one Lua script over one SKU's keys ([`scripts`], [`keys`]).
//! - Concurrent purchases of a SKU are coalesced into one script call ([`batch`]): no wait is
//!   added when traffic is light, and under load one round trip carries up to `--redis-batch`
//!   purchases.
//! - Every key is routed to the node serving it: the one Redis, or the master of its slot on a
//!   Redis Cluster, each with its own client, breaker ([`breaker`]) and reply clock
//!   ([`topology`], [`watchdog`]), so one dead master fails only the SKUs in its slots.
//! - Every operation waits on Redis for one attempt and at most one retry, within
//!   `--redis-budget-ms` ([`budget`]), with deadlines enforced with glommio's timer (fred's own
//!   timeouts need tokio and are all zero). Retrying is safe because every operation is
//!   idempotent: a purchase carries its order id, minted before the first attempt, and the
//!   script answers a retry with the order it already made; pay, cancel and expire are guarded
//!   by the order's state.
//! - A connection that stops answering is replaced after `--redis-unresponsive-ms`
//!   ([`watchdog`]).
//! - No `201` is sent unless the script's reply confirmed the order, and an order whose
//!   purchase was answered `503` is abandoned (cancelled, or kept from being created) by a
//!   background retrier ([`abandon`]).
//! - With `--redis-wait N`, nothing is acknowledged before N replicas confirmed having it
//!   ([`replication`]).

// First: the macros it defines are for the modules declared after it.
/// How an order is stored; its Lua side is a macro the scripts below include.
#[macro_use]
mod record;

pub mod abandon;
pub mod batch;
pub mod breaker;
pub mod buckets;
pub mod budget;
mod calls;
mod commands;
mod decode;
pub mod feed;
pub mod keys;
pub mod notify;
mod parts;
mod poll;
mod queue;
pub mod rate;
pub mod reclaim;
pub mod regression;
mod replication;
pub mod retention;
mod schedule;
pub mod scripts;
pub mod topology;
pub mod url;
pub mod watchdog;

pub use calls::fred_compat_context;
pub use replication::ReplicaWait;
pub use url::parse_url;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use fred::interfaces::SetsInterface;
use fred::types::scripts::Script;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{BootState, Store, StoreStats, Synced};
use crate::metrics::{Distribution, DistributionSnapshot};
use crate::sale::command::{Command, Reply};
use crate::sale::SaleError;
use keys::SkuKeys;
use topology::Topology;

/// Longest one call of the background sync may take: it answers no shopper, so it is not held
/// to `--redis-budget-ms`.
pub const BACKGROUND_TIMEOUT: Duration = Duration::from_millis(500);
/// The default of `--redis-unresponsive-ms`.
pub const DEFAULT_UNRESPONSIVE: Duration = Duration::from_secs(2);
/// Backoff before the retry, plus up to as much again of jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Settled sales remembered per shard (skipped by the sync); past this, they are synced again.
/// Settled sales also leave the index ([`retention`]), so this only bounds one run's worth.
const MAX_SETTLED: usize = 100_000;
/// Due orders one sweep of one SKU expires at most; the next tick continues.
const EXPIRE_PER_SWEEP: u32 = 1000;

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port`, `redis-cluster://host:port,host:port,...` or
    /// `redis-sentinel://host:port,.../master-name` ([`url`]).
    pub url: String,
    /// Namespace of every key.
    pub prefix: String,
    /// Cancelled and expired orders kept per sale.
    pub closed_orders_per_sale: usize,
    /// Most purchases of one SKU per script call.
    pub max_batch: usize,
    /// Most purchase-script calls of one SKU in flight at once (`--redis-pipeline`).
    pub pipeline: usize,
    /// Longest one operation waits on Redis, its retry included (`--redis-budget-ms`).
    pub budget: Duration,
    /// Silence after which a connection with calls waiting is replaced
    /// (`--redis-unresponsive-ms`).
    pub unresponsive: Duration,
    /// Replicas that must confirm a purchase or transition before it is acknowledged.
    pub wait: ReplicaWait,
    /// How long the keys of a settled sale are kept (`--redis-retention-secs`); `None`: for
    /// ever ([`retention`]).
    pub retention: Option<Duration>,
}

/// Why a Redis call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// The breaker is open: Redis failed repeatedly just now.
    #[error("circuit breaker open")]
    Open,
    /// No reply within the operation's budget.
    #[error("timed out")]
    Timeout,
    /// The connection failed, or Redis is not serving (loading, cluster down): worth a retry.
    #[error("{0}")]
    Failed(String),
    /// Redis answered with an error that a retry would only repeat (a script error, a wrong
    /// type, out of memory).
    #[error("rejected by redis: {0}")]
    Rejected(String),
    /// The reply had an unexpected shape.
    #[error("unexpected reply: {0}")]
    Reply(String),
}

/// What the store measures about Redis.
#[derive(Debug, Default)]
struct RedisMetrics {
    /// Nanoseconds per call, successful or not.
    call_latency: Distribution,
    /// Purchases per purchase-script call.
    batch_size: Distribution,
    /// Purchase-script calls of the SKU in flight as each is sent, itself included.
    inflight: Distribution,
    /// The most of those ever seen.
    inflight_max: u64,
    errors: u64,
    timeouts: u64,
}

/// A copy of the store's Redis figures for a scrape.
#[derive(Debug, Clone, Default)]
pub struct RedisStats {
    /// Nanoseconds per call.
    pub call_latency: DistributionSnapshot,
    /// Purchases per purchase-script call.
    pub batch_size: DistributionSnapshot,
    /// Purchase-script calls of one SKU in flight as each is sent, itself included.
    pub inflight: DistributionSnapshot,
    /// The most purchase-script calls of one SKU seen in flight at once.
    pub inflight_max: u64,
    /// Calls that failed (errors, not timeouts).
    pub errors: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Each Redis node this shard routes keys to (every master of a cluster).
    pub masters: Vec<MasterStats>,
    /// Ghost orders: purchases answered 503 that may have run ([`abandon`]).
    pub abandon: abandon::AbandonStats,
    /// Order feed events trimmed from a SKU's stream before they were published.
    pub events_lost: u64,
}

/// One shard's view of one Redis node.
#[derive(Debug, Clone)]
pub struct MasterStats {
    /// `host:port`.
    pub server: Box<str>,
    /// Connected, and its breaker not open.
    pub up: bool,
    /// Connected, whatever its breaker says.
    pub connected: bool,
    /// Its breaker: 0 closed, 1 open, 2 half-open.
    pub breaker_state: u64,
    /// Times its breaker opened.
    pub breaker_opened: u64,
    /// Times the watchdog replaced its connection.
    pub replaced: u64,
}

struct Scripts {
    purchase: Script,
    transition: Script,
    sync: Script,
    upsert: Script,
    user_orders: Script,
    sale_orders: Script,
    resume: Script,
    abandon: Script,
    release: Script,
    settle: Script,
    renew: Script,
    take: Script,
    give: Script,
    join: Script,
    ticket: Script,
    registrants: Script,
}

/// State shared by the store and the batch flushers it spawns.
struct Inner {
    topology: RefCell<Topology>,
    budget: Duration,
    prefix: String,
    retention: usize,
    max_batch: usize,
    pipeline: usize,
    wait: ReplicaWait,
    shard: usize,
    shards: usize,
    scripts: Scripts,
    batches: RefCell<HashMap<Box<str>, batch::Batch>>,
    rng: RefCell<SmallRng>,
    metrics: RefCell<RedisMetrics>,
    /// Purchases answered 503 whose orders must be abandoned.
    abandon: RefCell<abandon::Abandon>,
    /// Remaining stock of each owned sale at the last sync, for `/metrics`.
    last_stock: RefCell<HashMap<Box<str>, u64>>,
    /// The queues of the fair-mode sales this shard owns, as of the last sync, for the metrics.
    last_queues: RefCell<Vec<crate::store::QueueGauge>>,
    /// Owned sales that are over for good: ended, and past the last payment deadline any of
    /// their orders can have. Nothing can change them any more (a started sale cannot be
    /// replaced), so the sync skips them instead of touching every sale ever made each tick.
    settled: RefCell<std::collections::HashSet<Box<str>>>,
    /// This shard's newest view of each owned SKU, to notice Redis losing writes.
    regression: RefCell<regression::Regression>,
    /// This node's name in regression reports.
    node: String,
    /// Order feed events trimmed from a stream before they were published ([`feed`]).
    feed_lost: std::cell::Cell<u64>,
    /// This shard's reclaimer leases and what it last saw of the SKUs it only watches
    /// ([`reclaim`]).
    reclaim: RefCell<reclaim::Reclaim>,
    /// What the change-notice subscription heard ([`notify`]).
    notices: RefCell<notify::Notices>,
    /// When each owned SKU is read next ([`schedule`]).
    schedule: RefCell<schedule::Schedule>,
    /// How long a settled sale's keys are kept; `None`: for ever ([`retention`]).
    settle_retention: Option<Duration>,
    /// Split sales' bucket counts, part levels and refills ([`buckets`]).
    buckets: RefCell<buckets::Buckets>,
}

/// One shard's view of the shared Redis.
#[derive(Clone)]
pub struct RedisStore(Rc<Inner>);

impl RedisStore {
    /// A store for shard `shard` of `shards`, connecting in the background: until Redis answers,
    /// calls fail and `/readyz` says so.
    pub fn connect(
        settings: &RedisSettings,
        shard: usize,
        shards: usize,
    ) -> Result<Self, RedisError> {
        let config = parse_url(&settings.url).map_err(RedisError::Failed)?;
        let topology = Topology::new(config)?;
        let mut rng = SmallRng::from_entropy();
        let node = regression::node_name();
        let reclaim = reclaim::Reclaim::new(&node, shard, rand::Rng::gen(&mut rng));
        let inner = Rc::new(Inner {
            topology: RefCell::new(topology),
            budget: settings.budget,
            prefix: settings.prefix.clone(),
            retention: settings.closed_orders_per_sale,
            max_batch: settings.max_batch.max(1),
            pipeline: settings.pipeline.max(1),
            wait: settings.wait,
            shard,
            shards,
            scripts: Scripts {
                purchase: Script::from_lua(scripts::PURCHASE),
                transition: Script::from_lua(scripts::TRANSITION),
                sync: Script::from_lua(scripts::SYNC),
                upsert: Script::from_lua(scripts::UPSERT),
                user_orders: Script::from_lua(scripts::USER_ORDERS),
                sale_orders: Script::from_lua(scripts::SALE_ORDERS),
                resume: Script::from_lua(scripts::RESUME),
                abandon: Script::from_lua(scripts::ABANDON),
                release: Script::from_lua(reclaim::RELEASE),
                settle: Script::from_lua(retention::SETTLE),
                renew: Script::from_lua(schedule::RENEW),
                take: Script::from_lua(buckets::TAKE),
                give: Script::from_lua(buckets::GIVE),
                join: Script::from_lua(scripts::JOIN),
                ticket: Script::from_lua(scripts::TICKET),
                registrants: Script::from_lua(scripts::REGISTRANTS),
            },
            batches: RefCell::new(HashMap::new()),
            rng: RefCell::new(rng),
            metrics: RefCell::new(RedisMetrics::default()),
            abandon: RefCell::new(abandon::Abandon::default()),
            last_stock: RefCell::new(HashMap::new()),
            last_queues: RefCell::new(Vec::new()),
            settled: RefCell::new(std::collections::HashSet::new()),
            regression: RefCell::new(regression::Regression::default()),
            node,
            feed_lost: std::cell::Cell::new(0),
            reclaim: RefCell::new(reclaim),
            notices: RefCell::new(notify::Notices::default()),
            schedule: RefCell::new(schedule::Schedule::default()),
            settle_retention: settings.retention,
            buckets: RefCell::new(buckets::Buckets::default()),
        });
        watchdog::spawn(&inner, settings.unresponsive);
        notify::spawn(&inner);
        Ok(Self(inner))
    }

    fn keys(&self, sku: &str) -> SkuKeys {
        SkuKeys::new(&self.0.prefix, sku)
    }

    fn owns(&self, sku: &str) -> bool {
        crate::shard::placement::owner_of(sku, self.0.shards) == self.0.shard
    }
}

impl From<RedisError> for SaleError {
    fn from(error: RedisError) -> Self {
        tracing::debug!(%error, "redis call failed");
        SaleError::Unavailable
    }
}

impl Store for RedisStore {
    async fn execute(&self, batch: Vec<Command>) -> Vec<Reply> {
        let mut replies = Vec::with_capacity(batch.len());
        for command in batch {
            replies.push(self.run(command).await);
        }
        replies
    }

    async fn execute_one(&self, command: Command) -> Reply {
        self.run(command).await
    }

    async fn boot_state(&self) -> BootState {
        // Sales are found by the first sync tick, which also runs whenever Redis comes back.
        BootState::default()
    }

    fn stats(&self) -> StoreStats {
        let metrics = self.0.metrics.borrow();
        let (regressions, regressed_skus) = self.0.regression.borrow().stats();
        let masters = self
            .0
            .topology
            .borrow()
            .masters()
            .iter()
            .map(|node| MasterStats {
                server: node.server.as_ref().into(),
                up: node.up(),
                connected: node.connected(),
                breaker_state: node.breaker().borrow().state().gauge(),
                breaker_opened: node.breaker_opened.get(),
                replaced: node.replaced.get(),
            })
            .collect();
        StoreStats {
            regressions,
            regressed_skus,
            redis: Some(RedisStats {
                call_latency: metrics.call_latency.snapshot(),
                batch_size: metrics.batch_size.snapshot(),
                inflight: metrics.inflight.snapshot(),
                inflight_max: metrics.inflight_max,
                errors: metrics.errors,
                timeouts: metrics.timeouts,
                masters,
                abandon: self.0.abandon.borrow().stats(),
                events_lost: self.0.feed_lost.get(),
            }),
            stock: self
                .0
                .last_stock
                .borrow()
                .iter()
                .map(|(sku, remaining)| (sku.clone(), *remaining))
                .collect(),
            queues: self.0.last_queues.borrow().clone(),
            ..StoreStats::default()
        }
    }

    /// Whether at least one node serves: on a cluster, SKUs on the healthy masters still sell
    /// while one master is down, so the node stays ready.
    fn healthy(&self) -> bool {
        self.0
            .topology
            .borrow()
            .masters()
            .iter()
            .any(|node| node.up())
    }

    fn shared(&self) -> bool {
        true
    }

    async fn run_feed(&self, feed: crate::feed::FeedLane) {
        self.pump_feed(feed).await;
    }

    async fn release(&self) {
        self.release_leases().await;
    }

    async fn shared_blocklist(&self) -> Option<Vec<Box<str>>> {
        let key = keys::blocked(&self.0.prefix);
        let client = self.route(&key).ok()?;
        let users: Vec<String> = self
            .call(&client, BACKGROUND_TIMEOUT, client.smembers(key.as_str()))
            .await
            .ok()?;
        Some(users.into_iter().map(Into::into).collect())
    }

    /// Reads the owned SKUs that changed or are due a poll ([`schedule`]); settled sales
    /// are not read at all ([`retention`]).
    async fn sync_owned(&self) -> Vec<Synced> {
        Box::pin(self.sync_scheduled()).await
    }
}
