//! The open-loop arrival schedule: arrival `g` is due `g / rate` seconds after the start,
//! whether or not earlier requests have been answered.
//!
//! With several threads, thread `t` owns the arrivals `g = k * threads + t`, so the threads
//! interleave evenly and each carries `rate / threads`.

use std::time::Duration;

const NANOS_PER_SEC: f64 = 1e9;

/// When each arrival is due, relative to the start of the run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Schedule {
    rate: f64,
    threads: u64,
    duration_ns: u64,
}

impl Schedule {
    /// `rate` arrivals per second over all `threads`, for `duration`.
    pub fn new(rate: f64, threads: usize, duration: Duration) -> Self {
        Self {
            rate,
            threads: threads.max(1) as u64,
            duration_ns: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Offset of global arrival `g` from the start, in nanoseconds.
    fn offset_ns(&self, g: u64) -> u64 {
        // Saturating float-to-int conversion.
        (g as f64 * NANOS_PER_SEC / self.rate) as u64
    }

    /// When thread `thread`'s `k`-th arrival is due, or `None` once past the end of the run.
    pub fn due(&self, thread: usize, k: u64) -> Option<Duration> {
        let g = k.checked_mul(self.threads)?.checked_add(thread as u64)?;
        let offset = self.offset_ns(g);
        (offset < self.duration_ns).then(|| Duration::from_nanos(offset))
    }

    /// How many arrivals fall within the run, over all threads.
    pub fn planned(&self) -> u64 {
        let estimate = self.duration_ns as f64 * self.rate / NANOS_PER_SEC;
        let mut count = estimate.ceil() as u64;
        // Correct float rounding so that the count agrees with `due` exactly.
        while count > 0 && self.offset_ns(count - 1) >= self.duration_ns {
            count -= 1;
        }
        while self.offset_ns(count) < self.duration_ns {
            count += 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_due(schedule: &Schedule, threads: usize) -> u64 {
        (0..threads)
            .map(|t| (0..).take_while(|&k| schedule.due(t, k).is_some()).count() as u64)
            .sum()
    }

    #[test]
    fn arrivals_are_evenly_spaced_and_interleaved_over_threads() {
        let one = Schedule::new(1000.0, 1, Duration::from_secs(1));
        assert_eq!(one.due(0, 0), Some(Duration::ZERO));
        assert_eq!(one.due(0, 1), Some(Duration::from_millis(1)));
        assert_eq!(one.due(0, 999), Some(Duration::from_millis(999)));
        assert_eq!(one.due(0, 1000), None);
        assert_eq!(one.planned(), 1000);

        let two = Schedule::new(1000.0, 2, Duration::from_secs(1));
        assert_eq!(two.due(0, 1), Some(Duration::from_millis(2)));
        assert_eq!(two.due(1, 1), Some(Duration::from_millis(3)));
        assert_eq!(two.planned(), 1000);
        assert_eq!(count_due(&two, 2), 1000);
    }

    #[test]
    fn planned_matches_due_for_awkward_rates() {
        for (rate, threads, millis) in [
            (3.0, 1, 1000),
            (7.0, 3, 1500),
            (333.3, 2, 2000),
            (0.5, 1, 1),
        ] {
            let schedule = Schedule::new(rate, threads, Duration::from_millis(millis));
            assert_eq!(
                schedule.planned(),
                count_due(&schedule, threads),
                "{rate} {threads} {millis}"
            );
        }
    }
}
