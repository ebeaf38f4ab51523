//! A circuit breaker for one Redis node (one per master on a cluster, per shard): after consecutive failures it opens, and calls fail
//! at once instead of each waiting out its deadline; after a pause it lets one probe through, and
//! closes again when the probe succeeds.

use std::time::{Duration, Instant};

/// Consecutive failures (errors or timeouts) that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// How long the breaker stays open before probing.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; counts consecutive failures.
    Closed(u32),
    /// Calls fail at once until the instant.
    Open(Instant),
    /// One probe has been in flight since the instant; other calls fail at once.
    HalfOpen(Instant),
}

impl BreakerState {
    /// The metric value: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> u64 {
        match self {
            BreakerState::Closed(_) => 0,
            BreakerState::Open(_) => 1,
            BreakerState::HalfOpen(_) => 2,
        }
    }
}

/// The breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed(0),
        }
    }
}

impl Breaker {
    /// Whether a call may go to Redis now. When open and the pause is over, the caller becomes
    /// the probe.
    pub fn admit(&mut self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed(_) => true,
            BreakerState::Open(until) if now >= until => {
                self.state = BreakerState::HalfOpen(now);
                true
            }
            // A probe that never reported (its caller went away) must not keep the breaker
            // half-open for good.
            BreakerState::HalfOpen(since) if now >= since + OPEN_FOR => {
                self.state = BreakerState::HalfOpen(now);
                true
            }
            BreakerState::Open(_) | BreakerState::HalfOpen(_) => false,
        }
    }

    /// Records a call's result.
    pub fn record(&mut self, succeeded: bool, now: Instant) {
        self.state = match (self.state, succeeded) {
            (_, true) => BreakerState::Closed(0),
            (BreakerState::Closed(failures), false) if failures + 1 < FAILURES_TO_OPEN => {
                BreakerState::Closed(failures + 1)
            }
            (_, false) => BreakerState::Open(now + OPEN_FOR),
        };
    }

    /// Closes the breaker: used when the connection behind it was just replaced, which
    /// deserves calls at once. (A probe alone would not do: calls made while the new connection
    /// is still being set up fail at once and would reopen the breaker for another pause.)
    pub fn reset(&mut self) {
        self.state = BreakerState::Closed(0);
    }

    /// Whether calls are refused at `now`: open, and its pause not over yet. (Once the pause is
    /// over the next call is let through as a probe, so the node counts as serving again if it
    /// is connected: a shard that sends it nothing would otherwise report it down for good.)
    pub fn refusing(&self, now: Instant) -> bool {
        matches!(self.state, BreakerState::Open(until) if now < until)
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_probe() {
        let mut breaker = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            assert!(breaker.admit(t0));
            breaker.record(false, t0);
        }
        assert!(breaker.admit(t0));
        breaker.record(true, t0);
        for _ in 0..FAILURES_TO_OPEN {
            assert!(breaker.admit(t0));
            breaker.record(false, t0);
        }
        assert!(!breaker.admit(t0), "open");
        assert!(breaker.refusing(t0));
        let later = t0 + OPEN_FOR;
        assert!(!breaker.refusing(later), "a probe may go");
        assert!(breaker.admit(later), "the probe");
        assert!(!breaker.admit(later), "one probe at a time");
        assert!(breaker.admit(later + OPEN_FOR), "a lost probe is replaced");
        breaker.record(false, later);
        assert!(!breaker.admit(later), "a failed probe reopens");
        let again = later + OPEN_FOR;
        assert!(breaker.admit(again));
        breaker.record(true, again);
        assert_eq!(breaker.state(), BreakerState::Closed(0));
        assert!(breaker.admit(again));
    }

    #[test]
    fn a_replaced_connection_closes_the_breaker() {
        let mut breaker = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..FAILURES_TO_OPEN {
            breaker.record(false, t0);
        }
        assert!(!breaker.admit(t0));
        breaker.reset();
        for _ in 0..FAILURES_TO_OPEN {
            assert!(breaker.admit(t0), "calls go through at once");
            breaker.record(false, t0);
        }
        assert!(!breaker.admit(t0), "and it opens again as usual");
    }
}
