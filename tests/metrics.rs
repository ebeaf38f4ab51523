//! `/metrics` through the real server: exact counters after a known sequence of requests, strict
//! exposition format (our own parser, and the Python `prometheus_client` parser), request ids in
//! responses and in error logs, and no per-request logging at info level.

mod common;

use std::process::Command;

use common::prometheus::{self, Exposition};
use common::*;

/// Scrapes `/metrics` on a fresh connection and parses it strictly.
#[track_caller]
fn scrape(server: &Server) -> (Exposition, String) {
    let response = server.client().get("/metrics");
    assert_eq!(response.status, 200, "GET /metrics: {response}");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{response}"
    );
    let text = response.text();
    match prometheus::parse(&text) {
        Ok(parsed) => (parsed, text),
        Err(error) => panic!("/metrics is not valid exposition format: {error}\n{text}"),
    }
}

#[test]
fn the_strict_parser_rejects_what_the_format_forbids() {
    prometheus::self_test();
}

#[test]
fn counters_match_a_known_sequence_of_requests() {
    let server = Server::start(2, &[]);
    let mut client = server.client();
    for _ in 0..3 {
        assert_status(&client.get("/healthz"), 200);
    }
    client.create_sale("metered", &sale_spec(2, 1));
    let first = client.buy("metered", &tok("m-u1"), 1);
    assert_error(
        &client.purchase("metered", &tok("m-u1"), Some(1), None),
        403,
        "limit_exceeded",
    );
    client.buy("metered", &tok("m-u2"), 1);
    assert_error(
        &client.purchase("metered", &tok("m-u3"), Some(1), None),
        409,
        "sold_out",
    );
    assert_error(
        &client.purchase("metered", "not-a-token", Some(1), None),
        401,
        "unauthorized",
    );
    assert_status(&client.pay(&order_id(&first)), 200);
    assert_status(&client.get("/v1/sales/metered"), 200);
    for _ in 0..2 {
        assert_error(&client.get("/no/such/path"), 404, "not_found");
    }
    assert_error(
        &client.request("POST", "/metrics", &[], Some("")),
        405,
        "method_not_allowed",
    );
    let mut raw = server.raw_connect();
    raw.send_raw(b"NONSENSE\r\n\r\n");
    assert_error(
        &raw.expect_response("malformed request"),
        400,
        "bad_request",
    );

    let (metrics, text) = scrape(&server);
    let requests = |route: &str, status: &str| {
        metrics.count(
            "seckill_http_requests_total",
            &[("route", route), ("status", status)],
        )
    };
    assert_eq!(requests("healthz", "200"), 3, "{text}");
    assert_eq!(requests("put_sale", "201"), 1, "{text}");
    assert_eq!(requests("purchase", "201"), 2, "{text}");
    assert_eq!(requests("purchase", "403"), 1, "{text}");
    assert_eq!(requests("purchase", "409"), 1, "{text}");
    assert_eq!(requests("purchase", "401"), 1, "{text}");
    assert_eq!(requests("pay_order", "200"), 1, "{text}");
    assert_eq!(requests("get_sale", "200"), 1, "{text}");
    assert_eq!(requests("unmatched", "404"), 2, "{text}");
    assert_eq!(requests("metrics", "405"), 1, "{text}");
    assert_eq!(requests("malformed", "400"), 1, "{text}");
    // Nothing else was asked, besides the harness polling /readyz at start (the scrape itself is
    // counted after it renders).
    let total = metrics.sum("seckill_http_requests_total", &[]);
    let readiness = metrics.sum("seckill_http_requests_total", &[("route", "readyz")]);
    assert_eq!(total - readiness, 15.0, "{text}");

    let outcome =
        |outcome: &str| metrics.count("seckill_purchase_outcomes_total", &[("outcome", outcome)]);
    assert_eq!(outcome("created"), 2, "{text}");
    assert_eq!(outcome("limit_exceeded"), 1, "{text}");
    assert_eq!(outcome("sold_out"), 1, "{text}");
    assert_eq!(outcome("unauthorized"), 1, "{text}");

    let latency_count = metrics.count(
        "seckill_request_duration_seconds_count",
        &[("route", "purchase")],
    );
    assert_eq!(latency_count, 5, "{text}");
    let within_10s = metrics.count(
        "seckill_request_duration_seconds_bucket",
        &[("route", "purchase"), ("le", "10")],
    );
    assert_eq!(within_10s, 5, "{text}");

    assert_eq!(
        metrics.value("seckill_stock_remaining", &[("sku", "metered")]),
        Some(0.0),
        "{text}"
    );
    let orders = |status: &str| metrics.count("seckill_orders", &[("status", status)]);
    assert_eq!(
        (
            orders("pending"),
            orders("paid"),
            orders("expired"),
            orders("cancelled")
        ),
        (1, 1, 0, 0),
        "{text}"
    );
    // The scraping connection is open while the scrape runs.
    assert!(
        metrics.count("seckill_connections_open", &[]) >= 1,
        "{text}"
    );
    assert_eq!(
        metrics.samples("seckill_shard_queue_depth").len(),
        2,
        "{text}"
    );
    // The sale was announced to the other shard.
    assert!(
        metrics.sum("seckill_shard_messages_sent_total", &[("kind", "notice")]) >= 1.0,
        "{text}"
    );
    // Sale, two orders and one payment: four journal records, each durable in some group.
    assert_eq!(
        metrics.value("seckill_journal_group_records_sum", &[]),
        Some(4.0),
        "{text}"
    );
    assert!(metrics.count("seckill_journal_sync_duration_seconds_count", &[]) >= 1);
    assert_eq!(metrics.count("seckill_journal_failed_shards", &[]), 0);
    assert_eq!(metrics.count("seckill_shards_reporting", &[]), 2);
}

#[test]
fn cross_shard_calls_are_counted() {
    let server = Server::start(2, &[]);
    server.open_sale("routed", 100, 100);
    // The same purchase from both shards: whichever is not the owner must hop.
    for shard in 0..2 {
        let mut client = server.client_on_shard(shard);
        for n in 0..3 {
            client.buy("routed", &tok(&format!("hop-{shard}-{n}")), 1);
        }
    }
    let (metrics, text) = scrape(&server);
    let calls = metrics.sum("seckill_shard_messages_sent_total", &[("kind", "call")]);
    assert!(
        calls >= 3.0,
        "three purchases landed on the non-owner shard:\n{text}"
    );
}

#[test]
fn the_exposition_parses_with_prometheus_client() {
    let probe = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output();
    let available = matches!(&probe, Ok(out) if out.status.success());
    if !available {
        skip_unless_required(
            "SECKILL_REQUIRE_PROMETHEUS_CLIENT",
            "python3 prometheus_client is not installed (pip install prometheus_client; .ci/run does)",
        );
        return;
    }
    let server = Server::start(2, &[]);
    let mut client = server.client();
    client.create_sale("parsed", &sale_spec(1, 1));
    client.buy("parsed", &tok("p-u1"), 1);
    client.purchase("parsed", &tok("p-u2"), Some(1), None);
    let (_, text) = scrape(&server);
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(sys.stdin.read())}
assert families["seckill_http_requests"].type == "counter", families["seckill_http_requests"].type
assert families["seckill_request_duration_seconds"].type == "histogram"
assert families["seckill_journal_group_records"].type == "histogram"
assert families["seckill_stock_remaining"].type == "gauge"
created = [s.value for s in families["seckill_purchase_outcomes"].samples
           if s.name == "seckill_purchase_outcomes_total" and s.labels == {"outcome": "created"}]
assert created == [1.0], created
print(len(families))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed the exposition");
    let out = child.wait_with_output().expect("python3 finished");
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn request_ids_are_echoed_or_generated() {
    let server = Server::start(1, &[]);
    let mut client = server.client();
    let echoed = client.request(
        "GET",
        "/healthz",
        &[("X-Request-Id", "trace-abc.123")],
        None,
    );
    assert_eq!(echoed.header("x-request-id"), Some("trace-abc.123"));
    let first = client.get("/healthz");
    let second = client.get("/no/such/path");
    let (a, b) = (first.header("x-request-id"), second.header("x-request-id"));
    assert!(a.is_some_and(|id| !id.is_empty()), "{first}");
    assert_ne!(a, b, "generated ids must differ");
    let too_long = "x".repeat(200);
    let replaced = client.request("GET", "/healthz", &[("X-Request-Id", &too_long)], None);
    let id = replaced.header("x-request-id").unwrap_or_default();
    assert!(!id.is_empty() && id != too_long, "{replaced}");
    // Rejected before routing: still answered with an id.
    let mut raw = server.raw_connect();
    raw.send_raw(b"GARBAGE\r\n\r\n");
    let rejected = raw.expect_response("malformed");
    assert!(rejected.header("x-request-id").is_some(), "{rejected}");
}

#[test]
fn error_logs_carry_the_request_id_as_json() {
    let server = Server::start(1, &["--log-format", "json", "--log-level", "debug"]);
    let mut client = server.client();
    server.open_sale("logged", 1, 1);
    let refused = client.request(
        "POST",
        "/v1/sales/logged/purchase",
        &[
            ("X-Request-Id", "req-refused-7"),
            ("Authorization", "Bearer nope"),
        ],
        Some(""),
    );
    assert_error(&refused, 401, "unauthorized");
    let line = poll(common::process::READY_BOUND, || {
        server
            .log()
            .lines()
            .find(|line| line.contains("req-refused-7"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no log line names the request id:\n{}", server.log()));
    let entry: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
    let fields = &entry["fields"];
    assert_eq!(fields["request_id"], "req-refused-7", "{line}");
    assert_eq!(fields["error"], "unauthorized", "{line}");
    assert_eq!(fields["status"], 401, "{line}");
    assert!(fields["detail"].is_string(), "the human text: {line}");
    // serde_json keeps the last of two equal keys, so count them in the text: one `message`
    // per line, however the event named its fields.
    for line in server.log().lines() {
        let _: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert_eq!(line.matches("\"message\":").count(), 1, "{line}");
    }
}

#[test]
fn startup_logs_are_plain_text_without_false_alarms() {
    // stderr is a file here, as under systemd: no colour codes. Every start used to log an
    // ERROR per shard from glommio's harmless iopoll probe; an operator must be able to alert
    // on ERROR.
    let server = Server::start(2, &["--log-level", "debug"]);
    let ready = poll(common::process::READY_BOUND, || {
        server.log().contains("seckill is ready").then_some(())
    });
    let log = server.log();
    assert!(ready.is_some(), "never ready:\n{log}");
    assert!(!log.contains('\x1b'), "ANSI escape codes in a file:\n{log}");
    let errors: Vec<&str> = log.lines().filter(|line| line.contains("ERROR")).collect();
    assert!(errors.is_empty(), "errors at a clean start: {errors:#?}");
    // Where glommio probed (not on every device), its record is kept at debug level, explained.
    for line in log.lines().filter(|line| line.contains("iopoll")) {
        assert!(
            line.contains("DEBUG") && line.contains("harmless"),
            "{line}"
        );
    }
}

#[test]
fn nothing_is_logged_per_request_at_info() {
    // The harness defaults to RUST_LOG=warn; the flag wins over it.
    let server = Server::start(2, &["--log-level", "info"]);
    let mut client = server.client();
    server.open_sale("quiet", 1, 1);
    // Startup logging ends with "seckill is ready" (written around when /readyz turns 200):
    // count from there, however long a loaded machine takes to get there.
    let ready = poll(common::process::READY_BOUND, || {
        server.log().contains("seckill is ready").then_some(())
    });
    assert!(
        ready.is_some(),
        "startup is logged at info, so the level is in effect:\n{}",
        server.log()
    );
    let before = server.log().lines().count();
    for n in 0..20 {
        let _ = client.purchase("quiet", &tok(&format!("q-{n}")), Some(1), None);
        let _ = client.get("/nope");
        let _ = client.get("/v1/sales/quiet");
    }
    let mut raw = server.raw_connect();
    raw.send_raw(b"GARBAGE\r\n\r\n");
    let _ = raw.expect_response("malformed");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = server.log();
    let after: Vec<&str> = log.lines().skip(before).collect();
    assert!(after.is_empty(), "info-level lines per request: {after:#?}");
}

#[test]
fn a_load_report_matches_the_servers_own_metrics() {
    let server = Server::start(2, &[]);
    server.open_sale("loaded", 40, 1);
    let url = format!("http://{}", server.addr());
    let output = common::process::run(
        Command::new(BIN)
            .args(["load", "--url", &url, "--rate", "400", "--duration", "2s"])
            .args([
                "--connections",
                "8",
                "--users",
                "200",
                "--sku",
                "loaded",
                "--json",
            ])
            .env("SECKILL_TOKEN_SECRET", SECRET),
    );
    assert!(
        output.status.success(),
        "seckill load failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "--json is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(report["errors"], 0, "{report}");
    let (metrics, text) = scrape(&server);

    let statuses = report["status"].as_object().expect("status counts");
    assert!(!statuses.is_empty(), "{report}");
    for (status, count) in statuses {
        assert_eq!(
            metrics.count(
                "seckill_http_requests_total",
                &[("route", "purchase"), ("status", status)]
            ),
            count.as_u64().expect("a count"),
            "status {status}: report {report}\nmetrics:\n{text}"
        );
    }
    let purchases = metrics.sum("seckill_http_requests_total", &[("route", "purchase")]);
    assert_eq!(
        Some(purchases as u64),
        report["completed"].as_u64(),
        "{report}"
    );

    let outcomes = report["outcomes"].as_object().expect("outcomes");
    for (outcome, summary) in outcomes {
        assert_eq!(
            metrics.count("seckill_purchase_outcomes_total", &[("outcome", outcome)]),
            summary["count"].as_u64().expect("a count"),
            "outcome {outcome}: report {report}\nmetrics:\n{text}"
        );
    }
    assert_eq!(report["outcomes"]["created"]["count"], 40, "{report}");
    assert_eq!(
        metrics.count("seckill_orders", &[("status", "pending")]),
        40,
        "{text}"
    );
}

#[test]
fn idempotent_replays_are_counted_apart_from_sales() {
    let server = Server::start(2, &[]);
    let mut client = server.client();
    client.create_sale("replayed", &sale_spec(5, 1));
    let token = tok("r-u1");
    for _ in 0..3 {
        let answer = client.purchase("replayed", &token, Some(1), Some("key-1"));
        assert_status(&answer, 201);
    }
    let (metrics, text) = scrape(&server);
    let outcome =
        |outcome: &str| metrics.count("seckill_purchase_outcomes_total", &[("outcome", outcome)]);
    assert_eq!(outcome("created"), 1, "{text}");
    assert_eq!(outcome("replayed"), 2, "{text}");
    assert_eq!(
        metrics.value("seckill_stock_remaining", &[("sku", "replayed")]),
        Some(4.0)
    );
}

#[test]
fn refused_connections_are_counted() {
    let server = Server::start(1, &["--max-connections-per-shard", "1"]);
    // Hold the only slot, and scrape through it.
    let mut held = poll(common::process::READY_BOUND, || {
        let mut client = server.raw_connect();
        client
            .try_request("GET", "/healthz", &[], None)
            .ok()
            .filter(|r| r.status == 200)
            .map(|_| client)
    })
    .expect("a connection is admitted");
    // Admission attempts may have been refused while the harness's probe connection closed, so
    // count from a first scrape.
    let mut refused_so_far = || {
        let response = held.get("/metrics");
        assert_status(&response, 200);
        let text = response.text();
        let metrics = prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(metrics.count("seckill_connections_open", &[]), 1, "{text}");
        metrics.count("seckill_connections_refused_total", &[])
    };
    let before = refused_so_far();
    for _ in 0..3 {
        let mut extra = server.raw_connect();
        let refused = extra.expect_response("over the cap");
        assert_error(&refused, 503, "overloaded");
    }
    assert_eq!(refused_so_far() - before, 3);
}

#[test]
fn scrapes_are_rate_limited() {
    let server = Server::start(1, &[]);
    let statuses = pipelined_burst(&server, "/metrics", 20, "too_many_scrapes");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.contains(&429),
        "20 back-to-back scrapes: {statuses:?}"
    );
}
