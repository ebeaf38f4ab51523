//! `GET /v1/sales/{sku}/orders` (admin): a SKU's orders in id order, a page at a time, for
//! fulfilment and `seckill orders export`.
//!
//! `?status=` keeps one status (`pending`, `paid`, `cancelled`, `expired`), `?after=<order id>`
//! starts after that order (the `next` of the previous page), `?limit=<n>` caps the page
//! (1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]). The body is `{"orders": [...], "next": id}`,
//! `next` absent on the last page. Ids are time-ordered, so a cursor stays valid while orders
//! arrive. The SKU's owner answers from its index ([`crate::sale::sale_orders`]); a page looks
//! at a bounded number of orders, so a rare status may give short pages that still carry `next`.

use serde::Serialize;

use super::error::ApiError;
use super::query;
use super::{json, Api};
use crate::auth::Principal;
use crate::http::{Request, Response};
use crate::sale::command::{Command, Outcome, SaleOrdersQuery};
use crate::sale::ids::OrderId;
use crate::sale::model::is_valid_id;
use crate::sale::{Order, OrderStatus, SaleError};
use crate::store::Store;

/// Orders on a page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most orders on one page.
pub const MAX_LIMIT: usize = 1000;

#[derive(Serialize)]
struct Page<'a> {
    orders: &'a [Order],
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// 401 without a token, 403 for a shopper: admin-only reads.
pub(super) fn require_admin<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
) -> Result<(), ApiError> {
    match api.principal(request) {
        Some(Principal::Admin) => Ok(()),
        Some(Principal::Shopper(_) | Principal::Payment) => Err(ApiError::new(
            403,
            "forbidden",
            "this listing is for the admin only",
        )),
        None => Err(ApiError::unauthorized()),
    }
}

/// `GET /v1/sales/{sku}/orders`
pub(super) async fn list<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    sku: &str,
) -> Result<Response, ApiError> {
    require_admin(api, request)?;
    if !is_valid_id(sku) {
        return Err(SaleError::UnknownSale.into());
    }
    let query = parse_query(sku, request.query)?;
    let _page = api.pages.start()?;
    match api.shard.call(Command::ListSaleOrders(query)).await? {
        Outcome::OrderPage { orders, next } => json(
            200,
            &Page {
                orders: &orders,
                next: next.map(|id| id.to_string()),
            },
        ),
        _ => Err(SaleError::Unavailable.into()),
    }
}

/// Parses `status`, `after` and `limit` ([`super::query`]).
fn parse_query(sku: &str, query: &str) -> Result<SaleOrdersQuery, ApiError> {
    let [status, after, limit] = query::params(
        query,
        ["status", "after", "limit"],
        "this listing takes `status`, `after` and `limit`",
    )?;
    let status = match status {
        None => None,
        Some(value) => Some(
            OrderStatus::ALL
                .into_iter()
                .find(|status| status.label() == value)
                .ok_or_else(|| {
                    ApiError::invalid_query(
                        "`status` must be one of pending, paid, cancelled, expired",
                    )
                })?,
        ),
    };
    let after = match after {
        None => None,
        Some(value) => Some(
            OrderId::parse(value)
                .filter(|id| *id.sku == *sku)
                .ok_or_else(|| {
                    ApiError::invalid_query("`after` must be an order id of this sale")
                })?,
        ),
    };
    Ok(SaleOrdersQuery {
        sku: sku.into(),
        status,
        after,
        limit: query::limit(limit, MAX_LIMIT, DEFAULT_LIMIT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        let query = parse_query("s", "").expect("empty");
        assert_eq!((query.status, query.after, query.limit), (None, None, 100));
        let id = "01M8XW0C22K5BTK4Z44HMVY9TD.s";
        let query = parse_query("s", &format!("status=paid&after={id}&limit=1000")).expect("ok");
        assert_eq!(query.status, Some(OrderStatus::Paid));
        assert_eq!(query.after.map(|id| id.to_string()).as_deref(), Some(id));
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=",
            "status=gone",
            "status=paid&status=paid",
            "after=nope",
            "after=01M8XW0C22K5BTK4Z44HMVY9TD.other",
            "page=2",
            "limit",
        ] {
            let error = parse_query("s", bad).expect_err(bad);
            assert_eq!((error.status, error.code), (400, "invalid_query"), "{bad}");
        }
    }
}
