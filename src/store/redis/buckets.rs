//! Stock buckets: one hot SKU spread over several Redis Cluster masters.
//!
//! A sale with `"stock_buckets": K` (K > 1) keeps its stock in K **parts**, each with the full
//! key set of a SKU under its own hash tag ([`super::keys::part`]): part 0 is the SKU's own
//! `{sku}` (so a sale with one bucket has exactly the layout it always had), part `b` is
//! `{sku~b}`. Different tags land in different slots, so on a Redis Cluster the parts spread over
//! the masters, and every script (purchase, pay, cancel, expiry, sync, abandon, the feed's) runs
//! unchanged on one part. Each part's sale hash holds the whole definition (and `buckets`),
//! and its `remaining` its share of the stock.
//!
//! - **Home bucket.** A user always buys from bucket `fnv1a(user_id) mod K`
//!   ([`super::keys::home_bucket`]), so their holdings, idempotency keys and order list live in
//!   one part and the per-user limit is checked exactly as with one bucket.
//! - **Order ids name their bucket** (six random bits, [`crate::sale::ids::OrderId::bucket`]),
//!   so a payment or cancel by anyone finds the order's part without a lookup.
//! - **Moves.** When a purchase finds its home part sold out (or short), stock moves into it
//!   from the others, and the purchase is tried again; sold-out is only answered when every
//!   part is empty. A move is two scripts on two slots, made idempotent and crash-safe:
//!   1. [`TAKE`] on the donor takes units (at least what is needed, half the donor's stock if
//!      more) and records the move, under an id minted before the first attempt, with its
//!      amount and destination in the donor's `moves` hash, in the same atomic step. A repeat
//!      of the same id answers the recorded move and takes nothing more.
//!   2. [`GIVE`] on the recipient adds the units and records the id in its `given` set, in one
//!      step; an id already there adds nothing.
//!   3. The donor's record is deleted (`HDEL`).
//!
//!   A node that dies between 1 and 2 leaves the units recorded on the donor, not lost: every
//!   sync of a split sale re-drives each recorded move of every part ([`RedisStore::redrive`]):
//!   GIVE (a no-op if it had been given) and then the delete. So a unit is always in exactly
//!   one place: a part's `remaining`, an order, or a donor's record of a move not yet given.
//!   `given` ids are kept a day (a re-driver that read a record just before its delete and
//!   stalled longer than that could give it twice).
//!
//! The embedded store has one book per SKU and no use for buckets: it accepts and shows the
//! field, nothing more.

use std::collections::HashMap;

use fred::interfaces::HashesInterface;
use futures::channel::oneshot;
use rand::Rng;

use super::{batch, keys, RedisError, RedisStore, BACKGROUND_TIMEOUT};
use crate::sale::command::{Outcome, PurchaseRequest, Reply};
use crate::sale::ids::OrderId;
use crate::sale::SaleError;

/// Takes units from a donor part: `KEYS = [remaining, seq, moves, regressed]`, `ARGV =
/// [move_id, destination_bucket, needed]`. Takes the larger of `needed` and half the donor's
/// stock (rounded up), at most what it has, and records `destination amount` under the move id.
/// Returns that record, the one already there for a repeated id, or `''` when nothing was taken
/// (empty, or regressed: a part whose writes were lost gives nothing away).
pub const TAKE: &str = r#"
local record = redis.call('HGET', KEYS[3], ARGV[1])
if record then return record end
if redis.call('EXISTS', KEYS[4]) == 1 then return '' end
local remaining = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = math.min(remaining, math.max(tonumber(ARGV[3]), math.ceil(remaining / 2)))
if n <= 0 then return '' end
redis.call('DECRBY', KEYS[1], n)
redis.call('INCR', KEYS[2])
record = ARGV[2] .. ' ' .. n
redis.call('HSET', KEYS[3], ARGV[1], record)
return record
"#;

/// Gives a move's units to the recipient part, at most once per move id: `KEYS = [remaining,
/// seq, given, regressed]`, `ARGV = [move_id, amount]`. Returns 1 when given now, 0 when it had
/// been already, -1 when refused (the part regressed: the move stays recorded on the donor).
pub const GIVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 86400000)
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then return -1 end
redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[3], now, ARGV[1])
return 1
"#;

/// How many times a purchase is tried again after stock moved into its home part.
const REFILL_TRIES: usize = 3;
/// Purchases that may wait on one part's refill; more are answered with what they got.
const MAX_REFILL_WAITERS: usize = 4096;
/// SKUs whose bucket count a shard remembers; past this the memory is cleared (it is re-read).
const MAX_KNOWN: usize = 100_000;
/// The test hook that stops this process with SIGKILL right after a move's `take` or `give`
/// step, as a node killed mid-move (the crash test, `tests/stock_buckets.rs`).
pub const KILL_HOOK: &str = "SECKILL_TEST_KILL_AFTER_MOVE";

/// A shard's bucket bookkeeping.
#[derive(Debug, Default)]
pub(super) struct Buckets {
    /// Bucket count of each sale seen (by sync, upsert or a read).
    known: HashMap<Box<str>, u32>,
    /// Each part's `remaining` at its last sync: the richest donor is asked first.
    levels: HashMap<Box<str>, u64>,
    /// Parts with a refill running, and the purchases waiting on it.
    refills: HashMap<Box<str>, Vec<oneshot::Sender<u64>>>,
}

impl Buckets {
    /// Remembers `sku`'s bucket count.
    pub(super) fn learn(&mut self, sku: &str, buckets: u32) {
        if self.known.len() >= MAX_KNOWN && !self.known.contains_key(sku) {
            self.known.clear();
            self.levels.clear();
        }
        self.known.insert(sku.into(), buckets.max(1));
    }

    /// Remembers a part's stock at its last sync.
    pub(super) fn saw(&mut self, part: &str, remaining: u64) {
        if self.levels.len() < MAX_KNOWN * 4 || self.levels.contains_key(part) {
            self.levels.insert(part.into(), remaining);
        }
    }
}

/// A reply without its stock level: a part's level is not the SKU's, which the sync sums.
fn without_level(reply: Reply) -> Reply {
    match reply {
        Ok(Outcome::Order {
            order, replayed, ..
        }) => Ok(Outcome::Order {
            order,
            stock: None,
            replayed,
        }),
        other => other,
    }
}

impl RedisStore {
    /// `sku`'s bucket count: remembered, or read from part 0's sale hash (1 when none).
    pub(super) async fn buckets_of(&self, sku: &str) -> Result<u32, RedisError> {
        if let Some(known) = self.0.buckets.borrow().known.get(sku) {
            return Ok(*known);
        }
        let keys = self.keys(sku);
        let sale = keys.0[0].clone();
        let route = self.route(&sale)?;
        let read: Option<u32> = self
            .retrying(&route, || {
                route.hget::<Option<u32>, _, _>(sale.as_str(), "buckets")
            })
            .await?;
        let exists = read.is_some();
        let buckets = read
            .unwrap_or(1)
            .clamp(1, crate::sale::model::MAX_STOCK_BUCKETS);
        if exists {
            self.0.buckets.borrow_mut().learn(sku, buckets);
        }
        Ok(buckets)
    }

    /// Every part of `sku` as this shard last learnt its bucket count, without asking Redis.
    pub(super) fn known_parts(&self, sku: &str) -> Vec<Box<str>> {
        let buckets = self.0.buckets.borrow().known.get(sku).copied().unwrap_or(1);
        (0..buckets).map(|bucket| keys::part(sku, bucket)).collect()
    }

    /// The part holding order `id`.
    pub(super) async fn order_part(&self, id: &OrderId) -> Result<Box<str>, SaleError> {
        let buckets = self.buckets_of(&id.sku).await?;
        if buckets <= 1 {
            return Ok(Box::from(&*id.sku));
        }
        if id.bucket() >= buckets {
            return Err(SaleError::UnknownOrder);
        }
        Ok(keys::part(&id.sku, id.bucket()))
    }

    /// The part holding `user`'s orders of `sku`.
    pub(super) async fn user_part(&self, sku: &str, user: &str) -> Result<Box<str>, RedisError> {
        let buckets = self.buckets_of(sku).await?;
        Ok(keys::part(sku, keys::home_bucket(user, buckets)))
    }

    /// Every part of `sku`, part 0 first.
    pub(super) async fn parts(&self, sku: &str) -> Result<Vec<Box<str>>, RedisError> {
        let buckets = self.buckets_of(sku).await?;
        Ok((0..buckets).map(|bucket| keys::part(sku, bucket)).collect())
    }

    /// A purchase, in the buyer's home part; when that part is short, stock is moved into it
    /// from the others and the purchase tried again.
    pub(super) async fn purchase(&self, request: PurchaseRequest) -> Reply {
        let buckets = self.buckets_of(&request.sku).await?;
        if buckets <= 1 {
            let sku = Box::from(request.sku.as_str());
            return batch::purchase(self, request, sku, None).await;
        }
        let bucket = keys::home_bucket(&request.user_id, buckets);
        let part = keys::part(&request.sku, bucket);
        let mut tries = 0;
        loop {
            let reply = batch::purchase(self, request.clone(), part.clone(), Some(bucket)).await;
            let short = matches!(
                reply,
                Err(SaleError::SoldOut | SaleError::InsufficientStock)
            );
            if !short || tries >= REFILL_TRIES {
                return without_level(reply);
            }
            tries += 1;
            if !self.refill(&part, request.quantity, buckets).await {
                return reply;
            }
        }
    }

    /// Moves stock into `part` (of a sale of `buckets` buckets) for a purchase of `needed`
    /// units. One refill per part runs at a time; purchases arriving meanwhile wait for it.
    /// Whether a purchase is worth trying again.
    async fn refill(&self, part: &str, needed: u32, buckets: u32) -> bool {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self.0.buckets.borrow_mut();
            match state.refills.get_mut(part) {
                Some(waiting) if waiting.len() >= MAX_REFILL_WAITERS => return false,
                Some(waiting) => {
                    waiting.push(tx);
                    false
                }
                None => {
                    state.refills.insert(part.into(), vec![tx]);
                    true
                }
            }
        };
        if start {
            // Its own task: the refill and its bookkeeping finish even if this purchase's
            // caller goes away.
            let store = self.clone();
            let part: Box<str> = part.into();
            glommio::spawn_local(async move {
                let moved = store.pull(&part, needed, buckets).await;
                let waiting = store.0.buckets.borrow_mut().refills.remove(&part);
                for waiter in waiting.unwrap_or_default() {
                    let _ = waiter.send(moved);
                }
            })
            .detach();
        }
        matches!(rx.await, Ok(moved) if moved > 0)
    }

    /// Moves at least `needed` units into `part` if the other parts have them, richest donor
    /// first. Returns the units delivered.
    async fn pull(&self, part: &str, needed: u32, buckets: u32) -> u64 {
        let (sku, bucket) = keys::split_part(part);
        let mut donors: Vec<(u64, u32)> = {
            let state = self.0.buckets.borrow();
            (0..buckets)
                .filter(|donor| *donor != bucket)
                .map(|donor| {
                    let level = state.levels.get(&*keys::part(sku, donor)).copied();
                    // Unknown levels are asked too, after the known rich ones.
                    (level.unwrap_or(1), donor)
                })
                .collect()
        };
        donors.sort_by(|a, b| b.cmp(a));
        let mut moved = 0u64;
        for (_, donor) in donors {
            if moved >= u64::from(needed) {
                break;
            }
            let want = u64::from(needed) - moved;
            match self.move_stock(&keys::part(sku, donor), bucket, want).await {
                Ok(given) => moved += given,
                Err(error) => tracing::debug!(%error, part, donor, "stock move failed"),
            }
        }
        moved
    }

    /// One move of at least `needed` units (if the donor has them) from part `donor` to bucket
    /// `to` of the same SKU: take, give, forget. Returns the units given.
    async fn move_stock(&self, donor: &str, to: u32, needed: u64) -> Result<u64, RedisError> {
        let id = {
            let mut rng = self.0.rng.borrow_mut();
            format!("{:016x}{:016x}", rng.gen::<u64>(), rng.gen::<u64>())
        };
        let [moves, _] = keys::move_keys(&self.0.prefix, donor);
        let take_keys = self.move_script_keys(donor, &moves);
        let args = vec![id.clone(), to.to_string(), needed.to_string()];
        let route = self.route(&moves)?;
        let take = &self.0.scripts.take;
        // Retrying is safe: a repeat of the same move id takes nothing more.
        let record = self
            .retrying(&route, || {
                Box::pin(self.evalsha(&route, take, take_keys.clone(), args.clone()))
            })
            .await?;
        let Some((_, amount)) = parse_record(&record.as_string().unwrap_or_default()) else {
            return Ok(0);
        };
        kill_hook("take");
        let (sku, _) = keys::split_part(donor);
        let given = self.give(&keys::part(sku, to), &id, amount).await?;
        kill_hook("give");
        if given {
            self.forget_move(donor, &id).await?;
            return Ok(amount);
        }
        Ok(0)
    }

    /// The `KEYS` of [`TAKE`] and [`GIVE`] on `part`: its `remaining`, `seq`, move record
    /// (`moves` for a take, `given` for a give) and regression marker.
    fn move_script_keys(&self, part: &str, record: &str) -> Vec<String> {
        let mut part_keys = self.keys(part).0;
        vec![
            std::mem::take(&mut part_keys[1]),
            std::mem::take(&mut part_keys[2]),
            record.to_owned(),
            std::mem::take(&mut part_keys[12]),
        ]
    }

    /// Runs [`GIVE`] of move `id` (`amount` units) on `part`. Whether the units are there now
    /// (given by this call or an earlier one).
    async fn give(&self, part: &str, id: &str, amount: u64) -> Result<bool, RedisError> {
        let [_, given] = keys::move_keys(&self.0.prefix, part);
        let give_keys = self.move_script_keys(part, &given);
        let args = vec![id.to_owned(), amount.to_string()];
        let route = self.route(&given)?;
        let script = &self.0.scripts.give;
        let reply = self
            .retrying(&route, || {
                Box::pin(self.evalsha(&route, script, give_keys.clone(), args.clone()))
            })
            .await?;
        Ok(reply.as_i64().is_some_and(|outcome| outcome >= 0))
    }

    /// Deletes the donor's record of a delivered move.
    async fn forget_move(&self, donor: &str, id: &str) -> Result<(), RedisError> {
        let [moves, _] = keys::move_keys(&self.0.prefix, donor);
        let route = self.route(&moves)?;
        self.retrying(&route, || route.hdel::<i64, _, _>(moves.as_str(), id))
            .await?;
        Ok(())
    }

    /// Delivers every move `part` recorded and did not see confirmed (its mover died, or lost
    /// Redis, between the two steps): give (at most once per id) and forget. Runs at every sync
    /// of a split sale; a move that cannot be given yet stays recorded for the next one.
    /// Returns how many moves it delivered.
    pub(super) async fn redrive(&self, part: &str) -> usize {
        let [moves, _] = keys::move_keys(&self.0.prefix, part);
        let Ok(route) = self.route(&moves) else {
            return 0;
        };
        let read = Box::pin(route.hgetall::<HashMap<String, String>, _>(moves.as_str()));
        let Ok(records) = self.call(&route, BACKGROUND_TIMEOUT, read).await else {
            return 0;
        };
        let mut delivered = 0;
        let (sku, _) = keys::split_part(part);
        for (id, record) in records {
            let Some((to, amount)) = parse_record(&record) else {
                continue;
            };
            let given = self.give(&keys::part(sku, to), &id, amount).await;
            if matches!(given, Ok(true)) {
                tracing::info!(part, move_id = %id, to, amount, "unconfirmed stock move delivered");
                let _ = self.forget_move(part, &id).await;
                delivered += 1;
            }
        }
        delivered
    }
}

/// A move's record, `destination amount`; `None` for nothing taken (or a malformed record,
/// which is left for an operator rather than guessed at).
fn parse_record(record: &str) -> Option<(u32, u64)> {
    let (to, amount) = record.split_once(' ')?;
    let amount: u64 = amount.parse().ok()?;
    (amount > 0).then_some(())?;
    Some((to.parse().ok()?, amount))
}

/// Kills this process (SIGKILL, as `kill -9`) when [`KILL_HOOK`] names `step`: the crash test's
/// way to stop a node exactly between two steps of a move.
fn kill_hook(step: &str) {
    if std::env::var(KILL_HOOK).is_ok_and(|hook| hook == step) {
        eprintln!("{KILL_HOOK}={step}: killing this node mid-move");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_or_are_left_alone() {
        assert_eq!(parse_record("2 17"), Some((2, 17)));
        assert_eq!(parse_record(""), None);
        assert_eq!(parse_record("2 0"), None);
        assert_eq!(parse_record("x 3"), None);
    }
}
