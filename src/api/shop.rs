//! The shopper page: `GET /shop/{sku}` and its three assets, built into the binary. The page
//! itself reads the SKU from its URL and calls the public API, so serving it needs no store
//! call; it is the same bytes for every sale.

use super::error::ApiError;
use crate::http::Response;
use crate::sale::model::is_valid_id;

const PAGE: &str = include_str!("shop/index.html");
const SCRIPT: &str = include_str!("shop/shop.js");
const WORKER: &str = include_str!("shop/pow-worker.js");
const STYLE: &str = include_str!("shop/shop.css");

/// The page's policy: everything from this origin only, no inline code, not framed by other
/// sites (a buy button under someone else's overlay), and no referrer that could carry the
/// fragment's token elsewhere.
const PAGE_HEADERS: &str = "content-security-policy: default-src 'none'; script-src 'self'; \
     worker-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
     x-content-type-options: nosniff\r\nreferrer-policy: no-referrer\r\n\
     cache-control: no-cache\r\n";

/// The assets change only with the binary; a browser revalidates them at most every 5 minutes.
const ASSET_HEADERS: &str = "x-content-type-options: nosniff\r\ncache-control: max-age=300\r\n";

/// `GET /shop/{sku}`
pub(super) fn page(sku: &str) -> Result<Response, ApiError> {
    if !is_valid_id(sku) {
        return Err(crate::sale::SaleError::UnknownSale.into());
    }
    let mut response = Response::with_type(200, "text/html; charset=utf-8", PAGE.as_bytes());
    response.extra_headers = PAGE_HEADERS;
    Ok(response)
}

/// `GET /shop/assets/{name}`
pub(super) fn asset(name: &str) -> Result<Response, ApiError> {
    const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
    let (content_type, body) = match name {
        "shop.js" => (JAVASCRIPT, SCRIPT),
        "pow-worker.js" => (JAVASCRIPT, WORKER),
        "shop.css" => ("text/css; charset=utf-8", STYLE),
        _ => return Err(ApiError::new(404, "not_found", "no such asset")),
    };
    let mut response = Response::with_type(200, content_type, body.as_bytes());
    response.extra_headers = ASSET_HEADERS;
    Ok(response)
}
