//! What one user holds in one sale: the units counted against the per-user limit, the
//! idempotency keys they bought with, and their newest orders.
//!
//! A sale with a million shoppers has a million holders, so the entry is kept small: the keys'
//! map, which most shoppers never use, is boxed only once they do (8 bytes instead of 48), and the
//! recent-orders list starts with room for one order.

use std::collections::HashMap;

use super::user_orders::RecentOrders;

/// What one user holds in one sale.
#[derive(Debug, Clone, Default)]
pub struct Holder {
    /// Units in pending and paid orders; checked against the per-user limit.
    pub held: u32,
    /// Idempotency keys this user bought with, and the order each produced.
    pub keys: IdempotencyKeys,
    /// This user's newest orders in the sale, for `GET /v1/orders`.
    pub recent: RecentOrders,
}

impl Holder {
    /// Whether the entry says nothing a missing one would not: no units, keys or orders.
    pub fn is_idle(&self) -> bool {
        self.held == 0 && self.keys.is_empty() && self.recent.is_empty()
    }
}

/// Idempotency key → the unique part of the order it made. A map, not a list: a shopper can
/// buy and cancel with fresh keys until retention forgets their orders, and every purchase with
/// a key looks it up.
#[derive(Debug, Clone, Default)]
#[allow(
    clippy::box_collection,
    reason = "the box is the point: 8 bytes in every holder instead of a 48-byte empty map"
)]
pub struct IdempotencyKeys(Option<Box<HashMap<Box<str>, u128>>>);

impl IdempotencyKeys {
    /// The order `key` made.
    pub fn get(&self, key: &str) -> Option<u128> {
        self.0.as_ref()?.get(key).copied()
    }

    /// Records that `key` made the order `unique`.
    pub fn insert(&mut self, key: Box<str>, unique: u128) {
        self.0.get_or_insert_with(Box::default).insert(key, unique);
    }

    /// Drops the keys that made the order `unique`, and the map once it is empty.
    pub fn forget(&mut self, unique: u128) {
        if let Some(keys) = &mut self.0 {
            keys.retain(|_, made| *made != unique);
            if keys.is_empty() {
                self.0 = None;
            }
        }
    }

    /// Whether no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|keys| keys.is_empty())
    }

    /// Every key and the order it made.
    pub fn iter(&self) -> impl Iterator<Item = (&Box<str>, u128)> {
        self.0
            .iter()
            .flat_map(|keys| keys.iter().map(|(key, unique)| (key, *unique)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_forgotten_and_cost_nothing_until_used() {
        assert_eq!(std::mem::size_of::<IdempotencyKeys>(), 8);
        let mut keys = IdempotencyKeys::default();
        assert!(keys.is_empty());
        keys.insert("a".into(), 1);
        keys.insert("b".into(), 2);
        keys.insert("c".into(), 1);
        assert_eq!(
            (keys.get("a"), keys.get("b"), keys.get("z")),
            (Some(1), Some(2), None)
        );
        keys.forget(1);
        assert_eq!(keys.iter().collect::<Vec<_>>(), vec![(&Box::from("b"), 2)]);
        keys.forget(2);
        assert!(keys.is_empty() && keys.0.is_none());
    }
}
