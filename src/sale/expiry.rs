//! The owner shard's expiry queue for pending orders.
//!
//! Deadlines are grouped into buckets of [`BUCKET_MS`]; scheduling is one `Vec` push into an
//! ordered map, and each sweep pops only the buckets that are wholly due. A million pending orders
//! cost a million small entries and no tasks or timers of their own. Orders that were paid or
//! cancelled stay in their bucket until it is swept, where the expire command is a no-op: cheaper
//! than finding and removing them.

use std::collections::BTreeMap;

use super::ids::OrderId;

/// Width of one deadline bucket. Together with the sweep interval this bounds how late an expiry
/// can be: at most two buckets.
pub const BUCKET_MS: u64 = 100;

/// Pending orders by deadline bucket.
#[derive(Debug, Default)]
pub struct ExpiryQueue {
    buckets: BTreeMap<u64, Vec<OrderId>>,
    len: usize,
}

impl ExpiryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Remembers that `order_id` must be expired once `deadline_ms` has passed.
    pub fn schedule(&mut self, order_id: OrderId, deadline_ms: u64) {
        self.buckets
            .entry(deadline_ms / BUCKET_MS)
            .or_default()
            .push(order_id);
        self.len += 1;
    }

    /// Takes every order whose whole bucket is due at `now_ms`.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<OrderId> {
        // A bucket is due once its last millisecond has passed.
        let first_not_due = (now_ms + 1) / BUCKET_MS;
        let later = self.buckets.split_off(&first_not_due);
        let due = std::mem::replace(&mut self.buckets, later);
        let taken: Vec<OrderId> = due.into_values().flatten().collect();
        self.len -= taken.len();
        taken
    }

    /// Entries waiting, including ones already paid or cancelled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> OrderId {
        OrderId {
            unique: n,
            sku: "s".into(),
        }
    }

    #[test]
    fn only_wholly_due_buckets_are_taken() {
        let mut queue = ExpiryQueue::new();
        queue.schedule(id(1), 1_050);
        queue.schedule(id(2), 1_099);
        queue.schedule(id(3), 1_100);
        assert!(queue.take_due(1_080).is_empty());
        let due = queue.take_due(1_099);
        assert_eq!(due, vec![id(1), id(2)]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.take_due(5_000), vec![id(3)]);
        assert!(queue.is_empty());
    }
}
