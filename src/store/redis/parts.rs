//! A split sale seen whole: the sync, the sale's read, the admin's order listing and the
//! operator's resume over every part of a sale with several stock buckets
//! ([`super::buckets`]). A sale with one bucket goes through each unchanged, with no extra call.

use super::{keys, RedisError, RedisStore};
use crate::sale::command::{Outcome, Reply, SaleOrdersQuery, StockLevel};
use crate::sale::{Sale, SaleError};
use crate::store::Synced;

impl RedisStore {
    /// One owner tick's sync of `sku`: part 0 ([`RedisStore::sync_part`]) and, for a split sale,
    /// every other part, after re-driving the moves each part left unconfirmed. The answer sums
    /// the parts' `remaining` (and their `seq`, each of which only grows, so the sum does too)
    /// and pending orders. `None` when Redis gave no answer for a part: a partial sum would look
    /// like stock lost.
    pub(super) async fn sync_sku(&self, sku: &str) -> Option<(Synced, u64)> {
        if keys::is_part(sku) {
            // A part's name, from the regression view: synced with its SKU.
            return None;
        }
        let (mut whole, mut pending) = Box::pin(self.sync_part(sku)).await?;
        let Some((sale, level, _)) = &mut whole.sale else {
            return Some((whole, pending));
        };
        let buckets = sale.stock_buckets;
        {
            let mut state = self.0.buckets.borrow_mut();
            state.learn(sku, buckets);
            state.saw(sku, level.remaining);
        }
        if buckets <= 1 {
            return Some((whole, pending));
        }
        let mut redriven = 0;
        for bucket in 0..buckets {
            redriven += Box::pin(self.redrive(&keys::part(sku, bucket))).await;
        }
        if redriven > 0 {
            // Part 0 was read before the moves were delivered (some perhaps into it).
            (whole, pending) = Box::pin(self.sync_part(sku)).await?;
        }
        let Some((sale, level, _)) = &mut whole.sale else {
            return Some((whole, pending));
        };
        sale.sku = sku.into();
        for bucket in 1..buckets {
            let part = keys::part(sku, bucket);
            let (synced, part_pending) = Box::pin(self.sync_part(&part)).await?;
            pending += part_pending;
            // A part not written yet (a half-made upsert) holds nothing.
            if let Some((_, part_level, _)) = synced.sale {
                self.0.buckets.borrow_mut().saw(&part, part_level.remaining);
                level.remaining += part_level.remaining;
                level.seq += part_level.seq;
            }
        }
        Some((whole, pending))
    }

    /// `sku`'s sale with the stock of every part summed; `None` for an unknown SKU.
    pub(super) async fn get_sale(
        &self,
        sku: &str,
    ) -> Result<Option<(Sale, StockLevel)>, RedisError> {
        let Some((sale, mut level)) = self.get_part_sale(sku).await? else {
            return Ok(None);
        };
        self.0.buckets.borrow_mut().learn(sku, sale.stock_buckets);
        for bucket in 1..sale.stock_buckets {
            if let Some((_, part)) = self.get_part_sale(&keys::part(sku, bucket)).await? {
                level.remaining += part.remaining;
                level.seq += part.seq;
            }
        }
        Ok(Some((sale, level)))
    }

    /// A page of a SKU's orders in id order, over every part: each part is read from the same
    /// cursor and the pages are merged. A part that stopped early (it scanned its most, or
    /// filled the page) stops the merged page at its last id, so no order of it is skipped.
    pub(super) async fn sale_orders(&self, query: SaleOrdersQuery) -> Reply {
        let parts = self.parts(&query.sku).await?;
        let mut orders = Vec::new();
        let mut cutoff: Option<String> = None;
        for part in &parts {
            let (page, next) = self.part_orders(part, &query).await?;
            orders.extend(page);
            if let Some(next) = next.map(|id| id.to_string()) {
                if cutoff.as_ref().is_none_or(|at| next < *at) {
                    cutoff = Some(next);
                }
            }
        }
        // Ids of one SKU all have one length, and sort by time as strings.
        orders.sort_by_cached_key(|order| order.order_id.to_string());
        if let Some(at) = &cutoff {
            orders.retain(|order| order.order_id.to_string() <= *at);
        }
        let more = cutoff.is_some() || orders.len() > query.limit;
        orders.truncate(query.limit);
        let next = if more {
            orders.last().map(|order| order.order_id.clone())
        } else {
            None
        };
        if more && next.is_none() {
            // Nothing matched up to where a part stopped: go on from there.
            let next = cutoff
                .as_deref()
                .and_then(crate::sale::ids::OrderId::parse)
                .ok_or(SaleError::Unavailable)?;
            return Ok(Outcome::OrderPage {
                orders,
                next: Some(next),
            });
        }
        Ok(Outcome::OrderPage { orders, next })
    }

    /// An operator's resume of `sku` ([`RedisStore::resume_part`]). With several stock buckets,
    /// every bucket whose store regressed is resumed, each from this shard's last view of it;
    /// `remaining` is for bucket 0 (the others keep the lower of Redis' and the view's). Answers
    /// the report of the one part, or `{"buckets": [{"bucket": b, "report": …}, …]}` for a split
    /// sale; `not_regressed` when no part had regressed.
    pub(super) async fn resume_sale(&self, sku: &str, remaining: Option<u64>) -> Reply {
        let buckets = self.buckets_of(sku).await?;
        if buckets <= 1 {
            return self.resume_part(sku, remaining).await;
        }
        let mut reports = Vec::new();
        for bucket in 0..buckets {
            let wanted = if bucket == 0 { remaining } else { None };
            match self.resume_part(&keys::part(sku, bucket), wanted).await {
                Ok(Outcome::Resumed(report)) => {
                    reports.push(format!(r#"{{"bucket":{bucket},"report":{report}}}"#));
                }
                // A part that did not regress is left as it is.
                Err(SaleError::NotRegressed) => {}
                // Parts resumed so far stay resumed; running it again resumes the rest.
                Err(error) => return Err(error),
                Ok(_) => return Err(SaleError::Unavailable),
            }
        }
        if reports.is_empty() {
            return Err(SaleError::NotRegressed);
        }
        Ok(Outcome::Resumed(
            format!(r#"{{"buckets":[{}]}}"#, reports.join(",")).into(),
        ))
    }
}
