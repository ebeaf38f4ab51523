//! `GET /v1/sales`, on the shard side: a page of the node's sales in SKU order.
//!
//! The SKUs of a page come from the shard's edge index, and each sale on the page from its
//! owner. A page therefore costs the same however many sales the node has. With a shared store
//! it costs no Redis call for the sales the owner keeps in sync: those are listed as last synced
//! (at most a tick plus one round trip old, as every node's edge sees them), while
//! `GET /v1/sales/{sku}` still reads the store.

use std::rc::Rc;

use futures::channel::oneshot;

use super::message::ShardMsg;
use super::Shard;
use crate::clock::now_ms;
use crate::sale::command::{Command, Outcome};
use crate::sale::{SaleError, SaleView};
use crate::store::Store;

/// One page of `GET /v1/sales`.
#[derive(Debug)]
pub struct SalesPage {
    /// The sales on the page, in SKU order.
    pub sales: Vec<SaleView>,
    /// The last SKU on the page when more follow: pass it as `after` for the next page.
    pub next: Option<Box<str>>,
}

impl<S: Store + 'static> Shard<S> {
    /// One page of the node's sales in SKU order: up to `limit` of those after `after` (from the
    /// first without it), and the SKU to continue after when more follow. The SKUs come from
    /// this shard's edge index; only the sales on the page are read, each from its owner, so a
    /// page costs the same however many sales the node has.
    pub async fn list_sales(
        self: &Rc<Self>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SalesPage, SaleError> {
        let mut skus = self
            .edge
            .borrow()
            .skus_after(after, limit.saturating_add(1));
        let next = if skus.len() > limit {
            skus.truncate(limit);
            skus.last().cloned()
        } else {
            None
        };
        let reads = self
            .skus_by_owner(skus)
            .map(|(owner, skus)| self.read_sales_on(owner, skus));
        let mut sales = Vec::new();
        for part in futures::future::join_all(reads).await {
            sales.extend(part?);
        }
        sales.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(SalesPage { sales, next })
    }

    /// The current views of `skus`, all owned by shard `owner`.
    async fn read_sales_on(
        self: &Rc<Self>,
        owner: usize,
        skus: Vec<Box<str>>,
    ) -> Result<Vec<SaleView>, SaleError> {
        if owner == self.id {
            return self.read_owned_sales(skus).await;
        }
        let (reply, answer) = oneshot::channel();
        if self
            .send(owner, ShardMsg::ReadSales { skus, reply })
            .await
            .is_err()
        {
            return Err(SaleError::Unavailable);
        }
        answer.await.unwrap_or(Err(SaleError::Unavailable))
    }

    /// The current views of `skus`, which this shard owns. A sale the store does not know (it
    /// was in the index but the shared store lost it) is left out. With a shared store, a sale
    /// this shard keeps in sync is listed as last synced ([`Shard::synced_view`]); only the
    /// others are read from the store.
    pub(super) async fn read_owned_sales(
        &self,
        skus: Vec<Box<str>>,
    ) -> Result<Vec<SaleView>, SaleError> {
        let mut views = Vec::with_capacity(skus.len());
        let replies = if self.store.shared() {
            let now = now_ms();
            // The shared store runs a batch one round trip after another; reads need no order.
            let singles = skus
                .into_iter()
                .filter_map(|sku| match self.synced_view(&sku, now) {
                    Some(view) => {
                        views.push(view);
                        None
                    }
                    None => Some(self.store.execute(vec![Command::GetSale(sku)])),
                })
                .collect::<Vec<_>>();
            futures::future::join_all(singles)
                .await
                .into_iter()
                .flatten()
                .collect()
        } else {
            let reads = skus.into_iter().map(Command::GetSale).collect();
            self.store.execute(reads).await
        };
        for reply in replies {
            match reply {
                Ok(Outcome::Sale(view)) => views.push(view),
                Err(SaleError::UnknownSale) => {}
                Err(error) => return Err(error),
                Ok(_) => return Err(SaleError::Unavailable),
            }
        }
        Ok(views)
    }

    /// `sku`'s view as this owner last synced it from the shared store: its definition and
    /// stock level as announced to every shard. `None` (read the store) when there is no
    /// synced level yet (a sale just made here, before its first sync), when the store
    /// regressed (the store's answer says so), or when the sale is over for good (its keys may
    /// have expired, and then it is no sale at all).
    fn synced_view(&self, sku: &str, now: u64) -> Option<SaleView> {
        let announced = self.announced.borrow();
        let entry = announced.get(sku)?;
        let sale = entry.sale.as_ref()?;
        let remaining = entry.remaining?;
        if entry.regressed || sale.is_over_for_good(now) {
            return None;
        }
        Some(SaleView::new(sale, remaining, entry.seq, now))
    }
}
