//! The owner role of a shard: running commands for the SKUs it owns against its store, then
//! doing what follows from the answer: scheduling expiry, telling every shard when a SKU sells
//! out or comes back, publishing new sales and blocklist changes. Also the periodic tick that
//! sweeps due orders and exchanges admission demand.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::message::Notice;
use super::Shard;
use crate::clock::now_ms;
use crate::sale::command::{Command, Outcome, Reply};
use crate::sale::{OrderStatus, SaleError};
use crate::store::Store;

/// How often a shard sweeps expired orders and re-splits admission rates.
pub const TICK: Duration = Duration::from_millis(100);

impl<S: Store + 'static> Shard<S> {
    /// Runs a command this shard owns and applies its consequences.
    pub(super) async fn execute_owned(self: &Rc<Self>, command: Command) -> Reply {
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
        let may_return_stock = matches!(command, Command::Pay(..) | Command::Cancel(..));
        let is_purchase = matches!(command, Command::Purchase(_));
        let sku: Option<Box<str>> = command.sku().map(Into::into);
        let reply = self
            .store
            .execute(vec![command])
            .await
            .pop()
            .unwrap_or(Err(SaleError::Unavailable));
        match (&reply, announce) {
            (Ok(_), Some(Notice::SaleUpserted { sale, .. })) => {
                self.announced_sold_out
                    .borrow_mut()
                    .insert(sale.sku.clone(), false);
                let version = self.next_flag_version();
                // Wait for every shard, so that a purchase anywhere right after the 201 finds it.
                self.broadcast(Notice::SaleUpserted { sale, version }, true)
                    .await;
            }
            (Ok(_), Some(blocked)) => self.broadcast(blocked, true).await,
            _ => {}
        }
        match &reply {
            Ok(Outcome::Order {
                order,
                remaining,
                replayed: false,
            }) => {
                if is_purchase && order.status == OrderStatus::Pending {
                    self.expiry
                        .borrow_mut()
                        .schedule(order.order_id.clone(), order.expires_at);
                }
                if let Some(remaining) = remaining {
                    self.announce_stock(&order.sku, *remaining, may_return_stock)
                        .await;
                }
            }
            Err(SaleError::SoldOut) => {
                if let Some(sku) = &sku {
                    self.announce_stock(sku, 0, false).await;
                }
            }
            Err(SaleError::OrderExpired) if may_return_stock => {
                // The late payment or cancel expired the order itself, which returned stock.
                if let Some(sku) = sku {
                    self.refresh_stock_flag(sku).await;
                }
            }
            _ => {}
        }
        reply
    }

    /// Tells every shard when `sku` has sold out or has stock again, if that changed. Returning
    /// stock to a shopper's own request (`wait`) waits for every shard, so the shopper's next
    /// purchase anywhere sees it.
    async fn announce_stock(&self, sku: &str, remaining: u64, wait: bool) {
        let sold_out = remaining == 0;
        let changed = {
            let mut announced = self.announced_sold_out.borrow_mut();
            match announced.get_mut(sku) {
                Some(flag) => std::mem::replace(flag, sold_out) != sold_out,
                None => {
                    announced.insert(sku.into(), sold_out);
                    sold_out
                }
            }
        };
        if changed {
            let notice = Notice::StockFlag {
                sku: sku.into(),
                sold_out,
                version: self.next_flag_version(),
            };
            self.broadcast(notice, wait && !sold_out).await;
        }
    }

    async fn refresh_stock_flag(self: &Rc<Self>, sku: Box<str>) {
        let flagged = self.announced_sold_out.borrow().get(&sku).copied();
        if flagged != Some(true) {
            return;
        }
        let reply = self
            .store
            .execute(vec![Command::GetSale(sku.clone())])
            .await;
        if let Some(Ok(Outcome::Sale(view))) = reply.first() {
            self.announce_stock(&sku, view.remaining, true).await;
        }
    }

    fn next_flag_version(&self) -> u64 {
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
            if let Ok(Outcome::Order {
                order,
                remaining: Some(remaining),
                ..
            }) = reply
            {
                self.announce_stock(&order.sku, remaining, false).await;
            }
        }
    }

    /// Shares this shard's admission demand with the others and re-splits rates.
    async fn exchange_demand(self: &Rc<Self>) {
        let report = self.edge.borrow_mut().close_tick(TICK, Instant::now());
        if report.is_empty() || self.count == 1 {
            return;
        }
        let notice = Notice::Demand {
            from: self.id,
            per_sku: report,
        };
        self.broadcast(notice, false).await;
    }

    /// The shard's periodic duties, until the node drains.
    pub async fn run_ticks(self: Rc<Self>) {
        while !self
            .node
            .draining
            .load(std::sync::atomic::Ordering::Acquire)
        {
            glommio::timer::sleep(TICK).await;
            self.sweep_expired().await;
            self.exchange_demand().await;
        }
    }
}
