//! Order endpoints: read and cancel (paying is in `payments`).

use super::error::ApiError;
use super::{json, Api};
use crate::auth::Principal;
use crate::http::{Request, Response};
use crate::sale::command::{Command, Outcome, Requester};
use crate::sale::ids::OrderId;
use crate::sale::SaleError;
use crate::store::Store;

fn requester<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
) -> Result<Requester, ApiError> {
    match api.principal(request) {
        Some(Principal::Admin) => Ok(Requester::Admin),
        Some(Principal::Shopper(user_id)) => Ok(Requester::Shopper(user_id.into())),
        Some(Principal::Payment) => Err(ApiError::new(
            403,
            "forbidden",
            "the payment service may only confirm payments",
        )),
        None => Err(ApiError::unauthorized()),
    }
}

fn order_id(text: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(text).ok_or_else(|| SaleError::UnknownOrder.into())
}

async fn run<S: Store + 'static>(api: &Api<S>, command: Command) -> Result<Response, ApiError> {
    match api.shard.call(command).await? {
        Outcome::Order { order, .. } => json(200, &order),
        _ => Err(SaleError::Unavailable.into()),
    }
}

/// `GET /v1/orders/{id}` (the buyer, the admin, or the payment service)
pub(super) async fn get<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    // The payment service may read any order, to learn the amount to charge.
    let requester = match api.principal(request) {
        Some(Principal::Payment) => Requester::Admin,
        _ => requester(api, request)?,
    };
    run(api, Command::GetOrder(order_id(id)?, requester)).await
}

/// `POST /v1/orders/{id}/cancel` (the buyer, or admin)
pub(super) async fn cancel<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    id: &str,
) -> Result<Response, ApiError> {
    let requester = requester(api, request)?;
    run(api, Command::Cancel(order_id(id)?, requester)).await
}
