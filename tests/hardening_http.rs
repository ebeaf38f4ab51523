//! Hardening of the HTTP edge (issue 10), against the real binary over loopback: JSON nesting
//! depth and strict numbers in bodies and in Redis order values, credentials checked before a
//! body is buffered, `Expect: 100-continue`, `Host` and `Authorization` rules, the bearer
//! scheme's case, HEAD, the maximum shopper-token lifetime, and hostile config files.
mod common;

use common::process::{run_serve, seckill_cmd};
use common::redis::RedisServer;
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::time::Duration;

/// A body nesting `depth` arrays: 20 KB at 10,000 levels, which overflowed a shard's stack.
fn nested_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

/// An object body nesting `depth` objects under unknown keys.
fn nested_objects(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn purchase_path(sku: &str) -> String {
    format!("/v1/sales/{sku}/purchase")
}

#[test]
fn deeply_nested_bodies_get_400_and_every_shard_keeps_serving() {
    let s = Server::start(2, &[]);
    s.open_sale("deep", 100, 10);
    let alice = format!("Bearer {}", tok("alice"));
    let admin = admin_bearer();
    let bodies = [
        nested_arrays(10_000),
        nested_objects(10_000),
        format!("{{\"quantity\":{}}}", nested_arrays(10_000)),
    ];
    for shard in 0..2 {
        let mut c = s.client_on_shard(shard);
        for body in &bodies {
            let what = format!("shard {shard}, {} byte nested body", body.len());
            let r = c.request(
                "POST",
                &purchase_path("deep"),
                &[("Authorization", &alice)],
                Some(body),
            );
            assert_error(&r, 400, "bad_request");
            assert!(r.text().contains("JSON"), "{what}: {r}");
            let r = c.request(
                "PUT",
                "/v1/sales/deep2",
                &[("Authorization", &admin)],
                Some(body),
            );
            assert_error(&r, 400, "bad_request");
        }
        // The same connection still serves, and so does the node.
        assert_eq!(c.buy("deep", &tok("alice"), 1)["quantity"], json!(1));
        s.assert_healthy();
    }
    // Moderate nesting is still ordinary JSON (refused for its unknown field, not its depth).
    let mut c = s.client();
    let r = c.request(
        "POST",
        &purchase_path("deep"),
        &[("Authorization", &alice)],
        Some(&format!("{{\"x\":{}}}", nested_arrays(20))),
    );
    assert_error(&r, 400, "bad_request");
    assert!(r.text().contains("unknown field `x`"), "{r}");
}

#[test]
fn nul_inside_a_number_is_refused() {
    let s = Server::start(1, &[]);
    s.open_sale("nul", 100, 100);
    let mut c = s.client();
    let r = c.purchase_body("nul", &tok("alice"), "{\"quantity\":12\u{0}34}");
    assert_error(&r, 400, "bad_request");
    let r = c.purchase_body("nul", &tok("alice"), "{\"quantity\":1\u{0}}");
    assert_error(&r, 400, "bad_request");
    let spec = sale_spec(5, 1)
        .to_string()
        .replace("\"stock\":5", "\"stock\":5\u{0}0");
    assert!(spec.contains('\u{0}'), "{spec}");
    let r = c.admin("PUT", "/v1/sales/nul2", Some(&spec));
    assert_error(&r, 400, "bad_request");
    assert_eq!(c.remaining("nul"), 100, "nothing was sold");
}

trait PurchaseBody {
    fn purchase_body(&mut self, sku: &str, token: &str, body: &str) -> Response;
}

impl PurchaseBody for Client {
    fn purchase_body(&mut self, sku: &str, token: &str, body: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.request(
            "POST",
            &purchase_path(sku),
            &[("Authorization", &auth)],
            Some(body),
        )
    }
}

#[test]
fn nested_order_json_in_redis_is_refused_not_followed() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let s = Server::start(2, &["--redis", &url]);
    s.open_sale("rdeep", 10, 5);
    let token = tok("alice");
    let mut c = s.client();
    let ids: Vec<String> = (0..2)
        .map(|_| order_id(&c.buy("rdeep", &token, 1)))
        .collect();
    // Both start as an order object does, so the node parses them as JSON rather than refusing
    // them as a packed record (record.rs).
    let poisons = [
        format!("{{\"claims\":{}}}", nested_arrays(100_000)),
        nested_objects(100_000),
    ];
    for (id, poison) in ids.iter().zip(&poisons) {
        assert!(
            redis.overwrite_order("rdeep", id, poison),
            "overwrote order {id}"
        );
        let r = c.get_order(id, &token);
        assert_error(&r, 503, "unavailable");
        s.assert_healthy();
    }
}

/// Writes the head of a request with a `Content-Length` of 61,440 and the first 1,000 bytes of
/// its body, and returns the answer that comes before the rest of the body.
fn partial_body_answer(s: &Server, method: &str, path: &str, auth: Option<&str>) -> Response {
    let mut c = s.raw_connect();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 61440\r\n\r\n"
    );
    c.send_raw(head.as_bytes());
    c.send_raw(&[b' '; 1000]);
    let r = c.expect_response(&format!("{method} {path} with a partial body"));
    c.wait_closed(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{method} {path}: refused, so the connection must close: {e}"));
    r
}

#[test]
fn credentials_are_checked_before_the_body_is_read() {
    let s = Server::start(2, &[]);
    s.open_sale("early", 10, 1);
    let shopper = format!("Bearer {}", tok("alice"));
    let admin = admin_bearer();
    let forged = format!(
        "Bearer {}",
        token_with("alice", now_secs() + 600, "wrong-secret")
    );
    let cases: [(&str, &str, Option<&str>, u16, &str); 10] = [
        ("PUT", "/v1/sales/early2", None, 401, "unauthorized"),
        (
            "PUT",
            "/v1/sales/early2",
            Some(&shopper),
            401,
            "unauthorized",
        ),
        (
            "PUT",
            "/v1/blocklist/bob",
            Some(&shopper),
            401,
            "unauthorized",
        ),
        ("DELETE", "/v1/blocklist/bob", None, 401, "unauthorized"),
        (
            "POST",
            "/v1/sales/early/purchase",
            None,
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/v1/sales/early/purchase",
            Some(&admin),
            401,
            "unauthorized",
        ),
        (
            "POST",
            "/v1/orders/x/pay",
            Some(&forged),
            401,
            "unauthorized",
        ),
        (
            "GET",
            "/v1/orders/x",
            Some(&forged),
            413,
            "payload_too_large",
        ),
        ("GET", "/healthz", None, 413, "payload_too_large"),
        ("POST", "/nowhere", Some(&admin), 404, "not_found"),
    ];
    for (method, path, auth, status, code) in cases {
        let r = partial_body_answer(&s, method, path, auth);
        assert_error(&r, status, code);
        s.assert_healthy();
    }
    // With the right credentials the body is awaited, and the request served once it is whole.
    let mut c = s.client();
    let mut body = sale_spec(5, 1).to_string();
    body.push_str(&" ".repeat(61_440 - body.len()));
    let head = format!(
        "PUT /v1/sales/early2 HTTP/1.1\r\nHost: x\r\nAuthorization: {admin}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.send_raw(head.as_bytes());
    c.send_raw(&body.as_bytes()[..1000]);
    std::thread::sleep(Duration::from_millis(200));
    c.send_raw(&body.as_bytes()[1000..]);
    let r = c.expect_response("admin PUT sent in two parts");
    assert_status(&r, 201);
    assert_eq!(c.get_sale("early2")["stock"], json!(5));
}

/// Reads one response head byte by byte, leaving anything after it unread; returns the status
/// and the headers.
fn read_head(c: &mut Client) -> (u16, Vec<(String, String)>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match c.stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "connection ended inside a response head ({other:?}): {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8(head).expect("ASCII head");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn expect_100_continue_is_answered_after_the_credentials_check() {
    let s = Server::start(1, &[]);
    let admin = admin_bearer();
    let body = sale_spec(5, 1).to_string();
    let head = |auth: &str, expect: &str| {
        format!(
            "PUT /v1/sales/cont HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nExpect: {expect}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    };
    // Accepted: 100 Continue first, then the body, then the real answer.
    let mut c = s.raw_connect();
    c.send_raw(head(&admin, "100-continue").as_bytes());
    let (status, _) = read_head(&mut c);
    assert_eq!(status, 100, "an admitted head gets 100 Continue");
    c.send_raw(body.as_bytes());
    assert_status(&c.expect_response("PUT after 100 Continue"), 201);

    // Refused: the final answer straight away, no 100, and the connection closes.
    let mut c = s.raw_connect();
    c.send_raw(head(&format!("Bearer {}", tok("alice")), "100-Continue").as_bytes());
    let r = c.expect_response("PUT with a shopper token and Expect");
    assert_error(&r, 401, "unauthorized");
    c.wait_closed(Duration::from_secs(10))
        .expect("closed after refusing the body");

    // Any other expectation: 417.
    let mut c = s.raw_connect();
    c.send_raw(head(&admin, "something-else").as_bytes());
    let r = c.expect_response("unknown expectation");
    assert_error(&r, 417, "expectation_failed");
    s.assert_healthy();

    // A request without a body has nothing to continue: just the answer.
    let mut c = s.raw_connect();
    c.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
    assert_status(&c.expect_response("GET with Expect"), 200);
}

#[test]
fn host_and_authorization_headers_must_not_be_missing_or_doubled() {
    let s = Server::start(1, &[]);
    s.open_sale("hosts", 10, 5);
    let token = tok("alice");
    let cases: [(&str, String); 4] = [
        ("HTTP/1.1 without Host", "GET /healthz HTTP/1.1\r\n\r\n".into()),
        (
            "two Host headers",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
        ),
        (
            "two Host headers, HTTP/1.0",
            "GET /healthz HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n".into(),
        ),
        (
            "two Authorization headers",
            format!(
                "POST /v1/sales/hosts/purchase HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
            ),
        ),
    ];
    for (what, request) in cases {
        let mut c = s.raw_connect();
        c.send_raw(request.as_bytes());
        let r = c.expect_response(what);
        assert_error(&r, 400, "bad_request");
        assert_eq!(r.header("connection"), Some("close"), "{what}: {r}");
    }
    assert_eq!(s.client().remaining("hosts"), 10, "nothing was sold");
    // HTTP/1.0 does not need Host.
    let mut c = s.raw_connect();
    c.send_raw(b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_status(&c.expect_response("HTTP/1.0 without Host"), 200);
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let s = Server::start(1, &[]);
    s.open_sale("case", 10, 5);
    let mut c = s.client();
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let shopper = format!("{scheme} {}", tok("alice"));
        let r = c.request(
            "POST",
            &purchase_path("case"),
            &[("Authorization", &shopper)],
            Some(""),
        );
        assert_status(&r, 201);
        let admin = format!("{scheme} {ADMIN_TOKEN}");
        let r = c.request(
            "PUT",
            "/v1/blocklist/bob",
            &[("Authorization", &admin)],
            Some(""),
        );
        assert_status(&r, 204);
    }
    let r = c.request(
        "POST",
        &purchase_path("case"),
        &[("Authorization", &format!("Basic {}", tok("alice")))],
        Some(""),
    );
    assert_error(&r, 401, "unauthorized");
}

#[test]
fn head_answers_every_get_without_the_body() {
    let s = Server::start(2, &[]);
    s.open_sale("heady", 10, 5);
    let token = tok("alice");
    let mut c = s.client();
    let order = order_id(&c.buy("heady", &token, 1));
    let auth = format!("Bearer {token}");
    let order_path = format!("/v1/orders/{order}");
    let paths: [(&str, Option<&str>); 7] = [
        ("/healthz", None),
        ("/readyz", None),
        ("/v1/sales", None),
        ("/v1/sales/heady", None),
        ("/v1/sales/missing", None),
        (&order_path, Some(&auth)),
        ("/metrics", None),
    ];
    for (path, auth) in paths {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| vec![("Authorization", a)]).unwrap_or_default();
        let get = c.request("GET", path, &headers, None);
        // HEAD, then a GET on the same connection: if HEAD sent a body, the second answer would
        // not start where it must.
        let mut raw = c.build_request("HEAD", path, &headers, None);
        raw.extend(c.build_request("GET", "/healthz", &[], None));
        c.send_raw(&raw);
        let (status, head_headers) = read_head(&mut c);
        assert_eq!(status, get.status, "HEAD {path}: status as GET's ({get})");
        assert_eq!(
            header(&head_headers, "content-type"),
            get.header("content-type"),
            "HEAD {path}"
        );
        let length = header(&head_headers, "content-length")
            .unwrap_or_else(|| panic!("HEAD {path}: no content-length: {head_headers:?}"));
        if path != "/metrics" {
            // (The metrics text changes between two scrapes.)
            assert_eq!(length, get.body.len().to_string(), "HEAD {path}");
        }
        let next = c.expect_response("GET /healthz after HEAD");
        assert_status(&next, 200);
        assert_eq!(
            next.json(),
            json!({"status": "ok"}),
            "HEAD {path} sent a body"
        );
    }
    let r = c.request("POST", "/healthz", &[], Some(""));
    assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
}

#[test]
fn shopper_tokens_beyond_the_maximum_lifetime_are_refused() {
    // Default maximum: one day.
    let s = Server::start(1, &[]);
    s.open_sale("ttl", 100, 100);
    let mut c = s.client();
    assert_status(
        &c.purchase("ttl", &mint_token("alice", 86_000), None, None),
        201,
    );
    let r = c.purchase("ttl", &mint_token("alice", 2 * 86_400), None, None);
    assert_error(&r, 401, "unauthorized");
    let r = c.purchase(
        "ttl",
        &token_with("alice", i64::MAX / 2, SECRET),
        None,
        None,
    );
    assert_error(&r, 401, "unauthorized");
    drop(c);
    drop(s);

    // Configured by flag, and by the config file.
    let config_dir = ScratchDir::new();
    let config = config_dir.join("seckill-ttl.toml");
    std::fs::write(&config, "max_token_ttl_secs = 600\n").expect("write config");
    let config_text = config.to_string_lossy().into_owned();
    for args in [
        vec!["--max-token-ttl-secs", "600"],
        vec!["--config", config_text.as_str()],
    ] {
        let s = Server::start(1, &args);
        s.open_sale("ttl", 100, 100);
        let mut c = s.client();
        assert_status(
            &c.purchase("ttl", &mint_token("alice", 500), None, None),
            201,
        );
        let r = c.purchase("ttl", &mint_token("alice", 3_600), None, None);
        assert_error(&r, 401, "unauthorized");
    }
    let refused = run_serve(seckill_cmd(), &["--max-token-ttl-secs", "0"]);
    let stderr = refused.stderr();
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("max_token_ttl_secs"), "{stderr}");
}

#[test]
fn hostile_config_files_are_refused_with_a_short_clear_error() {
    let dir = ScratchDir::new();
    let cases = [
        (
            "deep arrays",
            format!("listen = {}\n", nested_arrays(100_000)),
            "recursion limit exceeded",
        ),
        (
            "deep inline tables",
            format!(
                "listen = {}1{}\n",
                "{a=".repeat(100_000),
                "}".repeat(100_000)
            ),
            "recursion limit exceeded",
        ),
        (
            "deep dotted key",
            format!("{} = 1\n", vec!["a"; 100_000].join(".")),
            "recursion limit exceeded",
        ),
        (
            "over 1 MiB",
            "# padding\n".repeat(110_000),
            "larger than 1048576 bytes",
        ),
    ];
    for (what, text, expected) in cases {
        let path = dir.join("seckill.toml");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("write config");
        let path = path.to_string_lossy().into_owned();
        let refused = run_serve(seckill_cmd(), &["--config", &path]);
        let stderr = refused.stderr();
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{what}: exit status; stderr: {stderr:.2000}"
        );
        assert!(stderr.contains(expected), "{what}: {stderr:.2000}");
        assert!(
            stderr.len() < 4_096,
            "{what}: the error must be short, not echo the file ({} bytes): {stderr:.2000}",
            stderr.len()
        );
    }
}

/// The server's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// A measurement, not a check (run it on a release build): resident memory per idle connection
/// and per connection holding a partial 60 KB body, with and without credentials.
/// `cargo test --release --test hardening_http -- --ignored --nocapture memory`
#[test]
#[ignore = "a measurement: run by hand on a release build"]
fn memory_per_connection() {
    const CONNECTIONS: usize = 500;
    let s = Server::start(2, &["--idle-timeout-ms", "120000"]);
    let admin = admin_bearer();
    for (what, auth) in [
        ("idle", None),
        ("partial 60 KB body, no credentials", Some("")),
        ("partial 60 KB body, admin", Some(admin.as_str())),
    ] {
        let before = rss_kib(s.pid());
        let mut held = Vec::new();
        for _ in 0..CONNECTIONS {
            let mut c = s.raw_connect();
            if let Some(auth) = auth {
                let auth = if auth.is_empty() {
                    String::new()
                } else {
                    format!("Authorization: {auth}\r\n")
                };
                let head = format!(
                    "PUT /v1/sales/m HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 61440\r\n\r\n"
                );
                c.send_raw(head.as_bytes());
                c.send_raw(&[b' '; 60_000]);
            }
            held.push(c);
        }
        std::thread::sleep(Duration::from_secs(2));
        let after = rss_kib(s.pid());
        eprintln!(
            "{what}: {CONNECTIONS} connections, RSS {before} -> {after} KiB, {:.1} KiB each",
            (after.saturating_sub(before)) as f64 / CONNECTIONS as f64
        );
        drop(held);
        std::thread::sleep(Duration::from_secs(1));
    }
}
