//! The owner shard's expiry queue for pending orders.
//!
//! Deadlines are grouped into buckets of [`BUCKET_MS`]; scheduling is a map insert plus one `Vec`
//! push (about 69 bytes per order at a million, `cargo bench --bench map_growth`), and each sweep pops only the buckets that are wholly due. A million pending orders cost a
//! million small entries and no tasks or timers of their own. Orders that are paid or cancelled
//! are forgotten at once ([`ExpiryQueue::forget`]); their stale bucket slots are skipped at sweep
//! time and compacted away whenever they outnumber the live entries, so memory follows the
//! number of pending orders even under buy-then-cancel loops.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::command::{Outcome, Reply};
use super::ids::{OrderId, Unique};
use super::model::OrderStatus;
use super::segmented::SegmentedMap;
use super::sku_slots::SkuSlots;

/// Width of one deadline bucket. Together with the sweep interval this bounds how late an expiry
/// can be: at most two buckets.
pub const BUCKET_MS: u64 = 100;

/// Stale slots tolerated before a compaction, on top of one per live entry.
const COMPACT_SLACK: usize = 1024;

/// Where a live order waits: its bucket (relative to [`ExpiryQueue::base`]) and its SKU (a
/// number in [`ExpiryQueue::skus`]). Two 32-bit halves keep a live entry at 24 bytes, and let
/// a bucket's slot hold only the order's unique part (16 bytes, not a 32-byte [`OrderId`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    bucket: u32,
    sku: u32,
}

/// Pending orders by deadline bucket.
#[derive(Debug, Default)]
pub struct ExpiryQueue {
    /// Bucket number → the orders scheduled in it (possibly stale).
    buckets: BTreeMap<u64, Vec<Unique>>,
    /// Live entries: order key → its bucket and SKU. Segmented, like the book's orders, so that
    /// growing it never stalls the shard.
    live: SegmentedMap<Unique, Slot>,
    /// Slots in `buckets`, live or stale.
    slots: usize,
    /// The bucket a [`Slot`]'s bucket counts from: set by the first deadline, 2^31 buckets
    /// (about 6.8 years) before it, so every deadline of a payment window (49 days at most) fits.
    base: Option<u64>,
    /// Each SKU an order was scheduled for, once.
    skus: SkuSlots,
}

impl ExpiryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bucket for `deadline_ms`, and its number relative to the base. A deadline beyond the
    /// relative range is clamped to its last bucket: late, never early, so it cannot come back
    /// from the book not yet due and loop.
    fn bucket_of(&mut self, deadline_ms: u64) -> (u64, u32) {
        let bucket = deadline_ms / BUCKET_MS;
        let base = *self
            .base
            .get_or_insert_with(|| bucket.saturating_sub(1 << 31));
        let relative = u32::try_from(bucket.saturating_sub(base)).unwrap_or(u32::MAX);
        (base + u64::from(relative), relative)
    }

    /// Remembers that `order_id` must be expired once `deadline_ms` has passed.
    pub fn schedule(&mut self, order_id: OrderId, deadline_ms: u64) {
        let (bucket, relative) = self.bucket_of(deadline_ms);
        let slot = Slot {
            bucket: relative,
            sku: self.skus.slot_of(&order_id.sku),
        };
        let unique = Unique::from(order_id.unique);
        if self.live.insert(unique, slot) == Some(slot) {
            return;
        }
        // A new deadline leaves a stale slot in the old bucket, which no longer matches `live`:
        // sweeps skip it and compaction drops it.
        self.buckets.entry(bucket).or_default().push(unique);
        self.slots += 1;
    }

    /// Drops an order that is no longer pending.
    pub fn forget(&mut self, unique: u128) {
        if self.live.remove(&Unique::from(unique)).is_some()
            && self.slots > 2 * self.live.len() + COMPACT_SLACK
        {
            self.compact();
        }
    }

    /// Whether `unique`, found in `bucket`, is live there.
    fn is_live_in(&self, unique: &Unique, bucket: u64) -> Option<Slot> {
        let slot = *self.live.get(unique)?;
        let base = self.base.unwrap_or(0);
        (base + u64::from(slot.bucket) == bucket).then_some(slot)
    }

    fn compact(&mut self) {
        let mut buckets = std::mem::take(&mut self.buckets);
        buckets.retain(|bucket, slots| {
            slots.retain(|unique| self.is_live_in(unique, *bucket).is_some());
            !slots.is_empty()
        });
        self.buckets = buckets;
        self.slots = self.live.len();
    }

    /// Takes every live order whose whole bucket is due at `now_ms`.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<OrderId> {
        // A bucket is due once its last millisecond has passed.
        let first_not_due = (now_ms + 1) / BUCKET_MS;
        let later = self.buckets.split_off(&first_not_due);
        let due = std::mem::replace(&mut self.buckets, later);
        let mut taken = Vec::new();
        for (bucket, slots) in due {
            for unique in slots {
                self.slots -= 1;
                if let Some(slot) = self.is_live_in(&unique, bucket) {
                    self.live.remove(&unique);
                    let sku = Arc::clone(self.skus.sku(slot.sku));
                    taken.push(OrderId {
                        unique: unique.into(),
                        sku,
                    });
                }
            }
        }
        taken
    }

    /// Handles the book's answer to an `Expire` command a sweep sent for an order it took: an
    /// order that comes back still pending was not due by the book's clock reading (the wall
    /// clock stepped back between the sweep's reading and the book's), so it goes back in the
    /// queue under its deadline. Without this, nothing would ever expire it.
    pub fn reschedule_if_pending(&mut self, reply: &Reply) {
        if let Ok(Outcome::Order { order, .. }) = reply {
            if order.status == OrderStatus::Pending {
                self.schedule(order.order_id.clone(), order.expires_at);
            }
        }
    }

    /// Pending orders waiting.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
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

    #[test]
    fn only_orders_still_pending_are_put_back() {
        use crate::sale::{Order, OrderStatus};
        let order = |status| Order {
            order_id: id(7),
            sku: "s".into(),
            user_id: "u".into(),
            quantity: 1,
            status,
            created_at: 1_000,
            expires_at: 2_050,
            amount: 0,
            payment_ref: None,
        };
        let mut queue = ExpiryQueue::new();
        let reply = |status| {
            Ok(Outcome::Order {
                order: order(status),
                stock: None,
                replayed: false,
            })
        };
        queue.reschedule_if_pending(&Ok(Outcome::Done));
        queue.reschedule_if_pending(&reply(OrderStatus::Expired));
        queue.reschedule_if_pending(&Err(crate::sale::SaleError::Unavailable));
        assert!(queue.is_empty());
        queue.reschedule_if_pending(&reply(OrderStatus::Pending));
        assert!(queue.take_due(2_098).is_empty(), "under its own deadline");
        assert_eq!(queue.take_due(2_099), vec![id(7)]);
    }

    #[test]
    fn a_new_deadline_replaces_the_old_one() {
        let mut queue = ExpiryQueue::new();
        queue.schedule(id(1), 1_050);
        queue.schedule(id(1), 1_050);
        queue.schedule(id(1), 3_050);
        assert_eq!(queue.len(), 1);
        assert!(
            queue.take_due(1_099).is_empty(),
            "not under its old deadline"
        );
        assert_eq!(queue.take_due(3_099), vec![id(1)]);
        assert!(queue.is_empty());
    }

    #[test]
    fn deadlines_outside_the_relative_range_fire_late_never_early() {
        let mut queue = ExpiryQueue::new();
        let now = 1_800_000_000_000;
        queue.schedule(id(1), now);
        queue.schedule(id(2), 0);
        queue.schedule(id(3), u64::MAX - 1);
        assert_eq!(
            queue.take_due(now - 1_000),
            vec![id(2)],
            "long past: due at once"
        );
        assert_eq!(queue.take_due(now + 99), vec![id(1)]);
        assert!(queue.take_due(now + 5 * 365 * 86_400_000).is_empty());
        assert_eq!(
            queue.take_due(u64::MAX - 1),
            vec![id(3)],
            "clamped to the last bucket"
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn forgotten_orders_do_not_accumulate() {
        let mut queue = ExpiryQueue::new();
        queue.schedule(id(0), 10_000);
        for n in 1..100_000u128 {
            queue.schedule(id(n), 900_000);
            queue.forget(n);
        }
        assert_eq!(queue.len(), 1);
        assert!(
            queue.slots <= 2 + COMPACT_SLACK,
            "{} slots kept",
            queue.slots
        );
        assert_eq!(queue.take_due(u64::MAX - 1), vec![id(0)]);
    }
}
