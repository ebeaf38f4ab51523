//! The shopper page in a real browser: headless Chromium, driven by `tests/browser/shop.mjs`
//! (playwright-core), opens `/shop/{sku}` of a waiting-room sale that asks for proof-of-work,
//! waits out the countdown, joins (the page's Web Worker solves the challenge), is admitted,
//! buys and pays; the order is then checked through the API. `shop_page_redis.rs` runs it in
//! cluster mode. A failure saves a screenshot and names it.
//!
//! Needs `chromium` (Debian's) and `playwright-core` (npm) in `$SECKILL_PLAYWRIGHT_DIR` (default
//! `target/browser-test`); `.ci/run` installs both and sets `SECKILL_REQUIRE_BROWSER`, so CI
//! fails rather than skips without them.
pub mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::{json, Value};

/// Bits the page's sale asks for: real work for the worker, seconds at most in a debug browser.
const PAGE_POW_BITS: u64 = 14;

fn playwright_dir() -> PathBuf {
    std::env::var_os("SECKILL_PLAYWRIGHT_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-test"),
        PathBuf::from,
    )
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

/// Whether the browser, node and playwright-core are here; a skip (or, where CI requires
/// them, a failure) otherwise.
fn browser_present() -> bool {
    const REQUIRED_BY: &str = "SECKILL_REQUIRE_BROWSER";
    if !skip::tool_present(&chromium(), REQUIRED_BY, "apt-get install chromium")
        || !skip::tool_present("node", REQUIRED_BY, "apt-get install nodejs")
    {
        return false;
    }
    let module = playwright_dir().join("node_modules/playwright-core");
    if !module.exists() {
        skip::skip_unless_required(
            REQUIRED_BY,
            &format!(
                "{} is missing (npm install --prefix {} playwright-core)",
                module.display(),
                playwright_dir().display()
            ),
        );
        return false;
    }
    true
}

#[test]
fn a_shopper_joins_is_admitted_buys_and_pays_in_a_real_browser() {
    if !browser_present() {
        return;
    }
    let server = Server::start(2, &[]);
    let mut c = server.client();
    let now = now_ms();
    let sale = c.create_sale(
        "page",
        &json!({
            "name": "Moutai 53% 500ml", "stock": 5, "price": 149_900, "currency": "CNY",
            "starts_at": now + 10_000, "ends_at": now + 3_600_000,
            "admission": "waiting_room", "queue_opens_at": now, "admission_rate": 10,
            "pow_bits": PAGE_POW_BITS,
        }),
    );
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "shop-page-{}-{}.png",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    let out = Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/shop.mjs"))
        .arg(format!("http://127.0.0.1:{}", server.port))
        .arg("page")
        .arg(tok("page-shopper"))
        .arg(PAYMENT_TOKEN)
        .arg(&screenshot)
        .env("PLAYWRIGHT_DIR", playwright_dir())
        .env("CHROMIUM", chromium())
        .output()
        .expect("run node");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the browser run failed; screenshot: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        screenshot.display()
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("the script's JSON line");
    println!("browser: {report}");
    assert!(
        report["countdown"]
            .as_str()
            .is_some_and(|text| text.starts_with("Starts in")),
        "no countdown before the start: {report}"
    );
    let id = report["orderId"].as_str().expect("an order id");
    // A new connection: the first idled while the browser ran, and the server closes idle ones.
    let mut c = server.client();
    let order = c.get_order(id, ADMIN_TOKEN);
    assert_status(&order, 200);
    let order = order.json();
    assert_eq!(
        (&order["user_id"], &order["status"], &order["amount"]),
        (&json!("page-shopper"), &json!("paid"), &sale["price"]),
        "{order}"
    );
    assert_eq!(c.remaining("page"), 4);
    let hashes: f64 = report["powHashes"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .expect("hashes");
    let ms: f64 = report["powMs"]
        .as_str()
        .and_then(|m| m.parse().ok())
        .expect("ms");
    println!(
        "browser proof-of-work: {hashes} hashes in {ms} ms ({:.0} hashes/s)",
        hashes / (ms / 1000.0).max(1e-3)
    );
}

#[test]
fn the_page_and_its_assets_are_served_with_their_policy() {
    let server = Server::start(1, &[]);
    let mut c = server.client();
    let page = c.get("/shop/moutai");
    assert_status(&page, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap_or_default();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "{page}"
    );
    assert!(page.text().contains("/shop/assets/shop.js"));
    for (asset, kind) in [
        ("shop.js", "text/javascript; charset=utf-8"),
        ("pow-worker.js", "text/javascript; charset=utf-8"),
        ("shop.css", "text/css; charset=utf-8"),
    ] {
        let r = c.get(&format!("/shop/assets/{asset}"));
        assert_status(&r, 200);
        assert_eq!(r.header("content-type"), Some(kind), "{asset}");
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
    assert_error(&c.get("/shop/assets/secret.txt"), 404, "not_found");
    assert_error(&c.get("/shop/not%20an%20id"), 404, "unknown_sale");
    let r = c.request("POST", "/shop/moutai", &[], Some(""));
    assert_error(&r, 405, "method_not_allowed");
}
