//! Shard-local admission control: a token bucket per rate-limited sale on every shard, with the
//! node-wide rate split between shards by their recent demand.
//!
//! Each shard refuses over-rate requests where they land, before any cross-shard hop, and never
//! touches another shard's bucket. To keep the node-wide rate right when connections are spread
//! unevenly over shards, shards report their demand every tick to the sale's owner, which splits
//! the rate max-min fairly ([`fair_split`]) and tells every shard its fraction. One shard
//! computing the whole split is what keeps the fractions in force adding up to at most 1: shards
//! that each computed their own share from demand figures of different ages could together hand
//! out more than the rate.

use std::time::{Duration, Instant};

/// Seconds of a shard's share that may accumulate as burst. Small, so that the node-wide rate over
/// any second stays within a few percent of the target.
const BURST_SECS: f64 = 0.1;

/// The longest wait a refusal ever advises; a shard whose share is momentarily tiny gets a
/// bigger share within a tick or two, so a longer wait would only mislead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Fraction of the rate reserved in equal parts for every shard however little demand it
/// reports, so a shard that was idle can admit its first requests at once.
const MIN_SHARE_OF_EQUAL_SPLIT: f64 = 0.02;

/// A classic token bucket, refilled lazily on each call.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_sec: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate_per_sec`.
    pub fn new(rate_per_sec: f64, now: Instant) -> Self {
        let capacity = Self::capacity_for(rate_per_sec);
        Self {
            rate_per_sec,
            capacity,
            tokens: capacity,
            refilled_at: now,
        }
    }

    fn capacity_for(rate_per_sec: f64) -> f64 {
        (rate_per_sec * BURST_SECS).max(1.0)
    }

    /// Changes the refill rate, keeping the tokens already earned (capped to the new capacity).
    pub fn set_rate(&mut self, rate_per_sec: f64, now: Instant) {
        self.refill(now);
        self.rate_per_sec = rate_per_sec;
        self.capacity = Self::capacity_for(rate_per_sec);
        self.tokens = self.tokens.min(self.capacity);
    }

    /// The refill rate now in force.
    pub fn rate_per_sec(&self) -> f64 {
        self.rate_per_sec
    }

    /// Takes one token, or says how long until one will be there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.rate_per_sec;
        Err(Duration::try_from_secs_f64(wait)
            .unwrap_or(MAX_RETRY_AFTER)
            .min(MAX_RETRY_AFTER))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate_per_sec).min(self.capacity);
        self.refilled_at = now;
    }
}

/// Each shard's fraction of a sale's rate, given every shard's demand (requests per second):
/// the max-min fair split, computed from one view of the demands so that the fractions add up
/// to 1 at most.
///
/// Every shard keeps a small reserve however little it asked for, so a shard that was idle can
/// admit its first requests at once instead of waiting for the next split; the reserve comes out
/// of the rate, not on top of it. Demands that are not finite and positive count as none.
pub fn fair_split(rate: f64, demands: &[f64]) -> Vec<f64> {
    let shards = demands.len();
    if shards == 0 {
        return Vec::new();
    }
    if !(rate.is_finite() && rate > 0.0) {
        return vec![1.0 / shards as f64; shards];
    }
    let demands: Vec<f64> = demands
        .iter()
        .map(|d| if d.is_finite() && *d > 0.0 { *d } else { 0.0 })
        .collect();
    let reserve = MIN_SHARE_OF_EQUAL_SPLIT / shards as f64;
    let shared = rate * (1.0 - MIN_SHARE_OF_EQUAL_SPLIT);
    let given = max_min(shared, &demands);
    let fractions: Vec<f64> = given.iter().map(|g| g / rate + reserve).collect();
    // Floating point may leave the sum a hair above 1; never hand out more than the rate.
    let sum: f64 = fractions.iter().sum();
    if sum > 1.0 {
        fractions.iter().map(|f| f / sum).collect()
    } else {
        fractions
    }
}

/// The max-min fair share of `rate` for shard `me` (see [`fair_split`]).
pub fn fair_share(rate: f64, demands: &[f64], me: usize) -> f64 {
    fair_split(rate, demands).get(me).copied().unwrap_or(0.0) * rate.max(0.0)
}

/// Water-filling: shards wanting less than an even split get what they want, the rest is split
/// evenly among the others. When everyone can have what they ask for, the spare is spread
/// evenly, so a shard whose demand grows first is not starved until the next split. The
/// results add up to `rate`.
fn max_min(rate: f64, demands: &[f64]) -> Vec<f64> {
    let shards = demands.len();
    let total: f64 = demands.iter().sum();
    if total <= rate {
        let spare = (rate - total) / shards as f64;
        return demands.iter().map(|d| d + spare).collect();
    }
    let mut order: Vec<usize> = (0..shards).collect();
    order.sort_by(|a, b| demands[*a].total_cmp(&demands[*b]));
    let mut given = vec![0.0; shards];
    let mut left = rate;
    for (position, shard) in order.iter().enumerate() {
        let even = left / (shards - position) as f64;
        given[*shard] = demands[*shard].min(even);
        left -= given[*shard];
    }
    given
}

/// Exponentially smoothed demand, updated once per tick.
#[derive(Debug, Clone, Default)]
pub struct DemandMeter {
    arrivals: u64,
    per_sec: f64,
}

impl DemandMeter {
    /// Counts one arrival.
    pub fn record(&mut self) {
        self.arrivals += 1;
    }

    /// Closes a tick that lasted `elapsed` and returns the smoothed arrivals per second.
    pub fn close_tick(&mut self, elapsed: Duration) -> f64 {
        let observed = self.arrivals as f64 / elapsed.as_secs_f64().max(1e-3);
        self.arrivals = 0;
        // Half-life of about one tick: follows a flash crowd quickly, ignores single-tick noise.
        self.per_sec = 0.5 * self.per_sec + 0.5 * observed;
        self.per_sec
    }

    /// The last smoothed demand.
    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_admits_its_rate_and_says_when_to_retry() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, start);
        let burst = (0..1000).filter(|_| bucket.try_take(start).is_ok()).count();
        assert_eq!(burst, 10);
        let wait = bucket.try_take(start).unwrap_err();
        assert!(wait <= Duration::from_millis(10));
        let later = start + Duration::from_secs(1);
        let admitted = (0..1000).filter(|_| bucket.try_take(later).is_ok()).count();
        assert_eq!(admitted, 10, "refill is capped by the burst capacity");
    }

    #[test]
    fn shares_are_max_min_fair_and_sum_to_the_rate() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        // 2% of 1000 is reserved, 10 per shard; the other 980 go by demand.
        let demands = [200.0, 5000.0];
        let a = fair_share(1000.0, &demands, 0);
        let b = fair_share(1000.0, &demands, 1);
        assert!(close(a, 210.0) && close(b, 790.0), "{a} {b}");
        let idle = [0.0, 0.0];
        assert_eq!(fair_share(100.0, &idle, 1), 50.0);
        let starved = [1e-30, 5000.0];
        assert!(
            fair_share(100.0, &starved, 0) >= 1.0,
            "an idle shard keeps a reserve"
        );
        for demands in [
            vec![900.0, 3000.0],
            vec![10.0, 20.0],
            vec![0.0, 1e9, 3.0, 700.0],
            vec![f64::NAN, f64::INFINITY, -5.0],
            vec![1e-30, 5000.0],
        ] {
            let split = fair_split(1000.0, &demands);
            let sum: f64 = split.iter().sum();
            assert!(sum <= 1.0 && sum > 1.0 - 1e-9, "{demands:?} -> {split:?}");
            assert!(split.iter().all(|f| *f > 0.0), "{demands:?} -> {split:?}");
        }
        assert!(fair_split(1000.0, &[]).is_empty());
        let mut bucket = TokenBucket::new(1e-30, Instant::now());
        assert!(bucket.try_take(Instant::now()).is_ok());
        assert_eq!(
            bucket.try_take(Instant::now()),
            Err(MAX_RETRY_AFTER),
            "no overflow panic"
        );
    }
}
