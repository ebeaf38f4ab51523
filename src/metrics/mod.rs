//! Metrics for operators: recorded per shard on the request path with no locks or atomics
//! ([`recorder`]), copied from every shard over the mesh only when `/metrics` is scraped, merged
//! on the scraping shard, and rendered as Prometheus text ([`exposition`]). Latencies use the
//! `histogram` crate ([`distribution`]).

pub mod distribution;
pub mod exposition;
pub mod recorder;

pub use distribution::{Distribution, DistributionSnapshot};
pub use recorder::{MessageKind, RequestSnapshot, ShardMetrics, WaitingRoomEvent};

use crate::store::StoreStats;

/// Where a request went, as the `route` label: one value per endpoint and method, plus the
/// requests that matched nothing. A fixed set, so the label's cardinality is bounded whatever
/// paths clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /healthz`
    Healthz,
    /// `GET /readyz`
    Readyz,
    /// `GET /metrics`
    Metrics,
    /// `GET /v1/sales`
    ListSales,
    /// `GET /v1/sales/{sku}`
    GetSale,
    /// `PUT /v1/sales/{sku}`
    PutSale,
    /// `POST /v1/sales/{sku}/purchase`
    Purchase,
    /// `POST /v1/sales/{sku}/resume`
    ResumeSale,
    /// `GET /v1/orders/{id}`
    GetOrder,
    /// `GET /v1/orders` (the caller's orders)
    ListOrders,
    /// `POST /v1/orders/{id}/pay`
    PayOrder,
    /// `POST /v1/orders/{id}/cancel`
    CancelOrder,
    /// `POST /v1/payments/webhook`
    PaymentWebhook,
    /// `PUT` or `DELETE /v1/blocklist/{user_id}`
    Blocklist,
    /// `GET /v1/sales/{sku}/orders` (admin)
    SaleOrders,
    /// `GET /v1/blocklist` (admin)
    ListBlocklist,
    /// `GET /v1/time`
    Time,
    /// `GET /openapi.json`
    OpenApi,
    /// `GET /v1/sales/{sku}/pow`: a proof-of-work challenge
    Pow,
    /// `POST /v1/sales/{sku}/queue`: join a waiting room
    JoinQueue,
    /// `GET /v1/sales/{sku}/queue/{ticket}`: where a ticket stands
    GetTicket,
    /// `POST /v1/sales/{sku}/register`: register for a lottery
    Register,
    /// `GET /v1/sales/{sku}/register`: a lottery registration and its result
    GetRegistration,
    /// `GET /v1/sales/{sku}/lottery`: a lottery's commitment, seed and counts
    Lottery,
    /// `GET /v1/sales/{sku}/lottery/registrants`: the drawn order
    Registrants,
    /// `GET /shop/{sku}`: the shopper page
    ShopPage,
    /// `GET /shop/assets/{name}`: the page's script, worker and style
    ShopAsset,
    /// `OPTIONS` on any endpoint: a browser's CORS preflight
    Preflight,
    /// A path no endpoint has.
    Unmatched,
    /// Bytes that did not parse as an acceptable HTTP request.
    Malformed,
}

impl Route {
    /// Every route, in index order.
    pub const ALL: [Route; 30] = [
        Route::Healthz,
        Route::Readyz,
        Route::Metrics,
        Route::ListSales,
        Route::GetSale,
        Route::PutSale,
        Route::Purchase,
        Route::ResumeSale,
        Route::GetOrder,
        Route::ListOrders,
        Route::PayOrder,
        Route::CancelOrder,
        Route::PaymentWebhook,
        Route::Blocklist,
        Route::SaleOrders,
        Route::ListBlocklist,
        Route::Time,
        Route::OpenApi,
        Route::Pow,
        Route::JoinQueue,
        Route::GetTicket,
        Route::Register,
        Route::GetRegistration,
        Route::Lottery,
        Route::Registrants,
        Route::ShopPage,
        Route::ShopAsset,
        Route::Preflight,
        Route::Unmatched,
        Route::Malformed,
    ];

    /// The `route` label value.
    pub fn label(self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::ListSales => "list_sales",
            Route::GetSale => "get_sale",
            Route::PutSale => "put_sale",
            Route::Purchase => "purchase",
            Route::ResumeSale => "resume_sale",
            Route::GetOrder => "get_order",
            Route::ListOrders => "list_orders",
            Route::PayOrder => "pay_order",
            Route::CancelOrder => "cancel_order",
            Route::PaymentWebhook => "payment_webhook",
            Route::Blocklist => "blocklist",
            Route::SaleOrders => "sale_orders",
            Route::ListBlocklist => "list_blocklist",
            Route::Time => "time",
            Route::OpenApi => "openapi",
            Route::Pow => "pow",
            Route::JoinQueue => "join_queue",
            Route::GetTicket => "get_ticket",
            Route::Register => "register",
            Route::GetRegistration => "get_registration",
            Route::Lottery => "lottery",
            Route::Registrants => "lottery_registrants",
            Route::ShopPage => "shop_page",
            Route::ShopAsset => "shop_asset",
            Route::Preflight => "preflight",
            Route::Unmatched => "unmatched",
            Route::Malformed => "malformed",
        }
    }
}

/// Adds `count` to `key`'s entry. Counts are kept as short lists of pairs: the keys (statuses,
/// outcome codes) are few, so a scan beats a map, and the list is cheap to copy to a scrape.
fn add_count<K: PartialEq + Copy>(counts: &mut Vec<(K, u64)>, key: K, count: u64) {
    match counts.iter_mut().find(|(k, _)| *k == key) {
        Some((_, total)) => *total += count,
        None => counts.push((key, count)),
    }
}

/// Everything one shard reports to a scrape.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    /// The reporting shard.
    pub shard: usize,
    /// Requests, outcomes and mesh traffic.
    pub requests: RequestSnapshot,
    /// Connections open on this shard.
    pub connections_open: u64,
    /// What the shard's store holds and how it performs.
    pub store: StoreStats,
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn route_indices_match_their_order() {
        for (index, route) in Route::ALL.iter().enumerate() {
            assert_eq!(*route as usize, index);
        }
    }
}
