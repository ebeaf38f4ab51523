//! Parsing one request out of a connection's read buffer, with hard limits on every size.

use std::str;

/// Largest header section accepted; beyond it the answer is 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest body accepted; beyond it the answer is 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most header lines accepted; beyond it the answer is 431.
const MAX_HEADERS: usize = 64;

/// The methods the API uses; anything else is answered 405 by the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    /// GET
    #[default]
    Get,
    /// HEAD: served as GET, answered without the body.
    Head,
    /// PUT
    Put,
    /// POST
    Post,
    /// DELETE
    Delete,
    /// OPTIONS: a browser's CORS preflight.
    Options,
    /// Any other method.
    Other,
}

/// A parsed request borrowing the connection's buffer.
#[derive(Debug, Default)]
pub struct Request<'buf> {
    /// The method.
    pub method: Method,
    /// The path without the query string.
    pub path: &'buf str,
    /// The query string, without its `?`; empty when there is none.
    pub query: &'buf str,
    /// Whether the client wants the connection kept open after this response.
    pub keep_alive: bool,
    /// `Authorization` header value.
    pub authorization: Option<&'buf [u8]>,
    /// `Content-Type` header value.
    pub content_type: Option<&'buf [u8]>,
    /// `Idempotency-Key` header value.
    pub idempotency_key: Option<&'buf [u8]>,
    /// `X-Seckill-Pow` header value: a proof-of-work solution ([`crate::sale::pow`]).
    pub pow: Option<&'buf [u8]>,
    /// `X-Seckill-Pass` header value: a waiting-room pass ([`crate::sale::pass`]).
    pub pass: Option<&'buf [u8]>,
    /// `X-Request-Id` header value.
    pub request_id: Option<&'buf [u8]>,
    /// `Seckill-Signature` header value (the payment webhook's signature).
    pub signature: Option<&'buf [u8]>,
    /// `Origin` header value: a browser's cross-origin call ([`super::cors`]).
    pub origin: Option<&'buf [u8]>,
    /// Whether a `Content-Length` header was present.
    pub has_length: bool,
    /// Whether the client sent `Expect: 100-continue` and waits for `100 Continue` before
    /// sending its body.
    pub expect_continue: bool,
    /// The body (empty without `Content-Length`, and while [`Parsed::AwaitingBody`]).
    pub body: &'buf [u8],
}

/// Why the buffer does not hold a request that can be served. Each maps to a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed request line or headers (400).
    Malformed,
    /// Header section too large or too many headers (431).
    HeadersTooLarge,
    /// A body without a usable length, such as chunked encoding (411).
    LengthRequired,
    /// A body over [`MAX_BODY_BYTES`] (413).
    BodyTooLarge,
    /// An HTTP/1.1 request without a `Host` header, or any request with two (400, RFC 9112
    /// section 3.2).
    BadHost,
    /// Two `Authorization` headers: a proxy and this server might each pick a different one.
    DuplicateAuthorization,
    /// An `Expect` other than `100-continue` (417).
    ExpectationFailed,
}

/// The result of looking at the buffer.
#[derive(Debug)]
pub enum Parsed<'buf> {
    /// A whole request, and how many bytes of the buffer it used.
    Complete(Request<'buf>, usize),
    /// The head is complete but the body is not: the request (with an empty body) and the
    /// length the whole request will have. The connection decides whether to wait for the body.
    AwaitingBody(Request<'buf>, usize),
    /// More bytes of the head are needed.
    Partial,
}

/// Parses the request at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, ParseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let head_len = match head.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(ParseError::HeadersTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(ParseError::HeadersTooLarge),
        Err(_) => return Err(ParseError::Malformed),
    };
    if head_len > MAX_HEAD_BYTES {
        return Err(ParseError::HeadersTooLarge);
    }
    let method = match head.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("PUT") => Method::Put,
        Some("POST") => Method::Post,
        Some("DELETE") => Method::Delete,
        Some("OPTIONS") => Method::Options,
        _ => Method::Other,
    };
    let target = head.path.ok_or(ParseError::Malformed)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let http11 = head.version == Some(1);
    let mut request = Request {
        method,
        path,
        query,
        keep_alive: http11,
        ..Request::default()
    };
    let mut body_len = 0usize;
    let mut hosts = 0usize;
    for header in head.headers.iter() {
        let name = header.name;
        let value = header.value;
        if name.eq_ignore_ascii_case("content-length") {
            let len = parse_length(value).ok_or(ParseError::Malformed)?;
            if request.has_length && len != body_len {
                return Err(ParseError::Malformed);
            }
            request.has_length = true;
            body_len = len;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ParseError::LengthRequired);
        } else if name.eq_ignore_ascii_case("connection") {
            if has_token(value, b"close") {
                request.keep_alive = false;
            } else if has_token(value, b"keep-alive") {
                request.keep_alive = true;
            }
        } else if name.eq_ignore_ascii_case("host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case("authorization") {
            if request.authorization.replace(value).is_some() {
                return Err(ParseError::DuplicateAuthorization);
            }
        } else if name.eq_ignore_ascii_case("expect") && http11 {
            // HTTP/1.0 predates Expect; RFC 9110 section 10.1.1 says to ignore it there.
            if !value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                return Err(ParseError::ExpectationFailed);
            }
            request.expect_continue = true;
        } else if name.eq_ignore_ascii_case("content-type") {
            request.content_type = Some(value);
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            request.idempotency_key = Some(value);
        } else if name.eq_ignore_ascii_case("x-seckill-pow") {
            request.pow = Some(value);
        } else if name.eq_ignore_ascii_case("x-seckill-pass") {
            request.pass = Some(value);
        } else if name.eq_ignore_ascii_case("x-request-id") {
            request.request_id = Some(value);
        } else if name.eq_ignore_ascii_case("seckill-signature") {
            request.signature = Some(value);
        } else if name.eq_ignore_ascii_case("origin") {
            request.origin = Some(value);
        }
    }
    if hosts > 1 || (http11 && hosts == 0) {
        return Err(ParseError::BadHost);
    }
    if body_len > MAX_BODY_BYTES {
        return Err(ParseError::BodyTooLarge);
    }
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(Parsed::AwaitingBody(request, total));
    }
    request.body = &buf[head_len..total];
    Ok(Parsed::Complete(request, total))
}

fn parse_length(value: &[u8]) -> Option<usize> {
    let text = str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Anything too long to parse is certainly over the body limit.
    Some(text.parse::<usize>().unwrap_or(usize::MAX))
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match parse(buf) {
            Ok(Parsed::Complete(request, used)) => (request, used),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn parses_pipelined_requests_one_at_a_time() {
        let buf = b"POST /v1/x?y=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}GET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let (request, used) = complete(buf);
        assert_eq!(request.path, "/v1/x");
        assert_eq!(request.body, b"{}");
        assert!(!request.keep_alive);
        let (next, _) = complete(&buf[used..]);
        assert_eq!(next.method, Method::Get);
        assert!(next.keep_alive);
    }

    #[test]
    fn enforces_limits() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost: x"),
            Ok(Parsed::Partial)
        ));
        let head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
        let mut partial = head.to_vec();
        partial.push(b'{');
        match parse(&partial) {
            Ok(Parsed::AwaitingBody(request, total)) => {
                assert_eq!(total, head.len() + 3);
                assert!(request.body.is_empty());
            }
            other => panic!("expected a head awaiting its body, got {other:?}"),
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert_eq!(
            parse(big.as_bytes()).unwrap_err(),
            ParseError::HeadersTooLarge
        );
        let body = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 65537\r\n\r\n";
        assert_eq!(parse(body).unwrap_err(), ParseError::BodyTooLarge);
        let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(chunked).unwrap_err(), ParseError::LengthRequired);
        assert_eq!(
            parse(b"G@T / HTTP/1.1\r\n\r\n").unwrap_err(),
            ParseError::Malformed
        );
        let bad_len = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n";
        assert_eq!(parse(bad_len).unwrap_err(), ParseError::Malformed);
        let http10 = b"GET / HTTP/1.0\r\n\r\n";
        assert!(!complete(http10).0.keep_alive);
    }

    #[test]
    fn checks_host_authorization_and_expect() {
        let no_host = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(parse(no_host).unwrap_err(), ParseError::BadHost);
        let two_hosts = b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(parse(two_hosts).unwrap_err(), ParseError::BadHost);
        let two_auth = b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nauthorization: x\r\n\r\n";
        assert_eq!(
            parse(two_auth).unwrap_err(),
            ParseError::DuplicateAuthorization
        );
        let expect =
            b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
        assert!(matches!(
            parse(expect),
            Ok(Parsed::AwaitingBody(
                Request {
                    expect_continue: true,
                    ..
                },
                _
            ))
        ));
        let unknown = b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n";
        assert_eq!(parse(unknown).unwrap_err(), ParseError::ExpectationFailed);
        let http10 = b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
        assert!(matches!(
            parse(http10),
            Ok(Parsed::AwaitingBody(
                Request {
                    expect_continue: false,
                    ..
                },
                _
            ))
        ));
        let head = b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(complete(head).0.method, Method::Head);
    }
}
