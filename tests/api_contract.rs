//! API v1 contract: status codes, error codes, body shapes, check ordering.
mod common;

use common::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn server() -> Server {
    Server::start(1, &[])
}

fn upcoming_spec(stock: u64) -> Value {
    let now = now_ms();
    json!({"name": "Upcoming", "stock": stock, "starts_at": now + 3_600_000, "ends_at": now + 7_200_000})
}

fn ended_spec(stock: u64) -> Value {
    let now = now_ms();
    json!({"name": "Ended", "stock": stock, "starts_at": now - 7_200_000, "ends_at": now - 3_600_000})
}

const SALE_KEYS: [&str; 10] = [
    "sku",
    "name",
    "stock",
    "remaining",
    "starts_at",
    "ends_at",
    "per_user_limit",
    "payment_timeout_ms",
    "rate_limit_per_sec",
    "state",
];

const ORDER_KEYS: [&str; 7] = [
    "order_id",
    "sku",
    "user_id",
    "quantity",
    "status",
    "created_at",
    "expires_at",
];

#[track_caller]
fn assert_keys(v: &Value, keys: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("expected JSON object, got {v}"));
    for k in keys {
        assert!(obj.contains_key(*k), "missing key {k:?} in {v}");
    }
}

#[test]
fn healthz_readyz_not_found_and_method_not_allowed() {
    let s = server();
    let mut c = s.client();
    for path in ["/healthz", "/readyz"] {
        let r = c.get(path);
        assert_status(&r, 200);
        r.json();
        assert_eq!(r.shard(), Some(0), "x-seckill-shard on {path}: {r}");
    }
    for path in [
        "/",
        "/nope",
        "/v1",
        "/v1/sale",
        "/v1/sales/abc/extra",
        "/v1/sales/abc/purchase/x",
        "/v1/orders/x/refund",
        "/healthz/x",
    ] {
        let r = c.get(path);
        assert_error(&r, 404, "not_found");
        assert_eq!(r.shard(), Some(0), "x-seckill-shard on 404 {path}: {r}");
    }
    let admin = admin_bearer();
    for (method, path) in [
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
        ("DELETE", "/v1/sales"),
        ("POST", "/v1/sales"),
        ("POST", "/v1/sales/abc"),
        ("DELETE", "/v1/sales/abc"),
        ("GET", "/v1/sales/abc/purchase"),
        ("PUT", "/v1/orders/abc"),
        ("GET", "/v1/orders/abc/pay"),
        ("GET", "/v1/orders/abc/cancel"),
        ("GET", "/v1/blocklist/someone"),
        ("POST", "/v1/blocklist/someone"),
    ] {
        let body = if method == "GET" { None } else { Some("") };
        let r = c.request(method, path, &[("Authorization", &admin)], body);
        assert_eq!(
            r.status, 405,
            "{method} {path} should be 405 method_not_allowed, got: {r}"
        );
        assert_error(&r, 405, "method_not_allowed");
        assert_eq!(r.shard(), Some(0), "x-seckill-shard on 405: {r}");
    }
}

/// The `Date` header of `r` as unix seconds.
fn date_secs(r: &Response) -> u64 {
    let date = r
        .header("date")
        .unwrap_or_else(|| panic!("no Date header: {r}"));
    let at = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("Date {date:?}: {e}"));
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[test]
fn every_response_carries_the_servers_clock() {
    // A sale page counts down on the server's clock, not the device's: `GET /v1/time` gives it
    // to the millisecond, and every response's Date header to the second.
    let s = server();
    let mut c = s.client();
    let r = c.get("/v1/time");
    assert_status(&r, 200);
    let now = r.json()["now_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no now_ms: {r}"));
    // Both read the same clock, the header after the body (the same second or the next).
    let date = date_secs(&r);
    assert!(
        (now / 1000..=now / 1000 + 5).contains(&date),
        "now_ms {now} against Date {date}: {r}"
    );
    // It is the machine's clock (the test runs beside the server): not zero, not a constant.
    let here = u64::try_from(now_ms()).unwrap_or(0);
    assert!(
        now.abs_diff(here) < 600_000,
        "now_ms {now}, the test's clock {here}"
    );
    let r = c.request("POST", "/v1/time", &[], Some(""));
    assert_error(&r, 405, "method_not_allowed");
    // Errors too, down to a request that did not parse.
    for r in [r, c.get("/nope")] {
        date_secs(&r);
    }
    let mut raw = s.raw_connect();
    raw.send_raw(b"GARBAGE\r\n\r\n");
    let malformed = raw.expect_response("malformed");
    date_secs(&malformed);
}

#[test]
fn browsers_from_allowed_origins_get_cors_headers() {
    let shop = "https://shop.example";
    let s = Server::start(
        1,
        &[
            "--cors-origin",
            shop,
            "--cors-origin",
            "http://localhost:3000",
        ],
    );
    let mut c = s.client();
    // The preflight of a purchase from the shop's page.
    let r = c.request(
        "OPTIONS",
        "/v1/sales/moutai/purchase",
        &[
            ("Origin", shop),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
        None,
    );
    assert_status(&r, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some(shop), "{r}");
    let methods = r.header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST") && methods.contains("PUT"), "{r}");
    let headers = r.header("access-control-allow-headers").unwrap_or_default();
    for name in [
        "authorization",
        "content-type",
        "idempotency-key",
        "x-seckill-pow",
    ] {
        assert!(headers.contains(name), "{name} not allowed: {r}");
    }
    assert!(r.header("access-control-max-age").is_some(), "{r}");
    // The call itself, and a refusal of it, both readable by the page.
    let r = c.request("GET", "/v1/time", &[("Origin", shop)], None);
    assert_status(&r, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(shop), "{r}");
    assert_eq!(r.header("vary"), Some("origin"), "{r}");
    let exposed = r
        .header("access-control-expose-headers")
        .unwrap_or_default();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("date"),
        "{r}"
    );
    let r = c.request(
        "POST",
        "/v1/sales/moutai/purchase",
        &[("Origin", shop), ("Authorization", "Bearer nope")],
        Some("{}"),
    );
    assert_error(&r, 401, "unauthorized");
    assert_eq!(r.header("access-control-allow-origin"), Some(shop), "{r}");
    // Another origin (even one that starts like the shop's) gets no grant, and its preflight a
    // clear refusal.
    for origin in ["https://evil.example", "https://shop.example.evil.example"] {
        let r = c.request("GET", "/v1/time", &[("Origin", origin)], None);
        assert_status(&r, 200);
        assert_eq!(r.header("access-control-allow-origin"), None, "{r}");
        let r = c.request(
            "OPTIONS",
            "/v1/sales/moutai/purchase",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
            ],
            None,
        );
        assert_error(&r, 403, "origin_not_allowed");
        assert_eq!(r.header("access-control-allow-origin"), None, "{r}");
    }
    // OPTIONS without an Origin is plain HTTP: the methods the path takes, as a 405 lists
    // them; a path that does not exist is still a 404.
    for (path, methods) in [
        ("/v1/time", "GET, HEAD, OPTIONS"),
        ("/v1/sales/x", "GET, HEAD, PUT, OPTIONS"),
        ("/v1/sales/x/purchase", "POST, OPTIONS"),
        ("/v1/blocklist/x", "PUT, DELETE, OPTIONS"),
    ] {
        let r = c.request("OPTIONS", path, &[], None);
        assert_status(&r, 204);
        assert_eq!(r.header("allow"), Some(methods), "{path}: {r}");
        let r = c.request("PATCH", path, &[], None);
        assert_error(&r, 405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some(methods), "{path}: {r}");
    }
    let r = c.request("OPTIONS", "/nope", &[("Origin", shop)], None);
    assert_error(&r, 404, "not_found");
    // Off by default: no grant for anyone.
    let plain = server();
    let mut c = plain.client();
    let r = c.request("GET", "/v1/time", &[("Origin", shop)], None);
    assert_eq!(r.header("access-control-allow-origin"), None, "{r}");
    let r = c.request(
        "OPTIONS",
        "/v1/time",
        &[("Origin", shop), ("Access-Control-Request-Method", "GET")],
        None,
    );
    assert_error(&r, 403, "origin_not_allowed");
    // `*` grants any origin, as `*`.
    let any = Server::start(1, &["--cors-origin", "*"]);
    let r = any.client().request(
        "GET",
        "/v1/time",
        &[("Origin", "https://anyone.example")],
        None,
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r}");
}

#[test]
fn a_cors_origin_that_is_not_an_origin_is_refused_at_startup() {
    for bad in [
        "shop.example",
        "https://shop.example/",
        "https://shop.example/page",
    ] {
        let out =
            common::process::run_serve(common::process::seckill_cmd(), &["--cors-origin", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", out.stderr());
        assert!(
            out.stderr().contains("cors_origins"),
            "{bad}: {}",
            out.stderr()
        );
    }
}

#[test]
fn create_sale_returns_sale_object_with_defaults() {
    let s = server();
    let mut c = s.client();
    let now = now_ms();
    let spec =
        json!({"name": "Widget", "stock": 10, "starts_at": now - 1000, "ends_at": now + 3_600_000});
    let r = c.put_sale("widget-1", &spec);
    assert_status(&r, 201);
    assert_eq!(r.shard(), Some(0), "shard header on 201: {r}");
    let sale = r.json();
    assert_keys(&sale, &SALE_KEYS);
    assert_eq!(sale["sku"], json!("widget-1"), "{sale}");
    assert_eq!(sale["name"], json!("Widget"), "{sale}");
    assert_eq!(sale["stock"], json!(10), "{sale}");
    assert_eq!(sale["remaining"], json!(10), "{sale}");
    assert_eq!(sale["starts_at"], json!(now - 1000), "{sale}");
    assert_eq!(sale["ends_at"], json!(now + 3_600_000), "{sale}");
    assert_eq!(
        sale["per_user_limit"],
        json!(1),
        "default per_user_limit: {sale}"
    );
    assert_eq!(
        sale["payment_timeout_ms"],
        json!(900_000),
        "default payment_timeout_ms: {sale}"
    );
    assert!(
        sale["rate_limit_per_sec"].is_null() || sale["rate_limit_per_sec"] == json!(0),
        "absent rate_limit_per_sec must read as unlimited (null or 0): {sale}"
    );
    assert_eq!(sale["state"], json!("open"), "{sale}");
    assert_eq!(
        c.get_sale("widget-1"),
        sale,
        "GET must return the created sale"
    );

    // Every field given explicitly, at the edges of the valid ranges.
    let name200 = "n".repeat(200);
    let sku64 = "A".repeat(32) + &"_-9z".repeat(8);
    assert_eq!(sku64.len(), 64);
    let full = json!({
        "name": name200, "stock": 1_000_000_000u64, "starts_at": now - 5000, "ends_at": now + 10_000_000,
        "per_user_limit": 3, "payment_timeout_ms": 100, "rate_limit_per_sec": 7
    });
    let sale = c.create_sale(&sku64, &full);
    assert_eq!(sale["sku"], json!(sku64));
    assert_eq!(sale["name"], json!(name200));
    assert_eq!(sale["stock"], json!(1_000_000_000u64));
    assert_eq!(sale["remaining"], json!(1_000_000_000u64));
    assert_eq!(sale["per_user_limit"], json!(3));
    assert_eq!(sale["payment_timeout_ms"], json!(100));
    assert_eq!(sale["rate_limit_per_sec"], json!(7));
    assert_eq!(sale["state"], json!("open"));
    assert_eq!(c.get_sale(&sku64), sale);

    let mut max_timeout = sale_spec(1, 1);
    max_timeout["payment_timeout_ms"] = json!(604_800_000u64);
    let sale = c.create_sale("max-timeout", &max_timeout);
    assert_eq!(sale["payment_timeout_ms"], json!(604_800_000u64));

    let r = c.get("/v1/sales/never-created");
    assert_error(&r, 404, "unknown_sale");
}

#[test]
fn replace_upcoming_sale_but_not_a_started_one() {
    let s = server();
    let mut c = s.client();

    let first = c.create_sale("soon", &upcoming_spec(10));
    assert_eq!(first["state"], json!("upcoming"), "{first}");
    assert_eq!(first["remaining"], json!(10), "{first}");

    let now = now_ms();
    let replacement = json!({
        "name": "Soon v2", "stock": 20, "starts_at": now + 1_800_000, "ends_at": now + 9_000_000,
        "per_user_limit": 2, "payment_timeout_ms": 60_000
    });
    let r = c.put_sale("soon", &replacement);
    assert_status(&r, 201);
    let second = r.json();
    for (k, v) in [
        ("name", json!("Soon v2")),
        ("stock", json!(20)),
        ("remaining", json!(20)),
        ("starts_at", json!(now + 1_800_000)),
        ("ends_at", json!(now + 9_000_000)),
        ("per_user_limit", json!(2)),
        ("payment_timeout_ms", json!(60_000)),
        ("state", json!("upcoming")),
    ] {
        assert_eq!(second[k], v, "replaced sale field {k}: {second}");
    }
    assert_eq!(c.get_sale("soon"), second, "GET after replace");

    // Started sale: cannot be replaced.
    let orig = s.open_sale("started", 5, 1);
    let mut other = sale_spec(99, 3);
    other["name"] = json!("Hijack");
    let r = c.put_sale("started", &other);
    assert_error(&r, 409, "sale_exists");
    assert_eq!(
        c.get_sale("started"),
        orig,
        "409 must leave the sale untouched"
    );

    // Ended sale has started too.
    c.create_sale("over", &ended_spec(5));
    let r = c.put_sale("over", &sale_spec(5, 1));
    assert_error(&r, 409, "sale_exists");
    assert_eq!(c.get_sale("over")["state"], json!("ended"));
}

#[test]
fn sale_validation_errors_name_the_field() {
    let s = server();
    let mut c = s.client();
    let base = sale_spec(10, 1);
    let starts = base["starts_at"].as_i64().unwrap();

    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut with = |desc: &'static str, field: &'static str, f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        cases.push((desc, v, field));
    };
    with("missing name", "name", &|v| {
        v.as_object_mut().unwrap().remove("name");
    });
    with("empty name", "name", &|v| v["name"] = json!(""));
    with("201-char name", "name", &|v| {
        v["name"] = json!("x".repeat(201))
    });
    with("numeric name", "name", &|v| v["name"] = json!(5));
    with("null name", "name", &|v| v["name"] = Value::Null);
    with("missing stock", "stock", &|v| {
        v.as_object_mut().unwrap().remove("stock");
    });
    with("stock 0", "stock", &|v| v["stock"] = json!(0));
    with("stock too large", "stock", &|v| {
        v["stock"] = json!(1_000_000_001u64)
    });
    with("stock as string", "stock", &|v| v["stock"] = json!("10"));
    with("negative stock", "stock", &|v| v["stock"] = json!(-1));
    with("fractional stock", "stock", &|v| v["stock"] = json!(1.5));
    with("missing starts_at", "starts_at", &|v| {
        v.as_object_mut().unwrap().remove("starts_at");
    });
    with("missing ends_at", "ends_at", &|v| {
        v.as_object_mut().unwrap().remove("ends_at");
    });
    with("ends_at == starts_at", "ends_at", &|v| {
        v["ends_at"] = json!(starts)
    });
    with("ends_at < starts_at", "ends_at", &|v| {
        v["ends_at"] = json!(starts - 1)
    });
    with("per_user_limit 0", "per_user_limit", &|v| {
        v["per_user_limit"] = json!(0)
    });
    with("per_user_limit string", "per_user_limit", &|v| {
        v["per_user_limit"] = json!("2")
    });
    with("payment_timeout_ms 99", "payment_timeout_ms", &|v| {
        v["payment_timeout_ms"] = json!(99)
    });
    with("payment_timeout_ms too large", "payment_timeout_ms", &|v| {
        v["payment_timeout_ms"] = json!(604_800_001u64)
    });
    with("negative rate_limit_per_sec", "rate_limit_per_sec", &|v| {
        v["rate_limit_per_sec"] = json!(-1)
    });
    with("rate_limit_per_sec string", "rate_limit_per_sec", &|v| {
        v["rate_limit_per_sec"] = json!("5")
    });
    with("unknown field", "colour", &|v| v["colour"] = json!("red"));

    for (desc, body, field) in &cases {
        let r = c.put_sale("val-1", body);
        assert_eq!(
            r.status, 400,
            "{desc}: expected 400, got {r}\nrequest body: {body}"
        );
        assert_error(&r, 400, "bad_request");
        let msg = r.json()["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains(field),
            "{desc}: error message should name field {field:?}, got {msg:?}"
        );
    }

    for (desc, raw) in [
        ("array body", "[1,2]"),
        ("truncated JSON", "{\"name\": \"x\""),
        ("not JSON", "hello"),
        ("empty body", ""),
    ] {
        let r = c.admin("PUT", "/v1/sales/val-1", Some(raw));
        assert_eq!(r.status, 400, "{desc}: {r}");
        assert_error(&r, 400, "bad_request");
    }

    let r = c.get("/v1/sales/val-1");
    assert_error(&r, 404, "unknown_sale");

    // Invalid skus.
    let long = "s".repeat(65);
    for sku in ["bad.sku", "bad%20sku", "bad~sku", long.as_str()] {
        let r = c.put_sale(sku, &base);
        assert_eq!(r.status, 400, "sku {sku:?} should be rejected: {r}");
        assert_error(&r, 400, "bad_request");
    }
}

#[test]
fn admin_endpoints_reject_missing_or_non_admin_credentials() {
    let s = server();
    let mut c = s.client();
    let shopper = format!("Bearer {}", tok("alice"));
    let wrong = format!("Bearer {ADMIN_TOKEN}x");
    let prefix = format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    let body = sale_spec(5, 1).to_string();
    let auths: Vec<Option<String>> = vec![
        None,
        Some(shopper),
        Some(wrong),
        Some(prefix),
        Some("Bearer".to_string()),
        Some(ADMIN_TOKEN.to_string()),
        Some(format!("Basic {ADMIN_TOKEN}")),
    ];
    for auth in &auths {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let r = c.request("PUT", "/v1/sales/guarded", &headers, Some(&body));
        assert_eq!(r.status, 401, "PUT sale with Authorization {auth:?}: {r}");
        assert_error(&r, 401, "unauthorized");
        let r = c.request("PUT", "/v1/blocklist/bob", &headers, Some(""));
        assert_eq!(
            r.status, 401,
            "PUT blocklist with Authorization {auth:?}: {r}"
        );
        assert_error(&r, 401, "unauthorized");
        let r = c.request("DELETE", "/v1/blocklist/bob", &headers, None);
        assert_eq!(
            r.status, 401,
            "DELETE blocklist with Authorization {auth:?}: {r}"
        );
        assert_error(&r, 401, "unauthorized");
    }
    assert_error(&c.get("/v1/sales/guarded"), 404, "unknown_sale");
    // bob was never blocked.
    s.open_sale("open", 5, 1);
    let r = c.purchase("open", &tok("bob"), None, None);
    assert_status(&r, 201);
}

#[test]
fn shopper_auth_variants_are_unauthorized() {
    let s = server();
    let mut c = s.client();
    s.open_sale("auth-sku", 100, 1);
    let exp = now_secs() + 3600;
    let valid_alice = token_with("alice", exp, SECRET);
    let bob_sig = sign(SECRET, &format!("bob.{exp}"));
    let mut tampered_user = valid_alice.clone();
    tampered_user.replace_range(0..5, "alicf");
    let tampered_exp = format!(
        "alice.{}.{}",
        exp + 1,
        valid_alice.rsplit('.').next().unwrap()
    );
    let nan_sig = sign(SECRET, "alice.soon");
    let auths: Vec<(&str, Option<String>)> = vec![
        ("missing header", None),
        ("empty bearer", Some("Bearer ".into())),
        ("scheme only", Some("Bearer".into())),
        ("basic scheme", Some("Basic YWxpY2U6cHc=".into())),
        ("no scheme", Some(valid_alice.clone())),
        ("garbage", Some("Bearer garbage".into())),
        ("two parts", Some("Bearer a.b".into())),
        ("four parts", Some(format!("Bearer {valid_alice}.x"))),
        ("missing sig", Some(format!("Bearer alice.{exp}"))),
        ("empty sig", Some(format!("Bearer alice.{exp}."))),
        (
            "non-numeric expiry",
            Some(format!("Bearer alice.soon.{nan_sig}")),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                token_with("alice", now_secs() - 10, SECRET)
            )),
        ),
        (
            "someone else's sig",
            Some(format!("Bearer alice.{exp}.{bob_sig}")),
        ),
        (
            "other secret",
            Some(format!(
                "Bearer {}",
                token_with("alice", exp, "not-the-secret")
            )),
        ),
        ("tampered user", Some(format!("Bearer {tampered_user}"))),
        ("tampered expiry", Some(format!("Bearer {tampered_exp}"))),
        (
            "invalid user chars",
            Some(format!("Bearer {}", token_with("bad!user", exp, SECRET))),
        ),
        (
            "65-char user",
            Some(format!(
                "Bearer {}",
                token_with(&"u".repeat(65), exp, SECRET)
            )),
        ),
        (
            "empty user",
            Some(format!("Bearer {}", token_with("", exp, SECRET))),
        ),
        ("admin token", Some(admin_bearer())),
        (
            "expiry beyond the one-day maximum lifetime",
            Some(format!(
                "Bearer {}",
                token_with("alice", now_secs() + 2 * 86_400, SECRET)
            )),
        ),
    ];
    for (desc, auth) in &auths {
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        let r = c.request("POST", "/v1/sales/auth-sku/purchase", &headers, Some(""));
        assert_eq!(r.status, 401, "purchase with {desc} ({auth:?}): {r}");
        assert_error(&r, 401, "unauthorized");
    }
    assert_eq!(
        c.remaining("auth-sku"),
        100,
        "rejected purchases must not take stock"
    );

    // Valid tokens, including the user-id edge cases.
    let r = c.purchase("auth-sku", &valid_alice, None, None);
    assert_status(&r, 201);
    assert_eq!(r.json()["user_id"], json!("alice"));
    let user64 = "Ab0_-".repeat(12) + "wxyz";
    assert_eq!(user64.len(), 64);
    let r = c.purchase("auth-sku", &tok(&user64), None, None);
    assert_status(&r, 201);
    assert_eq!(r.json()["user_id"], json!(user64));
    let order = r.json();
    let id = order_id(&order);

    // Order endpoints need a valid token too.
    let expired = token_with(&user64, now_secs() - 10, SECRET);
    for (method, path) in [
        ("GET", format!("/v1/orders/{id}")),
        ("POST", format!("/v1/orders/{id}/pay")),
        ("POST", format!("/v1/orders/{id}/cancel")),
    ] {
        let body = if method == "POST" { Some("") } else { None };
        let r = c.request(method, &path, &[], body);
        assert_eq!(r.status, 401, "{method} {path} without token: {r}");
        assert_error(&r, 401, "unauthorized");
        let r = c.request(
            method,
            &path,
            &[("Authorization", &format!("Bearer {expired}"))],
            body,
        );
        assert_eq!(r.status, 401, "{method} {path} with expired token: {r}");
        assert_error(&r, 401, "unauthorized");
    }
    let r = c.get_order(&id, &tok(&user64));
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], json!("pending"), "{r}");
}

#[test]
fn purchase_success_shape_quantity_and_order_visibility() {
    let s = server();
    let mut c = s.client();
    s.open_sale("shape", 50, 10);
    let alice = tok("alice");

    let before = now_ms();
    let r = c.purchase("shape", &alice, None, None);
    let after = now_ms();
    assert_status(&r, 201);
    let o1 = r.json();
    assert_keys(&o1, &ORDER_KEYS);
    assert!(
        o1["order_id"].as_str().is_some_and(|s| !s.is_empty()),
        "order_id must be a non-empty string: {o1}"
    );
    assert_eq!(o1["sku"], json!("shape"), "{o1}");
    assert_eq!(o1["user_id"], json!("alice"), "{o1}");
    assert_eq!(
        o1["quantity"],
        json!(1),
        "empty body means quantity 1: {o1}"
    );
    assert_eq!(o1["status"], json!("pending"), "{o1}");
    let created = o1["created_at"].as_i64().expect("created_at integer");
    assert!(
        created >= before - 5_000 && created <= after + 5_000,
        "created_at {created} should be a unix-ms timestamp near {before}..{after}: {o1}"
    );
    assert_eq!(
        o1["expires_at"].as_i64(),
        Some(created + 900_000),
        "expires_at = created_at + payment_timeout_ms: {o1}"
    );
    assert_eq!(c.remaining("shape"), 49);

    let o2 = c.buy("shape", &alice, 3);
    assert_eq!(o2["quantity"], json!(3), "{o2}");
    assert_eq!(c.remaining("shape"), 46);

    // No Content-Length and no body at all.
    let r = c.authed("POST", "/v1/sales/shape/purchase", &alice, None);
    assert_status(&r, 201);
    assert_eq!(r.json()["quantity"], json!(1), "{r}");
    // Object without quantity.
    let r = c.authed("POST", "/v1/sales/shape/purchase", &alice, Some("{}"));
    assert_status(&r, 201);
    assert_eq!(r.json()["quantity"], json!(1), "{r}");
    assert_eq!(c.remaining("shape"), 44);

    for body in [
        r#"{"quantity": 0}"#,
        r#"{"quantity": 101}"#,
        r#"{"quantity": -1}"#,
        r#"{"quantity": "2"}"#,
        r#"{"quantity": 1.5}"#,
        r#"{"quantity": null}"#,
        "[1]",
        "{bad",
        "7",
    ] {
        let r = c.authed("POST", "/v1/sales/shape/purchase", &alice, Some(body));
        assert_eq!(r.status, 400, "purchase body {body}: {r}");
        assert_error(&r, 400, "bad_request");
    }
    assert_eq!(
        c.remaining("shape"),
        44,
        "invalid purchases must not take stock"
    );
    let carol = tok("carol");
    // The purchase body is read from a reused tape, field by field: the same rules as every
    // other body (unknown fields refused, a field's own error first, the last repeat wins).
    let r = c.authed(
        "POST",
        "/v1/sales/shape/purchase",
        &carol,
        Some(r#"{"quantity":1,"colour":"red"}"#),
    );
    assert_error(&r, 400, "bad_request");
    assert!(r.text().contains("unknown field `colour`"), "{r}");
    let r = c.authed(
        "POST",
        "/v1/sales/shape/purchase",
        &carol,
        Some(r#"{"colour":"red","quantity":0}"#),
    );
    assert!(r.text().contains("field `quantity` must be"), "{r}");
    let r = c.authed(
        "POST",
        "/v1/sales/shape/purchase",
        &carol,
        Some(r#"{"quantity":3,"quantity":2}"#),
    );
    assert_status(&r, 201);
    assert_eq!(r.json()["quantity"], json!(2), "{r}");
    // Larger than the reused buffers take (parsed with buffers of its own), then small again.
    let padded = format!("{{\"quantity\":{}2}}", " ".repeat(5000));
    let r = c.authed("POST", "/v1/sales/shape/purchase", &carol, Some(&padded));
    assert_status(&r, 201);
    assert_eq!(r.json()["quantity"], json!(2), "{r}");
    let r = c.authed(
        "POST",
        "/v1/sales/shape/purchase",
        &carol,
        Some(r#"{"quantity":1}"#),
    );
    assert_status(&r, 201);
    assert_eq!(r.json()["quantity"], json!(1), "{r}");
    assert_eq!(c.remaining("shape"), 39);

    s.open_sale("bulk", 1000, 100);
    let big = c.buy("bulk", &alice, 100);
    assert_eq!(big["quantity"], json!(100));
    assert_eq!(c.remaining("bulk"), 900);

    let ids = [order_id(&o1), order_id(&o2), order_id(&big)];
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "order ids must be distinct: {ids:?}"
    );

    // Visibility.
    let r = c.get_order(&ids[0], &alice);
    assert_status(&r, 200);
    assert_eq!(r.json(), o1, "owner GET returns the order");
    let r = c.get_order(&ids[0], ADMIN_TOKEN);
    assert_status(&r, 200);
    assert_eq!(r.json(), o1, "admin GET returns the order");
    let r = c.get_order(&ids[0], &tok("mallory"));
    assert_error(&r, 404, "unknown_order");
    for garbage in ["nope", "0", "AAAAAAAAAAAAAAAAAAAAAAAAAA", "x-y_z"] {
        assert_error(&c.get_order(garbage, &alice), 404, "unknown_order");
        assert_error(&c.get_order(garbage, ADMIN_TOKEN), 404, "unknown_order");
    }
}

#[test]
fn purchase_checks_auth_sale_window_and_blocklist_in_order() {
    let s = server();
    let mut c = s.client();
    c.create_sale("later", &upcoming_spec(5));
    c.create_sale("past", &ended_spec(5));
    s.open_sale("now", 5, 1);
    s.open_sale("tiny", 1, 1);
    assert_status(&c.block("blk"), 204);
    let blk = tok("blk");
    let ok = tok("okuser");

    // 401 beats 404.
    let r = c.request("POST", "/v1/sales/ghost/purchase", &[], Some(""));
    assert_error(&r, 401, "unauthorized");
    let r = c.purchase("ghost", ADMIN_TOKEN, None, None);
    assert_error(&r, 401, "unauthorized");
    let r = c.request("POST", "/v1/sales/past/purchase", &[], Some(""));
    assert_error(&r, 401, "unauthorized");
    // 404 beats blocked.
    assert_error(&c.purchase("ghost", &ok, None, None), 404, "unknown_sale");
    assert_error(&c.purchase("ghost", &blk, None, None), 404, "unknown_sale");
    // 425 / 410 beat blocked.
    assert_error(&c.purchase("later", &ok, None, None), 425, "not_started");
    assert_error(&c.purchase("later", &blk, None, None), 425, "not_started");
    assert_error(&c.purchase("past", &ok, None, None), 410, "ended");
    assert_error(&c.purchase("past", &blk, None, None), 410, "ended");
    // Blocked on an open sale.
    assert_error(&c.purchase("now", &blk, None, None), 403, "blocked");
    // Blocked beats sold_out.
    c.buy("tiny", &ok, 1);
    assert_error(
        &c.purchase("tiny", &tok("other"), None, None),
        409,
        "sold_out",
    );
    assert_error(&c.purchase("tiny", &blk, None, None), 403, "blocked");

    // Blocked beats idempotency replay and limit_exceeded.
    let late = tok("late");
    let r = c.purchase("now", &late, Some(1), Some("late-key"));
    assert_status(&r, 201);
    assert_status(&c.block("late"), 204);
    assert_error(
        &c.purchase("now", &late, Some(1), Some("late-key")),
        403,
        "blocked",
    );
    assert_error(&c.purchase("now", &late, Some(1), None), 403, "blocked");
    assert_status(&c.unblock("late"), 204);
    assert_error(
        &c.purchase("now", &late, Some(1), None),
        403,
        "limit_exceeded",
    );
    assert_eq!(c.remaining("now"), 4);
}

/// Loop `attempt` up to 500 times until it yields 429; returns that response.
#[track_caller]
fn until_429(desc: &str, mut attempt: impl FnMut(usize) -> Response) -> Response {
    let mut last = None;
    for i in 0..500 {
        let r = attempt(i);
        if r.status == 429 {
            return r;
        }
        last = Some(r);
    }
    panic!("{desc}: never rate limited in 500 attempts at 1/s; last response: {last:?}");
}

#[track_caller]
fn assert_rate_limited(r: &Response) {
    assert_error(r, 429, "rate_limited");
    let ra = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {r}"));
    let secs: u64 = ra
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After must be integer seconds, got {ra:?}"));
    assert!(secs >= 1, "Retry-After must be >= 1, got {secs}");
}

#[test]
fn rate_limit_sits_between_blocklist_and_replay_limit_and_stock() {
    let s = server();
    let mut c = s.client();
    let mut spec = sale_spec(1000, 1);
    spec["rate_limit_per_sec"] = json!(1);
    c.create_sale("rl", &spec);
    let mut spec = sale_spec(1, 1);
    spec["rate_limit_per_sec"] = json!(1);
    c.create_sale("rl-tiny", &spec);
    assert_status(&c.block("blk"), 204);

    // Get one order with an idempotency key (the bucket may start empty, so
    // wait for admission).
    let first = tok("first");
    let order = poll(Duration::from_secs(10), || {
        let r = c.purchase("rl", &first, Some(1), Some("k1"));
        match r.status {
            201 => Some(r.json()),
            429 => None,
            _ => panic!("unexpected answer while waiting for admission: {r}"),
        }
    })
    .expect("no purchase admitted within 10 s at rate_limit_per_sec 1");
    let id = order_id(&order);

    // Drain the bucket with fresh users, then a blocked user gets 403 blocked.
    let r = until_429("fresh users", |i| {
        c.purchase("rl", &tok(&format!("fresh{i}")), None, None)
    });
    assert_rate_limited(&r);
    assert_error(&c.purchase("rl", &tok("blk"), None, None), 403, "blocked");

    // 429 beats idempotency replay.
    let r = until_429("replay", |_| {
        let r = c.purchase("rl", &first, Some(1), Some("k1"));
        if r.status == 201 {
            assert_eq!(order_id(&r.json()), id, "replay must return the same order");
        }
        r
    });
    assert_rate_limited(&r);

    // 429 beats limit_exceeded.
    let r = until_429("user at limit", |_| {
        let r = c.purchase("rl", &first, Some(1), None);
        if r.status != 429 {
            assert_error(&r, 403, "limit_exceeded");
        }
        r
    });
    assert_rate_limited(&r);

    // 429 beats sold_out.
    poll(Duration::from_secs(10), || {
        let r = c.purchase("rl-tiny", &tok("tiny-buyer"), None, None);
        match r.status {
            201 => Some(()),
            429 => None,
            _ => panic!("unexpected answer while buying the only unit: {r}"),
        }
    })
    .expect("no purchase admitted on rl-tiny within 10 s");
    let r = until_429("sold out sale", |i| {
        let r = c.purchase("rl-tiny", &tok(&format!("late{i}")), None, None);
        if r.status != 429 {
            assert_error(&r, 409, "sold_out");
        }
        r
    });
    assert_rate_limited(&r);
}

#[test]
fn per_user_limit_and_stock_checks() {
    let s = server();
    let mut c = s.client();
    s.open_sale("three", 3, 2);
    let (a, b, cc) = (tok("a"), tok("b"), tok("c"));

    let oa = c.buy("three", &a, 2);
    assert_eq!(c.remaining("three"), 1);
    // Limit beats stock.
    assert_error(
        &c.purchase("three", &a, Some(1), None),
        403,
        "limit_exceeded",
    );
    assert_error(
        &c.purchase("three", &a, Some(2), None),
        403,
        "limit_exceeded",
    );
    assert_error(
        &c.purchase("three", &b, Some(3), None),
        403,
        "limit_exceeded",
    );
    assert_error(
        &c.purchase("three", &b, Some(2), None),
        409,
        "insufficient_stock",
    );
    c.buy("three", &b, 1);
    let sale = c.get_sale("three");
    assert_eq!(sale["remaining"], json!(0), "{sale}");
    assert_eq!(sale["state"], json!("sold_out"), "{sale}");
    // Sold out answers everyone with sold_out, even users at their limit.
    assert_error(&c.purchase("three", &cc, Some(1), None), 409, "sold_out");
    assert_error(&c.purchase("three", &cc, Some(2), None), 409, "sold_out");
    assert_error(&c.purchase("three", &a, Some(1), None), 409, "sold_out");
    assert_error(&c.purchase("three", &b, Some(1), None), 409, "sold_out");

    // Cancel brings the stock back.
    let r = c.cancel(&order_id(&oa), &a);
    assert_status(&r, 200);
    let sale = c.get_sale("three");
    assert_eq!(sale["remaining"], json!(2), "{sale}");
    assert_eq!(sale["state"], json!("open"), "{sale}");
    c.buy("three", &cc, 2);
    assert_error(&c.purchase("three", &a, Some(1), None), 409, "sold_out");

    // The limit counts pending + paid quantity, but not cancelled orders.
    s.open_sale("lim", 10, 2);
    let d = tok("d");
    let first = c.buy("lim", &d, 1);
    assert_status(&c.pay(&order_id(&first)), 200);
    let second = c.buy("lim", &d, 1);
    assert_error(&c.purchase("lim", &d, Some(1), None), 403, "limit_exceeded");
    assert_status(&c.cancel(&order_id(&second), &d), 200);
    c.buy("lim", &d, 1);
    assert_error(&c.purchase("lim", &d, Some(1), None), 403, "limit_exceeded");
    assert_eq!(c.remaining("lim"), 8);
}

#[test]
fn idempotency_key_replays_and_validation() {
    let s = server();
    let mut c = s.client();
    s.open_sale("idem", 100, 5);
    s.open_sale("idem-other", 100, 5);
    let (alice, bob) = (tok("alice"), tok("bob"));

    let r = c.purchase("idem", &alice, Some(2), Some("order-1"));
    assert_status(&r, 201);
    let o1 = r.json();
    for _ in 0..3 {
        let r = c.purchase("idem", &alice, Some(2), Some("order-1"));
        assert_status(&r, 201);
        let again = r.json();
        assert_eq!(
            again["order_id"], o1["order_id"],
            "replay must return the same order: {again}"
        );
        assert_eq!(again["quantity"], json!(2), "{again}");
        assert_eq!(again["user_id"], json!("alice"), "{again}");
    }
    assert_eq!(c.remaining("idem"), 98, "replays must not take stock");

    let o2 = c.purchase("idem", &alice, Some(1), Some("order-2")).json();
    assert_ne!(o2["order_id"], o1["order_id"], "a new key is a new order");
    let r = c.purchase("idem", &bob, Some(1), Some("order-1"));
    assert_status(&r, 201);
    assert_ne!(r.json()["order_id"], o1["order_id"], "keys are per user");
    let r = c.purchase("idem-other", &alice, Some(1), Some("order-1"));
    assert_status(&r, 201);
    assert_ne!(r.json()["order_id"], o1["order_id"], "keys are per sku");
    assert_eq!(c.remaining("idem"), 96);
    assert_eq!(c.remaining("idem-other"), 99);

    let long = "k".repeat(65);
    for (desc, key) in [
        ("empty", ""),
        ("65 chars", long.as_str()),
        ("inner space", "has space"),
        ("tab", "a\tb"),
        ("non-ascii", "caf\u{e9}"),
    ] {
        let r = c.purchase("idem", &bob, Some(1), Some(key));
        assert_eq!(r.status, 400, "Idempotency-Key {desc} ({key:?}): {r}");
        assert_error(&r, 400, "bad_request");
    }
    assert_eq!(c.remaining("idem"), 96, "rejected keys must not take stock");

    let edge = "!~".repeat(32);
    let r = c.purchase("idem", &bob, Some(1), Some(&edge));
    assert_status(&r, 201);
    let r2 = c.purchase("idem", &bob, Some(1), Some(&edge));
    assert_status(&r2, 201);
    assert_eq!(r.json()["order_id"], r2.json()["order_id"]);
    assert_eq!(c.remaining("idem"), 95);
}

#[test]
fn pay_and_cancel_transitions() {
    let s = server();
    let mut c = s.client();
    s.open_sale("pc", 10, 5);
    let (alice, bob) = (tok("alice"), tok("bob"));

    // pending -> paid
    let o1 = c.buy("pc", &alice, 1);
    let id1 = order_id(&o1);
    // Only the payment side pays: the buyer, another shopper and the admin get 403.
    for who in [&alice, &bob, ADMIN_TOKEN] {
        let r = c.pay_as(&id1, who, 0, "ref-x");
        assert_error(&r, 403, "payment_required_from_provider");
    }
    let r = c.pay(&id1);
    assert_status(&r, 200);
    let paid = r.json();
    assert_eq!(paid["status"], json!("paid"), "{paid}");
    assert_eq!(paid["order_id"], json!(id1), "{paid}");
    assert_eq!(paid["quantity"], json!(1), "{paid}");
    let r = c.pay(&id1);
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], json!("paid"), "repeat pay: {r}");
    assert_eq!(c.get_order(&id1, &alice).json()["status"], json!("paid"));
    assert_error(&c.cancel(&id1, &alice), 409, "order_paid");
    assert_error(&c.cancel(&id1, ADMIN_TOKEN), 409, "order_paid");
    assert_error(&c.cancel(&id1, &bob), 404, "unknown_order");
    assert_eq!(c.remaining("pc"), 9, "paid stock stays taken");

    // pending -> cancelled (owner), stock returned exactly once
    let id2 = order_id(&c.buy("pc", &alice, 2));
    assert_eq!(c.remaining("pc"), 7);
    assert_error(&c.cancel(&id2, &bob), 404, "unknown_order");
    assert_eq!(
        c.remaining("pc"),
        7,
        "stranger cancel must not return stock"
    );
    let r = c.cancel(&id2, &alice);
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], json!("cancelled"), "{r}");
    assert_eq!(r.json()["order_id"], json!(id2), "{r}");
    assert_eq!(c.remaining("pc"), 9);
    let r = c.cancel(&id2, &alice);
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], json!("cancelled"), "repeat cancel: {r}");
    let r = c.cancel(&id2, ADMIN_TOKEN);
    assert_status(&r, 200);
    assert_eq!(
        r.json()["status"],
        json!("cancelled"),
        "admin repeat cancel: {r}"
    );
    assert_eq!(c.remaining("pc"), 9, "stock returned only once");
    assert_error(&c.pay(&id2), 409, "order_cancelled");
    assert_eq!(
        c.get_order(&id2, &alice).json()["status"],
        json!("cancelled")
    );
    assert_eq!(
        c.get_order(&id2, ADMIN_TOKEN).json()["status"],
        json!("cancelled")
    );

    // pending -> cancelled (admin)
    let id3 = order_id(&c.buy("pc", &alice, 1));
    assert_eq!(c.remaining("pc"), 8);
    let r = c.cancel(&id3, ADMIN_TOKEN);
    assert_status(&r, 200);
    assert_eq!(r.json()["status"], json!("cancelled"), "{r}");
    assert_eq!(c.remaining("pc"), 9);

    for garbage in ["nope", "123"] {
        assert_error(&c.pay(garbage), 404, "unknown_order");
        assert_error(&c.cancel(garbage, &alice), 404, "unknown_order");
        assert_error(&c.cancel(garbage, ADMIN_TOKEN), 404, "unknown_order");
    }
}

#[test]
fn blocklist_put_and_delete() {
    let s = server();
    let mut c = s.client();
    s.open_sale("bl", 10, 5);
    let mallory = tok("mallory");

    let r = c.block("mallory");
    assert_status(&r, 204);
    assert!(r.body.is_empty(), "204 must have no body: {r}");
    assert_eq!(r.shard(), Some(0), "shard header on 204: {r}");
    assert_error(&c.purchase("bl", &mallory, None, None), 403, "blocked");
    c.buy("bl", &tok("alice"), 1);
    assert_status(&c.block("mallory"), 204);
    assert_error(&c.purchase("bl", &mallory, None, None), 403, "blocked");
    assert_eq!(c.remaining("bl"), 9);

    let r = c.unblock("mallory");
    assert_status(&r, 204);
    assert!(r.body.is_empty(), "204 must have no body: {r}");
    c.buy("bl", &mallory, 1);
    assert_eq!(c.remaining("bl"), 8);
}

#[test]
fn sales_list_is_sorted_with_states() {
    let s = server();
    let mut c = s.client();
    let r = c.get("/v1/sales");
    assert_status(&r, 200);
    assert_eq!(r.json(), json!({"sales": []}), "empty list");

    c.create_sale("c-open", &sale_spec(5, 1));
    c.create_sale("a-upcoming", &upcoming_spec(5));
    c.create_sale("b-ended", &ended_spec(5));
    c.create_sale("d-soldout", &sale_spec(1, 1));
    c.buy("d-soldout", &tok("alice"), 1);

    let r = c.get("/v1/sales");
    assert_status(&r, 200);
    let list = r.json();
    let sales = list["sales"]
        .as_array()
        .unwrap_or_else(|| panic!("\"sales\" must be an array: {list}"));
    let got: Vec<(String, String)> = sales
        .iter()
        .map(|s| {
            assert_keys(s, &SALE_KEYS);
            (
                s["sku"].as_str().unwrap_or("?").to_owned(),
                s["state"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("a-upcoming", "upcoming"),
        ("b-ended", "ended"),
        ("c-open", "open"),
        ("d-soldout", "sold_out"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want, "list order/states: {list}");
    for s in sales {
        let sku = s["sku"].as_str().unwrap();
        assert_eq!(&c.get_sale(sku), s, "list entry equals GET /v1/sales/{sku}");
    }
}

#[test]
fn token_cli_mints_working_tokens() {
    let s = server();
    let before = now_secs();
    let out = Command::new(BIN)
        .args(["token", "--user", "cli_user-1", "--ttl-secs", "60"])
        .env("SECKILL_TOKEN_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run seckill token");
    let after = now_secs();
    assert!(
        out.status.success(),
        "seckill token failed: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout)
        .expect("utf8 stdout")
        .trim()
        .to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(
        parts.len(),
        3,
        "token must be user.expires.sig, got {token:?}"
    );
    assert_eq!(parts[0], "cli_user-1");
    let exp: i64 = parts[1]
        .parse()
        .unwrap_or_else(|_| panic!("expiry not an integer: {token}"));
    assert!(
        exp >= before + 60 - 1 && exp <= after + 60 + 1,
        "expiry {exp} should be now+60 (now in {before}..={after})"
    );
    assert_eq!(
        token,
        token_with("cli_user-1", exp, SECRET),
        "signature format"
    );

    s.open_sale("cli", 5, 1);
    let mut c = s.client();
    let r = c.purchase("cli", &token, None, None);
    assert_status(&r, 201);
    assert_eq!(r.json()["user_id"], json!("cli_user-1"));

    // Default TTL is positive and the token works.
    let out = Command::new(BIN)
        .args(["token", "--user", "cli2"])
        .env("SECKILL_TOKEN_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run seckill token");
    assert!(
        out.status.success(),
        "seckill token (default ttl) failed: {out:?}"
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let exp: i64 = token
        .split('.')
        .nth(1)
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);
    assert!(
        exp > now_secs(),
        "default ttl must be in the future: {token}"
    );
    assert_status(&c.purchase("cli", &token, None, None), 201);
}
