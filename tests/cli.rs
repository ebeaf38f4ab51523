//! The command line and process lifecycle: config precedence and validation, dev mode, and
//! graceful shutdown on SIGTERM / SIGINT. Each test runs the real binary.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use common::process::{run, run_serve, seckill_cmd, Ran, Spawned};
use common::*;
use nix::sys::signal::Signal;

/// The harness's `seckill` command without its secrets: dev mode unless a test sets them.
fn without_secrets() -> Command {
    let mut cmd = seckill_cmd();
    cmd.env_remove("SECKILL_ADMIN_TOKEN")
        .env_remove("SECKILL_TOKEN_SECRET");
    cmd
}

/// [`without_secrets`], keeping its journal in `data_dir`.
fn seckill(data_dir: &ScratchDir) -> Command {
    let mut cmd = without_secrets();
    cmd.env("SECKILL_DATA_DIR", data_dir.path());
    cmd
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("seckill-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// Runs `serve ARGS` with `envs` (and no secrets unless given) on a fresh port and data dir,
/// expecting it to refuse to start with exit code `code` (2: bad config, 1: failed at startup);
/// returns its output. A server that starts anyway is killed after the harness's bound, so the
/// test fails instead of hanging.
#[track_caller]
fn serve_refuses(args: &[&str], envs: &[(&str, &str)], code: i32) -> Ran {
    let mut cmd = without_secrets();
    cmd.envs(envs.iter().copied());
    let output = run_serve(cmd, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "serve {args:?} should exit {code}"
    );
    output
}

fn stderr_of(output: &Ran) -> String {
    output.stderr()
}

/// Spawns `serve --shards 2` on `port` in `data_dir` with `envs`; its output is kept (and
/// printed if the test fails), and it is killed when dropped (drop it before `data_dir`).
fn spawn_two_shards(port: u16, data_dir: &ScratchDir, envs: &[(&str, &str)]) -> Spawned {
    let mut cmd = seckill(data_dir);
    cmd.args([
        "serve",
        "--shards",
        "2",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    for (key, value) in envs {
        cmd.env(key, value);
    }
    Spawned::spawn(&mut cmd)
}

#[test]
fn bad_config_is_refused_with_the_key_named() {
    let unknown = temp_file("unknown.toml", "listen = \"127.0.0.1:1\"\nshardz = 2\n");
    let out = serve_refuses(&["--config", unknown.to_str().unwrap()], &[], 2);
    assert!(stderr_of(&out).contains("shardz"), "{}", stderr_of(&out));

    let zero = temp_file("zero.toml", "shards = 0\n");
    let out = serve_refuses(&["--config", zero.to_str().unwrap()], &[], 2);
    assert!(stderr_of(&out).contains("`shards`"), "{}", stderr_of(&out));

    let out = serve_refuses(&["--listen", "not-an-address"], &[], 2);
    assert!(stderr_of(&out).contains("`listen`"), "{}", stderr_of(&out));

    let out = serve_refuses(&["--idle-timeout-ms", "5"], &[], 2);
    assert!(
        stderr_of(&out).contains("`idle_timeout_ms`"),
        "{}",
        stderr_of(&out)
    );

    let out = serve_refuses(&[], &[("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)], 2);
    assert!(
        stderr_of(&out).contains("`token_secret`"),
        "{}",
        stderr_of(&out)
    );

    let short = [
        ("SECKILL_ADMIN_TOKEN", "short"),
        ("SECKILL_TOKEN_SECRET", SECRET),
    ];
    let out = serve_refuses(&[], &short, 2);
    assert!(
        stderr_of(&out).contains("`admin_token`"),
        "{}",
        stderr_of(&out)
    );

    let out = serve_refuses(&["--log-format", "xml"], &[], 2);
    assert!(
        stderr_of(&out).contains("`log_format`"),
        "{}",
        stderr_of(&out)
    );
    for path in [unknown, zero] {
        let _ = std::fs::remove_file(path);
    }
}

/// Starts `serve` with the given flags/env/file and reports which of three ports it listens on.
fn listening_port(flag: Option<u16>, env: Option<u16>, file: Option<u16>) -> u16 {
    let data_dir = ScratchDir::new();
    let mut cmd = seckill(&data_dir);
    cmd.args(["serve", "--shards", "1"]);
    cmd.env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN);
    cmd.env("SECKILL_TOKEN_SECRET", SECRET);
    let mut config = None;
    if let Some(port) = file {
        let path = temp_file(
            &format!("listen-{port}.toml"),
            &format!("listen = \"127.0.0.1:{port}\"\n"),
        );
        cmd.arg("--config").arg(&path);
        config = Some(path);
    }
    if let Some(port) = env {
        cmd.env("SECKILL_LISTEN", format!("127.0.0.1:{port}"));
    }
    if let Some(port) = flag {
        cmd.arg("--listen").arg(format!("127.0.0.1:{port}"));
    }
    let expected = flag.or(env).or(file).expect("at least one source");
    let mut server = Spawned::spawn(&mut cmd);
    server.wait_ready(expected);
    for other in [flag, env, file]
        .into_iter()
        .flatten()
        .filter(|p| *p != expected)
    {
        assert!(
            TcpStream::connect(("127.0.0.1", other)).is_err(),
            "port {other} should not be served when {expected} wins"
        );
    }
    if let Some(path) = config {
        let _ = std::fs::remove_file(path);
    }
    expected
}

#[test]
fn flags_beat_env_beat_file() {
    let (a, b, c) = (pick_port(), pick_port(), pick_port());
    assert_eq!(listening_port(Some(a), Some(b), Some(c)), a);
    assert_eq!(listening_port(None, Some(b), Some(c)), b);
    assert_eq!(listening_port(None, None, Some(c)), c);
}

#[test]
fn dev_mode_prints_working_credentials() {
    let port = pick_port();
    let data_dir = ScratchDir::new();
    let mut server = spawn_two_shards(port, &data_dir, &[]);
    server.wait_ready(port);
    let stderr = server.stderr();
    let value_of = |key: &str| {
        stderr
            .lines()
            .find_map(|line| {
                line.trim()
                    .strip_prefix(&format!("{key}="))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("{key} not printed in dev mode:\n{stderr}"))
    };
    let admin = value_of("SECKILL_ADMIN_TOKEN");
    let secret = value_of("SECKILL_TOKEN_SECRET");
    assert!(
        stderr.contains("curl "),
        "dev mode should print a curl example:\n{stderr}"
    );

    let mut client = Client::connect(port);
    let spec = sale_spec(5, 1).to_string();
    let auth = format!("Bearer {admin}");
    let created = client.request(
        "PUT",
        "/v1/sales/dev",
        &[("Authorization", &auth)],
        Some(&spec),
    );
    assert_eq!(created.status, 201, "{created}");
    let shopper = format!("Bearer {}", token_with("alice", now_secs() + 600, &secret));
    let bought = client.request(
        "POST",
        "/v1/sales/dev/purchase",
        &[("Authorization", &shopper)],
        None,
    );
    assert_eq!(bought.status, 201, "{bought}");

    // "Try it", pasted as printed, creates a sale and buys from it; and again after a restart
    // on the same data dir (a fixed SKU would answer 409 sale_exists the second time).
    try_it(&stderr);
    drop(server);
    let mut server = spawn_two_shards(port, &data_dir, &[]);
    server.wait_ready(port);
    try_it(&server.stderr());
}

/// Runs the "Try it" commands dev mode printed in `stderr`, as a shell would.
#[track_caller]
fn try_it(stderr: &str) {
    let commands = stderr
        .split_once("Try it:")
        .map(|(_, rest)| rest.trim())
        .unwrap_or_else(|| panic!("no Try it in:\n{stderr}"));
    let commands: String = commands
        .lines()
        .take_while(|line| line.trim_start().starts_with("curl ") || line.starts_with("    -d"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(commands.matches("curl ").count(), 2, "{commands}");
    let ran = run(Command::new("sh")
        .arg("-c")
        .arg(format!("set -e\n{commands}")));
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(ran.status.success(), "{commands}\n{out}{}", ran.stderr());
    assert!(out.contains(r#""state":"open""#), "the sale: {out}");
    assert!(out.contains(r#""order_id""#), "the order: {out}");
    let page = stderr
        .lines()
        .map(str::trim)
        .find(|line| line.starts_with("http://") && line.contains("/shop/try-"))
        .unwrap_or_else(|| panic!("no shopper page link in:\n{stderr}"));
    assert!(page.contains("#token=alice."), "{page}");
}

#[test]
fn dev_mode_stays_on_loopback_unless_allowed() {
    // Dev mode prints its secrets: on a public address that hands the stock to whoever reads
    // the log, so it is refused with the way out named.
    let port = pick_port();
    let public = format!("0.0.0.0:{port}");
    let out = serve_refuses(&["--listen", &public], &[], 2);
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("loopback") && stderr.contains("--allow-dev-on-public"),
        "{stderr}"
    );
    // Asked for, it starts (0.0.0.0 includes loopback, where the test reaches it).
    let data_dir = ScratchDir::new();
    let mut cmd = seckill(&data_dir);
    cmd.args(["serve", "--shards", "1", "--listen", &public])
        .arg("--allow-dev-on-public");
    let mut server = Spawned::spawn(&mut cmd);
    server.wait_ready(port);
    drop(server);
    // With its own secrets, a node listens wherever it is told.
    let mut cmd = seckill(&data_dir);
    cmd.args(["serve", "--shards", "1", "--listen", &public])
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SECKILL_TOKEN_SECRET", SECRET);
    let mut server = Spawned::spawn(&mut cmd);
    server.wait_ready(port);
}

#[test]
fn sigterm_and_sigint_drain_and_exit_zero() {
    for sig in [Signal::SIGTERM, Signal::SIGINT] {
        let port = pick_port();
        let secrets = [
            ("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN),
            ("SECKILL_TOKEN_SECRET", SECRET),
        ];
        let data_dir = ScratchDir::new();
        let mut server = spawn_two_shards(port, &data_dir, &secrets);
        server.wait_ready(port);
        let mut idle = Client::connect(port);
        assert_eq!(idle.get("/healthz").status, 200);
        // A burst of pipelined requests is in flight when the signal lands: the one being served
        // is answered, then the connection closes; nothing hangs.
        let mut busy = Client::connect(port);
        assert_eq!(
            busy.get("/healthz").status,
            200,
            "the connection is being served"
        );
        let burst = "GET /v1/sales HTTP/1.1\r\nHost: x\r\n\r\n".repeat(2_000);
        busy.send_raw(burst.as_bytes());
        server.signal(sig);
        let first = busy.expect_response("first pipelined answer");
        assert_eq!(first.status, 200, "{first}");
        let status = server.wait_exit();
        assert_eq!(status.code(), Some(0), "{sig:?} must exit 0");
        assert!(
            idle.wait_closed(IO_TIMEOUT).is_ok(),
            "idle connection must be closed"
        );
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "listener must be gone"
        );
    }
}

#[test]
fn a_second_server_on_the_same_port_is_refused() {
    let port = pick_port();
    let secrets = [
        ("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN),
        ("SECKILL_TOKEN_SECRET", SECRET),
    ];
    let first_dir = ScratchDir::new();
    let mut first = spawn_two_shards(port, &first_dir, &secrets);
    first.wait_ready(port);
    let second_dir = ScratchDir::new();
    let mut cmd = seckill(&second_dir);
    cmd.args([
        "serve",
        "--shards",
        "1",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    for (key, value) in secrets {
        cmd.env(key, value);
    }
    let second = run(&mut cmd);
    assert!(!second.status.success(), "a second server must not start");
    assert!(
        stderr_of(&second).contains("already in use"),
        "{}",
        stderr_of(&second)
    );
    let mut client = Client::connect(port);
    assert_eq!(
        client.get("/readyz").status,
        200,
        "the first server is unaffected"
    );
}

#[test]
fn a_data_dir_in_memory_is_refused() {
    // /dev/shm is tmpfs on Linux: nothing there survives a reboot.
    let dir =
        std::path::Path::new("/dev/shm").join(format!("seckill-tmpfs-{}", std::process::id()));
    if !std::path::Path::new("/dev/shm").is_dir() {
        skip("no /dev/shm (tmpfs) on this machine");
        return;
    }
    let dir_text = dir.to_str().expect("utf-8 path").to_owned();
    let out = serve_refuses(
        &["--data-dir", &dir_text, "--shards", "1"],
        &[
            ("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN),
            ("SECKILL_TOKEN_SECRET", SECRET),
        ],
        1,
    );
    assert!(stderr_of(&out).contains("tmpfs"), "{}", stderr_of(&out));
    let _ = std::fs::remove_dir_all(dir);
}

/// The README's run command uses the default data dir, `./seckill-data`, a relative path.
#[test]
fn default_relative_data_dir_works() {
    let cwd = ScratchDir::new();
    let port = pick_port();
    let mut cmd = without_secrets();
    cmd.current_dir(&cwd)
        .args([
            "serve",
            "--shards",
            "2",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SECKILL_TOKEN_SECRET", SECRET);
    let mut server = Spawned::spawn(&mut cmd);
    server.wait_ready(port);
    let mut client = Client::connect(port);
    let created = client.put_sale("reldir", &sale_spec(3, 1));
    assert_eq!(created.status, 201, "{created}");
    assert!(
        cwd.join("seckill-data").join("LOCK").exists(),
        "journal in ./seckill-data"
    );
    drop(server);
}
