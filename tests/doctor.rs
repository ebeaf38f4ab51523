//! `seckill doctor` on the real host: it passes or warns here, and fails with a fix for a data
//! dir on tmpfs and for an unreachable Redis. Also the systemd notify protocol of `serve`:
//! READY=1 once every shard listens, WATCHDOG=1 while the shards tick, STOPPING=1 on SIGTERM.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;

use common::process::{run, Spawned, EXIT_BOUND};
use common::*;
use nix::sys::signal::Signal;

fn doctor(args: &[&str]) -> (i32, String) {
    let out = run(Command::new(BIN)
        .arg("doctor")
        .args(args)
        .env_remove("SECKILL_REDIS")
        .env_remove("SECKILL_DATA_DIR")
        .env_remove("SECKILL_CONFIG")
        .env_remove("SECKILL_ADMIN_TOKEN")
        .env_remove("SECKILL_TOKEN_SECRET"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn doctor_passes_or_warns_on_this_machine() {
    let dir = fresh_data_dir();
    let (code, text) = doctor(&["--data-dir", &dir.to_string_lossy()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 0, "{text}");
    for name in [
        "kernel",
        "io_uring",
        "memlock",
        "nofile",
        "somaxconn",
        "cpus",
        "data_dir",
        "clock source",
    ] {
        assert!(
            text.lines().any(|line| line.contains(name)),
            "no {name} check in:\n{text}"
        );
    }
    assert!(!text.contains("FAIL"), "{text}");
    // Every warning says what to do.
    let lines: Vec<&str> = text.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        if line.starts_with("WARN") {
            assert!(
                lines
                    .get(index + 1)
                    .is_some_and(|next| next.contains("fix:")),
                "warning without a fix: {line}"
            );
        }
    }
    assert!(text.contains("pass  io_uring"), "a ring was set up: {text}");
}

#[test]
fn doctor_fails_with_a_fix_for_a_data_dir_on_tmpfs() {
    let dir = format!("/dev/shm/seckill-doctor-{}", std::process::id());
    let (code, text) = doctor(&["--data-dir", &dir]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(code, 1, "{text}");
    let fail = text
        .lines()
        .position(|line| line.starts_with("FAIL") && line.contains("data_dir"))
        .unwrap_or_else(|| panic!("no data_dir failure:\n{text}"));
    let fix = text.lines().nth(fail + 1).unwrap_or_default();
    assert!(fix.contains("fix:") && fix.contains("tmpfs"), "{text}");
}

/// Every file and directory under `root`, so a test can compare before and after.
fn tree(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    found
}

#[test]
fn doctor_changes_nothing_on_the_host() {
    // A data dir that does not exist yet, as before the first start (the unit's
    // StateDirectory= creates it): doctor says where `serve` will create it and that it can,
    // without creating it. One that exists is probed without leaving a file in it.
    let scratch = ScratchDir::new();
    let existing = scratch.join("existing");
    std::fs::create_dir(&existing).expect("create the existing data dir");
    let before = tree(&scratch);
    let missing = scratch.join("var/lib/seckill");
    let (code, text) = doctor(&["--data-dir", &missing.to_string_lossy()]);
    assert_eq!(code, 0, "{text}");
    let line = text
        .lines()
        .find(|line| line.contains("data_dir"))
        .unwrap_or_else(|| panic!("no data_dir check:\n{text}"));
    assert!(
        line.starts_with("pass") && line.contains("not there yet") && line.contains("O_DIRECT"),
        "{text}"
    );
    let (code, text) = doctor(&["--data-dir", &existing.to_string_lossy()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("pass  data_dir"), "{text}");
    assert_eq!(tree(&scratch), before, "doctor changed the host:\n{text}");
    // The example config as an operator checks it before the first start: by hand, without
    // the unit's EnvironmentFile (so without secrets), and before /var/lib/seckill exists.
    let state = std::path::Path::new("/var/lib/seckill");
    if !state.exists() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/seckill.toml");
        let (code, text) = doctor(&["--config", example]);
        assert_eq!(code, 0, "{text}");
        assert!(
            !state.exists(),
            "doctor created {}:\n{text}",
            state.display()
        );
        assert!(
            text.lines().any(|line| line.starts_with("WARN  secrets")),
            "{text}"
        );
    }
}

#[test]
fn doctor_fails_with_a_fix_for_an_unreachable_redis() {
    let port = pick_port();
    let url = format!("redis://127.0.0.1:{port}");
    let (code, text) = doctor(&["--redis", &url]);
    assert_eq!(code, 1, "{text}");
    let fail = text
        .lines()
        .position(|line| line.starts_with("FAIL") && line.contains("redis"))
        .unwrap_or_else(|| panic!("no redis failure:\n{text}"));
    assert!(
        text.lines()
            .nth(fail + 1)
            .is_some_and(|fix| fix.contains("fix:")),
        "{text}"
    );
    // And with Redis up, the same check passes with its version. A busy box may stretch the
    // PING round trip past doctor's 5 ms warning threshold, so a warning counts too: what
    // matters here is that Redis was reached.
    let redis = common::redis::RedisServer::start(&[]);
    let (code, text) = doctor(&["--redis", &redis.url()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.lines().any(
            |line| (line.starts_with("pass") || line.starts_with("WARN"))
                && line.contains("Redis ")
                && line.contains("PING round trip")
        ),
        "{text}"
    );
}

#[test]
fn serve_speaks_the_systemd_notify_protocol() {
    let dir = fresh_data_dir();
    let socket_path = dir.with_extension("notify");
    let _ = std::fs::remove_file(&socket_path);
    let socket = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    socket.set_read_timeout(Some(EXIT_BOUND)).expect("timeout");
    let port = pick_port();
    let mut child = Spawned::spawn(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--shards",
                "2",
            ])
            .arg("--data-dir")
            .arg(&dir)
            .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SECKILL_TOKEN_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "600000"),
    );
    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    // READY=1 first, then watchdog pings.
    while !received.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        match socket.recv(&mut buf) {
            Ok(n) => received.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(error) => child.fail(&format!("no notification ({error}); got {received:?}")),
        }
    }
    assert!(
        received.first().is_some_and(|m| m.contains("READY=1")),
        "READY=1 comes first: {received:?}"
    );
    // Ready means every shard listens.
    let mut client = Client::connect(port);
    assert_eq!(client.get("/readyz").status, 200);
    child.signal(Signal::SIGTERM);
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.contains("STOPPING=1") {
                    break;
                }
            }
            Err(error) => child.fail(&format!("no STOPPING=1 after SIGTERM: {error}")),
        }
    }
    let status = child.wait_exit();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_file(&socket_path);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Under a nofile limit that cannot hold the configured connections, doctor says what serve
/// will cap them at, with the limit that would lift the cap.
#[test]
fn doctor_reports_the_connection_cap_a_low_nofile_forces() {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(BIN);
    command
        .args([
            "doctor",
            "--shards",
            "2",
            "--max-connections-per-shard",
            "10000",
        ])
        .env_remove("SECKILL_REDIS")
        .env_remove("SECKILL_CONFIG");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, 400, 400)
                .map_err(std::io::Error::from)
        });
    }
    let out = command.output().expect("run seckill doctor");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let cap = (400 - seckill::shard::fds::reserve(2)) / 2;
    let line = text
        .lines()
        .find(|line| line.contains("nofile"))
        .unwrap_or_else(|| panic!("no nofile check:\n{text}"));
    assert!(line.starts_with("WARN"), "{text}");
    assert!(
        line.contains(&format!("caps connections at {cap} per shard")),
        "{text}"
    );
    assert!(text.contains("LimitNOFILE="), "{text}");
}
