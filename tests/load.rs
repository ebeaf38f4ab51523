//! `seckill load`, the open-loop load generator: run as the real binary against a real server
//! over loopback. No assertion depends on timing.

mod common;

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// A `seckill load` command with no SECKILL_* or RUST_LOG settings inherited.
fn seckill_load(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("SECKILL_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    cmd.arg("load").args(args).stdin(Stdio::null());
    cmd
}

/// Runs it to the end; its output is printed if the test then fails.
fn run(mut cmd: Command) -> common::process::Ran {
    common::process::run(&mut cmd)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lines of `stderr` that are progress lines (`[   1s] sent ...`).
fn progress_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with('[') && line.contains("s] sent "))
        .collect()
}

#[track_caller]
fn count(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("expected a count, got {value}"))
}

#[test]
fn load_sells_out_exactly_the_stock_and_reports_consistent_totals() {
    let server = Server::start(2, &[]);
    server.open_sale("load-hot", 50, 1);
    let url = format!("http://{}", server.addr());
    let output = run(seckill_load(&[
        "--url",
        &url,
        "--rate",
        "500",
        "--duration",
        "2",
        "--connections",
        "8",
        "--users",
        "400",
        "--sku",
        "load-hot",
        "--token-secret",
        SECRET,
        "--json",
    ]));
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(
        output.status.success(),
        "load failed: {}\nstderr: {stderr}",
        output.status
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));

    let outcomes = report["outcomes"]
        .as_object()
        .unwrap_or_else(|| panic!("no outcomes: {report}"));
    let outcome = |name: &str| outcomes.get(name).map_or(0, |o| count(&o["count"]));
    assert_eq!(outcome("created"), 50, "created orders: {report}");
    for name in outcomes.keys() {
        assert!(
            ["created", "sold_out", "limit_exceeded"].contains(&name.as_str()),
            "unexpected outcome {name}: {report}"
        );
    }
    let status = report["status"]
        .as_object()
        .unwrap_or_else(|| panic!("no status: {report}"));
    let by_status = |code: &str| status.get(code).map_or(0, count);
    assert_eq!(by_status("201"), outcome("created"), "{report}");
    assert_eq!(by_status("409"), outcome("sold_out"), "{report}");
    assert_eq!(by_status("403"), outcome("limit_exceeded"), "{report}");

    let completed = count(&report["completed"]);
    let sent = count(&report["sent"]);
    let status_total: u64 = status.values().map(count).sum();
    let outcome_total: u64 = outcomes.values().map(|o| count(&o["count"])).sum();
    assert_eq!(completed, status_total, "{report}");
    assert_eq!(sent, outcome_total, "{report}");
    assert_eq!(count(&report["errors"]), 0, "{report}");
    assert_eq!(sent, completed + count(&report["errors"]), "{report}");
    assert_eq!(count(&report["planned"]), 1000, "{report}");
    assert_eq!(
        count(&report["planned"]),
        sent + count(&report["not_sent"]),
        "{report}"
    );
    assert_eq!(count(&report["latency"]["count"]), sent, "{report}");
    assert!(count(&report["max_orders_per_user"]) <= 1, "{report}");
    assert_eq!(count(&report["users_with_orders"]), 50, "{report}");

    assert_eq!(server.client().remaining("load-hot"), 0);
}

#[test]
fn non_loopback_targets_are_refused_unless_allowed() {
    let output = run(seckill_load(&[
        "--url",
        "http://192.0.2.1:80",
        "--rate",
        "10",
        "--duration",
        "1",
        "--sku",
        "x",
        "--token-secret",
        SECRET,
    ]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("--allow-remote"), "stderr: {stderr}");
    assert!(stderr.contains("192.0.2.1"), "stderr: {stderr}");
    assert!(
        progress_lines(&stderr).is_empty(),
        "a refused run printed progress: {stderr}"
    );
    assert!(output.stdout.is_empty(), "stdout: {}", text(&output.stdout));

    // With a non-loopback address of this machine, check that nothing reaches the listener,
    // and that --allow-remote lets the same run through.
    let Some(ip) = local_non_loopback_ip() else {
        skip("no non-loopback address on this machine for the listener check");
        return;
    };
    let listener = TcpListener::bind((ip, 0)).expect("bind a non-loopback address");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("local_addr"));
    let args = [
        "--url",
        &url,
        "--rate",
        "5",
        "--duration",
        "300ms",
        "--connections",
        "1",
        "--timeout-ms",
        "500",
        "--sku",
        "x",
        "--token-secret",
        SECRET,
    ];
    let refused = run(seckill_load(&args));
    assert_eq!(
        refused.status.code(),
        Some(2),
        "stderr: {}",
        text(&refused.stderr)
    );
    assert!(
        listener.accept().is_err(),
        "the refused run connected to {url}"
    );
    let mut allowed_args = args.to_vec();
    allowed_args.push("--allow-remote");
    let allowed = run(seckill_load(&allowed_args));
    assert!(
        allowed.status.success(),
        "stderr: {}",
        text(&allowed.stderr)
    );
    assert!(
        listener.accept().is_ok(),
        "the allowed run never connected to {url}"
    );
}

/// This machine's address on the default route, if it has one (no packet is sent).
fn local_non_loopback_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn bad_arguments_exit_2_with_a_message_naming_the_flag() {
    let base = |url: &str, rate: &str| {
        vec![
            "--url".to_owned(),
            url.to_owned(),
            "--rate".to_owned(),
            rate.to_owned(),
            "--sku".to_owned(),
            "x".to_owned(),
            "--token-secret".to_owned(),
            SECRET.to_owned(),
        ]
    };
    let with = |mut args: Vec<String>, extra: &[&str]| {
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let ok_url = "http://127.0.0.1:9";
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (base(ok_url, "0"), &["--rate", "must be"]),
        (base(ok_url, "-5"), &["--rate"]),
        (base(ok_url, "fast"), &["--rate"]),
        (base("https://127.0.0.1:9", "10"), &["--url", "http://"]),
        (base("ftp://127.0.0.1:9", "10"), &["--url", "http://"]),
        (base("127.0.0.1:9", "10"), &["--url"]),
        (
            with(base(ok_url, "10"), &["--duration", "0"]),
            &["--duration"],
        ),
        (
            with(base(ok_url, "10"), &["--duration", "10h"]),
            &["--duration"],
        ),
        (
            with(base(ok_url, "10"), &["--connections", "0"]),
            &["--connections"],
        ),
        (with(base(ok_url, "10"), &["--users", "0"]), &["--users"]),
        (
            with(base(ok_url, "10"), &["--threads", "0"]),
            &["--threads"],
        ),
        (
            with(base(ok_url, "10"), &["--quantity", "0"]),
            &["--quantity"],
        ),
        (
            with(base(ok_url, "10"), &["--timeout-ms", "0"]),
            &["--timeout-ms"],
        ),
        (with(base(ok_url, "10"), &["--sku", "no/slash"]), &["--sku"]),
        (
            vec!["--url".into(), ok_url.into(), "--rate".into(), "10".into()],
            &["--sku"],
        ),
    ];
    for (args, expected) in cases {
        let output = run(seckill_load(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} should exit 2; stderr: {stderr}"
        );
        for needle in expected {
            assert!(
                stderr.contains(needle),
                "{args:?}: stderr should mention {needle:?}: {stderr}"
            );
        }
        assert!(
            output.stdout.is_empty(),
            "{args:?}: stdout: {}",
            text(&output.stdout)
        );
    }
}

#[test]
fn progress_lines_go_to_stderr_and_the_text_report_to_stdout() {
    let server = Server::start(1, &[]);
    server.open_sale("load-progress", 1_000, 1);
    let url = format!("http://{}", server.addr());
    // The secret comes from the environment this time.
    let mut cmd = seckill_load(&[
        "--url",
        &url,
        "--rate",
        "200",
        "--duration",
        "2s",
        "--connections",
        "4",
        "--users",
        "50",
        "--sku",
        "load-progress",
    ]);
    cmd.env("SECKILL_TOKEN_SECRET", SECRET);
    let output = run(cmd);
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    let lines = progress_lines(&stderr);
    assert!(!lines.is_empty(), "no progress line on stderr: {stderr}");
    assert!(
        lines[0].starts_with("[   1s] sent "),
        "first line: {}",
        lines[0]
    );
    assert!(
        progress_lines(&stdout).is_empty(),
        "progress on stdout: {stdout}"
    );
    for needle in ["seckill load:", "requests:", "status:", "created", "p99.9"] {
        assert!(stdout.contains(needle), "report lacks {needle:?}: {stdout}");
    }
    // 50 users with a limit of 1 each: at most 50 orders, never more than one per user.
    let mut client = server.client();
    let remaining = client.remaining("load-progress");
    assert!(remaining >= 950, "remaining {remaining}");
    assert!(
        stdout.contains("most held by one user: 1"),
        "report: {stdout}"
    );
}

#[test]
fn a_sku_without_a_sale_is_refused_before_any_load() {
    // Without the check, the run would spend its duration on 404s and report them as the
    // server's answer.
    let server = Server::start(1, &[]);
    let url = format!("http://{}", server.addr());
    let output = run(seckill_load(&[
        "--url",
        &url,
        "--rate",
        "100",
        "--duration",
        "2s",
        "--connections",
        "2",
        "--sku",
        "nobody-made-this",
        "--token-secret",
        SECRET,
        "--json",
    ]));
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("--sku nobody-made-this") && stderr.contains("404"),
        "stderr: {stderr}"
    );
    assert!(output.stdout.is_empty(), "stdout: {}", text(&output.stdout));
    assert!(
        progress_lines(&stderr).is_empty(),
        "a refused run printed progress: {stderr}"
    );
}

#[test]
fn an_unreachable_target_is_reported_not_fatal() {
    // Nothing listens on this port: every connection attempt fails, nothing is sent.
    let port = pick_port();
    let url = format!("http://127.0.0.1:{port}");
    let output = run(seckill_load(&[
        "--url",
        &url,
        "--rate",
        "50",
        "--duration",
        "1",
        "--connections",
        "2",
        "--sku",
        "x",
        "--token-secret",
        SECRET,
        "--json",
    ]));
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "stderr: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    assert_eq!(count(&report["sent"]), 0, "{report}");
    assert_eq!(count(&report["connects"]), 0, "{report}");
    assert!(count(&report["connect_errors"]) >= 2, "{report}");
    assert_eq!(
        count(&report["not_sent"]),
        count(&report["planned"]),
        "{report}"
    );
}
