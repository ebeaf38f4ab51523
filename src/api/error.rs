//! API errors: a status, a stable code and a message, rendered as the standard error body.

use std::borrow::Cow;

use crate::http::Response;
use crate::sale::SaleError;

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Stable machine-readable code (`error` field).
    pub code: &'static str,
    /// Human-readable explanation (`message` field).
    pub message: Cow<'static, str>,
    /// `Retry-After`, in seconds.
    pub retry_after_secs: Option<u64>,
    /// `Allow`, for 405.
    pub allow: Option<&'static str>,
    /// A ready-made body, when the error is a domain refusal.
    pub body: Option<&'static [u8]>,
}

impl ApiError {
    /// An error with a fixed message.
    pub fn new(status: u16, code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            allow: None,
            body: None,
        }
    }

    /// 405 `method_not_allowed`, listing the methods the path takes.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        let mut error = Self::new(
            405,
            "method_not_allowed",
            format!("this path takes {allow}"),
        );
        error.allow = Some(allow);
        error
    }

    /// 400 `bad_request`; the message should name the offending field.
    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 400 `invalid_query`: a listing's query string is malformed.
    pub fn invalid_query(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, "invalid_query", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(401, "unauthorized", "a valid bearer token is required")
    }

    /// The response for this error.
    pub fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => Response::json(self.status, body),
            None => Response::error(self.status, self.code, &self.message),
        };
        response.retry_after_secs = self.retry_after_secs;
        response.allow = self.allow;
        response
    }
}

impl From<SaleError> for ApiError {
    fn from(error: SaleError) -> Self {
        let mut api_error = Self::new(error.status(), error.code(), error.message());
        api_error.body = Some(error.body());
        api_error
    }
}
