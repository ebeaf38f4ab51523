//! Composing responses straight into the connection's write buffer.

use std::borrow::Cow;

use super::RequestId;

/// A response ready to be written. Bodies are JSON (or empty for 204), except `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type` of the body.
    pub content_type: &'static str,
    /// The body; empty for 204.
    pub body: Cow<'static, [u8]>,
    /// `Retry-After` in seconds, for 429 and 503.
    pub retry_after_secs: Option<u64>,
    /// Close the connection after this response (protocol errors, overload, shutdown).
    pub close: bool,
    /// `Allow` header value, for 405.
    pub allow: Option<&'static str>,
    /// CORS headers, for a browser's call from an allowed origin.
    pub cors: Option<super::cors::CorsHeaders>,
    /// More header lines, each ending in CRLF: the shopper page's security and caching policy.
    pub extra_headers: &'static str,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, body: impl Into<Cow<'static, [u8]>>) -> Self {
        Self::with_type(status, "application/json", body)
    }

    /// A response with a body of the given type.
    pub fn with_type(
        status: u16,
        content_type: &'static str,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            retry_after_secs: None,
            close: false,
            allow: None,
            cors: None,
            extra_headers: "",
        }
    }

    /// An empty 204.
    pub fn no_content() -> Self {
        Self::json(204, &b""[..])
    }

    /// Marks the response as the last one on its connection.
    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    /// Appends the wire form to `out`. `shard_header` is the precomputed `x-seckill-shard` line.
    pub fn write_to(&self, out: &mut Vec<u8>, shard_header: &[u8], request_id: &RequestId<'_>) {
        self.write_head_to(out, shard_header, request_id);
        out.extend_from_slice(&self.body);
    }

    /// Appends the status line and headers only, `content-length` included: the answer to HEAD.
    pub fn write_head_to(
        &self,
        out: &mut Vec<u8>,
        shard_header: &[u8],
        request_id: &RequestId<'_>,
    ) {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(number.format(self.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        if self.status != 204 {
            out.extend_from_slice(b"content-type: ");
            out.extend_from_slice(self.content_type.as_bytes());
            out.extend_from_slice(b"\r\ncontent-length: ");
            out.extend_from_slice(number.format(self.body.len()).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        super::date::write_date_header(out, crate::clock::now_ms());
        out.extend_from_slice(shard_header);
        out.extend_from_slice(b"x-request-id: ");
        out.extend_from_slice(request_id.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(secs) = self.retry_after_secs {
            out.extend_from_slice(b"retry-after: ");
            out.extend_from_slice(number.format(secs).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(allow) = self.allow {
            out.extend_from_slice(b"allow: ");
            out.extend_from_slice(allow.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(cors) = &self.cors {
            cors.write_to(out);
        }
        out.extend_from_slice(self.extra_headers.as_bytes());
        if self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

impl Drop for Response {
    /// A body serialised for this response goes back to the thread's spares once written.
    fn drop(&mut self) {
        if let Cow::Owned(body) = std::mem::take(&mut self.body) {
            super::body_pool::give_back(body);
        }
    }
}

/// The interim answer to `Expect: 100-continue` once the head has been accepted.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        425 => "Too Early",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

/// The body of every error: `{"error": code, "message": text}`.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
}

impl Response {
    /// An error response with the standard JSON error body.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let body = simd_json::to_vec(&ErrorBody {
            error: code,
            message,
        })
        .unwrap_or_default();
        Self::json(status, body)
    }
}
