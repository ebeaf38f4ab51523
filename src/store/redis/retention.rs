//! Settled sales: over for good, so they leave the index and their keys expire.
//!
//! A sale is *settled* once it is over for good ([`crate::sale::Sale::is_over_for_good`]: ended,
//! its last payment deadline past plus a margin for clocks), nothing is pending, and
//! its store has not regressed. Nothing can change it any more: a started sale cannot be
//! replaced. When a shard finds an owned sale settled it
//! 1. gives every key of the SKU a TTL of `--redis-retention-secs` (unless 0: kept for ever),
//!    with [`SETTLE`], which checks again, atomically, that nothing is pending;
//! 2. removes the SKU from `PREFIX:sales`, so no node (nor one started later) syncs it again:
//!    the index only holds live sales, and settled ones cost no background work anywhere;
//! 3. forgets it locally (lease, last read, regression floor, schedule).
//!
//! Until its keys expire the sale still answers `GET /v1/sales/{sku}` and its orders' reads
//! (a node that does not know it asks Redis, see [`crate::shard::discovery`]); afterwards it is
//! an unknown sale (404), and the SKU may be used for a new sale.

use fred::interfaces::SetsInterface;

use super::reclaim::lease_keys;
use super::{keys, RedisStore, BACKGROUND_TIMEOUT, MAX_SETTLED};
use crate::clock::now_ms;
use crate::store::Synced;

/// Default of `--redis-retention-secs`: a week.
pub const DEFAULT_RETENTION_SECS: u64 = 7 * 24 * 3600;

/// Gives every key of a settled SKU a TTL: `KEYS` = every key of the SKU (its sixteen first),
/// `ARGV = [ttl_ms]`. Refuses (returns -1) when an order is pending or the store regressed, and
/// does nothing (0) for a SKU without a sale; `NX` keeps a TTL set before, so settling again
/// does not push the expiry back. Returns 1 when done.
pub const SETTLE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('ZCARD', KEYS[7]) > 0 or redis.call('EXISTS', KEYS[13]) == 1 then return -1 end
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[1], 'NX') end
return 1
"#;

impl RedisStore {
    /// Every key `sku` (or one bucket's part of it) can have: the sixteen of every script, the
    /// lease's two, the order feed's three, the rate bucket and the replication fence.
    fn all_keys(&self, sku: &str) -> Vec<String> {
        let prefix = &self.0.prefix;
        let mut all = self.keys(sku).0;
        all.extend(lease_keys(prefix, sku));
        let events = format!("{prefix}:{{{sku}}}:events");
        all.extend(["cursor", "lease", "skipped"].map(|part| format!("{events}:{part}")));
        all.push(super::rate::bucket_key(prefix, sku));
        all.push(self.fence_key(sku));
        all
    }

    /// Settles `synced`'s sale if it is over for good (see the module doc); a failed step is
    /// tried again at the next tick.
    pub(super) async fn settle_if_over(&self, synced: &Synced, pending: u64) {
        let (Some((sale, _, _)), None) = (&synced.sale, &synced.regressed) else {
            return;
        };
        if !sale.is_over_for_good(now_ms())
            || pending != 0
            || self.0.settled.borrow().len() >= MAX_SETTLED
        {
            return;
        }
        let sku = &*sale.sku;
        if let Some(retention) = self.0.settle_retention {
            // Every bucket's part is a slot of its own: one script each, part 0 (the sale's
            // definition) last, so a settle cut short is found and finished at the next tick.
            let ttl = retention.as_millis().to_string();
            for bucket in (0..sale.stock_buckets.max(1)).rev() {
                let part = keys::part(sku, bucket);
                let mut part_keys = self.all_keys(&part);
                part_keys.extend(keys::move_keys(&self.0.prefix, &part));
                let Ok(route) = self.route(&part_keys[0]) else {
                    return;
                };
                let attempt =
                    self.evalsha(&route, &self.0.scripts.settle, part_keys, vec![ttl.clone()]);
                let done = self
                    .call(&route, BACKGROUND_TIMEOUT, Box::pin(attempt))
                    .await;
                match done.map(|reply| reply.as_i64()) {
                    Ok(Some(0 | 1)) => {}
                    outcome => {
                        tracing::debug!(sku, bucket, ?outcome, "settling a sale failed; retrying");
                        return;
                    }
                }
            }
        }
        let index = keys::sales(&self.0.prefix);
        let Ok(client) = self.route(&index) else {
            return;
        };
        let removed = self
            .call(
                &client,
                BACKGROUND_TIMEOUT,
                client.srem::<i64, _, _>(index.as_str(), sku),
            )
            .await;
        if removed.is_err() {
            return;
        }
        tracing::debug!(sku, retention = ?self.0.settle_retention, "sale settled");
        self.0.settled.borrow_mut().insert(sku.into());
        // Never synced again: nothing to remember, no lease to keep, and no floor to judge a
        // regression by (its keys are about to expire; a new sale may take the SKU).
        let mut reclaim = self.0.reclaim.borrow_mut();
        reclaim.seen.remove(sku);
        reclaim.held.remove(sku);
        self.0.schedule.borrow_mut().forget(sku);
        // Every part's view: a new sale of the SKU with several buckets starts their seqs afresh,
        // which an old part's floor would take for lost writes.
        for bucket in 0..sale.stock_buckets.max(1) {
            self.forget_floor(&keys::part(sku, bucket));
        }
    }
}
