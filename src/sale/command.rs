//! The language between the edge and the owner shard: commands in, outcomes out, and the events
//! a successful change leaves behind for the store to persist.
//!
//! Commands and events cross shard boundaries, so they own their data (`Box<str>`, `Arc<str>`
//! where an order's copies share a string, or an [`InlineId`] on the purchase path; no `Rc`).

use super::ids::OrderId;
use super::model::{Order, OrderStatus, Sale, SaleView, MAX_ID_LEN};
use super::waiting_room::TicketView;
use super::SaleError;

/// Who is asking, as far as order visibility is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// The admin sees and may cancel every order.
    Admin,
    /// A shopper sees and acts on their own orders only.
    Shopper(Box<str>),
}

impl Requester {
    /// Whether this requester may see an order placed by `user_id`.
    pub fn may_see(&self, user_id: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Shopper(me) => **me == *user_id,
        }
    }
}

/// A SKU or user id held in place. Valid ids are at most [`MAX_ID_LEN`] bytes, so a purchase
/// carries both to the owner shard without allocating; the owner shares the shopper's stored id
/// (or makes it, for a new shopper).
pub type InlineId = arrayvec::ArrayString<MAX_ID_LEN>;

/// A purchase attempt that passed the edge checks (auth, window, blocklist, rate, sold-out flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseRequest {
    /// The SKU to buy.
    pub sku: InlineId,
    /// The authenticated buyer.
    pub user_id: InlineId,
    /// Units wanted, 1..=100.
    pub quantity: u32,
    /// Makes retries safe: the same user and key get the original order back.
    pub idempotency_key: Option<Box<str>>,
}

impl PurchaseRequest {
    /// A purchase of `quantity` units of `sku` by `user_id`; `None` if either id is longer than
    /// any valid id.
    pub fn new(
        sku: &str,
        user_id: &str,
        quantity: u32,
        idempotency_key: Option<Box<str>>,
    ) -> Option<Self> {
        Some(Self {
            sku: InlineId::from(sku).ok()?,
            user_id: InlineId::from(user_id).ok()?,
            quantity,
            idempotency_key,
        })
    }
}

/// A payment confirmed by the payment side (its credential or its signed webhook).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// What was paid, in minor units of the sale's currency; must equal the order's amount.
    pub amount: u64,
    /// The payment side's reference; a repeat with the same one gets the same answer.
    pub payment_ref: Box<str>,
}

/// One operation for the owner of a SKU (or, for blocklist changes, the home shard of a user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a sale, or replace one that has not started.
    UpsertSale(Sale),
    /// Read one sale with its live stock.
    GetSale(Box<str>),
    /// Try to buy.
    Purchase(PurchaseRequest),
    /// Read an order.
    GetOrder(OrderId, Requester),
    /// Pay a pending order, on the payment side's word.
    Pay(OrderId, Payment),
    /// Cancel a pending order.
    Cancel(OrderId, Requester),
    /// Expire a pending order whose deadline has passed; a no-op otherwise.
    Expire(OrderId),
    /// Add a user to, or remove them from, the blocklist.
    SetBlocked(Box<str>, bool),
    /// A user's most recent orders of one sale (SKU, user id), newest first; none for a SKU
    /// the store does not know.
    ListOrders(Box<str>, Box<str>),
    /// Let a SKU whose shared store regressed (lost writes) sell again, optionally with this
    /// many units left; an operator's decision, answered with a report of what was lost.
    Resume(Box<str>, Option<u64>),
    /// A page of a SKU's orders for the admin, in id order (see [`super::sale_orders`]).
    ListSaleOrders(SaleOrdersQuery),
    /// Give a shopper a ticket in a sale's waiting room, or the one they hold.
    JoinQueue(QueueJoin),
    /// Read a shopper's ticket (a lottery registration is a ticket too).
    GetTicket {
        /// The sale.
        sku: Box<str>,
        /// Who asks: only the holder may read a ticket.
        user_id: Box<str>,
        /// The ticket's number; `None` for the one `user_id` holds.
        number: Option<u64>,
    },
    /// A page of a lottery's registrants in drawn order (none before the draw), and how many
    /// registered.
    Registrants {
        /// The sale.
        sku: Box<str>,
        /// Registrants to skip.
        offset: u64,
        /// Most registrants on the page.
        limit: u64,
    },
}

/// A shopper joining a sale's waiting room, as the edge admitted it (auth, blocklist,
/// proof-of-work).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueJoin {
    /// The sale.
    pub sku: Box<str>,
    /// The shopper.
    pub user_id: Box<str>,
    /// The ticket's score, which orders the early tickets
    /// ([`super::pass::PassKey::score`]).
    pub score: u64,
}

/// What `GET /v1/sales/{sku}/orders` asks the SKU's owner for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleOrdersQuery {
    /// The SKU.
    pub sku: Box<str>,
    /// Only orders in this status, if given.
    pub status: Option<OrderStatus>,
    /// Start after this order id (of the same SKU).
    pub after: Option<OrderId>,
    /// Most orders on the page.
    pub limit: usize,
}

impl Command {
    /// The SKU whose owner must run this command, if it is SKU-bound.
    pub fn sku(&self) -> Option<&str> {
        match self {
            Self::UpsertSale(sale) => Some(&sale.sku),
            Self::GetSale(sku) | Self::ListOrders(sku, _) | Self::Resume(sku, _) => Some(sku),
            Self::Purchase(request) => Some(&request.sku),
            Self::GetOrder(id, _) | Self::Pay(id, _) | Self::Cancel(id, _) | Self::Expire(id) => {
                Some(&id.sku)
            }
            Self::ListSaleOrders(query) => Some(&query.sku),
            Self::JoinQueue(join) => Some(&join.sku),
            Self::GetTicket { sku, .. } | Self::Registrants { sku, .. } => Some(sku),
            Self::SetBlocked(..) => None,
        }
    }
}

/// What a command produced when it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// One sale.
    Sale(SaleView),
    /// An order, after the command; `stock` is the SKU's stock afterwards when the command
    /// changed it, so the owner can tell every shard when a SKU sells out or comes back.
    Order {
        /// The order as it is now.
        order: Order,
        /// Stock after this command, when it changed stock.
        stock: Option<StockLevel>,
        /// Whether this answers a purchase that was already made with the same idempotency key.
        replayed: bool,
    },
    /// Orders, newest first.
    Orders(Vec<Order>),
    /// A page of one SKU's orders in id order; `next` is the cursor for the following page,
    /// absent when no order follows.
    OrderPage {
        /// The orders, ascending by id.
        orders: Vec<Order>,
        /// The last id looked at, when more may follow.
        next: Option<OrderId>,
    },
    /// Nothing to return.
    Done,
    /// A regressed SKU was resumed: the report of what was lost, as JSON.
    Resumed(Box<str>),
    /// A lottery's registrants: how many, and a page of them in drawn order.
    Registrants {
        /// Registrations made.
        total: u64,
        /// Whether the draw has been made (the page is empty before).
        drawn: bool,
        /// The page.
        users: Vec<Box<str>>,
    },
    /// A waiting-room ticket as it stands.
    Ticket {
        /// The ticket.
        ticket: TicketView,
        /// Whether this call issued it (a repeated join answers with the ticket already held).
        issued: bool,
    },
}

/// A SKU's stock at one point in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockLevel {
    /// Units left.
    pub remaining: u64,
    /// Counts stock changes of the sale; replies that arrive out of order are told apart by it,
    /// so an older level never overrides a newer one.
    pub seq: u64,
}

/// The answer to one command.
pub type Reply = Result<Outcome, SaleError>;

/// A state change, as persisted by durable stores and replayed on recovery.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A sale was created or replaced.
    SaleUpserted(Sale),
    /// An order was accepted and its stock taken; or, from a snapshot, an order restored in
    /// whatever status it had (taking stock only if it still holds it).
    OrderCreated {
        /// The order: pending when live, any status when restored.
        order: Order,
        /// The idempotency key it was bought with, so replays survive a restart.
        idempotency_key: Option<Box<str>>,
    },
    /// A pending order reached a final state.
    OrderClosed {
        /// Which order.
        order_id: OrderId,
        /// Paid, cancelled or expired.
        status: OrderStatus,
        /// The payment's reference, when paid.
        payment_ref: Option<Box<str>>,
    },
    /// A user was blocked (`true`) or unblocked (`false`).
    UserBlocked(Box<str>, bool),
    /// The order feed's events of `sku` up to and including `through` reached the broker.
    /// Only the outbox reads it ([`crate::feed::outbox`]); the book ignores it.
    FeedPublished {
        /// Which SKU's queue.
        sku: Box<str>,
        /// The id of the last event published.
        through: Box<str>,
    },
    /// An order feed event not yet published when the snapshot holding it was taken.
    FeedUnpublished(crate::feed::FeedEvent),
    /// A shopper got the next ticket of a sale's waiting room.
    TicketIssued {
        /// The sale.
        sku: Box<str>,
        /// The shopper.
        user_id: Box<str>,
        /// When: before the sale's start makes it an early ticket.
        issued_at: u64,
        /// See [`QueueJoin::score`].
        score: u64,
    },
}
