//! `GET /v1/orders`: the caller's own orders, newest first, so that a shopper who lost an order
//! id (a `503` whose order was created anyway, a crashed app) can find it.
//!
//! - A shopper token lists that shopper's orders. `?limit=<n>` caps the list (1..=[`MAX_LIMIT`],
//!   default [`DEFAULT_LIMIT`]).
//! - The admin has no orders of its own: it must name the user, `?user=<id>` (for support);
//!   without it the answer is `400 user_required`. A shopper may name only themselves
//!   (`403 forbidden` otherwise).
//! - Orders of every sale are included, up to the bounds of [`crate::shard::orders`]. When some
//!   sales could not be read (their store is down), the body says `"incomplete": true`; when
//!   none could, the answer is `503 unavailable`.
//! - Each shard admits a bounded number of listings ([`super::limiter`]): beyond that,
//!   `429 too_many_order_lists`.

use serde::Serialize;

use super::error::ApiError;
use super::query;
use super::{json, Api};
use crate::auth::Principal;
use crate::http::{Request, Response};
use crate::sale::Order;
use crate::store::Store;

/// Orders listed when the request does not say.
pub const DEFAULT_LIMIT: usize = 20;
/// Most orders one answer lists.
pub const MAX_LIMIT: usize = 100;

#[derive(Serialize)]
struct Listing<'a> {
    orders: &'a [Order],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    incomplete: bool,
}

/// What the query string asks for.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery<'q> {
    user: Option<&'q str>,
    limit: usize,
}

/// `GET /v1/orders`
pub(super) async fn list<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    let principal = api.principal(request).ok_or_else(ApiError::unauthorized)?;
    let query = parse_query(request.query)?;
    let user = match (&principal, query.user) {
        (Principal::Shopper(me), None) => &**me,
        (Principal::Shopper(me), Some(named)) if **me == *named => named,
        (Principal::Shopper(_), Some(_)) => {
            return Err(ApiError::new(
                403,
                "forbidden",
                "a shopper can list only their own orders",
            ))
        }
        (Principal::Payment, _) => {
            return Err(ApiError::new(
                403,
                "forbidden",
                "the payment service may only confirm payments",
            ))
        }
        (Principal::Admin, Some(named)) => named,
        (Principal::Admin, None) => {
            return Err(ApiError::new(
                400,
                "user_required",
                "the admin has no orders of its own; name the user: `?user=<id>`",
            ))
        }
    };
    let _listing = api.order_lists.start()?;
    let page = api.shard.list_orders(user, query.limit).await?;
    json(
        200,
        &Listing {
            orders: &page.orders,
            incomplete: page.incomplete,
        },
    )
}

/// Parses `limit` and `user` ([`super::query`]).
fn parse_query(query: &str) -> Result<ListQuery<'_>, ApiError> {
    let [user, limit] = query::params(
        query,
        ["user", "limit"],
        "`GET /v1/orders` takes `limit` (and `user` for the admin)",
    )?;
    Ok(ListQuery {
        user: query::id("user", user, "a user id")?,
        limit: query::limit(limit, MAX_LIMIT, DEFAULT_LIMIT)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_checked() {
        let ok = |q| parse_query(q).map_err(|e| e.message.into_owned());
        assert_eq!(
            ok(""),
            Ok(ListQuery {
                user: None,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(
            ok("user=u-1&limit=100&"),
            Ok(ListQuery {
                user: Some("u-1"),
                limit: 100
            })
        );
        for bad in [
            "limit=0",
            "limit=101",
            "limit=-1",
            "limit=+5",
            "limit=",
            "limit=99999999999999999999999",
            "user=",
            "user=a%20b",
            "user=a&user=b",
            "limit=1&limit=1",
            "limit",
            "after=x",
        ] {
            let error = parse_query(bad).expect_err(bad);
            assert_eq!((error.status, error.code), (400, "invalid_query"), "{bad}");
        }
    }
}
