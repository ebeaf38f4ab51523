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
//! - No `201` is sent unless the script's reply confirmed the order.

pub mod batch;
pub mod breaker;
pub mod keys;
pub mod scripts;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use fred::clients::Client;
use fred::interfaces::LuaInterface;
use fred::interfaces::{ClientLike, HashesInterface, SetsInterface};
use fred::types::config::{Config, Options, ReconnectPolicy, UnresponsiveConfig};
use fred::types::scripts::Script;
use fred::types::{Builder, Value};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{BootState, Store, StoreStats};
use crate::clock::{elapsed_nanos, now_ms};
use crate::metrics::{Distribution, DistributionSnapshot};
use crate::sale::command::{Command, Outcome, Reply, Requester, StockLevel};
use crate::sale::ids::OrderId;
use crate::sale::{Order, Sale, SaleError, SaleView};
use breaker::{Breaker, BreakerState};
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

/// A tokio context for the shard thread, entered for the shard's lifetime in cluster mode.
///
/// fred 10 under glommio still wraps closing a dropped connection in a hard-coded 5 s
/// `tokio::time::timeout`, which panics without a tokio context and takes the shard down the
/// first time Redis goes away. With this (never driven) context entered, that timeout merely
/// never fires; the close itself finishes as soon as the socket does. Every timeout we rely on
/// is a glommio timer.
pub fn fred_compat_context() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
}

/// Reads `--redis`: `redis://HOST:PORT`, or `redis-cluster://HOST:PORT,HOST:PORT,...` (the
/// comma list operators write; fred spells extra seed nodes `?node=HOST:PORT`).
pub fn parse_url(url: &str) -> Result<Config, String> {
    let fred_url = match url.strip_prefix("redis-cluster://") {
        Some(rest) => {
            let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
            let mut nodes = hosts.split(',').map(str::trim).filter(|h| !h.is_empty());
            let first = nodes
                .next()
                .ok_or_else(|| format!("`redis` {url:?} names no cluster node"))?;
            let mut converted = format!("redis-cluster://{first}");
            let mut params: Vec<String> = nodes.map(|node| format!("node={node}")).collect();
            if !query.is_empty() {
                params.push(query.to_owned());
            }
            if !params.is_empty() {
                converted.push('?');
                converted.push_str(&params.join("&"));
            }
            converted
        }
        None => url.to_owned(),
    };
    Config::from_url(&fred_url).map_err(|error| format!("`redis` {url:?} is not usable: {error}"))
}

/// How a node reaches Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://host:port` or `redis-cluster://host:port,host:port,...`.
    pub url: String,
    /// Namespace of every key.
    pub prefix: String,
    /// Cancelled and expired orders kept per sale.
    pub closed_orders_per_sale: usize,
    /// Most purchases of one SKU per script call.
    pub max_batch: usize,
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

    /// Runs one Redis operation under the breaker and the deadline, recording its latency.
    async fn call<T, F>(&self, operation: F) -> Result<T, RedisError>
    where
        F: std::future::Future<Output = Result<T, fred::error::Error>>,
    {
        if !self.0.breaker.borrow_mut().admit(Instant::now()) {
            return Err(RedisError::Open);
        }
        let started = Instant::now();
        let attempt = async { Ok(operation.await) };
        let result = match glommio::timer::timeout(CALL_TIMEOUT, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) if is_unavailable(&error) => Err(RedisError::Failed(error.to_string())),
            Ok(Err(error)) => Err(RedisError::Rejected(error.to_string())),
            Err(_) => Err(RedisError::Timeout),
        };
        let mut metrics = self.0.metrics.borrow_mut();
        metrics.call_latency.record(elapsed_nanos(started));
        match &result {
            Err(RedisError::Timeout) => metrics.timeouts += 1,
            Err(_) => metrics.errors += 1,
            Ok(_) => {}
        }
        let mut breaker = self.0.breaker.borrow_mut();
        let was_open = matches!(breaker.state(), BreakerState::Open(_));
        // Redis answered a rejection: it is up, so the breaker counts it as a success.
        let answered = !matches!(result, Err(RedisError::Failed(_) | RedisError::Timeout));
        breaker.record(answered, Instant::now());
        if !was_open && matches!(breaker.state(), BreakerState::Open(_)) {
            metrics.breaker_opened += 1;
            tracing::warn!(shard = self.0.shard, "redis circuit breaker opened");
        }
        result
    }

    /// [`RedisStore::call`] with retries, for operations that are safe to repeat (all of ours).
    async fn retrying<T, F, Fut>(&self, mut operation: F) -> Result<T, RedisError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, fred::error::Error>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.call(operation()).await {
                Ok(value) => return Ok(value),
                Err(
                    error @ (RedisError::Open | RedisError::Rejected(_) | RedisError::Reply(_)),
                ) => return Err(error),
                Err(error) if attempt >= ATTEMPTS => return Err(error),
                Err(_) => {
                    let jitter = self
                        .0
                        .rng
                        .borrow_mut()
                        .gen_range(0..=backoff.as_micros() as u64);
                    glommio::timer::sleep(backoff + Duration::from_micros(jitter)).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Runs `script` over `sku`'s keys, with retries.
    async fn script(
        &self,
        script: &Script,
        sku: &str,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        let keys = self.keys(sku).0;
        self.retrying(|| self.evalsha(script, keys.clone(), args.clone()))
            .await
    }

    /// The client, failing at once while disconnected. Otherwise fred would queue the command
    /// and send it after reconnecting, long after its caller was told 503: a purchase would then
    /// create an order nobody is waiting for.
    fn now_or_never(&self) -> fred::clients::WithOptions<Client> {
        self.0.client.with_options(&Options {
            fail_fast: true,
            ..Options::default()
        })
    }

    /// `EVALSHA`, loading the script and trying again on `NOSCRIPT` (a restarted or failed-over
    /// Redis has none).
    async fn evalsha(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, fred::error::Error> {
        let client = self.now_or_never();
        match client
            .evalsha::<Value, _, _, _>(script.sha1().clone(), keys.clone(), args.clone())
            .await
        {
            Err(error) if error.details().starts_with("NOSCRIPT") => {
                script.load(&self.0.client).await?;
                client
                    .evalsha::<Value, _, _, _>(script.sha1().clone(), keys, args)
                    .await
            }
            result => result,
        }
    }

    async fn get_sale(&self, sku: &str) -> Result<Option<(Sale, StockLevel)>, RedisError> {
        let args = vec![self.0.retention.to_string(), "0".to_owned()];
        let reply = self.script(&self.0.scripts.sync, sku, args).await?;
        decode_sale(sku, reply)
    }

    async fn upsert(&self, sale: Sale) -> Reply {
        let prefix = &self.0.prefix;
        let client = self.now_or_never();
        let client = &client;
        let sku = sale.sku.clone();
        self.retrying(|| client.sadd::<i64, _, _>(keys::sales(prefix), sku.as_ref()))
            .await?;
        let blocked: Vec<String> = self
            .retrying(|| client.smembers::<Vec<String>, _>(keys::blocked(prefix)))
            .await?;
        let mut args = vec![
            sale.name.to_string(),
            sale.stock.to_string(),
            sale.starts_at.to_string(),
            sale.ends_at.to_string(),
            sale.per_user_limit.to_string(),
            sale.payment_timeout_ms.to_string(),
            sale.rate_limit_per_sec.to_string(),
        ];
        args.extend(blocked.iter().cloned());
        let reply = self.script(&self.0.scripts.upsert, &sale.sku, args).await?;
        let fields = reply.into_array();
        match fields.first().and_then(Value::as_str).as_deref() {
            Some("ok") => {
                self.reconcile_blocklist(&sale.sku, &blocked).await?;
                let level = StockLevel {
                    remaining: int_at(&fields, 1)?,
                    seq: int_at(&fields, 2)?,
                };
                Ok(Outcome::Sale(SaleView::new(
                    &sale,
                    level.remaining,
                    level.seq,
                    now_ms(),
                )))
            }
            Some("err") => Err(refusal_at(&fields, 1)),
            _ => Err(SaleError::Unavailable),
        }
    }

    /// A block or unblock made while a sale was being created may have written the sale's copy
    /// of the blocklist before the upsert script replaced it; copy the changes since `copied`.
    async fn reconcile_blocklist(&self, sku: &str, copied: &[String]) -> Result<(), RedisError> {
        let client = self.now_or_never();
        let client = &client;
        let prefix = &self.0.prefix;
        let now: Vec<String> = self
            .retrying(|| client.smembers::<Vec<String>, _>(keys::blocked(prefix)))
            .await?;
        let keys = self.keys(sku);
        let set = keys.blocked();
        for user in now.iter().filter(|user| !copied.contains(user)) {
            self.retrying(|| client.sadd::<i64, _, _>(set, user.as_str()))
                .await?;
        }
        for user in copied.iter().filter(|user| !now.contains(user)) {
            self.retrying(|| client.srem::<i64, _, _>(set, user.as_str()))
                .await?;
        }
        Ok(())
    }

    async fn list_sales(&self) -> Reply {
        let prefix = &self.0.prefix;
        let client = self.now_or_never();
        let client = &client;
        let skus: Vec<String> = self
            .retrying(|| client.smembers::<Vec<String>, _>(keys::sales(prefix)))
            .await?;
        let now = now_ms();
        let mut views = Vec::new();
        for sku in skus.iter().filter(|sku| self.owns(sku)) {
            if let Some((sale, level)) = self.get_sale(sku).await? {
                views.push(SaleView::new(&sale, level.remaining, level.seq, now));
            }
        }
        Ok(Outcome::Sales(views))
    }

    async fn get_order(&self, id: &OrderId, requester: &Requester) -> Reply {
        let keys = self.keys(&id.sku);
        let client = self.now_or_never();
        let client = &client;
        let field = id.to_string();
        let raw: Option<String> = self
            .retrying(|| client.hget::<Option<String>, _, _>(keys.orders(), field.as_str()))
            .await?;
        let order = raw
            .map(|json| decode_order(&json))
            .transpose()?
            .filter(|order| requester.may_see(&order.user_id))
            .ok_or(SaleError::UnknownOrder)?;
        Ok(Outcome::Order {
            order,
            stock: None,
            replayed: false,
        })
    }

    async fn transition(&self, id: &OrderId, requester: &Requester, target: &str) -> Reply {
        let who = match requester {
            Requester::Admin => "*".to_owned(),
            Requester::Shopper(user) => user.to_string(),
        };
        let args = vec![
            self.0.retention.to_string(),
            id.to_string(),
            who,
            target.to_owned(),
        ];
        let reply = self
            .script(&self.0.scripts.transition, &id.sku, args)
            .await?;
        let fields = reply.into_array();
        let level = StockLevel {
            remaining: int_at(&fields, 2)?,
            seq: int_at(&fields, 3)?,
        };
        match fields.first().and_then(Value::as_str).as_deref() {
            Some("ok") => Ok(Outcome::Order {
                order: decode_order(&str_at(&fields, 1)?)?,
                stock: None,
                replayed: false,
            }),
            Some("changed") => Ok(Outcome::Order {
                order: decode_order(&str_at(&fields, 1)?)?,
                stock: Some(level),
                replayed: false,
            }),
            Some("err") => Err(refusal_at(&fields, 1)),
            _ => Err(SaleError::Unavailable),
        }
    }

    async fn set_blocked(&self, user_id: &str, blocked: bool) -> Reply {
        let prefix = &self.0.prefix;
        let client = self.now_or_never();
        let client = &client;
        let home = keys::blocked(prefix);
        if blocked {
            self.retrying(|| client.sadd::<i64, _, _>(home.as_str(), user_id))
                .await?;
        } else {
            self.retrying(|| client.srem::<i64, _, _>(home.as_str(), user_id))
                .await?;
        }
        // Every sale carries its own copy, so the purchase script can check it in its slot.
        let skus: Vec<String> = self
            .retrying(|| client.smembers::<Vec<String>, _>(keys::sales(prefix)))
            .await?;
        for sku in skus {
            let keys = self.keys(&sku);
            let set = keys.blocked().to_owned();
            if blocked {
                self.retrying(|| client.sadd::<i64, _, _>(set.as_str(), user_id))
                    .await?;
            } else {
                self.retrying(|| client.srem::<i64, _, _>(set.as_str(), user_id))
                    .await?;
            }
        }
        Ok(Outcome::Done)
    }

    async fn run(&self, command: Command) -> Reply {
        match command {
            Command::UpsertSale(sale) => self.upsert(sale).await,
            Command::GetSale(sku) => match self.get_sale(&sku).await? {
                Some((sale, level)) => Ok(Outcome::Sale(SaleView::new(
                    &sale,
                    level.remaining,
                    level.seq,
                    now_ms(),
                ))),
                None => Err(SaleError::UnknownSale),
            },
            Command::ListSales => self.list_sales().await,
            Command::Purchase(request) => batch::purchase(self, request).await,
            Command::GetOrder(id, requester) => self.get_order(&id, &requester).await,
            Command::Pay(id, user) => {
                self.transition(&id, &Requester::Shopper(user), "paid")
                    .await
            }
            Command::Cancel(id, requester) => self.transition(&id, &requester, "cancelled").await,
            Command::Expire(id) => {
                let args = vec![self.0.retention.to_string(), EXPIRE_PER_SWEEP.to_string()];
                self.script(&self.0.scripts.sync, &id.sku, args).await?;
                Ok(Outcome::Done)
            }
            Command::SetBlocked(user_id, blocked) => self.set_blocked(&user_id, blocked).await,
        }
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

/// The sale and level from a `SYNC` reply; `None` for an unknown SKU.
fn decode_sale(sku: &str, reply: Value) -> Result<Option<(Sale, StockLevel)>, RedisError> {
    let fields = reply.into_array();
    if fields.is_empty() {
        return Ok(None);
    }
    let name = str_at(&fields, 0).map_err(|_| RedisError::Reply("sale name".into()))?;
    let int =
        |index| int_at(&fields, index).map_err(|_| RedisError::Reply(format!("field {index}")));
    let sale = Sale {
        sku: sku.into(),
        name: name.into(),
        stock: int(1)?,
        starts_at: int(2)?,
        ends_at: int(3)?,
        per_user_limit: u32::try_from(int(4)?).unwrap_or(u32::MAX),
        payment_timeout_ms: int(5)?,
        rate_limit_per_sec: u32::try_from(int(6)?).unwrap_or(u32::MAX),
    };
    let level = StockLevel {
        remaining: int(7)?,
        seq: int(8)?,
    };
    Ok(Some((sale, level)))
}

/// Whether a fred error means Redis could not be reached or is not serving now (worth a retry,
/// and a failure for the breaker), rather than Redis rejecting the command.
fn is_unavailable(error: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    let busy = [
        "TRYAGAIN",
        "CLUSTERDOWN",
        "LOADING",
        "MASTERDOWN",
        "MOVED",
        "ASK",
    ]
    .iter()
    .any(|prefix| error.details().starts_with(prefix));
    busy || matches!(
        error.kind(),
        ErrorKind::IO
            | ErrorKind::Canceled
            | ErrorKind::Timeout
            | ErrorKind::Cluster
            | ErrorKind::Routing
            | ErrorKind::Backpressure
    )
}

fn decode_order(json: &str) -> Result<Order, SaleError> {
    let mut bytes = json.as_bytes().to_vec();
    simd_json::serde::from_slice::<Order>(&mut bytes).map_err(|error| {
        tracing::error!(%error, "an order in redis does not decode");
        SaleError::Unavailable
    })
}

fn str_at(fields: &[Value], index: usize) -> Result<String, SaleError> {
    fields
        .get(index)
        .and_then(Value::as_string)
        .ok_or(SaleError::Unavailable)
}

fn int_at(fields: &[Value], index: usize) -> Result<u64, SaleError> {
    fields
        .get(index)
        .and_then(Value::as_i64)
        .and_then(|value| u64::try_from(value).ok())
        .ok_or(SaleError::Unavailable)
}

fn refusal_at(fields: &[Value], index: usize) -> SaleError {
    let code = fields.get(index).and_then(Value::as_string);
    SaleError::ALL
        .iter()
        .copied()
        .find(|refusal| Some(refusal.code()) == code.as_deref())
        .unwrap_or(SaleError::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::parse_url;

    #[test]
    fn cluster_urls_take_a_comma_list() {
        let config = parse_url("redis-cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002")
            .expect("a valid cluster url");
        let mut hosts: Vec<String> = config
            .server
            .hosts()
            .iter()
            .map(|server| format!("{}:{}", server.host, server.port))
            .collect();
        hosts.sort();
        assert_eq!(
            hosts,
            ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
        );
        assert!(parse_url("redis://127.0.0.1:6379").is_ok());
        assert!(parse_url("redis-cluster://").is_err());
        assert!(parse_url("redis://127.0.0.1:notaport").is_err());
    }
}
