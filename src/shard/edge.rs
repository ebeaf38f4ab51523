//! Every shard's replica of what the edge needs to refuse requests without a hop: each sale's
//! window and rate limit, the sold-out flags, and the blocklist. Owners keep it current through
//! [`Notice`]s; the purchase path only reads it and its own token buckets.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::message::Notice;
use crate::sale::admission::{fair_share, DemandMeter, TokenBucket};
use crate::sale::SaleError;

/// Why the edge refused a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A domain refusal (unknown sale, window, blocked, sold out).
    Sale(SaleError),
    /// Over the sale's rate; retry after this long.
    RateLimited(Duration),
}

/// What the edge knows about one sale.
#[derive(Debug)]
struct EdgeSale {
    starts_at: u64,
    ends_at: u64,
    rate_limit_per_sec: u32,
    /// This shard's share of the node-wide rate; `None` when unlimited.
    bucket: Option<TokenBucket>,
    demand: DemandMeter,
    /// Latest smoothed demand of every shard, indexed by shard.
    shard_demand: Vec<f64>,
    sold_out: bool,
    version: u64,
}

/// The edge replica of one shard.
#[derive(Debug)]
pub struct Edge {
    shard: usize,
    shards: usize,
    sales: HashMap<Box<str>, EdgeSale>,
    blocked: HashSet<Box<str>>,
}

impl Edge {
    /// An empty replica for `shard` of `shards`.
    pub fn new(shard: usize, shards: usize) -> Self {
        Self {
            shard,
            shards,
            sales: HashMap::new(),
            blocked: HashSet::new(),
        }
    }

    /// Applies an owner's update.
    pub fn apply(&mut self, notice: &Notice, now: Instant) {
        match notice {
            Notice::SaleUpserted { sale, version } => {
                let share = f64::from(sale.rate_limit_per_sec) / self.shards as f64;
                let entry = EdgeSale {
                    starts_at: sale.starts_at,
                    ends_at: sale.ends_at,
                    rate_limit_per_sec: sale.rate_limit_per_sec,
                    bucket: (sale.rate_limit_per_sec > 0).then(|| TokenBucket::new(share, now)),
                    demand: DemandMeter::default(),
                    shard_demand: vec![0.0; self.shards],
                    sold_out: false,
                    version: *version,
                };
                self.sales.insert(sale.sku.clone(), entry);
            }
            Notice::StockFlag {
                sku,
                sold_out,
                version,
            } => {
                if let Some(entry) = self.sales.get_mut(sku) {
                    if *version > entry.version {
                        entry.sold_out = *sold_out;
                        entry.version = *version;
                    }
                }
            }
            Notice::Blocked { user_id, blocked } => {
                if *blocked {
                    self.blocked.insert(user_id.clone());
                } else {
                    self.blocked.remove(user_id);
                }
            }
            Notice::Demand { from, per_sku } => {
                for (sku, demand) in per_sku {
                    let entry = self.sales.get_mut(sku);
                    if let Some(slot) = entry.and_then(|e| e.shard_demand.get_mut(*from)) {
                        *slot = *demand;
                    }
                }
            }
        }
    }

    /// Whether `user_id` is on this replica's blocklist.
    pub fn is_blocked(&self, user_id: &str) -> bool {
        self.blocked.contains(user_id)
    }

    /// Every user on this replica's blocklist.
    pub fn blocked_users(&self) -> impl Iterator<Item = &str> {
        self.blocked.iter().map(|user| &**user)
    }

    /// The edge checks for a purchase, in contract order: sale exists, window, blocklist, rate,
    /// then the sold-out flag. A request carrying an idempotency key skips the sold-out flag,
    /// because it may be the retry of a purchase that succeeded and must get its order back.
    pub fn admit_purchase(
        &mut self,
        sku: &str,
        user_id: &str,
        may_be_replay: bool,
        now_ms: u64,
        now: Instant,
    ) -> Result<(), Refusal> {
        let sale = self
            .sales
            .get_mut(sku)
            .ok_or(Refusal::Sale(SaleError::UnknownSale))?;
        if now_ms < sale.starts_at {
            return Err(Refusal::Sale(SaleError::NotStarted));
        }
        if now_ms >= sale.ends_at {
            return Err(Refusal::Sale(SaleError::Ended));
        }
        if self.blocked.contains(user_id) {
            return Err(Refusal::Sale(SaleError::Blocked));
        }
        if let Some(bucket) = &mut sale.bucket {
            sale.demand.record();
            bucket.try_take(now).map_err(Refusal::RateLimited)?;
        }
        if sale.sold_out && !may_be_replay {
            return Err(Refusal::Sale(SaleError::SoldOut));
        }
        Ok(())
    }

    /// Ends a demand-measuring tick: returns this shard's smoothed demand per rate-limited sale
    /// (to tell the other shards) and re-splits every rate by the latest demands.
    pub fn close_tick(&mut self, tick: Duration, now: Instant) -> Vec<(Box<str>, f64)> {
        let mut report = Vec::new();
        for (sku, sale) in &mut self.sales {
            let Some(bucket) = &mut sale.bucket else {
                continue;
            };
            let previous = sale.demand.per_sec();
            let demand = sale.demand.close_tick(tick);
            if let Some(slot) = sale.shard_demand.get_mut(self.shard) {
                *slot = demand;
            }
            // Quiet sales stop reporting once their demand has decayed to nothing.
            if demand > 0.01 || previous > 0.01 {
                report.push((sku.clone(), demand));
            }
            let rate = f64::from(sale.rate_limit_per_sec);
            let share = fair_share(rate, &sale.shard_demand, self.shard);
            bucket.set_rate(share, now);
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sale::Sale;

    fn sale(rate: u32) -> Notice {
        Notice::SaleUpserted {
            sale: Sale {
                sku: "s".into(),
                name: "n".into(),
                stock: 10,
                starts_at: 100,
                ends_at: 200,
                per_user_limit: 1,
                payment_timeout_ms: 1000,
                rate_limit_per_sec: rate,
            },
            version: 1,
        }
    }

    #[test]
    fn checks_run_in_contract_order() {
        let now = Instant::now();
        let mut edge = Edge::new(0, 1);
        let refused = |r: Result<(), Refusal>| r.err();
        assert_eq!(
            refused(edge.admit_purchase("s", "u", false, 150, now)),
            Some(Refusal::Sale(SaleError::UnknownSale))
        );
        edge.apply(&sale(1), now);
        assert_eq!(
            refused(edge.admit_purchase("s", "u", false, 99, now)),
            Some(Refusal::Sale(SaleError::NotStarted))
        );
        assert_eq!(
            refused(edge.admit_purchase("s", "u", false, 200, now)),
            Some(Refusal::Sale(SaleError::Ended))
        );
        let block = Notice::Blocked {
            user_id: "u".into(),
            blocked: true,
        };
        edge.apply(&block, now);
        assert_eq!(
            refused(edge.admit_purchase("s", "u", false, 150, now)),
            Some(Refusal::Sale(SaleError::Blocked))
        );
        assert_eq!(edge.admit_purchase("s", "v", false, 150, now), Ok(()));
        assert!(matches!(
            edge.admit_purchase("s", "v", false, 150, now),
            Err(Refusal::RateLimited(_))
        ));
        let flag = |sold_out, version| Notice::StockFlag {
            sku: "s".into(),
            sold_out,
            version,
        };
        edge.apply(&flag(true, 3), now);
        edge.apply(&flag(false, 2), now);
        let later = now + Duration::from_secs(2);
        assert_eq!(
            refused(edge.admit_purchase("s", "v", false, 150, later)),
            Some(Refusal::Sale(SaleError::SoldOut)),
            "a stale flag must not undo a newer one"
        );
        let even_later = later + Duration::from_secs(2);
        assert_eq!(edge.admit_purchase("s", "v", true, 150, even_later), Ok(()));
    }
}
