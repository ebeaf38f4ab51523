//! Per-thread recording of what happened to each arrival: its outcome, its latency (from the
//! time it was due, so queueing behind a slow server counts) and who got an order.
//!
//! Each executor records into its own [`Recorder`] without sharing; the run merges them at the
//! end.

use histogram::Histogram;
use serde::Deserialize;

use super::report::LatencySummary;

/// Outcome of a 201.
pub(crate) const CREATED: &str = "created";
/// Outcome of a request that failed on the connection (reset, closed, malformed response).
pub(crate) const TRANSPORT_ERROR: &str = "transport_error";
/// Outcome of a request that got no response within the timeout.
pub(crate) const TIMEOUT: &str = "timeout";
/// Outcome that absorbs error codes beyond [`MAX_OUTCOMES`] distinct ones.
const OTHER: &str = "other";
/// Most distinct outcomes tracked; a misbehaving server cannot grow the report without bound.
const MAX_OUTCOMES: usize = 32;
/// Outcome names the generator itself assigns; a server code equal to one is renamed.
const RESERVED: [&str; 4] = [CREATED, TRANSPORT_ERROR, TIMEOUT, OTHER];
/// Longest error code taken from a response body.
const MAX_CODE_LEN: usize = 64;

/// Histogram precision: 2^-7, under 1% relative error.
const GROUPING_POWER: u8 = 7;
/// Largest recordable latency: 2^40 ns, about 18 minutes; larger values are clamped.
const MAX_VALUE_POWER: u8 = 40;
const MAX_LATENCY_NS: u64 = (1 << MAX_VALUE_POWER) - 1;

/// Latencies of a set of requests.
#[derive(Clone)]
pub(crate) struct Latency {
    histogram: Histogram,
    count: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Latency {
    fn new() -> Self {
        // The parameters are constants within the crate's accepted range.
        let histogram = match Histogram::new(GROUPING_POWER, MAX_VALUE_POWER) {
            Ok(histogram) => histogram,
            Err(error) => unreachable!("histogram parameters are valid constants: {error}"),
        };
        Self {
            histogram,
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn record(&mut self, latency_ns: u64) {
        let value = latency_ns.min(MAX_LATENCY_NS);
        // Cannot fail: the value is clamped to the histogram's range.
        let _ = self.histogram.increment(value);
        self.count += 1;
        self.sum_ns += u128::from(latency_ns);
        self.max_ns = self.max_ns.max(latency_ns);
    }

    fn merge(&mut self, other: &Latency) {
        // Same configuration on both sides; wrapping only matters past 2^64 samples.
        if let Ok(sum) = self.histogram.wrapping_add(&other.histogram) {
            self.histogram = sum;
        }
        self.count += other.count;
        self.sum_ns += other.sum_ns;
        self.max_ns = self.max_ns.max(other.max_ns);
    }

    /// Count, quantiles (bucket upper bounds, never above the exact maximum), mean and maximum.
    pub fn summary(&self) -> LatencySummary {
        let to_us = |ns: u64| ns / 1_000;
        let mut quantiles = [0u64; 4];
        if let Ok(Some(result)) = self.histogram.quantiles(&[0.5, 0.9, 0.99, 0.999]) {
            for (slot, (_, bucket)) in quantiles.iter_mut().zip(result.entries()) {
                *slot = bucket.end().min(self.max_ns);
            }
        }
        let mean_ns = if self.count == 0 {
            0
        } else {
            u64::try_from(self.sum_ns / u128::from(self.count)).unwrap_or(u64::MAX)
        };
        LatencySummary {
            count: self.count,
            p50_us: to_us(quantiles[0]),
            p90_us: to_us(quantiles[1]),
            p99_us: to_us(quantiles[2]),
            p999_us: to_us(quantiles[3]),
            max_us: to_us(self.max_ns),
            mean_us: to_us(mean_ns),
        }
    }
}

/// Everything one executor observed.
#[derive(Clone)]
pub(crate) struct Recorder {
    /// Every request that was sent, whatever its outcome.
    pub all: Latency,
    /// By outcome, in order of first appearance.
    pub outcomes: Vec<(Box<str>, Latency)>,
    /// Responses by status code (index = code, 0..=999).
    pub statuses: Vec<u64>,
    /// 201s per user number.
    pub orders_per_user: Vec<u32>,
    /// Requests sent.
    pub sent: u64,
    /// Connections established.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_errors: u64,
}

impl Recorder {
    /// An empty recorder for `users` shoppers.
    pub fn new(users: u64) -> Self {
        Self {
            all: Latency::new(),
            outcomes: Vec::new(),
            statuses: vec![0; 1000],
            orders_per_user: vec![0; usize::try_from(users).unwrap_or(0)],
            sent: 0,
            connects: 0,
            connect_errors: 0,
        }
    }

    /// Records one finished request of `user` with `outcome` and `status` (`None` when no
    /// response arrived).
    pub fn record(&mut self, outcome: &str, status: Option<u16>, user: u64, latency_ns: u64) {
        self.all.record(latency_ns);
        self.outcome_mut(outcome).record(latency_ns);
        if let Some(status) = status {
            if let Some(slot) = self.statuses.get_mut(usize::from(status)) {
                *slot += 1;
            }
        }
        if outcome == CREATED {
            if let Some(orders) = usize::try_from(user)
                .ok()
                .and_then(|user| self.orders_per_user.get_mut(user))
            {
                *orders = orders.saturating_add(1);
            }
        }
    }

    fn outcome_mut(&mut self, outcome: &str) -> &mut Latency {
        let index = match self
            .outcomes
            .iter()
            .position(|(name, _)| **name == *outcome)
        {
            Some(index) => index,
            // The generator's own outcomes always get a slot, so `errors` and `created`, which
            // are read back by name, can never be folded into `other`.
            None if self.outcomes.len() < MAX_OUTCOMES || RESERVED.contains(&outcome) => {
                self.outcomes.push((outcome.into(), Latency::new()));
                self.outcomes.len() - 1
            }
            None => return self.outcome_mut(OTHER),
        };
        &mut self.outcomes[index].1
    }

    /// Adds `other`'s observations to these.
    pub fn merge(&mut self, other: &Recorder) {
        self.all.merge(&other.all);
        for (name, latency) in &other.outcomes {
            self.outcome_mut(name).merge(latency);
        }
        for (mine, theirs) in self.statuses.iter_mut().zip(&other.statuses) {
            *mine += theirs;
        }
        for (mine, theirs) in self.orders_per_user.iter_mut().zip(&other.orders_per_user) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sent += other.sent;
        self.connects += other.connects;
        self.connect_errors += other.connect_errors;
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

/// The outcome of a response: `created` for 201, else the body's `error` code, else
/// `http_<status>`.
pub(crate) fn classify(status: u16, body: &mut [u8]) -> String {
    if status == 201 {
        return CREATED.to_owned();
    }
    match simd_json::serde::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error })
            if !error.is_empty()
                && error.len() <= MAX_CODE_LEN
                && error
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            if RESERVED.contains(&error.as_str()) {
                // A server that answers `{"error":"timeout"}` must not count as a client timeout.
                format!("server_{error}")
            } else {
                error
            }
        }
        _ => format!("http_{status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_come_from_the_status_and_the_error_code() {
        assert_eq!(
            classify(201, &mut b"{\"order_id\":\"x\"}".to_vec()),
            "created"
        );
        assert_eq!(
            classify(
                409,
                &mut br#"{"error":"sold_out","message":"sold out"}"#.to_vec()
            ),
            "sold_out"
        );
        assert_eq!(classify(500, &mut b"oops".to_vec()), "http_500");
        assert_eq!(
            classify(400, &mut br#"{"error":"Bad Code!"}"#.to_vec()),
            "http_400"
        );
        assert_eq!(classify(200, &mut Vec::new()), "http_200");
    }

    #[test]
    fn recorders_merge_and_bound_their_outcomes() {
        let mut a = Recorder::new(4);
        a.record(CREATED, Some(201), 1, 2_000_000);
        a.record("sold_out", Some(409), 2, 1_000_000);
        let mut b = Recorder::new(4);
        b.record(CREATED, Some(201), 1, 3_000_000);
        b.record(TIMEOUT, None, 3, 5_000_000_000);
        for n in 0..40 {
            b.record(&format!("code_{n}"), Some(400), 0, 1);
        }
        a.merge(&b);
        assert_eq!(a.all.count, 44);
        assert_eq!(a.statuses[201], 2);
        assert_eq!(a.orders_per_user, vec![0, 2, 0, 0]);
        assert!(a.outcomes.len() <= MAX_OUTCOMES + 1);
        let created = a
            .outcomes
            .iter()
            .find(|(n, _)| &**n == CREATED)
            .map(|(_, l)| l.summary());
        let created = created.expect("created recorded");
        assert_eq!(created.count, 2);
        assert_eq!(created.max_us, 3_000);
        assert!(
            created.p50_us >= 1_900 && created.p50_us <= 3_000,
            "{created:?}"
        );
        assert_eq!(a.all.summary().max_us, 5_000_000);
    }
}
