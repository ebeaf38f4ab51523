//! Ghost orders: purchases whose caller was answered 503 although the purchase script may have
//! run in Redis (its reply lost, Redis stalled past the deadline, a partition, a connection
//! cut). Left alone, such an order holds stock until its payment deadline, and its buyer, who
//! never saw its id, is refused with `limit_exceeded`.
//!
//! When a purchase's last attempt fails after at least one attempt went to Redis, the batcher
//! ([`super::batch`]) hands its order id here. A per-shard queue (at most [`MAX_GHOSTS`]; past
//! that, ghosts are dropped with an error log and a metric, never queued without bound) is
//! drained by one background task that runs [`super::scripts::ABANDON`] for up to
//! [`PER_CALL`] ghosts of one SKU at a time, with backoff and jitter, until Redis answers.
//!
//! The rule the script applies, for an attempt id `A` of user `U` with idempotency key `K`:
//! 1. `A` is tombstoned first (`K.abandoned`, a zset scored by Redis time). The purchase script
//!    refuses a tombstoned id before anything else, so a copy of the attempt still buffered in a
//!    proxy or a dead connection cannot create the order after the abandon.
//! 2. The order concerned is the one `A` created, or else, when `U`'s key `K` points at an
//!    earlier order `X` that `A` claimed (below), `X`. Neither: nothing more to do.
//! 3. An idempotency replay marks the replayed pending order with a claim: the attempt id that
//!    was answered with it (`claims`, up to 8; beyond that the order is marked `kept`). That
//!    attempt's caller may hold a 201 for it.
//! 4. The order is cancelled (stock and the user's holding back exactly once, event
//!    `cancelled`, its idempotency key forgotten so the same key buys afresh) only if it is
//!    still pending, not `kept`, and its own id and every claim on it are tombstoned: that is,
//!    every attempt that could have been answered with it was answered 503. Otherwise it stays.
//!
//! Each attempt is abandoned once it fails for good, in whatever order, so the last of an
//! order's attempts to be abandoned cancels it, and an attempt that reached a buyer as a 201
//! (created or replayed) is never tombstoned and keeps it. A tombstone trimmed (after an hour,
//! or past 100,000 per SKU) only ever makes the rule keep an order, never cancel one: a kept
//! ghost costs what it did before, its stock until the payment deadline.

use std::collections::VecDeque;
use std::time::Duration;

use fred::types::Value;
use rand::Rng;

use super::{RedisError, RedisStore};

/// Ghosts one shard keeps waiting for their abandon; past this, new ones are dropped (logged and
/// counted) rather than queued without bound.
pub const MAX_GHOSTS: usize = 100_000;
/// Ghosts of one SKU abandoned by one script call.
pub const PER_CALL: usize = 64;
/// Refusals of the abandon script (Redis answered with an error) after which a ghost is given
/// up, logged and counted.
const MAX_REFUSALS: u32 = 5;
/// Pause after the first failed abandon call; doubled after each further failure, up to
/// [`MAX_BACKOFF`], plus up to as much again of jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between abandon calls while Redis does not answer.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A purchase attempt whose caller was answered 503 although it may have run.
#[derive(Debug, Clone)]
pub(super) struct Ghost {
    pub(super) sku: Box<str>,
    pub(super) order_id: String,
    pub(super) user_id: String,
    /// Empty when the purchase carried no key.
    pub(super) idempotency_key: String,
    /// Times Redis refused this ghost's abandon script (a refusal can be passing: `BUSY`,
    /// `OOM`).
    pub(super) refusals: u32,
}

/// A shard's ghosts and what became of them.
#[derive(Debug, Default)]
pub(super) struct Abandon {
    queue: VecDeque<Ghost>,
    /// Ghosts taken off the queue for the abandon call in flight (still pending).
    in_flight: usize,
    /// Whether the retrier task runs (it ends when the queue is empty).
    running: bool,
    stats: AbandonStats,
}

/// What a shard did with its ghosts, for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct AbandonStats {
    /// Ghosts waiting for Redis to answer their abandon.
    pub pending: u64,
    /// Ghosts dropped because the queue was full (their orders, if any, hold stock until the
    /// payment deadline).
    pub dropped: u64,
    /// Abandon calls that failed and were tried again.
    pub retries: u64,
    /// Ghosts whose order was cancelled.
    pub cancelled: u64,
    /// Ghosts whose order was kept because a buyer got a 201 for it (an idempotency replay).
    pub claimed: u64,
    /// Ghosts whose order was already paid, cancelled or expired.
    pub settled: u64,
    /// Ghosts that had made no order (now tombstoned, so they never will).
    pub absent: u64,
    /// Ghosts given up because Redis refused their abandon script five times
    /// (logged).
    pub rejected: u64,
}

impl Abandon {
    /// The figures, with the queue's current length.
    pub(super) fn stats(&self) -> AbandonStats {
        AbandonStats {
            pending: (self.queue.len() + self.in_flight) as u64,
            ..self.stats.clone()
        }
    }
}

impl RedisStore {
    /// Queues `ghosts` for abandoning and starts the retrier if it is not running.
    pub(super) fn abandon_later(&self, ghosts: Vec<Ghost>) {
        if ghosts.is_empty() {
            return;
        }
        let start = {
            let mut abandon = self.0.abandon.borrow_mut();
            let room = MAX_GHOSTS.saturating_sub(abandon.queue.len() + abandon.in_flight);
            let dropped = ghosts.len().saturating_sub(room);
            if dropped > 0 {
                abandon.stats.dropped += dropped as u64;
                tracing::error!(
                    shard = self.0.shard,
                    dropped,
                    "ghost queue full: orders of purchases answered 503 may hold stock until \
                     their payment deadline"
                );
            }
            abandon.queue.extend(ghosts.into_iter().take(room));
            !std::mem::replace(&mut abandon.running, true)
        };
        if start {
            glommio::spawn_local(self.clone().abandon_all()).detach();
        }
    }

    /// Abandons queued ghosts until none is left, one SKU's group per call, backing off while
    /// Redis does not answer.
    async fn abandon_all(self) {
        let mut backoff = FIRST_BACKOFF;
        // Ghosts that failed since the last success: once every queued one has, Redis (all of
        // it this shard reaches) is not answering, and the retrier sleeps. Until then it goes on
        // to the next group, which may live on another master that answers.
        let mut misses = 0usize;
        loop {
            let group: Vec<Ghost> = {
                let mut abandon = self.0.abandon.borrow_mut();
                let Some(sku) = abandon.queue.front().map(|ghost| ghost.sku.clone()) else {
                    abandon.running = false;
                    return;
                };
                let same = abandon
                    .queue
                    .iter()
                    .take(PER_CALL)
                    .take_while(|ghost| ghost.sku == sku)
                    .count();
                abandon.in_flight = same;
                abandon.queue.drain(..same).collect()
            };
            let result = self.abandon_group(&group).await;
            self.0.abandon.borrow_mut().in_flight = 0;
            match result {
                Ok(outcomes) => {
                    backoff = FIRST_BACKOFF;
                    misses = 0;
                    let mut abandon = self.0.abandon.borrow_mut();
                    for outcome in outcomes {
                        let stats = &mut abandon.stats;
                        match outcome.as_str() {
                            "cancelled" => stats.cancelled += 1,
                            "claimed" => stats.claimed += 1,
                            "settled" => stats.settled += 1,
                            _ => stats.absent += 1,
                        }
                    }
                }
                Err(RedisError::Rejected(error) | RedisError::Reply(error))
                    if group.iter().any(|ghost| ghost.refusals + 1 >= MAX_REFUSALS) =>
                {
                    // Redis answered, and keeps answering no (a wrong key type, a bug):
                    // retrying for ever would only hold up every other ghost.
                    tracing::error!(%error, ghosts = group.len(), "abandon script refused");
                    self.0.abandon.borrow_mut().stats.rejected += group.len() as u64;
                }
                Err(error) => {
                    misses += group.len();
                    let queued = {
                        let refused =
                            matches!(error, RedisError::Rejected(_) | RedisError::Reply(_));
                        let mut abandon = self.0.abandon.borrow_mut();
                        abandon.stats.retries += 1;
                        // To the back: the next SKU's ghosts may live on a Redis that answers
                        // (another Cluster master), and the rule does not depend on the order
                        // in which ghosts are abandoned.
                        for mut ghost in group {
                            ghost.refusals += u32::from(refused);
                            abandon.queue.push_back(ghost);
                        }
                        abandon.queue.len()
                    };
                    if misses < queued {
                        // A refused call (breaker open, node down) costs nothing: let the
                        // shard's other tasks run between them.
                        glommio::yield_if_needed().await;
                        continue;
                    }
                    misses = 0;
                    let jitter = self
                        .0
                        .rng
                        .borrow_mut()
                        .gen_range(0..=backoff.as_micros() as u64);
                    glommio::timer::sleep(backoff + Duration::from_micros(jitter)).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// One `ABANDON` call for `group` (all of one SKU); one outcome per ghost.
    async fn abandon_group(&self, group: &[Ghost]) -> Result<Vec<String>, RedisError> {
        let Some(first) = group.first() else {
            return Ok(Vec::new());
        };
        let mut args = Vec::with_capacity(2 + 3 * group.len());
        args.push(self.0.retention.to_string());
        args.push(group.len().to_string());
        for ghost in group {
            args.push(ghost.order_id.clone());
            args.push(ghost.user_id.clone());
            args.push(ghost.idempotency_key.clone());
        }
        let keys = self.keys(&first.sku).0;
        let key = keys.first().cloned().unwrap_or_default();
        let route = self.route(&key)?;
        let script = &self.0.scripts.abandon;
        let wait = self.0.wait;
        // With `--redis-wait`, a cancel only the master had would come back as a pending order
        // after a failover: it counts as done once the replicas have it, like a purchase.
        let abandon = async {
            if wait.replicas > 0 {
                let fence = self.fence_key(&first.sku);
                self.script_then_wait(&route, script, &keys, &args, &fence, wait)
                    .await
            } else {
                self.evalsha(&route, script, keys.clone(), args.clone())
                    .await
            }
        };
        let reply = self
            .call(&route, super::BACKGROUND_TIMEOUT, Box::pin(abandon))
            .await?;
        let outcomes: Vec<String> = reply
            .into_array()
            .iter()
            .filter_map(Value::as_string)
            .collect();
        if outcomes.len() != group.len() {
            return Err(RedisError::Reply(format!(
                "{} outcomes for {} ghosts",
                outcomes.len(),
                group.len()
            )));
        }
        Ok(outcomes)
    }
}
