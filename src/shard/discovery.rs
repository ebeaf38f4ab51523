//! Finding a sale this node has not heard of yet. With a shared store, a sale created through
//! another node reaches this node's edges only at the owner's next sync tick; until then the edge
//! would answer `404 unknown_sale` for a sale Redis already has. So a shard whose edge does not
//! know a SKU asks the SKU's owner, which reads the store and, when the sale is there, publishes
//! it to every shard's edge before answering; the request is then served normally.
//!
//! Unknown SKUs are anyone's to invent, so each lookup is bounded three ways on the owner: a
//! miss is remembered for a short time ([`NegativeCache`]); concurrent lookups of one SKU share
//! one store read; and each shard starts at most so many store reads a second and runs at most
//! [`MAX_CONCURRENT`] at once. Beyond that the answer is `unknown_sale` without asking, as it
//! was before lookups existed. The embedded store is the whole truth, so it never looks up.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use super::message::{Notice, ShardMsg};
use super::negative::NegativeCache;
use super::Shard;
use crate::sale::admission::TokenBucket;
use crate::sale::command::{Command, Outcome, StockLevel};
use crate::sale::{Sale, SaleError, SaleView};
use crate::store::Store;

/// Distinct SKUs whose misses one shard remembers.
const NEGATIVE_CAPACITY: usize = 4096;
/// Store reads for unknown SKUs one shard runs at once; beyond it, as beyond the budget, the
/// answer is `404` without asking.
pub const MAX_CONCURRENT: usize = 32;
/// Requests that may wait on one SKU's lookup (a crowd arriving on a sale just created through
/// another node); each holds a connection, so this is only a backstop under the connection cap.
/// Beyond it the answer is `503`: the sale may well exist, and the client should retry.
const MAX_WAITERS: usize = 65_536;

/// How lookups of unknown SKUs are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Store reads for unknown SKUs each shard starts per second (bursts of a tenth of that, at
    /// least one); 0 never asks, and an unknown SKU is `404` until the next sync tick.
    pub lookups_per_sec: u32,
    /// How long a SKU the store did not know is answered `404` without asking again.
    pub negative_ttl: Duration,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            lookups_per_sec: 200,
            negative_ttl: Duration::from_millis(250),
        }
    }
}

/// What an owner found out about a SKU.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The store has the sale; every shard's edge knows it now.
    Found(SaleView),
    /// The store does not have it, it was missing moments ago, or the lookup budget is spent.
    Unknown,
    /// The store could not be read.
    Unavailable,
}

/// One shard's lookup state, as the owner of its SKUs.
#[derive(Debug)]
pub struct Discovery {
    settings: DiscoverySettings,
    negative: RefCell<NegativeCache>,
    /// Starts per second; `None` when lookups are off.
    budget: RefCell<Option<TokenBucket>>,
    /// The SKUs being read now, with the requests waiting for each.
    in_flight: RefCell<HashMap<Box<str>, Vec<oneshot::Sender<Lookup>>>>,
}

impl Discovery {
    /// Lookup state bounded by `settings`.
    pub fn new(settings: DiscoverySettings) -> Self {
        let rate = f64::from(settings.lookups_per_sec);
        Self {
            settings,
            negative: RefCell::new(NegativeCache::new(settings.negative_ttl, NEGATIVE_CAPACITY)),
            budget: RefCell::new((rate > 0.0).then(|| TokenBucket::new(rate, Instant::now()))),
            in_flight: RefCell::new(HashMap::new()),
        }
    }

    /// Whether lookups are on at all.
    fn enabled(&self) -> bool {
        self.settings.lookups_per_sec > 0
    }
}

impl<S: Store + 'static> Shard<S> {
    /// Whether this shard looks up SKUs its edge does not know (a shared store, lookups on).
    pub fn looks_up(&self) -> bool {
        self.store.shared() && self.discovery.enabled()
    }

    /// Finds `sku`, which this shard's edge does not know, in the shared store: `Some` when the
    /// sale exists (every shard's edge, this one's included, knows it by the time this returns),
    /// `None` when it does not or may not be looked up now. Always `None` on the embedded store.
    pub async fn discover(self: &Rc<Self>, sku: &str) -> Result<Option<SaleView>, SaleError> {
        if !self.looks_up() {
            return Ok(None);
        }
        let owner = self.owner_of(sku);
        let lookup = if owner == self.id {
            self.look_up(sku.into()).await
        } else {
            let (reply, answer) = oneshot::channel();
            let message = ShardMsg::Discover {
                sku: sku.into(),
                reply,
            };
            match self.send(owner, message).await {
                Ok(()) => answer.await.unwrap_or(Lookup::Unavailable),
                Err(()) => Lookup::Unavailable,
            }
        };
        match lookup {
            Lookup::Found(view) => Ok(Some(view)),
            Lookup::Unknown => Ok(None),
            Lookup::Unavailable => Err(SaleError::Unavailable),
        }
    }

    /// As `sku`'s owner: answers from a recent miss, joins a lookup of the same SKU already
    /// running, or starts one if the budget allows.
    pub(super) async fn look_up(self: &Rc<Self>, sku: Box<str>) -> Lookup {
        let now = Instant::now();
        let discovery = &self.discovery;
        if discovery.negative.borrow().is_missing(&sku, now) {
            return Lookup::Unknown;
        }
        let (waiter, answer) = oneshot::channel();
        let start = {
            let mut in_flight = discovery.in_flight.borrow_mut();
            match in_flight.get_mut(&sku) {
                Some(waiters) if waiters.len() >= MAX_WAITERS => return Lookup::Unavailable,
                // Joins the read already running for this SKU.
                Some(waiters) => {
                    waiters.push(waiter);
                    false
                }
                None => {
                    let admitted = in_flight.len() < MAX_CONCURRENT
                        && discovery
                            .budget
                            .borrow_mut()
                            .as_mut()
                            .is_some_and(|budget| budget.try_take(now).is_ok());
                    if !admitted {
                        self.metrics.record_lookup("refused");
                        return Lookup::Unknown;
                    }
                    in_flight.insert(sku.clone(), vec![waiter]);
                    true
                }
            }
        };
        if !start {
            return answer.await.unwrap_or(Lookup::Unavailable);
        }
        // Run apart from the request that started it: if that one goes away, the others
        // waiting on the same SKU still get their answer, and the entry is always removed.
        let shard = Rc::clone(self);
        glommio::spawn_local(async move {
            let lookup = shard.read_and_publish(&sku).await;
            let waiters = shard.discovery.in_flight.borrow_mut().remove(&sku);
            for waiter in waiters.into_iter().flatten() {
                let _ = waiter.send(lookup.clone());
            }
        })
        .detach();
        answer.await.unwrap_or(Lookup::Unavailable)
    }

    /// Reads `sku` from the store; a sale found is published to every shard's edge, with its
    /// sold-out flag, before the answer goes back.
    async fn read_and_publish(self: &Rc<Self>, sku: &str) -> Lookup {
        let reply = self
            .store
            .execute(vec![Command::GetSale(sku.into())])
            .await
            .pop();
        match reply {
            Some(Ok(Outcome::Sale(view))) => {
                self.metrics.record_lookup("found");
                self.discovery.negative.borrow_mut().forget(sku);
                self.publish_found(&view).await;
                Lookup::Found(view)
            }
            Some(Err(SaleError::UnknownSale)) => {
                self.metrics.record_lookup("unknown");
                self.discovery
                    .negative
                    .borrow_mut()
                    .remember(sku, Instant::now());
                Lookup::Unknown
            }
            _ => {
                self.metrics.record_lookup("failed");
                Lookup::Unavailable
            }
        }
    }

    /// Tells every shard about a sale read from the store, waiting until all have applied it.
    /// A definition re-announced resets an edge's sold-out flag, so the flag in force is sent
    /// again right after, with a newer version than anything announced before it.
    async fn publish_found(self: &Rc<Self>, view: &SaleView) {
        let sale = sale_of(view);
        let level = StockLevel {
            remaining: view.remaining,
            seq: view.stock_seq,
        };
        {
            let mut announced = self.announced.borrow_mut();
            let entry = announced.entry(sale.sku.clone()).or_default();
            if entry.sale.as_ref() != Some(&sale) {
                // A resume's epoch and a regression are the sync's to change, not a lookup's.
                *entry = super::owner::Announced {
                    sold_out: level.remaining == 0,
                    seq: level.seq,
                    remaining: Some(level.remaining),
                    sale: Some(sale.clone()),
                    epoch: entry.epoch,
                    regressed: entry.regressed,
                };
            } else if level.seq >= entry.seq {
                entry.seq = level.seq;
                entry.remaining = Some(level.remaining);
                entry.sold_out = level.remaining == 0;
            }
        }
        let sku = sale.sku.clone();
        let version = self.next_flag_version();
        self.broadcast(Notice::SaleUpserted { sale, version }, true)
            .await;
        // Read the flag only now: a purchase may have changed it while the others applied the
        // definition, and this flag must say what is true as of its version.
        let sold_out = self
            .announced
            .borrow()
            .get(&sku)
            .is_some_and(|entry| entry.sold_out);
        let flag = Notice::StockFlag {
            sku,
            sold_out,
            version: self.next_flag_version(),
        };
        self.broadcast(flag, true).await;
    }
}

/// The definition inside a view.
fn sale_of(view: &SaleView) -> Sale {
    Sale {
        sku: view.sku.clone(),
        name: view.name.clone(),
        stock: view.stock,
        starts_at: view.starts_at,
        ends_at: view.ends_at,
        per_user_limit: view.per_user_limit,
        payment_timeout_ms: view.payment_timeout_ms,
        rate_limit_per_sec: view.rate_limit_per_sec,
        price: view.price,
        currency: view.currency.clone(),
        stock_buckets: view.stock_buckets,
        pow_bits: view.pow_bits,
        admission: view.admission,
        queue_opens_at: view.queue_opens_at,
        admission_rate: view.admission_rate,
        register_from: view.register_from,
        overbooking_percent: view.overbooking_percent,
    }
}
