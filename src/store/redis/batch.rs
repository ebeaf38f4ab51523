//! Coalescing a SKU's concurrent purchases into one script call.
//!
//! The first purchase of an idle SKU starts a flusher at once, so light traffic waits for
//! nothing. While its call is in flight, later purchases queue and start further flushers, up
//! to `--redis-pipeline` (default 4) per SKU; each takes up to `--redis-batch` (default 64)
//! queued purchases per call. Several calls of one SKU are thus in flight at once and their
//! round trips overlap, while each call still runs atomically in Redis, deciding every purchase
//! on the stock as Redis has it at that moment (never on the node's view of it). Throughput is
//! then bounded by Redis' script execution, not by one round trip per purchase.
//!
//! A purchase answered 503 after one of its attempts went to Redis may have run there anyway
//! (a lost reply, a stall past the deadline): its order id is handed to [`super::abandon`], which
//! makes sure no such order outlives the 503.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;

use fred::types::Value;
use futures::channel::oneshot;

use super::abandon::Ghost;
use super::RedisStore;
use crate::clock::now_ms;
use crate::sale::command::{Outcome, PurchaseRequest, Reply, StockLevel};
use crate::sale::ids::OrderId;
use crate::sale::{Order, OrderStatus, SaleError};

/// Script calls' worth of purchases one SKU may have waiting; more are refused with 503 rather
/// than queued without bound (in time as well as memory: each waits for the calls ahead of it).
pub const QUEUED_CALLS: usize = 16;
/// Purchases one SKU may have waiting however small the batches: enough for a few thousand
/// concurrent shoppers per shard without refusing any.
pub const MIN_QUEUE: usize = 1024;

/// A SKU's queue and its flushers.
#[derive(Debug, Default)]
pub struct Batch {
    queue: VecDeque<Waiting>,
    /// Flushers running for the SKU, at most `--redis-pipeline`.
    flushers: usize,
    /// Of those, the ones whose script call is in flight.
    sending: usize,
}

#[derive(Debug)]
struct Waiting {
    order_id: OrderId,
    request: PurchaseRequest,
    reply: oneshot::Sender<Reply>,
}

/// Queues one purchase and waits for its reply. `sku` is the part of the SKU's keys it runs on
/// (the SKU itself, or one of its stock buckets, see [`super::buckets`]); with `bucket`, the
/// order id names that bucket.
pub async fn purchase(
    store: &RedisStore,
    request: PurchaseRequest,
    sku: Box<str>,
    bucket: Option<u32>,
) -> Reply {
    // Minted before the first attempt, so every retry of this purchase names the same order.
    let order_id = match bucket {
        Some(bucket) => OrderId::mint_in_bucket(
            &*request.sku,
            now_ms(),
            &mut *store.0.rng.borrow_mut(),
            bucket,
        ),
        None => OrderId::mint(&*request.sku, now_ms(), &mut *store.0.rng.borrow_mut()),
    };
    let (reply, answer) = oneshot::channel();
    let start_flusher = {
        let mut batches = store.0.batches.borrow_mut();
        let batch = batches.entry(sku.clone()).or_default();
        if batch.queue.len() >= (QUEUED_CALLS * store.0.max_batch).max(MIN_QUEUE) {
            return Err(SaleError::Unavailable);
        }
        batch.queue.push_back(Waiting {
            order_id,
            request,
            reply,
        });
        // The first call starts at once (light traffic waits for nothing). Another may start
        // while others are in flight, up to the pipeline's depth, once a quarter batch waits:
        // each call costs Redis a fixed part (reading the sale, the level, the regression
        // check), worth paying again only for a batch that is not tiny.
        let waiting = batch.queue.len();
        let more = batch.flushers == 0
            || (batch.flushers < store.0.pipeline && waiting >= (store.0.max_batch / 4).max(1));
        if more {
            batch.flushers += 1;
        }
        more
    };
    if start_flusher {
        glommio::spawn_local(flush(store.clone(), sku)).detach();
    }
    // The budget bounds the whole wait, the queue included: behind a stalled call a purchase
    // would otherwise wait for the calls ahead of it as well as its own. One that gives up is
    // skipped if still queued, or abandoned if its call runs after all (see `flush`).
    let waited = async { Ok(answer.await) };
    match glommio::timer::timeout(store.0.budget, waited).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(_)) | Err(_) => Err(SaleError::Unavailable),
    }
}

/// Sends `sku`'s queue in batches until it is empty, then leaves; the last flusher to leave
/// forgets the SKU. Up to `--redis-pipeline` of these run per SKU, each with one call in flight.
async fn flush(store: RedisStore, sku: Box<str>) {
    loop {
        let group: Vec<Waiting> = {
            let mut batches = store.0.batches.borrow_mut();
            let Some(batch) = batches.get_mut(&sku) else {
                return;
            };
            // Purchases whose shopper stopped waiting (past the budget) are not sent at all.
            batch.queue.retain(|waiting| !waiting.reply.is_canceled());
            if batch.queue.is_empty() {
                batch.flushers = batch.flushers.saturating_sub(1);
                if batch.flushers == 0 {
                    batches.remove(&sku);
                }
                return;
            }
            // The rule that starts a further flusher holds for every call it sends: while
            // another call is in flight, this one leaves rather than send less than a quarter
            // batch, and the call in flight takes the rest when it returns. Otherwise flushers
            // once started split the queue into small calls, each paying Redis' fixed part.
            if batch.sending > 0 && batch.queue.len() < (store.0.max_batch / 4).max(1) {
                batch.flushers = batch.flushers.saturating_sub(1);
                return;
            }
            // Bounded, because Redis serves nothing else while a script runs.
            let take = batch.queue.len().min(store.0.max_batch);
            batch.sending += 1;
            let sending = batch.sending as u64;
            let mut metrics = store.0.metrics.borrow_mut();
            metrics.inflight.record(sending);
            metrics.inflight_max = metrics.inflight_max.max(sending);
            batch.queue.drain(..take).collect()
        };
        store
            .0
            .metrics
            .borrow_mut()
            .batch_size
            .record(group.len() as u64);
        let mut args = Vec::with_capacity(2 + 4 * group.len() + 5);
        args.push(store.0.retention.to_string());
        args.push(group.len().to_string());
        for waiting in &group {
            let (id, request) = (waiting.order_id.to_string(), &waiting.request);
            let key = request.idempotency_key.as_deref().unwrap_or("");
            args.push(id);
            args.push(request.user_id.to_string());
            args.push(request.quantity.to_string());
            args.push(key.to_owned());
        }
        // The shard's view of the SKU, for the script to notice Redis having lost writes.
        args.extend(store.floor_args(&sku));
        let sent = Cell::new(false);
        let purchase = &store.0.scripts.purchase;
        let result = store.acknowledged_script(purchase, &sku, args, &sent).await;
        if let Some(batch) = store.0.batches.borrow_mut().get_mut(&sku) {
            batch.sending = batch.sending.saturating_sub(1);
        }
        let replies = match result {
            Ok(value) => decode(value, &group),
            Err(error) => vec![Err(error.into()); group.len()],
        };
        // A 503 for a purchase that may have run, or an order whose shopper stopped waiting
        // before it came: the order, if any, must not outlive the shopper's 503.
        let mut ghosts = Vec::new();
        for (waiting, reply) in group.into_iter().zip(replies) {
            if let Ok(Outcome::Order {
                stock: Some(level), ..
            }) = &reply
            {
                store.saw_level(&sku, *level);
            }
            let unavailable = matches!(reply, Err(SaleError::Unavailable));
            let made_order = matches!(reply, Ok(Outcome::Order { .. }));
            let (order_id, request) = (waiting.order_id, waiting.request);
            let delivered = waiting.reply.send(reply).is_ok();
            if sent.get() && (unavailable || (made_order && !delivered)) {
                ghosts.push(Ghost {
                    sku: sku.clone(),
                    order_id: order_id.to_string(),
                    user_id: request.user_id.to_string(),
                    idempotency_key: request.idempotency_key.as_deref().unwrap_or("").to_owned(),
                    refusals: 0,
                });
            }
        }
        store.abandon_later(ghosts);
    }
}

/// One reply per purchase from the script's `{remaining, seq, created_at, expires_at, price,
/// row*}` (see [`super::scripts::PURCHASE`]): an `ok` row is an order made just now, built here
/// from the request and the call's shared fields; the stock level after each purchase follows
/// from the level before the call, each `ok` taking its quantity and one seq.
fn decode(value: Value, group: &[Waiting]) -> Vec<Reply> {
    let fields = value.into_array();
    let expected = group.len();
    let header = (0..5)
        .map(|index| super::decode::int_at(&fields, index))
        .collect::<Result<Vec<u64>, _>>();
    let (Ok(header), true) = (header, fields.len() == 5 + expected) else {
        tracing::error!(
            fields = fields.len(),
            expected,
            "purchase script replied in the wrong shape"
        );
        return vec![Err(SaleError::Unavailable); expected];
    };
    let (mut remaining, mut seq) = (header[0], header[1]);
    let (created_at, expires_at, price) = (header[2], header[3], header[4]);
    let mut replies = Vec::with_capacity(expected);
    for (waiting, row) in group.iter().zip(fields.into_iter().skip(5)) {
        let request = &waiting.request;
        let reply = match row {
            Value::Array(parts) => decode_earlier(&parts, StockLevel { remaining, seq }),
            row => match row.as_string().as_deref() {
                Some("ok") => {
                    remaining = remaining.saturating_sub(u64::from(request.quantity));
                    seq += 1;
                    Ok(Outcome::Order {
                        order: Order {
                            order_id: waiting.order_id.clone(),
                            // The id was minted from this SKU: share its copy.
                            sku: Arc::clone(&waiting.order_id.sku),
                            user_id: Arc::from(request.user_id.as_str()),
                            quantity: request.quantity,
                            status: OrderStatus::Pending,
                            created_at,
                            expires_at,
                            amount: price.saturating_mul(u64::from(request.quantity)),
                            payment_ref: None,
                        },
                        stock: Some(StockLevel { remaining, seq }),
                        replayed: false,
                    })
                }
                _ => Err(super::decode::refusal_at(&[row], 0)),
            },
        };
        replies.push(reply);
    }
    replies
}

/// A `{retried|replay, order_json}` row: an order an earlier attempt (or an earlier purchase
/// with the same idempotency key) made.
fn decode_earlier(parts: &[Value], level: StockLevel) -> Reply {
    let order = super::decode::decode_order(&super::decode::str_at(parts, 1)?)?;
    match parts.first().and_then(Value::as_string).as_deref() {
        Some("retried") => Ok(Outcome::Order {
            order,
            stock: Some(level),
            replayed: false,
        }),
        Some("replay") => Ok(Outcome::Order {
            order,
            stock: None,
            replayed: true,
        }),
        _ => Err(SaleError::Unavailable),
    }
}
