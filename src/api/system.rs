//! Operational endpoints: liveness, readiness, and the blocklist.

use super::error::ApiError;
use super::Api;
use crate::http::{Request, Response};
use crate::sale::command::Command;
use crate::sale::model::is_valid_id;
use crate::shard::Shard;
use crate::store::Store;

/// `GET /healthz`: the process answers.
pub(super) fn health() -> Result<Response, ApiError> {
    Ok(Response::json(200, &br#"{"status":"ok"}"#[..]))
}

/// `GET /readyz`: every shard serves and the node is not draining.
pub(super) fn ready<S: Store + 'static>(shard: &Shard<S>) -> Result<Response, ApiError> {
    if shard.node.is_ready(shard.count) {
        Ok(Response::json(200, &br#"{"status":"ready"}"#[..]))
    } else {
        Err(ApiError::new(
            503,
            "not_ready",
            "shards are starting or the node is draining",
        ))
    }
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
