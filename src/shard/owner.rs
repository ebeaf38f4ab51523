//! The owner role of a shard: running commands for the SKUs it owns against its store, then
//! doing what follows from the answer: scheduling and forgetting expiry, telling every shard when
//! a SKU sells out or comes back, publishing new sales and blocklist changes. Also the periodic
//! tick that sweeps due orders and exchanges admission demand.

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;

use super::message::{Notice, ShardMsg};
use super::Shard;
use crate::clock::now_ms;
use crate::sale::command::{Command, Outcome, Reply, StockLevel};
use crate::sale::{OrderStatus, SaleError};
use crate::store::Store;

/// How often a shard sweeps expired orders and re-splits admission rates.
pub const TICK: Duration = Duration::from_millis(100);

/// How long an owner waits for the other shards to apply a new split before raising its own
/// shares anyway.
const SPLIT_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the owner last told every shard about one SKU's stock.
#[derive(Debug, Clone, Default)]
pub struct Announced {
    /// Whether the SKU was announced sold out.
    pub sold_out: bool,
    /// The newest stock level seen; older replies are ignored.
    pub seq: u64,
    /// Units left at that level; `None` until a level was seen.
    pub remaining: Option<u64>,
    /// The definition last announced, for a shared store whose sales other nodes create.
    pub sale: Option<crate::sale::Sale>,
    /// The sale's epoch in a shared store, bumped by every resume: a newer one starts `seq`
    /// afresh.
    pub epoch: u64,
    /// Whether the shared store regressed (lost writes) and every shard refuses the SKU.
    pub regressed: bool,
}

impl<S: Store + 'static> Shard<S> {
    /// Runs a command this shard owns and applies its consequences.
    pub(super) async fn execute_owned(self: &Rc<Self>, command: Command) -> Reply {
        let _in_flight = self.metrics.owner_command();
        if let Command::UpsertSale(sale) = &command {
            self.may_replace(&sale.sku)?;
        }
        let resumed = match &command {
            Command::Resume(sku, _) => Some(sku.clone()),
            _ => None,
        };
        let announce = match &command {
            Command::UpsertSale(sale) => Some(Notice::SaleUpserted {
                sale: sale.clone(),
                version: 0,
            }),
            Command::SetBlocked(user_id, blocked) => Some(Notice::Blocked {
                user_id: user_id.clone(),
                blocked: *blocked,
            }),
            _ => None,
        };
        let is_purchase = matches!(command, Command::Purchase(_));
        let expired_by_request = match &command {
            Command::Pay(id, _) | Command::Cancel(id, _) => Some(id.clone()),
            _ => None,
        };
        let reply = self.store.execute_one(command).await;
        match (&reply, announce) {
            (Ok(_), Some(Notice::SaleUpserted { sale, .. })) => {
                let epoch = self
                    .announced
                    .borrow()
                    .get(&sale.sku)
                    .map_or(0, |entry| entry.epoch);
                self.announced.borrow_mut().insert(
                    sale.sku.clone(),
                    Announced {
                        sale: Some(sale.clone()),
                        epoch,
                        ..Announced::default()
                    },
                );
                let version = self.next_flag_version();
                // Wait for every shard, so that a purchase anywhere right after the 201 finds it.
                self.broadcast(Notice::SaleUpserted { sale, version }, true)
                    .await;
            }
            (Ok(_), Some(blocked)) => self.broadcast(blocked, true).await,
            _ => {}
        }
        if let (Ok(Outcome::Resumed(_)), Some(sku)) = (&reply, resumed) {
            // This node sells again at once; the others follow at their next sync.
            self.mirror_regression(&sku, None).await;
        }
        match &reply {
            Ok(Outcome::Order {
                order,
                stock,
                replayed: false,
            }) => {
                if is_purchase && order.status == OrderStatus::Pending && !self.store.shared() {
                    self.expiry
                        .borrow_mut()
                        .schedule(order.order_id.clone(), order.expires_at);
                } else if order.status != OrderStatus::Pending {
                    self.expiry.borrow_mut().forget(order.order_id.unique);
                }
                if let Some(level) = stock {
                    // A shopper's request waits until every shard knows, so the shopper's next
                    // request anywhere is answered consistently.
                    self.announce_stock(&order.sku, *level, true).await;
                }
            }
            Err(SaleError::OrderExpired) => {
                // A late payment or cancel may have expired the order itself, returning stock.
                if let Some(order_id) = expired_by_request {
                    self.expiry.borrow_mut().forget(order_id.unique);
                    self.refresh_stock_flag(Box::from(&*order_id.sku)).await;
                }
            }
            _ => {}
        }
        reply
    }

    /// Tells every shard when `sku` has sold out or has stock again, if that changed and `level`
    /// is not older than what was already seen. With `wait`, returns once every shard knows.
    async fn announce_stock(&self, sku: &str, level: StockLevel, wait: bool) {
        let sold_out = level.remaining == 0;
        let changed = {
            let mut announced = self.announced.borrow_mut();
            let entry = match announced.get_mut(sku) {
                Some(entry) => entry,
                None => announced.entry(sku.into()).or_default(),
            };
            if level.seq < entry.seq {
                return;
            }
            entry.seq = level.seq;
            entry.remaining = Some(level.remaining);
            std::mem::replace(&mut entry.sold_out, sold_out) != sold_out
        };
        if changed {
            let notice = Notice::StockFlag {
                sku: sku.into(),
                sold_out,
                version: self.next_flag_version(),
            };
            self.broadcast(notice, wait).await;
        }
    }

    async fn refresh_stock_flag(self: &Rc<Self>, sku: Box<str>) {
        let reply = self
            .store
            .execute(vec![Command::GetSale(sku.clone())])
            .await;
        if let Some(Ok(Outcome::Sale(view))) = reply.first() {
            let level = StockLevel {
                remaining: view.remaining,
                seq: view.stock_seq,
            };
            self.announce_stock(&sku, level, true).await;
        }
    }

    /// Brings every shard's edge copy of the blocklist in line with the shared store's, so a
    /// block or unblock made on another node is seen here within a tick. One shard per node
    /// does it.
    async fn sync_blocklist(self: &Rc<Self>) {
        let before = self.edge.borrow().blocklist_changes();
        let Some(shared) = self.store.shared_blocklist().await else {
            return;
        };
        let changes: Vec<(Box<str>, bool)> = {
            let edge = self.edge.borrow();
            if edge.blocklist_changes() != before {
                // A block or unblock reached this copy while the read was in flight, so the
                // read may predate it: reconciling now could undo it. The next tick reads again.
                return;
            }
            let added = shared
                .iter()
                .filter(|user| !edge.is_blocked(user))
                .map(|user| (user.clone(), true));
            let removed = edge
                .blocked_users()
                .filter(|user| !shared.iter().any(|shared| **shared == **user))
                .map(|user| (Box::<str>::from(user), false));
            added.chain(removed).collect()
        };
        for (user_id, blocked) in changes {
            self.broadcast(Notice::Blocked { user_id, blocked }, false)
                .await;
        }
    }

    pub(super) fn next_flag_version(&self) -> u64 {
        let version = self.flag_version.get() + 1;
        self.flag_version.set(version);
        version
    }

    /// Expires every due order of this shard in one store batch and announces returned stock.
    async fn sweep_expired(self: &Rc<Self>) {
        let due = self.expiry.borrow_mut().take_due(now_ms());
        if due.is_empty() {
            return;
        }
        let batch: Vec<Command> = due.into_iter().map(Command::Expire).collect();
        for reply in self.store.execute(batch).await {
            // The store read the clock after `take_due` did; an order it found not yet due goes
            // back in the queue instead of being stranded.
            self.expiry.borrow_mut().reschedule_if_pending(&reply);
            if let Ok(Outcome::Order {
                order,
                stock: Some(level),
                ..
            }) = reply
            {
                self.announce_stock(&order.sku, level, false).await;
            }
        }
    }

    /// For a shared store: lets the store reclaim due orders of the SKUs this shard owns, then
    /// tells every shard about sales other nodes created or replaced, about stock other nodes
    /// sold or returned, and about SKUs whose store regressed or was resumed. Runs every tick, so
    /// a change anywhere is seen here within about [`TICK`] plus one Redis round trip.
    async fn sync_shared(self: &Rc<Self>) {
        if self.id == 0 {
            self.sync_blocklist().await;
        }
        for synced in self.store.sync_owned().await {
            // A lower level than one seen before is never trusted: the store detects that as a
            // regression, and a resume moves to a new epoch, from which the levels start afresh.
            if let Some((sale, level, epoch)) = synced.sale {
                let changed = {
                    let mut announced = self.announced.borrow_mut();
                    let entry = announced.entry(sale.sku.clone()).or_default();
                    if epoch > entry.epoch {
                        entry.epoch = epoch;
                        entry.seq = 0;
                    }
                    if entry.sale.as_ref() != Some(&sale) {
                        // A new definition (a sale made again after its keys expired, or
                        // replaced before its start) brings its own stock level, which may be
                        // below the old one's.
                        entry.sale = Some(sale.clone());
                        entry.sold_out = false;
                        entry.seq = 0;
                        entry.remaining = None;
                        true
                    } else {
                        false
                    }
                };
                let sku = sale.sku.clone();
                if changed {
                    let version = self.next_flag_version();
                    self.broadcast(Notice::SaleUpserted { sale, version }, false)
                        .await;
                }
                self.announce_stock(&sku, level, false).await;
            } else if let Some(entry) = self.announced.borrow_mut().get_mut(&synced.sku) {
                // The store has no such sale (lost before it started, or its keys expired): the
                // listing asks the store rather than show what was synced before.
                entry.remaining = None;
            }
            self.mirror_regression(&synced.sku, synced.regressed).await;
        }
    }

    /// Tells every shard when `sku`'s store regressed (`report` is the store's marker) or was
    /// resumed, if that changed. A regression is logged as an error with the store's numbers.
    async fn mirror_regression(&self, sku: &str, report: Option<Box<str>>) {
        let regressed = report.is_some();
        let changed = {
            let mut announced = self.announced.borrow_mut();
            let entry = announced.entry(sku.into()).or_default();
            if entry.regressed && !regressed {
                // Resumed: the level before the regression is no longer the sale's; the next
                // sync brings the resumed one.
                entry.remaining = None;
            }
            std::mem::replace(&mut entry.regressed, regressed) != regressed
        };
        if !changed {
            return;
        }
        match &report {
            Some(report) => tracing::error!(
                sku,
                report = %report,
                "the store lost acknowledged writes of this sale (its state went backwards); \
                 it is stopped until an operator resumes it: POST /v1/sales/{sku}/resume"
            ),
            None => tracing::warn!(sku, "sale resumed: selling again"),
        }
        let notice = Notice::Regressed {
            sku: sku.into(),
            regressed,
        };
        self.broadcast(notice, true).await;
    }

    /// Refuses to replace a sale this node knows has started, or whose store regressed, before
    /// the store is asked: the store's own check is lost with its data (the regression this
    /// guards against), and a re-created sale would sell its whole stock again. A sale over for
    /// good is the store's to judge: its keys expire after the retention, and then the SKU is
    /// free for a new sale, which this node must not refuse from what it remembers.
    fn may_replace(&self, sku: &str) -> Result<(), SaleError> {
        if !self.store.shared() {
            return Ok(());
        }
        let announced = self.announced.borrow();
        let Some(entry) = announced.get(sku) else {
            return Ok(());
        };
        let now = now_ms();
        if entry.regressed {
            return Err(SaleError::StoreRegressed);
        }
        match &entry.sale {
            Some(sale) if sale.has_started(now) && !sale.is_over_for_good(now) => {
                Err(SaleError::SaleExists)
            }
            _ => Ok(()),
        }
    }

    /// Tells the sales' owners this shard's admission demand, and every shard the new split of
    /// the rates of the sales this shard owns.
    async fn exchange_demand(self: &Rc<Self>) {
        let report = self.edge.borrow_mut().close_tick(TICK, Instant::now());
        if self.count == 1 {
            return;
        }
        if !report.demand.is_empty() {
            let notice = Notice::Demand {
                from: self.id,
                per_sku: report.demand,
            };
            self.broadcast(notice, false).await;
        }
        if !report.fractions.is_empty() {
            self.publish_split(report.fractions).await;
        }
    }

    /// Puts a new split of some sales' rates in force. This shard lowers its own shares first,
    /// then waits until every other shard has applied the split before raising its own: at no
    /// moment do the shares in force add up to more than a sale's rate. (With more than two
    /// shards, one peer may raise its share a moment before another lowers its own.)
    async fn publish_split(self: &Rc<Self>, per_sku: Vec<(Box<str>, Vec<f64>)>) {
        self.edge
            .borrow_mut()
            .apply_fractions(&per_sku, true, Instant::now());
        let mut acks = Vec::new();
        for peer in (0..self.count).filter(|peer| *peer != self.id) {
            let (ack, acked) = oneshot::channel();
            acks.push(acked);
            let notice = Notice::Shares {
                per_sku: per_sku.clone(),
            };
            let message = ShardMsg::Notice {
                notice,
                ack: Some(ack),
            };
            // A peer that is gone is shutting down and admits nothing more.
            let _ = self.send(peer, message).await;
        }
        // A wedged peer admits nothing; it must not stall this shard's ticks (and expiry) too.
        let all_acked = async {
            futures::future::join_all(acks).await;
            Ok(())
        };
        let _ = glommio::timer::timeout(SPLIT_ACK_TIMEOUT, all_acked).await;
        self.edge
            .borrow_mut()
            .apply_fractions(&per_sku, false, Instant::now());
    }

    /// Republishes what this shard owns at start (after recovery): every sale to every edge, the
    /// sold-out flags, the blocklist, and the expiry deadlines of pending orders. Orders whose
    /// deadline passed while the node was down expire on the first sweep.
    pub async fn publish_boot_state(self: &Rc<Self>) {
        let boot = self.store.boot_state().await;
        for (sale, level) in boot.sales {
            let sold_out = level.remaining == 0;
            self.announced.borrow_mut().insert(
                sale.sku.clone(),
                Announced {
                    sold_out,
                    seq: level.seq,
                    remaining: Some(level.remaining),
                    sale: Some(sale.clone()),
                    ..Announced::default()
                },
            );
            let sku = sale.sku.clone();
            let version = self.next_flag_version();
            self.broadcast(Notice::SaleUpserted { sale, version }, true)
                .await;
            if sold_out {
                let version = self.next_flag_version();
                let flag = Notice::StockFlag {
                    sku,
                    sold_out,
                    version,
                };
                self.broadcast(flag, true).await;
            }
        }
        for user_id in boot.blocked {
            let notice = Notice::Blocked {
                user_id,
                blocked: true,
            };
            self.broadcast(notice, true).await;
        }
        let mut expiry = self.expiry.borrow_mut();
        for (order_id, deadline) in boot.pending {
            expiry.schedule(order_id, deadline);
        }
    }

    /// The shard's periodic duties, until the node drains.
    pub async fn run_ticks(self: Rc<Self>) {
        // Counted as down (by the runtime) until its store first says otherwise.
        let mut store_up = false;
        while !self
            .node
            .draining
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.node.beat(self.id);
            let healthy = self.store.healthy();
            if healthy != store_up {
                store_up = healthy;
                let counter = &self.node.stores_down;
                if healthy {
                    counter.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                } else {
                    counter.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                }
            }
            glommio::timer::sleep(TICK).await;
            if self.store.shared() {
                self.sync_shared().await;
            } else {
                self.sweep_expired().await;
            }
            self.exchange_demand().await;
        }
    }
}
