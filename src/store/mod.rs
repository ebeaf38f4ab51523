//! The store boundary: where the owner shard's commands are decided and made to last.
//!
//! The engine hands a store batches of [`Command`]s and gets one [`Reply`] per command, in order.
//! A store may decide the commands itself (the embedded store runs the [`Book`](crate::sale::book::Book)
//! in memory; a Redis store runs Lua scripts) and must not answer until the change is as durable
//! as it promises. Batches let a store amortise its expensive step: one `fdatasync` or one Redis
//! round trip for many commands.

pub mod embedded;
pub mod journal;
pub mod node;
pub mod redis;

use crate::feed::FeedLane;
use crate::sale::command::{Command, Reply, StockLevel};
use crate::sale::ids::OrderId;
use crate::sale::model::Admission;
use crate::sale::{OrderCounts, Sale};

pub use embedded::EmbeddedStore;
pub use journal::JournalStats;
pub use node::NodeStore;
pub use redis::{RedisSettings, RedisStats, RedisStore};

/// What a shard's store reports to a metrics scrape.
#[derive(Debug, Clone, Default)]
pub struct StoreStats {
    /// Remaining stock of each sale this shard owns.
    pub stock: Vec<(Box<str>, u64)>,
    /// Orders held, by status.
    pub orders: OrderCounts,
    /// Group commit figures, for the embedded store.
    pub journal: Option<JournalStats>,
    /// Call figures, for the Redis store.
    pub redis: Option<RedisStats>,
    /// Times a SKU of this shard was seen to regress (lost writes in a shared store).
    pub regressions: u64,
    /// SKUs of this shard refused now because their store regressed.
    pub regressed_skus: u64,
    /// The waiting rooms and lotteries of the sales this shard owns.
    pub queues: Vec<QueueGauge>,
}

/// One fair-mode sale's queue, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGauge {
    /// The sale.
    pub sku: Box<str>,
    /// Tickets issued (waiting room) or registrations made (lottery).
    pub tickets: u64,
    /// A drawn lottery's winners (at most its registrants); 0 otherwise.
    pub winners: u64,
}

impl QueueGauge {
    /// The gauge of `sale` with `tickets` in its queue at `now_ms`; `None` for a
    /// first-come-first-served sale.
    pub fn of(sale: &Sale, tickets: u64, now_ms: u64) -> Option<Self> {
        let winners = match sale.admission {
            Admission::Fcfs => return None,
            Admission::WaitingRoom => 0,
            Admission::Lottery if sale.has_started(now_ms) => {
                tickets.min(crate::sale::lottery::winners(
                    sale.stock,
                    sale.per_user_limit,
                    sale.overbooking_percent,
                ))
            }
            Admission::Lottery => 0,
        };
        Some(Self {
            sku: sale.sku.clone(),
            tickets,
            winners,
        })
    }
}

/// What one sync learned about one SKU of a shared store. A SKU that could not be read is left
/// out of the sync's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Which SKU.
    pub sku: Box<str>,
    /// The sale with its stock and epoch (bumped by every resume); `None` when the store has no
    /// such sale.
    pub sale: Option<(Sale, StockLevel, u64)>,
    /// The regression report (JSON) while the SKU is stopped because its state in the store went
    /// backwards; `None` when it may sell.
    pub regressed: Option<Box<str>>,
    /// Tickets (or lottery registrations) the sale's queue holds.
    pub tickets: u64,
}

/// What a shard must republish when it starts on existing state.
#[derive(Debug, Default)]
pub struct BootState {
    /// Sales this shard owns, with their stock.
    pub sales: Vec<(Sale, StockLevel)>,
    /// Blocked users homed on this shard.
    pub blocked: Vec<Box<str>>,
    /// Pending orders and their deadlines.
    pub pending: Vec<(OrderId, u64)>,
}

/// A shard-local store. Not `Send`: each shard owns its own instance, in keeping with the
/// thread-per-core design, so `async fn` here deliberately makes no `Send` promise.
#[allow(async_fn_in_trait)]
pub trait Store {
    /// Decides and persists `batch` in order, returning one reply per command.
    async fn execute(&self, batch: Vec<Command>) -> Vec<Reply>;

    /// Decides and persists one command: what a routed purchase is, so a store may answer it
    /// without the two vectors of a batch.
    async fn execute_one(&self, command: Command) -> Reply {
        self.execute(vec![command])
            .await
            .pop()
            .unwrap_or(Err(crate::sale::SaleError::Unavailable))
    }

    /// The state the shard starts with, to republish to every shard's edge.
    async fn boot_state(&self) -> BootState;

    /// Figures for `/metrics`. Called only on scrape, so it may walk the owned sales.
    fn stats(&self) -> StoreStats;

    /// Whether the store can take changes now (for `/readyz`).
    fn healthy(&self) -> bool;

    /// Whether other nodes change the same state. A shared store expires due orders itself and
    /// is polled for sales and stock the other nodes changed ([`Store::sync_owned`]); an unshared
    /// one is told about every change by this node's shards.
    fn shared(&self) -> bool {
        false
    }

    /// For a shared store: reclaims due orders of the sales this shard owns and reports each of
    /// them, including every SKU this shard has seen even if the store's index of sales lost it,
    /// and whether the store regressed from what this shard saw. Called every owner tick.
    async fn sync_owned(&self) -> Vec<Synced> {
        Vec::new()
    }

    /// For a shared store: the whole blocklist, which other nodes may have changed; `None` if
    /// it cannot be read now.
    async fn shared_blocklist(&self) -> Option<Vec<Box<str>>> {
        None
    }

    /// Publishes the order feed from this shard's durable outbox through `feed` until the shard
    /// stops: each SKU's events in order, each at least once, none before it is durable. Runs
    /// as its own task, off the request path; it never waits on the broker, only polls.
    async fn run_feed(&self, feed: FeedLane);

    /// Called once when the shard drains, after its last tick: gives up what this shard holds in
    /// a shared store on behalf of the others (work leases), so another node takes it over at
    /// once rather than when the hold lapses.
    async fn release(&self) {}
}
