//! Payment confirmation, which only the payment side may give: `POST /v1/orders/{id}/pay` with
//! the payment-service token, or `POST /v1/payments/webhook` signed by the provider.
//!
//! Both name an amount and a `payment_ref`. A wrong amount is refused (`amount_mismatch`) and the
//! order stays pending; a repeat of the payment that paid an order (same `payment_ref`) gets the
//! same answer, so a provider's retries are safe; another payment of a paid order is refused
//! (`order_paid`) for the payment side to refund.

use super::body::{json_fields, Fields};
use super::error::ApiError;
use super::{json, Api};
use crate::auth::Principal;
use crate::clock::now_ms;
use crate::http::{Request, Response};
use crate::payment::SignatureError;
use crate::sale::command::{Command, Outcome, Payment};
use crate::sale::ids::OrderId;
use crate::sale::SaleError;
use crate::store::Store;

/// Longest `payment_ref`: provider ids (Stripe's `pi_…`, Alipay trade numbers) are far shorter.
const MAX_PAYMENT_REF_LEN: usize = 128;

/// The refusal for every caller but the payment service.
pub(super) fn not_the_payment_side() -> ApiError {
    ApiError::new(
        403,
        "payment_required_from_provider",
        "payments are confirmed only by the payment service or the signed payment webhook",
    )
}

/// The refusal while the webhook is not configured.
pub(super) fn webhook_off() -> ApiError {
    ApiError::new(
        404,
        "webhook_disabled",
        "the payment webhook is off: no webhook_secret is configured",
    )
}

/// The refusal of a webhook whose signature does not check out.
pub(super) fn bad_signature(error: SignatureError) -> ApiError {
    ApiError::new(error.status(), error.code(), error.to_string())
}

/// `POST /v1/orders/{id}/pay` (the payment service)
pub(super) async fn pay<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    match api.principal(request) {
        Some(Principal::Payment) => {}
        Some(_) => return Err(not_the_payment_side()),
        None => return Err(ApiError::unauthorized()),
    }
    let order_id = OrderId::parse(id).ok_or(SaleError::UnknownOrder)?;
    let mut fields = json_fields(request)?;
    let payment = payment(&mut fields)?;
    fields.finish()?;
    run(api, order_id, payment).await
}

/// `POST /v1/payments/webhook` (the payment provider, signed)
pub(super) async fn webhook<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    let hook = api.auth.webhook().ok_or_else(webhook_off)?;
    hook.verify(request.signature, request.body, now_ms() / 1000)
        .map_err(bad_signature)?;
    let mut fields = json_fields(request)?;
    let order_id = fields.required_str("order_id", 1..=200)?;
    let order_id = OrderId::parse(&order_id).ok_or(SaleError::UnknownOrder)?;
    let payment = payment(&mut fields)?;
    fields.finish()?;
    run(api, order_id, payment).await
}

fn payment(fields: &mut Fields) -> Result<Payment, ApiError> {
    let amount = fields
        .u64("amount", 0..=u64::MAX)?
        .ok_or_else(|| ApiError::bad_request("field `amount` is required"))?;
    let payment_ref = fields.required_str("payment_ref", 1..=MAX_PAYMENT_REF_LEN)?;
    if !payment_ref.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err(ApiError::bad_request(
            "field `payment_ref` must be visible ASCII characters",
        ));
    }
    Ok(Payment {
        amount,
        payment_ref: payment_ref.into(),
    })
}

async fn run<S: Store + 'static>(
    api: &Api<S>,
    order_id: OrderId,
    payment: Payment,
) -> Result<Response, ApiError> {
    match api.shard.call(Command::Pay(order_id, payment)).await? {
        Outcome::Order { order, .. } => json(200, &order),
        _ => Err(SaleError::Unavailable.into()),
    }
}
