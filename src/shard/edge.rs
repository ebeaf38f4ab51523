//! Every shard's replica of what the edge needs to refuse requests without a hop: each sale's
//! window and rate limit, the sold-out flags, and the blocklist. Owners keep it current through
//! [`Notice`]s; the purchase path only reads it and its own token buckets.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::time::{Duration, Instant};

use super::message::Notice;
use super::placement::owner_of;
use crate::sale::admission::{fair_split, DemandMeter, Grant, Lease, TokenBucket};
use crate::sale::model::Admission;
use crate::sale::SaleError;

/// The smallest change of a shard's fraction worth telling the others about: sales whose demand
/// is steady cost no messages.
const SPLIT_RESOLUTION: f64 = 1e-3;

/// Why the edge refused a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A domain refusal (unknown sale, window, blocked, sold out).
    Sale(SaleError),
    /// Over the sale's rate; retry after this long.
    RateLimited(Duration),
}

/// What a purchase must prove at the edge besides its shopper token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A proof-of-work solution with this many leading zero bits ([`crate::sale::pow`]).
    Work(u8),
    /// A waiting-room pass ([`crate::sale::pass`]).
    Pass,
}

/// What the edge knows of a sale's admission, for the calls that come before a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionRules {
    /// See [`crate::sale::Sale::admission`].
    pub admission: Admission,
    /// See [`crate::sale::Sale::pow_bits`].
    pub pow_bits: u8,
    /// See [`crate::sale::Sale::starts_at`]: part of a ticket's score and a lottery's seed.
    pub starts_at: u64,
    /// See [`crate::sale::Sale::register_from`]: part of a lottery's seed.
    pub register_from: u64,
}

/// What the edge knows about one sale.
#[derive(Debug)]
struct EdgeSale {
    starts_at: u64,
    ends_at: u64,
    rate_limit_per_sec: u32,
    /// See [`crate::sale::Sale::pow_bits`].
    pow_bits: u8,
    /// See [`crate::sale::Sale::admission`].
    admission: Admission,
    /// See [`crate::sale::Sale::register_from`].
    register_from: u64,
    /// This shard's fraction of the node-wide rate, as the SKU's owner last split it.
    fraction: f64,
    /// This shard's share of the node-wide rate; `None` when unlimited. With a cluster-wide
    /// bucket, it only admits while leasing from that bucket fails.
    bucket: Option<TokenBucket>,
    /// Tokens leased from the sale's cluster-wide bucket, when the edge leases
    /// ([`Edge::leasing`]) and the sale is limited.
    lease: Option<Lease>,
    demand: DemandMeter,
    /// Latest smoothed demand of every shard, indexed by shard; only the owner splits by it.
    shard_demand: Vec<f64>,
    /// The owner's last published split, so an unchanged one is not sent again.
    split: Vec<f64>,
    sold_out: bool,
    version: u64,
}

/// The edge replica of one shard.
#[derive(Debug)]
pub struct Edge {
    shard: usize,
    shards: usize,
    sales: HashMap<Box<str>, EdgeSale>,
    /// Every SKU in `sales`, in order: the index `GET /v1/sales` pages through, kept as sales
    /// are announced so that listing a page never walks every sale.
    skus: BTreeSet<Box<str>>,
    /// The same SKUs by start time, for `GET /v1/orders`, which reads the most recent ones.
    by_start: BTreeSet<(u64, Box<str>)>,
    blocked: HashSet<Box<str>>,
    /// Blocklist changes applied here so far, so a blocklist sync can tell that its read of the
    /// shared store may be older than what this copy already holds.
    blocklist_changes: u64,
    /// SKUs whose shared store regressed: refused whether or not the sale is known here (Redis
    /// may have lost the sale itself). Bounded by the sales the owners know.
    regressed: HashSet<Box<str>>,
    /// When the last demand-measuring tick closed.
    last_tick: Option<Instant>,
    /// Whether rate limits are cluster-wide: each limited sale's tokens are leased from a
    /// shared bucket ([`Edge::lease_asks`]) instead of coming from the local share alone.
    leasing: bool,
    /// Sales whose lease the hot path found low since the lease task last looked; bounded by
    /// the sales this edge knows.
    wanting: HashSet<Box<str>>,
}

/// What a shard tells the others at the end of a tick.
#[derive(Debug, Default)]
pub struct TickReport {
    /// This shard's smoothed demand per rate-limited sale, for the sales' owners.
    pub demand: Vec<(Box<str>, f64)>,
    /// Every shard's fraction of the rate of each sale this shard owns.
    pub fractions: Vec<(Box<str>, Vec<f64>)>,
}

impl Edge {
    /// An empty replica for `shard` of `shards`.
    pub fn new(shard: usize, shards: usize) -> Self {
        Self {
            shard,
            shards,
            sales: HashMap::new(),
            skus: BTreeSet::new(),
            by_start: BTreeSet::new(),
            blocked: HashSet::new(),
            blocklist_changes: 0,
            regressed: HashSet::new(),
            last_tick: None,
            leasing: false,
            wanting: HashSet::new(),
        }
    }

    /// Makes every limited sale's rate cluster-wide: tokens are leased in blocks from a
    /// shared bucket by the shard's lease task, and the local share admits only while that
    /// fails.
    pub fn leasing(mut self, leasing: bool) -> Self {
        self.leasing = leasing;
        self
    }

    /// Up to `max` lease calls to send now: each sale whose lease ran low, and the tokens to
    /// ask for at its rate. Marks them sent.
    pub fn lease_asks(&mut self, now: Instant, max: usize) -> Vec<(Box<str>, u32, u32)> {
        let mut asks = Vec::new();
        let mut done = Vec::new();
        for sku in &self.wanting {
            if asks.len() >= max {
                break;
            }
            let Some(sale) = self.sales.get_mut(sku) else {
                done.push(sku.clone());
                continue;
            };
            let Some(lease) = &mut sale.lease else {
                done.push(sku.clone());
                continue;
            };
            if let Some(want) = lease.wants(now) {
                lease.sent();
                asks.push((sku.clone(), sale.rate_limit_per_sec, want));
                done.push(sku.clone());
            }
        }
        for sku in done {
            self.wanting.remove(&sku);
        }
        asks
    }

    /// Records a lease call's outcome (`None`: it failed).
    pub fn lease_settled(&mut self, sku: &str, grant: Option<Grant>, now: Instant) {
        let Some(lease) = self.sales.get_mut(sku).and_then(|sale| sale.lease.as_mut()) else {
            return;
        };
        lease.settle(grant, now);
        if lease.wants(now).is_some() || grant.is_none_or(|grant| grant.tokens == 0) {
            // Asked for again by the lease task once due.
            self.wanting.insert(sku.into());
        }
    }

    /// Applies an owner's update.
    pub fn apply(&mut self, notice: &Notice, now: Instant) {
        match notice {
            Notice::SaleUpserted { sale, version } => {
                let even = 1.0 / self.shards as f64;
                let rate = f64::from(sale.rate_limit_per_sec);
                match self.sales.get_mut(&sale.sku) {
                    // A re-announced definition (a shared store's sync, a replaced sale) keeps the
                    // tokens and split already in force: a fresh full bucket would be free burst.
                    Some(entry) => {
                        if entry.starts_at != sale.starts_at {
                            self.by_start.remove(&(entry.starts_at, sale.sku.clone()));
                            self.by_start.insert((sale.starts_at, sale.sku.clone()));
                        }
                        entry.starts_at = sale.starts_at;
                        entry.ends_at = sale.ends_at;
                        entry.rate_limit_per_sec = sale.rate_limit_per_sec;
                        entry.pow_bits = sale.pow_bits;
                        entry.admission = sale.admission;
                        entry.register_from = sale.register_from;
                        entry.sold_out = false;
                        entry.version = *version;
                        let share = rate * entry.fraction;
                        match (&mut entry.bucket, sale.rate_limit_per_sec > 0) {
                            (Some(bucket), true) => bucket.set_rate(share, now),
                            (None, true) => entry.bucket = Some(TokenBucket::new(share, now)),
                            (_, false) => entry.bucket = None,
                        }
                        match (
                            &mut entry.lease,
                            sale.rate_limit_per_sec > 0 && self.leasing,
                        ) {
                            (Some(lease), true) => lease.set_rate(sale.rate_limit_per_sec),
                            (None, true) => entry.lease = Some(Lease::new(sale.rate_limit_per_sec)),
                            (_, false) => entry.lease = None,
                        }
                    }
                    None => {
                        let entry = EdgeSale {
                            starts_at: sale.starts_at,
                            ends_at: sale.ends_at,
                            rate_limit_per_sec: sale.rate_limit_per_sec,
                            pow_bits: sale.pow_bits,
                            admission: sale.admission,
                            register_from: sale.register_from,
                            fraction: even,
                            bucket: (sale.rate_limit_per_sec > 0)
                                .then(|| TokenBucket::new(rate * even, now)),
                            lease: (sale.rate_limit_per_sec > 0 && self.leasing)
                                .then(|| Lease::new(sale.rate_limit_per_sec)),
                            demand: DemandMeter::default(),
                            shard_demand: vec![0.0; self.shards],
                            split: vec![even; self.shards],
                            sold_out: false,
                            version: *version,
                        };
                        self.sales.insert(sale.sku.clone(), entry);
                        self.skus.insert(sale.sku.clone());
                        self.by_start.insert((sale.starts_at, sale.sku.clone()));
                    }
                }
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
                self.blocklist_changes += 1;
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
            Notice::Shares { per_sku } => self.apply_fractions(per_sku, false, now),
            Notice::Regressed { sku, regressed } => {
                if *regressed {
                    self.regressed.insert(sku.clone());
                } else {
                    self.regressed.remove(sku);
                }
            }
        }
    }

    /// Sets this shard's fraction of each listed sale's rate from a split the sale's owner made.
    /// With `only_lower`, only fractions that shrink are applied: the owner lowers its own share
    /// before the other shards hear of a new split and raises it only after, so that the shares
    /// in force never add up to more than the rate, even while a split spreads.
    pub fn apply_fractions(
        &mut self,
        per_sku: &[(Box<str>, Vec<f64>)],
        only_lower: bool,
        now: Instant,
    ) {
        for (sku, fractions) in per_sku {
            let (Some(sale), Some(fraction)) = (self.sales.get_mut(sku), fractions.get(self.shard))
            else {
                continue;
            };
            if !fraction.is_finite() || (only_lower && *fraction >= sale.fraction) {
                continue;
            }
            sale.fraction = fraction.clamp(0.0, 1.0);
            if let Some(bucket) = &mut sale.bucket {
                bucket.set_rate(f64::from(sale.rate_limit_per_sec) * sale.fraction, now);
            }
        }
    }

    /// This shard's share of `sku`'s rate now in force, per second; `None` when the sale is
    /// unknown here or unlimited.
    pub fn rate_share(&self, sku: &str) -> Option<f64> {
        let bucket = self.sales.get(sku)?.bucket.as_ref()?;
        Some(bucket.rate_per_sec())
    }

    /// Up to `limit` known SKUs that sort after `after` (from the first without it), in order.
    pub fn skus_after(&self, after: Option<&str>, limit: usize) -> Vec<Box<str>> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        self.skus
            .range::<str, _>((from, Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The admission rules of `sku`, if this edge knows the sale.
    pub fn admission_rules(&self, sku: &str) -> Option<AdmissionRules> {
        self.sales.get(sku).map(|sale| AdmissionRules {
            admission: sale.admission,
            pow_bits: sale.pow_bits,
            starts_at: sale.starts_at,
            register_from: sale.register_from,
        })
    }

    /// Whether this replica knows `sku`; one it does not may still exist in a shared store
    /// (created through another node since the last sync), see [`super::discovery`].
    pub fn knows(&self, sku: &str) -> bool {
        self.sales.contains_key(sku)
    }

    /// Up to `limit` SKUs of sales that had started at `now_ms`, the latest start first: those
    /// that can hold orders, most recent first.
    pub fn started_skus(&self, now_ms: u64, limit: usize) -> Vec<Box<str>> {
        self.by_start
            .range(..(now_ms.saturating_add(1), Box::<str>::from("")))
            .rev()
            .take(limit)
            .map(|(_, sku)| sku.clone())
            .collect()
    }

    /// Whether `user_id` is on this replica's blocklist.
    pub fn is_blocked(&self, user_id: &str) -> bool {
        self.blocked.contains(user_id)
    }

    /// How many blocklist changes this copy has applied (see [`Edge::blocked_users`]).
    pub fn blocklist_changes(&self) -> u64 {
        self.blocklist_changes
    }

    /// Every user on this replica's blocklist.
    pub fn blocked_users(&self) -> impl Iterator<Item = &str> {
        self.blocked.iter().map(|user| &**user)
    }

    /// The edge checks for a purchase, in contract order: the store has not regressed, sale
    /// exists, window, blocklist, gate, rate, then the sold-out flag. `proves` checks the
    /// request against the sale's [`Gate`]: a waiting-room pass, or proof-of-work in a
    /// first-come-first-served sale that asks for it. It runs only for a sale with a gate, and
    /// before the rate limit, so that requests that fail it spend no tokens.
    /// A request carrying an idempotency key skips the sold-out flag, because it may be the
    /// retry of a purchase that succeeded and must get its order back.
    pub fn admit_purchase(
        &mut self,
        sku: &str,
        user_id: &str,
        may_be_replay: bool,
        now_ms: u64,
        now: Instant,
        proves: impl FnOnce(Gate) -> bool,
    ) -> Result<(), Refusal> {
        if self.regressed.contains(sku) {
            return Err(Refusal::Sale(SaleError::StoreRegressed));
        }
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
        let gate = match sale.admission {
            Admission::WaitingRoom | Admission::Lottery => Some(Gate::Pass),
            Admission::Fcfs if sale.pow_bits > 0 => Some(Gate::Work(sale.pow_bits)),
            Admission::Fcfs => None,
        };
        if let Some(gate) = gate {
            if !proves(gate) {
                return Err(Refusal::Sale(match gate {
                    Gate::Work(_) => SaleError::PowInvalid,
                    Gate::Pass => SaleError::NotAdmitted,
                }));
            }
        }
        if let Some(bucket) = &mut sale.bucket {
            sale.demand.record();
            let taken = match &mut sale.lease {
                Some(lease) if !lease.failing() => lease.try_take(now),
                Some(lease) => {
                    // The shared bucket is out of reach: this shard's share of the node-wide
                    // rate, as without a cluster-wide limit (see `store::redis::rate`).
                    lease.note_demand();
                    bucket.try_take(now)
                }
                None => bucket.try_take(now),
            };
            if sale
                .lease
                .as_ref()
                .is_some_and(|lease| lease.wants(now).is_some())
                && !self.wanting.contains(sku)
            {
                self.wanting.insert(sku.into());
            }
            taken.map_err(Refusal::RateLimited)?;
        }
        if sale.sold_out && !may_be_replay {
            return Err(Refusal::Sale(SaleError::SoldOut));
        }
        Ok(())
    }

    /// Ends a demand-measuring tick (nominally `tick` long; the time since the last one is used
    /// when known): returns this shard's smoothed demand per rate-limited sale, and a new split
    /// of the rate of every sale this shard owns by the latest demands it has heard.
    pub fn close_tick(&mut self, tick: Duration, now: Instant) -> TickReport {
        let elapsed = self
            .last_tick
            .map_or(tick, |last| now.saturating_duration_since(last));
        self.last_tick = Some(now);
        let mut report = TickReport::default();
        for (sku, sale) in &mut self.sales {
            if sale.bucket.is_none() {
                continue;
            }
            let previous = sale.demand.per_sec();
            let demand = sale.demand.close_tick(elapsed);
            if let Some(slot) = sale.shard_demand.get_mut(self.shard) {
                *slot = demand;
            }
            // Quiet sales stop reporting once their demand has decayed to nothing.
            if demand > 0.01 || previous > 0.01 {
                report.demand.push((sku.clone(), demand));
            }
            if owner_of(sku, self.shards) != self.shard {
                continue;
            }
            let split = fair_split(f64::from(sale.rate_limit_per_sec), &sale.shard_demand);
            let moved = split
                .iter()
                .zip(&sale.split)
                .any(|(new, old)| (new - old).abs() > SPLIT_RESOLUTION);
            if moved {
                sale.split.clone_from(&split);
                report.fractions.push((sku.clone(), split));
            }
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
                price: 0,
                currency: "CNY".into(),
                stock_buckets: 1,
                pow_bits: 0,
                admission: Default::default(),
                queue_opens_at: 0,
                admission_rate: 0,
                register_from: 0,
                overbooking_percent: 0,
            },
            version: 1,
        }
    }

    #[test]
    fn proof_of_work_is_checked_after_the_blocklist_and_before_the_rate() {
        let now = Instant::now();
        let mut edge = Edge::new(0, 1);
        let Notice::SaleUpserted { mut sale, version } = sale(1) else {
            unreachable!()
        };
        sale.pow_bits = 9;
        edge.apply(&Notice::SaleUpserted { sale, version }, now);
        let block = Notice::Blocked {
            user_id: "u".into(),
            blocked: true,
        };
        edge.apply(&block, now);
        let fails = |gate| {
            assert_eq!(gate, Gate::Work(9));
            false
        };
        assert_eq!(
            edge.admit_purchase("s", "u", false, 150, now, |_| unreachable!()),
            Err(Refusal::Sale(SaleError::Blocked))
        );
        for _ in 0..3 {
            assert_eq!(
                edge.admit_purchase("s", "v", false, 150, now, fails),
                Err(Refusal::Sale(SaleError::PowInvalid))
            );
        }
        // The refusals took no token: the one the rate allows is still there.
        assert_eq!(
            edge.admit_purchase("s", "v", false, 150, now, |_| true),
            Ok(())
        );
    }

    #[test]
    fn checks_run_in_contract_order() {
        let now = Instant::now();
        let mut edge = Edge::new(0, 1);
        let refused = |r: Result<(), Refusal>| r.err();
        assert_eq!(
            refused(edge.admit_purchase("s", "u", false, 150, now, |_| true)),
            Some(Refusal::Sale(SaleError::UnknownSale))
        );
        edge.apply(&sale(1), now);
        assert_eq!(
            refused(edge.admit_purchase("s", "u", false, 99, now, |_| true)),
            Some(Refusal::Sale(SaleError::NotStarted))
        );
        assert_eq!(
            refused(edge.admit_purchase("s", "u", false, 200, now, |_| true)),
            Some(Refusal::Sale(SaleError::Ended))
        );
        let block = Notice::Blocked {
            user_id: "u".into(),
            blocked: true,
        };
        edge.apply(&block, now);
        assert_eq!(
            refused(edge.admit_purchase("s", "u", false, 150, now, |_| true)),
            Some(Refusal::Sale(SaleError::Blocked))
        );
        assert_eq!(
            edge.admit_purchase("s", "v", false, 150, now, |_| true),
            Ok(())
        );
        assert!(matches!(
            edge.admit_purchase("s", "v", false, 150, now, |_| true),
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
            refused(edge.admit_purchase("s", "v", false, 150, later, |_| true)),
            Some(Refusal::Sale(SaleError::SoldOut)),
            "a stale flag must not undo a newer one"
        );
        let even_later = later + Duration::from_secs(2);
        assert_eq!(
            edge.admit_purchase("s", "v", true, 150, even_later, |_| true),
            Ok(())
        );
    }

    #[test]
    fn a_regressed_sku_is_refused_known_or_not_until_resumed() {
        let now = Instant::now();
        let mut edge = Edge::new(0, 1);
        let regressed = |sku: &str, regressed| Notice::Regressed {
            sku: sku.into(),
            regressed,
        };
        edge.apply(&sale(0), now);
        edge.apply(&regressed("s", true), now);
        // Redis may have lost the sale itself: an unknown SKU is refused the same way.
        edge.apply(&regressed("gone", true), now);
        for sku in ["s", "gone"] {
            assert_eq!(
                edge.admit_purchase(sku, "u", true, 150, now, |_| true),
                Err(Refusal::Sale(SaleError::StoreRegressed))
            );
        }
        // A re-announced definition (a sync) does not lift it; only the owner's resume does.
        edge.apply(&sale(0), now);
        assert!(edge
            .admit_purchase("s", "u", false, 150, now, |_| true)
            .is_err());
        edge.apply(&regressed("s", false), now);
        assert_eq!(
            edge.admit_purchase("s", "u", false, 150, now, |_| true),
            Ok(())
        );
    }

    /// Two shards' edges driven tick by tick like the runtime does (shard 1 ticks half a tick
    /// after shard 0; notices arrive before the receiver's next step), through demand that
    /// starts from idle and swings between the shards. The shares in force must never add up
    /// to more than the rate, at any step of a split spreading.
    #[test]
    fn shares_in_force_never_exceed_the_rate() {
        const RATE: u32 = 1000;
        let owner = owner_of("s", 2);
        let start = Instant::now();
        let mut edges = [Edge::new(0, 2), Edge::new(1, 2)];
        for edge in &mut edges {
            edge.apply(&sale(RATE), start);
        }
        let total =
            |edges: &[Edge; 2]| -> f64 { edges.iter().filter_map(|e| e.rate_share("s")).sum() };
        let mut worst: f64 = 0.0;
        // Requests per tick on each shard, phase by phase: idle, both hot, one hot, swapped,
        // both near the rate.
        let phases = [
            (0, 0),
            (500, 500),
            (500, 5),
            (5, 500),
            (60, 45),
            (45, 60),
            (90, 0),
        ];
        let mut tick = 0u32;
        for (a, b) in phases {
            for _ in 0..20 {
                for (shard, arrivals) in [(0, a), (1, b)] {
                    let now = start + Duration::from_millis(u64::from(tick) * 50);
                    tick += 1;
                    for _ in 0..arrivals {
                        let _ = edges[shard].admit_purchase("s", "u", false, 150, now, |_| true);
                    }
                    let report = edges[shard].close_tick(Duration::from_millis(100), now);
                    let demand = Notice::Demand {
                        from: shard,
                        per_sku: report.demand,
                    };
                    for edge in &mut edges {
                        edge.apply(&demand, now);
                    }
                    if report.fractions.is_empty() {
                        continue;
                    }
                    assert_eq!(shard, owner, "only the owner splits");
                    edges[shard].apply_fractions(&report.fractions, true, now);
                    worst = worst.max(total(&edges));
                    let split = Notice::Shares {
                        per_sku: report.fractions.clone(),
                    };
                    edges[1 - shard].apply(&split, now);
                    worst = worst.max(total(&edges));
                    edges[shard].apply_fractions(&report.fractions, false, now);
                    worst = worst.max(total(&edges));
                }
            }
        }
        assert!(
            worst <= f64::from(RATE) * (1.0 + 1e-9),
            "shares in force added up to {worst} for a rate of {RATE}"
        );
        let (a, b) = (edges[0].rate_share("s"), edges[1].rate_share("s"));
        assert!(
            a.zip(b).is_some_and(|(a, b)| a > 850.0 && b < 150.0),
            "the busy shard ends with most of the rate: {a:?} {b:?}"
        );
    }
}
