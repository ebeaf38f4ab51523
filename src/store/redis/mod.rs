//! The Redis store: Redis (or a Redis Cluster) holds the truth for every node, and each shard
//! talks to it through its own fred client on its own glommio executor.
//!
//! - Every state change is one Lua script over one SKU's keys ([`scripts`], [`keys`]).
//! - Concurrent purchases of a SKU are coalesced into one script call ([`batch`]): no wait is
//!   added when traffic is light, and under load one round trip carries up to `--redis-batch`
//!   purchases.
//! - Every call has a deadline enforced with glommio's timer (fred's own timeouts need tokio and
//!   are all zero), goes through a circuit breaker ([`breaker`]), and is retried with backoff and
//!   jitter. Retrying is safe because every operation is idempotent: a purchase carries its order
//!   id, minted before the first attempt, and the script answers a retry with the order it
//!   already made; pay, cancel and expire are guarded by the order's state.
//! - No `201` is sent unless the script's reply confirmed the order and, with `--redis-wait N`,
//!   N replicas confirmed having it (see `replication`).

pub mod batch;
pub mod breaker;
mod calls;
mod commands;
mod decode;
pub mod keys;
mod replication;
pub mod scripts;
pub mod url;

pub use calls::fred_compat_context;
pub use replication::ReplicaWait;
pub use url::parse_url;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, SetsInterface};
use fred::types::config::{ReconnectPolicy, UnresponsiveConfig};
use fred::types::scripts::Script;
use fred::types::Builder;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use super::{BootState, Store, StoreStats};
use crate::clock::now_ms;
use crate::metrics::{Distribution, DistributionSnapshot};
use crate::sale::command::{Command, Reply, StockLevel};
use crate::sale::{Sale, SaleError};
use breaker::{Breaker, BreakerState};
use decode::decode_sale;
use keys::SkuKeys;

/// Longest a single Redis call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts per operation, the first included.
const ATTEMPTS: u32 = 3;
/// Backoff before the second attempt; doubled after, plus up to as much again of jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
/// Settled sales remembered per shard (skipped by the sync); past this, they are synced again.
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
    /// Replicas that must confirm a purchase or transition before it is acknowledged.
    pub wait: ReplicaWait,
}

/// Why a Redis call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// The breaker is open: Redis failed repeatedly just now.
    #[error("circuit breaker open")]
    Open,
    /// No reply within [`CALL_TIMEOUT`].
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
    errors: u64,
    timeouts: u64,
    breaker_opened: u64,
}

/// A copy of the store's Redis figures for a scrape.
#[derive(Debug, Clone, Default)]
pub struct RedisStats {
    /// Nanoseconds per call.
    pub call_latency: DistributionSnapshot,
    /// Purchases per purchase-script call.
    pub batch_size: DistributionSnapshot,
    /// Calls that failed (errors, not timeouts).
    pub errors: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Times the breaker opened.
    pub breaker_opened: u64,
    /// 0 closed, 1 open, 2 half-open.
    pub breaker_state: u64,
}

struct Scripts {
    purchase: Script,
    transition: Script,
    sync: Script,
    upsert: Script,
}

/// State shared by the store and the batch flushers it spawns.
struct Inner {
    client: Client,
    prefix: String,
    retention: usize,
    max_batch: usize,
    wait: ReplicaWait,
    shard: usize,
    shards: usize,
    scripts: Scripts,
    breaker: RefCell<Breaker>,
    batches: RefCell<HashMap<Box<str>, batch::Batch>>,
    rng: RefCell<SmallRng>,
    metrics: RefCell<RedisMetrics>,
    /// Remaining stock of each owned sale at the last sync, for `/metrics`.
    last_stock: RefCell<HashMap<Box<str>, u64>>,
    /// Owned sales that are over for good: ended, and past the last payment deadline any of
    /// their orders can have. Nothing can change them any more (a started sale cannot be
    /// replaced), so the sync skips them instead of touching every sale ever made each tick.
    settled: RefCell<std::collections::HashSet<Box<str>>>,
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
        let mut config = parse_url(&settings.url).map_err(RedisError::Failed)?;
        // Keep trying when Redis is down at startup too: a node must come up by itself once
        // Redis does, not stay disconnected until restarted.
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                // Under glommio every fred timeout must be zero (its timers need tokio);
                // deadlines are enforced around each call instead.
                connection.connection_timeout = Duration::ZERO;
                connection.internal_command_timeout = Duration::ZERO;
                // Retries are ours, deliberate and idempotent.
                connection.max_command_attempts = 1;
                connection.max_command_buffer_len = 10_000;
                // A connection whose peer vanished without a reset is noticed and replaced,
                // instead of every call timing out until the kernel gives up on it.
                connection.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(Duration::from_secs(2)),
                    interval: Duration::from_millis(500),
                };
            })
            .with_performance_config(|performance| {
                performance.default_command_timeout = Duration::ZERO;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 1_000, 2))
            .build()
            .map_err(|error| RedisError::Failed(error.to_string()))?;
        client.connect();
        Ok(Self(Rc::new(Inner {
            client,
            prefix: settings.prefix.clone(),
            retention: settings.closed_orders_per_sale,
            max_batch: settings.max_batch.max(1),
            wait: settings.wait,
            shard,
            shards,
            scripts: Scripts {
                purchase: Script::from_lua(scripts::PURCHASE),
                transition: Script::from_lua(scripts::TRANSITION),
                sync: Script::from_lua(scripts::SYNC),
                upsert: Script::from_lua(scripts::UPSERT),
            },
            breaker: RefCell::new(Breaker::default()),
            batches: RefCell::new(HashMap::new()),
            rng: RefCell::new(SmallRng::from_entropy()),
            metrics: RefCell::new(RedisMetrics::default()),
            last_stock: RefCell::new(HashMap::new()),
            settled: RefCell::new(std::collections::HashSet::new()),
        })))
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

    async fn boot_state(&self) -> BootState {
        // Sales are found by the first sync tick, which also runs whenever Redis comes back.
        BootState::default()
    }

    fn stats(&self) -> StoreStats {
        let metrics = self.0.metrics.borrow();
        StoreStats {
            redis: Some(RedisStats {
                call_latency: metrics.call_latency.snapshot(),
                batch_size: metrics.batch_size.snapshot(),
                errors: metrics.errors,
                timeouts: metrics.timeouts,
                breaker_opened: metrics.breaker_opened,
                breaker_state: self.0.breaker.borrow().state().gauge(),
            }),
            stock: self
                .0
                .last_stock
                .borrow()
                .iter()
                .map(|(sku, remaining)| (sku.clone(), *remaining))
                .collect(),
            ..StoreStats::default()
        }
    }

    fn healthy(&self) -> bool {
        self.0.client.is_connected()
            && !matches!(self.0.breaker.borrow().state(), BreakerState::Open(_))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn shared_blocklist(&self) -> Option<Vec<Box<str>>> {
        let client = self.now_or_never();
        let users: Vec<String> = self
            .call(client.smembers::<Vec<String>, _>(keys::blocked(&self.0.prefix)))
            .await
            .ok()?;
        Some(users.into_iter().map(Into::into).collect())
    }

    async fn sync_owned(&self) -> Vec<(Sale, StockLevel)> {
        let prefix = &self.0.prefix;
        let client = self.now_or_never();
        let client = &client;
        let Ok(skus) = self
            .call(client.smembers::<Vec<String>, _>(keys::sales(prefix)))
            .await
        else {
            return Vec::new();
        };
        let mut owned = Vec::new();
        let now = now_ms();
        for sku in skus.iter().filter(|sku| self.owns(sku)) {
            if self.0.settled.borrow().contains(sku.as_str()) {
                continue;
            }
            let args = vec![self.0.retention.to_string(), EXPIRE_PER_SWEEP.to_string()];
            let keys = self.keys(sku).0;
            let reply = self
                .call(self.evalsha(&self.0.scripts.sync, keys, args))
                .await;
            if let Ok(Ok(Some((sale, level)))) = reply.map(|reply| decode_sale(sku, reply)) {
                // A margin over the last deadline, for clocks that disagree with Redis `TIME`.
                let settled_at = sale
                    .ends_at
                    .saturating_add(sale.payment_timeout_ms)
                    .saturating_add(60_000);
                if now > settled_at && self.0.settled.borrow().len() < MAX_SETTLED {
                    self.0.settled.borrow_mut().insert(sale.sku.clone());
                }
                owned.push((sale, level));
            }
        }
        *self.0.last_stock.borrow_mut() = owned
            .iter()
            .map(|(sale, level)| (sale.sku.clone(), level.remaining))
            .collect();
        owned
    }
}
