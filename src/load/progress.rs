//! Live counters shared by every executor, and the once-a-second progress line built from them.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters the executors bump as requests finish; read by the thread printing progress.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    completed: AtomicU64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    classes: [AtomicU64; 5],
    errors: AtomicU64,
}

impl Counters {
    /// A request went out.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A response with `status` arrived.
    pub fn completed(&self, status: u16) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        if let Some(class) = self.classes.get(usize::from(status / 100).wrapping_sub(1)) {
            class.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request ended without a response.
    pub fn failed(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now, as of `elapsed` into the run; `previous` is the last snapshot (for the
    /// current rate).
    pub fn snapshot(&self, elapsed: Duration, previous: Option<&Progress>) -> Progress {
        let completed = self.completed.load(Ordering::Relaxed);
        let (done_before, elapsed_before) =
            previous.map_or((0, Duration::ZERO), |p| (p.completed, p.elapsed));
        let interval = elapsed.saturating_sub(elapsed_before).as_secs_f64();
        let rate = if interval > 0.0 {
            completed.saturating_sub(done_before) as f64 / interval
        } else {
            0.0
        };
        Progress {
            elapsed,
            sent: self.sent.load(Ordering::Relaxed),
            completed,
            classes: std::array::from_fn(|i| self.classes[i].load(Ordering::Relaxed)),
            errors: self.errors.load(Ordering::Relaxed),
            rate,
        }
    }
}

/// How far a run has got; its `Display` is the progress line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Time since the start of the schedule.
    pub elapsed: Duration,
    /// Requests sent so far.
    pub sent: u64,
    /// Responses received so far.
    pub completed: u64,
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    pub classes: [u64; 5],
    /// Requests that ended without a response (timeouts and transport errors).
    pub errors: u64,
    /// Responses per second since the previous line.
    pub rate: f64,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{:>4}s] sent {} completed {} | 2xx {} 4xx {} 5xx {} other {} errors {} | {:.0} responses/s",
            self.elapsed.as_secs(),
            self.sent,
            self.completed,
            self.classes[1],
            self.classes[3],
            self.classes[4],
            self.classes[0] + self.classes[2],
            self.errors,
            self.rate
        )
    }
}
