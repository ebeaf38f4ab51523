//! SIGTERM under load drains without losing a request: 64 buyers on keep-alive connections,
//! 2 shards, `durability = "sync"`, SKUs owned by both shards (so purchases cross the mesh), and
//! SIGTERM in the middle of it.
//!
//! What "without losing a request" means here, from the client's side:
//! - No purchase is answered `503` (the old drain closed a shard's journal while its peers still
//!   routed purchases to it: `journal writer is gone`).
//! - A purchase is *owed* an answer when it was written on an accepted connection (one the server
//!   had already answered, so never one still in the kernel's accept queue) and its write
//!   completed before the server stopped listening. "Before the server stopped listening" is
//!   measured by a probe that connects in a loop: a write that completed before a probe connect
//!   began, and that connect succeeded, happened while some shard still listened. Every owed
//!   purchase must get a response. A connection closed *between* requests is fine: the buyer sees
//!   the close before writing, or its next request is not owed.
//! - A purchase whose request was half sent when SIGTERM came, on one shard, for a SKU the other
//!   shard owns, is finished once the rest arrives: `201`, not `503`. (The old drain closed each
//!   shard's journal as soon as its own connections were done, while a peer still had this one.)
//! - Every `201` order exists after a restart on the same data directory.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use seckill::shard::placement::owner_of;

const BUYERS: usize = 64;
const SHARDS: usize = 2;
/// Purchases answered 201 before SIGTERM is sent, so it lands mid-load.
const BEFORE_SIGTERM: usize = 400;
/// Longest pause a buyer takes between purchases. Real shoppers pause, so at SIGTERM some
/// connections sit idle and their next request arrives while the drain is under way, possibly
/// routed to a shard that has already finished its own connections.
const MAX_THINK_MS: u64 = 40;

/// One purchase as a buyer saw it.
struct Attempt {
    sku: String,
    user: String,
    written: Instant,
    /// `None`: no response (EOF or reset after the request was written).
    answer: Option<Answer>,
}

struct Answer {
    status: u16,
    at: Instant,
    shard: Option<usize>,
    closing: bool,
    order_id: Option<String>,
    body: String,
}

/// SKUs named so that each shard owns `per_shard` of them.
fn skus_owned_by_every_shard(per_shard: usize) -> Vec<String> {
    let mut owned = vec![Vec::new(); SHARDS];
    for n in 0.. {
        let sku = format!("drain-{n}");
        let owner = owner_of(&sku, SHARDS);
        if owned[owner].len() < per_shard {
            owned[owner].push(sku);
        }
        if owned.iter().all(|skus| skus.len() == per_shard) {
            break;
        }
    }
    owned.into_iter().flatten().collect()
}

/// A connection the server has answered once (`GET /healthz`), or `None` once connecting is
/// refused (the server stopped listening). A connection reset before that answer was never
/// accepted and is retried.
fn accepted_connection(port: u16) -> Option<Client> {
    loop {
        let stream = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => stream,
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => return None,
            // A listener closing under a connect in flight resets it: try again.
            Err(error) if error.kind() == ErrorKind::ConnectionReset => continue,
            Err(error) => panic!("connect: {error}"),
        };
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = Client::from_stream(stream, port);
        match client.try_request("GET", "/healthz", &[], None) {
            Ok(response) if response.status == 200 => {
                let closing = response
                    .header("connection")
                    .is_some_and(|value| value.eq_ignore_ascii_case("close"));
                if !closing {
                    return Some(client);
                }
            }
            Ok(response) => panic!("GET /healthz during the drain test: {response}"),
            Err(_) => {}
        }
    }
}

fn buyer(port: u16, index: usize, skus: Arc<Vec<String>>, log: Arc<Mutex<Vec<Attempt>>>) {
    let user = format!("drain-buyer-{index}");
    let auth = format!("Bearer {}", tok(&user));
    let mut n = index;
    // A small LCG per buyer: think times differ between buyers and runs don't need a crate.
    let mut seed = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    'connections: while let Some(mut client) = accepted_connection(port) {
        loop {
            n += 1;
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            std::thread::sleep(Duration::from_millis((seed >> 33) % (MAX_THINK_MS + 1)));
            let sku = skus[n % skus.len()].clone();
            let request = client.build_request(
                "POST",
                &format!("/v1/sales/{sku}/purchase"),
                &[("Authorization", &auth)],
                Some(r#"{"quantity":1}"#),
            );
            if client.stream.write_all(&request).is_err() {
                // The server closed the connection before this request went out: not written.
                continue 'connections;
            }
            let written = Instant::now();
            let answer = client.read_response().ok().map(|response| Answer {
                status: response.status,
                at: Instant::now(),
                shard: response.shard(),
                closing: response
                    .header("connection")
                    .is_some_and(|value| value.eq_ignore_ascii_case("close")),
                order_id: (response.status == 201)
                    .then(|| response.json()["order_id"].as_str().map(str::to_owned))
                    .flatten(),
                body: response.text(),
            });
            let closing = answer.as_ref().is_none_or(|answer| answer.closing);
            log.lock().expect("log").push(Attempt {
                sku,
                user: user.clone(),
                written,
                answer,
            });
            if closing {
                continue 'connections;
            }
        }
    }
}

/// Connects until refused; returns when the last successful connect began.
fn probe(port: u16, stop: &AtomicBool) -> Option<Instant> {
    let mut last_listening = None;
    while !stop.load(Ordering::Acquire) {
        let began = Instant::now();
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => last_listening = Some(began),
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => return last_listening,
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
            Err(error) => panic!("probe connect: {error}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    last_listening
}

#[test]
fn sigterm_mid_load_answers_every_request_and_keeps_every_order() {
    let data_dir = fresh_data_dir();
    let args = ["--durability", "sync"];
    let mut server = Server::start_in(&data_dir, SHARDS, &args);
    let port = server.port;
    let skus = Arc::new(skus_owned_by_every_shard(4));
    for sku in skus.iter() {
        server.open_sale(sku, 10_000_000, 1_000_000);
    }

    let log = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let buyers: Vec<_> = (0..BUYERS)
        .map(|index| {
            let (skus, log) = (Arc::clone(&skus), Arc::clone(&log));
            std::thread::spawn(move || buyer(port, index, skus, log))
        })
        .collect();
    let give_up = Instant::now() + Duration::from_secs(60);
    while log.lock().expect("log").len() < BEFORE_SIGTERM {
        assert!(Instant::now() < give_up, "buyers made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // One purchase per shard, half sent, for a SKU the other shard owns.
    let mut slow: Vec<(Client, String, String, Vec<u8>)> = (0..SHARDS)
        .map(|shard| {
            let mut client = server.client_on_shard(shard);
            let sku = skus
                .iter()
                .find(|sku| owner_of(sku, SHARDS) != shard)
                .expect("a SKU of the other shard")
                .clone();
            let user = format!("drain-slow-{shard}");
            let request = client.build_request(
                "POST",
                &format!("/v1/sales/{sku}/purchase"),
                &[("Authorization", &format!("Bearer {}", tok(&user)))],
                Some(r#"{"quantity":1}"#),
            );
            let (first, rest) = request.split_at(request.len() - 5);
            client.send_raw(first);
            (client, sku, user, rest.to_vec())
        })
        .collect();
    let stop_probe = Arc::new(AtomicBool::new(false));
    let prober = {
        let stop = Arc::clone(&stop_probe);
        std::thread::spawn(move || probe(port, &stop))
    };
    std::thread::sleep(Duration::from_millis(20));
    let sigterm_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    // Long enough for the other shard to finish its own connections; the drain must still wait
    // for these.
    std::thread::sleep(Duration::from_millis(300));
    let mut slow_orders = Vec::new();
    for (client, sku, user, rest) in &mut slow {
        client.send_raw(rest);
        let response = client.expect_response("the half-sent purchase");
        assert_eq!(
            response.status,
            201,
            "purchase of {sku} half sent at SIGTERM: {response}; log:\n{}",
            server.log()
        );
        slow_orders.push((order_id(&response.json()), user.clone()));
    }
    let status = server.terminate();
    stop_probe.store(true, Ordering::Release);
    let last_listening = prober.join().expect("probe thread");
    for buyer in buyers {
        buyer.join().expect("buyer thread");
    }
    let server_log = server.log();
    assert!(status.success(), "exit {status}; log:\n{server_log}");

    let attempts = std::mem::take(&mut *log.lock().expect("log"));
    let last_listening = last_listening.expect("the probe never connected");
    let mut failures = Vec::new();
    let mut answered_after_sigterm = 0;
    let mut crossed_after_sigterm = 0;
    let mut closed_by_drain = 0;
    let mut unanswered_not_owed = 0;
    for attempt in &attempts {
        match &attempt.answer {
            Some(answer) if answer.status != 201 => failures.push(format!(
                "{} answered {}: {}",
                attempt.sku, answer.status, answer.body
            )),
            Some(answer) => {
                if answer.at > sigterm_at {
                    answered_after_sigterm += 1;
                    if answer.shard != Some(owner_of(&attempt.sku, SHARDS)) {
                        crossed_after_sigterm += 1;
                    }
                    closed_by_drain += usize::from(answer.closing);
                }
            }
            None if attempt.written < last_listening => failures.push(format!(
                "purchase of {} written {:?} before the server stopped listening got no response",
                attempt.sku,
                last_listening - attempt.written
            )),
            None => unanswered_not_owed += 1,
        }
    }
    eprintln!(
        "{} purchases; after SIGTERM: {answered_after_sigterm} answered ({crossed_after_sigterm} across shards, \
         {closed_by_drain} closing the connection); {unanswered_not_owed} unanswered but written after the server stopped listening",
        attempts.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} purchases failed:\n{}\nserver log:\n{server_log}",
        failures.len(),
        attempts.len(),
        failures.join("\n")
    );
    // The races this test is about happened: buyers' purchases were in flight when the drain
    // began, and the half-sent purchases above crossed the mesh after SIGTERM.
    assert!(
        answered_after_sigterm > 0 && slow_orders.len() == SHARDS,
        "SIGTERM did not land mid-load ({answered_after_sigterm} answered after it)"
    );

    drop(server);
    let restarted = Server::start_in(&data_dir, SHARDS, &args);
    let mut client = restarted.client();
    let mut checked = 0;
    for attempt in &attempts {
        let Some(order_id) = attempt.answer.as_ref().and_then(|a| a.order_id.as_ref()) else {
            continue;
        };
        let response = client.get_order(order_id, &tok(&attempt.user));
        assert_eq!(
            response.status, 200,
            "order {order_id} (201 before shutdown) after restart: {response}"
        );
        checked += 1;
    }
    for (order_id, user) in &slow_orders {
        let response = client.get_order(order_id, &tok(user));
        assert_eq!(
            response.status, 200,
            "order {order_id} after restart: {response}"
        );
    }
    assert!(checked >= BEFORE_SIGTERM, "only {checked} orders checked");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&data_dir);
}
