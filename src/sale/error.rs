//! Domain refusals: the business reasons a command can fail, each with a stable wire code.

/// Why the sale engine refused a command. Each variant maps to one HTTP status and `error` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleError {
    /// No sale exists for the SKU.
    UnknownSale,
    /// The order does not exist, or the caller may not see it.
    UnknownOrder,
    /// A started sale cannot be replaced.
    SaleExists,
    /// The sale window has not opened yet.
    NotStarted,
    /// The sale window has closed.
    Ended,
    /// The shopper is on the blocklist.
    Blocked,
    /// The shopper would exceed the per-user limit (pending and paid orders count).
    LimitExceeded,
    /// No stock is left.
    SoldOut,
    /// Some stock is left, but less than the quantity asked for.
    InsufficientStock,
    /// The order expired before payment.
    OrderExpired,
    /// The order was cancelled.
    OrderCancelled,
    /// A paid order cannot be cancelled.
    OrderPaid,
    /// The store could not be reached or did not confirm in time.
    Unavailable,
}

impl SaleError {
    /// The HTTP status this refusal is answered with.
    pub fn status(self) -> u16 {
        match self {
            Self::UnknownSale | Self::UnknownOrder => 404,
            Self::SaleExists
            | Self::SoldOut
            | Self::InsufficientStock
            | Self::OrderExpired
            | Self::OrderCancelled
            | Self::OrderPaid => 409,
            Self::NotStarted => 425,
            Self::Ended => 410,
            Self::Blocked | Self::LimitExceeded => 403,
            Self::Unavailable => 503,
        }
    }

    /// The stable machine-readable `error` code.
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownSale => "unknown_sale",
            Self::UnknownOrder => "unknown_order",
            Self::SaleExists => "sale_exists",
            Self::NotStarted => "not_started",
            Self::Ended => "ended",
            Self::Blocked => "blocked",
            Self::LimitExceeded => "limit_exceeded",
            Self::SoldOut => "sold_out",
            Self::InsufficientStock => "insufficient_stock",
            Self::OrderExpired => "order_expired",
            Self::OrderCancelled => "order_cancelled",
            Self::OrderPaid => "order_paid",
            Self::Unavailable => "unavailable",
        }
    }

    /// A human-readable explanation for the `message` field.
    pub fn message(self) -> &'static str {
        match self {
            Self::UnknownSale => "no sale exists for this sku",
            Self::UnknownOrder => "no such order",
            Self::SaleExists => "a sale for this sku has already started and cannot be replaced",
            Self::NotStarted => "the sale has not started yet",
            Self::Ended => "the sale has ended",
            Self::Blocked => "this user may not buy",
            Self::LimitExceeded => "this purchase would exceed the per-user limit",
            Self::SoldOut => "sold out",
            Self::InsufficientStock => "not enough stock left for this quantity",
            Self::OrderExpired => "the order expired before payment",
            Self::OrderCancelled => "the order was cancelled",
            Self::OrderPaid => "the order is already paid",
            Self::Unavailable => "the store is unavailable, try again",
        }
    }
}
