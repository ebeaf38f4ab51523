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
    check_media_type(request)?;
    match crate::json::parse_value(request.body) {
        Ok(OwnedValue::Object(object)) => Ok(Fields { object: *object }),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object")),
        Err(error) => Err(not_json(&error)),
    }
}

/// Reads a JSON object body field by field from a tape, without building a value tree, for the
/// purchase path: `field` gets each name and value in order (so the last of a repeated name
/// wins, as in [`json_fields`]) and answers whether it knew the name. A field's own error comes
/// before any unknown field's, as with [`Fields::finish`]. An empty body has no fields.
pub fn for_each_field(
    request: &Request<'_>,
    mut field: impl FnMut(&str, simd_json::tape::Value<'_, '_>) -> Result<bool, ApiError>,
) -> Result<(), ApiError> {
    if request.body.is_empty() {
        return Ok(());
    }
    check_media_type(request)?;
    let walked = crate::json::with_tape(request.body, |value| {
        let Some(object) = value.as_object() else {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        };
        let mut unknown = None;
        for (name, value) in &object {
            if !field(name, value)? && unknown.is_none() {
                unknown = Some(unknown_field(name));
            }
        }
        unknown.map_or(Ok(()), Err)
    });
    match walked {
        Ok(read) => read,
        Err(error) => Err(not_json(&error)),
    }
}

/// The answer to a field value outside `range`.
pub fn out_of_range(name: &str, range: &RangeInclusive<u64>) -> ApiError {
    ApiError::bad_request(format!(
        "field `{name}` must be an integer from {} to {}",
        range.start(),
        range.end()
    ))
}

fn unknown_field(name: &str) -> ApiError {
    ApiError::bad_request(format!("unknown field `{name}`"))
}

fn not_json(error: &crate::json::JsonError) -> ApiError {
    ApiError::bad_request(format!("the body is not valid JSON: {error}"))
}

fn check_media_type(request: &Request<'_>) -> Result<(), ApiError> {
    match request.content_type {
        Some(content_type) if !is_json(content_type) => Err(ApiError::new(
            415,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        )),
        _ => Ok(()),
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
        number.map(Some).ok_or_else(|| out_of_range(name, &range))
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
            Some(unknown) => Err(unknown_field(unknown)),
            None => Ok(()),
        }
    }
}
