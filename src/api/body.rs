//! Reading JSON request bodies, and pulling typed, range-checked fields out of them with errors
//! that name the field. Parsing goes through [`crate::json`], which bounds nesting and refuses
//! control bytes before simd-json sees the body.

use std::ops::RangeInclusive;

use simd_json::prelude::*;
use simd_json::OwnedValue;

use super::error::ApiError;
use crate::http::Request;

/// The fields of a JSON object body, consumed one by one; whatever is left over is unknown.
#[derive(Debug, Default)]
pub struct Fields {
    object: simd_json::owned::Object,
}

/// Parses the body as a JSON object. An empty body is an empty object.
pub fn json_fields(request: &Request<'_>) -> Result<Fields, ApiError> {
    if request.body.is_empty() {
        return Ok(Fields::default());
    }
    if let Some(content_type) = request.content_type {
        if !is_json(content_type) {
            return Err(ApiError::new(
                415,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
    }
    match crate::json::parse_value(request.body) {
        Ok(OwnedValue::Object(object)) => Ok(Fields { object: *object }),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(error) => Err(ApiError::bad_request(format!(
            "the body is not valid JSON: {error}"
        ))),
    }
}

fn is_json(content_type: &[u8]) -> bool {
    let media_type = content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    media_type.eq_ignore_ascii_case(b"application/json")
}

impl Fields {
    /// An optional unsigned integer within `range`.
    pub fn u64(&mut self, name: &str, range: RangeInclusive<u64>) -> Result<Option<u64>, ApiError> {
        let Some(value) = self.object.remove(name) else {
            return Ok(None);
        };
        let number = value.as_u64().filter(|n| range.contains(n));
        match number {
            Some(number) => Ok(Some(number)),
            None => Err(ApiError::bad_request(format!(
                "field `{name}` must be an integer from {} to {}",
                range.start(),
                range.end()
            ))),
        }
    }

    /// A required unsigned integer within `range`.
    pub fn required_u64(
        &mut self,
        name: &str,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ApiError> {
        self.u64(name, range)?
            .ok_or_else(|| ApiError::bad_request(format!("field `{name}` is required")))
    }

    /// A required string of `len` characters.
    pub fn required_str(
        &mut self,
        name: &str,
        len: RangeInclusive<usize>,
    ) -> Result<String, ApiError> {
        let value = self.object.remove(name);
        let text = value.as_ref().and_then(|value| value.as_str());
        match text {
            Some(text) if len.contains(&text.chars().count()) => Ok(text.to_owned()),
            Some(_) => Err(ApiError::bad_request(format!(
                "field `{name}` must have {} to {} characters",
                len.start(),
                len.end()
            ))),
            None if value.is_none() => {
                Err(ApiError::bad_request(format!("field `{name}` is required")))
            }
            None => Err(ApiError::bad_request(format!(
                "field `{name}` must be a string"
            ))),
        }
    }

    /// An optional string of `len` characters.
    pub fn str(
        &mut self,
        name: &str,
        len: RangeInclusive<usize>,
    ) -> Result<Option<String>, ApiError> {
        if !self.object.contains_key(name) {
            return Ok(None);
        }
        self.required_str(name, len).map(Some)
    }

    /// Fails on the first field nobody asked for, so typos are not silently ignored.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.object.keys().next() {
            Some(unknown) => Err(ApiError::bad_request(format!("unknown field `{unknown}`"))),
            None => Ok(()),
        }
    }
}
