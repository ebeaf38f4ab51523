//! The deployment files in `systemd/`: the example config loads with the real loader, documents
//! every key and runs the real server; the env template cannot start a server by accident; and
//! both units pass `systemd-analyze verify` (skipped when systemd-analyze is not installed,
//! unless SECKILL_REQUIRE_SYSTEMD_ANALYZE is set).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::process::{run, seckill_cmd, Spawned};
use common::{pick_port, skip, ScratchDir, BIN};
use nix::sys::signal::Signal;
use seckill::cli::ServeArgs;
use seckill::config::{self, FileConfig};

const ADMIN_TOKEN: &str = "deploy-admin-token-0123456789";
const TOKEN_SECRET: &str = "deploy-token-secret-0123456789";

/// Every key `FileConfig` accepts (it has `deny_unknown_fields`, so these are all of them). The
/// exhaustive destructuring in [`file_keys_match_the_struct`] stops compiling when a field is
/// added or removed, as a reminder to update this list and the example.
const FILE_KEYS: &[&str] = &[
    "listen",
    "shards",
    "data_dir",
    "admin_token",
    "token_secret",
    "payment_token",
    "webhook_secret",
    "webhook_tolerance_secs",
    "idle_timeout_ms",
    "max_token_ttl_secs",
    "cors_origins",
    "max_connections_per_shard",
    "backlog",
    "drain_timeout_ms",
    "closed_orders_per_sale",
    "durability",
    "segment_bytes",
    "log_level",
    "log_format",
    "redis",
    "redis_prefix",
    "redis_batch",
    "redis_pipeline",
    "redis_lookups_per_sec",
    "redis_negative_ttl_ms",
    "redis_budget_ms",
    "redis_unresponsive_ms",
    "redis_retention_secs",
    "redis_wait",
    "redis_wait_timeout_ms",
    "events",
    "events_stream",
    "events_subject_prefix",
    "events_dedup_window_secs",
    "events_outbox_max",
];

/// Keys that must be documented but never given a value in the example: secrets live in the env
/// file.
const SECRET_KEYS: &[&str] = &[
    "admin_token",
    "token_secret",
    "payment_token",
    "webhook_secret",
];

/// Fails to compile when `FileConfig` gains or loses a field, so [`FILE_KEYS`] stays complete.
#[allow(dead_code)]
fn file_keys_match_the_struct(file: FileConfig) -> usize {
    let FileConfig {
        listen: _,
        shards: _,
        data_dir: _,
        admin_token: _,
        token_secret: _,
        payment_token: _,
        webhook_secret: _,
        webhook_tolerance_secs: _,
        idle_timeout_ms: _,
        max_token_ttl_secs: _,
        cors_origins: _,
        max_connections_per_shard: _,
        backlog: _,
        drain_timeout_ms: _,
        closed_orders_per_sale: _,
        durability: _,
        segment_bytes: _,
        log_level: _,
        log_format: _,
        redis: _,
        redis_prefix: _,
        redis_batch: _,
        redis_pipeline: _,
        redis_lookups_per_sec: _,
        redis_negative_ttl_ms: _,
        redis_budget_ms: _,
        redis_unresponsive_ms: _,
        redis_retention_secs: _,
        redis_wait: _,
        redis_wait_timeout_ms: _,
        events: _,
        events_stream: _,
        events_subject_prefix: _,
        events_dedup_window_secs: _,
        events_outbox_max: _,
    } = file;
    FILE_KEYS.len()
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo_file(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The key a TOML line assigns, whether active (`key = ...`) or commented out (`# key = ...`).
fn assigned_key(line: &str) -> Option<(&str, bool)> {
    let trimmed = line.trim_start();
    let (body, active) = match trimmed.strip_prefix('#') {
        Some(rest) => (rest.trim_start(), false),
        None => (trimmed, true),
    };
    let (key, _) = body.split_once('=')?;
    let key = key.trim();
    let is_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    is_key.then_some((key, active))
}

/// The example with every commented-out `# key = value` line enabled.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| match assigned_key(line) {
            Some((_, false)) => line.trim_start().trim_start_matches('#').trim_start(),
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The harness's `seckill` command with this file's secrets, and without `RUST_LOG`, so the
/// example config's own `log_level` applies.
fn seckill() -> Command {
    let mut cmd = seckill_cmd();
    cmd.env_remove("RUST_LOG")
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SECKILL_TOKEN_SECRET", TOKEN_SECRET);
    cmd
}

#[test]
fn example_config_documents_every_key() {
    let text = read("systemd/seckill.toml");
    let mut assigned = Vec::new();
    for line in text.lines() {
        if let Some((key, _)) = assigned_key(line) {
            assert!(
                FILE_KEYS.contains(&key),
                "systemd/seckill.toml assigns {key:?}, which FileConfig does not accept"
            );
            assigned.push(key);
        }
    }
    for key in FILE_KEYS {
        if SECRET_KEYS.contains(key) {
            assert!(
                text.contains(&format!("`{key}`")),
                "systemd/seckill.toml should mention `{key}` (and point to the env file)"
            );
            assert!(
                !assigned.contains(key),
                "systemd/seckill.toml must not set the secret {key:?}, even commented out"
            );
        } else {
            let count = assigned.iter().filter(|k| *k == key).count();
            assert_eq!(
                count, 1,
                "systemd/seckill.toml should document `{key} = ...` exactly once (active or commented out)"
            );
        }
    }
    assert!(
        text.contains("seckill.env"),
        "the example should say where the secrets go"
    );
}

#[test]
fn example_config_loads_with_the_real_loader() {
    let path = repo_file("systemd/seckill.toml");
    // `read_file` is `toml::from_str::<FileConfig>`, and FileConfig denies unknown keys.
    let file = config::read_file(&path).expect("systemd/seckill.toml parses");
    assert_eq!(file.data_dir, Some(PathBuf::from("/var/lib/seckill")));
    assert!(file.admin_token.is_none() && file.token_secret.is_none());
    assert!(
        file.redis.is_none(),
        "the example runs the embedded store by default"
    );

    // The secrets come from the unit's env file, which this test does not read: without them
    // the loader is in dev mode, which refuses the example's public address unless allowed.
    let args = ServeArgs {
        config: Some(path),
        allow_dev_on_public: true,
        ..Default::default()
    };
    let resolved = config::resolve(&args).expect("systemd/seckill.toml resolves");
    assert_eq!(resolved.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(resolved.data_dir, PathBuf::from("/var/lib/seckill"));

    // The commented-out examples are valid too.
    let dir = ScratchDir::new();
    let all = dir.join("all.toml");
    std::fs::write(&all, uncommented(&read("systemd/seckill.toml"))).expect("write");
    let file = config::read_file(&all).expect("uncommented example parses");
    assert!(file.shards.is_some() && file.redis.is_some());
    config::resolve(&ServeArgs {
        config: Some(all),
        allow_dev_on_public: true,
        ..Default::default()
    })
    .expect("uncommented example resolves");
}

/// The units and the example config agree: the config the unit names, the state directory as
/// data_dir, and a stop timeout longer than the drain.
#[test]
fn units_match_the_example_config() {
    let file = config::read_file(&repo_file("systemd/seckill.toml")).expect("parse");
    let drain_ms = file.drain_timeout_ms.expect("drain_timeout_ms is set");
    for (unit, config_path, env_path, state) in [
        (
            "systemd/seckill.service",
            "/etc/seckill/seckill.toml",
            "/etc/seckill/seckill.env",
            "seckill",
        ),
        (
            "systemd/seckill@.service",
            "/etc/seckill/%i.toml",
            "/etc/seckill/%i.env",
            "seckill/%i",
        ),
    ] {
        let text = read(unit);
        let value = |key: &str| {
            let values: Vec<&str> = text
                .lines()
                .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .collect();
            assert_eq!(values.len(), 1, "{unit}: expected one {key}=");
            values[0].trim()
        };
        assert_eq!(
            value("ExecStart"),
            format!("seckill serve --config {config_path}")
        );
        assert_eq!(value("EnvironmentFile"), env_path);
        assert_eq!(value("StateDirectory"), state);
        assert_eq!(value("Type"), "notify");
        assert_eq!(value("LimitMEMLOCK"), "infinity");
        assert!(
            !text.lines().any(|line| line.starts_with("ExecReload")),
            "{unit}: reload is unsupported"
        );
        let stop_secs: u64 = value("TimeoutStopSec")
            .strip_suffix('s')
            .expect("TimeoutStopSec in seconds")
            .parse()
            .expect("TimeoutStopSec number");
        assert!(
            stop_secs * 1000 > drain_ms + 5_000,
            "{unit}: TimeoutStopSec={stop_secs}s must exceed drain_timeout_ms={drain_ms} with room to flush"
        );
    }
    assert_eq!(
        file.data_dir,
        Some(PathBuf::from("/var/lib/seckill")),
        "data_dir must be the StateDirectory"
    );
}

/// The real server runs with the example config (listen and data dir overridden by flags, as the
/// precedence allows), answers /readyz, logs in the configured format and exits 0 on SIGTERM.
#[test]
fn example_config_serves_and_stops_cleanly_on_sigterm() {
    let config_path = repo_file("systemd/seckill.toml");
    let mut last = String::new();
    for _attempt in 0..3 {
        let data_dir = ScratchDir::new();
        let port = pick_port();
        let mut child = Spawned::spawn(
            seckill()
                .arg("serve")
                .arg("--config")
                .arg(&config_path)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(&data_dir)
                // Bounded so the test is light on many-core hosts; every other value is the file's.
                .args(["--shards", "2"]),
        );
        if let Err(why) = child.try_wait_ready(port) {
            // Retry only when the port was taken between picking and binding.
            let log = child.stderr();
            if !log.to_lowercase().contains("address already in use") {
                child.fail(&why);
            }
            last = format!("{why}; log:\n{log}");
            continue;
        }

        child.signal(Signal::SIGTERM);
        // The default drain limit is 10 s; with no requests in flight it should be quick.
        let status = child.wait_exit();
        let log = child.stderr();
        assert_eq!(status.code(), Some(0), "exit status");
        // log_format = "json" in the example: every log line is a JSON object.
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "the server logged nothing");
        for line in lines {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        }
        return;
    }
    panic!("server with systemd/seckill.toml never became ready (3 ports in use): {last}");
}

/// The env template's placeholders are refused, so an unedited template cannot start a server
/// (an empty value would mean dev mode with throw-away secrets).
#[test]
fn env_template_placeholders_are_refused() {
    let text = read("systemd/seckill.env");
    let vars: Vec<(&str, &str)> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split_once('=').expect("KEY=VALUE"))
        .collect();
    let keys: Vec<&str> = vars.iter().map(|(key, _)| *key).collect();
    assert_eq!(keys, ["SECKILL_ADMIN_TOKEN", "SECKILL_TOKEN_SECRET"]);
    assert!(
        vars.iter().all(|(_, value)| !value.is_empty()),
        "an empty secret means dev mode"
    );
    assert!(text.contains("openssl rand -hex 32") && text.contains("0600"));

    let data_dir = ScratchDir::new();
    let output = run(seckill()
        .arg("serve")
        .arg("--config")
        .arg(repo_file("systemd/seckill.toml"))
        .args(["--listen", &format!("127.0.0.1:{}", pick_port())])
        .arg("--data-dir")
        .arg(&data_dir)
        .envs(vars.iter().copied()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("admin_token") || stderr.contains("token_secret"),
        "stderr: {stderr}"
    );
}

/// `systemd-analyze`, or `None` (with a note) when it is not installed and not required.
fn systemd_analyze() -> Option<&'static str> {
    skip::tool_present(
        "systemd-analyze",
        "SECKILL_REQUIRE_SYSTEMD_ANALYZE",
        "apt-get install systemd",
    )
    .then_some("systemd-analyze")
}

/// Copies both units into a scratch dir with ExecStart pointing at the built binary, which
/// `systemd-analyze` requires to exist.
fn units_with_built_binary() -> ScratchDir {
    let dir = ScratchDir::new();
    for unit in ["seckill.service", "seckill@.service"] {
        let text = read(&format!("systemd/{unit}"));
        assert!(text.contains("ExecStart=seckill "));
        let text = text.replace("ExecStart=seckill ", &format!("ExecStart={BIN} "));
        std::fs::write(dir.join(unit), text).expect("write unit");
    }
    dir
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = units_with_built_binary();
    for unit in ["seckill.service", "seckill@test.service"] {
        let output = run(Command::new(analyze).arg("verify").arg(dir.join(unit)));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "systemd-analyze verify {unit} failed: {stderr}"
        );
        // Unknown keys and bad values are only warnings ("Unknown key ..., ignoring"), with
        // exit 0: any complaint about our unit fails the test.
        let complaints: Vec<&str> = stderr
            .lines()
            .filter(|line| {
                line.contains(dir.to_str().expect("utf-8 path"))
                    || line.contains("seckill")
                    || line.contains("Unknown")
                    || line.contains("ignoring")
            })
            .collect();
        assert!(
            complaints.is_empty(),
            "systemd-analyze verify {unit} warned:\n{}",
            complaints.join("\n")
        );
    }
}

/// Guards the sandbox: `systemd-analyze security` scores exposure from 0 (locked down) to 10.
#[test]
fn units_stay_sandboxed() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let dir = units_with_built_binary();
    for unit in ["seckill.service", "seckill@test.service"] {
        let output = run(Command::new(analyze)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(dir.join(unit)));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() && stderr.contains("--offline") {
            // systemd < 250 has no offline mode.
            common::skip(&format!(
                "systemd-analyze security --offline is not supported: {stderr}"
            ));
            return;
        }
        let line = stdout
            .lines()
            .find(|line| line.contains("Overall exposure level"))
            .unwrap_or_else(|| panic!("no exposure level for {unit}: {stdout}{stderr}"));
        eprintln!("{line}");
        let score: f64 = line
            .split(": ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|score| score.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the score from {line:?}"));
        assert!(score <= 2.0, "{unit} exposure rose to {score}: {line}");
    }
}
