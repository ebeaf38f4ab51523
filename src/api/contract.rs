//! The API's machine-readable contract: `openapi.yaml` at the repository's root, served as JSON.
//!
//! The YAML is the one source a person edits; `build.rs` turns it into JSON at compile time, so
//! a broken document fails the build instead of a request, and serving it costs one copy of a
//! static buffer.

use super::error::ApiError;
use crate::http::Response;

/// The document, as `build.rs` wrote it.
const OPENAPI_JSON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// `GET /openapi.json`: the OpenAPI 3.1 document describing every endpoint this server has.
pub(super) fn openapi() -> Result<Response, ApiError> {
    Ok(Response::json(200, OPENAPI_JSON))
}
