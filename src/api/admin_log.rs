//! The audit trail of admin actions: one log line per admin request, with who made it, what it
//! was (route and the SKU, user or order it named), how it ended (status, error code) and the
//! request id, so an operator can tie a change to the request that made it.
//!
//! Changes (sale PUT, resume, block and unblock, an admin's cancel) are logged at info, reads
//! (order listings and exports, the blocklist) at debug. Attempts refused for a missing or
//! wrong token are logged too, as `who = "anonymous"` or `"shopper"`: a refused change is worth
//! auditing. A shopper's own cancel is not an admin action and is not logged here.

use super::{Api, Endpoint};
use crate::auth::Principal;
use crate::http::{Method, Request, RequestId};

/// Logs `request` if it is an admin action; `status` and `code` are its answer.
pub(super) fn record<S: crate::store::Store + 'static>(
    api: &Api<S>,
    endpoint: Endpoint<'_>,
    request: &Request<'_>,
    request_id: &RequestId<'_>,
    status: u16,
    code: Option<&'static str>,
) {
    let (target, change) = match (endpoint, request.method) {
        (Endpoint::Sale(sku), Method::Put) => (sku, true),
        (Endpoint::Resume(sku), Method::Post) => (sku, true),
        (Endpoint::Blocklist(user), Method::Put | Method::Delete) => (user, true),
        (Endpoint::Cancel(order), Method::Post) => (order, true),
        (Endpoint::SaleOrders(sku), Method::Get | Method::Head) => (sku, false),
        (Endpoint::BlocklistAll, Method::Get | Method::Head) => ("", false),
        _ => return,
    };
    let who = match api.principal(request) {
        Some(Principal::Admin) => "admin",
        Some(Principal::Shopper(_)) if matches!(endpoint, Endpoint::Cancel(_)) => return,
        Some(Principal::Shopper(_)) => "shopper",
        Some(Principal::Payment) => "payment",
        None => "anonymous",
    };
    let route = endpoint.route(request.method).label();
    let method = request.method;
    let error = code.unwrap_or("");
    if change {
        tracing::info!(
            request_id = request_id.as_str(),
            who,
            method = ?method,
            route,
            target,
            status,
            error,
            "admin action"
        );
    } else {
        tracing::debug!(
            request_id = request_id.as_str(),
            who,
            method = ?method,
            route,
            target,
            status,
            error,
            "admin read"
        );
    }
}
