//! The router: which endpoint a path names, the methods each takes, and its metrics label.

use crate::http::Method;
use crate::metrics::Route;

/// What a request path names, with its path parameters.
#[derive(Debug, Clone, Copy)]
pub(super) enum Endpoint<'a> {
    Health,
    Ready,
    Metrics,
    Sales,
    Sale(&'a str),
    Purchase(&'a str),
    Pow(&'a str),
    Queue(&'a str),
    Ticket(&'a str, &'a str),
    Register(&'a str),
    Lottery(&'a str),
    Registrants(&'a str),
    Orders,
    Resume(&'a str),
    SaleOrders(&'a str),
    BlocklistAll,
    Order(&'a str),
    Pay(&'a str),
    Cancel(&'a str),
    Webhook,
    Blocklist(&'a str),
    Time,
    OpenApi,
    ShopPage(&'a str),
    ShopAsset(&'a str),
    Unknown,
}

impl<'a> Endpoint<'a> {
    pub(super) fn of(path: &'a str) -> Self {
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut segments = [""; 5];
        let mut count = 0;
        for segment in path.split('/') {
            let Some(slot) = segments.get_mut(count) else {
                return Endpoint::Unknown;
            };
            *slot = segment;
            count += 1;
        }
        match segments[..count] {
            ["healthz"] => Endpoint::Health,
            ["readyz"] => Endpoint::Ready,
            ["metrics"] => Endpoint::Metrics,
            ["v1", "sales"] => Endpoint::Sales,
            ["v1", "sales", sku] => Endpoint::Sale(sku),
            ["v1", "sales", sku, "purchase"] => Endpoint::Purchase(sku),
            ["v1", "sales", sku, "pow"] => Endpoint::Pow(sku),
            ["v1", "sales", sku, "queue"] => Endpoint::Queue(sku),
            ["v1", "sales", sku, "queue", ticket] => Endpoint::Ticket(sku, ticket),
            ["v1", "sales", sku, "register"] => Endpoint::Register(sku),
            ["v1", "sales", sku, "lottery"] => Endpoint::Lottery(sku),
            ["v1", "sales", sku, "lottery", "registrants"] => Endpoint::Registrants(sku),
            ["v1", "orders"] => Endpoint::Orders,
            ["v1", "sales", sku, "resume"] => Endpoint::Resume(sku),
            ["v1", "sales", sku, "orders"] => Endpoint::SaleOrders(sku),
            ["v1", "blocklist"] => Endpoint::BlocklistAll,
            ["v1", "orders", id] => Endpoint::Order(id),
            ["v1", "orders", id, "pay"] => Endpoint::Pay(id),
            ["v1", "orders", id, "cancel"] => Endpoint::Cancel(id),
            ["v1", "payments", "webhook"] => Endpoint::Webhook,
            ["v1", "blocklist", user_id] => Endpoint::Blocklist(user_id),
            ["v1", "time"] => Endpoint::Time,
            ["openapi.json"] => Endpoint::OpenApi,
            ["shop", "assets", name] => Endpoint::ShopAsset(name),
            ["shop", sku] => Endpoint::ShopPage(sku),
            _ => Endpoint::Unknown,
        }
    }

    /// The methods this path takes, as `Allow` lists them for a `405` and for `OPTIONS`. HEAD
    /// goes wherever GET does, and OPTIONS is taken on every path that exists.
    pub(super) fn allow(self) -> &'static str {
        match self {
            Endpoint::Health
            | Endpoint::Ready
            | Endpoint::Metrics
            | Endpoint::Time
            | Endpoint::OpenApi
            | Endpoint::ShopPage(_)
            | Endpoint::ShopAsset(_)
            | Endpoint::Sales
            | Endpoint::Orders
            | Endpoint::SaleOrders(_)
            | Endpoint::Pow(_)
            | Endpoint::Ticket(..)
            | Endpoint::Lottery(_)
            | Endpoint::Registrants(_)
            | Endpoint::BlocklistAll
            | Endpoint::Order(_) => "GET, HEAD, OPTIONS",
            Endpoint::Sale(_) => "GET, HEAD, PUT, OPTIONS",
            Endpoint::Purchase(_)
            | Endpoint::Queue(_)
            | Endpoint::Resume(_)
            | Endpoint::Pay(_)
            | Endpoint::Cancel(_)
            | Endpoint::Webhook => "POST, OPTIONS",
            Endpoint::Blocklist(_) => "PUT, DELETE, OPTIONS",
            Endpoint::Register(_) => "GET, HEAD, POST, OPTIONS",
            Endpoint::Unknown => "",
        }
    }

    /// Whether `method` on this path is a browser's preflight (on a path that exists).
    pub(super) fn is_preflight(self, method: Method) -> bool {
        method == Method::Options && !matches!(self, Endpoint::Unknown)
    }

    /// The metrics label; a wrong method still counts under its path's route, but a browser's
    /// preflight is counted apart, not as a call of the endpoint it asks about.
    pub(super) fn route(self, method: Method) -> Route {
        if self.is_preflight(method) {
            return Route::Preflight;
        }
        match self {
            Endpoint::Health => Route::Healthz,
            Endpoint::Ready => Route::Readyz,
            Endpoint::Metrics => Route::Metrics,
            Endpoint::Sales => Route::ListSales,
            Endpoint::Sale(_) if method == Method::Put => Route::PutSale,
            Endpoint::Sale(_) => Route::GetSale,
            Endpoint::Purchase(_) => Route::Purchase,
            Endpoint::Pow(_) => Route::Pow,
            Endpoint::Queue(_) => Route::JoinQueue,
            Endpoint::Ticket(..) => Route::GetTicket,
            Endpoint::Register(_) if method == Method::Post => Route::Register,
            Endpoint::Register(_) => Route::GetRegistration,
            Endpoint::Lottery(_) => Route::Lottery,
            Endpoint::Registrants(_) => Route::Registrants,
            Endpoint::Orders => Route::ListOrders,
            Endpoint::Resume(_) => Route::ResumeSale,
            Endpoint::SaleOrders(_) => Route::SaleOrders,
            Endpoint::BlocklistAll => Route::ListBlocklist,
            Endpoint::Order(_) => Route::GetOrder,
            Endpoint::Pay(_) => Route::PayOrder,
            Endpoint::Cancel(_) => Route::CancelOrder,
            Endpoint::Webhook => Route::PaymentWebhook,
            Endpoint::Blocklist(_) => Route::Blocklist,
            Endpoint::Time => Route::Time,
            Endpoint::OpenApi => Route::OpenApi,
            Endpoint::ShopPage(_) => Route::ShopPage,
            Endpoint::ShopAsset(_) => Route::ShopAsset,
            Endpoint::Unknown => Route::Unmatched,
        }
    }
}
