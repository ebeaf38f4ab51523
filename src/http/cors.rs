//! Cross-origin resource sharing, so a shop's page on another origin can call the API from a
//! browser. Off unless origins are configured (`cors_origins`).
//!
//! The allowed origins are compared exactly with the `Origin` a browser sends (scheme, host and
//! port, as RFC 6454 serialises them). `*` allows any origin, and is answered as `*`: the API's
//! credentials travel in `Authorization`, which a browser sends cross-origin without cookie-style
//! credentials mode, so `*` is enough and no origin is echoed that nobody listed.

use std::sync::Arc;

/// Most origins a node accepts in its configuration (each is compared per request).
pub const MAX_ORIGINS: usize = 64;

/// Methods a preflight may ask for.
const ALLOW_METHODS: &str = "GET, HEAD, PUT, POST, DELETE";
/// Request headers a preflight may ask for: what the API reads.
const ALLOW_HEADERS: &str =
    "authorization, content-type, idempotency-key, x-request-id, x-seckill-pow, x-seckill-pass";
/// Response headers a page may read besides the CORS-safelisted ones.
const EXPOSE_HEADERS: &str = "x-request-id, x-seckill-shard, retry-after, date";
/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE_SECS: u32 = 600;

/// The configured origins, checked per request.
#[derive(Debug, Clone)]
pub enum Cors {
    /// Any origin, answered with this `*` (shared by every response).
    Any(Arc<str>),
    /// These origins only; none turns CORS off.
    Listed(Box<[Arc<str>]>),
}

impl Default for Cors {
    /// Off.
    fn default() -> Self {
        Self::Listed(Box::default())
    }
}

/// What a response tells a browser about cross-origin use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsHeaders {
    /// An actual request from an allowed origin: the origin to allow.
    Allow(Arc<str>),
    /// A preflight from an allowed origin: the origin, and what it may send.
    Preflight(Arc<str>),
}

/// Why a configured origin is refused at startup.
#[derive(Debug, thiserror::Error)]
#[error("`cors_origins`: {0}")]
pub struct CorsConfigError(String);

impl Cors {
    /// CORS for `origins` as configured: `*`, or `scheme://host[:port]` each.
    pub fn new(origins: &[String]) -> Result<Self, CorsConfigError> {
        if origins.len() > MAX_ORIGINS {
            return Err(CorsConfigError(format!(
                "at most {MAX_ORIGINS} origins, got {}",
                origins.len()
            )));
        }
        if origins.iter().any(|origin| origin == "*") {
            return Ok(Self::Any(Arc::from("*")));
        }
        let checked = origins
            .iter()
            .map(|origin| check_origin(origin).map(Arc::from))
            .collect::<Result<Vec<Arc<str>>, _>>()?;
        Ok(Self::Listed(checked.into_boxed_slice()))
    }

    /// The origin to allow for a request that sent `origin`, or `None` (no `Origin`, or one not
    /// allowed).
    pub fn allow(&self, origin: Option<&[u8]>) -> Option<Arc<str>> {
        let origin = origin?;
        match self {
            Self::Any(any) => Some(Arc::clone(any)),
            Self::Listed(allowed) => allowed
                .iter()
                .find(|allowed| allowed.as_bytes() == origin)
                .map(Arc::clone),
        }
    }
}

/// `origin` if it is an origin exactly as a browser serialises it in its `Origin` header:
/// `http` or `https`, a lower-case host, a port only when not the scheme's default, no path.
/// Matching is byte for byte, so a value a browser never sends (`HTTPS://Shop.example`,
/// `https://shop.example:443`, a trailing slash) would match nobody; it is refused at startup
/// instead, with the spelling that would match.
fn check_origin(origin: &str) -> Result<&str, CorsConfigError> {
    let refuse = |hint: String| {
        CorsConfigError(format!(
            "{origin:?} is not an origin as browsers send it: use scheme://host[:port] (no path \
             or trailing slash, the default port left out), or *{hint}"
        ))
    };
    let url = url::Url::parse(origin).map_err(|e| refuse(format!(" ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse(String::new()));
    }
    let serialised = url.origin().ascii_serialization();
    if serialised == origin {
        Ok(origin)
    } else {
        Err(refuse(format!("; did you mean {serialised:?}?")))
    }
}

impl CorsHeaders {
    /// Appends the header lines to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let (origin, preflight) = match self {
            Self::Allow(origin) => (origin, false),
            Self::Preflight(origin) => (origin, true),
        };
        out.extend_from_slice(b"access-control-allow-origin: ");
        out.extend_from_slice(origin.as_bytes());
        // Caches must not hand one origin's answer to another.
        out.extend_from_slice(b"\r\nvary: origin\r\n");
        if preflight {
            out.extend_from_slice(b"access-control-allow-methods: ");
            out.extend_from_slice(ALLOW_METHODS.as_bytes());
            out.extend_from_slice(b"\r\naccess-control-allow-headers: ");
            out.extend_from_slice(ALLOW_HEADERS.as_bytes());
            out.extend_from_slice(b"\r\naccess-control-max-age: ");
            out.extend_from_slice(itoa::Buffer::new().format(MAX_AGE_SECS).as_bytes());
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(b"access-control-expose-headers: ");
            out.extend_from_slice(EXPOSE_HEADERS.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_matched_exactly() {
        let cors = Cors::new(&[
            "https://shop.example".into(),
            "http://localhost:3000".into(),
        ])
        .expect("valid origins");
        assert_eq!(
            cors.allow(Some(b"https://shop.example")).as_deref(),
            Some("https://shop.example")
        );
        assert_eq!(cors.allow(Some(b"https://shop.example.evil")), None);
        assert_eq!(cors.allow(Some(b"http://shop.example")), None);
        assert_eq!(cors.allow(None), None);
        let any = Cors::new(&["*".into()]).expect("any");
        assert_eq!(any.allow(Some(b"https://x.example")).as_deref(), Some("*"));
        let none = Cors::new(&[]).expect("none");
        assert_eq!(none.allow(Some(b"https://shop.example")), None);
        for bad in [
            "shop.example",
            "https://shop.example/",
            "ftp://x",
            "https://",
            "https://a:99999",
            // Spellings a browser never sends, so they would match nobody.
            "HTTPS://Shop.example",
            "https://shop.example:443",
            "http://shop.example:80",
        ] {
            assert!(Cors::new(&[bad.into()]).is_err(), "{bad}");
        }
        for good in [
            "http://[::1]",
            "http://[::1]:8080",
            "http://127.0.0.1:3000",
            "https://xn--bcher-kva.example",
        ] {
            assert!(Cors::new(&[good.into()]).is_ok(), "{good}");
        }
    }
}
