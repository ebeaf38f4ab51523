//! Shard-local admission control: a token bucket per rate-limited sale on every shard, with the
//! node-wide rate split between shards by their recent demand.
//!
//! Each shard refuses over-rate requests where they land, before any cross-shard hop, and never
//! touches another shard's bucket. To keep the node-wide rate right when connections are spread
//! unevenly over shards, shards exchange their demand every tick and each takes a max-min fair
//! share of the sale's rate ([`fair_share`]).

use std::time::{Duration, Instant};

/// Seconds of a shard's share that may accumulate as burst. Small, so that the node-wide rate over
/// any second stays within a few percent of the target.
const BURST_SECS: f64 = 0.1;

/// The longest wait a refusal ever advises; a shard whose share is momentarily tiny gets a
/// bigger share within a tick or two, so a longer wait would only mislead.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Part of an equal split every shard keeps however little demand it reports, so a shard that
/// was idle can admit its first requests at once instead of waiting for the next exchange. The
/// node may exceed its rate by at most this fraction.
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

/// The max-min fair share of `rate` for shard `me`, given every shard's demand (requests per
/// second). Shards wanting less than an equal split get what they want; the rest is split evenly
/// among the others. With no demand anywhere, every shard gets an equal split.
pub fn fair_share(rate: f64, demands: &[f64], me: usize) -> f64 {
    let floor = rate / demands.len().max(1) as f64 * MIN_SHARE_OF_EQUAL_SPLIT;
    max_min_share(rate, demands, me).max(floor)
}

fn max_min_share(rate: f64, demands: &[f64], me: usize) -> f64 {
    let shards = demands.len();
    if shards == 0 {
        return rate;
    }
    let total: f64 = demands.iter().sum();
    if total <= rate || total <= 0.0 {
        // Everyone can have what they ask for; spread the spare evenly so a shard whose demand
        // grows first is not starved until the next exchange.
        let spare = (rate - total).max(0.0) / shards as f64;
        return demands.get(me).copied().unwrap_or(0.0) + spare;
    }
    let mut order: Vec<usize> = (0..shards).collect();
    order.sort_by(|a, b| demands[*a].total_cmp(&demands[*b]));
    let mut left = rate;
    for (position, shard) in order.iter().enumerate() {
        let even = left / (shards - position) as f64;
        let given = demands[*shard].min(even);
        if *shard == me {
            return given;
        }
        left -= given;
    }
    rate / shards as f64
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

    /// Closes a tick of length `tick` and returns the smoothed arrivals per second.
    pub fn close_tick(&mut self, tick: Duration) -> f64 {
        let observed = self.arrivals as f64 / tick.as_secs_f64().max(1e-3);
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
        let demands = [200.0, 5000.0];
        let a = fair_share(1000.0, &demands, 0);
        let b = fair_share(1000.0, &demands, 1);
        assert!(
            (a - 200.0).abs() < 1e-9 && (b - 800.0).abs() < 1e-9,
            "{a} {b}"
        );
        let idle = [0.0, 0.0];
        assert_eq!(fair_share(100.0, &idle, 1), 50.0);
        let starved = [1e-30, 5000.0];
        assert!(
            fair_share(100.0, &starved, 0) >= 1.0,
            "an idle shard keeps a floor"
        );
        let both_hot = [900.0, 3000.0];
        let sum = fair_share(1000.0, &both_hot, 0) + fair_share(1000.0, &both_hot, 1);
        assert!((sum - 1000.0).abs() < 1e-9);
        let mut bucket = TokenBucket::new(1e-30, Instant::now());
        assert!(bucket.try_take(Instant::now()).is_ok());
        assert_eq!(
            bucket.try_take(Instant::now()),
            Err(MAX_RETRY_AFTER),
            "no overflow panic"
        );
        let light = [10.0, 20.0];
        let sum = fair_share(100.0, &light, 0) + fair_share(100.0, &light, 1);
        assert!((sum - 100.0).abs() < 1e-9);
    }
}
