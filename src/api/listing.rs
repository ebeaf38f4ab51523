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
use super::{json, Api};
use crate::http::{Request, Response};
use crate::sale::model::is_valid_id;
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

/// Parses `after` and `limit`; anything else in the query, a repeated parameter or a bad value
/// is refused, so that a typo does not silently list the wrong page.
fn parse_query(query: &str) -> Result<PageQuery<'_>, ApiError> {
    let mut after = None;
    let mut limit = None;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(ApiError::invalid_query(
                "query parameters take a value: `after=<sku>`, `limit=<n>`",
            ));
        };
        match name {
            "after" if after.is_none() => {
                // SKUs never need escaping, so neither does a cursor.
                if !is_valid_id(value) {
                    return Err(ApiError::invalid_query(
                        "`after` must be a SKU: 1 to 64 characters from [A-Za-z0-9_-]",
                    ));
                }
                after = Some(value);
            }
            "limit" if limit.is_none() => {
                let parsed = value
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| value.parse::<usize>().ok())
                    .flatten()
                    .filter(|n| (1..=MAX_LIMIT).contains(n));
                let Some(parsed) = parsed else {
                    return Err(ApiError::invalid_query(format!(
                        "`limit` must be an integer from 1 to {MAX_LIMIT}"
                    )));
                };
                limit = Some(parsed);
            }
            "after" | "limit" => {
                return Err(ApiError::invalid_query(format!(
                    "`{name}` is given more than once"
                )));
            }
            _ => {
                return Err(ApiError::invalid_query(
                    "unknown query parameter; `GET /v1/sales` takes `after` and `limit`",
                ))
            }
        }
    }
    Ok(PageQuery {
        after,
        limit: limit.unwrap_or(DEFAULT_LIMIT),
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
