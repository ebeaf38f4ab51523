//! A book's durable state in a canonical, comparable form, and a check of the book's internal
//! accounting. Model-based tests compare the live book with a reference model and with what
//! recovery rebuilds from the journal; both need to see the state without the book's hash-map
//! orders and per-process counters getting in the way.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::book::Book;
use super::model::{Order, OrderCounts, Sale};

/// What one user holds in one sale, as [`BookState`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderState {
    /// Units in pending and paid orders.
    pub held: u32,
    /// Idempotency key → the order's unique part.
    pub keys: BTreeMap<Box<str>, u128>,
}

/// One sale's state, as [`BookState`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerState {
    /// The definition.
    pub sale: Sale,
    /// Units not held by pending or paid orders.
    pub remaining: u64,
    /// Users with holdings or idempotency keys; a user with neither is indistinguishable from
    /// one never seen, so such entries are left out.
    pub holders: BTreeMap<Box<str>, HolderState>,
    /// Retained closed orders, oldest first: the order in which retention forgets them.
    pub closed: Vec<u128>,
}

/// Everything a book holds that a restart must preserve, in canonical order. It leaves out the
/// stock-change counter ([`crate::sale::command::StockLevel::seq`]), which only orders replies
/// within one process, and the id generator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookState {
    /// Sales by SKU.
    pub sales: BTreeMap<Box<str>, LedgerState>,
    /// Retained orders by their unique part.
    pub orders: BTreeMap<u128, Order>,
    /// Blocked users.
    pub blocked: BTreeSet<Box<str>>,
    /// Orders by status.
    pub order_counts: OrderCounts,
}

impl BookState {
    /// Merges the state of another shard's book into this one (shards own disjoint SKUs and
    /// users), so the books of a re-partitioned recovery can be compared with one live book.
    pub fn merge(&mut self, other: BookState) {
        self.sales.extend(other.sales);
        self.orders.extend(other.orders);
        self.blocked.extend(other.blocked);
        self.order_counts.merge(&other.order_counts);
    }
}

/// The book's accounting does not add up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("book inconsistent: {0}")]
pub struct Inconsistency(
    /// What does not add up.
    pub String,
);

fn fail<T>(message: String) -> Result<T, Inconsistency> {
    Err(Inconsistency(message))
}

impl Book {
    /// The book's durable state in canonical form; see [`BookState`].
    pub fn state(&self) -> BookState {
        let sales = self
            .sales
            .iter()
            .map(|(sku, ledger)| {
                let mut holders = BTreeMap::new();
                for (user, holder) in ledger.holders.iter() {
                    if holder.held == 0 && holder.keys.is_empty() {
                        continue;
                    }
                    let keys = holder.keys.iter().map(|(k, v)| (k.clone(), v)).collect();
                    let state = HolderState {
                        held: holder.held,
                        keys,
                    };
                    holders.insert(Box::from(&**user), state);
                }
                let state = LedgerState {
                    sale: ledger.sale.clone(),
                    remaining: ledger.remaining,
                    holders,
                    closed: ledger.closed.iter().copied().collect(),
                };
                (sku.clone(), state)
            })
            .collect();
        BookState {
            sales,
            orders: self
                .orders
                .iter()
                .map(|order| (order.unique(), order.to_order()))
                .collect(),
            blocked: self.blocked.iter().cloned().collect(),
            order_counts: self.order_counts,
        }
    }

    /// Checks the book's accounting: for every sale, remaining stock plus the units of its
    /// pending and paid orders is its stock; every user's holding is the sum of their holding
    /// orders and within the per-user limit; idempotency keys point at the user's own retained
    /// orders; the retention queue holds each retained closed order once and no more than the
    /// limit; the per-status counts match the orders.
    pub fn audit(&self) -> Result<(), Inconsistency> {
        let mut counts = OrderCounts::default();
        let mut held: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        let mut taken: BTreeMap<&str, u64> = BTreeMap::new();
        let mut closed_orders: BTreeMap<&str, BTreeSet<u128>> = BTreeMap::new();
        for order in self.orders.iter() {
            let (sku, user_id) = (order.sku(), order.user_id());
            counts.add(order.status());
            if !self.sales.contains_key(&**sku) {
                return fail(format!(
                    "order {} of a sale the book lacks",
                    order.order_id()
                ));
            }
            if order.status().holds_stock() {
                *held.entry((sku, user_id)).or_default() += u64::from(order.quantity());
                *taken.entry(sku).or_default() += u64::from(order.quantity());
            } else {
                closed_orders.entry(sku).or_default().insert(order.unique());
            }
        }
        if counts != self.order_counts {
            return fail(format!(
                "order counts {:?}, orders say {counts:?}",
                self.order_counts
            ));
        }
        for (sku, ledger) in &self.sales {
            let sale = &ledger.sale;
            let units = taken.get(&**sku).copied().unwrap_or(0);
            if ledger.remaining + units != sale.stock {
                return fail(format!(
                    "{sku}: remaining {} + held {units} != stock {}",
                    ledger.remaining, sale.stock
                ));
            }
            for (user, holder) in ledger.holders.iter() {
                let expected = held.get(&(&**sku, &**user)).copied().unwrap_or(0);
                if u64::from(holder.held) != expected {
                    return fail(format!(
                        "{sku}/{user}: held {} but orders hold {expected}",
                        holder.held
                    ));
                }
                if holder.held > sale.per_user_limit {
                    return fail(format!(
                        "{sku}/{user}: holds {} over the limit {}",
                        holder.held, sale.per_user_limit
                    ));
                }
                for (key, unique) in holder.keys.iter() {
                    let own = self
                        .orders
                        .get(unique)
                        .is_some_and(|order| **order.sku() == **sku && **order.user_id() == **user);
                    if !own {
                        return fail(format!("{sku}/{user}: key {key} points at no own order"));
                    }
                }
            }
            for ((held_sku, user), units) in &held {
                if *held_sku == &**sku && *units > 0 && ledger.holders.get(*user).is_none() {
                    return fail(format!("{sku}/{user}: holds {units} units but no holder"));
                }
            }
            let queue: HashSet<u128> = ledger.closed.iter().copied().collect();
            let retained = closed_orders.remove(&**sku).unwrap_or_default();
            if queue.len() != ledger.closed.len()
                || queue.len() != retained.len()
                || !retained.iter().all(|unique| queue.contains(unique))
            {
                return fail(format!(
                    "{sku}: retention queue {:?} != retained closed orders {retained:?}",
                    ledger.closed
                ));
            }
            if ledger.closed.len() > self.limits.closed_orders_per_sale {
                return fail(format!("{sku}: {} closed orders kept", ledger.closed.len()));
            }
        }
        Ok(())
    }
}
