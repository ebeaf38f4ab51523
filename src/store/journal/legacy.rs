//! Records as format 2 wrote them before sales had prices and orders amounts. postcard is not
//! self-describing, so a struct that grows a field no longer reads its old records; these copies
//! of the old shapes read them, and [`Event::from`] upgrades them (price 0 in the default
//! currency, amount 0, no payment reference).

use serde::{Deserialize, Serialize};

use crate::sale::command::Event;
use crate::sale::ids::OrderId;
use crate::sale::model::{default_currency, Order, OrderStatus, Sale};

/// [`Sale`] before prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleV1 {
    sku: Box<str>,
    name: Box<str>,
    stock: u64,
    starts_at: u64,
    ends_at: u64,
    per_user_limit: u32,
    payment_timeout_ms: u64,
    rate_limit_per_sec: u32,
}

/// [`Order`] before amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderV1 {
    order_id: OrderId,
    sku: Box<str>,
    user_id: Box<str>,
    quantity: u32,
    status: OrderStatus,
    created_at: u64,
    expires_at: u64,
}

/// [`Event`] before prices, in the same variant order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventV1 {
    /// See [`Event::SaleUpserted`].
    SaleUpserted(SaleV1),
    /// See [`Event::OrderCreated`].
    OrderCreated {
        /// The order.
        order: OrderV1,
        /// Its idempotency key.
        idempotency_key: Option<Box<str>>,
    },
    /// See [`Event::OrderClosed`].
    OrderClosed {
        /// Which order.
        order_id: OrderId,
        /// Its final status.
        status: OrderStatus,
    },
    /// See [`Event::UserBlocked`].
    UserBlocked(Box<str>, bool),
}

impl From<EventV1> for Event {
    fn from(old: EventV1) -> Self {
        match old {
            EventV1::SaleUpserted(s) => Event::SaleUpserted(Sale {
                sku: s.sku,
                name: s.name,
                stock: s.stock,
                starts_at: s.starts_at,
                ends_at: s.ends_at,
                per_user_limit: s.per_user_limit,
                payment_timeout_ms: s.payment_timeout_ms,
                rate_limit_per_sec: s.rate_limit_per_sec,
                price: 0,
                currency: default_currency(),
            }),
            EventV1::OrderCreated {
                order: o,
                idempotency_key,
            } => Event::OrderCreated {
                order: Order {
                    order_id: o.order_id,
                    sku: o.sku,
                    user_id: o.user_id,
                    quantity: o.quantity,
                    status: o.status,
                    created_at: o.created_at,
                    expires_at: o.expires_at,
                    amount: 0,
                    payment_ref: None,
                },
                idempotency_key,
            },
            EventV1::OrderClosed { order_id, status } => Event::OrderClosed {
                order_id,
                status,
                payment_ref: None,
            },
            EventV1::UserBlocked(user, blocked) => Event::UserBlocked(user, blocked),
        }
    }
}
