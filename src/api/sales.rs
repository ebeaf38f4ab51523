//! Sale endpoints: create or replace, read, and purchase (listing is in `listing`).

use std::time::Instant;

use super::body::{for_each_field, json_fields, out_of_range};
use super::error::ApiError;
use super::sale_admission::AdmissionFields;
use super::{json, Api};
use crate::clock::now_ms;
use crate::http::{Request, Response};
use crate::metrics::WaitingRoomEvent;
use crate::sale::command::{Command, Outcome, PurchaseRequest};
use crate::sale::model::{
    is_valid_currency, is_valid_id, Admission, DEFAULT_CURRENCY, MAX_STOCK_BUCKETS,
};
use crate::sale::pow::{Proof, MAX_POW_BITS};
use crate::sale::{Sale, SaleError, SaleView};
use crate::shard::edge::{Gate, Refusal};
use crate::store::Store;
use simd_json::prelude::*;

/// Most units one purchase may ask for.
const MAX_QUANTITY: u64 = 100;
/// Most units a sale may offer.
const MAX_STOCK: u64 = 1_000_000_000;
/// Highest unit price, in minor units: 10^10 (a hundred million in a two-decimal currency). An
/// order's amount is then at most 10^12, which Redis' Lua numbers and cjson (14 significant
/// digits) hold exactly.
const MAX_PRICE: u64 = 10_000_000_000;
/// Latest time a sale may start or end: the last millisecond of the year 9999. Well inside the
/// 2^53 that Redis' Lua numbers hold exactly.
pub(super) const MAX_TIME_MS: u64 = 253_402_300_799_999;

/// `GET /v1/sales/{sku}`
pub(super) async fn get<S: Store + 'static>(api: &Api<S>, sku: &str) -> Result<Response, ApiError> {
    json(200, &view_of(api, sku).await?)
}

/// The sale of `sku` with its live stock, read from its owner; `404 unknown_sale` when there
/// is none (or `sku` is not a valid id).
pub(super) async fn view_of<S: Store + 'static>(
    api: &Api<S>,
    sku: &str,
) -> Result<SaleView, ApiError> {
    if !is_valid_id(sku) {
        return Err(SaleError::UnknownSale.into());
    }
    // A sale this node has not heard of may have just been created through another node; the
    // lookup reads it (and teaches every edge) or answers 404 within its bounds.
    if api.shard.looks_up() && !api.shard.edge.borrow().knows(sku) {
        return api
            .shard
            .discover(sku)
            .await?
            .ok_or_else(|| SaleError::UnknownSale.into());
    }
    match api.shard.call(Command::GetSale(sku.into())).await? {
        Outcome::Sale(view) => Ok(view),
        _ => Err(SaleError::Unavailable.into()),
    }
}

/// `PUT /v1/sales/{sku}` (admin)
pub(super) async fn upsert<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    sku: &str,
) -> Result<Response, ApiError> {
    api.admin(request)?;
    if !is_valid_id(sku) {
        return Err(ApiError::bad_request(
            "`sku` must be 1 to 64 characters from [A-Za-z0-9_-]",
        ));
    }
    if !request.has_length {
        return Err(ApiError::new(
            411,
            "length_required",
            "a sale body needs a Content-Length",
        ));
    }
    let sale = parse_sale(request, sku)?;
    match api.shard.call(Command::UpsertSale(sale)).await? {
        Outcome::Sale(view) => json(201, &view),
        _ => Err(SaleError::Unavailable.into()),
    }
}

/// Reads and validates a sale definition for `sku` from a `PUT /v1/sales/{sku}` body; the error
/// names the offending field.
pub fn parse_sale(request: &Request<'_>, sku: &str) -> Result<Sale, ApiError> {
    let mut fields = json_fields(request)?;
    let name = fields.required_str("name", 1..=200)?;
    let stock = fields.required_u64("stock", 1..=MAX_STOCK)?;
    let starts_at = fields.required_u64("starts_at", 0..=MAX_TIME_MS)?;
    let ends_at = fields.required_u64("ends_at", 0..=MAX_TIME_MS)?;
    let per_user_limit = fields.u64("per_user_limit", 1..=1_000_000)?.unwrap_or(1);
    let payment_timeout_ms = fields
        .u64("payment_timeout_ms", 100..=7 * 24 * 3_600_000)?
        .unwrap_or(900_000);
    let rate_limit_per_sec = fields
        .u64("rate_limit_per_sec", 0..=10_000_000)?
        .unwrap_or(0);
    let price = fields.u64("price", 0..=MAX_PRICE)?.unwrap_or(0);
    let currency = fields
        .str("currency", 3..=3)?
        .unwrap_or_else(|| DEFAULT_CURRENCY.to_owned());
    // Accepted in both modes; only the Redis store splits the stock (see `Sale::stock_buckets`).
    let stock_buckets = fields
        .u64("stock_buckets", 1..=u64::from(MAX_STOCK_BUCKETS))?
        .unwrap_or(1);
    let pow_bits = fields
        .u64("pow_bits", 0..=u64::from(MAX_POW_BITS))?
        .unwrap_or(0);
    let admission = AdmissionFields::read(&mut fields)?;
    fields.finish()?;
    if !is_valid_currency(&currency) {
        return Err(ApiError::bad_request(
            "field `currency` must be an ISO 4217 code: three uppercase letters",
        ));
    }
    if ends_at <= starts_at {
        return Err(ApiError::bad_request(
            "field `ends_at` must be after `starts_at`",
        ));
    }
    let admission = admission.settle(starts_at)?;
    if admission.admission != Admission::Fcfs && stock_buckets > 1 {
        // The queue's sold-out check and ticket states read one bucket's stock.
        return Err(ApiError::bad_request(
            "a waiting-room or lottery sale keeps its stock in one bucket: `stock_buckets` must be 1",
        ));
    }
    Ok(Sale {
        sku: sku.into(),
        name: name.into(),
        stock,
        starts_at,
        ends_at,
        // Both bounded by the ranges checked above.
        per_user_limit: u32::try_from(per_user_limit).unwrap_or(u32::MAX),
        payment_timeout_ms,
        rate_limit_per_sec: u32::try_from(rate_limit_per_sec).unwrap_or(u32::MAX),
        price,
        currency: currency.into(),
        // Bounded by the range checked above.
        stock_buckets: u32::try_from(stock_buckets).unwrap_or(1),
        // Bounded by the range checked above.
        pow_bits: u8::try_from(pow_bits).unwrap_or(MAX_POW_BITS),
        admission: admission.admission,
        queue_opens_at: admission.queue_opens_at,
        admission_rate: admission.admission_rate,
        register_from: admission.register_from,
        overbooking_percent: admission.overbooking_percent,
    })
}

/// `POST /v1/sales/{sku}/purchase` (shopper)
pub(super) async fn purchase<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    sku: &str,
) -> Result<Response, ApiError> {
    let user_id = api.shopper(request)?;
    if !is_valid_id(sku) {
        return Err(SaleError::UnknownSale.into());
    }
    let idempotency_key = parse_idempotency_key(request.idempotency_key)?;
    // The edge checks come before the body is even parsed: refusing is the common answer in a
    // flash sale, and it should cost as little as possible.
    // Whether the purchase came through the waiting room, for the passes-used count.
    let passed = std::cell::Cell::new(false);
    let admit = || {
        let now_ms = now_ms();
        // Only a sale that asks for work reads the header. A malformed one is no solution: one
        // refusal, `pow_invalid`, for every wrong proof.
        let proves = |gate| match gate {
            Gate::Work(bits) => {
                let proof = request.pow.and_then(Proof::parse);
                api.auth.pow().verify(sku, user_id, proof, bits, now_ms)
            }
            Gate::Pass => {
                passed.set(true);
                api.auth.passes().verify(sku, user_id, request.pass, now_ms)
            }
        };
        api.shard.edge.borrow_mut().admit_purchase(
            sku,
            user_id,
            idempotency_key.is_some(),
            now_ms,
            Instant::now(),
            proves,
        )
    };
    let mut admitted = admit();
    // A sale created through another node may not have reached this edge yet. Once the lookup
    // has taught the edge, every edge check (window, blocklist, rate, sold out) runs again.
    if admitted == Err(Refusal::Sale(SaleError::UnknownSale))
        && api.shard.discover(sku).await?.is_some()
    {
        admitted = admit();
    }
    match admitted {
        Ok(()) => {}
        Err(Refusal::Sale(SaleError::PowInvalid)) => {
            api.shard.metrics.record_pow_failure();
            return Err(SaleError::PowInvalid.into());
        }
        Err(Refusal::Sale(refusal)) => return Err(refusal.into()),
        Err(Refusal::RateLimited(wait)) => {
            let mut error = ApiError::new(
                429,
                "rate_limited",
                "too many purchase attempts, retry later",
            );
            error.retry_after_secs = Some(wait.as_secs().max(1));
            return Err(error);
        }
    }
    let quantity = parse_purchase(request)?;
    // Both ids passed the edge's checks, so both fit; the fallback is for completeness.
    let purchase = PurchaseRequest::new(sku, user_id, quantity, idempotency_key.map(Box::from))
        .ok_or(SaleError::UnknownSale)?;
    let command = Command::Purchase(purchase);
    match api.shard.call(command).await? {
        Outcome::Order {
            order, replayed, ..
        } => {
            let outcome = if replayed { "replayed" } else { "created" };
            api.shard.metrics.record_purchase(outcome);
            if passed.get() && !replayed {
                api.shard
                    .metrics
                    .record_waiting_room(WaitingRoomEvent::PassUsed);
            }
            json(201, &order)
        }
        _ => Err(SaleError::Unavailable.into()),
    }
}

/// Reads the units wanted from a `POST /v1/sales/{sku}/purchase` body (1 when absent); the error
/// names the offending field.
pub fn parse_purchase(request: &Request<'_>) -> Result<u32, ApiError> {
    // Read from a reused tape, not a value tree: this runs on every admitted purchase.
    let range = 1..=MAX_QUANTITY;
    let mut quantity = 1;
    for_each_field(request, |name, value| {
        if name != "quantity" {
            return Ok(false);
        }
        let number = value.as_u64().filter(|n| range.contains(n));
        quantity = number.ok_or_else(|| out_of_range(name, &range))?;
        Ok(true)
    })?;
    // Bounded by the range checked above.
    Ok(u32::try_from(quantity).unwrap_or(u32::MAX))
}

fn parse_idempotency_key(header: Option<&[u8]>) -> Result<Option<&str>, ApiError> {
    let Some(key) = header else {
        return Ok(None);
    };
    let visible = key.iter().all(|b| (0x21..=0x7e).contains(b));
    match std::str::from_utf8(key) {
        Ok(text) if visible && (1..=64).contains(&key.len()) => Ok(Some(text)),
        _ => Err(ApiError::bad_request(
            "header `Idempotency-Key` must be 1 to 64 visible ASCII characters",
        )),
    }
}
