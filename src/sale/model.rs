//! The nouns of a flash sale: a sale's definition, its public view, and an order.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::ids::OrderId;

/// Most characters a SKU or a user id may have.
pub const MAX_ID_LEN: usize = 64;

/// Whether `id` is a valid SKU or user id: 1–64 characters from `[A-Za-z0-9_-]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A sale as the admin defined it. Immutable once it has started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    /// The stock-keeping unit this sale sells; also the partitioning key.
    pub sku: Box<str>,
    /// Display name.
    pub name: Box<str>,
    /// Units on offer in total.
    pub stock: u64,
    /// First millisecond at which purchases are accepted.
    pub starts_at: u64,
    /// First millisecond at which purchases are refused again.
    pub ends_at: u64,
    /// Most units one user may hold in pending and paid orders together.
    pub per_user_limit: u32,
    /// How long a pending order waits for payment before its stock returns.
    pub payment_timeout_ms: u64,
    /// Node-wide admission rate for purchases; 0 means unlimited.
    pub rate_limit_per_sec: u32,
    /// Price of one unit in the currency's minor units (cents, fen); 0 when the admin set none.
    #[serde(default)]
    pub price: u64,
    /// ISO 4217 code of the price's currency: three uppercase letters.
    #[serde(default = "default_currency")]
    pub currency: Box<str>,
    /// Buckets the stock is split into ([`MAX_STOCK_BUCKETS`] at most). In cluster mode each
    /// bucket has its own Redis hash tag, so on a Redis Cluster a hot SKU's purchases spread
    /// over several masters; the embedded store keeps one book and only shows the field.
    #[serde(default = "one_bucket")]
    pub stock_buckets: u32,
    /// Leading zero bits of the proof-of-work a purchase must carry ([`super::pow`]); 0 asks
    /// for none.
    #[serde(default)]
    pub pow_bits: u8,
    /// How shoppers get to buy: first come first served, or through a waiting room.
    #[serde(default)]
    pub admission: Admission,
    /// With a waiting room: the first millisecond shoppers may join its queue (at or before
    /// `starts_at`); unused otherwise.
    #[serde(default)]
    pub queue_opens_at: u64,
    /// With a waiting room: tickets admitted per second from `starts_at`; unused otherwise.
    #[serde(default)]
    pub admission_rate: u32,
    /// With a lottery: the first millisecond shoppers may register (at or before `starts_at`,
    /// when registration closes and the draw is made); unused otherwise.
    #[serde(default)]
    pub register_from: u64,
    /// With a lottery: winners drawn, as a percentage of the registrations the stock covers at
    /// the per-user limit (100 = exactly enough, 150 = half as many again for winners who do not
    /// buy); unused otherwise.
    #[serde(default)]
    pub overbooking_percent: u32,
}

/// How a sale's shoppers get to buy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// First come, first served: whoever's purchase reaches the owner first buys.
    #[default]
    Fcfs,
    /// Shoppers join a queue before the start; at the start the early tickets are put in a
    /// random order, and tickets are admitted in that order at the sale's `admission_rate`.
    /// A purchase needs the pass an admitted ticket carries
    /// ([`crate::sale::waiting_room`]).
    WaitingRoom,
    /// Shoppers register before the start; at the start winners are drawn among them from a
    /// seed committed to in advance and revealed then, and only winners' passes buy
    /// ([`crate::sale::lottery`]).
    Lottery,
}

impl Admission {
    /// The name used in the API.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fcfs => "fcfs",
            Self::WaitingRoom => "waiting_room",
            Self::Lottery => "lottery",
        }
    }
}

/// Most buckets a sale's stock may be split into: an order id names its bucket in 6 bits
/// ([`super::ids::OrderId::bucket`]).
pub const MAX_STOCK_BUCKETS: u32 = 64;

/// The default of [`Sale::stock_buckets`], for serde: the whole stock in one bucket.
pub fn one_bucket() -> u32 {
    1
}

/// The currency of a sale whose definition names none.
pub const DEFAULT_CURRENCY: &str = "CNY";

/// [`DEFAULT_CURRENCY`], for serde.
pub fn default_currency() -> Box<str> {
    DEFAULT_CURRENCY.into()
}

/// Whether `code` looks like an ISO 4217 currency code: three ASCII uppercase letters.
pub fn is_valid_currency(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

impl Sale {
    /// What `quantity` units cost, or `None` if it does not fit in a `u64`.
    pub fn amount(&self, quantity: u32) -> Option<u64> {
        self.price.checked_mul(u64::from(quantity))
    }

    /// Whether the window has opened at `now_ms`.
    pub fn has_started(&self, now_ms: u64) -> bool {
        now_ms >= self.starts_at
    }

    /// Whether the window has closed at `now_ms`.
    pub fn has_ended(&self, now_ms: u64) -> bool {
        now_ms >= self.ends_at
    }

    /// Whether nothing can change this sale any more at `now_ms`: it has ended and the last
    /// payment deadline any of its orders can have is [`SETTLE_MARGIN_MS`] behind. A shared
    /// store may then let its keys expire, and the SKU be used for a new sale.
    pub fn is_over_for_good(&self, now_ms: u64) -> bool {
        let settled_at = self
            .ends_at
            .saturating_add(self.payment_timeout_ms)
            .saturating_add(SETTLE_MARGIN_MS);
        now_ms > settled_at
    }
}

/// Margin past a sale's last payment deadline before it counts as over for good, for node
/// clocks that disagree with the shared store's.
pub const SETTLE_MARGIN_MS: u64 = 60_000;

/// The lifecycle phase of a sale, as shoppers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleState {
    /// The window has not opened.
    Upcoming,
    /// Buying is possible.
    Open,
    /// The window is open but nothing is left right now.
    SoldOut,
    /// The window has closed.
    Ended,
}

/// The public representation of a sale: its definition plus live stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SaleView {
    /// See [`Sale::sku`].
    pub sku: Box<str>,
    /// See [`Sale::name`].
    pub name: Box<str>,
    /// See [`Sale::stock`].
    pub stock: u64,
    /// Units not held by pending or paid orders.
    pub remaining: u64,
    /// See [`Sale::starts_at`].
    pub starts_at: u64,
    /// See [`Sale::ends_at`].
    pub ends_at: u64,
    /// See [`Sale::per_user_limit`].
    pub per_user_limit: u32,
    /// See [`Sale::payment_timeout_ms`].
    pub payment_timeout_ms: u64,
    /// See [`Sale::rate_limit_per_sec`].
    pub rate_limit_per_sec: u32,
    /// See [`Sale::price`].
    pub price: u64,
    /// See [`Sale::currency`].
    pub currency: Box<str>,
    /// See [`Sale::stock_buckets`].
    pub stock_buckets: u32,
    /// See [`Sale::pow_bits`].
    pub pow_bits: u8,
    /// See [`Sale::admission`].
    pub admission: Admission,
    /// See [`Sale::queue_opens_at`].
    pub queue_opens_at: u64,
    /// See [`Sale::admission_rate`].
    pub admission_rate: u32,
    /// See [`Sale::register_from`].
    pub register_from: u64,
    /// See [`Sale::overbooking_percent`].
    pub overbooking_percent: u32,
    /// Derived from the window and `remaining` at the time of the view.
    pub state: SaleState,
    /// The sale's stock-change counter at the time of the view (internal, not serialised).
    #[serde(skip)]
    pub stock_seq: u64,
}

impl SaleView {
    /// Builds the view of `sale` with `remaining` units left, as seen at `now_ms`.
    pub fn new(sale: &Sale, remaining: u64, stock_seq: u64, now_ms: u64) -> Self {
        let state = if !sale.has_started(now_ms) {
            SaleState::Upcoming
        } else if sale.has_ended(now_ms) {
            SaleState::Ended
        } else if remaining == 0 {
            SaleState::SoldOut
        } else {
            SaleState::Open
        };
        Self {
            sku: sale.sku.clone(),
            name: sale.name.clone(),
            stock: sale.stock,
            remaining,
            starts_at: sale.starts_at,
            ends_at: sale.ends_at,
            per_user_limit: sale.per_user_limit,
            payment_timeout_ms: sale.payment_timeout_ms,
            rate_limit_per_sec: sale.rate_limit_per_sec,
            price: sale.price,
            currency: sale.currency.clone(),
            stock_buckets: sale.stock_buckets,
            pow_bits: sale.pow_bits,
            admission: sale.admission,
            queue_opens_at: sale.queue_opens_at,
            admission_rate: sale.admission_rate,
            register_from: sale.register_from,
            overbooking_percent: sale.overbooking_percent,
            state,
            stock_seq,
        }
    }
}

/// Where an order is in its life. Only `Pending` can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Stock is held, waiting for payment until `expires_at`.
    Pending,
    /// Paid: the stock is sold for good.
    Paid,
    /// Not paid in time: the stock went back.
    Expired,
    /// Cancelled by the shopper or an admin: the stock went back.
    Cancelled,
}

impl OrderStatus {
    /// Whether the order still holds stock (counts against stock and the per-user limit).
    pub fn holds_stock(self) -> bool {
        matches!(self, Self::Pending | Self::Paid)
    }

    /// Whether closing a pending order with this status gives its units back.
    pub fn returns_stock(self) -> bool {
        matches!(self, Self::Expired | Self::Cancelled)
    }

    /// Every status, in [`OrderCounts`] order.
    pub const ALL: [OrderStatus; 4] = [Self::Pending, Self::Paid, Self::Expired, Self::Cancelled];

    /// The name used in the API and in metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }
}

/// How many orders a book holds in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OrderCounts([u64; 4]);

impl OrderCounts {
    /// Orders in `status`.
    pub fn get(&self, status: OrderStatus) -> u64 {
        self.0[status as usize]
    }

    /// Counts one more order in `status`.
    pub fn add(&mut self, status: OrderStatus) {
        self.0[status as usize] += 1;
    }

    /// Counts one order fewer in `status`.
    pub fn remove(&mut self, status: OrderStatus) {
        let slot = &mut self.0[status as usize];
        *slot = slot.saturating_sub(1);
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &OrderCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

/// One shopper's claim on some units of a sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Opaque, globally unique id; it also names the SKU so it can be routed to its owner shard.
    pub order_id: OrderId,
    /// The SKU bought; shared with the sale's ledger and the id, so an order copies no SKU.
    pub sku: Arc<str>,
    /// The buyer; shared, so the copies an order makes (journal event, reply) copy no string.
    pub user_id: Arc<str>,
    /// Units held.
    pub quantity: u32,
    /// Current lifecycle state.
    pub status: OrderStatus,
    /// When the order was accepted.
    pub created_at: u64,
    /// When a pending order expires.
    pub expires_at: u64,
    /// What the order costs: the sale's price times the quantity, in minor units of the sale's
    /// currency. 0 for orders made before sales had prices.
    #[serde(default)]
    pub amount: u64,
    /// The payment side's reference for the payment that paid this order.
    #[serde(default)]
    pub payment_ref: Option<Box<str>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_charset_and_length_rule() {
        assert!(is_valid_id("moutai-2026_A"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id("a.b"));
        assert!(!is_valid_id("a/b"));
    }
}
