//! A short-lived memory of SKUs the shared store said it does not know, so that a client asking
//! for the same unknown SKU over and over costs Redis one lookup per time-to-live, not one per
//! request. It is bounded: past its capacity the oldest entry goes, so random SKUs cannot grow it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Recent misses of one shard, each remembered for the same time-to-live.
#[derive(Debug)]
pub struct NegativeCache {
    ttl: Duration,
    capacity: usize,
    /// When each remembered SKU was found missing.
    missed_at: HashMap<Box<str>, Instant>,
    /// The same entries in the order they were added; with one time-to-live for all, that is
    /// also the order they expire in, so the front is always the next to go.
    order: VecDeque<(Box<str>, Instant)>,
}

impl NegativeCache {
    /// An empty cache remembering each miss for `ttl`, at most `capacity` of them.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity: capacity.max(1),
            missed_at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether `sku` was found missing less than the time-to-live before `now`.
    pub fn is_missing(&self, sku: &str, now: Instant) -> bool {
        self.missed_at
            .get(sku)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    /// Remembers that the store did not know `sku` at `now`.
    pub fn remember(&mut self, sku: &str, now: Instant) {
        self.purge(now);
        while self.missed_at.len() >= self.capacity && !self.missed_at.contains_key(sku) {
            let Some((oldest, at)) = self.order.pop_front() else {
                break;
            };
            self.forget_if(&oldest, at);
        }
        self.missed_at.insert(sku.into(), now);
        self.order.push_back((sku.into(), now));
    }

    /// Forgets `sku` (it has just been created or found).
    pub fn forget(&mut self, sku: &str) {
        // Its queue entry stays until it reaches the front; `forget_if` then finds nothing.
        self.missed_at.remove(sku);
    }

    /// How many misses are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.missed_at.len()
    }

    /// Drops the entries whose time-to-live has passed, and the queue entries of forgotten or
    /// re-added SKUs that have reached the front.
    fn purge(&mut self, now: Instant) {
        while let Some((sku, at)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) >= self.ttl;
            let stale = self.missed_at.get(sku) != Some(at);
            if !expired && !stale {
                break;
            }
            if let Some((sku, at)) = self.order.pop_front() {
                self.forget_if(&sku, at);
            }
        }
        // Forgotten SKUs leave queue entries behind; keep the queue within twice the map.
        if self.order.len() > self.capacity.saturating_mul(2) {
            let missed_at = &self.missed_at;
            self.order
                .retain(|(sku, at)| missed_at.get(sku).is_some_and(|kept| kept == at));
        }
    }

    /// Removes `sku` only if the map still holds the entry added at `at`, not a newer one.
    fn forget_if(&mut self, sku: &str, at: Instant) {
        if self.missed_at.get(sku) == Some(&at) {
            self.missed_at.remove(sku);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_is_remembered_for_the_ttl_only() {
        let start = Instant::now();
        let mut cache = NegativeCache::new(Duration::from_millis(250), 8);
        assert!(!cache.is_missing("a", start));
        cache.remember("a", start);
        assert!(cache.is_missing("a", start + Duration::from_millis(249)));
        assert!(!cache.is_missing("a", start + Duration::from_millis(250)));
        cache.remember("b", start + Duration::from_millis(300));
        assert_eq!(cache.len(), 1, "the expired entry was purged");
    }

    #[test]
    fn the_oldest_goes_when_full() {
        let start = Instant::now();
        let mut cache = NegativeCache::new(Duration::from_secs(60), 3);
        for (i, sku) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.remember(sku, start + Duration::from_millis(i as u64));
        }
        let now = start + Duration::from_millis(10);
        assert!(!cache.is_missing("a", now));
        assert!(["b", "c", "d"].iter().all(|sku| cache.is_missing(sku, now)));
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn stays_bounded_under_random_skus_and_forgets() {
        let start = Instant::now();
        let mut cache = NegativeCache::new(Duration::from_secs(60), 16);
        for i in 0..10_000u64 {
            let sku = format!("sku{}", i % 40);
            let now = start + Duration::from_micros(i);
            cache.remember(&sku, now);
            if i % 3 == 0 {
                cache.forget(&sku);
            }
            assert!(cache.len() <= 16);
            assert!(
                cache.order.len() <= 33,
                "queue grew to {}",
                cache.order.len()
            );
        }
        cache.remember("x", start + Duration::from_secs(1));
        cache.forget("x");
        assert!(!cache.is_missing("x", start + Duration::from_secs(1)));
    }
}
