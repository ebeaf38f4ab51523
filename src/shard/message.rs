//! What shards say to each other over the glommio channel mesh.

use futures::channel::oneshot;

use crate::metrics::ShardSnapshot;
use crate::sale::command::{Command, Reply};
use crate::sale::{Order, Sale, SaleError, SaleView};

/// A message from one shard to another.
#[derive(Debug)]
pub enum ShardMsg {
    /// Run a command as the owner and send back the reply.
    Call {
        /// The command, already past the edge checks.
        command: Command,
        /// Where the caller waits: a pooled slot, as routed purchases are the hot path.
        reply: super::reply::ReplyTo<Reply>,
    },
    /// Read these sales as their owner and send back the views found, in any order.
    ReadSales {
        /// SKUs the receiver owns.
        skus: Vec<Box<str>>,
        /// Where the caller waits.
        reply: oneshot::Sender<Result<Vec<SaleView>, SaleError>>,
    },
    /// Look up a SKU the sender's edge does not know, as its owner; see [`super::discovery`].
    Discover {
        /// A SKU the receiver owns.
        sku: Box<str>,
        /// Where the caller waits.
        reply: oneshot::Sender<super::discovery::Lookup>,
    },
    /// Read one user's orders of these sales as their owner; see [`crate::shard::orders`].
    ReadOrders {
        /// Whose orders.
        user_id: Box<str>,
        /// SKUs the receiver owns.
        skus: Vec<Box<str>>,
        /// Most orders to send back (the newest).
        limit: usize,
        /// Where the caller waits.
        reply: oneshot::Sender<OrdersRead>,
    },
    /// Send back a copy of the receiver's metrics.
    Scrape {
        /// Where the scraping shard waits.
        reply: oneshot::Sender<ShardSnapshot>,
    },
    /// Update the receiver's edge replica; acknowledge if asked.
    Notice {
        /// The update.
        notice: Notice,
        /// Answered once applied, when the sender must know every shard has seen it.
        ack: Option<oneshot::Sender<()>>,
    },
}

/// One owner's part of a user's order list.
#[derive(Debug, Default)]
pub struct OrdersRead {
    /// The orders found, newest first.
    pub orders: Vec<Order>,
    /// Sales read.
    pub read: usize,
    /// Sales that could not be read (their store failed).
    pub failed: usize,
}

impl OrdersRead {
    /// The answer when none of `skus` sales could be read.
    pub fn failed(skus: usize) -> Self {
        Self {
            failed: skus,
            ..Self::default()
        }
    }
}

/// An update to every shard's edge replica, sent by whoever owns the fact.
#[derive(Debug, Clone)]
pub enum Notice {
    /// A sale was created or replaced; `version` orders it with stock flags for the same SKU.
    SaleUpserted {
        /// The definition.
        sale: Sale,
        /// The owner's flag version at the time.
        version: u64,
    },
    /// The owner saw the SKU's stock reach zero (`true`) or come back (`false`).
    StockFlag {
        /// Which SKU.
        sku: Box<str>,
        /// Whether purchases can be refused at the edge.
        sold_out: bool,
        /// Monotonic per owner; older flags arriving late are ignored.
        version: u64,
    },
    /// A user was added to (`true`) or removed from (`false`) the blocklist.
    Blocked {
        /// Who.
        user_id: Box<str>,
        /// Added or removed.
        blocked: bool,
    },
    /// A shard's smoothed purchase demand per rate-limited SKU, for the owners that split the
    /// node rate.
    Demand {
        /// The reporting shard.
        from: usize,
        /// Requests per second, by SKU.
        per_sku: Vec<(Box<str>, f64)>,
    },
    /// The owner saw the SKU's shared store regress (lost writes): refuse every purchase
    /// (`true`), until an operator resumed it (`false`).
    Regressed {
        /// Which SKU.
        sku: Box<str>,
        /// Whether purchases are refused.
        regressed: bool,
    },
    /// A sale owner's split of its sales' rates: every shard's fraction, indexed by shard.
    Shares {
        /// Fractions adding up to at most 1, by SKU.
        per_sku: Vec<(Box<str>, Vec<f64>)>,
    },
}
