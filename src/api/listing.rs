//! `GET /v1/sales`: the node's sales in SKU order, a page at a time.
//!
//! `?after=<sku>` starts after that SKU (it need not exist), `?limit=<n>` caps the page
//! (1..=[`MAX_LIMIT`], default [`DEFAULT_LIMIT`]). When more sales follow, the body carries
//! `next`, the SKU to pass as `after` for the following page; the last page has no `next`, so
//! that the answer for a node with few sales is the same `{"sales": [...]}` as before paging.
//! A page costs the same however many sales the node has: see
//! [`crate::shard::Shard::list_sales`].

use serde::Serialize;

use super::error::ApiError;
use super::query;
use super::{json, Api};
use crate::http::{Request, Response};
use crate::sale::SaleView;
use crate::store::Store;

/// Sales on a page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// Most sales on one page: bounds the work and the size of one answer.
pub const MAX_LIMIT: usize = 1000;

#[derive(Serialize)]
struct Page<'a> {
    sales: &'a [SaleView],
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<&'a str>,
}

/// What the query string asks for.
#[derive(Debug, PartialEq, Eq)]
struct PageQuery<'q> {
    after: Option<&'q str>,
    limit: usize,
}

/// `GET /v1/sales`
pub(super) async fn list<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
) -> Result<Response, ApiError> {
    let query = parse_query(request.query)?;
    let _page = api.pages.start()?;
    let page = api.shard.list_sales(query.after, query.limit).await?;
    json(
        200,
        &Page {
            sales: &page.sales,
            next: page.next.as_deref(),
        },
    )
}

/// Parses `after` and `limit` ([`super::query`]).
fn parse_query(query: &str) -> Result<PageQuery<'_>, ApiError> {
    let [after, limit] = query::params(
        query,
        ["after", "limit"],
        "`GET /v1/sales` takes `after` and `limit`",
    )?;
    Ok(PageQuery {
        // SKUs never need escaping, so neither does a cursor.
        after: query::id("after", after, "a SKU")?,
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
            Ok(PageQuery {
                after: None,
                limit: DEFAULT_LIMIT
            })
        );
        assert_eq!(
            ok("after=a-1&limit=1000&"),
            Ok(PageQuery {
                after: Some("a-1"),
                limit: 1000
            })
        );
        for bad in [
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=+5",
            "limit=",
            "limit=99999999999999999999999",
            "after=",
            "after=a%20b",
            "after=a&after=b",
            "limit=1&limit=1",
            "limit",
            "page=2",
        ] {
            let error = parse_query(bad).expect_err(bad);
            assert_eq!((error.status, error.code), (400, "invalid_query"), "{bad}");
        }
    }
}
