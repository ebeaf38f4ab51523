//! HTTP API v1: routing, authentication, and the handlers that turn requests into commands for
//! the shard runtime and outcomes into JSON.

pub mod body;
pub mod error;
mod orders;
mod sales;
mod system;

use std::rc::Rc;

use serde::Serialize;

use crate::auth::{Auth, Principal};
use crate::http::{Handler, Method, Request, Response};
use crate::shard::Shard;
use crate::store::Store;
use error::ApiError;

/// The API as served by one shard.
pub struct Api<S> {
    shard: Rc<Shard<S>>,
    auth: Auth,
}

impl<S: Store + 'static> Api<S> {
    /// The API for `shard`, checking callers with `auth`.
    pub fn new(shard: Rc<Shard<S>>, auth: Auth) -> Self {
        Self { shard, auth }
    }

    fn principal(&self, request: &Request<'_>) -> Option<Principal> {
        self.auth
            .authenticate(request.authorization, crate::clock::now_ms() / 1000)
    }

    fn admin(&self, request: &Request<'_>) -> Result<(), ApiError> {
        match self.principal(request) {
            Some(Principal::Admin) => Ok(()),
            _ => Err(ApiError::unauthorized()),
        }
    }

    async fn route(&self, request: &Request<'_>) -> Result<Response, ApiError> {
        let path = request.path.strip_prefix('/').unwrap_or(request.path);
        let mut segments = [""; 5];
        let mut count = 0;
        for segment in path.split('/') {
            let slot = segments.get_mut(count).ok_or_else(no_such_path)?;
            *slot = segment;
            count += 1;
        }
        let method = request.method;
        match &segments[..count] {
            ["healthz"] => only(method, Method::Get, system::health),
            ["readyz"] => only(method, Method::Get, || system::ready(&self.shard)),
            ["v1", "sales"] => match method {
                Method::Get => sales::list(self).await,
                _ => Err(not_allowed("GET")),
            },
            ["v1", "sales", sku] => match method {
                Method::Get => sales::get(self, sku).await,
                Method::Put => sales::upsert(self, request, sku).await,
                _ => Err(not_allowed("GET, PUT")),
            },
            ["v1", "sales", sku, "purchase"] => match method {
                Method::Post => sales::purchase(self, request, sku).await,
                _ => Err(not_allowed("POST")),
            },
            ["v1", "orders", id] => match method {
                Method::Get => orders::get(self, request, id).await,
                _ => Err(not_allowed("GET")),
            },
            ["v1", "orders", id, "pay"] => match method {
                Method::Post => orders::pay(self, request, id).await,
                _ => Err(not_allowed("POST")),
            },
            ["v1", "orders", id, "cancel"] => match method {
                Method::Post => orders::cancel(self, request, id).await,
                _ => Err(not_allowed("POST")),
            },
            ["v1", "blocklist", user_id] => match method {
                Method::Put => system::set_blocked(self, request, user_id, true).await,
                Method::Delete => system::set_blocked(self, request, user_id, false).await,
                _ => Err(not_allowed("PUT, DELETE")),
            },
            _ => Err(no_such_path()),
        }
    }
}

impl<S: Store + 'static> Handler for Api<S> {
    async fn handle(&self, request: &Request<'_>) -> Response {
        match self.route(request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        }
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
    handler: impl FnOnce() -> Result<Response, ApiError>,
) -> Result<Response, ApiError> {
    if method == wanted {
        handler()
    } else {
        Err(not_allowed("GET"))
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
    simd_json::to_vec(value)
        .map(|body| Response::json(status, body))
        .map_err(|_| ApiError::new(500, "internal", "could not encode the response"))
}
