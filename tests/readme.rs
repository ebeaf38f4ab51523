//! The README's commands, as a reader pastes them: every ```sh block of the API sections and the
//! load generator's, run in order by `bash` against the real binary. Only what a test must change
//! is changed: the binary's path (this build's), the port and data dir (free ones), a wait for
//! readiness after the server is started, and a wait for the sale to open before buying (the
//! README says to buy after it opens). The server is stopped by PID.
//!
//! Every other ```sh block is listed in [`NOT_RUN`] with the reason it cannot run here, so a new
//! block is either run or explained: it cannot be added unseen.

mod common;

use std::process::Command;

use common::process::{run, without_inherited_settings};
use common::*;

/// The sections whose ```sh blocks run, in the README's order, as one shell session.
const RUN: [&str; 9] = [
    "Authentication",
    "Sales",
    "Purchase",
    "Proof-of-work",
    "Waiting room: a fair sale",
    "Lottery: a verifiable draw",
    "Orders",
    "Blocklist and health",
    "Benchmarks and load generation",
];

/// The sections whose ```sh blocks do not run here, and why.
const NOT_RUN: [(&str, &str); 4] = [
    (
        "Two commands",
        "`cargo test` is what runs this test; the dev-mode server is run by tests/cli.rs, \
         which also runs the curl commands it prints",
    ),
    (
        "Order feed (NATS JetStream)",
        "a second server with a NATS broker; tests/events.rs runs the feed through a real one",
    ),
    (
        "Install",
        "installs onto the host (root, systemd); .ci/deb-check builds and inspects the package \
         and tests/deploy.rs verifies the units",
    ),
    (
        "Cluster mode (Redis)",
        "the addresses of a Redis fleet; the *_redis tests run every API call in cluster mode",
    ),
];

/// Every heading's title (without its `#`s) and the ```sh blocks under it, up to the next
/// heading of any level, in order. Lines inside blocks are never headings.
fn shell_blocks(readme: &str) -> Vec<(String, Vec<String>)> {
    let mut sections: Vec<(String, Vec<String>)> = Vec::new();
    let mut block: Option<(bool, String)> = None;
    for line in readme.lines() {
        match &mut block {
            Some((is_sh, body)) => {
                if line.starts_with("```") {
                    if *is_sh {
                        let body = std::mem::take(body);
                        if let Some((_, blocks)) = sections.last_mut() {
                            blocks.push(body);
                        }
                    }
                    block = None;
                } else {
                    body.push_str(line);
                    body.push('\n');
                }
            }
            None if line.starts_with("```") => block = Some((line == "```sh", String::new())),
            None if line.starts_with('#') => {
                let title = line.trim_start_matches('#').trim().to_owned();
                sections.push((title, Vec::new()));
            }
            None => {}
        }
    }
    sections
}

#[test]
fn every_readme_command_runs_as_pasted_or_says_why_not() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let sections = shell_blocks(&readme);
    let blocks_of = |title: &str| -> &Vec<String> {
        sections
            .iter()
            .find(|(t, blocks)| t == title && !blocks.is_empty())
            .map(|(_, blocks)| blocks)
            .unwrap_or_else(|| panic!("README has no section {title:?} with ```sh blocks"))
    };
    for (title, blocks) in &sections {
        assert!(
            blocks.is_empty()
                || RUN.contains(&title.as_str())
                || NOT_RUN.iter().any(|(t, _)| t == title),
            "README section {title:?} has ```sh blocks that this test neither runs nor lists \
             in NOT_RUN with a reason"
        );
    }
    for (title, _) in NOT_RUN {
        blocks_of(title);
    }

    let mut script = String::from("set -e\ncd \"$SCRATCH\"\n");
    for title in RUN {
        if title == "Purchase" {
            script.push_str("echo; echo '== waiting for the sale to open'\nsleep 31\n");
        }
        script.push_str(&format!("echo; echo '== README: {title}'\n"));
        for block in blocks_of(title) {
            script.push_str(block);
        }
    }

    let port = pick_port();
    let scratch = ScratchDir::new();
    let log = scratch.join("server.log");
    let url = format!("http://127.0.0.1:{port}");
    // Rewritten for the test: this build's binary, a free port, and a wait for readiness.
    let serve_line = "target/release/seckill serve &";
    assert!(
        script.contains(serve_line),
        "the README starts the server with `{serve_line}`"
    );
    let script = script
        // The README's one `cargo build`: this test runs this build's binary instead.
        .replace("cargo build --release\n", "\n")
        .replace(
            serve_line,
            &format!(
                "target/release/seckill serve --listen 127.0.0.1:{port} --shards 1 >{} 2>&1 &\n\
                 SERVER=$!; trap 'kill $SERVER' EXIT\n\
                 for _ in $(seq 600); do curl -sf {url}/readyz >/dev/null && break; sleep 0.1; done\n",
                log.display()
            ),
        )
        .replace("target/release/seckill", BIN)
        .replace("http://127.0.0.1:8080", &url);
    // The README's reader has none of the test's settings: the script exports its own.
    let ran = run(without_inherited_settings(&mut Command::new("bash"))
        .arg("-c")
        .arg(&script)
        .env("SCRATCH", scratch.path()));
    let out = String::from_utf8_lossy(&ran.stdout).into_owned();
    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
    let context = format!(
        "script:\n{script}\nstdout:\n{out}\nstderr:\n{}\nserver:\n{server_log}",
        ran.stderr()
    );
    assert!(ran.status.success(), "{context}");
    let expect = [
        (r#""state":"upcoming""#, "the sale was not created upcoming"),
        (r#""status":"pending""#, "the purchase made no order"),
        (
            r#".moutai-pow","sku":"moutai-pow""#,
            "the purchase with proof-of-work made no order",
        ),
        (
            r#""error":"pow_invalid""#,
            "the purchase without proof-of-work was not refused",
        ),
        (
            r#""state":"admitted""#,
            "the waiting-room ticket was not admitted",
        ),
        (
            r#".moutai-fair","sku":"moutai-fair""#,
            "the purchase with a pass made no order",
        ),
        (
            r#""error":"not_admitted""#,
            "the purchase without a pass was not refused",
        ),
        (
            r#""state":"won""#,
            "the lottery's only registrant did not win",
        ),
        (
            r#".moutai-draw","sku":"moutai-draw""#,
            "the winner's purchase made no order",
        ),
        ("verified: 1 registrants", "the lottery did not verify"),
        (r#""status":"paid""#, "the payment service did not pay it"),
        (
            r#""error":"order_paid""#,
            "the cancel of a paid order was not refused",
        ),
        (r#"{"orders":[{"#, "the shopper's orders were not listed"),
        (r#"{"now_ms":"#, "the clock was not read"),
        (
            "seckill_http_requests_total",
            "the metrics were not scraped",
        ),
        ("requests", "the load generator printed no report"),
    ];
    for (needle, what) in expect {
        assert!(
            out.contains(needle),
            "{what} (no {needle} in the output): {context}"
        );
    }
}
