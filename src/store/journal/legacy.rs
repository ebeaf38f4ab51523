//! Records as older formats wrote them. postcard is not self-describing, so a struct that grows
//! a field no longer reads its old records; these copies of the old shapes read them, and the
//! `From` impls upgrade them:
//! - format 2, before sales had prices and orders amounts ([`EventV1`]: price 0 in the default
//!   currency, amount 0, no payment reference);
//! - formats 3 and 4, before proof-of-work ([`EntryV4`]: `pow_bits` 0).

use serde::{Deserialize, Serialize};

use super::format::Entry;
use crate::feed::FeedEvent;
use crate::sale::command::Event;
use crate::sale::ids::OrderId;
use crate::sale::model::{default_currency, Order, OrderStatus, Sale};

/// [`Sale`] before prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleV1 {
    /// See the current struct's field of this name.
    pub sku: Box<str>,
    /// See the current struct's field of this name.
    pub name: Box<str>,
    /// See the current struct's field of this name.
    pub stock: u64,
    /// See the current struct's field of this name.
    pub starts_at: u64,
    /// See the current struct's field of this name.
    pub ends_at: u64,
    /// See the current struct's field of this name.
    pub per_user_limit: u32,
    /// See the current struct's field of this name.
    pub payment_timeout_ms: u64,
    /// See the current struct's field of this name.
    pub rate_limit_per_sec: u32,
}

/// [`Order`] before amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderV1 {
    /// See the current struct's field of this name.
    pub order_id: OrderId,
    /// See the current struct's field of this name.
    pub sku: Box<str>,
    /// See the current struct's field of this name.
    pub user_id: Box<str>,
    /// See the current struct's field of this name.
    pub quantity: u32,
    /// See the current struct's field of this name.
    pub status: OrderStatus,
    /// See the current struct's field of this name.
    pub created_at: u64,
    /// See the current struct's field of this name.
    pub expires_at: u64,
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
                stock_buckets: 1,
                pow_bits: 0,
                admission: Default::default(),
                queue_opens_at: 0,
                admission_rate: 0,
                register_from: 0,
                overbooking_percent: 0,
            }),
            EventV1::OrderCreated {
                order: o,
                idempotency_key,
            } => Event::OrderCreated {
                order: Order {
                    order_id: o.order_id,
                    sku: o.sku.into(),
                    user_id: o.user_id.into(),
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

/// [`Sale`] as formats 3 and 4 wrote it, before proof-of-work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleV4 {
    /// See the current struct's field of this name.
    pub sku: Box<str>,
    /// See the current struct's field of this name.
    pub name: Box<str>,
    /// See the current struct's field of this name.
    pub stock: u64,
    /// See the current struct's field of this name.
    pub starts_at: u64,
    /// See the current struct's field of this name.
    pub ends_at: u64,
    /// See the current struct's field of this name.
    pub per_user_limit: u32,
    /// See the current struct's field of this name.
    pub payment_timeout_ms: u64,
    /// See the current struct's field of this name.
    pub rate_limit_per_sec: u32,
    /// See the current struct's field of this name.
    pub price: u64,
    /// See the current struct's field of this name.
    pub currency: Box<str>,
    /// See the current struct's field of this name.
    pub stock_buckets: u32,
}

impl From<SaleV4> for Sale {
    fn from(s: SaleV4) -> Self {
        Sale {
            sku: s.sku,
            name: s.name,
            stock: s.stock,
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            per_user_limit: s.per_user_limit,
            payment_timeout_ms: s.payment_timeout_ms,
            rate_limit_per_sec: s.rate_limit_per_sec,
            price: s.price,
            currency: s.currency,
            stock_buckets: s.stock_buckets,
            pow_bits: 0,
            admission: Default::default(),
            queue_opens_at: 0,
            admission_rate: 0,
            register_from: 0,
            overbooking_percent: 0,
        }
    }
}

/// [`Event`] as formats 3 and 4 wrote it, in the same variant order; only the sale differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventV4 {
    /// See [`Event::SaleUpserted`].
    SaleUpserted(SaleV4),
    /// See [`Event::OrderCreated`].
    OrderCreated {
        /// The order.
        order: Order,
        /// Its idempotency key.
        idempotency_key: Option<Box<str>>,
    },
    /// See [`Event::OrderClosed`].
    OrderClosed {
        /// Which order.
        order_id: OrderId,
        /// Its final status.
        status: OrderStatus,
        /// The payment's reference, when paid.
        payment_ref: Option<Box<str>>,
    },
    /// See [`Event::UserBlocked`].
    UserBlocked(Box<str>, bool),
    /// See [`Event::FeedPublished`].
    FeedPublished {
        /// Which SKU's queue.
        sku: Box<str>,
        /// The id of the last event published.
        through: Box<str>,
    },
    /// See [`Event::FeedUnpublished`].
    FeedUnpublished(FeedEvent),
}

impl From<EventV4> for Event {
    fn from(old: EventV4) -> Self {
        match old {
            EventV4::SaleUpserted(sale) => Event::SaleUpserted(sale.into()),
            EventV4::OrderCreated {
                order,
                idempotency_key,
            } => Event::OrderCreated {
                order,
                idempotency_key,
            },
            EventV4::OrderClosed {
                order_id,
                status,
                payment_ref,
            } => Event::OrderClosed {
                order_id,
                status,
                payment_ref,
            },
            EventV4::UserBlocked(user, blocked) => Event::UserBlocked(user, blocked),
            EventV4::FeedPublished { sku, through } => Event::FeedPublished { sku, through },
            EventV4::FeedUnpublished(event) => Event::FeedUnpublished(event),
        }
    }
}

/// [`Entry`] as formats 2 to 4 wrote it, in the same variant order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryV4 {
    /// A state change as format 2 wrote it, before prices.
    EventV1(EventV1),
    /// See [`Entry::SnapshotEnd`].
    SnapshotEnd {
        /// Events in the snapshot.
        events: u64,
        /// Last LSN of the log folded into this snapshot.
        covers_lsn: u64,
    },
    /// See [`Entry::Event`].
    Event(EventV4),
}

impl From<EntryV4> for Entry {
    fn from(old: EntryV4) -> Self {
        match old {
            EntryV4::EventV1(event) => Entry::Event(event.into()),
            EntryV4::SnapshotEnd { events, covers_lsn } => {
                Entry::SnapshotEnd { events, covers_lsn }
            }
            EntryV4::Event(event) => Entry::Event(event.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`Entry`] as format 2 had it.
    #[derive(Serialize)]
    enum EntryV2 {
        Event(EventV1),
        SnapshotEnd { events: u64, covers_lsn: u64 },
    }

    #[test]
    fn format_2_records_read_as_current_events() {
        let mut rng = rand::rngs::mock::StepRng::new(7, 1);
        let order_id = OrderId::mint("sku", 1_000, &mut rng);
        let sale = SaleV1 {
            sku: "sku".into(),
            name: "n".into(),
            stock: 5,
            starts_at: 1,
            ends_at: 2,
            per_user_limit: 1,
            payment_timeout_ms: 100,
            rate_limit_per_sec: 0,
        };
        let order = OrderV1 {
            order_id: order_id.clone(),
            sku: "sku".into(),
            user_id: "u".into(),
            quantity: 2,
            status: OrderStatus::Pending,
            created_at: 1_000,
            expires_at: 1_100,
        };
        let old = [
            EntryV2::Event(EventV1::SaleUpserted(sale)),
            EntryV2::Event(EventV1::OrderCreated {
                order,
                idempotency_key: Some("k".into()),
            }),
            EntryV2::Event(EventV1::OrderClosed {
                order_id: order_id.clone(),
                status: OrderStatus::Paid,
            }),
            EntryV2::Event(EventV1::UserBlocked("u".into(), true)),
            EntryV2::SnapshotEnd {
                events: 4,
                covers_lsn: 9,
            },
        ];
        let read: Vec<Entry> = old
            .iter()
            .map(|entry| {
                let bytes = postcard::to_allocvec(entry).expect("encode");
                Entry::from(
                    postcard::from_bytes::<EntryV4>(&bytes).expect("a format 2 record decodes"),
                )
            })
            .collect();
        let Entry::Event(Event::SaleUpserted(sale)) = &read[0] else {
            panic!("{:?}", read[0]);
        };
        assert_eq!((sale.price, &*sale.currency, sale.stock), (0, "CNY", 5));
        let Entry::Event(Event::OrderCreated { order, .. }) = &read[1] else {
            panic!("{:?}", read[1]);
        };
        assert_eq!(
            (order.amount, order.quantity, &order.payment_ref),
            (0, 2, &None)
        );
        assert!(matches!(
            &read[2],
            Entry::Event(Event::OrderClosed {
                payment_ref: None,
                status: OrderStatus::Paid,
                ..
            })
        ));
        assert!(matches!(
            &read[3],
            Entry::Event(Event::UserBlocked(_, true))
        ));
        assert!(matches!(
            &read[4],
            Entry::SnapshotEnd {
                events: 4,
                covers_lsn: 9
            }
        ));
    }

    #[test]
    fn format_4_sales_read_without_proof_of_work() {
        let sale = SaleV4 {
            sku: "sku".into(),
            name: "n".into(),
            stock: 5,
            starts_at: 1,
            ends_at: 2,
            per_user_limit: 1,
            payment_timeout_ms: 100,
            rate_limit_per_sec: 7,
            price: 300,
            currency: "EUR".into(),
            stock_buckets: 4,
        };
        let bytes =
            postcard::to_allocvec(&EntryV4::Event(EventV4::SaleUpserted(sale))).expect("encode");
        let read = Entry::from(postcard::from_bytes::<EntryV4>(&bytes).expect("decodes"));
        let Entry::Event(Event::SaleUpserted(sale)) = read else {
            panic!("{read:?}");
        };
        assert_eq!(
            (
                sale.price,
                &*sale.currency,
                sale.stock_buckets,
                sale.pow_bits
            ),
            (300, "EUR", 4, 0)
        );
        // The current shape does not read it: the version in the header decides.
        assert!(postcard::from_bytes::<Entry>(&bytes).is_err());
    }
}
