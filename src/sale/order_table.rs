//! The book's orders, stored compactly.
//!
//! A flash sale's memory is its orders: at a million pending orders every byte of a record is a
//! megabyte. The wire and journal form, [`Order`], is 112 bytes under a 16-byte key, because it
//! carries its id (with the SKU), the SKU again, two full times and an optional payment reference.
//! Stored here, an order is 48 bytes under a 16-byte key that is not aligned to 16:
//! - the SKU is a slot in this table's list of SKUs, and the id is the key;
//! - the deadline is an offset from creation (payment windows are days at most);
//! - payment references live beside the orders, since only paid orders have one.
//!
//! `cargo bench --bench map_growth` measures what this saves.

use std::collections::HashMap;
use std::sync::Arc;

use super::ids::{OrderId, Unique};
use super::model::{Order, OrderStatus};
use super::segmented::SegmentedMap;
use super::sku_slots::SkuSlots;

/// The longest payment window an order can be stored with: its deadline is kept as a 32-bit
/// offset from its creation (about 49 days; sales accept at most 7).
pub const MAX_PAYMENT_WINDOW_MS: u64 = u32::MAX as u64;

/// One order as the table keeps it; [`OrderRef::to_order`] spells it out again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredOrder {
    /// Shared with the buyer's holder entry, so a shopper's id is stored once however many
    /// orders they make.
    user_id: Arc<str>,
    created_at: u64,
    amount: u64,
    /// `expires_at - created_at`.
    payment_window_ms: u32,
    quantity: u32,
    /// The SKU's number in [`OrderTable::skus`].
    sku_slot: u32,
    status: OrderStatus,
}

/// Every order a book retains, by its id's unique part.
#[derive(Debug, Clone, Default)]
pub struct OrderTable {
    orders: SegmentedMap<Unique, StoredOrder>,
    /// Each SKU an order was ever stored under, once; an order names its SKU by number.
    skus: SkuSlots,
    /// The payment reference of each paid order that has one.
    payment_refs: HashMap<u128, Box<str>>,
}

impl PartialEq for OrderTable {
    /// Two tables are equal when they hold the same orders, whatever slots their SKUs got.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.iter().all(|order| {
                other
                    .get(order.unique)
                    .is_some_and(|theirs| theirs.to_order() == order.to_order())
            })
    }
}

/// Whether `order` can be stored exactly: its deadline no earlier than its creation and within
/// [`MAX_PAYMENT_WINDOW_MS`] of it. Every order this server makes can; recovery refuses a record
/// that cannot.
pub fn fits(order: &Order) -> bool {
    order
        .expires_at
        .checked_sub(order.created_at)
        .is_some_and(|window| window <= MAX_PAYMENT_WINDOW_MS)
}

impl OrderTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Orders held.
    pub fn len(&self) -> usize {
        self.orders.len()
    }

    /// Whether no order is held.
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty()
    }

    /// The table's shared copy of `sku`, so a sale's ledger and its orders' ids share one string.
    pub fn intern_sku(&mut self, sku: &str) -> Arc<str> {
        Arc::clone(self.skus.intern(sku))
    }

    /// The order stored under `unique`.
    pub fn get(&self, unique: u128) -> Option<OrderRef<'_>> {
        let stored = self.orders.get(&Unique::from(unique))?;
        Some(OrderRef {
            unique,
            stored,
            table: self,
        })
    }

    /// Stores `order`, with `user_id` as its buyer (the holder's shared copy of the same id).
    /// Returns the status of the order it replaced, if any. An order that does not [`fits`] is
    /// stored with its deadline clamped; recovery never lets one through.
    pub fn insert(&mut self, order: &Order, user_id: Arc<str>) -> Option<OrderStatus> {
        let sku_slot = self.skus.slot_of(&order.sku);
        let window = order.expires_at.saturating_sub(order.created_at);
        let stored = StoredOrder {
            user_id,
            created_at: order.created_at,
            amount: order.amount,
            payment_window_ms: u32::try_from(window).unwrap_or(u32::MAX),
            quantity: order.quantity,
            sku_slot,
            status: order.status,
        };
        let unique = order.order_id.unique;
        self.set_payment_ref(unique, order.payment_ref.as_deref());
        self.orders
            .insert(Unique::from(unique), stored)
            .map(|replaced| replaced.status)
    }

    /// Moves the order `unique` to `status`, with the payment reference that paid it. Returns
    /// false if there is no such order.
    pub fn set_status(
        &mut self,
        unique: u128,
        status: OrderStatus,
        payment_ref: Option<&str>,
    ) -> bool {
        let Some(stored) = self.orders.get_mut(&Unique::from(unique)) else {
            return false;
        };
        stored.status = status;
        self.set_payment_ref(unique, payment_ref);
        true
    }

    fn set_payment_ref(&mut self, unique: u128, payment_ref: Option<&str>) {
        match payment_ref {
            Some(payment_ref) => {
                self.payment_refs.insert(unique, Box::from(payment_ref));
            }
            // Most orders never had one: skip hashing the key into an empty map.
            None if self.payment_refs.is_empty() => {}
            None => {
                self.payment_refs.remove(&unique);
            }
        }
    }

    /// Forgets the order `unique`; returns its status and buyer.
    pub fn remove(&mut self, unique: u128) -> Option<(OrderStatus, Arc<str>)> {
        let stored = self.orders.remove(&Unique::from(unique))?;
        self.payment_refs.remove(&unique);
        Some((stored.status, stored.user_id))
    }

    /// Every order, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = OrderRef<'_>> {
        self.orders.iter().map(|(unique, stored)| OrderRef {
            unique: u128::from(*unique),
            stored,
            table: self,
        })
    }
}

/// A stored order, read in place.
#[derive(Debug, Clone, Copy)]
pub struct OrderRef<'a> {
    unique: u128,
    stored: &'a StoredOrder,
    table: &'a OrderTable,
}

impl<'a> OrderRef<'a> {
    /// The unique part of the order's id.
    pub fn unique(&self) -> u128 {
        self.unique
    }

    /// The SKU bought.
    pub fn sku(&self) -> &'a Arc<str> {
        self.table.skus.sku(self.stored.sku_slot)
    }

    /// The buyer.
    pub fn user_id(&self) -> &'a Arc<str> {
        &self.stored.user_id
    }

    /// Units held.
    pub fn quantity(&self) -> u32 {
        self.stored.quantity
    }

    /// Current lifecycle state.
    pub fn status(&self) -> OrderStatus {
        self.stored.status
    }

    /// What the order costs.
    pub fn amount(&self) -> u64 {
        self.stored.amount
    }

    /// When the order was made.
    pub fn created_at(&self) -> u64 {
        self.stored.created_at
    }

    /// When a pending order expires.
    pub fn expires_at(&self) -> u64 {
        self.stored
            .created_at
            .saturating_add(u64::from(self.stored.payment_window_ms))
    }

    /// The payment side's reference for the payment that paid the order.
    pub fn payment_ref(&self) -> Option<&'a str> {
        self.table.payment_refs.get(&self.unique).map(|r| &**r)
    }

    /// The order's id.
    pub fn order_id(&self) -> OrderId {
        OrderId {
            unique: self.unique,
            sku: Arc::clone(self.sku()),
        }
    }

    /// The order in its wire and journal form.
    pub fn to_order(&self) -> Order {
        Order {
            order_id: self.order_id(),
            sku: Arc::clone(self.sku()),
            user_id: Arc::clone(self.user_id()),
            quantity: self.quantity(),
            status: self.status(),
            created_at: self.created_at(),
            expires_at: self.expires_at(),
            amount: self.amount(),
            payment_ref: self.payment_ref().map(Box::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(unique: u128, sku: &str, window: u64) -> Order {
        Order {
            order_id: OrderId {
                unique,
                sku: sku.into(),
            },
            sku: sku.into(),
            user_id: "u".into(),
            quantity: 2,
            status: OrderStatus::Pending,
            created_at: 1_700_000_000_000,
            expires_at: 1_700_000_000_000 + window,
            amount: 299_800,
            payment_ref: None,
        }
    }

    #[test]
    fn an_order_reads_back_as_it_went_in() {
        assert_eq!(std::mem::size_of::<StoredOrder>(), 48);
        let mut table = OrderTable::new();
        let first = order(u128::MAX - 1, "a", 900_000);
        let second = order(7, "b", MAX_PAYMENT_WINDOW_MS);
        assert_eq!(table.insert(&first, first.user_id.clone()), None);
        assert_eq!(table.insert(&second, second.user_id.clone()), None);
        assert_eq!(
            table.get(first.order_id.unique).map(|o| o.to_order()),
            Some(first.clone())
        );
        assert_eq!(table.get(7).map(|o| o.to_order()), Some(second));
        assert!(table.set_status(first.order_id.unique, OrderStatus::Paid, Some("pay-1")));
        let paid = table.get(first.order_id.unique).map(|o| o.to_order());
        assert_eq!(paid.as_ref().map(|o| o.status), Some(OrderStatus::Paid));
        assert_eq!(paid.and_then(|o| o.payment_ref), Some(Box::from("pay-1")));
        assert_eq!(
            table
                .remove(first.order_id.unique)
                .map(|(status, _)| status),
            Some(OrderStatus::Paid)
        );
        assert!(
            table.payment_refs.is_empty(),
            "the reference goes with its order"
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn only_deadlines_within_the_window_fit() {
        assert!(fits(&order(1, "a", 0)));
        assert!(fits(&order(1, "a", MAX_PAYMENT_WINDOW_MS)));
        assert!(!fits(&order(1, "a", MAX_PAYMENT_WINDOW_MS + 1)));
        let mut early = order(1, "a", 0);
        early.expires_at -= 1;
        assert!(!fits(&early));
    }
}
