//! How long one store operation may wait on Redis: one attempt and at most one retry, both
//! within a total budget (`--redis-budget-ms`, default 300 ms). Each attempt's deadline is what
//! is left of the budget, so a stalled Redis costs a shopper the budget, not attempts × a fixed
//! per-call timeout.

use std::time::{Duration, Instant};

/// Attempts per operation, the first included.
pub const ATTEMPTS: u32 = 2;
/// The default budget.
pub const DEFAULT_BUDGET: Duration = Duration::from_millis(300);
/// The shortest attempt worth starting: a retry that would have less than this left after its
/// backoff is not made.
pub const MIN_ATTEMPT: Duration = Duration::from_millis(5);

/// One operation's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
}

impl Budget {
    /// A budget of `total` starting at `now`.
    pub fn new(now: Instant, total: Duration) -> Self {
        Self {
            deadline: now + total,
        }
    }

    /// What is left at `now`; zero once spent.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// The pause before the retry at `now`, given the wanted `backoff`: the backoff itself, or
    /// `None` when the retry after it would have less than [`MIN_ATTEMPT`] left.
    pub fn retry_after(&self, now: Instant, backoff: Duration) -> Option<Duration> {
        let left = self.remaining(now);
        (left >= backoff + MIN_ATTEMPT).then_some(backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_share_one_budget() {
        let t0 = Instant::now();
        let budget = Budget::new(t0, Duration::from_millis(300));
        assert_eq!(budget.remaining(t0), Duration::from_millis(300));
        // A first attempt that failed at once leaves almost all of it to the retry.
        let early = t0 + Duration::from_millis(2);
        assert_eq!(
            budget.retry_after(early, Duration::from_millis(20)),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            budget.remaining(early + Duration::from_millis(20)),
            Duration::from_millis(278)
        );
        // A first attempt that used the budget up leaves no retry.
        let late = t0 + Duration::from_millis(290);
        assert_eq!(budget.retry_after(late, Duration::from_millis(20)), None);
        assert_eq!(
            budget.remaining(t0 + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            budget.retry_after(t0 + Duration::from_secs(1), Duration::ZERO),
            None
        );
    }
}
