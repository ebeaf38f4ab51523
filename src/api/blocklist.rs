//! `GET /v1/blocklist` (admin): the blocked users in id order, a page at a time.
//!
//! `?after=<user id>` starts after that user, `?limit=<n>` caps the page (1..=[`MAX_LIMIT`],
//! default [`DEFAULT_LIMIT`]); the body is `{"users": [...], "next": id}`, `next` absent on the
//! last page. It shares the per-shard limiter of `GET /v1/sales`. Every shard's edge holds the whole blocklist (in cluster mode, refreshed from Redis
//! each tick), so the shard that took the request answers alone.

use serde::Serialize;

use super::error::ApiError;
use super::query;
use super::sale_orders::require_admin;
use super::{json, Api};
use crate::http::{Request, Response};
use crate::store::Store;

/// Users on a page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most users on one page.
pub const MAX_LIMIT: usize = 1000;

#[derive(Serialize)]
struct Page<'a> {
    users: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<&'a str>,
}

/// `GET /v1/blocklist`
pub(super) fn list<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    require_admin(api, request)?;
    let (after, limit) = parse_query(request.query)?;
    let _page = api.pages.start()?;
    let edge = api.shard.edge.borrow();
    let mut users: Vec<&str> = edge
        .blocked_users()
        .filter(|user| after.is_none_or(|after| *user > after))
        .collect();
    // Only the page (and one more, to tell whether a next page exists) is sorted: linear in the
    // blocklist, not n log n.
    if users.len() > limit + 1 {
        users.select_nth_unstable(limit);
        users.truncate(limit + 1);
    }
    users.sort_unstable();
    let next = users.get(limit).and(users.get(limit - 1)).copied();
    users.truncate(limit);
    json(
        200,
        &Page {
            users: &users,
            next,
        },
    )
}

/// Parses `after` (a user id) and `limit` ([`super::query`]).
fn parse_query(query: &str) -> Result<(Option<&str>, usize), ApiError> {
    let [after, limit] = query::params(
        query,
        ["after", "limit"],
        "this listing takes `after` (a user id) and `limit`",
    )?;
    Ok((
        query::id("after", after, "a user id")?,
        query::limit(limit, MAX_LIMIT, DEFAULT_LIMIT)?,
    ))
}
