//! HTTP API v1: routing, authentication, and the handlers that turn requests into commands for
//! the shard runtime and outcomes into JSON.

mod admin_log;
mod blocklist;
pub mod body;
mod contract;
mod endpoint;
pub mod error;
mod limiter;
mod listing;
mod lottery;
mod my_orders;
mod orders;
mod payments;
mod pow;
mod query;
mod queue;
mod resume;
mod sale_admission;
mod sale_orders;
mod sales;
mod shop;
mod system;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use serde::Serialize;

use crate::auth::{Auth, Principal};
use crate::clock::elapsed_nanos;
use crate::http::cors::{Cors, CorsHeaders};
use crate::http::{Handler, Method, Request, RequestId, Response};
use crate::metrics::Route;
use crate::payment::SignatureError;
use crate::sale::model::Admission;
use crate::shard::Shard;
use crate::store::Store;
use endpoint::Endpoint;
use error::ApiError;
pub use sales::{parse_purchase, parse_sale};

/// The API as served by one shard.
pub struct Api<S> {
    shard: Rc<Shard<S>>,
    auth: Auth,
    /// When this shard last logged a failed request.
    last_warning: Cell<Option<Instant>>,
    /// Failed requests not logged since then.
    warnings_suppressed: Cell<u64>,
    /// Bounds `GET /metrics`, which makes every shard copy its metrics.
    scrapes: limiter::Limiter,
    /// Bounds `GET /v1/sales`, which reads up to a page of sales from their owners.
    pages: limiter::Limiter,
    /// Bounds `GET /v1/orders`, which reads a user's orders of up to a thousand sales.
    order_lists: limiter::Limiter,
    /// The origins a browser may call from.
    cors: Cors,
}

/// Metrics scrapes one shard runs at once, and starts per second.
const SCRAPES: (u32, f64) = (4, 20.0);
/// Sale pages one shard builds at once, and starts per second (bursts of a tenth of that).
const PAGES: (u32, f64) = (4, 100.0);
/// Order listings one shard builds at once, and starts per second.
const ORDER_LISTS: (u32, f64) = (4, 50.0);

impl<S: Store + 'static> Api<S> {
    /// The API for `shard`, checking callers with `auth`, open to browsers from `cors`' origins.
    pub fn new(shard: Rc<Shard<S>>, auth: Auth, cors: Cors) -> Self {
        Self {
            shard,
            auth,
            cors,
            last_warning: Cell::new(None),
            warnings_suppressed: Cell::new(0),
            scrapes: limiter::Limiter::new(
                "too_many_scrapes",
                "too many metrics scrapes on this shard; retry shortly",
                SCRAPES.0,
                SCRAPES.1,
            ),
            pages: limiter::Limiter::new(
                "too_many_pages",
                "too many sale listings on this shard; retry shortly",
                PAGES.0,
                PAGES.1,
            ),
            order_lists: limiter::Limiter::new(
                "too_many_order_lists",
                "too many order listings on this shard; retry shortly",
                ORDER_LISTS.0,
                ORDER_LISTS.1,
            ),
        }
    }

    fn principal<'r>(&self, request: &Request<'r>) -> Option<Principal<'r>> {
        self.auth
            .authenticate(request.authorization, crate::clock::now_ms() / 1000)
    }

    fn admin(&self, request: &Request<'_>) -> Result<(), ApiError> {
        match self.principal(request) {
            Some(Principal::Admin) => Ok(()),
            _ => Err(ApiError::unauthorized()),
        }
    }

    /// The shopper a shopper-only call is made by; `401` for anyone else, the admin included.
    fn shopper<'r>(&self, request: &Request<'r>) -> Result<&'r str, ApiError> {
        match self.principal(request) {
            Some(Principal::Shopper(user_id)) => Ok(user_id),
            _ => Err(ApiError::unauthorized()),
        }
    }

    async fn dispatch(
        &self,
        endpoint: Endpoint<'_>,
        request: &Request<'_>,
    ) -> Result<Response, ApiError> {
        // HEAD is GET without the body, which the connection leaves out.
        let method = match request.method {
            Method::Head => Method::Get,
            method => method,
        };
        let allow = endpoint.allow();
        if endpoint.is_preflight(method) {
            return self.preflight(request, allow);
        }
        match endpoint {
            Endpoint::Health => only(method, Method::Get, allow, system::health),
            Endpoint::Time => only(method, Method::Get, allow, system::time),
            Endpoint::OpenApi => only(method, Method::Get, allow, contract::openapi),
            Endpoint::ShopPage(sku) => only(method, Method::Get, allow, || shop::page(sku)),
            Endpoint::ShopAsset(name) => only(method, Method::Get, allow, || shop::asset(name)),
            Endpoint::Ready => only(method, Method::Get, allow, || system::ready(&self.shard)),
            Endpoint::Metrics => match method {
                Method::Get => system::metrics(self).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Sales => match method {
                Method::Get => listing::list(self, request).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Sale(sku) => match method {
                Method::Get => sales::get(self, sku).await,
                Method::Put => sales::upsert(self, request, sku).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Purchase(sku) => match method {
                Method::Post => sales::purchase(self, request, sku).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Pow(sku) => match method {
                Method::Get => pow::challenge(self, request, sku).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Queue(sku) => match method {
                Method::Post => queue::join(self, request, sku, Admission::WaitingRoom).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Ticket(sku, number) => match method {
                Method::Get => queue::ticket(self, request, sku, Some(number)).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Register(sku) => match method {
                Method::Post => queue::join(self, request, sku, Admission::Lottery).await,
                Method::Get => queue::ticket(self, request, sku, None).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Lottery(sku) => match method {
                Method::Get => lottery::record(self, sku).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Registrants(sku) => match method {
                Method::Get => lottery::list(self, request, sku).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Orders => match method {
                Method::Get => my_orders::list(self, request).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::SaleOrders(sku) => match method {
                Method::Get => sale_orders::list(self, request, sku).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::BlocklistAll => match method {
                Method::Get => blocklist::list(self, request),
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Resume(sku) => match method {
                Method::Post => resume::resume(self, request, sku).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Order(id) => match method {
                Method::Get => orders::get(self, request, id).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Pay(id) => match method {
                Method::Post => payments::pay(self, request, id).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Cancel(id) => match method {
                Method::Post => orders::cancel(self, request, id).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Webhook => match method {
                Method::Post => payments::webhook(self, request).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Blocklist(user_id) => match method {
                Method::Put => system::set_blocked(self, request, user_id, true).await,
                Method::Delete => system::set_blocked(self, request, user_id, false).await,
                _ => Err(not_allowed(allow)),
            },
            Endpoint::Unknown => Err(no_such_path()),
        }
    }
}

/// Who may send a request body to an endpoint; the body of any other request is never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyAccess {
    /// The admin token.
    Admin,
    /// A shopper token.
    Shopper,
    /// Either.
    Caller,
    /// The payment-service token.
    Payment,
}

impl<S: Store + 'static> Api<S> {
    /// `OPTIONS`: a browser asking whether a page from `Origin` may make a call. Without an
    /// `Origin` it is plain HTTP's OPTIONS, answered with `allow`, the methods the path takes.
    fn preflight(&self, request: &Request<'_>, allow: &'static str) -> Result<Response, ApiError> {
        let Some(origin) = request.origin else {
            let mut response = Response::no_content();
            response.allow = Some(allow);
            return Ok(response);
        };
        match self.cors.allow(Some(origin)) {
            Some(allowed) => {
                let mut response = Response::no_content();
                response.cors = Some(CorsHeaders::Preflight(allowed));
                Ok(response)
            }
            None => Err(ApiError::new(
                403,
                "origin_not_allowed",
                "this origin may not call the API from a browser (see cors_origins)",
            )),
        }
    }

    /// The CORS headers of an answer to `request`, if it came from an allowed origin.
    fn cors_allow(&self, request: &Request<'_>) -> Option<CorsHeaders> {
        self.cors.allow(request.origin).map(CorsHeaders::Allow)
    }

    /// Why the body of `request` must not be sent, if it must not: the same credential checks
    /// its handler makes first, done before the body is buffered.
    fn body_refusal(&self, endpoint: Endpoint<'_>, request: &Request<'_>) -> Option<ApiError> {
        let access = match (endpoint, request.method) {
            (Endpoint::Sale(_), Method::Put) => BodyAccess::Admin,
            (Endpoint::Resume(_), Method::Post) => BodyAccess::Admin,
            (Endpoint::Blocklist(_), Method::Put | Method::Delete) => BodyAccess::Admin,
            (Endpoint::Purchase(_), Method::Post) => BodyAccess::Shopper,
            (Endpoint::Queue(_) | Endpoint::Register(_), Method::Post) => BodyAccess::Shopper,
            (Endpoint::Pay(_), Method::Post) => BodyAccess::Payment,
            (Endpoint::Cancel(_), Method::Post) => BodyAccess::Caller,
            // The signature is checked once the body is in; only whether it can be is checked
            // here (the parser bounds the body's size).
            (Endpoint::Webhook, Method::Post) => {
                return match (self.auth.webhook(), request.signature) {
                    (None, _) => Some(payments::webhook_off()),
                    (Some(_), None) => Some(payments::bad_signature(SignatureError::Missing)),
                    (Some(_), Some(_)) => None,
                }
            }
            (Endpoint::Unknown, _) => return Some(no_such_path()),
            _ => {
                return Some(ApiError::new(
                    413,
                    "payload_too_large",
                    "this request takes no body",
                ))
            }
        };
        match (access, self.principal(request)) {
            (BodyAccess::Admin, Some(Principal::Admin))
            | (BodyAccess::Shopper, Some(Principal::Shopper(_)))
            | (BodyAccess::Caller, Some(Principal::Admin | Principal::Shopper(_)))
            | (BodyAccess::Payment, Some(Principal::Payment)) => None,
            // Shoppers and the admin are known but may not pay: the same 403 the handler gives.
            (BodyAccess::Payment, Some(_)) => Some(payments::not_the_payment_side()),
            (BodyAccess::Caller, Some(Principal::Payment)) => Some(ApiError::new(
                403,
                "forbidden",
                "the payment service may only confirm payments",
            )),
            _ => Some(ApiError::unauthorized()),
        }
    }
}

impl<S> Api<S> {
    /// Server-side failures are logged as warnings, at most one line per
    /// [`WARNING_INTERVAL`] with a count of those left out: when the store fails, every request
    /// fails, and the log must not grow with the crowd. Refusals (4xx) are the normal answer in a
    /// flash sale, so they are logged only at debug level.
    fn log_refusal(&self, error: &ApiError, route: Route, request_id: &RequestId<'_>) {
        if error.status < 500 {
            tracing::debug!(
                request_id = request_id.as_str(),
                route = route.label(),
                status = error.status,
                error = error.code,
                detail = %error.message,
                "request refused"
            );
            return;
        }
        let now = Instant::now();
        let due = self
            .last_warning
            .get()
            .is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL);
        if !due {
            self.warnings_suppressed
                .set(self.warnings_suppressed.get() + 1);
            return;
        }
        self.last_warning.set(Some(now));
        tracing::warn!(
            request_id = request_id.as_str(),
            route = route.label(),
            status = error.status,
            error = error.code,
            detail = %error.message,
            suppressed = self.warnings_suppressed.replace(0),
            "request failed"
        );
    }
}

/// Least time between two warnings for failed requests on one shard.
const WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl<S: Store + 'static> Handler for Api<S> {
    async fn handle(&self, request: &Request<'_>, request_id: &RequestId<'_>) -> Response {
        let started = Instant::now();
        let endpoint = Endpoint::of(request.path);
        let route = endpoint.route(request.method);
        let (mut response, code) = match self.dispatch(endpoint, request).await {
            Ok(response) => (response, None),
            Err(error) => {
                let code = error.code;
                self.log_refusal(&error, route, request_id);
                (error.into_response(), Some(code))
            }
        };
        if response.cors.is_none() {
            response.cors = self.cors_allow(request);
        }
        admin_log::record(self, endpoint, request, request_id, response.status, code);
        let metrics = &self.shard.metrics;
        if let (Route::Purchase, Some(code)) = (route, code) {
            // Successful purchases are recorded by the handler, which knows a replay from a sale.
            metrics.record_purchase(code);
        }
        metrics.record_request(route, response.status, elapsed_nanos(started));
        response
    }

    fn admit_body(
        &self,
        request: &Request<'_>,
        request_id: &RequestId<'_>,
    ) -> Result<(), Response> {
        let endpoint = Endpoint::of(request.path);
        let Some(error) = self.body_refusal(endpoint, request) else {
            return Ok(());
        };
        let route = endpoint.route(request.method);
        self.log_refusal(&error, route, request_id);
        admin_log::record(
            self,
            endpoint,
            request,
            request_id,
            error.status,
            Some(error.code),
        );
        let metrics = &self.shard.metrics;
        if route == Route::Purchase {
            metrics.record_purchase(error.code);
        }
        metrics.record_status(route, error.status);
        let mut response = error.into_response();
        // A browser reads a refusal only if it carries the CORS headers too.
        response.cors = self.cors_allow(request);
        Err(response)
    }

    fn rejected(&self, response: &Response, request_id: &RequestId<'_>) {
        tracing::debug!(
            request_id = request_id.as_str(),
            status = response.status,
            "request rejected before routing"
        );
        self.shard
            .metrics
            .record_status(Route::Malformed, response.status);
    }

    fn draining(&self) -> bool {
        self.shard
            .node
            .draining
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

fn only(
    method: Method,
    wanted: Method,
    allow: &'static str,
    handler: impl FnOnce() -> Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    if method == wanted {
        handler()
    } else {
        Err(not_allowed(allow))
    }
}

fn not_allowed(allow: &'static str) -> ApiError {
    ApiError::method_not_allowed(allow)
}

fn no_such_path() -> ApiError {
    ApiError::new(404, "not_found", "no such path")
}

/// A JSON response with a serialised body.
fn json<T: Serialize>(status: u16, value: &T) -> Result<Response, ApiError> {
    // Into a spare body: this runs for every purchase (see `body_pool`).
    let mut body = crate::http::body_pool::take();
    match simd_json::to_writer(&mut body, value) {
        Ok(()) => Ok(Response::json(status, body)),
        Err(_) => Err(ApiError::new(
            500,
            "internal",
            "could not encode the response",
        )),
    }
}
