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
//!   The rest is sent only once a probe connect is refused, that is once every shard closed its
//!   listener.
//! - The race happened: some purchases *written* after SIGTERM was sent were bought (`201`), some
//!   of those by a shard that does not own the SKU, and the drain closed connections it answered.
//! - Every `201` order exists after a restart on the same data directory.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
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
/// Idle connections per shard that each get one purchase written right after SIGTERM.
const BURST_PER_SHARD: usize = 4;

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
            let answer = read_answer(&mut client);
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

/// What the probe thread tells the test as it goes.
enum ProbeEvent {
    /// Its first connect succeeded: it is watching the listeners.
    Watching,
    /// A connect was refused: every shard has closed its listener.
    Refused,
}

/// Connects until refused, reporting its first successful connect and the refusal over
/// `events`; returns when the last successful connect began.
fn probe(port: u16, stop: &AtomicBool, events: &mpsc::Sender<ProbeEvent>) -> Option<Instant> {
    let mut last_listening = None;
    while !stop.load(Ordering::Acquire) {
        let began = Instant::now();
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(_) => {
                if last_listening.replace(began).is_none() {
                    let _ = events.send(ProbeEvent::Watching);
                }
            }
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
                let _ = events.send(ProbeEvent::Refused);
                return last_listening;
            }
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
            Err(error) => panic!("probe connect: {error}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    last_listening
}

/// Waits for `expected` from the probe, up to `bound`; panics with the server's log otherwise.
#[track_caller]
fn await_probe(
    events: &mpsc::Receiver<ProbeEvent>,
    expected: ProbeEvent,
    bound: Duration,
    server: &Server,
) {
    let what = match expected {
        ProbeEvent::Watching => "the probe's first connect",
        ProbeEvent::Refused => "every listener closed (a probe connect refused)",
    };
    match events.recv_timeout(bound) {
        Ok(event) if std::mem::discriminant(&event) == std::mem::discriminant(&expected) => {}
        Ok(ProbeEvent::Refused) => panic!(
            "waiting for {what}, the probe was refused instead; log:\n{}",
            server.log()
        ),
        Ok(ProbeEvent::Watching) => unreachable!("the probe reports Watching once, first"),
        Err(error) => panic!(
            "waiting for {what}: {error} within {bound:?}; log:\n{}",
            server.log()
        ),
    }
}

/// A purchase of `sku` as `user`, as request bytes for `client`.
fn purchase_request(client: &Client, sku: &str, user: &str) -> Vec<u8> {
    client.build_request(
        "POST",
        &format!("/v1/sales/{sku}/purchase"),
        &[("Authorization", &format!("Bearer {}", tok(user)))],
        Some(r#"{"quantity":1}"#),
    )
}

/// A SKU that `shard` does not own, so buying it there crosses the mesh.
fn sku_owned_elsewhere(skus: &[String], shard: usize) -> String {
    skus.iter()
        .find(|sku| owner_of(sku, SHARDS) != shard)
        .expect("a SKU of the other shard")
        .clone()
}

/// Reads the answer to a purchase written at `written` on `client` (`None` if the connection
/// closed instead).
fn read_answer(client: &mut Client) -> Option<Answer> {
    client.read_response().ok().map(|response| Answer {
        status: response.status,
        shard: response.shard(),
        closing: response
            .header("connection")
            .is_some_and(|value| value.eq_ignore_ascii_case("close")),
        order_id: (response.status == 201)
            .then(|| response.json()["order_id"].as_str().map(str::to_owned))
            .flatten(),
        body: response.text(),
    })
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
    let mut slow: Vec<(Client, usize, String, String, Vec<u8>)> = (0..SHARDS)
        .map(|shard| {
            let mut client = server.client_on_shard(shard);
            let sku = sku_owned_elsewhere(&skus, shard);
            let user = format!("drain-slow-{shard}");
            let request = purchase_request(&client, &sku, &user);
            let (first, rest) = request.split_at(request.len() - 5);
            client.send_raw(first);
            (client, shard, sku, user, rest.to_vec())
        })
        .collect();
    // Idle keep-alive connections on every shard, each sent a purchase of a SKU its shard does
    // not own right after SIGTERM, so some purchases are written while the drain begins, beside
    // whatever the buyers happen to write then.
    let burst: Vec<(Client, usize)> = server
        .clients_per_shard(BURST_PER_SHARD)
        .into_iter()
        .enumerate()
        .flat_map(|(shard, clients)| clients.into_iter().map(move |client| (client, shard)))
        .collect();
    let stop_probe = Arc::new(AtomicBool::new(false));
    let (probe_events, probe_heard) = mpsc::channel();
    let prober = {
        let stop = Arc::clone(&stop_probe);
        std::thread::spawn(move || probe(port, &stop, &probe_events))
    };
    // SIGTERM only once the probe watches, so `last_listening` covers the whole drain.
    await_probe(
        &probe_heard,
        ProbeEvent::Watching,
        process::READY_BOUND,
        &server,
    );
    let sigterm_at = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let mut burst_sent = Vec::new();
    for (index, (mut client, shard)) in burst.into_iter().enumerate() {
        let sku = sku_owned_elsewhere(&skus, shard);
        let user = format!("drain-burst-{index}");
        let request = purchase_request(&client, &sku, &user);
        // A failed write means the drain already closed this idle connection: not written.
        if client.stream.write_all(&request).is_ok() {
            burst_sent.push((client, sku, user, Instant::now()));
        }
    }
    // The half-sent purchases are finished only once no shard listens any more, so the drain
    // must have kept both shards (and their journals) up for them.
    await_probe(
        &probe_heard,
        ProbeEvent::Refused,
        process::EXIT_BOUND,
        &server,
    );
    let mut slow_orders = Vec::new();
    for (client, shard, sku, user, rest) in &mut slow {
        client.send_raw(rest);
        let response = client.expect_response("the half-sent purchase");
        assert_eq!(
            response.status,
            201,
            "purchase of {sku} half sent at SIGTERM: {response}; log:\n{}",
            server.log()
        );
        assert_eq!(
            response.shard(),
            Some(*shard),
            "the half-sent purchase was answered by its connection's shard: {response}"
        );
        assert_eq!(
            response.header("connection"),
            Some("close"),
            "an answer during the drain closes its connection: {response}"
        );
        slow_orders.push((order_id(&response.json()), user.clone()));
    }
    for (mut client, sku, user, written) in burst_sent {
        let answer = read_answer(&mut client);
        log.lock().expect("log").push(Attempt {
            sku,
            user,
            written,
            answer,
        });
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
    // Purchases *written* after SIGTERM was sent and still bought: they crossed into the drain.
    let mut written_after_sigterm = 0;
    // Of those, the ones answered by a shard that does not own the SKU (routed over the mesh).
    let mut crossed_after_sigterm = 0;
    // Purchases answered `Connection: close`: buyers ask for keep-alive, so only the drain
    // closes a connection after answering.
    let mut closed_by_drain = 0;
    let mut unanswered_not_owed = 0;
    for attempt in &attempts {
        match &attempt.answer {
            Some(answer) if answer.status != 201 => failures.push(format!(
                "{} answered {}: {}",
                attempt.sku, answer.status, answer.body
            )),
            Some(answer) => {
                closed_by_drain += usize::from(answer.closing);
                if attempt.written > sigterm_at {
                    written_after_sigterm += 1;
                    if answer.shard != Some(owner_of(&attempt.sku, SHARDS)) {
                        crossed_after_sigterm += 1;
                    }
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
        "{} purchases; written after SIGTERM and bought: {written_after_sigterm} \
         ({crossed_after_sigterm} across shards); {closed_by_drain} answers closed the connection; \
         {unanswered_not_owed} unanswered but written after the server stopped listening",
        attempts.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} purchases failed:\n{}\nserver log:\n{server_log}",
        failures.len(),
        attempts.len(),
        failures.join("\n")
    );
    // The races this test is about happened: purchases written after SIGTERM were still bought,
    // some of them across the mesh, and the drain closed connections it had answered on.
    // The first two rest on a window, not a construction: from SIGTERM until the shards close
    // their idle connections (after every listener is closed) a new request is still served.
    // The burst writes right after kill(2), before the server can have woken for the signal, and
    // the buyers keep writing meanwhile; beside `stress-ng --cpu 2` six runs saw 13 to 53 such
    // purchases (13 to 38 across shards). `closed_by_drain` counts every request in flight when
    // draining began (each buyer's last answer): 72 in each of those runs.
    assert!(
        written_after_sigterm > 0,
        "no purchase written after SIGTERM was bought: SIGTERM did not land mid-load"
    );
    assert!(
        crossed_after_sigterm > 0,
        "no purchase written after SIGTERM crossed the mesh ({written_after_sigterm} bought)"
    );
    assert!(
        closed_by_drain > 0,
        "no answer closed its connection: the drain never met a request in flight"
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
