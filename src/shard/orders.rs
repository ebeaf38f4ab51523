//! `GET /v1/orders` across the node: one user's orders, read from the owners of the sales that
//! may hold them and merged newest first.
//!
//! The work is bounded whatever the node holds: at most [`MAX_SALES_SCANNED`] sales are read
//! (those that started most recently, from this shard's edge index), each owner is asked once
//! for all of its SKUs, and each SKU yields at most the user's last
//! [`RECENT_PER_SALE`](crate::sale::user_orders::RECENT_PER_SALE) orders. Every owner trims its
//! part to the requested limit before answering, so no more than `limit` orders per owner
//! cross the mesh.

use std::rc::Rc;

use futures::channel::oneshot;
use futures::StreamExt;

use super::message::{OrdersRead, ShardMsg};
use super::Shard;
use crate::clock::now_ms;
use crate::sale::command::{Command, Outcome};
use crate::sale::user_orders::sort_newest_first;
use crate::sale::{Order, SaleError};
use crate::store::Store;

/// Most sales one listing reads: the ones that started most recently. Orders of older sales
/// are not listed (they are still found by id).
pub const MAX_SALES_SCANNED: usize = 1000;

/// Calls one owner has in flight to a shared store for one listing.
const SHARED_READS_AT_ONCE: usize = 32;

/// Sales whose start is this far in this node's future are read too: another node (or Redis
/// `TIME`) may already have opened them.
const CLOCK_MARGIN_MS: u64 = 60_000;

/// One user's orders across the node.
#[derive(Debug)]
pub struct OrdersPage {
    /// Newest first, at most the requested limit.
    pub orders: Vec<Order>,
    /// Whether some sales could not be read (their store did not answer): the list may miss
    /// orders of those sales.
    pub incomplete: bool,
}

impl<S: Store + 'static> Shard<S> {
    /// Up to `limit` of `user_id`'s orders, newest first, from the sales that started most
    /// recently. Fails with `unavailable` only when sales were to be read and none could be.
    pub async fn list_orders(
        self: &Rc<Self>,
        user_id: &str,
        limit: usize,
    ) -> Result<OrdersPage, SaleError> {
        let skus = self
            .edge
            .borrow()
            .started_skus(now_ms().saturating_add(CLOCK_MARGIN_MS), MAX_SALES_SCANNED);
        let reads = self
            .skus_by_owner(skus)
            .map(|(owner, skus)| self.read_orders_on(owner, user_id.into(), skus, limit));
        let mut merged = OrdersRead::default();
        for part in futures::future::join_all(reads).await {
            merged.orders.extend(part.orders);
            merged.read += part.read;
            merged.failed += part.failed;
        }
        if merged.failed > 0 && merged.read == 0 {
            return Err(SaleError::Unavailable);
        }
        sort_newest_first(&mut merged.orders);
        merged.orders.truncate(limit);
        Ok(OrdersPage {
            orders: merged.orders,
            incomplete: merged.failed > 0,
        })
    }

    /// `user_id`'s orders of `skus`, all owned by shard `owner`.
    async fn read_orders_on(
        self: &Rc<Self>,
        owner: usize,
        user_id: Box<str>,
        skus: Vec<Box<str>>,
        limit: usize,
    ) -> OrdersRead {
        if owner == self.id {
            return self.read_owned_orders(user_id, skus, limit).await;
        }
        let failed = skus.len();
        let (reply, answer) = oneshot::channel();
        let message = ShardMsg::ReadOrders {
            user_id,
            skus,
            limit,
            reply,
        };
        if self.send(owner, message).await.is_err() {
            return OrdersRead::failed(failed);
        }
        answer.await.unwrap_or_else(|_| OrdersRead::failed(failed))
    }

    /// `user_id`'s orders of `skus`, which this shard owns, newest first and at most `limit`.
    pub(super) async fn read_owned_orders(
        &self,
        user_id: Box<str>,
        skus: Vec<Box<str>>,
        limit: usize,
    ) -> OrdersRead {
        let reads: Vec<Command> = skus
            .into_iter()
            .map(|sku| Command::ListOrders(sku, user_id.clone()))
            .collect();
        let replies: Vec<_> = if self.store.shared() {
            // The shared store runs a batch one round trip after another; reads need no order,
            // but a thousand at once would queue the shard's purchases behind them.
            futures::stream::iter(reads)
                .map(|read| self.store.execute(vec![read]))
                .buffer_unordered(SHARED_READS_AT_ONCE)
                .flat_map(futures::stream::iter)
                .collect()
                .await
        } else {
            self.store.execute(reads).await
        };
        let mut read = OrdersRead::default();
        for reply in replies {
            match reply {
                Ok(Outcome::Orders(orders)) => {
                    read.read += 1;
                    read.orders.extend(orders);
                }
                _ => read.failed += 1,
            }
        }
        sort_newest_first(&mut read.orders);
        read.orders.truncate(limit);
        read
    }
}
