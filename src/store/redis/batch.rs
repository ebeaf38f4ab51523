//! Coalescing a SKU's concurrent purchases into one script call.
//!
//! The first purchase of an idle SKU starts a flusher at once, so light traffic waits for
//! nothing. While its call is in flight, later purchases queue; the flusher then takes up to
//! `--redis-batch` (default 64) of them in the next call. Throughput is then bounded by Redis' script execution,
//! not by one round trip per purchase.

use std::collections::VecDeque;

use fred::types::Value;
use futures::channel::oneshot;

use super::RedisStore;
use crate::clock::now_ms;
use crate::sale::command::{Outcome, PurchaseRequest, Reply, StockLevel};
use crate::sale::ids::OrderId;
use crate::sale::SaleError;

/// Script calls' worth of purchases one SKU may have waiting; more are refused with 503 rather
/// than queued without bound (in time as well as memory: each waits for the calls ahead of it).
pub const QUEUED_CALLS: usize = 16;
/// Purchases one SKU may have waiting however small the batches: enough for a few thousand
/// concurrent shoppers per shard without refusing any.
pub const MIN_QUEUE: usize = 1024;

/// A SKU's queue.
#[derive(Debug, Default)]
pub struct Batch {
    queue: VecDeque<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    order_id: OrderId,
    request: PurchaseRequest,
    reply: oneshot::Sender<Reply>,
}

/// Queues one purchase and waits for its reply.
pub async fn purchase(store: &RedisStore, request: PurchaseRequest) -> Reply {
    // Minted before the first attempt, so every retry of this purchase names the same order.
    let order_id = OrderId::mint(&request.sku, now_ms(), &mut *store.0.rng.borrow_mut());
    let sku = request.sku.clone();
    let (reply, answer) = oneshot::channel();
    let start_flusher = {
        let mut batches = store.0.batches.borrow_mut();
        let idle = !batches.contains_key(&sku);
        let batch = batches.entry(sku.clone()).or_default();
        if batch.queue.len() >= (QUEUED_CALLS * store.0.max_batch).max(MIN_QUEUE) {
            return Err(SaleError::Unavailable);
        }
        batch.queue.push_back(Waiting {
            order_id,
            request,
            reply,
        });
        idle
    };
    if start_flusher {
        glommio::spawn_local(flush(store.clone(), sku)).detach();
    }
    answer.await.unwrap_or(Err(SaleError::Unavailable))
}

/// Sends `sku`'s queue in batches until it is empty, then forgets the SKU (the next purchase
/// starts a new flusher).
async fn flush(store: RedisStore, sku: Box<str>) {
    loop {
        let group: Vec<Waiting> = {
            let mut batches = store.0.batches.borrow_mut();
            let Some(batch) = batches.get_mut(&sku) else {
                return;
            };
            if batch.queue.is_empty() {
                batches.remove(&sku);
                return;
            }
            // Bounded, because Redis serves nothing else while a script runs.
            let take = batch.queue.len().min(store.0.max_batch);
            batch.queue.drain(..take).collect()
        };
        store
            .0
            .metrics
            .borrow_mut()
            .batch_size
            .record(group.len() as u64);
        let mut args = Vec::with_capacity(2 + 4 * group.len());
        args.push(store.0.retention.to_string());
        args.push(group.len().to_string());
        for waiting in &group {
            args.push(waiting.order_id.to_string());
            args.push(waiting.request.user_id.to_string());
            args.push(waiting.request.quantity.to_string());
            args.push(
                waiting
                    .request
                    .idempotency_key
                    .as_deref()
                    .unwrap_or("")
                    .to_owned(),
            );
        }
        let replies = match store
            .acknowledged_script(&store.0.scripts.purchase, &sku, args)
            .await
        {
            Ok(value) => decode(value, group.len()),
            Err(error) => vec![Err(error.into()); group.len()],
        };
        for (waiting, reply) in group.into_iter().zip(replies) {
            let _ = waiting.reply.send(reply);
        }
    }
}

/// One reply per purchase from the script's `{outcome, order_or_code, remaining, seq}` rows.
fn decode(value: Value, expected: usize) -> Vec<Reply> {
    let rows = value.into_array();
    if rows.len() != expected {
        tracing::error!(
            rows = rows.len(),
            expected,
            "purchase script replied with the wrong row count"
        );
        return vec![Err(SaleError::Unavailable); expected];
    }
    rows.into_iter().map(decode_row).collect()
}

fn decode_row(row: Value) -> Reply {
    let fields = row.into_array();
    let outcome = fields.first().and_then(Value::as_string);
    let level = || -> Result<StockLevel, SaleError> {
        Ok(StockLevel {
            remaining: super::decode::int_at(&fields, 2)?,
            seq: super::decode::int_at(&fields, 3)?,
        })
    };
    match outcome.as_deref() {
        Some("ok") | Some("retried") => Ok(Outcome::Order {
            order: super::decode::decode_order(&super::decode::str_at(&fields, 1)?)?,
            stock: Some(level()?),
            replayed: false,
        }),
        Some("replay") => Ok(Outcome::Order {
            order: super::decode::decode_order(&super::decode::str_at(&fields, 1)?)?,
            stock: None,
            replayed: true,
        }),
        Some("err") => Err(super::decode::refusal_at(&fields, 1)),
        _ => Err(SaleError::Unavailable),
    }
}
