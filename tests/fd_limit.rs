//! The node at its file-descriptor limit.
//!
//! - Started under a low `RLIMIT_NOFILE` (soft = hard, so it cannot raise it), it caps
//!   connections per shard to what fits beside the descriptor reserve, says so once at startup,
//!   answers the excess `503 overloaded`, keeps committing purchases through journal segment
//!   rollovers and snapshots (which need descriptors), and serves normally once clients go.
//! - When the limit drops under a running node (so `accept` itself fails with `EMFILE`), it backs
//!   off and logs at most about once a second per shard, instead of ~96 lines a second, and
//!   serves again once clients go.

mod common;

use std::fs::File;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;

const SHARDS: usize = 2;

/// A server started with `RLIMIT_NOFILE` = `nofile` (soft and hard).
struct Limited {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

impl Limited {
    fn start(nofile: u64, data_dir: &Path, extra: &[&str]) -> Limited {
        let port = pick_port();
        let log_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "seckill-fd-limit-{}-{port}.log",
            std::process::id()
        ));
        let log = File::create(&log_path).expect("log file");
        let mut command = process::seckill_cmd();
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--shards", &SHARDS.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_NOFILE,
                    nofile,
                    nofile,
                )
                .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().expect("spawn seckill");
        let mut server = Limited {
            child,
            port,
            log_path,
        };
        let deadline = Instant::now() + process::READY_BOUND;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "not ready within {:?}:\n{}",
                process::READY_BOUND,
                server.log()
            );
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut client = Client::from_stream(stream, port);
                if client
                    .try_request("GET", "/readyz", &[], None)
                    .is_ok_and(|r| r.status == 200)
                {
                    return server;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        plain(&std::fs::read_to_string(&self.log_path).unwrap_or_default())
    }

    fn client(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        Client::from_stream(stream, self.port)
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}\n---- end ----", self.log());
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), so fields read `name=value`.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of `log` that contain `needle`.
fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|line| line.contains(needle)).count()
}

#[test]
fn under_a_low_nofile_the_excess_gets_503_and_the_journal_still_rolls() {
    const NOFILE: u64 = 400;
    let cap = (NOFILE - seckill::shard::fds::reserve(SHARDS)) / SHARDS as u64;
    let data_dir = fresh_data_dir();
    // Small segments: the purchases below roll segments and write snapshots, which need
    // descriptors while every connection slot is taken.
    // Idle connections are kept far longer than this test runs, so an unanswered one cannot be
    // rescued by the server closing idle ones.
    let args = [
        "--segment-bytes",
        "65536",
        "--durability",
        "sync",
        "--idle-timeout-ms",
        "120000",
    ];
    let server = Limited::start(NOFILE, &data_dir, &args);
    let sale = sale_spec(1_000_000, 1_000_000);
    assert_eq!(server.client().put_sale("fd", &sale).status, 201);

    // More connections than the limit itself: each is either held (200) or refused (503).
    let mut held = Vec::new();
    let mut refused = 0;
    let started = Instant::now();
    for _ in 0..NOFILE + 50 {
        let stream = TcpStream::connect(("127.0.0.1", server.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut client = Client::from_stream(stream, server.port);
        let response = client
            .try_request("GET", "/healthz", &[], None)
            .unwrap_or_else(|error| {
                panic!(
                    "connection {} got no answer ({error}); log:\n{}",
                    held.len() + refused,
                    server.log()
                )
            });
        match response.status {
            200 => held.push(client),
            503 => {
                assert_eq!(response.error_code().as_deref(), Some("overloaded"));
                refused += 1;
            }
            other => panic!("unexpected {other}: {response}"),
        }
    }
    assert!(
        held.len() as u64 <= cap * SHARDS as u64,
        "{} held, over the cap",
        held.len()
    );
    assert!(refused > 0, "nothing was refused");

    // Purchases on a held connection still commit, through segment rollovers.
    let token = tok("fd-buyer");
    let mut orders = Vec::new();
    let buyer = held.first_mut().expect("a held connection");
    for _ in 0..1_200 {
        let response = buyer.purchase("fd", &token, Some(1), None);
        assert_eq!(response.status, 201, "{response}; log:\n{}", server.log());
        orders.push(order_id(&response.json()));
    }
    let elapsed = started.elapsed().as_secs() as usize;
    let log = server.log();
    assert_eq!(count_lines(&log, "journal write failed"), 0, "{log}");
    assert_eq!(count_lines(&log, "accept failed"), 0, "{log}");
    let cap_lines = count_lines(&log, "connection cap reached");
    assert!(
        cap_lines <= SHARDS * (elapsed + 2),
        "{cap_lines} cap lines in {elapsed} s:\n{log}"
    );
    assert!(
        log.contains("capping connections per shard")
            && log.contains(&format!("effective_per_shard={cap}")),
        "no startup warning about the cap of {cap}:\n{log}"
    );
    let segments = std::fs::read_dir(&data_dir)
        .expect("data dir")
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .flat_map(|generation| std::fs::read_dir(generation.path()).into_iter().flatten())
        .flatten()
        .flat_map(|shard| std::fs::read_dir(shard.path()).into_iter().flatten())
        .flatten()
        .filter_map(|file| file.file_name().into_string().ok())
        .collect::<Vec<_>>();
    eprintln!("journal files: {segments:?}");
    assert!(
        segments.iter().any(|name| name.contains("000000000002")),
        "the journal never rolled over: {segments:?}"
    );

    // Once the clients go, a new connection is served.
    drop(held);
    let served = poll(process::READY_BOUND, || {
        let mut client = server.client();
        let response = client.try_request("GET", "/healthz", &[], None).ok()?;
        (response.status == 200).then_some(())
    });
    assert!(served.is_some(), "not serving after the clients left");
    // Each shard notices its clients' closes in its own time, so a new connection may still meet
    // a shard at its cap (503) for a moment: retry on new connections until one buys.
    let auth = format!("Bearer {token}");
    let mut last = None;
    let bought = poll(process::READY_BOUND, || {
        let response = server
            .client()
            .try_request(
                "POST",
                "/v1/sales/fd/purchase",
                &[("Authorization", &auth)],
                Some(r#"{"quantity":1}"#),
            )
            .ok()?;
        let bought = response.status == 201;
        last = Some(response);
        bought.then_some(())
    });
    assert!(
        bought.is_some(),
        "no purchase after the clients left; last answer: {last:?}"
    );
    drop(server);

    // Every acknowledged purchase is in the journal.
    let restarted = Server::start_in(&data_dir, SHARDS, &[]);
    let mut client = restarted.client();
    for id in orders.iter().step_by(50) {
        assert_eq!(client.get_order(id, &token).status, 200, "order {id}");
    }
    drop(restarted);
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn at_emfile_accept_backs_off_and_logs_about_once_a_second() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        skip("prlimit (util-linux) is not installed");
        return;
    }
    let server = Server::start(SHARDS, &[]);
    // The rate bound below counts from here: the limit bites from the prlimit on.
    let lowered_at = Instant::now();
    // Lower the running node's limit under what it already planned for: accept now hits EMFILE.
    let lowered = Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--nofile=200:200"])
        .status()
        .expect("prlimit");
    assert!(lowered.success());

    let mut clients = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(server.addr()).expect("connect (backlog)");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        clients.push(stream);
    }
    // Let the shards hit EMFILE for a few seconds.
    std::thread::sleep(Duration::from_secs(3));
    let log = plain(&server.log());
    // Read after the log: every line counted was written within this time of the prlimit, however
    // long a busy machine took over the connects and the sleep.
    let elapsed = lowered_at.elapsed();
    let failures = count_lines(&log, "accept failed");
    assert!(
        failures > 0,
        "accept never failed: the limit did not bite\n{log}"
    );
    // One line per shard per (started) second since the limit dropped, plus the first of each
    // shard and one of slack.
    let bound = SHARDS * (elapsed.as_secs_f64().ceil() as usize + 2);
    assert!(
        failures <= bound,
        "{failures} accept-failure lines in {elapsed:?} since prlimit (bound {bound}):\n{log}"
    );
    assert!(log.contains("suppressed="), "{log}");

    drop(clients);
    let served = poll(process::READY_BOUND, || {
        let mut client = server.client();
        let response = client.try_request("GET", "/healthz", &[], None).ok()?;
        (response.status == 200).then_some(())
    });
    assert!(
        served.is_some(),
        "not serving after the clients left:\n{}",
        server.log()
    );
}
