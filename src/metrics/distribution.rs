//! Distributions (latencies, group sizes) recorded with the `histogram` crate: dense and cheap to
//! record into on the owning shard, sparse when copied to the scraping shard, merged there.

use histogram::{Histogram, SparseHistogram};

/// Buckets per power of two: 2^6 = 64, so a recorded value lands in a bucket within 1.6% of it.
const GROUPING_POWER: u8 = 6;
/// Largest value recorded without clamping: 2^36 ns is about 69 s.
const MAX_VALUE_POWER: u8 = 36;
/// The largest value the histogram holds; bigger values are clamped to it.
const MAX_VALUE: u64 = (1 << MAX_VALUE_POWER) - 1;

/// One shard's record of a distribution: the histogram for quantiles and buckets, plus the exact
/// sum that Prometheus' `_sum` needs (buckets only bound it).
#[derive(Debug, Clone)]
pub struct Distribution {
    histogram: Histogram,
    sum: u64,
}

impl Default for Distribution {
    fn default() -> Self {
        Self::new()
    }
}

impl Distribution {
    /// An empty distribution.
    pub fn new() -> Self {
        Self {
            histogram: empty_histogram(),
            sum: 0,
        }
    }

    /// Records one value (values past about 69 billion are counted as that).
    pub fn record(&mut self, value: u64) {
        let value = value.min(MAX_VALUE);
        // Cannot fail: the value is clamped into the configured range.
        let _ = self.histogram.increment(value);
        self.sum = self.sum.wrapping_add(value);
    }

    /// A compact copy to send to the scraping shard.
    pub fn snapshot(&self) -> DistributionSnapshot {
        DistributionSnapshot {
            histogram: SparseHistogram::from(&self.histogram),
            sum: self.sum,
        }
    }
}

/// A copy of a [`Distribution`], or several merged.
#[derive(Debug, Clone)]
pub struct DistributionSnapshot {
    histogram: SparseHistogram,
    sum: u64,
}

impl Default for DistributionSnapshot {
    fn default() -> Self {
        Distribution::new().snapshot()
    }
}

impl DistributionSnapshot {
    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &DistributionSnapshot) {
        // Both come from `Distribution`, so the configurations match and this cannot fail.
        if let Ok(merged) = self.histogram.wrapping_add(&other.histogram) {
            self.histogram = merged;
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// Sum of every recorded value.
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.iter().map(|bucket| bucket.count()).sum()
    }

    /// Cumulative counts at each bound in `bounds` (ascending, in recorded units): how many values
    /// are at most that bound. A histogram bucket straddling a bound is counted above it, so a
    /// count may lag by up to one bucket (1.6%) but never claims a value is faster than it was.
    pub fn cumulative(&self, bounds: &[u64]) -> Vec<u64> {
        let mut counts = vec![0u64; bounds.len()];
        for bucket in self.histogram.iter() {
            if let Some(first) = bounds.iter().position(|bound| bucket.end() <= *bound) {
                counts[first] += bucket.count();
            }
        }
        let mut running = 0;
        for count in &mut counts {
            running += *count;
            *count = running;
        }
        counts
    }

    /// The value at quantile `q` (0.0..=1.0), as the upper edge of its bucket; `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let result = self.histogram.quantile(q).ok()??;
        result.entries().values().next().map(|bucket| bucket.end())
    }
}

fn empty_histogram() -> Histogram {
    match Histogram::new(GROUPING_POWER, MAX_VALUE_POWER) {
        Ok(histogram) => histogram,
        // The configuration is a constant that the unit tests construct.
        Err(error) => unreachable!("invalid histogram configuration: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merges_and_accumulates() {
        let mut a = Distribution::new();
        let mut b = Distribution::new();
        for value in [10, 20, 30] {
            a.record(value);
        }
        b.record(5_000);
        b.record(u64::MAX);
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged.count(), 5);
        assert_eq!(merged.sum(), 60 + 5_000 + MAX_VALUE);
        assert_eq!(
            merged.cumulative(&[9, 30, 6_000, u64::MAX]),
            vec![0, 3, 4, 5]
        );
        assert_eq!(merged.quantile(0.5), Some(30));
        assert!(merged.quantile(1.0) >= Some(MAX_VALUE));
    }

    #[test]
    fn empty_has_no_quantiles() {
        let empty = DistributionSnapshot::default();
        assert_eq!(empty.count(), 0);
        assert_eq!(empty.quantile(0.99), None);
        assert_eq!(empty.cumulative(&[1, 2]), vec![0, 0]);
    }
}
