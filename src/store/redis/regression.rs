//! Noticing that Redis lost writes, and resuming on an operator's order.
//!
//! A FLUSHALL, a restart without persistence or a restore of an older snapshot takes a started
//! sale's state backwards: acknowledged orders vanish and their stock would be sold again. Each
//! shard remembers its newest view of every SKU it owns (a [`Floor`]: the sale's epoch, its stock
//! sequence number and remaining stock) and hands it to every `SYNC` and `PURCHASE` script call,
//! which compare it with what Redis has in the same atomic step. The first call that finds the
//! sale gone, its epoch lower, or its sequence lower in the same epoch writes the SKU's
//! regression marker; every node then refuses the SKU (`503 store_regressed`) until an operator
//! runs `RESUME`, which states what was lost and moves epoch and sequence past every view, so
//! every node adopts the resumed state as its new baseline.

use std::collections::{HashMap, HashSet};

use fred::interfaces::SetsInterface;
use fred::types::Value;

use super::decode::{decode_sale, int_at, refusal_at, str_at};
use super::{keys, RedisError, RedisStore};
use crate::sale::command::{Outcome, Reply, StockLevel};
use crate::sale::{Sale, SaleError};
use crate::store::Synced;

/// SKUs one shard keeps a view of at most. Sales are created only by the admin, so this bounds
/// memory against a runaway script, not an attacker; past it, new SKUs go unwatched.
const MAX_FLOORS: usize = 100_000;

/// A shard's newest view of one SKU's state in Redis.
#[derive(Debug, Clone)]
pub struct Floor {
    /// Bumped by every resume.
    pub epoch: u64,
    /// The highest stock sequence number seen in this epoch.
    pub seq: u64,
    /// Remaining stock at that sequence number.
    pub remaining: u64,
    /// The sale as last read, to re-create it if Redis lost it.
    pub sale: Sale,
}

impl Floor {
    /// Moves the view up to `level` if it is newer; never down. With several purchase calls of
    /// a SKU in flight (`--redis-pipeline`), replies can come back in another order than the
    /// calls ran (a retry, a reply that waited on `WAIT`): an older call's reply carries a
    /// lower seq, and taking it would lower the floor below what Redis was already seen to
    /// hold, hiding a regression back to between the two. Seq only grows in Redis within an
    /// epoch (a resume moves it past every view), so the highest seen is the newest.
    pub fn raise(&mut self, level: StockLevel) -> bool {
        if level.seq > self.seq {
            self.seq = level.seq;
            self.remaining = level.remaining;
            true
        } else {
            false
        }
    }
}

/// What one shard's store knows about regressions.
#[derive(Debug, Default)]
pub struct Regression {
    /// Newest view per owned SKU.
    floors: HashMap<Box<str>, Floor>,
    /// Owned SKUs whose marker the last sync found.
    regressed: HashSet<Box<str>>,
    /// Times a SKU joined `regressed`.
    detected: u64,
}

impl Regression {
    /// `(regressions seen, SKUs regressed now)` for `/metrics`.
    pub fn stats(&self) -> (u64, u64) {
        (self.detected, self.regressed.len() as u64)
    }
}

/// This node's name in regression reports: host and process id.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|host| host.trim().to_owned())
        .unwrap_or_else(|_| "unknown-host".to_owned());
    format!("{host}/pid {}", std::process::id())
}

impl RedisStore {
    /// The five script arguments describing this shard's view of `sku`: epoch, seq, remaining,
    /// starts_at and the node's name; empty when it has none (nothing to compare with).
    pub(super) fn floor_args(&self, sku: &str) -> Vec<String> {
        let regression = self.0.regression.borrow();
        match regression.floors.get(sku) {
            Some(floor) => vec![
                floor.epoch.to_string(),
                floor.seq.to_string(),
                floor.remaining.to_string(),
                floor.sale.starts_at.to_string(),
                self.0.node.clone(),
            ],
            None => vec![String::new(); 5],
        }
    }

    /// Raises `sku`'s view to `level` (a purchase's reply), if it is newer.
    pub(super) fn saw_level(&self, sku: &str, level: StockLevel) {
        if let Some(floor) = self.0.regression.borrow_mut().floors.get_mut(sku) {
            floor.raise(level);
        }
    }

    /// Records a sale's state as read from Redis: a newer epoch (a resume) is adopted as the new
    /// baseline; within an epoch the view only moves forward.
    fn saw_sale(&self, sale: &Sale, level: StockLevel, epoch: u64) {
        let mut regression = self.0.regression.borrow_mut();
        let full = regression.floors.len() >= MAX_FLOORS;
        match regression.floors.get_mut(&sale.sku) {
            Some(floor)
                if epoch > floor.epoch || (epoch == floor.epoch && level.seq >= floor.seq) =>
            {
                *floor = Floor {
                    epoch,
                    seq: level.seq,
                    remaining: level.remaining,
                    sale: sale.clone(),
                };
            }
            Some(floor) => floor.sale = sale.clone(),
            None if !full => {
                let floor = Floor {
                    epoch,
                    seq: level.seq,
                    remaining: level.remaining,
                    sale: sale.clone(),
                };
                regression.floors.insert(sale.sku.clone(), floor);
            }
            None => {}
        }
    }

    /// Records a sale this shard just created or replaced: its view starts afresh.
    pub(super) fn created(&self, sale: &Sale, level: StockLevel, epoch: u64) {
        self.0.regression.borrow_mut().floors.remove(&sale.sku);
        self.saw_sale(sale, level, epoch);
    }

    /// Drops `sku`'s view: its sale settled, and its keys expire ([`super::retention`]).
    pub(super) fn forget_floor(&self, sku: &str) {
        self.0.regression.borrow_mut().floors.remove(sku);
    }

    /// Every SKU this shard has a view of; the sync asks about them even when Redis' index of
    /// sales lost them.
    pub(super) fn watched(&self) -> Vec<String> {
        let regression = self.0.regression.borrow();
        regression
            .floors
            .keys()
            // Parts of split sales are synced with their SKU (`buckets`).
            .filter(|sku| !super::keys::is_part(sku))
            .map(|sku| sku.to_string())
            .collect()
    }

    /// Reads one `SYNC` reply for `sku` and updates the view and the regressed set.
    pub(super) fn synced(&self, sku: &str, reply: Value) -> Result<Synced, RedisError> {
        let fields = reply.clone().into_array();
        let marker_at = match fields.len() {
            0 => None,
            2 => Some(1),
            _ => Some(11),
        };
        let marker = marker_at
            .and_then(|index| fields.get(index))
            .and_then(Value::as_string)
            .filter(|marker| !marker.is_empty())
            .map(Box::<str>::from);
        let sale = if fields.len() > 2 {
            decode_sale(sku, reply)?.map(|(sale, level)| {
                let epoch = int_at(&fields, 10).unwrap_or(0);
                (sale, level, epoch)
            })
        } else {
            None
        };
        if let (Some((sale, level, epoch)), None) = (&sale, &marker) {
            self.saw_sale(sale, *level, *epoch);
        }
        let mut regression = self.0.regression.borrow_mut();
        if marker.is_some() {
            if regression.regressed.insert(sku.into()) {
                regression.detected += 1;
            }
        } else {
            regression.regressed.remove(sku);
        }
        Ok(Synced {
            sku: sku.into(),
            sale,
            regressed: marker,
            tickets: int_at(&fields, 20).unwrap_or(0),
        })
    }

    /// Runs `RESUME` for `part` (a SKU, or one of its stock buckets): clears its regression
    /// marker, re-creating the part's sale from this shard's copy if Redis lost it, with
    /// `remaining` units left (default: the lower of Redis' and the newest view's). Answers the
    /// report of what was lost. [`RedisStore::resume_sale`] calls it for each regressed part.
    pub(super) async fn resume_part(&self, part: &str, remaining: Option<u64>) -> Reply {
        let mut args = self.floor_args(part);
        args.push(remaining.map(|units| units.to_string()).unwrap_or_default());
        let copy = self
            .0
            .regression
            .borrow()
            .floors
            .get(part)
            .map(|floor| floor.sale.clone());
        if let Some(sale) = &copy {
            let mut definition = super::commands::sale_args(sale);
            if keys::is_part(part) {
                // A bucket's copy is not the sale the order feed announces; the stream gets no
                // `sale` entry for it.
                if let Some(json) = definition.last_mut() {
                    json.clear();
                }
            }
            args.extend(definition);
            // Bucket 0 holds the bucket count every node reads.
            args.push(sale.stock_buckets.to_string());
        }
        if copy.is_some() && !keys::is_part(part) {
            // The index of sales may be gone too; the sync finds sales through it.
            let index = keys::sales(&self.0.prefix);
            let route = self.route(&index)?;
            self.retrying(&route, || route.sadd::<i64, _, _>(index.as_str(), part))
                .await?;
        }
        let resume = &self.0.scripts.resume;
        let reply = self
            .acknowledged_script(resume, part, args, &std::cell::Cell::new(false))
            .await?;
        let fields = reply.into_array();
        match fields.first().and_then(Value::as_str).as_deref() {
            Some("ok") => {
                // A sale Redis lost lost its copy of the blocklist too; the purchase script
                // checks that copy.
                self.reconcile_blocklist(part, &[]).await?;
                let report = str_at(&fields, 1)?;
                tracing::warn!(part, report = %report, "sale resumed after its store regressed");
                self.0.regression.borrow_mut().regressed.remove(part);
                Ok(Outcome::Resumed(report.into()))
            }
            Some("err") => Err(refusal_at(&fields, 1)),
            _ => Err(SaleError::Unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor(seq: u64, remaining: u64) -> Floor {
        let sale: Sale = crate::json::parse(
            br#"{"sku":"s","name":"n","stock":10,"starts_at":0,"ends_at":1,"per_user_limit":1,"payment_timeout_ms":1,"rate_limit_per_sec":0}"#,
        )
        .expect("a sale");
        Floor {
            epoch: 1,
            seq,
            remaining,
            sale,
        }
    }

    #[test]
    fn an_older_calls_reply_never_lowers_the_view() {
        // Calls A (ran first: seq 11) and B (ran second: seq 12) in flight together; B's reply
        // comes back first.
        let mut view = floor(10, 90);
        assert!(view.raise(StockLevel {
            remaining: 88,
            seq: 12
        }));
        assert!(!view.raise(StockLevel {
            remaining: 89,
            seq: 11
        }));
        assert_eq!((view.seq, view.remaining), (12, 88));
        // The same level again changes nothing either.
        assert!(!view.raise(StockLevel {
            remaining: 88,
            seq: 12
        }));
    }
}
