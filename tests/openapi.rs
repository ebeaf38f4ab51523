//! The machine-readable contract, `openapi.yaml`, against the real server: it is served at
//! `/openapi.json`, it names exactly the operations the server has, and schemathesis (PyPI),
//! fuzzing every operation from the document, finds no 5xx, no response that breaks it (status,
//! content type, headers, body) and no request it calls invalid that the server accepts. `openapi_redis.rs` runs the same in cluster mode.
//!
//! schemathesis is found as `$SECKILL_SCHEMATHESIS`, or `schemathesis` on the PATH; CI installs
//! it and sets `SECKILL_REQUIRE_SCHEMATHESIS=1`, so there a missing one fails instead of skipping.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

/// Every operation the server answers, as `METHOD /path/{param}` (HEAD too, wherever GET is,
/// as the document says once): the router's list, kept here by hand so that an endpoint added without its contract (or a contract for an endpoint that
/// does not exist) fails [`the_contract_is_served_and_names_every_operation`].
const OPERATIONS: [&str; 28] = [
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /shop/{sku}",
    "GET /shop/assets/{asset}",
    "GET /v1/time",
    "GET /v1/sales",
    "GET /v1/sales/{sku}",
    "PUT /v1/sales/{sku}",
    "POST /v1/sales/{sku}/purchase",
    "GET /v1/sales/{sku}/pow",
    "POST /v1/sales/{sku}/queue",
    "GET /v1/sales/{sku}/queue/{ticket}",
    "POST /v1/sales/{sku}/register",
    "GET /v1/sales/{sku}/register",
    "GET /v1/sales/{sku}/lottery",
    "GET /v1/sales/{sku}/lottery/registrants",
    "POST /v1/sales/{sku}/resume",
    "GET /v1/sales/{sku}/orders",
    "GET /v1/orders",
    "GET /v1/orders/{order_id}",
    "POST /v1/orders/{order_id}/pay",
    "POST /v1/orders/{order_id}/cancel",
    "POST /v1/payments/webhook",
    "GET /v1/blocklist",
    "PUT /v1/blocklist/{user_id}",
    "DELETE /v1/blocklist/{user_id}",
];

/// The shopper schemathesis buys as.
const FUZZ_USER: &str = "schemathesis";
/// The sale the document's examples name, so the examples phase reaches a real sale.
const EXAMPLE_SKU: &str = "moutai";
/// A waiting-room sale, open, in which the fuzzing shopper holds ticket 1: the queue's
/// operations reach their handlers' logic, not only `409 no_waiting_room`.
const ROOM_SKU: &str = "moutai-room";
/// A lottery, drawn, in which the fuzzing shopper registered (and, alone, won).
const LOTTERY_SKU: &str = "moutai-lottery";

fn contract(server: &Server) -> Value {
    let response = server.client().get("/openapi.json");
    assert_eq!(response.status, 200, "{response}");
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{response}"
    );
    response.json()
}

/// `METHOD /path` for every operation of the document, the path as the document writes it.
fn documented_operations(document: &Value) -> BTreeSet<String> {
    let paths = document["paths"]
        .as_object()
        .unwrap_or_else(|| panic!("the document has no paths: {document}"));
    let mut operations = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in ["get", "put", "post", "delete", "head", "patch", "options"] {
            if item.contains_key(method) {
                operations.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations
}

#[test]
fn the_contract_is_served_and_names_every_operation() {
    let server = Server::start(2, &[]);
    let document = contract(&server);
    assert_eq!(document["openapi"], "3.1.0", "not OpenAPI 3.1");
    assert_eq!(
        document["info"]["version"],
        env!("CARGO_PKG_VERSION"),
        "the contract's version is not the package's"
    );

    // OPTIONS is documented on every path, and the router takes it wherever a path exists;
    // the router's own list is of the other methods.
    let documented: BTreeSet<String> = documented_operations(&document)
        .into_iter()
        .filter(|op| !op.starts_with("OPTIONS "))
        .collect();
    let served: BTreeSet<String> = OPERATIONS.iter().map(|op| op.to_string()).collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "operations the server has but the contract lacks: {undocumented:?}; \
         operations the contract has that this test does not know: {unserved:?}"
    );

    // Each documented operation reaches a handler: the router neither calls the path unknown
    // nor refuses the method.
    let mut c = server.client();
    for op in &documented {
        let (method, template) = op.split_once(' ').expect("METHOD /path");
        let path = template
            .replace("{sku}", "no-such-sku")
            .replace("{order_id}", "01M85B2H5P2RCP85643XZTH01X.no-such-sku")
            .replace("{user_id}", "nobody")
            .replace("{ticket}", "1")
            .replace("{asset}", "shop.js");
        let body = matches!(method, "PUT" | "POST").then_some("{}");
        let response = c.request(method, &path, &[], body);
        assert!(
            response.error_code().as_deref() != Some("not_found")
                && response.error_code().as_deref() != Some("method_not_allowed"),
            "{op} ({method} {path}) is documented but the router does not route it: {response}"
        );
    }
}

/// Where schemathesis is, or a skip (a failure where CI requires it).
fn schemathesis() -> Option<String> {
    let program = std::env::var("SECKILL_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    skip::tool_present(
        &program,
        "SECKILL_REQUIRE_SCHEMATHESIS",
        "pip install schemathesis",
    )
    .then_some(program)
}

/// Gives schemathesis something real to find: the examples' sale, open, and a few orders of the
/// fuzzing shopper in it (to read, pay and cancel). Returns their ids.
fn seed(server: &Server) -> Vec<String> {
    let mut c = server.client();
    let now = now_ms();
    c.create_sale(
        EXAMPLE_SKU,
        &json!({
            "name": "Moutai 53% 500ml", "stock": 1_000_000, "per_user_limit": 1_000_000,
            "starts_at": now - 1_000, "ends_at": now + 3_600_000,
        }),
    );
    c.create_sale(
        ROOM_SKU,
        &json!({
            "name": "Moutai, queued", "stock": 1_000_000, "starts_at": now + 1_000,
            "ends_at": now + 3_600_000, "admission": "waiting_room", "queue_opens_at": now,
        }),
    );
    let joined = c.authed(
        "POST",
        &format!("/v1/sales/{ROOM_SKU}/queue"),
        &tok(FUZZ_USER),
        None,
    );
    assert_eq!(joined.status, 201, "{joined}");
    (0..4)
        .map(|_| order_id(&c.buy(EXAMPLE_SKU, &tok(FUZZ_USER), 1)))
        .collect()
}

/// schemathesis' configuration: one credential per security scheme of the document, so each
/// operation is called as the caller it is for (and also without), and half of the SKUs and
/// order ids it puts in paths are real ones, so the calls get past `404` to the handlers' logic.
fn config(orders: &[String]) -> String {
    let quoted = |values: &[String]| {
        values
            .iter()
            .map(|v| format!("{v:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[auth.openapi.admin]\nbearer = \"{ADMIN_TOKEN}\"\n\
         [auth.openapi.shopper]\nbearer = \"{shopper}\"\n\
         [auth.openapi.paymentService]\nbearer = \"{PAYMENT_TOKEN}\"\n\
         [dictionaries.skus]\nvalues = [{skus}]\n\
         [dictionaries.orders]\nvalues = [{orders}]\n\
         [dictionaries.tickets]\nvalues = [\"1\"]\n\
         [parameters]\n\
         \"path.sku\" = {{ dictionary = \"skus\", probability = 0.5 }}\n\
         \"path.order_id\" = {{ dictionary = \"orders\", probability = 0.5 }}\n\
         \"path.ticket\" = {{ dictionary = \"tickets\", probability = 0.5 }}\n",
        shopper = tok(FUZZ_USER),
        skus = quoted(&[EXAMPLE_SKU, ROOM_SKU, LOTTERY_SKU].map(str::to_owned)),
        orders = quoted(orders),
    )
}

/// Runs schemathesis over every operation of the served contract with the checks the contract
/// promises (`negative_data_rejection`: what the document calls invalid is refused with a 4xx),
/// and fails with its report if any check fails.
fn fuzz_the_contract() {
    let Some(program) = schemathesis() else {
        return;
    };
    let server = Server::start(2, &[]);
    let orders = seed(&server);
    let scratch = ScratchDir::new();
    let config_path = scratch.path().join("schemathesis.toml");
    std::fs::write(&config_path, config(&orders)).expect("write the schemathesis config");
    let examples = std::env::var("SECKILL_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    let junit = scratch.path().join("junit.xml");
    let output = Command::new(&program)
        .arg("--config-file")
        .arg(&config_path)
        .arg("run")
        .arg(format!("http://{}/openapi.json", server.addr()))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,negative_data_rejection",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            &examples,
            // Reproducible: a failure found in CI is found again by hand with the same seed.
            "--seed",
            "20261205",
            // One worker: schemathesis' coverage phase on several threads has crashed CPython
            // 3.11 ("AST constructor recursion depth mismatch"), failing a run for nothing.
            "--workers",
            "1",
            "--request-timeout",
            "30",
            "--no-color",
            // Nothing kept between runs: each run is the seed's, and the clone stays clean.
            "--generation-database",
            "none",
            "--report",
            "junit",
            "--report-junit-path",
        ])
        .arg(&junit)
        .current_dir(scratch.path())
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found responses that break the contract (orders {orders:?}):\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The summary (operations, cases, checks), for `--nocapture`.
    let summary: Vec<&str> = stdout.lines().rev().take(25).collect();
    eprintln!(
        "{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    // A run that tested nothing would also succeed: every operation must have been called,
    // except the document's own URL, which schemathesis leaves out.
    let report = std::fs::read_to_string(&junit).expect("read the junit report");
    let tested: BTreeSet<String> = report
        .split("<testcase ")
        .skip(1)
        .filter_map(|case| case.split_once("name=\"")?.1.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .collect();
    let mut expected = documented_operations(&contract(&server));
    expected.remove("GET /openapi.json");
    let untested: Vec<_> = expected.difference(&tested).collect();
    assert!(
        untested.is_empty(),
        "schemathesis did not test {untested:?}:\n{stdout}"
    );
    server.assert_healthy();
}

#[test]
fn schemathesis_finds_no_server_error_and_no_response_that_breaks_the_contract() {
    fuzz_the_contract();
}
