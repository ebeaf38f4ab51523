//! Bounds on expensive requests anyone can make without credentials: a metrics scrape asks every
//! shard for a copy of its metrics, and a page of sales reads up to a thousand sales from their
//! owners (each a script call in cluster mode). Each shard admits at most so many at once and
//! starts at most so many per second; beyond that the answer is a cheap `429` with
//! `Retry-After`, so a looping client cannot turn one shard's requests into work everywhere.

use std::cell::{Cell, RefCell};
use std::time::Instant;

use super::error::ApiError;
use crate::sale::admission::TokenBucket;

/// One kind of expensive request on one shard.
#[derive(Debug)]
pub struct Limiter {
    /// The error code a refusal carries (`too_many_scrapes`, `too_many_pages`).
    code: &'static str,
    /// What a refusal says.
    message: &'static str,
    /// How many may run at once.
    concurrency: u32,
    /// How many run now.
    running: Cell<u32>,
    /// Starts per second (bursts of a tenth of a second's worth, at least one).
    starts: RefCell<TokenBucket>,
}

impl Limiter {
    /// At most `concurrency` at once and `per_second` starts a second.
    pub fn new(
        code: &'static str,
        message: &'static str,
        concurrency: u32,
        per_second: f64,
    ) -> Self {
        Self {
            code,
            message,
            concurrency,
            running: Cell::new(0),
            starts: RefCell::new(TokenBucket::new(per_second, Instant::now())),
        }
    }

    /// Starts one request, or refuses it with `429`; the guard ends it when dropped.
    pub fn start(&self) -> Result<Running<'_>, ApiError> {
        let admitted = self.running.get() < self.concurrency
            && self.starts.borrow_mut().try_take(Instant::now()).is_ok();
        if !admitted {
            let mut error = ApiError::new(429, self.code, self.message);
            error.retry_after_secs = Some(1);
            return Err(error);
        }
        self.running.set(self.running.get() + 1);
        Ok(Running(&self.running))
    }
}

/// A request a [`Limiter`] admitted, counted until dropped (however the request ends).
#[derive(Debug)]
pub struct Running<'a>(&'a Cell<u32>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_concurrency_and_frees_on_drop() {
        let limiter = Limiter::new("too_many", "slow down", 2, 1_000.0);
        let first = limiter.start().expect("first");
        let _second = limiter.start().expect("second");
        let refused = limiter.start().expect_err("a third at once");
        assert_eq!((refused.status, refused.code), (429, "too_many"));
        drop(first);
        assert!(limiter.start().is_ok(), "a slot came back");
    }

    #[test]
    fn bounds_the_start_rate() {
        let limiter = Limiter::new("too_many", "slow down", 1_000, 10.0);
        let admitted = (0..100).filter(|_| limiter.start().is_ok()).count();
        assert!(
            admitted < 10,
            "a burst is a tenth of a second's worth: {admitted}"
        );
    }
}
