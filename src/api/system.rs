//! Operational endpoints: liveness, readiness, metrics, the server's clock, and the blocklist.

use super::error::ApiError;
use super::Api;
use crate::http::{Request, Response};
use crate::metrics::exposition;
use crate::sale::command::Command;
use crate::sale::model::is_valid_id;
use crate::shard::Shard;
use crate::store::Store;

/// `GET /healthz`: the process answers.
pub(super) fn health() -> Result<Response, ApiError> {
    Ok(Response::json(200, &br#"{"status":"ok"}"#[..]))
}

/// `GET /v1/time`: the server's clock, for a page that counts down to a sale's start. Sale
/// times are this clock's; a shopper's device may be off by minutes. A page measures its offset
/// from this (and the round trip, halved) rather than trusting its own clock. Every response's
/// `Date` header carries the same clock to the second.
pub(super) fn time() -> Result<Response, ApiError> {
    let body = format!(r#"{{"now_ms":{}}}"#, crate::clock::now_ms());
    Ok(Response::json(200, body.into_bytes()))
}

/// `GET /readyz`: every shard serves and the node is not draining. With the order feed on, the
/// body notes the feed's state; a feed that lags (the broker is away) does not make the node
/// unready, because sales go on and the events wait in the durable outbox.
pub(super) fn ready<S: Store + 'static>(shard: &Shard<S>) -> Result<Response, ApiError> {
    // Every shard's store, as their ticks last saw them, and this shard's right now.
    if shard.node.is_ready(shard.count) && shard.store_healthy() {
        let Some(feed) = &shard.node.feed else {
            return Ok(Response::json(200, &br#"{"status":"ready"}"#[..]));
        };
        let stats = feed.stats();
        let body = format!(
            r#"{{"status":"ready","events":{{"broker":"{}","pending":{},"lag_ms":{}}}}}"#,
            if stats.connected {
                "connected"
            } else {
                "disconnected"
            },
            stats.pending,
            stats.lag_ms(crate::clock::now_ms()),
        );
        Ok(Response::json(200, body.into_bytes()))
    } else {
        Err(ApiError::new(
            503,
            "not_ready",
            "shards are starting, the node is draining, or the store is unreachable",
        ))
    }
}

/// `GET /metrics`: every shard's metrics, merged, in Prometheus text format.
pub(super) async fn metrics<S: Store + 'static>(api: &Api<S>) -> Result<Response, ApiError> {
    let _scrape = api.scrapes.start()?;
    let shards = api.shard.scrape().await;
    if shards.len() < api.shard.count {
        // Summing counters over fewer shards would look like a counter reset to Prometheus;
        // a failed scrape is the honest answer.
        let mut error = ApiError::new(
            503,
            "unavailable",
            format!(
                "only {} of {} shards answered the scrape",
                shards.len(),
                api.shard.count
            ),
        );
        error.retry_after_secs = Some(1);
        return Err(error);
    }
    let feed = api
        .shard
        .node
        .feed
        .as_ref()
        .map(crate::feed::FeedHandle::stats);
    let text = exposition::render(&shards, feed);
    Ok(Response::with_type(
        200,
        exposition::CONTENT_TYPE,
        text.into_bytes(),
    ))
}

/// `PUT|DELETE /v1/blocklist/{user_id}` (admin)
pub(super) async fn set_blocked<S: Store + 'static>(
    api: &Api<S>,
    request: &Request<'_>,
    user_id: &str,
    blocked: bool,
) -> Result<Response, ApiError> {
    api.admin(request)?;
    if !is_valid_id(user_id) {
        return Err(ApiError::bad_request(
            "`user_id` must be 1 to 64 characters from [A-Za-z0-9_-]",
        ));
    }
    api.shard
        .call(Command::SetBlocked(user_id.into(), blocked))
        .await?;
    Ok(Response::no_content())
}
