//! What a load run should do ([`LoadOptions`]), its validation, and the targets it resolves to.
//!
//! Everything is checked before the first connection is opened: a refused run sends nothing.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use url::Url;

use super::error::LoadError;
use crate::cli::LoadArgs;
use crate::sale::model::is_valid_id;

/// Highest accepted `--rate`, in requests per second.
pub const MAX_RATE: f64 = 10_000_000.0;
/// Longest accepted `--duration`.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Most accepted `--connections`.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Most accepted `--threads`.
pub const MAX_THREADS: usize = 64;
/// Most accepted `--users` (every shopper's token is minted and kept in memory up front).
pub const MAX_USERS: u64 = 1_000_000;
/// Longest accepted `--timeout-ms`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// A load run's settings. Build one directly (start from [`Default`]) or from the command line
/// with `From<LoadArgs>`; [`super::run`] validates it before doing anything.
#[derive(Clone)]
pub struct LoadOptions {
    /// Base URLs of the servers (`http://` only); connections are spread over them round-robin.
    pub urls: Vec<String>,
    /// Target arrival rate in requests per second, over all threads.
    pub rate: f64,
    /// How long arrivals are scheduled for.
    pub duration: Duration,
    /// Open connections, in total.
    pub connections: usize,
    /// Distinct shoppers; each arrival picks one uniformly at random.
    pub users: u64,
    /// Shopper ids are this prefix followed by the user's number (`load-user-0`, ...).
    pub user_prefix: String,
    /// The SKU to buy.
    pub sku: String,
    /// The server's shopper-token secret, used to mint every shopper's token.
    pub token_secret: String,
    /// Units per purchase.
    pub quantity: u64,
    /// glommio executors (OS threads), each taking an equal share of the rate.
    pub threads: usize,
    /// Deadline of each request (and of each connection attempt), from the moment it is sent.
    pub timeout: Duration,
    /// Allow targets that resolve to non-loopback addresses.
    pub allow_remote: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            urls: vec!["http://127.0.0.1:8080".to_owned()],
            rate: 1_000.0,
            duration: Duration::from_secs(10),
            connections: 16,
            users: 10_000,
            user_prefix: "load-user-".to_owned(),
            sku: String::new(),
            token_secret: String::new(),
            quantity: 1,
            threads: 1,
            timeout: Duration::from_secs(5),
            allow_remote: false,
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("urls", &self.urls)
            .field("rate", &self.rate)
            .field("duration", &self.duration)
            .field("connections", &self.connections)
            .field("users", &self.users)
            .field("user_prefix", &self.user_prefix)
            .field("sku", &self.sku)
            .field("token_secret", &"<redacted>")
            .field("quantity", &self.quantity)
            .field("threads", &self.threads)
            .field("timeout", &self.timeout)
            .field("allow_remote", &self.allow_remote)
            .finish()
    }
}

impl From<LoadArgs> for LoadOptions {
    fn from(args: LoadArgs) -> Self {
        Self {
            urls: args.urls,
            rate: args.rate,
            duration: args.duration,
            connections: args.connections,
            users: args.users,
            user_prefix: args.user_prefix,
            sku: args.sku,
            token_secret: args.token_secret,
            quantity: args.quantity,
            threads: args.threads,
            timeout: Duration::from_millis(args.timeout_ms),
            allow_remote: args.allow_remote,
        }
    }
}

/// One server to send load to, resolved and checked.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL as given.
    pub url: String,
    /// Every address the host resolved to, tried in order when connecting.
    pub addrs: Vec<SocketAddr>,
    /// The request up to and including `Authorization: Bearer `; the token, a blank line and
    /// the body follow.
    pub request_head: Box<[u8]>,
    /// The whole `GET` of the sale, sent once before the run ([`super::preflight`]).
    pub sale_request: Box<[u8]>,
}

impl LoadOptions {
    /// Checks every setting and resolves the targets, without opening any connection.
    pub(crate) fn validate(&self) -> Result<Vec<Target>, LoadError> {
        if !self.rate.is_finite() || self.rate <= 0.0 || self.rate > MAX_RATE {
            return Err(LoadError::invalid(
                "--rate",
                format!(
                    "must be a number of requests per second above 0 and at most {MAX_RATE}, got {}",
                    self.rate
                ),
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(LoadError::invalid(
                "--duration",
                format!("must be above 0 and at most 24h, got {:?}", self.duration),
            ));
        }
        if !(1..=MAX_THREADS).contains(&self.threads) {
            return Err(LoadError::invalid(
                "--threads",
                format!("must be 1 to {MAX_THREADS}, got {}", self.threads),
            ));
        }
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(LoadError::invalid(
                "--connections",
                format!("must be 1 to {MAX_CONNECTIONS}, got {}", self.connections),
            ));
        }
        if self.connections < self.threads {
            return Err(LoadError::invalid(
                "--connections",
                format!(
                    "must be at least --threads ({}), got {}",
                    self.threads, self.connections
                ),
            ));
        }
        if !(1..=MAX_USERS).contains(&self.users) {
            return Err(LoadError::invalid(
                "--users",
                format!("must be 1 to {MAX_USERS}, got {}", self.users),
            ));
        }
        // Ids only grow with the number, so the last one is the longest.
        let last_user = user_id(&self.user_prefix, self.users - 1);
        if !is_valid_id(&last_user) {
            return Err(LoadError::invalid(
                "--user-prefix",
                format!(
                    "user ids such as `{last_user}` must be 1 to 64 characters from [A-Za-z0-9_-]"
                ),
            ));
        }
        if !is_valid_id(&self.sku) {
            return Err(LoadError::invalid(
                "--sku",
                format!(
                    "must be 1 to 64 characters from [A-Za-z0-9_-], got `{}`",
                    self.sku
                ),
            ));
        }
        if self.token_secret.is_empty() {
            return Err(LoadError::invalid(
                "--token-secret",
                "must not be empty (also read from SECKILL_TOKEN_SECRET)",
            ));
        }
        if !(1..=u64::from(u32::MAX)).contains(&self.quantity) {
            return Err(LoadError::invalid(
                "--quantity",
                format!("must be 1 to {}, got {}", u32::MAX, self.quantity),
            ));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(LoadError::invalid(
                "--timeout-ms",
                format!(
                    "must be 1 to {}, got {}",
                    MAX_TIMEOUT.as_millis(),
                    self.timeout.as_millis()
                ),
            ));
        }
        if self.urls.is_empty() {
            return Err(LoadError::invalid("--url", "at least one is required"));
        }
        let parsed = self
            .urls
            .iter()
            .map(|url| parse_url(url))
            .collect::<Result<Vec<_>, _>>()?;
        parsed
            .into_iter()
            .zip(&self.urls)
            .map(|(url, given)| self.resolve(given, &url))
            .collect()
    }

    fn resolve(&self, given: &str, url: &Url) -> Result<Target, LoadError> {
        let addrs = url
            .socket_addrs(|| Some(80))
            .map_err(|source| LoadError::Resolve {
                url: given.to_owned(),
                source,
            })?;
        if addrs.is_empty() {
            return Err(LoadError::Resolve {
                url: given.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            });
        }
        if !self.allow_remote {
            if let Some(remote) = addrs.iter().find(|addr| !is_loopback(addr.ip())) {
                return Err(LoadError::Remote {
                    url: given.to_owned(),
                    addr: remote.ip(),
                });
            }
        }
        Ok(Target {
            url: given.to_owned(),
            addrs,
            request_head: request_head(url, &self.sku, self.quantity),
            sale_request: sale_request(url, &self.sku),
        })
    }

    /// The body of every purchase request.
    pub(crate) fn body(&self) -> Vec<u8> {
        purchase_body(self.quantity).into_bytes()
    }
}

fn purchase_body(quantity: u64) -> String {
    format!("{{\"quantity\":{quantity}}}")
}

/// The id of shopper number `n`.
pub(crate) fn user_id(prefix: &str, n: u64) -> String {
    let mut number = itoa::Buffer::new();
    let mut id = String::with_capacity(prefix.len() + 20);
    id.push_str(prefix);
    id.push_str(number.format(n));
    id
}

/// Whether `ip` is a loopback address (127.0.0.0/8, ::1, or an IPv4-mapped loopback).
pub(crate) fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Parses and checks one `--url`: `http://host[:port][/base-path]`, nothing else.
fn parse_url(given: &str) -> Result<Url, LoadError> {
    let bad = |why: &str| LoadError::invalid("--url", format!("`{given}`: {why}"));
    let url = Url::parse(given).map_err(|error| bad(&format!("not a valid URL ({error})")))?;
    if url.scheme() != "http" {
        return Err(bad(&format!(
            "only http:// URLs are supported, not {}://",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not supported"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or a fragment"));
    }
    Ok(url)
}

/// The path before `/v1` and the `Host` header's value of requests to `url`.
fn base_and_host(url: &Url) -> (&str, String) {
    let base = url.path().trim_end_matches('/');
    let host = url.host_str().unwrap_or_default();
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    (base, host)
}

/// The request that reads the sale at `url`.
fn sale_request(url: &Url, sku: &str) -> Box<[u8]> {
    let (base, host) = base_and_host(url);
    format!("GET {base}/v1/sales/{sku} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        .into_bytes()
        .into_boxed_slice()
}

/// The fixed start of every purchase request sent to `url`.
fn request_head(url: &Url, sku: &str, quantity: u64) -> Box<[u8]> {
    let (base, host) = base_and_host(url);
    let body_len = purchase_body(quantity).len();
    format!(
        "POST {base}/v1/sales/{sku}/purchase HTTP/1.1\r\n\
         Host: {host}\r\n\
         Content-Type: application/json\r\n\
         Content-Length: {body_len}\r\n\
         Authorization: Bearer "
    )
    .into_bytes()
    .into_boxed_slice()
}

/// Parses a duration: whole or decimal seconds (`10`, `2.5`) or a number with a unit
/// (`500ms`, `10s`, `2m`). Used as the `--duration` value parser.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`; use seconds (`10`, `10s`), `500ms` or `2m`"
            ))
        }
    };
    let value: f64 = number.parse().map_err(|_| {
        format!("`{text}` is not a duration; use e.g. `10`, `10s`, `500ms` or `2m`")
    })?;
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("`{text}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(url: &str) -> LoadOptions {
        LoadOptions {
            urls: vec![url.to_owned()],
            sku: "sku-1".to_owned(),
            token_secret: "secret".to_owned(),
            ..LoadOptions::default()
        }
    }

    fn flag_of(result: Result<Vec<Target>, LoadError>) -> &'static str {
        match result {
            Err(LoadError::Invalid { flag, .. }) => flag,
            other => panic!("expected an invalid-option error, got {other:?}"),
        }
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn loopback_targets_resolve_and_remote_ones_are_refused() {
        let targets = options("http://127.0.0.1:9000").validate().expect("valid");
        assert_eq!(
            targets[0].addrs,
            vec!["127.0.0.1:9000".parse().expect("addr")]
        );
        let head = String::from_utf8(targets[0].request_head.to_vec()).expect("utf8");
        assert!(
            head.starts_with("POST /v1/sales/sku-1/purchase HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n")
        );
        assert!(head.contains("Content-Length: 14\r\n"), "{head}");
        assert!(options("http://[::1]:9000/").validate().is_ok());
        let based = options("http://127.0.0.1:9000/shop/")
            .validate()
            .expect("valid");
        assert!(based[0]
            .request_head
            .starts_with(b"POST /shop/v1/sales/sku-1/purchase "));

        let refused = options("http://192.0.2.1:80").validate();
        assert!(
            matches!(refused, Err(LoadError::Remote { .. })),
            "{refused:?}"
        );
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("--allow-remote"), "{message}");
        let mut remote = options("http://192.0.2.1:80");
        remote.allow_remote = true;
        assert!(remote.validate().is_ok());
        assert!(is_loopback("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!is_loopback("10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn every_bad_setting_names_its_flag() {
        assert_eq!(flag_of(options("https://127.0.0.1").validate()), "--url");
        assert_eq!(flag_of(options("127.0.0.1:80").validate()), "--url");
        assert_eq!(
            flag_of(options("http://127.0.0.1/?a=1").validate()),
            "--url"
        );
        type Breaker = fn(&mut LoadOptions);
        let cases: [(&str, Breaker); 11] = [
            ("--rate", |o| o.rate = 0.0),
            ("--rate", |o| o.rate = f64::NAN),
            ("--duration", |o| o.duration = Duration::ZERO),
            ("--threads", |o| o.threads = 0),
            ("--connections", |o| o.connections = 0),
            ("--connections", |o| {
                o.threads = 4;
                o.connections = 2;
            }),
            ("--users", |o| o.users = 0),
            ("--user-prefix", |o| o.user_prefix = "x".repeat(64)),
            ("--sku", |o| o.sku = "a/b".to_owned()),
            ("--token-secret", |o| o.token_secret.clear()),
            ("--quantity", |o| o.quantity = 0),
        ];
        for (flag, break_it) in cases {
            let mut bad = options("http://127.0.0.1:9000");
            break_it(&mut bad);
            assert_eq!(flag_of(bad.validate()), flag);
        }
    }
}
