//! The operators' pictures: `dashboards/seckill.json` (Grafana) and `dashboards/alerts.yml`
//! (Prometheus rules). Every expression must name metrics the real server exports, checked
//! against live scrapes of an embedded node and of a cluster-mode node with the order feed on,
//! so a renamed metric cannot leave a panel or an alert silently empty. The rules also pass
//! `promtool check rules` (Debian `prometheus`; required in CI).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::prometheus;
use common::redis::RedisServer;
use common::skip::skip_unless_required;
use common::*;

/// The alerts the issue asks for, by the condition each watches.
const REQUIRED_ALERTS: [(&str, &str); 5] = [
    ("overload", "SeckillOverloaded"),
    ("breaker open", "SeckillRedisBreakerOpen"),
    ("store failure", "SeckillJournalFailed"),
    ("publish lag", "SeckillEventsPublishLag"),
    ("journal sync latency", "SeckillJournalSyncSlow"),
];

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Every series name `server` exports: sample names, family names, and a histogram's
/// `_bucket`, `_sum` and `_count` even while it has no samples.
fn exported(server: &Server, into: &mut BTreeSet<String>) {
    let response = server.client().get("/metrics");
    assert_eq!(response.status, 200, "{response}");
    let parsed = prometheus::parse(&response.text())
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}"));
    for (name, family) in &parsed.families {
        into.insert(name.clone());
        if family.kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                into.insert(format!("{name}{suffix}"));
            }
        }
        into.extend(family.samples.iter().map(|sample| sample.name.clone()));
    }
}

/// The `seckill_*` names an expression reads (label values in quotes are not names).
fn metric_names(expr: &str) -> Vec<String> {
    let unquoted: String = expr.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    let mut names = Vec::new();
    let mut rest = unquoted.as_str();
    while let Some(at) = rest.find("seckill_") {
        let preceded = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded {
            names.push(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    names
}

/// Every `expr` of the dashboard's panels (found wherever it sits in the JSON).
fn dashboard_exprs(value: &serde_json::Value, into: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => into.push(expr.clone()),
                    _ => dashboard_exprs(value, into),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_exprs(item, into);
            }
        }
        _ => {}
    }
}

/// `(alert name, expr)` of every rule, each expression on its own line (the file says so).
fn alert_rules(text: &str) -> Vec<(String, String)> {
    let mut rules = Vec::new();
    let mut alert = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert:") {
            alert = Some(name.trim().to_owned());
        } else if let Some(expr) = line.strip_prefix("expr:") {
            let name = alert
                .take()
                .unwrap_or_else(|| panic!("expr outside an alert: {line}"));
            let expr = expr.trim();
            assert!(
                !expr.is_empty() && !expr.starts_with('|') && !expr.starts_with('>'),
                "{name}: keep the expression on one line"
            );
            rules.push((name, expr.to_owned()));
        }
    }
    rules
}

#[test]
fn every_panel_and_alert_reads_metrics_the_server_exports() {
    let mut names = BTreeSet::new();
    let embedded = Server::start(2, &[]);
    exported(&embedded, &mut names);
    drop(embedded);
    // Cluster mode with the order feed on (its broker need not be up for the metrics to exist).
    let redis = RedisServer::start(&[]);
    let broker = format!("nats://127.0.0.1:{}", pick_port());
    let cluster = Server::start(2, &["--redis", &redis.url(), "--events", &broker]);
    exported(&cluster, &mut names);
    drop(cluster);
    for family in [
        "seckill_journal_sync_duration_seconds",
        "seckill_redis_breaker_state",
        "seckill_events_publish_lag_seconds",
    ] {
        assert!(names.contains(family), "{family} not scraped: {names:#?}");
    }

    let dashboard: serde_json::Value = serde_json::from_str(&repo_file("dashboards/seckill.json"))
        .unwrap_or_else(|e| panic!("dashboards/seckill.json is not JSON: {e}"));
    let panels = dashboard["panels"].as_array().map_or(0, Vec::len);
    assert!(panels >= 10, "{panels} panels");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    let rules = alert_rules(&repo_file("dashboards/alerts.yml"));
    exprs.extend(rules.iter().map(|(_, expr)| expr.clone()));
    assert!(exprs.len() > rules.len(), "no panel expressions");

    let mut unknown = Vec::new();
    for expr in &exprs {
        let read = metric_names(expr);
        assert!(!read.is_empty(), "reads no seckill metric: {expr}");
        unknown.extend(
            read.into_iter()
                .filter(|name| !names.contains(name))
                .map(|name| format!("{name} in {expr}")),
        );
    }
    assert!(
        unknown.is_empty(),
        "expressions name metrics the server does not export:\n{}",
        unknown.join("\n")
    );
    for (condition, alert) in REQUIRED_ALERTS {
        assert!(
            rules.iter().any(|(name, _)| name == alert),
            "no alert for {condition} ({alert})"
        );
    }
}

#[test]
fn the_alert_rules_pass_promtool() {
    let checked = Command::new("promtool")
        .args(["check", "rules"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards/alerts.yml"))
        .output();
    let output = match checked {
        Ok(output) => output,
        Err(error) => {
            skip_unless_required(
                "SECKILL_REQUIRE_PROMTOOL",
                &format!("promtool not runnable ({error}); apt-get install prometheus"),
            );
            return;
        }
    };
    assert!(
        output.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_name_reader_finds_every_metric_of_an_expression() {
    assert_eq!(
        metric_names(r#"sum(rate(seckill_a_total{x="seckill_b"}[5m])) / my_seckill_c + seckill_d"#),
        ["seckill_a_total", "seckill_d"]
    );
}
