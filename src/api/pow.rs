//! `GET /v1/sales/{sku}/pow`: a shopper's proof-of-work challenge for a sale
//! ([`crate::sale::pow`]). Stateless, so any node answers it without a hop or a store read.

use serde::Serialize;

use super::error::ApiError;
use super::{json, Api};
use crate::clock::now_ms;
use crate::http::{Request, Response};
use crate::sale::pow::{window_of, WINDOW_MS};
use crate::store::Store;

/// The challenge as the shopper's client reads it.
#[derive(Debug, Serialize)]
struct Challenge<'a> {
    /// The sale it is for.
    sku: &'a str,
    /// The shopper it is for: another shopper's solution does not count.
    user_id: &'a str,
    /// Leading zero bits the solution's hash needs; 0 when the sale asks for no work.
    bits: u8,
    /// The window to send back in `X-Seckill-Pow: <window>.<nonce>`.
    window: u64,
    /// 32 bytes, hex: the nonce's hash input is these bytes and the nonce as 8 big-endian bytes.
    challenge: String,
    /// When a solution of this challenge stops being accepted (ms since the Unix epoch).
    expires_at: u64,
}

/// `GET /v1/sales/{sku}/pow` (shopper)
pub(super) async fn challenge<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    sku: &str,
) -> Result<Response, ApiError> {
    let user_id = api.shopper(request)?;
    let bits = super::queue::rules_of(api, sku).await?.pow_bits;
    let window = window_of(now_ms());
    let challenge = api.auth.pow().challenge(sku, user_id, window);
    json(
        200,
        &Challenge {
            sku,
            user_id,
            bits,
            window,
            challenge: hex::encode(challenge),
            // The verifier takes the window and the one after it.
            expires_at: window.saturating_add(2).saturating_mul(WINDOW_MS),
        },
    )
}
