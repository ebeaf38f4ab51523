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
//!
//! In cluster mode a sale's rate is the whole cluster's: each shard leases blocks of tokens
//! from a shared bucket through a [`TokenSource`] in the background and spends them here
//! ([`Lease`]); the local share above only admits while that bucket cannot be reached.

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

/// Seconds of a sale's rate one lease asks the cluster-wide bucket for: small, so that tokens a
/// shard holds but does not use are few, and large enough that a busy sale costs a lease call
/// per shard only every few tens of milliseconds.
pub const BLOCK_SECS: f64 = 0.1;

/// How long leased tokens stay usable. Short, so that a node whose shoppers left does not keep
/// tokens another node could use; what it did not use is simply lost (the bucket errs on the
/// side of admitting less).
pub const LEASE_TTL: Duration = Duration::from_millis(500);

/// Seconds of a sale's rate the cluster-wide bucket may accumulate while nobody buys.
pub const CLUSTER_BURST_SECS: f64 = 0.25;

/// Tokens a holder may owe: its first request after an idle spell is admitted at once and paid
/// back from the next grant, so the long-run rate stays exact and no shopper is refused only
/// because this shard had not leased yet.
const OVERDRAFT: i64 = 1;

/// How soon a shard asks again after a lease call failed.
const FAILED_LEASE_BACKOFF: Duration = Duration::from_millis(100);

/// The longest wait between asks for an empty bucket: the bucket refills continuously, and
/// other holders' unused tokens are not returned, so waiting longer only loses rate.
const MAX_EMPTY_WAIT: Duration = Duration::from_millis(50);

/// Tokens of a sale's cluster-wide bucket (see `store::redis::rate`) that one shard leased,
/// spent on its own hot path without a round trip. A background task ([`Lease::wants`]) asks
/// for the next block before these run out; when asking fails, the shard falls back to its
/// local share ([`Lease::failing`]).
#[derive(Debug, Clone)]
pub struct Lease {
    /// Tokens in hand; negative while an overdraft is owed.
    tokens: i64,
    /// When the tokens in hand lapse.
    expires_at: Option<Instant>,
    /// Tokens asked for per call.
    block: u32,
    /// The hot path found the lease low since the last call was sent.
    wanted: bool,
    /// A lease call for this sale is in flight on this shard.
    in_flight: bool,
    /// No call before this (the bucket was empty, or the last call failed).
    not_before: Option<Instant>,
    /// The last lease call failed: admission uses the local share until one succeeds.
    failing: bool,
}

/// What one lease call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens granted, possibly fewer than asked (none when the bucket is empty).
    pub tokens: u32,
    /// When the bucket had too few, how long until it has one again.
    pub retry_after: Duration,
}

impl Lease {
    /// An empty lease for a sale limited to `rate_per_sec` across the cluster.
    pub fn new(rate_per_sec: u32) -> Self {
        Self {
            tokens: 0,
            expires_at: None,
            block: Self::block_for(rate_per_sec),
            wanted: false,
            in_flight: false,
            not_before: None,
            failing: false,
        }
    }

    /// Tokens one call asks for at `rate_per_sec`: [`BLOCK_SECS`] of it, at least one.
    pub fn block_for(rate_per_sec: u32) -> u32 {
        (f64::from(rate_per_sec) * BLOCK_SECS).ceil().max(1.0) as u32
    }

    /// Follows a changed rate.
    pub fn set_rate(&mut self, rate_per_sec: u32) {
        self.block = Self::block_for(rate_per_sec);
    }

    /// Whether the last lease call failed, so the shard admits by its local share.
    pub fn failing(&self) -> bool {
        self.failing
    }

    /// Notes a request while failing: keeps the lease asked for, so it recovers.
    pub fn note_demand(&mut self) {
        self.wanted = true;
    }

    /// Takes one token (or the overdraft), or says when to retry. Asks for the next block
    /// once half a block is left.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.tokens > 0 && self.expires_at.is_some_and(|at| now >= at) {
            self.tokens = 0;
        }
        if self.tokens <= i64::from(self.block / 2) {
            self.wanted = true;
        }
        if self.tokens > -OVERDRAFT {
            self.tokens -= 1;
            return Ok(());
        }
        Err(self
            .not_before
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(now))
            .min(MAX_RETRY_AFTER))
    }

    /// Whether a lease call should be sent now, and for how many tokens.
    pub fn wants(&self, now: Instant) -> Option<u32> {
        let due = self.not_before.is_none_or(|at| now >= at);
        (self.wanted && !self.in_flight && due).then_some(self.block)
    }

    /// Records that a lease call was sent.
    pub fn sent(&mut self) {
        self.in_flight = true;
        self.wanted = false;
    }

    /// Records a lease call's outcome: `None` when it failed.
    pub fn settle(&mut self, grant: Option<Grant>, now: Instant) {
        self.in_flight = false;
        let Some(grant) = grant else {
            self.failing = true;
            self.wanted = true;
            self.not_before = Some(now + FAILED_LEASE_BACKOFF);
            return;
        };
        self.failing = false;
        if self.tokens > 0 && self.expires_at.is_some_and(|at| now >= at) {
            self.tokens = 0;
        }
        self.tokens += i64::from(grant.tokens);
        if grant.tokens > 0 {
            self.expires_at = Some(now + LEASE_TTL);
            self.not_before = None;
        } else {
            // Still wanted: the hot path found it low. Ask again once the bucket has refilled.
            self.wanted = true;
            self.not_before = Some(now + grant.retry_after.min(MAX_EMPTY_WAIT));
        }
    }
}

/// Where a shard leases a sale's cluster-wide tokens from: the shared store's bucket in cluster
/// mode. Embedded mode has none, and each sale's rate is the node's, split between its shards.
pub trait TokenSource {
    /// Takes up to `want` tokens from `sku`'s bucket, which refills at `rate_per_sec`; `None`
    /// when the bucket could not be reached. Runs off the request path.
    fn lease<'a>(
        &'a self,
        sku: &'a str,
        rate_per_sec: u32,
        want: u32,
    ) -> futures::future::LocalBoxFuture<'a, Option<Grant>>;
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
    fn a_lease_spends_its_grant_owes_one_token_and_lapses() {
        let now = Instant::now();
        let mut lease = Lease::new(500);
        assert_eq!(lease.wants(now), None, "nobody asked: no lease call");
        assert_eq!(lease.try_take(now), Ok(()), "the overdraft");
        assert!(lease.try_take(now).is_err());
        assert_eq!(lease.wants(now), Some(50));
        lease.sent();
        assert_eq!(lease.wants(now), None, "one call in flight per sale");
        let grant = Grant {
            tokens: 50,
            retry_after: Duration::ZERO,
        };
        lease.settle(Some(grant), now);
        let admitted = (0..100).filter(|_| lease.try_take(now).is_ok()).count();
        assert_eq!(admitted, 50, "the grant, with the overdraft owed again");
        assert!(
            lease.wants(now).is_some(),
            "asked for again ahead of running out"
        );
        lease.sent();
        lease.settle(Some(grant), now);
        let later = now + LEASE_TTL;
        assert!(lease.try_take(later).is_ok(), "the overdraft again");
        assert!(lease.try_take(later).is_err(), "unused tokens lapsed");
        lease.sent();
        lease.settle(None, later);
        assert!(lease.failing());
        assert_eq!(lease.wants(later), None, "backs off after a failure");
        assert!(lease.wants(later + FAILED_LEASE_BACKOFF).is_some());
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
