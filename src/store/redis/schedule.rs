//! When each owned SKU is read: on a change notice ([`super::notify`]), else on a slow poll
//! that backs off while the SKU does not change, so an idle SKU costs almost nothing and the
//! background work no longer grows with (nodes × SKUs × ticks).
//!
//! - **Notices.** A SKU named by a notice is read at the next owner tick (within about
//!   [`crate::shard::owner::TICK`] plus a round trip), so a purchase on one node shows on every
//!   other within a tick or two.
//! - **Safety poll.** Every SKU is still read now and then, in case a notice was lost: at
//!   [`FIRST_POLL`] after it changed, then twice as long after each read that found it unchanged,
//!   up to [`IDLE_POLL`] (or [`PENDING_POLL`] while it has orders awaiting payment, so a lease
//!   whose holder died is taken over soon). Without a live subscription every SKU is read every
//!   tick, as before notices existed.
//! - **The index.** `PREFIX:sales` is read every [`INDEX_EVERY`]: new sales also announce
//!   themselves by notice, so the index is only the safety net for them.
//! - **Leases.** The reclaimer lease ([`super::reclaim`]) of a SKU with nothing pending is held
//!   with a longer TTL ([`IDLE_LEASE_TTL`]) and renewed a third of that apart: there is nothing to
//!   sweep, so a slower takeover costs nothing. As soon as the SKU changes its holder renews with
//!   [`super::reclaim::LEASE_TTL`] again.
//! - **Settled sales** are not read at all ([`super::retention`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use fred::interfaces::SetsInterface;

use super::reclaim::{Seen, Watch, LEASE_TTL};
use super::{keys, RedisStore, BACKGROUND_TIMEOUT};
use crate::store::Synced;

/// The poll interval right after a SKU changed.
pub const FIRST_POLL: Duration = Duration::from_millis(100);
/// The longest poll interval of a SKU that does not change.
pub const IDLE_POLL: Duration = Duration::from_secs(2);
/// The longest poll interval of a SKU with orders awaiting payment: a holder that died is
/// replaced within its lease's TTL plus this.
pub const PENDING_POLL: Duration = Duration::from_millis(250);
/// How often the index of sales is read.
pub const INDEX_EVERY: Duration = Duration::from_secs(2);
/// The reclaimer lease's TTL while the SKU has nothing pending and did not change.
pub const IDLE_LEASE_TTL: Duration = Duration::from_secs(6);

/// Renews an idle SKU's lease without a `SYNC`: `KEYS = [lease]`, `ARGV = [token, ttl_ms]`.
/// Returns 1 when `token` held the lease and it was renewed, 0 otherwise (the caller then runs
/// the full `SYNC`, which takes the lease back if it is free).
pub const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// What one SKU needs at a tick.
enum Plan {
    /// A full read (`sync_sku`): it changed, or the holder must sweep, or it is unknown.
    Read,
    /// A batched read of its watch keys; a full read only if they changed.
    Poll,
    /// A renewal (`RENEW`) of this shard's lease of the idle SKU.
    Renew,
    /// Nothing: its last read stands.
    Keep,
}

/// One SKU's poll.
#[derive(Debug, Clone, Copy)]
struct Poll {
    interval: Duration,
    next_at: Instant,
    /// The TTL this shard last gave the SKU's lease.
    lease_ttl: Duration,
}

/// One shard's sync schedule. Bounded by the sales this shard owns (sales are admin-made).
#[derive(Debug, Default)]
pub(super) struct Schedule {
    /// Live SKUs this shard owns, from the index and from notices.
    known: HashSet<Box<str>>,
    polls: HashMap<Box<str>, Poll>,
    /// When the index was last read.
    index_read_at: Option<Instant>,
}

impl Schedule {
    /// The TTL `sku`'s lease was last given by this shard.
    pub fn lease_ttl(&self, sku: &str) -> Duration {
        self.polls.get(sku).map_or(LEASE_TTL, |poll| poll.lease_ttl)
    }

    /// Records the TTL just given to `sku`'s lease.
    pub fn set_lease_ttl(&mut self, sku: &str, ttl: Duration) {
        let now = Instant::now();
        self.polls
            .entry(sku.into())
            .or_insert(Poll {
                interval: FIRST_POLL,
                next_at: now,
                lease_ttl: ttl,
            })
            .lease_ttl = ttl;
    }

    /// Forgets `sku` (settled, or no longer owned).
    pub fn forget(&mut self, sku: &str) {
        self.known.remove(sku);
        self.polls.remove(sku);
    }

    fn poll_due(&self, sku: &str, now: Instant) -> bool {
        self.polls.get(sku).is_none_or(|poll| now >= poll.next_at)
    }

    /// Schedules `sku`'s next poll after a read that found it `changed` (or failed).
    fn polled(&mut self, sku: &str, now: Instant, changed: bool, longest: Duration) {
        let poll = self.polls.entry(sku.into()).or_insert(Poll {
            interval: FIRST_POLL,
            next_at: now,
            lease_ttl: LEASE_TTL,
        });
        poll.interval = if changed {
            FIRST_POLL
        } else {
            (poll.interval * 2).min(longest)
        };
        poll.next_at = now + poll.interval;
    }
}

/// The TTL to give `sku`'s lease in a `SYNC` sent now: the long idle one only when the SKU has
/// nothing pending and `watch` shows it unchanged since the last full read.
pub(super) fn next_lease_ttl(seen: Option<&Seen>, watch: &Watch) -> Duration {
    match seen {
        Some(seen) if seen.pending == 0 && seen.due_at.is_none() && &seen.watch == watch => {
            IDLE_LEASE_TTL
        }
        _ => LEASE_TTL,
    }
}

impl RedisStore {
    /// One owner tick's sync: reads the SKUs that changed or are due a poll, and answers every
    /// owned live SKU (from its last read when it was not read now).
    pub(super) async fn sync_scheduled(&self) -> Vec<Synced> {
        let now = Instant::now();
        let (dirty, everything) = self.0.notices.borrow_mut().take();
        let subscribed = self.0.notices.borrow().subscribed();
        let index_due = self
            .0
            .schedule
            .borrow()
            .index_read_at
            .is_none_or(|at| now.duration_since(at) >= INDEX_EVERY);
        if index_due || everything || !subscribed {
            if let Some(indexed) = self.read_index().await {
                let mut schedule = self.0.schedule.borrow_mut();
                schedule.known = indexed;
                schedule.index_read_at = Some(now);
            }
        }
        let mut skus: Vec<Box<str>> = {
            let mut schedule = self.0.schedule.borrow_mut();
            let mut settled = self.0.settled.borrow_mut();
            for sku in dirty.iter().filter(|sku| self.owns(sku)) {
                // A settled SKU changes only when its sale is made again (its keys expired).
                settled.remove(sku);
                schedule.known.insert(sku.clone());
            }
            schedule.known.iter().cloned().collect()
        };
        // A sale this shard has seen is asked about even when the index lost it (FLUSHALL).
        let known: HashSet<Box<str>> = skus.iter().cloned().collect();
        skus.extend(
            self.watched()
                .into_iter()
                .filter(|sku| self.owns(sku) && !known.contains(sku.as_str()))
                .map(Box::from),
        );
        // What each SKU needs this tick: a full read (`sync_sku`), a batched poll, a
        // renewal of its idle lease, or nothing (its last read stands).
        let mut plans = Vec::new();
        let (mut polls, mut renews) = (Vec::new(), Vec::new());
        for sku in skus {
            if self.0.settled.borrow().contains(&sku) {
                continue;
            }
            let plan = {
                let reclaim = self.0.reclaim.borrow();
                let schedule = self.0.schedule.borrow();
                let seen = reclaim.seen.get(&sku);
                // The holder sweeps when an order is due and renews a third of the TTL after
                // its last renewal: with a `SYNC`, or with `RENEW` while the SKU is idle.
                let ttl = schedule.lease_ttl(&sku);
                let idle = ttl == IDLE_LEASE_TTL
                    && seen.is_some_and(|seen| seen.pending == 0 && seen.due_at.is_none());
                let held = reclaim.held.get(&sku);
                let renew_due = held.is_some_and(|at| now.duration_since(*at) >= ttl / 3);
                let sweep_due =
                    held.is_some() && seen.is_some_and(|s| s.due_at.is_some_and(|d| now >= d));
                if everything
                    || !subscribed
                    || seen.is_none()
                    || sweep_due
                    || (renew_due && !idle)
                    || dirty.contains(&sku)
                {
                    Plan::Read
                } else if renew_due {
                    renews.push(sku.clone());
                    Plan::Renew
                } else if schedule.poll_due(&sku, now) {
                    polls.push(sku.clone());
                    Plan::Poll
                } else {
                    Plan::Keep
                }
            };
            let before = self
                .0
                .reclaim
                .borrow()
                .seen
                .get(&sku)
                .map(|seen| seen.watch.clone());
            plans.push((sku, plan, before));
        }
        let polled = if polls.is_empty() && renews.is_empty() {
            super::poll::Polled::default()
        } else {
            Box::pin(self.poll_batch(polls, renews)).await
        };
        let mut owned = Vec::new();
        for (sku, plan, before) in plans {
            let read = match plan {
                Plan::Read => true,
                // Unchanged, and someone holds the lease: the last read stands.
                Plan::Poll => match polled.watches.get(&sku) {
                    Some(watch) if Some(watch) == before.as_ref() && watch[3].is_some() => {
                        self.0.schedule.borrow_mut().polled(
                            &sku,
                            Instant::now(),
                            false,
                            self.longest_poll(&sku, subscribed),
                        );
                        false
                    }
                    _ => true,
                },
                Plan::Renew => !polled.renewed.contains(&sku),
                Plan::Keep => false,
            };
            let answer = if read {
                let answer = Box::pin(self.sync_sku(&sku)).await;
                let changed = answer.is_none()
                    || self.0.reclaim.borrow().seen.get(&sku).map(|s| &s.watch) != before.as_ref();
                let longest = self.longest_poll(&sku, subscribed);
                self.0
                    .schedule
                    .borrow_mut()
                    .polled(&sku, Instant::now(), changed, longest);
                answer
            } else {
                let reclaim = self.0.reclaim.borrow();
                reclaim
                    .seen
                    .get(&sku)
                    .map(|seen| (seen.synced.clone(), seen.pending))
            };
            let Some((synced, pending)) = answer else {
                continue;
            };
            if read && synced.regressed.is_some() && synced.sale.is_none() {
                self.reindex(&sku).await;
            }
            self.settle_if_over(&synced, pending).await;
            owned.push(synced);
        }
        *self.0.last_stock.borrow_mut() = owned
            .iter()
            .filter_map(|synced| synced.sale.as_ref())
            .map(|(sale, level, _)| (sale.sku.clone(), level.remaining))
            .collect();
        let now = crate::clock::now_ms();
        *self.0.last_queues.borrow_mut() = owned
            .iter()
            .filter_map(|synced| {
                let (sale, _, _) = synced.sale.as_ref()?;
                crate::store::QueueGauge::of(sale, synced.tickets, now)
            })
            .collect();
        owned
    }

    /// The longest poll interval of `sku` now.
    fn longest_poll(&self, sku: &str, subscribed: bool) -> Duration {
        let pending = self
            .0
            .reclaim
            .borrow()
            .seen
            .get(sku)
            .is_some_and(|seen| seen.pending > 0);
        if !subscribed {
            FIRST_POLL
        } else if pending {
            PENDING_POLL
        } else {
            IDLE_POLL
        }
    }

    /// The owned SKUs of the index of sales; `None` when it cannot be read now.
    async fn read_index(&self) -> Option<HashSet<Box<str>>> {
        let key = keys::sales(&self.0.prefix);
        let client = self.route(&key).ok()?;
        let skus: Vec<String> = self
            .call(&client, BACKGROUND_TIMEOUT, client.smembers(key.as_str()))
            .await
            .ok()?;
        Some(
            skus.into_iter()
                .filter(|sku| self.owns(sku))
                .map(Box::from)
                .collect(),
        )
    }

    /// Puts a lost sale back in the index, so nodes started later find its marker too.
    async fn reindex(&self, sku: &str) {
        let index = keys::sales(&self.0.prefix);
        let Ok(client) = self.route(&index) else {
            return;
        };
        let _ = self
            .call(
                &client,
                BACKGROUND_TIMEOUT,
                client.sadd::<i64, _, _>(index.as_str(), sku),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_sku_is_polled_ever_less_often_and_a_change_resets_it() {
        let mut schedule = Schedule::default();
        let t0 = Instant::now();
        assert!(schedule.poll_due("a", t0), "never read: due");
        let mut at = t0;
        let mut gaps = Vec::new();
        for _ in 0..8 {
            schedule.polled("a", at, false, IDLE_POLL);
            let next = schedule.polls["a"].next_at;
            gaps.push(next - at);
            assert!(!schedule.poll_due("a", at));
            at = next;
        }
        assert_eq!(gaps[0], FIRST_POLL * 2);
        assert_eq!(*gaps.last().unwrap_or(&Duration::ZERO), IDLE_POLL);
        schedule.polled("a", at, true, IDLE_POLL);
        assert_eq!(schedule.polls["a"].next_at - at, FIRST_POLL);
        schedule.polled("a", at, false, PENDING_POLL);
        schedule.polled("a", at, false, PENDING_POLL);
        assert_eq!(schedule.polls["a"].next_at - at, PENDING_POLL);
    }
}
